"""Calibration data for :func:`~midefend.defenses.surgery.harden`: tensors, ``(x, y)`` pairs or a DataLoader.

``harden(init="svd", calibration=...)`` runs training inputs through the model
to fit the low-rank head's warm start. It accepts what a training script has
at hand:

- a float tensor of inputs, or a list/tuple of them;
- an ``(inputs, labels)`` pair (integer labels, one per input);
- any iterable of batches, such as a ``DataLoader``: each batch a tensor, an
  ``(inputs, labels, ...)`` sequence, or a dict with ``pixel_values``/``x``/``input``
  and optionally ``labels``/``label``/``y``.

With labels, ``harden`` also measures the model's accuracy on them before and
after the surgery (the hardened model before any fine-tuning).

>>> import torch
>>> x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
>>> inputs, labels = calibration_batches((x, y))
>>> len(inputs), labels[0].tolist()
(1, [0, 1, 0, 1])
>>> short_description([torch.rand(2, 3), "a" * 500])
'list of 2 (a torch.float32 tensor of shape (2, 3), str)'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError

_INPUT_KEYS = ("pixel_values", "x", "input", "inputs", "image", "images")
_LABEL_KEYS = ("labels", "label", "y", "target", "targets")


def short_description(value: Any) -> str:
    """What ``value`` is, in one short phrase (never a tensor's or a long object's repr)."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(short_description(v) if isinstance(v, torch.Tensor) else type(v).__name__ for v in value[:3])
        return f"{type(value).__name__} of {len(value)} ({inner}{', ...' if len(value) > 3 else ''})"
    return type(value).__name__


def _is_labels(y: Any, x: torch.Tensor) -> bool:
    return isinstance(y, torch.Tensor) and not y.is_floating_point() and y.dtype != torch.bool and y.shape == x.shape[:1]


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in _INPUT_KEYS if k in batch), None)
        y = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
        return x, y
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 else None
        return batch[0], y if isinstance(y, torch.Tensor) and _is_labels(y, batch[0]) else None
    return batch, None


def calibration_batches(calibration: Any) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """``(input batches, label batches or None)`` from any accepted form (see the module docstring)."""
    if isinstance(calibration, torch.Tensor):
        items: list[Any] = [calibration]
    elif isinstance(calibration, (list, tuple)) and len(calibration) == 2 and isinstance(calibration[0], torch.Tensor) and _is_labels(calibration[1], calibration[0]):
        items = [tuple(calibration)]
    elif isinstance(calibration, (list, tuple, Iterable)) and not isinstance(calibration, (str, bytes, Mapping)):
        items = list(calibration)
    else:
        items = [calibration]
    inputs, labels = [], []
    for item in items:
        x, y = _split_batch(item)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ConfigError(
                "calibration must be a float tensor of model inputs, a list of them, an (inputs, labels) pair or a "
                f"DataLoader of such batches, got {short_description(calibration)}"
                + (f" holding {short_description(item)}" if item is not calibration else "")
            )
        inputs.append(x)
        labels.append(y)
    if not inputs:
        raise ConfigError("calibration is empty: give at least one batch of training inputs")
    have = [y is not None for y in labels]
    return inputs, (labels if all(have) else None)  # type: ignore[return-value]


@torch.no_grad()
def accuracy_on(model: nn.Module, inputs: list[torch.Tensor], labels: list[torch.Tensor]) -> float:
    """Top-1 accuracy of ``model`` (eval mode, its own mode restored) on the calibration batches."""
    modes = {module: module.training for module in model.modules()}
    param = next(model.parameters())
    correct = total = 0
    try:
        model.eval()
        for x, y in zip(inputs, labels):
            out = model(x.to(device=param.device, dtype=param.dtype))
            logits = getattr(out, "logits", out)
            correct += int((logits.argmax(1).cpu() == y.cpu()).sum())
            total += int(y.numel())
    finally:
        for module, training in modes.items():
            module.training = training
    return correct / max(total, 1)


__all__ = ["accuracy_on", "calibration_batches", "short_description"]
