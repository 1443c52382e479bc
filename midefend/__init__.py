"""midefend: harden image classifiers against model-inversion attacks, and verify it.

>>> import midefend
>>> isinstance(midefend.__version__, str)
True
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import AlreadyHardenedError as AlreadyHardenedError
from .errors import AttackError as AttackError
from .errors import CheckpointError as CheckpointError
from .errors import ConfigError as ConfigError
from .errors import DataError as DataError
from .errors import HardenError as HardenError
from .errors import HeadNotFoundError as HeadNotFoundError
from .errors import MidefendError as MidefendError
from .errors import UnsafeCheckpointError as UnsafeCheckpointError
from .defenses.erasing import BatchRandomErasing as BatchRandomErasing
from .defenses.erasing import EraseBoxes as EraseBoxes
from .defenses.erasing import RandomErasingTransform as RandomErasingTransform
from .defenses.erasing import random_erase_batch as random_erase_batch
from .defenses.heads import LowRankTanhHead as LowRankTanhHead
from .defenses.losses import ConfidenceAdaptationLoss as ConfidenceAdaptationLoss
from .defenses.losses import confidence_adaptation_loss as confidence_adaptation_loss
from .defenses.surgery import HardenReport as HardenReport
from .defenses.surgery import check_hardened as check_hardened
from .defenses.surgery import harden as harden
from .io.checkpoints import Checkpoint as Checkpoint
from .io.checkpoints import load_checkpoint as load_checkpoint
from .io.checkpoints import read_checkpoint_header as read_checkpoint_header
from .io.checkpoints import save_checkpoint as save_checkpoint
from .io.legacy import import_research_checkpoint as import_research_checkpoint
from .data import ClassificationData as ClassificationData
from .data import load_dataset as load_dataset
from .data import load_digits as load_digits
from .data import load_image_folder as load_image_folder
from .data import load_orl as load_orl
from .training import TrainResult as TrainResult
from .training import train_classifier as train_classifier
from .training import train_evaluation_model as train_evaluation_model
from .training import train_target as train_target

__all__ = [
    "__version__",
    "AlreadyHardenedError",
    "AttackError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "HardenError",
    "HeadNotFoundError",
    "MidefendError",
    "UnsafeCheckpointError",
    "BatchRandomErasing",
    "EraseBoxes",
    "RandomErasingTransform",
    "random_erase_batch",
    "LowRankTanhHead",
    "ConfidenceAdaptationLoss",
    "confidence_adaptation_loss",
    "HardenReport",
    "check_hardened",
    "harden",
    "Checkpoint",
    "load_checkpoint",
    "read_checkpoint_header",
    "save_checkpoint",
    "import_research_checkpoint",
    "ClassificationData",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_orl",
    "TrainResult",
    "train_classifier",
    "train_evaluation_model",
    "train_target",
]
