"""Random-erasing parameters: argument checks, fill values and per-sample boxes as tensors.

This module holds everything that *decides* what to erase; :mod:`.erasing_apply` and
:mod:`.erasing_triton` do the writing, :mod:`.erasing` is the public API.

Box geometry (Zhong et al. 2020, as in torchvision and timm, drawn for a whole batch at once)::

    a_e ~ U[scale]                       erased fraction of the image area
    r   = exp(U[log ratio])              aspect ratio h / w (log-uniform)
    h   = floor(sqrt(a_e * H * W * r) + 0.5),   w = floor(sqrt(a_e * H * W / r) + 0.5)
    top ~ floor(U[0, 1) * (H - h + 1)),  left ~ floor(U[0, 1) * (W - w + 1))

A draw whose box does not fit (``h > H`` or ``w > W``, or a side rounds to 0) is redrawn, up
to :data:`ATTEMPTS` times, all attempts drawn at once as a ``(B, ATTEMPTS)`` tensor and the
first that fits taken. torchvision gives up after 10 misses and leaves the image untouched;
here the last resort is the first attempt clipped to the image, so ``p=1`` really erases every
image (MIDRE's point). Only odd settings ever get there (for example ``ratio=(4, 4)`` with a
large ``scale`` on a square image).

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> boxes = sample_boxes(4, 32, 32, scale=(0.1, 0.4), ratio=(1.0, 1.0), p=1.0, generator=g)
>>> tuple(boxes.height.shape), bool((boxes.height == boxes.width).all())
((4,), True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple, Union

import torch

from ..errors import ConfigError

__all__ = [
    "ATTEMPTS",
    "IMAGENET_MEAN",
    "MODES",
    "EraseBoxes",
    "FillSpec",
    "check_mode",
    "check_pair",
    "check_probability",
    "check_value",
    "check_normalized",
    "check_num_patches",
    "check_index",
    "fill_spec",
    "fixed_uniforms",
    "boxes_from_uniforms",
    "sample_boxes",
    "UNIFORMS_PER_BOX",
]

#: The fill of MIDRE and of Zhong et al.: the ImageNet mean, in pixel space ([0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: How many (area, ratio) draws a box gets before falling back to clipping (torchvision: 10).
ATTEMPTS = 10
#: Uniforms one box consumes: ATTEMPTS areas, ATTEMPTS log-ratios, top, left.
UNIFORMS_PER_BOX = 2 * ATTEMPTS + 2
#: Erasing modes: one random box (MIDRE), one box fixed per image (paper C.2),
#: random pixels (D.1), several small boxes (D.1).
MODES = ("box", "fixed", "pixels", "patches")

ValueArg = Union[str, float, Sequence[float]]
NormalizedArg = Union[None, str, tuple]


class EraseBoxes(NamedTuple):
    """Per-sample boxes as integer tensors on the batch's device, replayable via ``boxes=``.

    Every field has shape ``(B,)`` (modes ``"box"`` and ``"fixed"``) or ``(B, K)`` (mode
    ``"patches"``, K patches per sample), except ``applied``, which is ``(B,)`` bool: whether
    the sample is erased at all (drawn with probability ``p``). The erased pixels of sample b
    are rows ``top[b] <= i < top[b] + height[b]`` and columns ``left[b] <= j < left[b] + width[b]``
    of every channel.
    """

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    applied: torch.Tensor


class FillSpec(NamedTuple):
    """What to write: ``values`` per channel (already in the tensor's own space), or random.

    ``random_low``/``random_high`` give the range of the per-pixel uniform fill in the tensor's
    space (per channel, length C) when ``values`` is None.
    """

    values: tuple[float, ...] | None
    random_low: tuple[float, ...] = ()
    random_high: tuple[float, ...] = ()


# ---------------------------------------------------------------------------------------------
# argument checks (one-line ConfigError naming the argument and the value received)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def check_probability(name: str, value: Any) -> float:
    """``value`` as float if it lies in [0, 1], else ``ConfigError``."""
    if not _is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_pair(name: str, value: Any, *, upper: float | None) -> tuple[float, float]:
    """A ``(min, max)`` pair with ``0 < min <= max`` (``<= upper`` when given)."""
    bound = f" <= {upper:g}" if upper is not None else ""
    rule = f"a (min, max) pair with 0 < min <= max{bound}"
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(_is_real(v) for v in value)
    )
    if ok:
        lo, hi = float(value[0]), float(value[1])
        ok = 0.0 < lo <= hi and (upper is None or hi <= upper)
    if not ok:
        shown = tuple(value) if isinstance(value, (list, tuple)) else value
        raise ConfigError(f"{name} must be {rule}, got {shown!r}")
    return lo, hi


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    return mode


def check_num_patches(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"num_patches must be a positive integer, got {value!r}")
    return int(value)


def check_value(value: Any) -> str | tuple[float, ...]:
    """``"mean"``, ``"random"``, a number or a sequence of numbers (one per channel)."""
    if isinstance(value, str):
        if value not in ("mean", "random"):
            raise ConfigError(f"value must be 'mean', 'random', a number or a per-channel tuple, got {value!r}")
        return value
    if _is_real(value):
        return (float(value),)
    if isinstance(value, Sequence) and len(value) >= 1 and all(_is_real(v) for v in value):
        return tuple(float(v) for v in value)
    raise ConfigError(f"value must be 'mean', 'random', a number or a per-channel tuple, got {value!r}")


def _per_channel(name: str, value: Any) -> tuple[float, ...]:
    if _is_real(value):
        return (float(value),)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) >= 1 and all(_is_real(v) for v in value):
        return tuple(float(v) for v in value)
    raise ConfigError(f"{name} must be a number or a per-channel tuple of numbers, got {value!r}")


def check_normalized(value: Any) -> None | str | tuple[tuple[float, ...], tuple[float, ...]]:
    """``None`` (pixel space), ``"midre"``, or ``(mean, std)`` of the Normalize the input went through."""
    if value is None or value == "midre":
        return value
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        mean = _per_channel("normalized mean", value[0])
        std = _per_channel("normalized std", value[1])
        if any(s <= 0 for s in std):
            raise ConfigError(f"normalized std must be > 0, got {value[1]!r}")
        return mean, std
    raise ConfigError(f"normalized must be None, 'midre' or a (mean, std) pair, got {value!r}")


def check_index(index: Any, batch: int, device: torch.device) -> torch.Tensor:
    """Image indices for mode ``"fixed"``: an int or a sequence/tensor of ``batch`` integers."""
    if index is None:
        raise ConfigError("mode='fixed' needs index= (the data set index of every sample), got None")
    if isinstance(index, numbers.Integral) and not isinstance(index, bool):
        index = [int(index)]
    t = torch.as_tensor(index)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise ConfigError(f"index must hold integers, got a {t.dtype} tensor")
    if t.shape != (batch,):
        raise ConfigError(f"index must have shape ({batch},), one per sample, got shape {tuple(t.shape)}")
    if batch and int(t.min()) < 0:
        raise ConfigError(f"index must be >= 0, got {int(t.min())}")
    return t.to(device=device, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# fill values


def fill_spec(
    value: str | tuple[float, ...],
    normalized: None | str | tuple[tuple[float, ...], tuple[float, ...]],
    channels: int,
    dtype: torch.dtype,
) -> FillSpec:
    """Turn a checked ``value`` into the numbers written into a tensor with ``channels`` channels.

    Values are given in pixel space ([0, 1]). ``"mean"`` is :data:`IMAGENET_MEAN` for 3 channels
    and its average (0.449) for 1 channel. With ``normalized=(mean, std)`` a value ``v`` is
    written as ``(v - mean) / std``, so ``"mean"`` lands on the real ImageNet mean colour.
    ``normalized="midre"`` reproduces the MIDRE code, which writes the numbers unchanged into a
    tensor normalised with ``Normalize(0.5, 0.5)``. For ``uint8`` tensors values are scaled by
    255 and rounded. ``"random"`` is uniform in [0, 1) per pixel and channel (paper D.2).

    >>> [round(v, 3) for v in fill_spec("mean", ((0.5,), (0.5,)), 3, torch.float32).values]
    [-0.03, -0.088, -0.188]
    """
    if value == "mean":
        if channels == 3:
            pixel = IMAGENET_MEAN
        elif channels == 1:
            pixel = (sum(IMAGENET_MEAN) / 3,)
        else:
            raise ConfigError(f"value='mean' is defined for 1 or 3 channels, got an input with {channels} channels")
    elif value == "random":
        pixel = None
    else:
        pixel = value
        if len(pixel) not in (1, channels):
            raise ConfigError(
                f"value must have 1 or {channels} entries (one per channel), got {len(pixel)}: {value!r}"
            )
    low, high = (0.0,) * channels, (1.0,) * channels
    pixel = None if pixel is None else _broadcast(pixel, channels)
    if isinstance(normalized, tuple):
        mean, std = normalized
        for name, seq in (("normalized mean", mean), ("normalized std", std)):
            if len(seq) not in (1, channels):
                raise ConfigError(f"{name} must have 1 or {channels} entries, got {len(seq)}: {seq!r}")
        mean, std = _broadcast(mean, channels), _broadcast(std, channels)
        pixel = None if pixel is None else tuple((v - m) / s for v, m, s in zip(pixel, mean, std))
        low = tuple((0.0 - m) / s for m, s in zip(mean, std))
        high = tuple((1.0 - m) / s for m, s in zip(mean, std))
    if dtype == torch.uint8:
        if pixel is not None:
            scaled = tuple(round(v * 255) for v in pixel)
            if any(not 0 <= v <= 255 for v in scaled):
                shown = value[0] if len(value) == 1 else value
                raise ConfigError(f"value must lie in [0, 1] for a uint8 input (it is scaled by 255), got {shown!r}")
            pixel = tuple(float(v) for v in scaled)
        low, high = (0.0,) * channels, (256.0,) * channels
    return FillSpec(pixel, low, high)


def _broadcast(seq: tuple[float, ...], channels: int) -> tuple[float, ...]:
    return tuple(seq) * channels if len(seq) == 1 else tuple(seq)


# ---------------------------------------------------------------------------------------------
# boxes


def boxes_from_uniforms(
    u: torch.Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map uniforms ``u`` of shape ``(..., UNIFORMS_PER_BOX)`` in [0, 1) to ``(top, left, h, w)``.

    Columns ``[0, ATTEMPTS)`` pick the area, ``[ATTEMPTS, 2*ATTEMPTS)`` the log-aspect of each
    attempt, the last two the position. Computed in float64 so the rounding of the sides does
    not depend on the device. The Triton kernel implements the same map.
    """
    u = u.to(torch.float64)
    # when every possible draw fits (the usual case), attempt 0 is the one taken: skip the rest
    attempts = 1 if _always_fits(height, width, tuple(scale), tuple(ratio)) else ATTEMPTS
    area = (scale[0] + (scale[1] - scale[0]) * u[..., :attempts]) * (height * width)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = ratio[0] if lo == hi else torch.exp(lo + (hi - lo) * u[..., ATTEMPTS : ATTEMPTS + attempts])
    hs, ws = _side(torch.sqrt(area * aspect), height), _side(torch.sqrt(area / aspect), width)
    if attempts == 1:
        h, w = hs[..., 0].clamp(1, height), ws[..., 0].clamp(1, width)  # clamp: float rounding only
    else:
        fits = (hs >= 1) & (ws >= 1) & (hs <= height) & (ws <= width)
        # argmax of a 0/1 tensor returns the first maximum; rows without a fit fall back to attempt 0
        first = fits.to(torch.uint8).argmax(dim=-1, keepdim=True)
        h = hs.gather(-1, first).squeeze(-1).clamp(1, height)
        w = ws.gather(-1, first).squeeze(-1).clamp(1, width)
    top = torch.floor(u[..., -2] * (height - h + 1)).to(torch.int64).clamp(max=height - h)
    left = torch.floor(u[..., -1] * (width - w + 1)).to(torch.int64).clamp(max=width - w)
    return top, left, h, w


def _side(root: torch.Tensor, limit: int) -> torch.Tensor:
    """``round(root)`` as int64, capped at ``limit + 1`` first: any side above ``limit`` fails to
    fit all the same, and an absurd ratio (1e40) would overflow the cast."""
    return torch.floor((root + 0.5).clamp(max=limit + 1)).to(torch.int64)


_FITS: dict[tuple, bool] = {}  # _always_fits answers: one per image size and settings


def _always_fits(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> bool:
    key = (height, width, scale, ratio)
    if key not in _FITS:  # a dict, not lru_cache: torch.compile traces it without a warning
        if len(_FITS) >= 4096:  # images of ever-changing sizes: start over rather than grow
            _FITS.clear()
        _FITS[key] = _fits_everywhere(height, width, scale, ratio)
    return _FITS[key]


def _fits_everywhere(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> bool:
    """Whether every draw gives ``1 <= h <= height`` and ``1 <= w <= width`` (sides grow with a_e,
    h with r and w with 1/r, so the corners of the (scale, ratio) rectangle decide)."""
    area = height * width

    def side(a: float, r: float) -> int:  # capped like _side: an infinite root cannot be floored
        return math.floor(min(math.sqrt(a * area * r) + 0.5, height + width + 1))

    return (
        side(scale[1], ratio[1]) <= height
        and side(scale[1], 1 / ratio[0]) <= width
        and side(scale[0], ratio[0]) >= 1
        and side(scale[0], 1 / ratio[1]) >= 1
    )


_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (hash-prospector constants < 2**31, so int64 products cannot overflow)."""
    x = (x + _GOLDEN) & _M32
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def fixed_uniforms(seed: int, index: torch.Tensor, count: int) -> torch.Tensor:
    """``(len(index), count)`` float64 uniforms in [0, 1) that depend only on ``seed`` and ``index``.

    A counter-based hash instead of a generator: image ``index`` gets the same numbers in every
    epoch, in every batch composition and in every DataLoader worker (paper C.2, fixed erasing).

    >>> a = fixed_uniforms(0, torch.tensor([5, 7]), 3)
    >>> torch.equal(a[1], fixed_uniforms(0, torch.tensor([7]), 3)[0])
    True
    """
    seed = int(seed) & ((1 << 64) - 1)
    lo = torch.tensor(seed & _M32, dtype=torch.int64, device=index.device)
    state = _mix32(_mix32(lo) ^ ((seed >> 32) & _M32))
    state = _mix32(state ^ (index & _M32))
    state = _mix32(state ^ ((index >> 32) & _M32))
    k = torch.arange(count, device=index.device, dtype=torch.int64)
    bits = _mix32(_mix32(state[:, None] ^ k[None, :]))
    return bits.to(torch.float64) / float(1 << 32)


#: Up to this many boxes, :func:`sample_boxes` maps the uniforms with Python floats instead of
#: ~20 tensor ops (a per-image transform in a DataLoader: ~85 -> ~15 us). Same IEEE float64
#: operations in the same order, so the same boxes (``tests/test_erasing.py`` compares both).
SCALAR_BOXES = 4


def _boxes_in_python(
    u: torch.Tensor, applied: torch.Tensor, k: int, height: int, width: int,
    scale: tuple[float, float], ratio: float, one_per_sample: bool,
) -> EraseBoxes:  # fmt: skip
    """:func:`boxes_from_uniforms` for a fixed aspect ``ratio``, one box at a time in Python."""
    attempts = 1 if _always_fits(height, width, tuple(scale), (ratio, ratio)) else ATTEMPTS
    span = scale[1] - scale[0]
    fields: list[list[int]] = [[], [], [], []]
    for row in u.tolist():
        for j in range(k):
            draw = row[j * UNIFORMS_PER_BOX : (j + 1) * UNIFORMS_PER_BOX]
            sides = []
            for a in range(attempts):
                area = (scale[0] + span * draw[a]) * (height * width)
                root_h, root_w = math.sqrt(area * ratio), math.sqrt(area / ratio)
                sides.append((math.floor(min(root_h + 0.5, height + 1)), math.floor(min(root_w + 0.5, width + 1))))
            fit = next((s for s in sides if 1 <= s[0] <= height and 1 <= s[1] <= width), sides[0])
            h, w = min(max(fit[0], 1), height), min(max(fit[1], 1), width)
            top = min(math.floor(draw[-2] * (height - h + 1)), height - h)
            left = min(math.floor(draw[-1] * (width - w + 1)), width - w)
            for field, value in zip(fields, (top, left, h, w)):
                field.append(value)
    shape = (4, u.shape[0]) if one_per_sample else (4, u.shape[0], k)
    top, left, h, w = torch.tensor(fields, dtype=torch.int64, device=u.device).view(shape).unbind(0)
    return EraseBoxes(top, left, h, w, applied)


def sample_boxes(
    batch: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    p: float,
    num_patches: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    fixed_seed: int | None = None,
    index: torch.Tensor | None = None,
) -> EraseBoxes:
    """Draw one box per sample (``num_patches=None``) or ``num_patches`` boxes per sample.

    All numbers come from one ``torch.rand`` call of shape ``(B, K * UNIFORMS_PER_BOX + 1)``
    (the last column decides ``applied = u < p``), so a seeded ``generator`` reproduces the
    boxes exactly. With ``fixed_seed`` and ``index`` the geometry comes from
    :func:`fixed_uniforms` instead and only ``applied`` is random.
    """
    k = 1 if num_patches is None else num_patches
    need = k * UNIFORMS_PER_BOX
    u = torch.rand(batch, need + 1, generator=generator, device=device, dtype=torch.float64)
    if fixed_seed is not None:
        assert index is not None
        u[:, :need] = fixed_uniforms(fixed_seed, index.to(u.device), need)
    applied = u[:, need] < p
    if batch * k <= SCALAR_BOXES and ratio[0] == ratio[1] and fixed_seed is None:
        return _boxes_in_python(u, applied, k, height, width, scale, ratio[0], num_patches is None)
    u = u[:, :need].reshape(batch, k, UNIFORMS_PER_BOX)
    top, left, h, w = boxes_from_uniforms(u, height, width, scale, ratio)
    if num_patches is None:
        top, left, h, w = top[:, 0], left[:, 0], h[:, 0], w[:, 0]
    return EraseBoxes(top, left, h, w, applied)
