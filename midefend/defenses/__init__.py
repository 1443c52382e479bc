"""midefend.defenses."""

from .heads import LowRankTanhHead as LowRankTanhHead
from .losses import ConfidenceAdaptationLoss as ConfidenceAdaptationLoss
from .losses import confidence_adaptation_loss as confidence_adaptation_loss

__all__ = [
    "ConfidenceAdaptationLoss",
    "LowRankTanhHead",
    "confidence_adaptation_loss",
]
