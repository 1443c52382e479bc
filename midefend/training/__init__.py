"""Train target and evaluation models, with or without a defense.

- :func:`train_classifier` -- the loop: a registered defense recipe (``nodef``, ``midre``,
  ``calor``, ``midre+calor``, ``nls``, ``mid``, ``bido``, ``tl``; :func:`list_defenses`)
  on in-memory data, seeded, with a progress bar; its settings are one
  :class:`TrainSettings` (or the same names as keyword arguments);
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
from .recipes import get_defense as get_defense
from .recipes import list_defenses as list_defenses
from .recipes import register_defense as register_defense
from .settings import TrainSettings as TrainSettings
from .stages import DEFENSES as DEFENSES
from .stages import Stage as Stage
from .stages import defense_stages as defense_stages
from .targets import DEFAULT_EVAL_ARCH as DEFAULT_EVAL_ARCH
from .targets import DEFAULT_TARGET_ARCH as DEFAULT_TARGET_ARCH
from .targets import train_evaluation_model as train_evaluation_model
from .targets import train_target as train_target

__all__ = [
    "BatchAugment",
    "DEFAULT_EVAL_ARCH",
    "DEFAULT_TARGET_ARCH",
    "DEFENSES",
    "Stage",
    "TrainResult",
    "TrainSettings",
    "default_rank",
    "defense_stages",
    "evaluate",
    "get_defense",
    "list_defenses",
    "register_defense",
    "normalize",
    "train_classifier",
    "train_evaluation_model",
    "train_target",
]
