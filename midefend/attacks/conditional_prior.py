"""PLG-MI's first stage: pseudo-label public data with the target, train a conditional GAN on it.

PLG-MI (Yuan et al., AAAI 2023) narrows the attack's search space per class:

1. **Pseudo-labels** (:func:`pseudo_label`): the target classifies every
   public image; each image goes to its top-1 class, and each class keeps its
   ``top_n`` most confident images (fewer when fewer are assigned to it).
2. **Conditional GAN** (:func:`train_conditional_prior`): a generator
   ``G(z, y)`` and a projection discriminator ``D(x, y) = w·φ(x) + e_y·φ(x)``
   (Miyato & Koyama, 2018) play the hinge game on the pseudo-labelled images,
   and the generator also minimises the target's max-margin loss on its own
   (randomly cropped and flipped) images, weighted by ``alpha`` — the
   "pseudo-label guided" part, which uses the target's gradient (white-box).

midefend's conditional generator is built for a CPU budget: it starts from
the attack's unconditional prior (the face GAN, or a DCGAN trained on public
digits) and conditions through a learned per-class latent offset,
``G(z, y) = G'(z + s_y)`` with ``s_y`` starting at 0, while the weights of
``G'`` are fine-tuned (its BatchNorm keeps the pretrained running
statistics). PLG-MI trains an SNGAN-style generator with conditional
BatchNorm from scratch for many GPU hours; a few hundred CPU steps from a
pretrained generator give a generator whose classes are *regions* of the old
latent space, pulled towards the pseudo-labelled images — weaker than the
paper's. Because the condition is an offset, the attack optimises
``w = z + s_y`` directly in ``G'``'s latent space.

The trained pair is saved as safetensors (:func:`save_conditional_prior`)
and reused across runs (:class:`~midefend.attacks.plg.PLGAttack` caches it
under a key of target, prior, public data and settings).

>>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
>>> index, label = pseudo_label(probs, top_n=2)
>>> index.tolist(), label.tolist()
([0, 3, 2], [0, 0, 1])
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError, DataError
from ..evaluation.classifier import Classifier
from ._progress import progress_bar
from .augment import apply_params, draw_params
from .losses import max_margin_loss
from .prior_training import dcgan_init_
from .priors import DCGANDiscriminator, DCGANGenerator, GenerativePrior

_FORMAT = "midefend-conditional-prior"


def pseudo_label(probs: torch.Tensor, top_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and pseudo-labels of the public images PLG-MI keeps (see the module docstring).

    Args:
        probs: the target's probabilities on the public images ``(N, C)``.
        top_n: images kept per class at most.

    Returns:
        ``(index (M,), label (M,))``, grouped by class in increasing order,
        most confident first within a class (ties: lower index first).
    """
    if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1:
        raise ConfigError(f"top_n must be a positive integer, got {top_n!r}")
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise DataError(f"pseudo_label needs probabilities (N, C) with N > 0, got {tuple(probs.shape)}")
    confidence, label = probs.max(dim=1)
    index, labels = [], []
    for c in range(probs.shape[1]):
        members = (label == c).nonzero().squeeze(1)
        best = members[confidence[members].argsort(descending=True, stable=True)[:top_n]]
        index.append(best)
        labels.append(torch.full_like(best, c))
    return torch.cat(index), torch.cat(labels)


class ProjectionDiscriminator(nn.Module):
    """``D(x, y) = w·φ(x) + ⟨e_y, Σφ(x)⟩``: a DCGAN discriminator's body ``φ`` with a class projection."""

    def __init__(self, channels: int, width: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        self.body = DCGANDiscriminator(channels, width, image_size)
        self.num_classes = num_classes
        features = self.body.main[-1].in_channels
        self.embed = nn.Embedding(num_classes, features)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        phi = self.body.main[:-1](x)  # (B, F, 4, 4)
        unconditional = self.body.main[-1](phi).flatten(1).squeeze(1)
        return unconditional + (self.embed(y) * phi.sum(dim=(2, 3))).sum(dim=1)


class ConditionalPrior(nn.Module):
    """``G(z, y) = G'(z + s_y)``: a fine-tuned generator ``prior`` and per-class latent offsets ``shift (C, d)``."""

    def __init__(self, prior: GenerativePrior, shift: torch.Tensor, discriminator: ProjectionDiscriminator | None = None) -> None:
        super().__init__()
        self.prior = prior
        self.register_buffer("shift", shift.detach().clone())
        self.discriminator = discriminator

    def class_latents(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``z + s_y``: latents of ``prior`` that draw class ``y``."""
        return z + self.shift[classes].to(z.device)

    def forward(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.prior(self.class_latents(z, classes))


def train_conditional_prior(
    base: GenerativePrior,
    target: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-4,
    alpha: float = 0.2,
    disc_width: int = 32,
    seed: int = 0,
    device: Any = "cpu",
    progress: bool = False,
) -> ConditionalPrior:
    """Fine-tune ``base`` into a conditional generator on pseudo-labelled ``images`` (see the module docstring).

    Args:
        base: the unconditional prior to start from (not modified).
        target: the attacked model (its max-margin loss guides the generator).
        images: pseudo-labelled public images ``(M, C, H, W)`` in ``[0, 1]``, any size
            (resized to the prior's).
        labels: their pseudo-labels ``(M,)``.
        steps, batch_size: hinge-GAN steps (one D and one G update each) and batch.
        lr: Adam learning rate of both players (betas ``(0.5, 0.999)``); the offsets learn 10× faster.
        alpha: weight of the target's max-margin loss in the generator's objective.
        disc_width: base width of the projection discriminator (trained from scratch).
        seed: seeds the discriminator's initialisation, the batches and the noise.
    """
    if images.ndim != 4 or images.shape[0] == 0 or labels.shape != images.shape[:1]:
        raise DataError(f"train_conditional_prior needs images (M, C, H, W) with M > 0 and labels (M,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    for key, value in (("steps", steps), ("batch_size", batch_size), ("disc_width", disc_width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    size, channels = base.image_size, base.channels
    from .priors import adapt_images

    real_all = (adapt_images(images.float(), channels=channels, size=size).clamp(0, 1) * 2.0 - 1.0).to(device)
    labels = labels.long().to(device)
    generator = copy.deepcopy(base.generator).to(device)
    generator.eval()  # BatchNorm keeps the pretrained statistics; weights still learn
    for p in generator.parameters():
        p.requires_grad_(True)
    shift = torch.zeros(num_classes, base.latent_dim, device=device, requires_grad=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        disc = dcgan_init_(ProjectionDiscriminator(channels, disc_width, size, num_classes)).to(device).train()
    opt_g = torch.optim.Adam([{"params": generator.parameters()}, {"params": [shift], "lr": 10 * lr}], lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    rng = torch.Generator().manual_seed(seed)
    seen = labels.unique()
    target.to(device)
    with progress_bar(progress, "training PLG conditional GAN", steps) as advance:
        for _ in range(steps):
            pick = torch.randint(real_all.shape[0], (batch_size,), generator=rng).to(device)
            real, real_y = real_all[pick], labels[pick]
            fake_y = seen[torch.randint(len(seen), (batch_size,), generator=rng)].to(device)
            z = torch.randn(batch_size, base.latent_dim, generator=rng).to(device)
            fake = generator(z + shift[fake_y])
            # Hinge loss: D pushes real scores above 1 and fake ones below -1.
            loss_d = F.relu(1.0 - disc(real, real_y)).mean() + F.relu(1.0 + disc(fake.detach(), fake_y)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            seen_by_target = apply_params((fake + 1.0) * 0.5, draw_params(rng, (batch_size,)))
            loss_g = -disc(fake, fake_y).mean() + alpha * max_margin_loss(target(seen_by_target), fake_y)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            advance(1)
    prior = GenerativePrior(generator.cpu(), name=f"{base.name}+plg")
    return ConditionalPrior(prior, shift.detach().cpu(), disc.cpu().eval())


def save_conditional_prior(cond: ConditionalPrior, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write the conditional GAN (generator, offsets, discriminator) as safetensors, atomically."""
    from safetensors.torch import save_file

    from ..io.atomic import atomic_write

    tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in cond.prior.generator.state_dict().items()}
    tensors["shift"] = cond.shift.detach().cpu().contiguous()
    config = {**cond.prior.config(), "num_classes": int(cond.shift.shape[0])}
    if cond.discriminator is not None:
        tensors.update({f"discriminator.{k}": v.detach().cpu().contiguous() for k, v in cond.discriminator.state_dict().items()})
        config["discriminator_width"] = cond.discriminator.body.width
    metadata = {"format": _FORMAT, "config": json.dumps(config), "info": json.dumps(info or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_conditional_prior(path: str | Path) -> tuple[ConditionalPrior, dict[str, Any]]:
    """Read a file of :func:`save_conditional_prior`: ``(conditional prior, info)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        if metadata.get("format") != _FORMAT:
            raise CheckpointError(f"{str(path)!r} is not a midefend conditional prior (format {metadata.get('format')!r})")
        config, info = json.loads(metadata["config"]), json.loads(metadata.get("info", "{}"))
        generator = DCGANGenerator(config["latent_dim"], config["channels"], config["width"], config["image_size"])
        generator.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("generator.")}, strict=True)
        disc = None
        if "discriminator_width" in config:
            disc = ProjectionDiscriminator(config["channels"], config["discriminator_width"], config["image_size"], config["num_classes"])
            disc.load_state_dict({k[14:]: v for k, v in tensors.items() if k.startswith("discriminator.")}, strict=True)
            disc.eval()
        shift = tensors["shift"]
    except CheckpointError:
        raise
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read the conditional prior {str(path)!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if shift.shape != (config["num_classes"], config["latent_dim"]):
        raise CheckpointError(f"conditional prior {str(path)!r}: offsets of shape {tuple(shift.shape)} do not match its config")
    return ConditionalPrior(GenerativePrior(generator, name=config["name"]), shift, disc), info


__all__ = [
    "ConditionalPrior",
    "ProjectionDiscriminator",
    "load_conditional_prior",
    "pseudo_label",
    "save_conditional_prior",
    "train_conditional_prior",
]
