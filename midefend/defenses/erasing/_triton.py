"""Random erasing of CUDA tensors in one Triton launch that draws the boxes and writes them.

Program ``(n, i, j)`` writes tile ``(i, j)`` of box ``n`` (sample ``n // K``) in every channel.
``SAMPLE=True``: each program of box ``n`` derives the same box from ``tl.rand(seed, 64 n + k)``
through the box map of :mod:`.params` (float32); program ``(n, 0, 0)`` stores it (int32) and the
sample's ``applied`` byte, returned as views: no second launch. ``SAMPLE=False`` replays given
boxes. Other random streams than the CPU's; the same boxes give the same pixels."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from .params import ATTEMPTS, EraseBoxes, FillSpec

try:  # triton ships with the CUDA build of torch; without it the torch path is used
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except Exception:  # pragma: no cover - depends on the installation
    HAVE_TRITON = False

#: Distinct per-channel fill values the kernel takes as scalars (more channels need one value).
MAX_FILL_CHANNELS = 4


def _erase_kernel(
    x_ptr, box_ptr, applied_ptr, seed, fill_seed, num_boxes, C, H, W, K, s_b, s_c, s_h, s_w,
    area_lo, area_hi, logr_lo, logr_hi, p, v0, v1, v2, v3, lo0, lo1, lo2, lo3, hi0, hi1, hi2, hi3,
    SAMPLE: tl.constexpr, RANDOM_FILL: tl.constexpr, INTEGER: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ATT: tl.constexpr, ATT_P2: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0)
    tile_r = tl.program_id(1)
    tile_c = tl.program_id(2)
    b = n // K
    if SAMPLE:
        att = tl.arange(0, ATT_P2)
        base = n * 64
        ua = tl.rand(seed, base + att)
        ur = tl.rand(seed, base + ATT + att)
        area = area_lo + (area_hi - area_lo) * ua  # in pixels: scale * H * W, premultiplied
        aspect = tl.exp(logr_lo + (logr_hi - logr_lo) * ur)
        # capped at H + 1 / W + 1 before the cast (still "does not fit"): huge ratios overflow int32
        hs = tl.floor(tl.minimum(tl.sqrt(area * aspect) + 0.5, H + 1.0)).to(tl.int32)
        ws = tl.floor(tl.minimum(tl.sqrt(area / aspect) + 0.5, W + 1.0)).to(tl.int32)
        fits = (att < ATT) & (hs >= 1) & (ws >= 1) & (hs <= H) & (ws <= W)
        first = tl.min(tl.where(fits, att, ATT_P2), axis=0)
        pick = tl.where(first == ATT_P2, 0, first)
        h = tl.sum(tl.where(att == pick, hs, 0), axis=0)
        w = tl.sum(tl.where(att == pick, ws, 0), axis=0)
        h = tl.minimum(tl.maximum(h, 1), H)
        w = tl.minimum(tl.maximum(w, 1), W)
        two = tl.arange(0, 2)
        upos = tl.rand(seed, base + 2 * ATT + two)
        ut = tl.sum(tl.where(two == 0, upos, 0.0), axis=0)
        ul = tl.sum(tl.where(two == 1, upos, 0.0), axis=0)
        top = tl.minimum(tl.floor(ut * (H - h + 1).to(tl.float32)).to(tl.int32), H - h)
        left = tl.minimum(tl.floor(ul * (W - w + 1).to(tl.float32)).to(tl.int32), W - w)
        uapp = tl.rand(seed, b * K * 64 + 63 + two * 0)  # per sample: slot 63 of its first box
        applied = tl.sum(tl.where(two == 0, (uapp < p).to(tl.int32), 0), axis=0)
        is_first = (tile_r == 0) & (tile_c == 0)
        tl.store(box_ptr + n, top, mask=is_first)
        tl.store(box_ptr + num_boxes + n, left, mask=is_first)
        tl.store(box_ptr + 2 * num_boxes + n, h, mask=is_first)
        tl.store(box_ptr + 3 * num_boxes + n, w, mask=is_first)
        # the sample's flag, as the bytes of a bool tensor: no second launch turns ints into bools
        tl.store(applied_ptr + b, applied.to(tl.int8), mask=is_first & (n % K == 0))
    else:
        top = tl.load(box_ptr + n)
        left = tl.load(box_ptr + num_boxes + n)
        h = tl.load(box_ptr + 2 * num_boxes + n)
        w = tl.load(box_ptr + 3 * num_boxes + n)
        applied = tl.load(applied_ptr + b).to(tl.int32)
    dr = tile_r * BLOCK_H + tl.arange(0, BLOCK_H)
    dc = tile_c * BLOCK_W + tl.arange(0, BLOCK_W)
    mask = (dr[:, None] < h) & (dc[None, :] < w) & (applied != 0)
    rows = (top + dr).to(tl.int64)
    cols = (left + dc).to(tl.int64)
    offs = b.to(tl.int64) * s_b + rows[:, None] * s_h + cols[None, :] * s_w
    for c in range(C):
        ptrs = x_ptr + offs + c * s_c
        if RANDOM_FILL:
            lo = tl.where(c == 0, lo0, tl.where(c == 1, lo1, tl.where(c == 2, lo2, lo3)))
            hi = tl.where(c == 0, hi0, tl.where(c == 1, hi1, tl.where(c == 2, hi2, hi3)))
            pix = ((b * C + c) * H + rows[:, None].to(tl.int32)) * W + cols[None, :].to(tl.int32)
            val = lo + (hi - lo) * tl.rand(fill_seed, pix)
            if INTEGER:
                val = tl.minimum(tl.floor(val), 255.0)
        else:
            v = tl.where(c == 0, v0, tl.where(c == 1, v1, tl.where(c == 2, v2, v3)))
            val = tl.zeros((BLOCK_H, BLOCK_W), tl.float32) + v
        tl.store(ptrs, val.to(x_ptr.dtype.element_ty), mask=mask)


_KERNELS: dict[bool, Any] = {}


def _kernel():
    """The jitted kernel, built on first use so ``TRITON_INTERPRET=1`` set by a test is honoured."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; older versions read the variable
    interpret = bool(knobs.runtime.interpret) if knobs is not None else os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if interpret not in _KERNELS:  # the seeds change every call: no variant per seed value
        _KERNELS[interpret] = triton.jit(_erase_kernel, do_not_specialize=["seed", "fill_seed"])
    return _KERNELS[interpret]


def _pad4(values: tuple[float, ...]) -> tuple[float, ...]:
    v = tuple(values)[:MAX_FILL_CHANNELS]
    return v + (v[-1],) * (MAX_FILL_CHANNELS - len(v))


def erase_(
    x: torch.Tensor, fill: FillSpec, *, boxes: EraseBoxes | None = None, draw: dict | None = None, seeds=(0, 0)
) -> EraseBoxes | None:
    """Erase ``x`` (``(B, C, H, W)``) in place with one launch: the given ``boxes``, or boxes drawn
    in the kernel from ``seeds[0]`` with ``draw`` (``scale``, ``ratio``, ``p``, ``num_patches``),
    which are returned. ``seeds[1]`` seeds a random fill. At most :data:`MAX_FILL_CHANNELS`
    distinct channel values (the caller checks)."""
    batch, channels, height, width = x.shape
    if boxes is None:
        k = draw["num_patches"] or 1
        buf = torch.empty((4, batch * k), dtype=torch.int32, device=x.device)
        applied = torch.empty(batch, dtype=torch.int8, device=x.device)
        scale, ratio, p = draw["scale"], draw["ratio"], draw["p"]
    else:
        k = boxes.top.shape[1] if boxes.top.dim() == 2 else 1
        buf = torch.stack([f.reshape(-1) for f in boxes[:4]]).to(device=x.device, dtype=torch.int32)
        applied = boxes.applied.to(device=x.device, dtype=torch.bool).contiguous().view(torch.int8)
        scale, ratio, p = (0.0, 0.0), (1.0, 1.0), 1.0
    if fill.values is not None:  # rounded to x's dtype on the host as torch rounds (the interpreter truncates)
        values, low, high = _pad4(torch.tensor(fill.values, dtype=torch.float64).to(x.dtype).double().tolist()), (0.0,) * 4, (1.0,) * 4
    else:
        values, low, high = (0.0,) * 4, _pad4(fill.random_low), _pad4(fill.random_high)
    block_w = min(triton.next_power_of_2(width), 64)
    block_h = max(1, min(triton.next_power_of_2(height), 2048 // block_w))
    if batch * k:
        _kernel()[(batch * k, triton.cdiv(height, block_h), triton.cdiv(width, block_w))](
            x, buf, applied, seeds[0], seeds[1], batch * k, channels, height, width, k, *x.stride(),
            scale[0] * height * width, scale[1] * height * width, math.log(ratio[0]), math.log(ratio[1]), p,
            *values, *low, *high, SAMPLE=boxes is None, RANDOM_FILL=fill.values is None,
            INTEGER=x.dtype == torch.uint8, BLOCK_H=block_h, BLOCK_W=block_w, ATT=ATTEMPTS,
            ATT_P2=triton.next_power_of_2(ATTEMPTS),
        )  # fmt: skip
    if boxes is not None:
        return None
    shape = (batch,) if draw["num_patches"] is None else (batch, k)
    return EraseBoxes(*(field.view(shape) for field in buf), applied.view(torch.bool))
