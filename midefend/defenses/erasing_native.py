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

import functools

import torch
from torch.autograd.graph import increment_version

from .erasing_apply import _extent
from .erasing_params import EraseBoxes, FillSpec

#: The argument list this Python side passes; the extension exports the one it was built with, so
#: a stale build (an editable install after the C file changed) is not called with the wrong one.
ABI_VERSION = 2

try:
    from . import _erase_cpu
except ImportError:  # built without a C compiler: the torch path serves
    _erase_cpu = None

__all__ = ["HAVE_NATIVE", "fill_boxes_", "native_is_faster", "native_refusal"]

#: Whether the compiled CPU loop was built with this install (and matches this Python side).
HAVE_NATIVE = _erase_cpu is not None and getattr(_erase_cpu, "ABI_VERSION", None) == ABI_VERSION

#: The dtypes the loop writes (their bit patterns come from ``torch.tensor(values, dtype=...)``).
NATIVE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8)


def native_refusal(x: torch.Tensor, fill: FillSpec) -> str | None:
    """Why :func:`fill_boxes_` must not write ``x`` (``None``: it may).

    The loop writes through ``x.data_ptr()``, past every check a torch op makes, so anything
    torch would handle specially -- tracing, transforms, tensor subclasses, inference tensors,
    forward-mode AD, lazy negation, overlapping memory, a storage too small -- is left to the
    torch path (which then computes, or raises, what torch always does).
    """
    if torch.compiler.is_compiling():  # data_ptr() of a traced tensor is not its memory
        return "cannot run while torch.compile traces"
    if type(x) is not torch.Tensor or x.layout != torch.strided:
        return f"needs a plain strided torch.Tensor, got {type(x).__name__} with layout {x.layout}"
    if x.device.type != "cpu":
        return f"needs a CPU tensor, got {x.device.type}"
    if fill.values is None:
        return "needs a constant fill, got value='random'"
    if x.dtype not in NATIVE_DTYPES:
        return f"takes float32, float64, float16, bfloat16 or uint8 tensors, got {x.dtype}"
    if _is_functorch_wrapped(x) or _forward_ad_active():
        return "cannot run under functorch transforms (vmap, jacfwd) or forward-mode AD"
    if x.is_inference() and not torch.is_inference_mode_enabled():
        return "cannot write an inference tensor outside inference mode"
    if x.is_neg():
        return "cannot write a lazily negated tensor"
    if not _non_overlapping(x):
        return "needs a tensor whose elements do not share memory"
    needed_bytes = (x.storage_offset() + _extent(tuple(x.shape), x.stride())) * x.element_size()
    if x.numel() and needed_bytes > x.untyped_storage().nbytes():
        return "needs a tensor whose storage holds all its elements (this one was resized or freed)"
    return None


def _is_functorch_wrapped(x: torch.Tensor) -> bool:
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check(x)) if check is not None else False


def _forward_ad_active() -> bool:
    from torch.autograd import forward_ad  # a dual level is open: tangents would not be erased

    return getattr(forward_ad, "_current_level", -1) >= 0


def _non_overlapping(x: torch.Tensor) -> bool:
    """No two elements share memory: with dims sorted by stride, each stride exceeds the span of
    the smaller ones (sufficient, and exact for every layout torch itself produces)."""
    span = 1
    for stride, size in sorted((st, n) for st, n in zip(x.stride(), x.shape) if n > 1):
        if stride < span:
            return False
        span += stride * (size - 1)
    return True


@functools.lru_cache(maxsize=64)
def _fill_values(hex_values: tuple[str, ...], dtype: torch.dtype) -> torch.Tensor:
    """The per-channel fill in ``dtype``'s bit pattern; cached (a per-image transform asks for
    the same one every call) and never written. Keyed by ``float.hex``: ``-0.0 == 0.0``."""
    return torch.tensor([float.fromhex(v) for v in hex_values], dtype=dtype)


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
    """Erase ``boxes`` from ``x`` in place and return ``x`` (``ValueError``, nothing written, if a
    box lies outside the image or :func:`native_refusal` refuses ``x``).

    No autograd graph may need its gradient through the overwritten values (the version counter
    is bumped, as an in-place torch op would).
    """
    if not HAVE_NATIVE:  # the callers check HAVE_NATIVE; this guards direct use
        raise RuntimeError("the compiled erasing loop is not built (midefend was installed without a C compiler)")
    if x.dim() != 4:
        raise ValueError(f"fill_boxes_ needs a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    reason = native_refusal(x, fill)
    if reason is not None:
        raise ValueError(f"fill_boxes_ {reason}")
    return _write_boxes_(x, boxes, fill)


def _write_boxes_(x: torch.Tensor, boxes: EraseBoxes, fill: FillSpec) -> torch.Tensor:
    """:func:`fill_boxes_` for callers that have already had ``x`` pass :func:`native_refusal` (internal)."""
    if len(fill.values) != x.shape[1]:  # the loop reads one value per channel
        raise ValueError(f"fill has {len(fill.values)} values for {x.shape[1]} channels")
    # resolve_neg: the loop reads raw memory, so a lazily negated field must be materialised
    top, left, h, w = (f.to(device="cpu", dtype=torch.int64).resolve_neg().contiguous() for f in boxes[:4])
    applied = boxes.applied.to(device="cpu", dtype=torch.bool).contiguous()
    batch = x.shape[0]
    same_shape = all(f.shape == top.shape for f in (left, h, w))
    if applied.shape != (batch,) or top.dim() not in (1, 2) or top.shape[0] != batch or not same_shape:
        raise ValueError(f"boxes must hold ({batch},) or ({batch}, K) tensors for a batch of {batch}")
    constant = _fill_values(tuple(float(v).hex() for v in fill.values), x.dtype)
    sb, sc, sh, sw = x.stride()
    # the addresses stay valid: every tensor is held by a local until the call returns; the loop
    # checks every applied box against the image before it writes anything
    _erase_cpu.fill_boxes(
        x.data_ptr(), x.element_size(), x.shape[1], x.shape[2], x.shape[3], sb, sc, sh, sw,
        top.data_ptr(), left.data_ptr(), h.data_ptr(), w.data_ptr(), applied.data_ptr(),
        batch, 1 if top.dim() == 1 else top.shape[1], constant.data_ptr(),
    )  # fmt: skip
    # autograd cannot see a write through a raw pointer: bump the version counter as an in-place
    # torch op would, so a graph that saved ``x`` refuses to backpropagate through stale values
    increment_version(x)
    return x

