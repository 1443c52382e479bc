"""Bring your own generator: any PyTorch generator as a midefend prior, without editing midefend.

A *prior module* is a Python module with a *factory*: a callable with no required arguments that returns an
``nn.Module`` following this protocol (duck-typed; nothing to inherit)::

    class MyGenerator(nn.Module):
        latent_dim = 512              # forward takes z (B, latent_dim), standard normal
        image_size = 256              # native output side (int), or (height, width)
        channels = 3                  # 1 (grey) or 3 (RGB)
        output_range = (-1.0, 1.0)    # the range of forward's pixels: (-1, 1) for tanh / StyleGAN, (0, 1) ...

        def forward(self, z):         # (B, latent_dim) -> (B, channels, H, W) in output_range
            ...

        # optional: a w-space (StyleGAN's mapping + synthesis), searched instead of z with space="w"
        mapping: nn.Module            # z (B, latent_dim) -> w (B, w_dim) or (B, num_ws, w_dim)
        synthesis: nn.Module          # w as mapping returns it -> images as forward
        w_avg: torch.Tensor           # optional (w_dim,): the mean w, the truncation centre (also read
                                      # from mapping.w_avg, as StyleGAN2-ADA keeps it); else estimated
                                      # from 4,096 mapped latents (seeded)

``midefend verify ckpt.safetensors --prior-module my_pkg.gen:build --prior gen.safetensors`` imports
``my_pkg.gen`` (on ``sys.path`` or in the current folder; the same trust rule as ``--arch-module``: naming a
module runs its code), calls ``build()``, and loads ``gen.safetensors`` into the module strictly. Weights come
from safetensors only: a pickle (``torch.save``) is refused before it is opened as one, since unpickling runs
code. docs/priors.md shows the one-off conversion of a state dict.

Search space, as PPA runs StyleGAN priors (Struppek et al., 2022): with ``space="w"`` the attacks optimise one
``w`` per candidate (broadcast to every synthesis layer when the mapping returns ``(B, num_ws, w_dim)``); the
starting points are mapped standard-normal ``z`` pulled towards the mean, ``w = w_avg + ψ (mapping(z) −
w_avg)`` (*truncation* ψ; PPA uses 0.5). ``center_crop`` keeps the central ``center_crop`` pixels of every image
before the target sees it (PPA crops FFHQ's 1024² images to the central 800² face region). Images are mapped
from ``output_range`` to ``[0, 1]`` and clamped.

The factory's module is checked before any attack: the declared attributes exist and are sane, and a forward
of 4 seeded latents has the declared shape and stays in the declared range (5 % of its span of slack for
generators without a final tanh); each failure is one :class:`~midefend.errors.ConfigError` line.

>>> import torch.nn as nn
>>> class Tiny(nn.Module):
...     latent_dim, image_size, channels, output_range = 4, 8, 1, (-1.0, 1.0)
...     def __init__(self):
...         super().__init__()
...         self.net = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
...     def forward(self, z):
...         return self.net(z)
>>> prior = wrap_module_prior(Tiny(), name="tiny")
>>> prior(prior.sample_latents(2)).shape
torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import AttackError, CheckpointError, ConfigError
from .priors import GenerativePrior

#: Search spaces of a module prior.
SPACES = ("z", "w")
#: PPA's truncation for StyleGAN priors (w-space), the default where the prior has a mapping.
PPA_TRUNCATION = 0.5
#: Slack on the declared output range, as a share of its span.
RANGE_SLACK = 0.05
_W_AVG_SAMPLES = 4096
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; torch.save's zip container


class ModulePrior(GenerativePrior):
    """A user's generator (see the module docstring) as a frozen prior with images in ``[0, 1]``.

    ``latent_dim`` is the searched vector's size: ``z``'s, or ``w_dim`` in w-space. It has no discriminator
    (GMI cannot use it) and exposes no feature levels (IF-GMI cannot use it); PLG fine-tunes midefend's DCGAN
    priors only. The attacks that cannot use it say so and are left out of ``verify``'s portfolio.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str = "user-prior",
        source: str | None = None,
        space: str = "z",
        truncation: float = 1.0,
        center_crop: int | None = None,
    ) -> None:
        super().__init__(module, None, name=name)  # type: ignore[arg-type]
        self.source, self.space, self.truncation, self.center_crop = source, space, float(truncation), center_crop
        self.low, self.high = (float(v) for v in module.output_range)
        self.native_size = _size_pair(module.image_size)
        self.num_ws = 0  # 0: the mapping returns (B, w_dim); else (B, num_ws, w_dim)
        self.w_dim = 0
        self.w_avg: torch.Tensor | None = None
        if space == "w":
            self._init_w_space()

    # ------------------------------------------------------------------ geometry

    @property
    def latent_dim(self) -> int:
        return self.w_dim if self.space == "w" else int(self.generator.latent_dim)

    @property
    def channels(self) -> int:
        return int(self.generator.channels)

    @property
    def image_size(self) -> int:
        if self.center_crop is not None:
            return self.center_crop
        h, w = self.native_size
        return h if h == w else max(h, w)  # non-square outputs are resized by the consumers (adapt_images)

    @property
    def num_levels(self) -> int:
        return 0

    def for_inference(self) -> ModulePrior:
        return self

    def features(self, x: torch.Tensor, level: int, *, start: int | None = None) -> torch.Tensor:
        raise AttackError(f"prior {self.name!r} (a user module) exposes no feature levels")

    def from_features(self, features: torch.Tensor, level: int) -> torch.Tensor:
        raise AttackError(f"prior {self.name!r} (a user module) exposes no feature levels")

    def level_shape(self, level: int) -> tuple[int, int, int]:
        raise AttackError(f"prior {self.name!r} (a user module) exposes no feature levels")

    # ------------------------------------------------------------------ drawing

    def _device(self) -> torch.device:
        for t in list(self.generator.parameters()) + list(self.generator.buffers()):
            return t.device
        return torch.device("cpu")

    def _init_w_space(self) -> None:
        g = self.generator
        with torch.no_grad():
            z = torch.randn(_W_AVG_SAMPLES, int(g.latent_dim), generator=torch.Generator().manual_seed(0)).to(self._device())
            w = torch.cat([g.mapping(z[i : i + 512]) for i in range(0, z.shape[0], 512)])
        self.num_ws = int(w.shape[1]) if w.ndim == 3 else 0
        w = w[:, 0] if w.ndim == 3 else w
        self.w_dim = int(w.shape[1])
        declared = getattr(g, "w_avg", None)
        if declared is None:
            declared = getattr(g.mapping, "w_avg", None)
        if isinstance(declared, torch.Tensor) and tuple(declared.shape) == (self.w_dim,):
            self.w_avg = declared.detach().float().cpu().clone()
        else:
            self.w_avg = w.float().mean(0).cpu()

    def sample_latents(self, n: int, *, generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
        """``n`` starting points: standard-normal ``z``, or in w-space ``w_avg + ψ (mapping(z) − w_avg)``."""
        z = torch.randn(n, int(self.generator.latent_dim), generator=generator)
        if self.space == "w":
            assert self.w_avg is not None
            with torch.no_grad():
                w = self.generator.mapping(z.to(self._device())).float()
                w = (w[:, 0] if w.ndim == 3 else w).cpu()
            z = self.w_avg + self.truncation * (w - self.w_avg)
        return z.to(device) if device is not None else z

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        g = self.generator
        if self.space == "w":
            w = params[:, None, :].expand(-1, self.num_ws, -1) if self.num_ws else params
            images = g.synthesis(w)
        else:
            images = g(params)
        images = ((images - self.low) / (self.high - self.low)).clamp(0, 1)
        if self.center_crop is not None:
            h, w_ = images.shape[-2:]
            top, left = (h - self.center_crop) // 2, (w_ - self.center_crop) // 2
            images = images[..., top : top + self.center_crop, left : left + self.center_crop]
        return images

    def realness(self, images: torch.Tensor) -> torch.Tensor:
        raise AttackError(f"prior {self.name!r} has no discriminator")

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": "module", "module": self.source, "latent_dim": self.latent_dim, "channels": self.channels,
            "image_size": self.image_size, "native_size": list(self.native_size), "output_range": [self.low, self.high],
            "space": self.space, "truncation": self.truncation if self.space == "w" else None, "center_crop": self.center_crop,
        }  # fmt: skip


def _size_pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        return (int(size[0]), int(size[1]))
    raise ConfigError(f"image_size must be an int or (height, width), got {size!r}")


def check_protocol(module: Any, what: str) -> None:
    """Refuse a module that does not declare the prior protocol's attributes (one line each)."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{what} must return a torch.nn.Module, got {type(module).__name__}")
    for attr in ("latent_dim", "image_size", "channels", "output_range"):
        if not hasattr(module, attr):
            raise ConfigError(f"{what} returned a {type(module).__name__} without the attribute {attr!r} (see docs/priors.md for the protocol)")
    if not isinstance(module.latent_dim, int) or isinstance(module.latent_dim, bool) or module.latent_dim < 1:
        raise ConfigError(f"{what}: latent_dim must be a positive integer, got {module.latent_dim!r}")
    if module.channels not in (1, 3) or isinstance(module.channels, bool):
        raise ConfigError(f"{what}: channels must be 1 or 3, got {module.channels!r}")
    h, w = _size_pair(module.image_size)
    if h < 1 or w < 1:
        raise ConfigError(f"{what}: image_size must be positive, got {module.image_size!r}")
    try:
        low, high = (float(v) for v in module.output_range)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: output_range must be a pair (low, high), got {module.output_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{what}: output_range must satisfy low < high (finite), got {module.output_range!r}")


def check_output(module: nn.Module, what: str, *, space: str = "z") -> None:
    """A forward of 4 seeded latents must give the declared shape, finite values, within the declared range."""
    h, w = _size_pair(module.image_size)
    low, high = (float(v) for v in module.output_range)
    slack = RANGE_SLACK * (high - low)
    device = next(iter(list(module.parameters()) + list(module.buffers())), torch.zeros(0)).device
    z = torch.randn(4, module.latent_dim, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            images = module.synthesis(module.mapping(z)) if space == "w" else module(z)
    except Exception as exc:  # noqa: BLE001 - any error in the user's forward: one line naming it
        raise ConfigError(f"{what}: a forward of 4 latents failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    expected = (4, module.channels, h, w)
    if not isinstance(images, torch.Tensor) or tuple(images.shape) != expected:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"{what}: the generator returns {got} for 4 latents, but declares {expected} (channels, image_size)")
    if not torch.isfinite(images).all():
        raise ConfigError(f"{what}: the generator returns non-finite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < low - slack or hi > high + slack:
        raise ConfigError(f"{what}: the generator returns values in [{lo:.3g}, {hi:.3g}], outside its declared output_range ({low:g}, {high:g})")


def _check_not_pickle(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(4)
    if any(head.startswith(magic) for magic in _PICKLE_MAGIC):
        raise CheckpointError(
            f"prior weights {str(path)!r} are a pickle (torch.save); midefend never unpickles a file: convert the state dict to safetensors once (docs/priors.md)"
        )


def load_module_weights(module: nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``module`` strictly (a pickle is refused unopened; non-finite weights refused)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"prior weights {str(path)!r} do not exist")
    _check_not_pickle(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"prior weights {str(path)!r} are not a readable safetensors file: {str(exc).splitlines()[0]}") from None
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"prior weights {str(path)!r} do not fit the module: {detail[:300]}") from None
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"prior weights {str(path)!r} have non-finite values in {key}")


def wrap_module_prior(
    module: nn.Module,
    *,
    name: str = "user-prior",
    source: str | None = None,
    space: str | None = None,
    truncation: float | None = None,
    center_crop: int | None = None,
) -> ModulePrior:
    """Check ``module`` against the protocol and wrap it (``space=None``: ``"w"`` when it declares a mapping, else ``"z"``).

    ``truncation=None``: PPA's 0.5 in w-space; in z-space there is none (1.0 only).
    """
    what = f"prior module {source or type(module).__name__!r}"
    check_protocol(module, what)
    has_mapping = isinstance(getattr(module, "mapping", None), nn.Module) and isinstance(getattr(module, "synthesis", None), nn.Module)
    space = space or ("w" if has_mapping else "z")
    if space not in SPACES:
        raise ConfigError(f"prior space must be one of {', '.join(SPACES)}, got {space!r}")
    if space == "w" and not has_mapping:
        raise ConfigError(f"{what} declares no 'mapping' and 'synthesis' networks: search it in z-space (no w-space, no truncation)")
    if truncation is None:
        truncation = PPA_TRUNCATION if space == "w" else 1.0
    if not isinstance(truncation, (int, float)) or isinstance(truncation, bool) or not 0 < truncation <= 1:
        raise ConfigError(f"truncation must be in (0, 1], got {truncation!r}")
    if space == "z" and truncation != 1.0:
        raise ConfigError(f"truncation needs a w-space (a prior module with 'mapping' and 'synthesis'); {what} is searched in z-space")
    h, w = _size_pair(module.image_size)
    if center_crop is not None and (not isinstance(center_crop, int) or isinstance(center_crop, bool) or not 0 < center_crop <= min(h, w)):
        raise ConfigError(f"center_crop must be a positive number of pixels <= {min(h, w)} (the generator's side), got {center_crop!r}")
    module.eval()
    check_output(module, what, space="z")
    if space == "w":
        check_output(module, what, space="w")
    return ModulePrior(module, name=name, source=source, space=space, truncation=float(truncation), center_crop=center_crop)


def load_module_prior(
    spec: str,
    weights: str | Path | None = None,
    *,
    space: str | None = None,
    truncation: float | None = None,
    center_crop: int | None = None,
    device: Any = None,
) -> ModulePrior:
    """``"pkg.mod:factory"`` -> the factory's module with ``weights`` (safetensors; ``None``: the factory's own), checked and wrapped.

    See the module docstring for the protocol and :func:`wrap_module_prior` for the options.
    """
    from ..architectures import import_user_module

    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"prior module must be 'package.module:factory', got {spec!r}")
    module_name, factory_name = spec.split(":")
    if weights is not None:  # the weights file first: a pickle is refused before any user code runs
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(f"prior weights {str(path)!r} do not exist")
        _check_not_pickle(path)
    mod = import_user_module(module_name, kind="prior")
    factory = getattr(mod, factory_name, None)
    if factory is None:
        raise ConfigError(f"prior module {module_name!r} has no factory {factory_name!r}")
    if not callable(factory):
        raise ConfigError(f"prior factory {spec!r} is not callable ({type(factory).__name__})")
    try:
        module = factory()
    except Exception as exc:  # noqa: BLE001 - any error in the user's factory: one line naming it
        raise ConfigError(f"prior factory {spec!r} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    check_protocol(module, f"prior factory {spec!r}")
    if weights is not None:
        load_module_weights(module, weights)
    module = module.to(device or "cpu")
    name = Path(weights).stem if weights is not None else factory_name
    return wrap_module_prior(module, name=name, source=spec, space=space, truncation=truncation, center_crop=center_crop)


__all__ = ["PPA_TRUNCATION", "SPACES", "ModulePrior", "check_output", "check_protocol", "load_module_prior", "load_module_weights", "wrap_module_prior"]
