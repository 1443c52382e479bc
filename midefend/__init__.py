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
from .defenses.erasing import RandomErasingTransform as RandomErasingTransform
from .defenses.erasing import random_erase_batch as random_erase_batch
from .defenses.heads import LowRankTanhHead as LowRankTanhHead
from .defenses.losses import ConfidenceAdaptationLoss as ConfidenceAdaptationLoss
from .defenses.surgery import HardenReport as HardenReport
from .defenses.surgery import harden as harden
from .io.checkpoints import load_checkpoint as load_checkpoint
from .io.checkpoints import save_checkpoint as save_checkpoint
from .models.classifier import Classifier as Classifier
from .evaluation.verify import verify as verify

# The core a training loop or a verify script imports; everything else lives in its subpackage
# (midefend.defenses, .attacks, .evaluation, .training, .data, .io, .models).
__all__ = [
    "__version__",
    "MidefendError",
    "ConfigError",
    "HardenError",
    "HeadNotFoundError",
    "AlreadyHardenedError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "DataError",
    "AttackError",
    "RandomErasingTransform",
    "BatchRandomErasing",
    "random_erase_batch",
    "LowRankTanhHead",
    "ConfidenceAdaptationLoss",
    "harden",
    "HardenReport",
    "save_checkpoint",
    "load_checkpoint",
    "Classifier",
    "verify",
]

# Names the top level held before 0.2, still found (with a DeprecationWarning) so old code runs.
_MOVED = {
    "midefend.defenses": ("EraseBoxes", "confidence_adaptation_loss", "check_hardened"),
    "midefend.io": ("Checkpoint", "read_checkpoint_header", "import_research_checkpoint"),
    "midefend.data": ("ClassificationData", "load_dataset", "load_digits", "load_image_folder", "load_orl"),
    "midefend.training": ("TrainResult", "train_classifier", "train_evaluation_model", "train_target"),
    "midefend.attacks": ("AttackResult", "GenerativePrior", "get_attack", "list_attacks", "load_face_prior", "load_prior",
                         "max_margin_loss", "poincare_loss", "register_attack", "run_attack", "train_prior"),
    "midefend.evaluation": ("attack_accuracy", "evaluate_attack", "extract_features", "frechet_distance", "knn_distance",
                            "tradeoff_delta"),
}  # fmt: skip


def __getattr__(name: str):
    for package, names in _MOVED.items():
        if name in names:
            import importlib
            import warnings

            warnings.warn(f"midefend.{name} moved: import it from {package}", DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(package), name)
    raise AttributeError(f"module 'midefend' has no attribute {name!r}")
