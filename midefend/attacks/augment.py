"""Differentiable per-sample augmentations for attacks: random resized crop and horizontal flip.

Reconstructions that only fool the target under one exact pixel layout are
adversarial noise; optimising through a fresh random crop and flip at every
step (PPA) favours images whose identity survives small changes. All samples
of a batch get their own parameters, applied in one ``grid_sample`` call.

A crop keeping area fraction ``a ∈ [lo, hi]`` with aspect ratio ``r = w/h``
(log-uniform in ``ratio``) has sides ``s_x = √(a·r)``, ``s_y = √(a/r)`` (in
units of the image side, capped at 1 — torchvision's RandomResizedCrop
re-draws instead; the cap only matters for near-full crops with ``r ≠ 1``) and
a centre offset ``t ∈ [−(1−s), 1−s]`` in normalised coordinates; the affine
sampling grid is ``x_in = f·s_x·x_out + t_x``, ``y_in = s_y·y_out + t_y`` with
``f = −1`` for a flipped sample. Parameters are rows ``(s_x, s_y, t_x, t_y, f)``.

>>> import torch
>>> params = draw_params(torch.Generator().manual_seed(0), (3,), scale=(1.0, 1.0), flip=False)
>>> x = torch.rand(3, 1, 8, 8)
>>> torch.allclose(apply_params(x, params), x, atol=1e-6)  # full-size crop, no flip: identity
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError

#: Named augmentation policies of the optimisation: (crop area range, flip).
POLICIES = {"crop+flip": ((0.9, 1.0), True), "crop": ((0.9, 1.0), False), "none": ((1.0, 1.0), False)}
#: Columns of a parameter row.
NUM_PARAMS = 5


def policy(name: str) -> tuple[tuple[float, float], bool]:
    """``(scale, flip)`` of a named policy (``crop+flip``, ``crop`` or ``none``)."""
    if name not in POLICIES:
        raise ConfigError(f"augment must be one of {', '.join(POLICIES)}, got {name!r}")
    return POLICIES[name]


def draw_params(
    generator: torch.Generator,
    shape: tuple[int, ...],
    *,
    scale: tuple[float, float] = (0.9, 1.0),
    ratio: tuple[float, float] = (1.0, 1.0),
    flip: bool = True,
) -> torch.Tensor:
    """Random parameters ``(*shape, 5)``: crop sides ``s_x, s_y``, offsets ``t_x, t_y``, flip sign ``f``.

    A square ``ratio=(1, 1)`` draws no ratio numbers, so square policies keep their random stream.
    """
    lo, hi = scale
    area = lo + (hi - lo) * torch.rand(shape, generator=generator)
    if ratio[0] == ratio[1]:
        aspect = torch.full(shape, float(ratio[0]))
    else:
        log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(shape, generator=generator))
    side_x, side_y = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    unit = torch.rand((*shape, 2), generator=generator) * 2.0 - 1.0
    flips = torch.rand(shape, generator=generator) < 0.5
    sign = torch.where(flips & flip, -1.0, 1.0)
    return torch.stack([side_x, side_y, unit[..., 0] * (1.0 - side_x), unit[..., 1] * (1.0 - side_y), sign], dim=-1)


def apply_params(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Crop-resize and flip each image of ``x (B, C, H, W)`` by its row of ``params (B, 5)``."""
    if params.shape != (x.shape[0], NUM_PARAMS):
        raise ConfigError(f"params must have shape ({x.shape[0]}, {NUM_PARAMS}), got {tuple(params.shape)}")
    p = params.to(device=x.device, dtype=x.dtype)
    zero = torch.zeros_like(p[:, 0])
    theta = torch.stack(
        [torch.stack([p[:, 4] * p[:, 0], zero, p[:, 2]], dim=1), torch.stack([zero, p[:, 1], p[:, 3]], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


__all__ = ["NUM_PARAMS", "POLICIES", "apply_params", "draw_params", "policy"]
