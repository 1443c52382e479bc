"""A tiny randomly initialised StyleGAN-like generator: the stand-in for a user's own prior in the tests.

``build()`` follows midefend's prior protocol (docs/priors.md): ``latent_dim``, ``image_size``, ``channels``,
``output_range``, ``forward(z)``, and a w-space (``mapping``: z -> ``(B, num_ws, w_dim)``, ``synthesis``, a
``w_avg`` buffer on the mapping, as StyleGAN2-ADA keeps it). The other factories break the protocol on purpose.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

Z_DIM, W_DIM, NUM_WS, SIZE = 8, 6, 3, 16


class Mapping(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(Z_DIM, W_DIM), nn.LeakyReLU(0.2), nn.Linear(W_DIM, W_DIM))
        self.register_buffer("w_avg", torch.zeros(W_DIM))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()  # pixel norm, as StyleGAN
        return self.net(z)[:, None, :].expand(-1, NUM_WS, -1)


class Synthesis(nn.Module):
    """A constant 4x4 input, then per layer: a style (affine of w) scales the channels, upsample, conv."""

    def __init__(self, channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(width, 4, 4))
        self.styles = nn.ModuleList(nn.Linear(W_DIM, width) for _ in range(NUM_WS))
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(NUM_WS - 1))
        self.to_rgb = nn.Conv2d(width, channels, 1)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        for i, conv in enumerate(self.convs):
            x = x * (1 + self.styles[i](ws[:, i]))[:, :, None, None]
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2.0)), 0.2)
        x = x * (1 + self.styles[-1](ws[:, -1]))[:, :, None, None]
        return torch.tanh(self.to_rgb(x))


class ToyStyleGAN(nn.Module):
    latent_dim, image_size, channels, output_range = Z_DIM, SIZE, 3, (-1.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.mapping = Mapping()
        self.synthesis = Synthesis(self.channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))


def build(seed: int = 0) -> ToyStyleGAN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyStyleGAN()


class Plain(nn.Module):
    """A z-only generator (no mapping) whose output is in [0, 1]."""

    latent_dim, image_size, channels, output_range = 4, 16, 1, (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 256), nn.Sigmoid(), nn.Unflatten(1, (1, 16, 16)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def plain() -> Plain:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Plain()


def wrong_shape() -> ToyStyleGAN:
    g = build()
    g.image_size = 32  # declares 32x32, draws 16x16
    return g


def wrong_range() -> ToyStyleGAN:
    g = build()
    g.output_range = (0.0, 1.0)  # declares [0, 1], draws tanh's [-1, 1]
    return g


def not_a_module() -> str:
    return "a generator"
