"""Hugging Face ``Trainer``: CALoR's CA loss as ``compute_loss_func``, MIDRE's erasing in the collator.

``pip install 'midefend[hf]' accelerate``::

    from midefend.integrations.hf_trainer import ErasingCollator, ca_compute_loss_func

    harden(model, rank=16, calibration=loader)          # finds ViT / ConvNeXt ``classifier`` heads
    Trainer(model, args, train_dataset=train,           # stage 1: cross-entropy, erasing on
            data_collator=ErasingCollator(scale=(0.1, 0.4), normalized=(mean, std))).train()
    Trainer(model, args_ca, train_dataset=train,        # stage 2: the CA fine-tune
            compute_loss_func=ca_compute_loss_func(b=8.0)).train()

:func:`ca_compute_loss_func` returns ``loss(outputs, labels, num_items_in_batch=None)``
as ``Trainer(compute_loss_func=...)`` calls it (outputs with ``.logits``).
:class:`ErasingCollator` wraps a collator (default: torch's default collate of
dicts) and erases one random box per image of ``batch["pixel_values"]`` with
:func:`~midefend.defenses.random_erase_batch`, from its own seeded generator.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import ConfigError


def ca_compute_loss_func(*, a: float = 1.0, b: float = 8.0) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func`` for ``transformers.Trainer``: CALoR's ``a * p_y**b * log p_y`` (warns once if unconfident)."""
    from ..defenses import ConfidenceAdaptationLoss

    criterion = ConfidenceAdaptationLoss(a=a, b=b)

    def compute_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else getattr(outputs, "logits", outputs)
        return criterion(logits, labels)

    compute_loss.criterion = criterion  # type: ignore[attr-defined]
    return compute_loss


class ErasingCollator:
    """Collate, then erase one random box per image of ``batch[key]`` (see the module docstring)."""

    def __init__(self, base: Callable[[list], Any] | None = None, *, key: str = "pixel_values", scale: tuple[float, float] = (0.1, 0.4),
                 ratio: tuple[float, float] = (1.0, 1.0), value: Any = "mean", normalized: Any = None, seed: int = 0) -> None:  # fmt: skip
        from torch.utils.data import default_collate

        self.base = base or default_collate
        self.key = key
        self.options = {"scale": scale, "ratio": ratio, "value": value, "normalized": normalized}
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, features: list) -> Any:
        from ..defenses import random_erase_batch

        batch = self.base(features)
        x = batch.get(self.key) if isinstance(batch, dict) else None
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ConfigError(f"ErasingCollator needs batch[{self.key!r}] to be a (B, C, H, W) image tensor, got {type(x).__name__}")
        batch[self.key] = random_erase_batch(x, **self.options, generator=self.generator)
        return batch


__all__ = ["ErasingCollator", "ca_compute_loss_func"]
