"""Fused random erasing for CUDA tensors: one Triton kernel launch draws the boxes and writes them.

Grid: ``(boxes, row tiles, column tiles)``. Program ``(n, i, j)`` handles box ``n`` (sample
``n // K`` for K patches per sample) and the ``BLOCK_H x BLOCK_W`` tile ``(i, j)`` of that box,
for every channel; tiles past the box's height or width store nothing.

With ``SAMPLE=True`` every program of box ``n`` derives the same box from counter-based random
numbers (``tl.rand(seed, 64 * n + k)``, Philox), using the map of
:func:`midefend.defenses.erasing_params.boxes_from_uniforms` (in float32): 10 ``(area, log
aspect)`` attempts, the first that fits, else attempt 0 clipped. Program ``(n, 0, 0)`` stores
the box in ``box_ptr`` (``(5, boxes)`` int32: top, left, height, width, applied) so the caller
can return it. With ``SAMPLE=False`` the kernel reads the boxes from ``box_ptr`` (replay).
No host synchronisation and no other launch is needed: the seeds come from the CPU generator.

The random streams differ from the CPU path's, so the same seed gives different boxes on CPU
and CUDA; given the same boxes both paths write identical pixels (tested on the CPU with
``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from .erasing_params import ATTEMPTS, EraseBoxes, FillSpec

__all__ = ["HAVE_TRITON", "erase_triton_", "compile_kernel", "MAX_FILL_CHANNELS"]

try:  # triton ships with the CUDA build of torch; without it the torch path is used
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except Exception:  # pragma: no cover - depends on the installation
    HAVE_TRITON = False

#: Distinct per-channel fill values the kernel takes as scalars (more channels need one value).
MAX_FILL_CHANNELS = 4


def _erase_kernel(
    x_ptr,
    box_ptr,
    seed,
    fill_seed,
    num_boxes,
    C,
    H,
    W,
    K,
    s_b,
    s_c,
    s_h,
    s_w,
    area_lo,
    area_hi,
    logr_lo,
    logr_hi,
    p,
    v0,
    v1,
    v2,
    v3,
    lo0,
    lo1,
    lo2,
    lo3,
    hi0,
    hi1,
    hi2,
    hi3,
    SAMPLE: tl.constexpr,
    RANDOM_FILL: tl.constexpr,
    INTEGER: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    ATT: tl.constexpr,
    ATT_P2: tl.constexpr,
):
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
        tl.store(box_ptr + 4 * num_boxes + n, applied, mask=is_first)
    else:
        top = tl.load(box_ptr + n)
        left = tl.load(box_ptr + num_boxes + n)
        h = tl.load(box_ptr + 2 * num_boxes + n)
        w = tl.load(box_ptr + 3 * num_boxes + n)
        applied = tl.load(box_ptr + 4 * num_boxes + n)
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
    if knobs is not None:
        interpret = bool(knobs.runtime.interpret)
    else:  # pragma: no cover - depends on the installed triton
        interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if interpret not in _KERNELS:
        # the seeds change every call: do not compile a variant per "seed is 1 / divisible by 16"
        _KERNELS[interpret] = triton.jit(_erase_kernel, do_not_specialize=["seed", "fill_seed"])
    return _KERNELS[interpret]


_POINTER_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.uint8: "*u8"}


def compile_kernel(target: Any, dtype: torch.dtype, *, sample: bool, random_fill: bool) -> Any:
    """Compile the kernel ahead of time for ``target`` (e.g. ``GPUTarget("cuda", 90, 32)``).

    Needs no GPU, only Triton's backend for the target: the tests use it to check that the
    kernel compiles for CUDA on a machine without one (the interpreter does not type-check).
    """
    from triton.compiler import ASTSource

    floats = ["area_lo", "area_hi", "logr_lo", "logr_hi", "p"]
    floats += [f"{name}{i}" for name in ("v", "lo", "hi") for i in range(MAX_FILL_CHANNELS)]
    ints = ["seed", "fill_seed", "num_boxes", "C", "H", "W", "K", "s_b", "s_c", "s_h", "s_w"]
    signature = {"x_ptr": _POINTER_TYPES[dtype], "box_ptr": "*i32"}
    signature.update({name: "i32" for name in ints})
    signature.update({name: "fp32" for name in floats})
    constants = dict(
        SAMPLE=sample, RANDOM_FILL=random_fill, INTEGER=dtype == torch.uint8,
        BLOCK_H=32, BLOCK_W=64, ATT=ATTEMPTS, ATT_P2=triton.next_power_of_2(ATTEMPTS),
    )  # fmt: skip
    signature.update({name: "constexpr" for name in constants})
    source = ASTSource(fn=triton.jit(_erase_kernel), signature=signature, constexprs=constants)
    return triton.compile(source, target=target)


def _pad4(values: tuple[float, ...]) -> tuple[float, float, float, float]:
    v = tuple(values)[:MAX_FILL_CHANNELS]
    return tuple(v) + (v[-1],) * (MAX_FILL_CHANNELS - len(v))  # type: ignore[return-value]


def _as_stored(values: tuple[float, ...], dtype: torch.dtype) -> tuple[float, ...]:
    """The fill values rounded to ``dtype`` once, on the host, exactly as torch rounds them.

    float16/bfloat16 numbers are exact in float32, so the kernel's own downcast cannot round
    them differently (the Triton interpreter truncates to bfloat16 instead of rounding).
    """
    return tuple(torch.tensor(values, dtype=torch.float64).to(dtype).double().tolist())


def erase_triton_(
    x: torch.Tensor,
    fill: FillSpec,
    *,
    boxes: EraseBoxes | None = None,
    scale: tuple[float, float] = (0.1, 0.4),
    ratio: tuple[float, float] = (1.0, 1.0),
    p: float = 1.0,
    num_patches: int | None = None,
    seeds: tuple[int, int] = (0, 0),
) -> EraseBoxes:
    """Erase ``x`` (``(B, C, H, W)``) in place with one kernel launch; return the boxes (int32).

    ``boxes=None`` draws the boxes in the kernel from ``seeds[0]``; ``seeds[1]`` seeds the
    per-pixel noise of ``value="random"``. The caller checks that ``fill`` has at most
    :data:`MAX_FILL_CHANNELS` distinct channel values.
    """
    batch, channels, height, width = x.shape
    k = 1 if num_patches is None else num_patches
    if boxes is not None:
        k = boxes.top.shape[1] if boxes.top.dim() == 2 else 1
    num_boxes = batch * k
    if boxes is None:
        buf = torch.empty((5, num_boxes), dtype=torch.int32, device=x.device)
    else:
        applied = boxes.applied.repeat_interleave(k) if k > 1 else boxes.applied
        fields = (boxes.top, boxes.left, boxes.height, boxes.width)
        buf = torch.stack([f.reshape(-1) for f in fields] + [applied]).to(device=x.device, dtype=torch.int32)
    values = _pad4(_as_stored(fill.values, x.dtype)) if fill.values is not None else (0.0,) * 4
    low = _pad4(fill.random_low) if fill.values is None else (0.0,) * 4
    high = _pad4(fill.random_high) if fill.values is None else (1.0,) * 4
    block_w = min(triton.next_power_of_2(width), 64)
    block_h = max(1, min(triton.next_power_of_2(height), 2048 // block_w))
    grid = (num_boxes, triton.cdiv(height, block_h), triton.cdiv(width, block_w))
    if num_boxes:
        _kernel()[grid](
            x, buf, seeds[0], seeds[1], num_boxes, channels, height, width, k, *x.stride(),
            scale[0] * height * width, scale[1] * height * width, math.log(ratio[0]), math.log(ratio[1]), p,
            *values, *low, *high,
            SAMPLE=boxes is None, RANDOM_FILL=fill.values is None, INTEGER=x.dtype == torch.uint8,
            BLOCK_H=block_h, BLOCK_W=block_w, ATT=ATTEMPTS, ATT_P2=triton.next_power_of_2(ATTEMPTS),
        )  # fmt: skip
    shape = (batch, k) if num_patches is not None or (boxes is not None and boxes.top.dim() == 2) else (batch,)
    top, left, h, w, applied = (buf[i].view(shape) for i in range(5))
    applied = applied.view(batch, k)[:, 0] != 0
    return EraseBoxes(top, left, h, w, applied)
