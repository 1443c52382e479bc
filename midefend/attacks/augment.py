"""Differentiable per-sample augmentations for attacks: random resized crop and horizontal flip.

Reconstructions that only fool the target under one exact pixel layout are
adversarial noise; optimising through a fresh random crop and flip at every
step (PPA) favours images whose identity survives small changes. All samples
of a batch get their own parameters, applied in one ``grid_sample`` call.

A crop keeping area fraction ``a ∈ [lo, hi]`` has side ``s = √a`` (in units of
the image side) and a centre offset ``t ∈ [−(1−s), 1−s]`` in normalised
coordinates; the affine sampling grid is ``x_in = f·s·x_out + t_x``,
``y_in = s·y_out + t_y`` with ``f = −1`` for a flipped sample.

>>> import torch
>>> params = draw_params(torch.Generator().manual_seed(0), (3,), scale=(1.0, 1.0), flip=False)
>>> x = torch.rand(3, 1, 8, 8)
>>> torch.allclose(apply_params(x, params), x, atol=1e-6)  # full-size crop, no flip: identity
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

#: Named augmentation policies: (crop area range, flip).
POLICIES = {"crop+flip": ((0.9, 1.0), True), "crop": ((0.9, 1.0), False), "none": ((1.0, 1.0), False)}


def policy(name: str) -> tuple[tuple[float, float], bool]:
    """``(scale, flip)`` of a named policy (``crop+flip``, ``crop`` or ``none``)."""
    if name not in POLICIES:
        raise ConfigError(f"augment must be one of {', '.join(POLICIES)}, got {name!r}")
    return POLICIES[name]


def draw_params(generator: torch.Generator, shape: tuple[int, ...], *, scale: tuple[float, float] = (0.9, 1.0), flip: bool = True) -> torch.Tensor:
    """Random parameters ``(*shape, 4)``: crop side ``s``, offsets ``t_x, t_y``, flip sign ``f``."""
    lo, hi = scale
    side = (lo + (hi - lo) * torch.rand(shape, generator=generator)).sqrt()
    offsets = (torch.rand((*shape, 2), generator=generator) * 2.0 - 1.0) * (1.0 - side)[..., None]
    flips = torch.rand(shape, generator=generator) < 0.5
    sign = torch.where(flips & flip, -1.0, 1.0)
    return torch.stack([side, offsets[..., 0], offsets[..., 1], sign], dim=-1)


def apply_params(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Crop-resize and flip each image of ``x (B, C, H, W)`` by its row of ``params (B, 4)``."""
    if params.shape != (x.shape[0], 4):
        raise ConfigError(f"params must have shape ({x.shape[0]}, 4), got {tuple(params.shape)}")
    p = params.to(device=x.device, dtype=x.dtype)
    zero = torch.zeros_like(p[:, 0])
    theta = torch.stack(
        [torch.stack([p[:, 3] * p[:, 0], zero, p[:, 1]], dim=1), torch.stack([zero, p[:, 0], p[:, 2]], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


__all__ = ["POLICIES", "apply_params", "draw_params", "policy"]
