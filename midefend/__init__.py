"""midefend: harden image classifiers against model-inversion attacks, and verify it.

>>> import midefend
>>> isinstance(midefend.__version__, str)
True
"""

from __future__ import annotations

from ._version import __version__ as __version__

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
from .attacks import AttackResult as AttackResult
from .attacks import GenerativePrior as GenerativePrior
from .attacks import get_attack as get_attack
from .attacks import list_attacks as list_attacks
from .attacks import load_face_prior as load_face_prior
from .attacks import load_prior as load_prior
from .attacks import max_margin_loss as max_margin_loss
from .attacks import poincare_loss as poincare_loss
from .attacks import register_attack as register_attack
from .attacks import run_attack as run_attack
from .attacks import train_prior as train_prior
from .evaluation import Classifier as Classifier
from .evaluation import attack_accuracy as attack_accuracy
from .evaluation import evaluate_attack as evaluate_attack
from .evaluation import extract_features as extract_features
from .evaluation import frechet_distance as frechet_distance
from .evaluation import knn_distance as knn_distance
from .evaluation import tradeoff_delta as tradeoff_delta
from .evaluation import verify as verify

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
    "AttackResult",
    "GenerativePrior",
    "get_attack",
    "list_attacks",
    "load_face_prior",
    "load_prior",
    "max_margin_loss",
    "poincare_loss",
    "register_attack",
    "run_attack",
    "train_prior",
    "Classifier",
    "attack_accuracy",
    "evaluate_attack",
    "extract_features",
    "frechet_distance",
    "knn_distance",
    "tradeoff_delta",
    "verify",
]
