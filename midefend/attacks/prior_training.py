"""Train a small DCGAN prior on public data (the attacker's side), e.g. digits 5–9.

The standard DCGAN game (Radford et al., 2016) with the non-saturating loss:

- discriminator: ``BCE(D(x), 1) + BCE(D(G(z)), 0)``,
- generator: ``BCE(D(G(z)), 1)``,

Adam ``lr=2e-4, betas=(0.5, 0.999)``, images scaled to ``[-1, 1]``. The result
keeps its discriminator, so GMI can use it as its prior term.

>>> import torch
>>> prior = train_prior(torch.rand(16, 1, 16, 16), epochs=1, batch_size=8, latent_dim=8, width=4)
>>> prior(torch.zeros(3, 8)).shape
torch.Size([3, 1, 16, 16])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validate import check_positive_int, check_positive_real
from ..errors import DataError
from ._progress import progress_bar
from .priors import DCGANDiscriminator, DCGANGenerator, GenerativePrior, save_prior


def dcgan_init_(module: nn.Module) -> nn.Module:
    """DCGAN initialisation in place: convolutions ``N(0, 0.02)``, BatchNorm scales ``N(1, 0.02)``, biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def train_prior(
    data: Any,
    out: str | Path | None = None,
    *,
    epochs: int = 25,
    batch_size: int = 64,
    latent_dim: int = 64,
    width: int = 32,
    image_size: int | None = None,
    lr: float = 2e-4,
    seed: int = 0,
    device: Any = "cpu",
    name: str | None = None,
    progress: bool = False,
) -> GenerativePrior:
    """Train a DCGAN on ``data`` and return it as a frozen :class:`GenerativePrior` (saved to ``out`` if given).

    Args:
        data: images ``(N, C, H, W)`` in ``[0, 1]``, or a data set with ``.images``
            (:class:`~midefend.data.ClassificationData`); labels are ignored.
        out: safetensors path to write (atomically) with :func:`save_prior`.
        epochs, batch_size, lr: the optimisation (Adam, betas ``(0.5, 0.999)``).
        latent_dim, width: the generator's latent size and base channel width.
        image_size: side of the generated images; default: the data's side
            (which must then be ``4 · 2^k``). Other data sizes are resized.
        seed: seeds the initialisation, the shuffling and the noise.
        progress: show a rich progress bar.
    """
    images = getattr(data, "images", data)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(data).__name__
        raise DataError(f"train_prior needs images (N, C, H, W) with N > 0, got {got}")
    for arg, value in (("epochs", epochs), ("batch_size", batch_size)):
        check_positive_int(arg, value)
    check_positive_real("lr", lr)  # also refuses inf and nan
    size = image_size or images.shape[-1]
    x_all = images.float()
    if tuple(x_all.shape[-2:]) != (size, size):
        x_all = F.interpolate(x_all, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x_all = (x_all.clamp(0, 1) * 2.0 - 1.0).to(device)
    channels = x_all.shape[1]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = DCGANGenerator(latent_dim, channels, width, size)
        discriminator = DCGANDiscriminator(channels, width, size)
        dcgan_init_(generator)
        dcgan_init_(discriminator)
    generator.to(device).train()
    discriminator.to(device).train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    rng = torch.Generator().manual_seed(seed)
    n = x_all.shape[0]
    steps_per_epoch = max(1, n // batch_size)
    ones = torch.ones(batch_size, device=device)

    with progress_bar(progress, "training prior", epochs * steps_per_epoch) as advance:
        for _ in range(epochs):
            order = torch.randperm(n, generator=rng).to(x_all.device)
            for i in range(steps_per_epoch):
                real = x_all[order[i * batch_size : (i + 1) * batch_size]]
                b = real.shape[0]
                fake = generator(torch.randn(b, latent_dim, generator=rng).to(device))
                # Discriminator step (fake detached: only D learns here).
                loss_d = F.binary_cross_entropy_with_logits(discriminator(real), ones[:b]) + F.binary_cross_entropy_with_logits(
                    discriminator(fake.detach()), ones[:b] * 0.0
                )
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                # Generator step: the non-saturating loss -log D(G(z)).
                loss_g = F.binary_cross_entropy_with_logits(discriminator(fake), ones[:b])
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                advance(1)

    prior = GenerativePrior(generator, discriminator, name=name or (Path(out).stem if out is not None else "trained-prior"))
    if out is not None:
        save_prior(prior, out)
    return prior
