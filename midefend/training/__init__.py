"""Train target and evaluation models, with or without a defense.

- :func:`train_classifier` -- the loop: a defense recipe (``nodef``, ``midre``,
  ``calor``, ``midre+calor``) on in-memory data, seeded, with a progress bar;
- :func:`train_target` -- data set + architecture + defense in one call, optionally
  written as a checkpoint (what ``midefend train`` and ``midefend demo`` run);
- :func:`train_evaluation_model` -- the independent evaluation model;
- :class:`BatchAugment` -- per-sample random affine augmentation of a batch.
"""

from __future__ import annotations

from .augment import BatchAugment as BatchAugment
from .loop import TrainResult as TrainResult
from .loop import default_rank as default_rank
from .loop import evaluate as evaluate
from .loop import normalize as normalize
from .loop import train_classifier as train_classifier
from .stages import DEFENSES as DEFENSES
from .stages import Stage as Stage
from .stages import defense_stages as defense_stages

__all__ = [
    "BatchAugment",
    "DEFENSES",
    "Stage",
    "TrainResult",
    "default_rank",
    "defense_stages",
    "evaluate",
    "normalize",
    "train_classifier",
]
