"""Negative label smoothing (NLS; Struppek, Hintersdorf and Kersting, ICLR 2024).

Label smoothing with factor ``alpha`` trains on the targets

    ``q = (1 - alpha) * onehot(y) + alpha / C``

i.e. the loss ``(1 - alpha) * (-log p_y) + alpha * mean_k(-log p_k)``. A
positive ``alpha`` makes model inversion *easier*; a negative one (the paper
uses ``alpha = -0.05``) pushes the non-target logits apart and the attacks'
gradients towards poor directions, which makes inversion harder.

The schedule matters: trained with a negative factor from the first epoch a
model's accuracy collapses (the targets ask for probabilities below 0 on
classes the model cannot yet tell apart). The authors' code trains with plain
cross-entropy for the first half of the epochs, ramps the factor in over the
next quarter and applies it fully in the last quarter. :func:`smoothing_schedule`
does the same with a continuous ramp (the reference ramp reaches only half of
the factor before jumping to the full value at 75 %).

>>> import torch
>>> smoothed_targets(torch.tensor([1]), 4, -0.05)
tensor([[-0.0125,  1.0375, -0.0125, -0.0125]])
>>> [smoothing_schedule(e, 8) for e in range(8)]
[0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..._validate import fail, is_real
from ...errors import ConfigError

__all__ = ["NegativeLabelSmoothingLoss", "smoothed_targets", "smoothing_schedule"]

#: Struppek et al.'s factor for their face models.
DEFAULT_SMOOTHING = -0.05


def check_smoothing(value: object) -> float:
    """A smoothing factor in ``[-1, 1)`` (a finite float), else a one-line ConfigError."""
    if not is_real(value) or not -1 <= value < 1:
        raise fail("smoothing", "a number in [-1, 1) (NLS uses about -0.05)", value)
    return float(value)


def smoothed_targets(labels: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * onehot(labels) + alpha / num_classes``, shape ``(N, num_classes)``."""
    alpha = check_smoothing(alpha)
    onehot = F.one_hot(labels.long(), num_classes).to(torch.get_default_dtype())
    return (1.0 - alpha) * onehot + alpha / num_classes


def smoothing_schedule(epoch: int, epochs: int, *, warmup: float = 0.5, ramp_end: float = 0.75) -> float:
    """The fraction of the smoothing factor applied in ``epoch`` (0-based) of ``epochs``.

    0 for the first ``round(warmup * epochs)`` epochs (plain cross-entropy),
    then a linear ramp that reaches 1 in epoch ``round(ramp_end * epochs) - 1``,
    then 1. With ``warmup=0`` and ``ramp_end=0`` the factor applies from the start.
    """
    if not 0 <= warmup <= ramp_end <= 1:
        raise ConfigError(f"need 0 <= warmup <= ramp_end <= 1, got warmup={warmup!r}, ramp_end={ramp_end!r}")
    start, end = round(warmup * epochs), round(ramp_end * epochs)
    if epoch < start:
        return 0.0
    if epoch >= end:
        return 1.0
    return (epoch + 1 - start) / (end - start)


class NegativeLabelSmoothingLoss(nn.Module):
    """Cross-entropy against :func:`smoothed_targets`, with the factor following :func:`smoothing_schedule`.

    ``loss = mean_i [ (1 - a) * (-log p_{i,y_i}) + a * mean_k (-log p_{i,k}) ]`` with
    ``a = smoothing * smoothing_schedule(epoch, epochs)``; call :meth:`set_epoch`
    before each epoch (the training loop does). Until then (or with
    ``schedule=False``) the full factor applies.
    """

    def __init__(self, smoothing: float = DEFAULT_SMOOTHING, *, schedule: bool = True, warmup: float = 0.5, ramp_end: float = 0.75) -> None:
        super().__init__()
        self.smoothing = check_smoothing(smoothing)
        self.schedule = bool(schedule)
        self.warmup, self.ramp_end = float(warmup), float(ramp_end)
        smoothing_schedule(0, 1, warmup=self.warmup, ramp_end=self.ramp_end)  # validates the fractions
        self.current = self.smoothing

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Set the factor for ``epoch`` (0-based) of ``epochs``."""
        if self.schedule:
            self.current = self.smoothing * smoothing_schedule(epoch, epochs, warmup=self.warmup, ramp_end=self.ramp_end)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        nll = -log_p.gather(1, target.long()[:, None]).squeeze(1)
        uniform = -log_p.mean(dim=1)
        return ((1.0 - self.current) * nll + self.current * uniform).mean()

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, schedule={self.schedule}, current={self.current}"
