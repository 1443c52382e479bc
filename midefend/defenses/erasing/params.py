"""What to erase: checked settings, fill values and per-sample boxes as ``(B,)`` tensors.

The one box map (Zhong et al. 2020, as torchvision and timm; the Triton kernel repeats it in
float32), for uniforms ``u`` in [0, 1)::

    a_e = U[scale] * H * W,  r = exp(U[log ratio]),  h = round(sqrt(a_e r)),  w = round(sqrt(a_e / r))
    top = floor(u * (H - h + 1)),  left = floor(u' * (W - w + 1))

Of :data:`ATTEMPTS` draws the first that fits is taken, else attempt 0 clipped to the image:
``p=1`` erases every image (torchvision then leaves it untouched).

>>> g = torch.Generator().manual_seed(0)
>>> boxes = sample_boxes(4, 32, 32, scale=(0.1, 0.4), ratio=(1.0, 1.0), p=1.0, generator=g)
>>> tuple(boxes.height.shape), bool((boxes.height == boxes.width).all())
((4,), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ..._validate import check_choice, check_pair, check_positive_int, check_probability, is_int, real_tuple
from ...errors import ConfigError

#: The fill of MIDRE and of Zhong et al.: the ImageNet mean, in pixel space ([0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: (area, ratio) draws per box before falling back to clipping (torchvision: 10).
ATTEMPTS = 10
#: Uniforms one box consumes: ATTEMPTS areas, ATTEMPTS log-ratios, top, left.
UNIFORMS_PER_BOX = 2 * ATTEMPTS + 2
#: One random box (MIDRE), one box fixed per image (paper C.2), random pixels, several boxes (D.1).
MODES = ("box", "fixed", "pixels", "patches")


class EraseBoxes(NamedTuple):
    """Per-sample boxes, replayable via ``boxes=``: ``(B,)`` integer tensors (``(B, K)`` in mode
    ``"patches"``) and ``applied``, ``(B,)`` bool (whether the sample is erased at all). Sample b
    loses rows ``[top, top + height)`` and columns ``[left, left + width)`` of every channel."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    applied: torch.Tensor


class FillSpec(NamedTuple):
    """What to write, in the tensor's own space: ``values`` per channel, or (``values=None``)
    uniform noise in ``[random_low, random_high)`` per channel."""

    values: tuple[float, ...] | None
    random_low: tuple[float, ...] = ()
    random_high: tuple[float, ...] = ()


def check_value(value: Any) -> str | tuple[float, ...]:
    """``"mean"``, ``"random"``, a number or one number per channel."""
    if isinstance(value, str) and value in ("mean", "random"):
        return value
    numbers_ = None if isinstance(value, str) else real_tuple(value)
    if numbers_ is None:
        raise ConfigError(f"value must be 'mean', 'random', a number or a per-channel tuple, got {value!r}")
    return numbers_


def check_normalized(value: Any) -> None | str | tuple[tuple[float, ...], tuple[float, ...]]:
    """``None`` (pixel space), ``"midre"``, or ``(mean, std)`` of the Normalize the input went through."""
    if value is None or value == "midre":
        return value
    if not (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2):
        raise ConfigError(f"normalized must be None, 'midre' or a (mean, std) pair, got {value!r}")
    mean, std = real_tuple(value[0]), real_tuple(value[1])
    for name, got, given in (("mean", mean, value[0]), ("std", std, value[1])):
        if got is None:
            raise ConfigError(f"normalized {name} must be a number or a per-channel tuple of numbers, got {given!r}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"normalized std must be > 0, got {value[1]!r}")
    return mean, std


class ErasingConfig:
    """The checked settings the entry points share (``given`` keeps the arguments for ``repr``)."""

    def __init__(self, p=1.0, scale=(0.1, 0.4), ratio=(1.0, 1.0), value="mean", normalized=None,
                 mode="box", num_patches=4, seed=0):  # fmt: skip
        self.p = check_probability("p", p)
        self.scale = check_pair("scale", scale, upper=1.0)
        self.ratio = check_pair("ratio", ratio, upper=None)
        self.value = check_value(value)
        self.normalized = check_normalized(normalized)
        self.mode = check_choice("mode", mode, MODES)
        self.num_patches = check_positive_int("num_patches", num_patches)
        if not is_int(seed):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.given = dict(p=p, scale=scale, ratio=ratio, value=value, normalized=normalized, mode=mode)

    def patches(self) -> int | None:
        """Boxes per sample in mode ``"patches"``; None (one box, ``(B,)`` fields) otherwise."""
        return self.num_patches if self.mode == "patches" else None


def check_input(x: Any, normalized: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ConfigError(f"x must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not (x.dtype.is_floating_point or x.dtype == torch.uint8):
        raise ConfigError(f"x must be a floating-point (or uint8) tensor, got {x.dtype}")
    if normalized is not None and not x.dtype.is_floating_point:
        raise ConfigError(f"normalized={normalized!r} needs a floating-point input, got {x.dtype}")


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is not None and generator.device.type != device.type:
        raise ConfigError(f"generator must be on the input's device ({device.type}), got a {generator.device.type} generator")


def check_index(index: Any, batch: int, device: torch.device) -> torch.Tensor:
    """Data-set indices for mode ``"fixed"``: an int or ``batch`` integers."""
    if index is None:
        raise ConfigError("mode='fixed' needs index= (the data set index of every sample), got None")
    t = torch.as_tensor([int(index)] if is_int(index) else index)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise ConfigError(f"index must hold integers, got a {t.dtype} tensor")
    if t.shape != (batch,):
        raise ConfigError(f"index must have shape ({batch},), one per sample, got shape {tuple(t.shape)}")
    if batch and int(t.min()) < 0:
        raise ConfigError(f"index must be >= 0, got {int(t.min())}")
    return t.to(device=device, dtype=torch.int64)


def check_boxes(boxes: Any, batch: int, height: int, width: int, device: torch.device) -> EraseBoxes:
    """Replayed boxes: the right shapes, inside the image; as int64/bool on ``device``."""
    if not isinstance(boxes, EraseBoxes):
        raise ConfigError(f"boxes must be the EraseBoxes returned with return_boxes=True, got {type(boxes).__name__}")
    shape = tuple(boxes.top.shape)
    if len(shape) not in (1, 2) or shape[0] != batch or any(tuple(f.shape) != shape for f in boxes[:4]):
        raise ConfigError(f"boxes must hold ({batch},) or ({batch}, K) tensors for a batch of {batch}, got shape {shape}")
    if tuple(boxes.applied.shape) != (batch,):
        raise ConfigError(f"boxes.applied must have shape ({batch},), got {tuple(boxes.applied.shape)}")
    fields = torch.stack([f.to(device=device, dtype=torch.int64) for f in boxes[:4]])
    limits = torch.tensor([height, width], device=device).view(2, *[1] * (fields.dim() - 1))
    # h > height - top, not top + h > height: the sum can wrap around for huge values
    if fields.numel() and bool((fields.amin() < 0) | (fields[2:] > limits - fields[:2]).any()):
        raise ConfigError(f"boxes must lie inside the {height}x{width} image")
    return EraseBoxes(*fields.unbind(0), boxes.applied.to(device=device, dtype=torch.bool))


def fill_spec(value: str | tuple[float, ...], normalized: Any, channels: int, dtype: torch.dtype) -> FillSpec:
    """The numbers a checked ``value`` (pixel space) puts into a tensor with ``channels`` channels.

    ``"mean"`` is :data:`IMAGENET_MEAN` (its average for one channel). ``normalized=(mean, std)``
    writes ``(v - mean) / std``; ``"midre"`` writes ``v`` unchanged, as the MIDRE code does into a
    ``Normalize(0.5, 0.5)`` tensor. uint8 tensors get ``round(255 v)``.

    >>> [round(v, 3) for v in fill_spec("mean", ((0.5,), (0.5,)), 3, torch.float32).values]
    [-0.03, -0.088, -0.188]
    """
    if value == "mean":
        if channels not in (1, 3):
            raise ConfigError(f"value='mean' is defined for 1 or 3 channels, got an input with {channels} channels")
        pixel = IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,)
    elif value == "random":
        pixel = None
    elif len(value) not in (1, channels):
        raise ConfigError(f"value must have 1 or {channels} entries (one per channel), got {len(value)}: {value!r}")
    else:
        pixel = value
    pixel = None if pixel is None else _broadcast(pixel, channels)
    low, high = (0.0,) * channels, (1.0,) * channels
    if isinstance(normalized, tuple):
        for name, seq in zip(("normalized mean", "normalized std"), normalized):
            if len(seq) not in (1, channels):
                raise ConfigError(f"{name} must have 1 or {channels} entries, got {len(seq)}: {seq!r}")
        mean, std = (_broadcast(seq, channels) for seq in normalized)
        to_space = lambda vs: tuple((v - m) / s for v, m, s in zip(vs, mean, std))  # noqa: E731
        pixel = None if pixel is None else to_space(pixel)
        low, high = to_space(low), to_space(high)
    if dtype == torch.uint8:
        if pixel is not None:
            pixel = tuple(float(round(v * 255)) for v in pixel)
            if any(not 0 <= v <= 255 for v in pixel):
                shown = value[0] if len(value) == 1 else value
                raise ConfigError(f"value must lie in [0, 1] for a uint8 input (it is scaled by 255), got {shown!r}")
        low, high = (0.0,) * channels, (256.0,) * channels
    return FillSpec(pixel, low, high)


def _broadcast(seq: Sequence[float], channels: int) -> tuple[float, ...]:
    return tuple(seq) * channels if len(seq) == 1 else tuple(seq)


def boxes_from_uniforms(
    u: torch.Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The box map: uniforms ``(..., UNIFORMS_PER_BOX)`` to ``(top, left, h, w)`` int64 tensors.

    Columns ``[0, ATTEMPTS)`` give the areas, the next ATTEMPTS the log-aspects, the last two the
    position; float64, so the rounding does not depend on the device.
    """
    u = u.to(torch.float64)
    if _on_numpy(u):
        return tuple(torch.from_numpy(a) for a in _box_map_numpy(u.numpy(), height, width, scale, ratio))
    # when every draw fits (the usual case) attempt 0 is taken: skip computing the others
    attempts = 1 if _always_fits(height, width, tuple(scale), tuple(ratio)) else ATTEMPTS
    area = (scale[0] + (scale[1] - scale[0]) * u[..., :attempts]) * (height * width)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = ratio[0] if lo == hi else torch.exp(lo + (hi - lo) * u[..., ATTEMPTS : ATTEMPTS + attempts])
    hs, ws = _side(torch.sqrt(area * aspect), height), _side(torch.sqrt(area / aspect), width)
    if attempts == 1:
        h, w = hs[..., 0], ws[..., 0]
    else:  # argmax of a 0/1 tensor is the first fit; rows without one take attempt 0
        first = ((hs >= 1) & (ws >= 1) & (hs <= height) & (ws <= width)).to(torch.uint8).argmax(-1, keepdim=True)
        h, w = hs.gather(-1, first).squeeze(-1), ws.gather(-1, first).squeeze(-1)
    h, w = h.clamp(1, height), w.clamp(1, width)
    top = torch.floor(u[..., -2] * (height - h + 1)).to(torch.int64).clamp(max=height - h)
    left = torch.floor(u[..., -1] * (width - w + 1)).to(torch.int64).clamp(max=width - w)
    return top, left, h, w


def one_box(u: Sequence[float], height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """:func:`boxes_from_uniforms` for one box in Python floats: ``(top, left, h, w)`` from the
    first :data:`UNIFORMS_PER_BOX` of ``u``, bit-equal to the tensor map and ~10x faster on one image.

    The same float64 operations in the same order (``+ - * /`` and ``sqrt`` are exactly rounded
    everywhere); only ``exp`` of a free aspect may differ from torch's in the last bit, so a side
    whose rounding that bit could flip (within ~1e-12 of a half-integer) is left to the tensor map.

    >>> one_box([0.5] * UNIFORMS_PER_BOX, 32, 32, (0.25, 0.25), (1.0, 1.0))
    (8, 8, 16, 16)
    """
    box = _box_floats(u, height, width, scale, ratio)
    if box is None:
        row = torch.tensor([list(u[:UNIFORMS_PER_BOX])], dtype=torch.float64)
        box = tuple(int(t) for t in boxes_from_uniforms(row, height, width, scale, ratio))
    return box


#: A side within this relative distance of a rounding boundary is decided by the tensor map.
EXP_MARGIN = 1e-12


def _box_floats(u, height, width, scale, ratio) -> tuple[int, int, int, int] | None:
    attempts = 1 if _always_fits(height, width, tuple(scale), tuple(ratio)) else ATTEMPTS
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    first = chosen = None
    for a in range(attempts):
        area = (scale[0] + (scale[1] - scale[0]) * u[a]) * (height * width)
        aspect = ratio[0] if lo == hi else math.exp(lo + (hi - lo) * u[ATTEMPTS + a])
        roots = (math.sqrt(area * aspect) + 0.5, math.sqrt(area / aspect) + 0.5)
        if lo != hi and any(math.isfinite(r) and abs(r - round(r)) <= EXP_MARGIN * r for r in roots):
            return None  # torch's exp could round this side the other way
        h, w = math.floor(min(roots[0], height + 1)), math.floor(min(roots[1], width + 1))
        if first is None:
            first = (h, w)
        if 1 <= h <= height and 1 <= w <= width:
            chosen = (h, w)
            break
    h, w = chosen or first
    h, w = max(1, min(height, h)), max(1, min(width, w))
    top = min(math.floor(u[UNIFORMS_PER_BOX - 2] * (height - h + 1)), height - h)
    left = min(math.floor(u[UNIFORMS_PER_BOX - 1] * (width - w + 1)), width - w)
    return top, left, h, w


def _on_numpy(t: torch.Tensor) -> bool:
    """CPU tables take :func:`_box_map_numpy`: torch sends ``sqrt`` and ``exp`` to MKL's vector math,
    which enters an OpenMP region even for a few hundred elements (at 2 threads on a busy machine one
    call took ~0.7 ms of a 1.6 ms erase, issue 33), and each of the map's ~25 small torch ops costs
    several microseconds where numpy's cost one. Not while torch.compile traces."""
    return t.device.type == "cpu" and not t.requires_grad and not torch.compiler.is_compiling()


def _box_map_numpy(u: np.ndarray, height: int, width: int, scale, ratio) -> tuple[np.ndarray, ...]:
    """The torch map above, op for op in numpy float64 on this thread (same results: ``+ - * /``,
    ``sqrt`` and ``floor`` are exact; ``exp`` may differ in the last bit, which moves a side only
    on an exact rounding tie, as between torch's own CPU and CUDA ``exp``)."""
    attempts = 1 if _always_fits(height, width, tuple(scale), tuple(ratio)) else ATTEMPTS
    area = (scale[0] + (scale[1] - scale[0]) * u[..., :attempts]) * (height * width)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = ratio[0] if lo == hi else np.exp(lo + (hi - lo) * u[..., ATTEMPTS : ATTEMPTS + attempts])
    hs = np.floor(np.minimum(np.sqrt(area * aspect) + 0.5, height + 1)).astype(np.int64)
    ws = np.floor(np.minimum(np.sqrt(area / aspect) + 0.5, width + 1)).astype(np.int64)
    if attempts == 1:
        h, w = hs[..., 0], ws[..., 0]
    else:
        first = ((hs >= 1) & (ws >= 1) & (hs <= height) & (ws <= width)).argmax(-1)[..., None]
        h, w = np.take_along_axis(hs, first, -1)[..., 0], np.take_along_axis(ws, first, -1)[..., 0]
    h, w = np.clip(h, 1, height), np.clip(w, 1, width)
    top = np.minimum(np.floor(u[..., -2] * (height - h + 1)).astype(np.int64), height - h)
    left = np.minimum(np.floor(u[..., -1] * (width - w + 1)).astype(np.int64), width - w)
    return top, left, h, w


def _side(root: torch.Tensor, limit: int) -> torch.Tensor:  # round(root), capped first: 1e40 overflows int64
    return torch.floor((root + 0.5).clamp(max=limit + 1)).to(torch.int64)


_FITS: dict[tuple, bool] = {}  # a dict, not lru_cache: torch.compile traces it without a warning


def _always_fits(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> bool:
    """Whether every draw fits: sides grow with the area, h with r and w with 1/r, so the corners
    of the (scale, ratio) rectangle decide."""
    key = (height, width, scale, ratio)
    if key not in _FITS:
        if len(_FITS) >= 4096:  # ever-changing image sizes: start over rather than grow
            _FITS.clear()
        side = lambda a, r: math.floor(min(math.sqrt(a * height * width * r) + 0.5, height + width + 1))  # noqa: E731
        _FITS[key] = (
            side(scale[1], ratio[1]) <= height and side(scale[1], 1 / ratio[0]) <= width
            and side(scale[0], ratio[0]) >= 1 and side(scale[0], 1 / ratio[1]) >= 1
        )  # fmt: skip
    return _FITS[key]


def _mix32(x: torch.Tensor) -> torch.Tensor:  # a 32-bit hash; constants < 2**31: no int64 overflow
    x = (x + 0x9E3779B9) & 0xFFFFFFFF
    for shift, mul in ((16, 0x21F0AAAD), (15, 0x735A2D97)):
        x = ((x ^ (x >> shift)) * mul) & 0xFFFFFFFF
    return x ^ (x >> 15)


def fixed_uniforms(seed: int, index: torch.Tensor, count: int) -> torch.Tensor:
    """``(len(index), count)`` uniforms that depend only on ``seed`` and ``index``: an image gets
    the same box in every epoch, batch and DataLoader worker (paper C.2).

    >>> a = fixed_uniforms(0, torch.tensor([5, 7]), 3)
    >>> torch.equal(a[1], fixed_uniforms(0, torch.tensor([7]), 3)[0])
    True
    """
    seed = int(seed) & ((1 << 64) - 1)
    state = _mix32(_mix32(torch.tensor(seed & 0xFFFFFFFF, device=index.device)) ^ (seed >> 32))
    state = _mix32(_mix32(state ^ (index & 0xFFFFFFFF)) ^ ((index >> 32) & 0xFFFFFFFF))
    k = torch.arange(count, device=index.device, dtype=torch.int64)
    return _mix32(_mix32(state[:, None] ^ k[None, :])).to(torch.float64) / float(1 << 32)


def sample_boxes(
    batch: int, height: int, width: int, *, scale: tuple[float, float], ratio: tuple[float, float], p: float,
    num_patches: int | None = None, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
    fixed_seed: int | None = None, index: torch.Tensor | None = None,
) -> EraseBoxes:  # fmt: skip
    """One box per sample (``num_patches=None``) or ``num_patches`` per sample, from one
    ``torch.rand`` call (its last column draws ``applied = u < p``). With ``fixed_seed`` and
    ``index`` the geometry comes from :func:`fixed_uniforms`; only ``applied`` is random."""
    k = 1 if num_patches is None else num_patches
    need = k * UNIFORMS_PER_BOX
    u = torch.rand(batch, need + 1, generator=generator, device=device, dtype=torch.float64)
    if fixed_seed is not None:
        u[:, :need] = fixed_uniforms(fixed_seed, index.to(u.device), need)
    elif batch == k == 1 and u.device.type == "cpu":  # a DataLoader's image: Python floats are ~10x faster
        row = u[0].tolist()
        return EraseBoxes(*(torch.tensor([v]) for v in one_box(row, height, width, scale, ratio)), torch.tensor([row[-1] < p]))
    top, left, h, w = boxes_from_uniforms(u[:, :need].view(batch, k, UNIFORMS_PER_BOX), height, width, scale, ratio)
    if num_patches is None:
        top, left, h, w = top[:, 0], left[:, 0], h[:, 0], w[:, 0]
    return EraseBoxes(top, left, h, w, u[:, need] < p)
