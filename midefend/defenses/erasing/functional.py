"""How to erase: the writer :func:`erase_boxes_` and :func:`random_erase_batch` (sample, then write).

The torch writer serves every device and writes only the erased pixels, many boxes per
``index_copy_`` through a *window view* of the batch::

    V = x.as_strided((n, C, h, w), (1, stride_C, stride_H, stride_W))

``V[s]`` is the ``C x h x w`` window starting ``s`` elements after ``x[0, 0, 0, 0]``, so box
``(b, top, left)`` is ``V[b*stride_B + top*stride_H + left*stride_W]`` in any memory layout. A
view has one window shape: the loop runs over distinct box shapes (a few dozen, whatever the
batch size). On the CPU, constant boxes of at least :data:`LARGE_BOX_ELEMENTS` get a slice each,
all copied by one ``_foreach_copy_`` (a strided copy costs ~0.15 ns per element, ``index_copy_``
~0.55). On CUDA one Triton kernel launch draws the boxes and writes them (:mod:`._triton`).

>>> x = torch.zeros(2, 1, 4, 4)
>>> boxes = EraseBoxes(*(torch.tensor(v) for v in ([0, 2], [1, 0], [2, 2], [1, 3])), torch.tensor([True, True]))
>>> int(erase_boxes_(x, boxes, FillSpec((1.0,))).sum())  # 2*1 + 2*3 pixels
8
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..._validate import check_choice
from ...errors import ConfigError
from . import _triton
from .params import EraseBoxes, ErasingConfig, FillSpec, check_boxes, check_generator, check_index, check_input, fill_spec, sample_boxes

BACKENDS = ("auto", "torch", "triton")
#: Constant boxes this large are copied one strided view each on the CPU (crossover near 8k elements).
LARGE_BOX_ELEMENTS = 8192
#: torch runs a CPU op on one thread below this many elements (``at::internal::GRAIN_SIZE``). The
#: writer keeps every copy under it: erasing is bandwidth-bound, and on a busy machine each OpenMP
#: region waits for a descheduled thread and leaves spinning ones behind (issue 33: 50x slower at
#: 2 threads). No thread setting is touched, so other threads and the results are unaffected.
SERIAL_ELEMENTS = 32768


def pick_backend(device: torch.device, fill: FillSpec, channels: int, backend: str, *, torch_only: bool = False) -> str:
    """``"triton"`` or ``"torch"``. ``auto`` takes Triton for CUDA tensors when it is installed and
    the fill fits the kernel's :data:`~._triton.MAX_FILL_CHANNELS` per-channel scalars."""
    check_choice("backend", backend, BACKENDS)
    if torch_only or backend == "torch":
        return "torch"
    per_channel = (fill.values,) if fill.values is not None else (fill.random_low, fill.random_high)
    fits = channels <= _triton.MAX_FILL_CHANNELS or all(len(set(seq)) == 1 for seq in per_channel)
    if backend == "triton":
        if not _triton.HAVE_TRITON:
            raise ConfigError("backend='triton' needs the triton package, which is not installed")
        if not fits:
            raise ConfigError(
                f"backend='triton' takes at most {_triton.MAX_FILL_CHANNELS} distinct channel values, got {channels} channels"
            )
        return "triton"
    return "triton" if device.type == "cuda" and _triton.HAVE_TRITON and fits else "torch"


def erase_boxes_(
    x: torch.Tensor, boxes: EraseBoxes, fill: FillSpec, *, generator: torch.Generator | None = None, backend: str = "auto"
) -> torch.Tensor:
    """Write ``fill`` into the applied ``boxes`` of ``x`` (``(B, C, H, W)``, no zero strides) in
    place and return ``x``. ``generator`` draws the noise of a random fill on the torch path."""
    if pick_backend(x.device, fill, x.shape[1], backend) == "triton":
        _triton.erase_(x, fill, boxes=boxes)
        return x
    sample, top, left, h, w = _applied_boxes(boxes)
    serial = x.device.type == "cpu" and torch.get_num_threads() > 1
    if sample.numel() <= 4 and x.device.type == "cpu":  # a DataLoader's one image: slices beat the grouping's ~20 ops
        for b, t, l, bh, bw in zip(*(f.tolist() for f in (sample, top, left, h, w))):  # noqa: E741
            box = x[b, :, t : t + bh, l : l + bw]
            box.copy_(_source(fill, box[None], generator)[0].expand_as(box))
        return x
    channels = x.shape[1]
    # a constant fill is one (1, C, 1, 1) source expanded to every box: no per-pixel memory is read
    constant = None if fill.values is None else x.new_tensor(fill.values).view(1, -1, 1, 1)
    if constant is not None and x.device.type == "cpu":
        rows = torch.stack([sample, top, left, h, w], 1).tolist()
        large = [r for r in rows if r[3] * r[4] * channels >= LARGE_BOX_ELEMENTS]
        if large:  # a strided view each, all copied by one C++ loop (private, in every torch >= 2.2)
            sb, sc, sh, sw = x.stride()
            offset, src = x.storage_offset(), constant[0]
            views = [x.as_strided((channels, bh, bw), (sc, sh, sw), offset + b * sb + t * sh + l * sw) for b, t, l, bh, bw in large]  # noqa: E741
            pairs = [pair for v in views for pair in _serial_copies(v, src)] if serial else [(v, src) for v in views]
            torch._foreach_copy_([dst for dst, _ in pairs], [source for _, source in pairs])  # the (C, 1, 1) source broadcasts
            if len(large) == len(rows):
                return x
            small = [r for r in rows if r[3] * r[4] * channels < LARGE_BOX_ELEMENTS]
            sample, top, left, h, w = torch.tensor(small, dtype=torch.int64).unbind(1)
    if sample.numel():
        _write_grouped(x, (sample, top, left, h, w), fill, constant, generator, serial)
    return x


def _write_grouped(x, applied, fill, constant, generator, serial) -> None:
    """Boxes of one shape share a window view of the batch and one ``index_copy_`` (chunked under
    :data:`SERIAL_ELEMENTS` when ``serial``)."""
    sample, top, left, h, w = applied
    sb, sc, sh, sw = x.stride()
    channels, width = x.shape[1], x.shape[3]
    total = 1 + sum((n - 1) * s for n, s in zip(x.shape, x.stride()))  # elements the batch spans
    key = h * (width + 1) + w
    order = torch.argsort(key, stable=True)
    shapes, counts = torch.unique_consecutive(key[order], return_counts=True)
    starts = (sample * sb + top * sh + left * sw)[order]
    for shape_key, group in zip(shapes.tolist(), torch.split(starts, counts.tolist())):
        bh, bw = divmod(shape_key, width + 1)
        window = (channels, bh, bw)
        view = x.as_strided((total - (channels - 1) * sc - (bh - 1) * sh - (bw - 1) * sw, *window), (1, sc, sh, sw))
        n = group.shape[0]
        source = constant.expand(n, *window) if constant is not None else _noise((n, *window), fill, x, generator)
        if not serial:
            view.index_copy_(0, group, source)
            continue
        step = max(1, (SERIAL_ELEMENTS - 1) // (channels * bh * bw))
        for part, src in zip(torch.split(group, step), torch.split(source, step)):
            view.index_copy_(0, part, src)


def _serial_copies(box: torch.Tensor, source: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(destination, source)`` pairs covering ``box`` (``C x h x w``; ``source`` ``C x 1 x 1`` or
    ``C x h x w``) in row bands of fewer than :data:`SERIAL_ELEMENTS` elements (one channel per band
    when a channel's row alone is that long)."""
    channels, rows, cols = box.shape
    if channels * rows * cols < SERIAL_ELEMENTS:
        return [(box, source)]
    planes = [(box, source)] if channels * cols < SERIAL_ELEMENTS else list(zip(box.split(1), source.split(1)))
    step = max(1, (SERIAL_ELEMENTS - 1) // (planes[0][0].shape[0] * cols))
    if source.shape[1] == 1:
        return [(band, src) for plane, src in planes for band in plane.split(step, dim=1)]
    return [pair for plane, src in planes for pair in zip(plane.split(step, dim=1), src.split(step, dim=1))]


def _applied_boxes(boxes: EraseBoxes) -> tuple[torch.Tensor, ...]:
    """``(sample, top, left, h, w)`` as 1-D tensors over the applied, non-empty boxes."""
    top, left, h, w = (f.reshape(-1) for f in boxes[:4])
    k = top.shape[0] // max(boxes.applied.shape[0], 1)
    sample = torch.arange(boxes.applied.shape[0], device=top.device).repeat_interleave(k)
    keep = boxes.applied.repeat_interleave(k) & (h > 0) & (w > 0)
    if bool(keep.all()):  # p=1, no empty box: skip five masked copies
        return sample, top, left, h, w
    return sample[keep], top[keep], left[keep], h[keep], w[keep]


def erase_masked(x: torch.Tensor, boxes: EraseBoxes, fill: FillSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` with ``boxes`` erased out of place by a mask and one ``torch.where``, for inputs that
    need gradients (erased pixels get none). Slower; random noise is drawn for the whole batch."""
    batch, channels, height, width = x.shape
    top, left, h, w = (f.reshape(batch, -1, 1, 1).to(device=x.device, dtype=torch.int64) for f in boxes[:4])
    rows = torch.arange(height, device=x.device).view(1, 1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, -1)
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    mask = inside.any(1, keepdim=True) & boxes.applied.to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, _source(fill, x, generator), x)


def _erase_pixels_(x: torch.Tensor, fraction: torch.Tensor, applied: torch.Tensor, fill: FillSpec, generator) -> torch.Tensor:
    """Each pixel (all channels) of sample b erased with probability ``fraction[b]`` (paper D.1)."""
    u = torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator, device=x.device)
    mask = (u < fraction.to(torch.float32).view(-1, 1, 1, 1)) & applied.view(-1, 1, 1, 1)
    return x.copy_(torch.where(mask, _source(fill, x, generator), x))


def _source(fill: FillSpec, like: torch.Tensor, generator) -> torch.Tensor:
    """The fill as a tensor broadcastable to ``like``: ``(1, C, 1, 1)`` values or per-pixel noise."""
    if fill.values is not None:
        return like.new_tensor(fill.values).view(1, -1, 1, 1)
    return _noise(tuple(like.shape), fill, like, generator)


def _noise(shape: tuple[int, ...], fill: FillSpec, like: torch.Tensor, generator) -> torch.Tensor:
    """Uniform noise in ``[low_c, high_c)`` per channel (dim 1), in ``like``'s dtype."""
    u = torch.rand(shape, generator=generator, device=like.device)
    view = (1, -1) + (1,) * (len(shape) - 2)
    low, high = (torch.tensor(t, device=like.device).view(view) for t in (fill.random_low, fill.random_high))
    values = low + (high - low) * u
    return (values.floor().clamp_(0, 255) if like.dtype == torch.uint8 else values).to(like.dtype)


def erase_with_config(
    x: torch.Tensor, cfg: ErasingConfig, *, index: Any = None, generator: torch.Generator | None = None,
    inplace: bool = False, boxes: EraseBoxes | None = None, backend: str = "auto", boxes_checked: bool = False,
) -> tuple[torch.Tensor, EraseBoxes | None]:  # fmt: skip
    """Sample (unless ``boxes`` are given) and write: the step behind every entry point.
    ``boxes_checked``: the boxes were drawn for this very batch (the transform), skip the checks."""
    check_input(x, cfg.normalized)
    batch, channels, height, width = x.shape
    fill = fill_spec(cfg.value, cfg.normalized, channels, x.dtype)
    if inplace and any(s == 0 and n > 1 for s, n in zip(x.stride(), x.shape)):
        raise ConfigError("inplace=True needs a tensor whose pixels have their own memory, got an expanded view")
    needs_grad = x.requires_grad and torch.is_grad_enabled()  # window-view writes are not differentiable
    use = pick_backend(x.device, fill, channels, backend, torch_only=needs_grad or cfg.mode == "pixels")
    drawn_by_torch = use == "torch" or cfg.mode == "fixed"  # Triton draws its own boxes otherwise
    if drawn_by_torch:
        check_generator(generator, x.device)
    if cfg.mode == "pixels":
        if boxes is not None:
            raise ConfigError("boxes= cannot be used with mode='pixels' (there are no boxes to replay)")
        u = torch.rand(batch, 2, generator=generator, device=x.device, dtype=torch.float64)
        fraction = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 0]
        return _erase_pixels_(x if inplace else x.clone(), fraction, u[:, 1] < cfg.p, fill, generator), None
    if boxes is not None and not boxes_checked:
        boxes = check_boxes(boxes, batch, height, width, x.device)
    elif boxes is None and drawn_by_torch:
        fixed = cfg.mode == "fixed"
        boxes = sample_boxes(
            batch, height, width, scale=cfg.scale, ratio=cfg.ratio, p=cfg.p, num_patches=cfg.patches(), generator=generator,
            device=x.device, fixed_seed=cfg.seed if fixed else None, index=check_index(index, batch, x.device) if fixed else None,
        )  # fmt: skip
    if needs_grad:
        erased = erase_masked(x, boxes, fill, generator)
        return (x.copy_(erased) if inplace else erased), boxes
    out = x if inplace else x.clone()  # clone keeps channels_last
    if boxes is None:  # Triton draws the boxes in its one launch
        seeds = torch.randint(0, 2**31 - 1, (2,), generator=generator, device=generator.device if generator is not None else "cpu")
        draw = dict(scale=cfg.scale, ratio=cfg.ratio, p=cfg.p, num_patches=cfg.patches())
        return out, _triton.erase_(out, fill, draw=draw, seeds=tuple(seeds.tolist()))
    return erase_boxes_(out, boxes, fill, generator=generator, backend=use), boxes


def random_erase_batch(
    x: torch.Tensor, *, p: float = 1.0, scale: tuple[float, float] = (0.1, 0.4), ratio: tuple[float, float] = (1.0, 1.0),
    value: str | float | Sequence[float] = "mean", normalized: None | str | tuple = None, mode: str = "box",
    num_patches: int = 4, seed: int = 0, index: Any = None, generator: torch.Generator | None = None,
    inplace: bool = False, boxes: EraseBoxes | None = None, return_boxes: bool = False, backend: str = "auto",
):  # fmt: skip
    """Erase one random box per sample of a ``(B, C, H, W)`` float (or uint8) batch, without a loop
    over samples, on any device and memory format; ``docs/erasing.md`` explains every argument.

    Per sample: ``applied ~ Bernoulli(p)``, area fraction ``~ U[scale]``, aspect ``h/w`` drawn
    log-uniformly from ``ratio``, position uniform; the box gets ``value`` ("mean": ImageNet mean,
    "random", a number or one per channel; in pixel space, converted when ``normalized=(mean,
    std)`` says how the input was normalised). ``mode``: "box", "fixed" (the box depends on
    ``seed`` and the data-set ``index`` only), "pixels" or "patches" (``num_patches`` boxes).
    ``generator`` lives on ``x``'s device (Triton also takes a CPU one). ``boxes`` replays
    ``return_boxes=True`` output. ``backend``: "auto" (Triton for CUDA tensors, else torch),
    "torch" or "triton"; inputs that need gradients and mode "pixels" take torch. Triton's boxes
    (int32) come from its own random stream: other boxes than the CPU's for the same seed.

    >>> x = torch.zeros(4, 3, 16, 16)
    >>> y = random_erase_batch(x, scale=(0.25, 0.25), value=1.0, generator=torch.Generator().manual_seed(1))
    >>> (y[:, 0] == 1).flatten(1).sum(1).tolist()  # 8 x 8 boxes
    [64, 64, 64, 64]
    """
    cfg = ErasingConfig(p, scale, ratio, value, normalized, mode, num_patches, seed)
    if return_boxes and cfg.mode == "pixels":
        raise ConfigError("return_boxes=True cannot be used with mode='pixels' (there are no boxes)")
    out, drawn = erase_with_config(x, cfg, index=index, generator=generator, inplace=inplace, boxes=boxes, backend=backend)
    return (out, drawn) if return_boxes else out
