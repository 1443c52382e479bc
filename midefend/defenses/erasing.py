"""MIDRE random erasing: a batch function, an ``nn.Module`` and a torchvision-v2 transform.

MIDRE (Nguyen et al., "Random Erasing vs. Model Inversion") trains the target model on images
with one random box erased: area ratio ``a_e ~ U[0.1, a_h]`` (``a_h = 0.4``, or ``0.8``), a
square box in the authors' configs (``ratio=(1, 1)``; the paper's D.4 ablation also tries 0.5
and 2.0), filled with the ImageNet mean, ``p=1`` (every image, every epoch).

Three entry points share one implementation (:func:`random_erase_batch`):

* :func:`random_erase_batch` -- a ``(B, C, H, W)`` batch, every sample its own box, no Python
  loop over samples; CPU (window views, see :mod:`.erasing_apply`) and CUDA (one fused Triton
  kernel launch, see :mod:`.erasing_triton`).
* :class:`BatchRandomErasing` -- the same as an ``nn.Module`` for the training step (identity
  in ``eval()`` mode, like dropout).
* :class:`RandomErasingTransform` -- a ``torchvision.transforms.v2`` transform for a
  DataLoader: PIL images, uint8 and float tensors, ``tv_tensors.Image`` and batched
  ``(..., C, H, W)`` tensors.

Fill space. ``value`` is given in pixel space ([0, 1]; scaled by 255 for uint8 input).
``normalized=(mean, std)`` says the input already went through ``Normalize(mean, std)``, so
``v`` is written as ``(v - mean) / std`` -- the paper's "ImageNet mean" colour.
``normalized="midre"`` reproduces the MIDRE *code*, which inserts ``Normalize(0.5, 0.5)``
before torchvision's ``RandomErasing(value=[0.485, 0.456, 0.406])`` and so writes those numbers
unchanged into the normalised tensor (pixel colour ``0.5 + 0.5 * 0.485 = 0.74``...): the fill
is the same as ``normalized=None``; the flag records the convention and refuses uint8 input.

Modes (the paper's ablations): ``"box"`` (MIDRE), ``"fixed"`` (C.2: the box depends only on
the image's data-set index and ``seed``), ``"pixels"`` (D.1: each pixel erased with probability
``a ~ U[scale]``; the paper uses ``scale=(f, f)`` and ``value="random"``), ``"patches"`` (D.1:
``num_patches`` boxes, each of area ``U[scale]``: 4P is ``scale=(0.025, 0.1)``, 8P
``scale=(0.0125, 0.1)``).

>>> import torch
>>> x = torch.rand(8, 3, 32, 32)
>>> y, boxes = random_erase_batch(x, scale=(0.1, 0.4), return_boxes=True,
...                               generator=torch.Generator().manual_seed(0))
>>> torch.equal(y, random_erase_batch(x, boxes=boxes))  # replay
True
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2 import functional as F

from ..errors import ConfigError
from .erasing_apply import apply_boxes_, apply_pixels_, erase_differentiable
from .erasing_params import (
    EraseBoxes,
    check_index,
    check_mode,
    check_normalized,
    check_num_patches,
    check_pair,
    check_probability,
    check_value,
    fill_spec,
    sample_boxes,
)
from .erasing_native import HAVE_NATIVE, _write_boxes_, native_is_faster, native_refusal
from .erasing_triton import HAVE_TRITON, MAX_FILL_CHANNELS, erase_triton_

__all__ = ["EraseBoxes", "random_erase_batch", "BatchRandomErasing", "RandomErasingTransform"]

_BACKENDS = ("auto", "torch", "triton", "native")


class _Config:
    """The checked, immutable settings shared by the three entry points."""

    def __init__(self, p, scale, ratio, value, normalized, mode, num_patches, seed):
        self.p = check_probability("p", p)
        self.scale = check_pair("scale", scale, upper=1.0)
        self.ratio = check_pair("ratio", ratio, upper=None)
        self.value = check_value(value)
        self.normalized = check_normalized(normalized)
        self.mode = check_mode(mode)
        self.num_patches = check_num_patches(num_patches)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        # keep the arguments as given, for repr()
        self.given = dict(p=p, scale=scale, ratio=ratio, value=value, normalized=normalized, mode=mode)

    def patches(self) -> int | None:
        return self.num_patches if self.mode == "patches" else None


def _check_input(x: Any, normalized) -> None:
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ConfigError(f"x must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not (x.dtype.is_floating_point or x.dtype == torch.uint8):
        raise ConfigError(f"x must be a floating-point (or uint8) tensor, got {x.dtype}")
    if normalized is not None and not x.dtype.is_floating_point:
        raise ConfigError(f"normalized={normalized!r} needs a floating-point input, got {x.dtype}")


def _check_boxes(boxes: Any, batch: int, height: int, width: int, device: torch.device) -> EraseBoxes:
    if not isinstance(boxes, EraseBoxes):
        raise ConfigError(f"boxes must be the EraseBoxes returned with return_boxes=True, got {type(boxes).__name__}")
    shape = tuple(boxes.top.shape)
    if len(shape) not in (1, 2) or shape[0] != batch or any(tuple(f.shape) != shape for f in boxes[:4]):
        raise ConfigError(f"boxes must hold ({batch},) or ({batch}, K) tensors for a batch of {batch}, got shape {shape}")
    if tuple(boxes.applied.shape) != (batch,):
        raise ConfigError(f"boxes.applied must have shape ({batch},), got {tuple(boxes.applied.shape)}")
    fields = torch.stack([f.to(device=device, dtype=torch.int64) for f in boxes[:4]])  # top, left, h, w
    if fields.numel():  # a few ops on the stacked fields
        limits = torch.tensor([height, width], device=device).view(2, *[1] * (fields.dim() - 1))
        # h > height - top rather than top + h > height: the sum can wrap around for huge values;
        # top > height makes the room negative, so it is caught too
        if bool((fields.amin() < 0) | (fields[2:] > limits - fields[:2]).any()):
            raise ConfigError(f"boxes must lie inside the {height}x{width} image")
    return EraseBoxes(*fields.unbind(0), boxes.applied.to(device=device, dtype=torch.bool))


def _erase(
    x: torch.Tensor,
    cfg: _Config,
    *,
    index=None,
    generator: torch.Generator | None,
    inplace: bool,
    boxes: EraseBoxes | None,
    backend: str,
    drawn_here: bool = False,
) -> tuple[torch.Tensor, EraseBoxes | None]:
    """The one erase behind all three entry points. ``drawn_here``: ``boxes`` come from
    :func:`sample_boxes` for this very batch (the transform's ``make_params``), so the replay
    checks are skipped -- they cost as much as the erase of one image."""
    _check_input(x, cfg.normalized)
    if backend not in _BACKENDS:
        raise ConfigError(f"backend must be one of 'auto', 'torch', 'triton', 'native', got {backend!r}")
    batch, channels, height, width = x.shape
    fill = fill_spec(cfg.value, cfg.normalized, channels, x.dtype)
    if inplace and any(s == 0 and n > 1 for s, n in zip(x.stride(), x.shape)):
        raise ConfigError("inplace=True needs a tensor whose pixels have their own memory, got an expanded view")
    if cfg.mode == "pixels":
        if boxes is not None:
            raise ConfigError("boxes= cannot be used with mode='pixels' (there are no boxes to replay)")
        u = torch.rand(batch, 2, generator=generator, device=x.device, dtype=torch.float64)
        fraction = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 0]
        out = x if inplace else x.clone()  # clone keeps channels_last
        return apply_pixels_(out, fraction, u[:, 1] < cfg.p, fill, generator), None
    if boxes is not None:
        if not drawn_here:
            boxes = _check_boxes(boxes, batch, height, width, x.device)
    elif cfg.mode == "fixed":
        idx = check_index(index, batch, x.device)
        boxes = sample_boxes(
            batch, height, width, scale=cfg.scale, ratio=cfg.ratio, p=cfg.p,
            generator=generator, device=x.device, fixed_seed=cfg.seed, index=idx,
        )  # fmt: skip
    # writes through window views (and the kernel) are not differentiable; a mask over the batch is
    needs_grad = x.requires_grad and torch.is_grad_enabled()
    if not needs_grad and _use_triton(x, fill, backend):
        out = x if inplace else x.clone()
        seed_device = generator.device if generator is not None else "cpu"
        seeds = torch.randint(0, 2**31 - 1, (2,), generator=generator, device=seed_device).tolist()
        drawn = erase_triton_(
            out, fill, boxes=boxes, scale=cfg.scale, ratio=cfg.ratio, p=cfg.p,
            num_patches=cfg.patches(), seeds=(seeds[0], seeds[1]),
        )  # fmt: skip
        return out, boxes if boxes is not None else drawn
    if boxes is None:
        boxes = sample_boxes(
            batch, height, width, scale=cfg.scale, ratio=cfg.ratio, p=cfg.p,
            num_patches=cfg.patches(), generator=generator, device=x.device,
        )  # fmt: skip
    if needs_grad:
        erased = erase_differentiable(x, boxes, fill, generator)
        return (x.copy_(erased) if inplace else erased), boxes
    out = x if inplace else x.clone()  # clone keeps channels_last
    if _use_native(x, boxes, fill, backend):
        return _write_boxes_(out, boxes, fill), boxes
    return apply_boxes_(out, boxes, fill, generator), boxes


def _use_native(x: torch.Tensor, boxes: EraseBoxes, fill, backend: str) -> bool:
    if backend not in ("auto", "native"):
        return False
    if not HAVE_NATIVE:
        if backend == "native":
            raise ConfigError("backend='native' needs the compiled erasing loop, which was not built (no C compiler at install)")
        return False
    reason = native_refusal(x, fill)
    if backend == "native":
        if reason is not None:
            raise ConfigError(f"backend='native' {reason}")
        return True
    return reason is None and native_is_faster(x, boxes)


def _use_triton(x: torch.Tensor, fill, backend: str) -> bool:
    # the kernel takes per-channel numbers as MAX_FILL_CHANNELS scalars: more channels must share one
    per_channel = (fill.values,) if fill.values is not None else (fill.random_low, fill.random_high)
    fits = x.shape[1] <= MAX_FILL_CHANNELS or all(len(set(seq)) == 1 for seq in per_channel)
    if backend == "triton":
        if not HAVE_TRITON:
            raise ConfigError("backend='triton' needs the triton package, which is not installed")
        if not fits:
            raise ConfigError(
                f"backend='triton' takes at most {MAX_FILL_CHANNELS} distinct channel values, got {x.shape[1]} channels"
            )
        return True
    return backend == "auto" and x.is_cuda and HAVE_TRITON and fits


def random_erase_batch(
    x: torch.Tensor,
    *,
    p: float = 1.0,
    scale: tuple[float, float] = (0.1, 0.4),
    ratio: tuple[float, float] = (1.0, 1.0),
    value: str | float | Sequence[float] = "mean",
    normalized: None | str | tuple = None,
    mode: str = "box",
    num_patches: int = 4,
    seed: int = 0,
    index: Any = None,
    generator: torch.Generator | None = None,
    inplace: bool = False,
    boxes: EraseBoxes | None = None,
    return_boxes: bool = False,
    backend: str = "auto",
):
    """Erase one random box per sample of a ``(B, C, H, W)`` batch (MIDRE), without a loop over samples.

    Per sample b (module docstring of :mod:`.erasing_params` for the exact map)::

        applied_b ~ Bernoulli(p),  a_b ~ U[scale],  r_b = exp(U[log ratio]),
        h_b = round(sqrt(a_b H W r_b)),  w_b = round(sqrt(a_b H W / r_b)),  (top_b, left_b) uniform
        y[b, :, top_b:top_b+h_b, left_b:left_b+w_b] = fill   (if applied_b)

    Args:
        x: ``(B, C, H, W)`` float32/float16/bfloat16 (or uint8) tensor on any device; its memory
            format (e.g. ``channels_last``) is kept.
        p: probability that a sample is erased at all.
        scale: ``(min, max)`` of the erased area fraction, ``0 < min <= max <= 1``.
        ratio: ``(min, max)`` aspect ratio ``h / w`` (drawn log-uniformly); MIDRE uses ``(1, 1)``.
        value: ``"mean"`` (ImageNet mean; its average for one channel), ``"random"`` (uniform
            per pixel), a number, or one number per channel -- in pixel space.
        normalized: ``None`` (input in [0, 1]), ``(mean, std)`` of the input's normalisation
            (the fill is converted), or ``"midre"`` (the MIDRE code's convention: fill written
            unchanged into a ``Normalize(0.5, 0.5)`` tensor).
        mode: ``"box"``, ``"fixed"``, ``"pixels"`` or ``"patches"`` (module docstring).
        num_patches: boxes per sample in mode ``"patches"``.
        seed, index: mode ``"fixed"``: the box of a sample depends only on ``seed`` and its
            data-set index (``index``: ``B`` integers).
        generator: a ``torch.Generator`` for reproducible draws (CPU, or on ``x``'s device).
        inplace: write into ``x`` instead of a copy.
        boxes: replay the :class:`EraseBoxes` of an earlier call instead of drawing new ones.
        return_boxes: also return the :class:`EraseBoxes` (not available in mode ``"pixels"``).
        backend: ``"auto"`` (Triton kernel for CUDA tensors; the compiled loop for plain CPU
            tensors with a constant fill when it was built; torch elsewhere), ``"torch"``,
            ``"native"`` (the compiled CPU loop: refuses what it cannot write, see
            :func:`~midefend.defenses.erasing_native.native_refusal`) or ``"triton"`` (works on
            CPU tensors under ``TRITON_INTERPRET=1``, for tests). Inputs that require gradients
            and mode ``"pixels"`` always take torch paths.

    Returns:
        The erased tensor (``x`` itself if ``inplace``), and the boxes if ``return_boxes``.
        On CUDA the boxes are int32 and come from the kernel's own random stream, so the same
        seed gives different boxes on CPU and CUDA.

    >>> import torch
    >>> x = torch.zeros(4, 3, 16, 16)
    >>> y = random_erase_batch(x, scale=(0.25, 0.25), value=1.0, generator=torch.Generator().manual_seed(1))
    >>> (y[:, 0] == 1).flatten(1).sum(1).tolist()  # 8 x 8 boxes
    [64, 64, 64, 64]
    """
    cfg = _Config(p, scale, ratio, value, normalized, mode, num_patches, seed)
    if return_boxes and cfg.mode == "pixels":
        raise ConfigError("return_boxes=True cannot be used with mode='pixels' (there are no boxes)")
    out, drawn = _erase(x, cfg, index=index, generator=generator, inplace=inplace, boxes=boxes, backend=backend)
    return (out, drawn) if return_boxes else out


class _ErasingSettings:
    """The constructor and ``repr`` both modules share (a mixin placed before their torch base)."""

    def __init__(
        self,
        p: float = 1.0,
        scale: tuple[float, float] = (0.1, 0.4),
        ratio: tuple[float, float] = (1.0, 1.0),
        value: str | float | Sequence[float] = "mean",
        normalized: None | str | tuple = None,
        mode: str = "box",
        num_patches: int = 4,
        seed: int = 0,
        inplace: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = _Config(p, scale, ratio, value, normalized, mode, num_patches, seed)
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.cfg.given.items())
        return f"{args}, inplace={self.inplace}"


class BatchRandomErasing(_ErasingSettings, nn.Module):
    """:func:`random_erase_batch` as a module for the training step; the identity in ``eval()`` mode.

    >>> import torch
    >>> erase = BatchRandomErasing(scale=(0.1, 0.4))
    >>> x = torch.rand(16, 3, 64, 64)
    >>> bool((erase(x) != x).any()), torch.equal(erase.eval()(x), x)
    (True, True)
    """


    def forward(self, x: torch.Tensor, index: Any = None) -> torch.Tensor:
        if not self.training:
            return x
        return _erase(x, self.cfg, index=index, generator=None, inplace=self.inplace, boxes=None, backend="auto")[0]



_call_index = threading.local()  # RandomErasingTransform: the index= of each call in progress


class RandomErasingTransform(_ErasingSettings, Transform):
    """Per-sample MIDRE erasing for a DataLoader, compatible with ``torchvision.transforms.v2``.

    Works on PIL images, uint8 and float tensors, ``tv_tensors.Image`` and batched
    ``(..., C, H, W)`` tensors (every sample its own box); bounding boxes, masks and key points
    pass through unchanged. ``make_params`` draws the boxes, ``transform`` writes them with
    :func:`random_erase_batch`, so every image of one call shares them.

    Mode ``"fixed"`` needs the data-set index: ``transform(img, index=i)`` (or ``B`` indices for
    a batch), e.g. in your ``Dataset.__getitem__``; call it after your ``v2.Compose`` pipeline,
    which does not pass keyword arguments on.

    >>> import torch
    >>> from torchvision.transforms import v2
    >>> tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), RandomErasingTransform()])
    >>> img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    >>> tf(img).shape
    torch.Size([3, 64, 64])
    """

    def forward(self, *inputs: Any, index: Any = None) -> Any:
        # torchvision's forward passes no keywords to make_params: hand index= over per thread
        # (threads may share one transform; a thread-local is not pickled into DataLoader workers)
        calls = _call_index.__dict__.setdefault("by_transform", {})
        calls[id(self)] = index
        try:
            return super().forward(*inputs)
        finally:
            calls.pop(id(self), None)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        shapes = {_batch_hw(inpt) for inpt in flat_inputs if _is_image(inpt)}
        if len(shapes) > 1:
            raise ConfigError(f"all images of one call must share batch and size, got {sorted(shapes)}")
        if not shapes or self.cfg.mode == "pixels":
            return {"boxes": None}
        (batch, height, width, device), = shapes
        call_index = _call_index.__dict__.get("by_transform", {}).get(id(self))
        index = check_index(call_index, batch, device) if self.cfg.mode == "fixed" else None
        boxes = sample_boxes(
            batch, height, width, scale=self.cfg.scale, ratio=self.cfg.ratio, p=self.cfg.p,
            num_patches=self.cfg.patches(), device=device,
            fixed_seed=self.cfg.seed if self.cfg.mode == "fixed" else None, index=index,
        )  # fmt: skip
        return {"boxes": boxes, "drawn_for": (batch, height, width, device)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt):
            return inpt
        if isinstance(inpt, PIL.Image.Image):
            pixels = F.pil_to_tensor(inpt)
            out = self._erase4(pixels.unsqueeze(0), params, inplace=True)[0]
            return F.to_pil_image(out, mode=inpt.mode)
        plain = inpt.as_subclass(torch.Tensor)
        if plain.shape[-1] == 0 or plain.shape[-2] == 0:
            return inpt  # no pixels, nothing to erase (as random_erase_batch)
        # An explicit leading size: reshape(-1, ...) is ambiguous for images without pixels.
        x4 = plain.reshape(math.prod(plain.shape[:-3]), *plain.shape[-3:])
        out = self._erase4(x4, params, inplace=self.inplace).reshape(plain.shape)
        if self.inplace and out.data_ptr() != plain.data_ptr():
            out = plain.copy_(out)  # reshape had to copy (odd strides): write back
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def _erase4(self, x4: torch.Tensor, params: dict[str, Any], inplace: bool) -> torch.Tensor:
        boxes = params["boxes"]
        # boxes make_params drew for exactly this batch and size need no replay checks
        drawn_here = params.get("drawn_for") == (x4.shape[0], x4.shape[2], x4.shape[3], x4.device)
        return _erase(x4, self.cfg, generator=None, inplace=inplace, boxes=boxes, backend="auto", drawn_here=drawn_here)[0]



def _is_image(inpt: Any) -> bool:
    if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.KeyPoints)):
        return False
    return isinstance(inpt, (PIL.Image.Image, torch.Tensor))


def _batch_hw(inpt: Any) -> tuple[int, int, int, torch.device]:
    if isinstance(inpt, PIL.Image.Image):
        return 1, inpt.height, inpt.width, torch.device("cpu")
    if inpt.dim() < 3:
        raise ConfigError(f"images must have shape (..., C, H, W), got shape {tuple(inpt.shape)}")
    return math.prod(inpt.shape[:-3]), inpt.shape[-2], inpt.shape[-1], inpt.device
