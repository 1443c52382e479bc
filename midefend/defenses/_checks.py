"""Small argument checks shared by the head, the CA loss and ``harden`` (one-line ConfigErrors)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from ..errors import ConfigError


def describe(value: Any) -> str:
    """What a bad argument was, for an error message: dtype and shape of a tensor, else type and repr."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as ``int`` if it is an integer >= 1 (``bool`` is refused), else ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_real(name: str, value: Any) -> float:
    """``value`` as ``float`` if it is a finite number > 0 (``bool`` is refused), else ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value
