"""Verify a model object without writing a checkpoint: the model plus its input contract.

:func:`in_memory_checkpoint` wraps ``model`` in a
:class:`~midefend.io.checkpoints.Checkpoint` (what :func:`~midefend.evaluation.verify.verify`
works on) from what a file would have recorded: ``input_size`` ``(C, H, W)``,
per-channel ``mean``/``std`` on inputs in ``[0, 1]``, and optionally the class
names, the preprocessing and the data record. The class count is read from one
forward pass; a transformers model's ``ModelOutput`` is unwrapped to its logits.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
>>> ckpt = in_memory_checkpoint(net, input_size=(1, 4, 4), mean=(0.5,), std=(0.5,))
>>> ckpt.arch, ckpt.num_classes
('in-memory/Sequential', 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..io.checkpoints import Checkpoint
from ..io.schema import make_metadata


def in_memory_checkpoint(
    model: nn.Module,
    *,
    input_size: Sequence[int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    classes: Sequence[str] | None = None,
    preprocess: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """A :class:`Checkpoint` around ``model`` (moved to ``device``, eval mode); see the module docstring."""
    if input_size is None or mean is None or std is None:
        raise ConfigError(
            "verify() of a model object needs input_size=(C, H, W), mean= and std= (the normalisation it was trained "
            "with, on inputs in [0, 1]); or pass a checkpoint path"
        )
    model = model.to(device).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, *[int(v) for v in input_size], device=device))
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ConfigError(f"{type(model).__name__} must return logits of shape (B, classes), got {type(logits).__name__}")
    meta = make_metadata(
        arch=f"in-memory/{type(model).__name__}",
        arch_kwargs={"in_chans": int(input_size[0])},
        num_classes=int(logits.shape[1]),
        classes=classes,
        preprocess=preprocess,
        input_size=input_size,
        mean=mean,
        std=std,
        extra={"data": dict(data)} if data is not None else None,
    )
    return Checkpoint(
        model=model, arch=meta["arch"], arch_kwargs=meta["arch_kwargs"], num_classes=meta["num_classes"],
        input_size=tuple(meta["input_size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]),  # type: ignore[arg-type]
        extra=meta["extra"], metadata=meta, classes=meta["classes"], preprocess=meta["preprocess"],
    )  # fmt: skip


__all__ = ["in_memory_checkpoint"]
