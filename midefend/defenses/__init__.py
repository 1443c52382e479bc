"""midefend.defenses."""

from .erasing import BatchRandomErasing as BatchRandomErasing
from .erasing import EraseBoxes as EraseBoxes
from .erasing import RandomErasingTransform as RandomErasingTransform
from .erasing import random_erase_batch as random_erase_batch
from .heads import LowRankTanhHead as LowRankTanhHead
from .losses import ConfidenceAdaptationLoss as ConfidenceAdaptationLoss
from .losses import confidence_adaptation_loss as confidence_adaptation_loss
from .surgery import HardenReport as HardenReport
from .surgery import HeadReplacement as HeadReplacement
from .surgery import check_hardened as check_hardened
from .surgery import hardened_heads as hardened_heads
from .surgery import harden as harden

__all__ = [
    "BatchRandomErasing",
    "EraseBoxes",
    "RandomErasingTransform",
    "random_erase_batch",
    "ConfidenceAdaptationLoss",
    "LowRankTanhHead",
    "confidence_adaptation_loss",
    "HardenReport",
    "HeadReplacement",
    "check_hardened",
    "hardened_heads",
    "harden",
]
