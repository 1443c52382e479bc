"""Constant-fill box erasing on the CPU through the compiled loop in ``_erase_cpu.c``.

``index_copy_`` (the pure-torch path in :mod:`.erasing_apply`) loads an index per element;
this loop stores each box row with a vectorised stride-1 loop, so an erase costs about what
writing the erased pixels once costs. It is built at install time when a C compiler is present
(``setup.py``); without it :data:`HAVE_NATIVE` is ``False`` and erasing takes the torch path.
Random fill stays on the torch path (its noise comes from a ``torch.Generator``).

>>> import torch
>>> from midefend.defenses.erasing_params import EraseBoxes, FillSpec
>>> x = torch.zeros(2, 1, 4, 4)
>>> boxes = EraseBoxes(*(torch.tensor(v) for v in ([0, 2], [1, 0], [2, 2], [1, 3])), torch.tensor([True, True]))
>>> int(fill_boxes_(x, boxes, FillSpec((1.0,))).sum()) if HAVE_NATIVE else 8  # 2*1 + 2*3 pixels
8
"""

from __future__ import annotations

import torch
from torch.autograd.graph import increment_version

from .erasing_apply import flat_boxes
from .erasing_params import EraseBoxes, FillSpec

try:
    from ._erase_cpu import fill_boxes as _fill_boxes
except ImportError:  # built without a C compiler: the torch path serves
    _fill_boxes = None

__all__ = ["HAVE_NATIVE", "fill_boxes_", "native_applies", "native_is_faster"]

#: Whether the compiled CPU loop was built with this install.
HAVE_NATIVE = _fill_boxes is not None

def native_applies(x: torch.Tensor, fill: FillSpec) -> bool:
    """Whether :func:`fill_boxes_` can erase ``x``: a CPU tensor, constant fill, 1-8 byte elements."""
    return x.device.type == "cpu" and fill.values is not None and x.element_size() in (1, 2, 4, 8)


#: torch's intra-op grain size: the torch path copies a box this large with all of torch's threads
#: (one ``_foreach_copy_`` per large box), while this loop is single-threaded.
PARALLEL_BOX_ELEMENTS = 32768


def native_is_faster(x: torch.Tensor, boxes: EraseBoxes) -> bool:
    """Whether this loop beats the torch path on ``boxes``: always on one thread; with more, only
    while the average box is below :data:`PARALLEL_BOX_ELEMENTS` (measured on 2 threads:
    1.5-1.9x faster up to 160x160 images, 5% slower at 224x224)."""
    if torch.get_num_threads() == 1:
        return True
    count = boxes.top.numel()
    return count == 0 or int((boxes.height * boxes.width).sum()) * x.shape[1] < PARALLEL_BOX_ELEMENTS * count


def fill_boxes_(x: torch.Tensor, boxes: EraseBoxes, fill: FillSpec) -> torch.Tensor:
    """Erase ``boxes`` (inside the image: the caller checked) from ``x`` in place and return ``x``.

    ``x`` must satisfy :func:`native_applies` and own its pixels (no zero strides), and no
    autograd graph may need the overwritten values (the write bypasses autograd).
    """
    if not HAVE_NATIVE:  # the callers check HAVE_NATIVE; this guards direct use
        raise RuntimeError("the compiled erasing loop is not built (midefend was installed without a C compiler)")
    if not native_applies(x, fill):
        raise ValueError(f"fill_boxes_ needs a CPU tensor with a constant fill, got {x.device} and {fill}")
    if len(fill.values) != x.shape[1]:  # the loop reads one value per channel
        raise ValueError(f"fill has {len(fill.values)} values for {x.shape[1]} channels")
    sample, top, left, h, w = flat_boxes(boxes)
    if sample.numel() == 0:
        return x
    sb, sc, sh, sw = x.stride()
    starts = (sample * sb + top * sh + left * sw).to(torch.int64).contiguous()
    heights = h.to(torch.int64).contiguous()
    widths = w.to(torch.int64).contiguous()
    constant = torch.tensor(fill.values, dtype=x.dtype)
    # the addresses stay valid: every tensor is held by a local until the call returns
    _fill_boxes(
        x.data_ptr(), x.element_size(), starts.data_ptr(), heights.data_ptr(), widths.data_ptr(),
        starts.numel(), x.shape[1], sc, sh, sw, constant.data_ptr(),
    )  # fmt: skip
    # autograd cannot see a write through a raw pointer: bump the version counter as an in-place
    # torch op would, so a graph that saved ``x`` refuses to backpropagate through stale values
    increment_version(x)
    return x
