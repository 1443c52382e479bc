"""Images between models: grey <-> RGB and resizing, differentiable (a prior's output to a target's input)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

_LUMA = (0.299, 0.587, 0.114)


def adapt_images(x: torch.Tensor, *, channels: int, size: int | tuple[int, int]) -> torch.Tensor:
    """Convert images ``(B, C, H, W)`` to ``channels`` (1 or 3) and spatial ``size`` (differentiable).

    RGB -> grey uses the BT.601 luma weights ``0.299 R + 0.587 G + 0.114 B``;
    grey -> RGB repeats the channel; resizing is bilinear with antialiasing
    (so downsizing a 64×64 face to 32×32 averages instead of aliasing).

    >>> adapt_images(torch.ones(2, 3, 64, 64), channels=1, size=32).shape
    torch.Size([2, 1, 32, 32])
    """
    if x.ndim != 4:
        raise ConfigError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if x.shape[1] == 3 and channels == 1:
        x = (x * x.new_tensor(_LUMA)[None, :, None, None]).sum(dim=1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != channels:
        raise ConfigError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if tuple(x.shape[-2:]) != hw:
        # float32: the antialiased kernels have no bfloat16 CPU implementation (autocast gives bf16 here).
        x = F.interpolate(x.float(), size=hw, mode="bilinear", align_corners=False, antialias=True)
    return x
