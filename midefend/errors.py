"""One error hierarchy for midefend.

Every failure midefend anticipates is a subclass of :class:`MidefendError`, so a
caller (and the CLI) can catch them all with one ``except`` and show a one-line
message. Subclasses that describe a bad argument also derive from ``ValueError``
so code written against torchvision-style transforms keeps working.
"""

from __future__ import annotations

__all__ = [
    "MidefendError",
    "ConfigError",
    "HardenError",
    "HeadNotFoundError",
    "AlreadyHardenedError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "DataError",
    "AttackError",
]


class MidefendError(Exception):
    """Base class of every error midefend raises on purpose."""


class ConfigError(MidefendError, ValueError):
    """An argument or configuration value is invalid (names the argument and the value)."""


class HardenError(MidefendError):
    """Head surgery (``harden``) cannot be done on this model."""


class HeadNotFoundError(HardenError):
    """No linear classifier head was found (names the model class)."""


class AlreadyHardenedError(HardenError):
    """The model already carries a low-rank head and re-hardening was not asked for."""


class CheckpointError(MidefendError):
    """A checkpoint file is missing, corrupt, of the wrong schema or does not match the model."""


class UnsafeCheckpointError(CheckpointError):
    """Loading the file would need unpickling, which was not explicitly allowed."""


class DataError(MidefendError):
    """A data set folder or file is missing, empty, unreadable or inconsistent."""


class AttackError(MidefendError):
    """An attack cannot run with the given target, prior or settings."""
