"""midefend: harden image classifiers against model-inversion attacks, and verify it.

``import midefend`` is cheap: the public names below load their module (and torch) the first time they
are used (PEP 562), so ``midefend --help`` and the errors of a wrong command line answer at once.
Each public name has exactly one import path: ``from midefend import harden`` or its home module.

>>> import midefend
>>> isinstance(midefend.__version__, str)
True
>>> midefend.harden.__module__
'midefend.defenses.surgery'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # what a type checker and an IDE see; at run time the table below loads them on first use
    from .defenses.erasing import BatchRandomErasing as BatchRandomErasing
    from .defenses.erasing import RandomErasingTransform as RandomErasingTransform
    from .defenses.erasing import random_erase_batch as random_erase_batch
    from .defenses.heads import LowRankTanhHead as LowRankTanhHead
    from .defenses.losses import ConfidenceAdaptationLoss as ConfidenceAdaptationLoss
    from .defenses.surgery import HardenReport as HardenReport
    from .defenses.surgery import harden as harden
    from .evaluation.verify import verify as verify
    from .io.checkpoints import load_checkpoint as load_checkpoint
    from .io.checkpoints import save_checkpoint as save_checkpoint
    from .models.classifier import Classifier as Classifier

#: The torch-using public names and the module each lives in (loaded on first access).
_LAZY = {
    "RandomErasingTransform": "midefend.defenses.erasing",
    "BatchRandomErasing": "midefend.defenses.erasing",
    "random_erase_batch": "midefend.defenses.erasing",
    "LowRankTanhHead": "midefend.defenses.heads",
    "ConfidenceAdaptationLoss": "midefend.defenses.losses",
    "harden": "midefend.defenses.surgery",
    "HardenReport": "midefend.defenses.surgery",
    "save_checkpoint": "midefend.io.checkpoints",
    "load_checkpoint": "midefend.io.checkpoints",
    "Classifier": "midefend.models.classifier",
    "verify": "midefend.evaluation.verify",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'midefend' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
