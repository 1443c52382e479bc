"""Adapt a pretrained DCGAN prior to the private domain with public images of that domain (``midefend prior adapt``).

The offline face prior (``face-gan``) draws colour, tightly cropped, rendered faces; a private set such as ORL is
grey photographs with another framing and lighting. :func:`adapt_prior` fine-tunes the prior's generator on
*public* images of the private domain (other people photographed the same way: the field's public/private
identity split) so that its samples look like the domain, while starting from everything it knows about faces.

The game is :func:`~midefend.attacks.prior_training.train_prior`'s (non-saturating DCGAN loss, Adam betas
``(0.5, 0.999)``, the DCGAN discriminator, trained from scratch since the face GAN ships none), with two changes
for a few hundred public images:

- **differentiable augmentation** of every image the discriminator sees, real and generated alike (DiffAugment,
  Zhao et al., 2020): a random translation of up to 1/8 of the side (zero fill) and a horizontal flip. With a
  few hundred real images the discriminator otherwise memorises them within a few hundred steps and its
  gradient stops teaching the generator; augmenting both sides keeps what it learns about the domain, not the
  augmentation, since the generator's images are augmented the same way;
- the generator learns at half the discriminator's rate (``lr_g = lr / 2``): it starts trained, the
  discriminator does not.

Grey public images train an RGB prior as grey RGB (the channel repeated): the prior keeps its architecture, so
every attack and ``midefend verify --prior adapted.safetensors`` use it as they use ``face-gan``. The result keeps
its discriminator (GMI's prior term).

Progress and resume: every ``checkpoint_every`` steps the whole state (both networks, both optimisers, the step,
the random generator) is written atomically beside ``out`` (``<out>.adapt-state.safetensors``); ``resume=True``
continues from it, and the result is bit-identical to an uninterrupted run on the same machine. The state file is
removed when the run finishes; it refuses to resume a run with other settings, another base prior or other data.

>>> from midefend.attacks.priors import DCGANGenerator, GenerativePrior
>>> base = GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16))
>>> adapted = adapt_prior(base, torch.rand(8, 1, 16, 16), steps=2, batch_size=4, disc_width=4)
>>> adapted(torch.zeros(1, 8)).shape, adapted.has_discriminator
(torch.Size([1, 1, 16, 16]), True)
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validate import check_positive_int, check_positive_real
from ..errors import CheckpointError, ConfigError, DataError
from ..models.images import adapt_images
from ._progress import progress_bar
from .priors import DCGANDiscriminator, DCGANGenerator, GenerativePrior, save_prior
from .prior_training import dcgan_init_

_STATE_FORMAT = "midefend-prior-adapt-state"
#: Defaults of :func:`adapt_prior` (the CLI's too).
DEFAULTS: dict[str, Any] = {"steps": 300, "batch_size": 32, "lr": 2e-4, "disc_width": 64, "translation": 0.125, "flip": True, "checkpoint_every": 25, "seed": 0}


def state_path(out: str | Path) -> Path:
    """Where :func:`adapt_prior` keeps its resumable state for the output ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".adapt-state.safetensors")


def diff_augment(x: torch.Tensor, g: torch.Generator, *, translation: float, flip: bool) -> torch.Tensor:
    """Random integer translation (up to ``translation`` of the side, zero fill) and horizontal flip per image; differentiable in ``x``."""
    b, _, h, w = x.shape
    if flip:
        mask = torch.rand(b, generator=g) < 0.5
        x = torch.where(mask.to(x.device)[:, None, None, None], x.flip(-1), x)
    if translation > 0:
        max_h, max_w = int(h * translation + 0.5), int(w * translation + 0.5)
        dy = torch.randint(-max_h, max_h + 1, (b,), generator=g)
        dx = torch.randint(-max_w, max_w + 1, (b,), generator=g)
        padded = F.pad(x, (max_w, max_w, max_h, max_h))
        rows = (torch.arange(h)[None, :] + max_h - dy[:, None]).to(x.device)  # (B, H)
        cols = (torch.arange(w)[None, :] + max_w - dx[:, None]).to(x.device)  # (B, W)
        index = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return x


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def _save_state(path: Path, step: int, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], rng: torch.Generator, identity: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from ..io.atomic import atomic_write

    tensors: dict[str, torch.Tensor] = {"rng": rng.get_state()}
    for name, net in nets.items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    for name, opt in opts.items():
        for index, state in opt.state_dict()["state"].items():
            for key, value in state.items():
                tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().reshape(-1).contiguous()
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": _STATE_FORMAT, "step": str(step), "identity": json.dumps(identity, sort_keys=True)})


def _load_state(path: Path, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], rng: torch.Generator, identity: dict[str, Any]) -> int:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot resume: {str(path)!r} is not a readable state file ({str(exc).splitlines()[0]})") from None
    if meta.get("format") != _STATE_FORMAT:
        raise CheckpointError(f"cannot resume: {str(path)!r} is not a prior-adaptation state")
    previous = json.loads(meta.get("identity", "{}"))
    diff = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
    if diff:
        raise ConfigError(f"cannot resume from {str(path)!r}: it was started with another {diff[0]} (delete it, or run without --resume)")
    for name, net in nets.items():
        net.load_state_dict({k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}, strict=True)
    for name, opt in opts.items():
        reference = opt.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(name + "."):
                index, field = key[len(name) + 1 :].split(".")
                state.setdefault(int(index), {})[field] = value.reshape(()) if field == "step" else value
        # exp_avg / exp_avg_sq were flattened on save: give them their parameter's shape back
        params = [p for group in opt.param_groups for p in group["params"]]
        for index, fields in state.items():
            for field in ("exp_avg", "exp_avg_sq"):
                if field in fields:
                    fields[field] = fields[field].view_as(params[index])
        opt.load_state_dict({"state": state, "param_groups": reference["param_groups"]})
    rng.set_state(tensors["rng"])
    return int(meta["step"])


def _public_images(data: Any, channels: int, size: int, device: Any) -> torch.Tensor:
    images = getattr(data, "images", data)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(data).__name__
        raise DataError(f"adapt_prior needs public images (N, C, H, W) with N > 0, got {got}")
    if images.shape[1] not in (1, 3):
        raise DataError(f"public images must have 1 or 3 channels, got {images.shape[1]}")
    return (adapt_images(images.float(), channels=channels, size=size).clamp(0, 1) * 2.0 - 1.0).to(device)


def adapt_prior(
    base: GenerativePrior,
    data: Any,
    out: str | Path | None = None,
    *,
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    disc_width: int = DEFAULTS["disc_width"],
    translation: float = DEFAULTS["translation"],
    flip: bool = DEFAULTS["flip"],
    checkpoint_every: int = DEFAULTS["checkpoint_every"],
    seed: int = DEFAULTS["seed"],
    resume: bool = False,
    device: Any = "cpu",
    name: str | None = None,
    progress: bool = False,
) -> GenerativePrior:
    """Fine-tune ``base``'s generator on public ``data`` of the private domain (see the module docstring).

    Args:
        base: a midefend DCGAN prior (``load_prior("face-gan")`` or a prior file); not modified.
        data: public images ``(N, C, H, W)`` in ``[0, 1]`` (any size and 1 or 3 channels; converted to the
            prior's), or a data set with ``.images``; labels are ignored.
        out: safetensors path of the adapted prior (atomic); also names the resumable state file.
        steps, batch_size: GAN steps (one discriminator and one generator update each) and batch.
        lr: the discriminator's Adam learning rate; the generator's is half of it.
        disc_width: base width of the (fresh) DCGAN discriminator.
        translation, flip: the differentiable augmentation of the discriminator's inputs (0 / False: none).
        checkpoint_every: steps between state files (with ``out``).
        seed: seeds the discriminator's initialisation, the batches, the noise and the augmentation.
        resume: continue from ``out``'s state file when there is one.
    """
    if not isinstance(base, GenerativePrior) or not isinstance(base.generator, DCGANGenerator):
        raise ConfigError(f"adapt_prior fine-tunes a midefend DCGAN prior ('face-gan' or a prior file), got {type(base).__name__}")
    for arg, value in (("steps", steps), ("batch_size", batch_size), ("disc_width", disc_width), ("checkpoint_every", checkpoint_every)):
        check_positive_int(arg, value)
    check_positive_real("lr", lr)
    if not isinstance(translation, (int, float)) or not 0 <= translation < 0.5:
        raise ConfigError(f"translation must be in [0, 0.5), got {translation!r}")
    if resume and out is None:
        raise ConfigError("resume=True needs out (the state file lives beside it)")
    size, channels = base.image_size, base.channels
    real_all = _public_images(data, channels, size, device)

    generator = copy.deepcopy(base.generator).to(device).train()
    for p in generator.parameters():
        p.requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        discriminator = dcgan_init_(DCGANDiscriminator(channels, disc_width, size)).to(device).train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr / 2, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    rng = torch.Generator().manual_seed(seed)
    nets, opts = {"generator": generator, "discriminator": discriminator}, {"opt_g": opt_g, "opt_d": opt_d}
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "disc_width": disc_width, "translation": translation, "flip": flip, "seed": seed}
    identity = {"settings": json.dumps(settings, sort_keys=True), "base": _digest(*base.generator.state_dict().values()), "data": _digest(real_all)}
    state = state_path(out) if out is not None else None
    start = 0
    if resume and state is not None and state.is_file():
        start = _load_state(state, nets, opts, rng, identity)

    n = real_all.shape[0]
    b = min(batch_size, n)
    ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
    latent_dim = generator.latent_dim

    def augment(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, rng, translation=float(translation), flip=bool(flip))

    with progress_bar(progress, "adapting prior", steps) as advance:
        advance(start)
        for step in range(start, steps):
            real = real_all[torch.randperm(n, generator=rng)[:b].to(device)]
            fake = generator(torch.randn(b, latent_dim, generator=rng).to(device))
            _gan_step(discriminator, opt_d, opt_g, augment(real), fake, augment, ones, zeros)
            advance(1)
            if state is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                _save_state(state, step + 1, nets, opts, rng, identity)

    prior = GenerativePrior(generator.cpu(), discriminator.cpu(), name=name or (Path(out).stem if out is not None else f"{base.name}+adapted"))
    if out is not None:
        save_prior(prior, out)
        if state is not None:
            state.unlink(missing_ok=True)
    return prior.to(device)


def _gan_step(discriminator: nn.Module, opt_d: torch.optim.Optimizer, opt_g: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor, augment: Any, ones: torch.Tensor, zeros: torch.Tensor) -> None:
    """One discriminator update (``fake`` detached; ``real`` already augmented), then one generator update with the
    non-saturating loss; every generated image the discriminator sees is augmented afresh."""
    loss_d = F.binary_cross_entropy_with_logits(discriminator(real), ones) + F.binary_cross_entropy_with_logits(discriminator(augment(fake.detach())), zeros)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = F.binary_cross_entropy_with_logits(discriminator(augment(fake)), ones)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


__all__ = ["DEFAULTS", "adapt_prior", "diff_augment", "state_path"]
