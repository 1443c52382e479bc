"""The transforms draw boxes (:mod:`.params`) and hand them to the writer (:mod:`.functional`):
:class:`BatchRandomErasing` for the training step, :class:`RandomErasingTransform` for a
DataLoader. Mode ``"fixed"`` takes the data-set indices as an argument: ``tf(img, index=i)``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2 import functional as F

from ...errors import ConfigError
from .functional import SERIAL_ELEMENTS, _serial_copies, erase_with_config
from .params import UNIFORMS_PER_BOX, ErasingConfig, check_index, fill_spec, one_box, sample_boxes


class _ErasingSettings:
    """The constructor and ``repr`` both transforms share (a mixin before their torch base)."""

    def __init__(
        self, p: float = 1.0, scale: tuple[float, float] = (0.1, 0.4), ratio: tuple[float, float] = (1.0, 1.0),
        value: str | float | Sequence[float] = "mean", normalized: None | str | tuple = None, mode: str = "box",
        num_patches: int = 4, seed: int = 0, inplace: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.cfg = ErasingConfig(p, scale, ratio, value, normalized, mode, num_patches, seed)
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in {**self.cfg.given, "inplace": self.inplace}.items())


class BatchRandomErasing(_ErasingSettings, nn.Module):
    """:func:`~.functional.random_erase_batch` as a module; the identity in ``eval()`` mode.

    >>> erase = BatchRandomErasing(scale=(0.1, 0.4))
    >>> x = torch.rand(16, 3, 64, 64)
    >>> bool((erase(x) != x).any()), torch.equal(erase.eval()(x), x)
    (True, True)
    """

    def forward(self, x: torch.Tensor, index: Any = None) -> torch.Tensor:
        if not self.training:
            return x
        return erase_with_config(x, self.cfg, index=index, inplace=self.inplace)[0]


class RandomErasingTransform(_ErasingSettings, Transform):
    """Per-sample MIDRE erasing, compatible with ``torchvision.transforms.v2``.

    Every image of one call shares the boxes (one per sample of a batched tensor); bounding
    boxes, masks and key points pass through unchanged. Mode ``"fixed"``: ``tf(img, index=i)``
    in your ``Dataset.__getitem__`` (``v2.Compose`` passes no keyword arguments on).

    >>> from torchvision.transforms import v2
    >>> tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), RandomErasingTransform()])
    >>> tf(torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)).shape
    torch.Size([3, 64, 64])
    """

    def forward(self, *inputs: Any, index: Any = None) -> Any:
        if len(inputs) == 1 and self.cfg.mode == "box":
            out = self._one_image(inputs[0])
            if out is not None:
                return out
        # torchvision's forward, with the index handed to the parameter draw as an argument
        flat, spec = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        self.check_inputs(flat)
        needs = self._needs_transform_list(flat)
        params = self.draw_params([i for i, n in zip(flat, needs) if n], index)
        return tree_unflatten([self.transform(i, params) if n else i for i, n in zip(flat, needs)], spec)

    def _one_image(self, inpt: Any) -> Any:
        """The DataLoader's case, one ``(C, H, W)`` CPU image with a constant fill, in ~10 us: the
        box from :func:`~.params.one_box` (the uniforms and the box of ``sample_boxes(1, ...)``,
        bit for bit), written as one slice. ``None``: not this case, take the general path."""
        if not (type(inpt) is torch.Tensor or type(inpt) is tv_tensors.Image):
            return None
        plain = inpt.as_subclass(torch.Tensor) if type(inpt) is not torch.Tensor else inpt
        if plain.dim() != 3 or plain.device.type != "cpu" or 0 in plain.shape[1:]:
            return None
        fill = self._fill(plain.shape[0], plain.dtype)
        if fill is None or (plain.requires_grad and torch.is_grad_enabled()):
            return None
        if self.inplace and 0 in plain.stride():
            return None  # an expanded view: the general path refuses it
        height, width = plain.shape[1:]
        u = torch.rand(1, UNIFORMS_PER_BOX + 1, dtype=torch.float64)[0].tolist()
        serial = torch.get_num_threads() > 1  # copies under the grain size: no OpenMP region (see functional)
        if self.inplace:
            out = plain
        elif serial and plain.numel() >= SERIAL_ELEMENTS:
            out = torch.empty_like(plain)
            for dst, src in _serial_copies(out, plain):
                dst.copy_(src)
        else:
            out = plain.clone()
        if u[-1] < self.cfg.p:
            top, left, h, w = one_box(u, height, width, self.cfg.scale, self.cfg.ratio)
            box = out[:, top : top + h, left : left + w]
            source = fill if isinstance(fill, torch.Tensor) else out.new_full((1, 1, 1), fill).expand(box.shape[0], 1, 1)
            for dst, src in _serial_copies(box, source) if serial else ((box, source),):
                dst.copy_(src)
        return out if type(inpt) is torch.Tensor else tv_tensors.wrap(out, like=inpt)

    def _fill(self, channels: int, dtype: torch.dtype) -> float | torch.Tensor | None:
        """The constant fill for ``(channels, dtype)``: a number, or a ``(C, 1, 1)`` tensor when the
        channels differ; ``None`` for random fill and for inputs the general path must judge."""
        if not (dtype.is_floating_point or dtype == torch.uint8) or (self.cfg.normalized is not None and dtype == torch.uint8):
            return None
        cache = self.__dict__.setdefault("_fills", {})
        key = (channels, dtype)
        if key not in cache:
            values = fill_spec(self.cfg.value, self.cfg.normalized, channels, dtype).values
            if values is None:
                cache[key] = None
            elif len(set(values)) == 1:
                cache[key] = float(values[0])
            else:
                cache[key] = torch.tensor(values, dtype=dtype).view(-1, 1, 1)
        return cache[key]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return self.draw_params(flat_inputs, None)

    def draw_params(self, flat_inputs: list[Any], index: Any) -> dict[str, Any]:
        shapes = {_batch_hw(inpt) for inpt in flat_inputs if _is_image(inpt)}
        if len(shapes) > 1:
            raise ConfigError(f"all images of one call must share batch and size, got {sorted(shapes)}")
        if not shapes or self.cfg.mode == "pixels":
            return {"boxes": None}
        ((batch, height, width, device),) = shapes
        fixed = self.cfg.mode == "fixed"
        boxes = sample_boxes(
            batch, height, width, scale=self.cfg.scale, ratio=self.cfg.ratio, p=self.cfg.p,
            num_patches=self.cfg.patches(), device=device, fixed_seed=self.cfg.seed if fixed else None,
            index=check_index(index, batch, device) if fixed else None,
        )  # fmt: skip
        return {"boxes": boxes, "drawn_for": (batch, height, width, device)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt):
            return inpt
        if isinstance(inpt, PIL.Image.Image):
            out = self._erase4(F.pil_to_tensor(inpt).unsqueeze(0), params, inplace=True)[0]
            return F.to_pil_image(out, mode=inpt.mode)
        plain = inpt.as_subclass(torch.Tensor)
        if plain.shape[-1] == 0 or plain.shape[-2] == 0:
            return inpt  # no pixels, nothing to erase
        # an explicit leading size: reshape(-1, ...) is ambiguous for images without pixels
        x4 = plain.reshape(math.prod(plain.shape[:-3]), *plain.shape[-3:])
        out = self._erase4(x4, params, inplace=self.inplace).reshape(plain.shape)
        if self.inplace and out.data_ptr() != plain.data_ptr():
            out = plain.copy_(out)  # reshape had to copy (odd strides): write back
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def _erase4(self, x4: torch.Tensor, params: dict[str, Any], inplace: bool) -> torch.Tensor:
        # boxes drawn for exactly this batch and size need no replay checks (they cost an erase)
        checked = params.get("drawn_for") == (x4.shape[0], x4.shape[2], x4.shape[3], x4.device)
        return erase_with_config(x4, self.cfg, inplace=inplace, boxes=params["boxes"], boxes_checked=checked)[0]


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
