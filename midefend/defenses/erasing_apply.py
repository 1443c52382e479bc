"""Write erased pixels into a ``(B, C, H, W)`` tensor in place, in pure torch.

Serves every device and fill; on the CPU a constant fill takes the compiled loop of
:mod:`.erasing_native` instead when it is built (about 1.5x faster at 64x64).

The cost to beat is writing the erased pixels once (``fill_`` on a buffer of that many
elements). A ``torch.where`` over the whole batch reads and writes every pixel (18-20x that
floor in ``benchmarks/erasing.py``); a Python loop over samples pays a dispatch per sample. Here the work is done by a few
``index_copy_`` calls on a *window view* of the batch:

    V = x.as_strided((n_offsets, C, h, w), (1, stride_C, stride_H, stride_W))

``V[s]`` is the ``C x h x w`` window whose first element sits ``s`` elements after ``x``'s
first element, so the box ``(b, top, left)`` is ``V[b*stride_B + top*stride_H + left*stride_W]``
and ``V.index_copy_(0, starts, fill)`` writes exactly the pixels of many boxes in one call
(measured: about 1 ns per erased element, against 0.1-0.2 ns for ``fill_``; a Python loop over
samples costs about 7 us per sample). A view has one window shape, so boxes are grouped by
``(h, w)``: the Python loop runs over distinct box shapes (a few dozen at most, independent of
the batch size). One exception, measured: ``index_copy_`` costs ~0.55 ns per element against
~0.15 ns for a strided ``copy_``, so on the CPU a constant-filled box of at least
:data:`LARGE_BOX_ELEMENTS` elements (a MIDRE box on 224x224 images) gets its own view, and all
such views are filled by one ``torch._foreach_copy_`` (about 1 us of Python per box to build the
view; 128x3x224x224 float32 went from 6.8 to 5.9 ms in ``benchmarks/erasing.py`` on one core).
Any strides work, so ``channels_last`` batches are erased in their own layout.

>>> import torch
>>> from midefend.defenses.erasing_params import EraseBoxes, FillSpec
>>> x = torch.zeros(2, 1, 4, 4)
>>> boxes = EraseBoxes(*(torch.tensor(v) for v in ([0, 2], [1, 0], [2, 2], [1, 3])), torch.tensor([True, True]))
>>> int(apply_boxes_(x, boxes, FillSpec((1.0,))).sum())  # 2*1 + 2*3 pixels
8
"""

from __future__ import annotations

import torch

from .erasing_params import EraseBoxes, FillSpec

__all__ = ["apply_boxes_", "apply_pixels_", "erase_differentiable", "flat_boxes"]


def flat_boxes(boxes: EraseBoxes) -> tuple[torch.Tensor, ...]:
    """``(sample, top, left, h, w)`` as 1-D tensors over the applied boxes only (patches flattened)."""
    top, left, h, w = boxes.top, boxes.left, boxes.height, boxes.width
    sample = torch.arange(boxes.applied.shape[0], device=top.device)
    if top.dim() == 2:
        k = top.shape[1]
        sample = sample.repeat_interleave(k)
        top, left, h, w = top.reshape(-1), left.reshape(-1), h.reshape(-1), w.reshape(-1)
        keep = boxes.applied.repeat_interleave(k)
    else:
        keep = boxes.applied
    keep = keep & (h > 0) & (w > 0)
    if bool(keep.all()):  # p=1 and no empty box: skip five masked copies
        return sample, top, left, h, w
    return sample[keep], top[keep], left[keep], h[keep], w[keep]


def _extent(sizes: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Number of storage elements spanned from the first to the last element, inclusive."""
    return 1 + sum((n - 1) * s for n, s in zip(sizes, strides))


#: Boxes with at least this many elements are written one strided ``copy_`` each (vectorised, about
#: 0.15 ns per element plus ~2.5-3.5 us per box for building and filling the view) instead of through
#: ``index_copy_`` (~0.55 ns per element): the crossover measured on one CPU core is near 8k elements.
LARGE_BOX_ELEMENTS = 8192


def apply_boxes_(
    x: torch.Tensor, boxes: EraseBoxes, fill: FillSpec, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Erase ``boxes`` from ``x`` (``(B, C, H, W)``, no zero strides) in place and return ``x``."""
    sample, top, left, h, w = flat_boxes(boxes)
    if sample.numel() == 0:
        return x
    sb, sc, sh, sw = x.stride()
    channels, height, width = x.shape[1:]
    total = _extent(tuple(x.shape), (sb, sc, sh, sw))
    starts = sample * sb + top * sh + left * sw
    key = h * (width + 1) + w
    order = torch.argsort(key, stable=True)
    shapes, counts = torch.unique_consecutive(key[order], return_counts=True)
    starts = starts[order]
    constant = None
    if fill.values is not None:
        # one (1, C, 1, 1) source expanded to every box: no per-pixel source memory is read
        constant = torch.tensor(fill.values, dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
    large: list[tuple[tuple[int, int, int], list[int]]] = []
    # large constant boxes on the CPU take the per-box vectorised copy (LARGE_BOX_ELEMENTS); inputs
    # that need gradients never get here (erase_differentiable)
    split_large = constant is not None and x.device.type == "cpu"
    for shape_key, group in zip(shapes.tolist(), torch.split(starts, counts.tolist())):
        bh, bw = divmod(shape_key, width + 1)
        window = (channels, bh, bw)  # the window spans the channels: one call per box shape
        if split_large and channels * bh * bw >= LARGE_BOX_ELEMENTS:
            large.append((window, group.tolist()))
            continue
        n_windows = total - (channels - 1) * sc - (bh - 1) * sh - (bw - 1) * sw
        view = x.as_strided((n_windows, *window), (1, sc, sh, sw))
        count = group.shape[0]
        source = constant.expand(count, *window) if constant is not None else _random_fill((count, *window), fill, x, generator)
        view.index_copy_(0, group, source)
    if large:
        _copy_large_boxes_(x, large, constant[0])
    return x


def _copy_large_boxes_(x: torch.Tensor, large: list, constant: torch.Tensor) -> None:
    """One strided view per box, all filled by a single ``_foreach_copy_`` (a C++ loop over boxes)."""
    strides = x.stride()[1:]
    views, sources = [], []
    for window, offsets in large:
        source = constant.expand(window)
        for offset in offsets:
            views.append(x.as_strided(window, strides, x.storage_offset() + offset))
            sources.append(source)
    torch._foreach_copy_(views, sources)  # private, but present in every torch this package supports (>= 2.2)


def erase_differentiable(
    x: torch.Tensor, boxes: EraseBoxes, fill: FillSpec, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x`` with ``boxes`` erased, out of place, through ops autograd can differentiate.

    For inputs that require gradients (erasing inside a differentiable pipeline): in-place writes
    through overlapping window views get wrong gradients, so this builds a ``(B, 1, H, W)`` mask of
    the boxes and takes one ``torch.where`` over the batch -- slower, but erased pixels get zero
    gradient and the others pass it through unchanged. Random fill draws its noise for the whole
    batch here, so its values differ from the fast path's for the same generator.
    """
    batch, channels, height, width = x.shape
    top, left, h, w = (f.reshape(batch, -1, 1, 1).to(device=x.device, dtype=torch.int64) for f in boxes[:4])
    rows = torch.arange(height, device=x.device).view(1, 1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, -1)
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    mask = inside.any(1, keepdim=True) & boxes.applied.to(x.device).view(-1, 1, 1, 1)
    if fill.values is not None:
        source = torch.tensor(fill.values, dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
    else:
        source = _random_fill((batch, channels, height, width), fill, x, generator)
    return torch.where(mask, source, x)


def _random_fill(shape: tuple[int, ...], fill: FillSpec, like: torch.Tensor, generator) -> torch.Tensor:
    """Uniform noise per pixel in ``[low_c, high_c)`` per channel (dim 1), in ``like``'s dtype."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=torch.float32)
    view = (1, -1) + (1,) * (len(shape) - 2)
    low = torch.tensor(fill.random_low, device=like.device).view(view)
    high = torch.tensor(fill.random_high, device=like.device).view(view)
    values = low + (high - low) * u
    if like.dtype == torch.uint8:
        values = values.floor().clamp_(0, 255)
    return values.to(like.dtype)


def apply_pixels_(
    x: torch.Tensor,
    fraction: torch.Tensor,
    applied: torch.Tensor,
    fill: FillSpec,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Erase each pixel (all channels together) of sample b with probability ``fraction[b]``, in place.

    The random-pixels ablation of the MIDRE paper (D.1). Every pixel is decided, so this path
    reads the whole batch; it exists for the ablation, not for speed.
    """
    batch, channels, height, width = x.shape
    u = torch.rand(batch, 1, height, width, generator=generator, device=x.device, dtype=torch.float32)
    mask = (u < fraction.to(torch.float32).view(-1, 1, 1, 1)) & applied.view(-1, 1, 1, 1)
    if fill.values is not None:
        for c, v in enumerate(fill.values):
            x[:, c : c + 1].masked_fill_(mask, v)
        return x
    noise = _random_fill((batch, channels, height, width), fill, x, generator)
    return x.copy_(torch.where(mask, noise, x))
