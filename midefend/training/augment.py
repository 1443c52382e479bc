"""Batch augmentation for in-memory training: one random affine warp per sample, no Python loop.

For every sample ``i`` of a batch ``(B, C, H, W)`` in ``[0, 1]`` draw

- a shift ``(dx_i, dy_i) ~ U[-shift, shift]`` (fraction of the image side),
- a zoom ``s_i ~ U[scale]`` (``s > 1`` zooms in),
- a rotation ``a_i ~ U[-rotate, rotate]`` degrees,
- a horizontal flip ``f_i = -1`` with probability 1/2 if ``flip`` (else ``+1``),

and resample the image with ``grid_sample`` (bilinear, border padding) through
the map from output to input coordinates (normalised to ``[-1, 1]``)::

    [u_in, v_in] = R(a_i) / s_i @ [f_i * u_out, v_out] + 2 * [dx_i, dy_i]

All parameters are ``(B,)`` tensors drawn from one ``generator``, so a seeded
generator replays the same augmentation. With ``shift=0, scale=(1, 1),
rotate=0`` the warp is the identity (exactly, up to float rounding) and a flip
is an exact mirror image.

The presets by name: ``"none"``; ``"flip"`` (CALoR's stage-2 fine-tune);
``"light"`` (shift 1/16 + flip, like a padded random crop: the target models);
``"strong"`` (shift 0.1, zoom 0.9-1.1, rotation 10 degrees, flip: the evaluation
model); ``"digits"`` (as strong, without the flip, which would change digits).

>>> import torch
>>> x = torch.rand(4, 1, 8, 8)
>>> torch.allclose(BatchAugment()(x), x, atol=1e-6)
True
>>> mirrored = BatchAugment(flip=True, flip_p=1.0)(x)
>>> torch.allclose(mirrored, x.flip(-1), atol=1e-6)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError


@dataclass(frozen=True)
class BatchAugment:
    """Random per-sample affine warp of a batch; see the module docstring for the formula."""

    shift: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0
    flip: bool = False
    flip_p: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift < 0.5:
            raise ConfigError(f"shift must lie in [0, 0.5) (a fraction of the image side), got {self.shift!r}")
        low, high = self.scale
        if not 0.0 < low <= high:
            raise ConfigError(f"scale must be (low, high) with 0 < low <= high, got {self.scale!r}")
        if not 0.0 <= self.rotate <= 180.0:
            raise ConfigError(f"rotate must lie in [0, 180] degrees, got {self.rotate!r}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ConfigError(f"flip_p must lie in [0, 1], got {self.flip_p!r}")

    @property
    def is_identity(self) -> bool:
        return self.shift == 0 and self.scale == (1.0, 1.0) and self.rotate == 0 and not (self.flip and self.flip_p > 0)

    def sample_theta(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The ``(B, 2, 3)`` affine matrices for ``F.affine_grid`` (drawn on the CPU, float64)."""

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)

        dx, dy = uniform(-self.shift, self.shift), uniform(-self.shift, self.shift)
        zoom = uniform(*self.scale)
        angle = uniform(-self.rotate, self.rotate) * (math.pi / 180.0)
        mirror = torch.ones(batch, dtype=torch.float64)
        if self.flip:
            mirror = torch.where(torch.rand(batch, generator=generator, dtype=torch.float64) < self.flip_p, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * mirror, -sin, 2 * dx], dim=1),
                torch.stack([sin * mirror, cos, 2 * dy], dim=1),
            ],
            dim=1,
        )
        return theta

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Warp ``x`` of shape ``(B, C, H, W)``; returns a new tensor (``x`` itself when nothing is random)."""
        if x.ndim != 4:
            raise ConfigError(f"x must be a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if self.is_identity:
            return x
        return self.warp(x, self.sample_theta(x.shape[0], generator))

    def warp(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Warp ``x`` with given ``(B, 2, 3)`` matrices (from :meth:`sample_theta`; data-parallel ranks take slices of one draw)."""
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


AUGMENT_PRESETS: dict[str, BatchAugment] = {
    "none": BatchAugment(),
    "flip": BatchAugment(flip=True),
    "light": BatchAugment(shift=1 / 16, flip=True),
    "strong": BatchAugment(shift=0.1, scale=(0.9, 1.1), rotate=10.0, flip=True),
    "digits": BatchAugment(shift=0.1, scale=(0.9, 1.1), rotate=10.0, flip=False),
}


def get_augment(augment: str | BatchAugment | None) -> BatchAugment:
    """A preset by name, a :class:`BatchAugment` as is, ``None`` -> ``"none"``."""
    if augment is None:
        return AUGMENT_PRESETS["none"]
    if isinstance(augment, BatchAugment):
        return augment
    if augment not in AUGMENT_PRESETS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENT_PRESETS)} or a BatchAugment, got {augment!r}")
    return AUGMENT_PRESETS[augment]


__all__ = ["AUGMENT_PRESETS", "BatchAugment", "get_augment"]
