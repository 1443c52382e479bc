"""Argument checks with one wording: ``"{name} must be {rule}, got {value!r}"`` as a ConfigError.

Numbers are finite (``nan`` and ``inf`` are refused everywhere) and ``bool`` is not a number.
Each check returns the value in its plain Python type.

>>> check_positive_real("lr", 1e-3)
0.001
>>> check_positive_real("lr", float("inf"))
Traceback (most recent call last):
...
midefend.errors.ConfigError: lr must be a positive finite number, got inf
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from .errors import ConfigError


def is_real(value: Any) -> bool:
    """A finite real number that is not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def real_tuple(value: Any) -> tuple[float, ...] | None:
    """A finite number or a non-empty sequence of them as a tuple of floats, else None."""
    if is_real(value):
        return (float(value),)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) >= 1 and all(is_real(v) for v in value):
        return tuple(float(v) for v in value)
    return None


def fail(name: str, rule: str, value: Any) -> ConfigError:
    """The one message: ``raise fail("rank", "a positive integer", rank)``."""
    return ConfigError(f"{name} must be {rule}, got {value!r}")


def check_positive_int(name: str, value: Any) -> int:
    if not is_int(value) or value < 1:
        raise fail(name, "a positive integer", value)
    return int(value)


def check_int(name: str, value: Any, *, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise fail(name, f"an integer >= {minimum}", value)
    return int(value)


def check_positive_real(name: str, value: Any) -> float:
    if not is_real(value) or value <= 0:
        raise fail(name, "a positive finite number", value)
    return float(value)


def check_probability(name: str, value: Any) -> float:
    if not is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise fail(name, "a probability in [0, 1]", value)
    return float(value)


def check_pair(name: str, value: Any, *, upper: float | None) -> tuple[float, float]:
    """A ``(min, max)`` pair with ``0 < min <= max`` (``<= upper`` when given)."""
    pair = None if is_real(value) else real_tuple(value)
    if pair is None or len(pair) != 2 or not 0.0 < pair[0] <= pair[1] or (upper is not None and pair[1] > upper):
        bound = f" <= {upper:g}" if upper is not None else ""
        raise fail(name, f"a (min, max) pair with 0 < min <= max{bound}", tuple(value) if isinstance(value, (list, tuple)) else value)
    return pair  # type: ignore[return-value]


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(name, "True or False", value)
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise fail(name, f"one of {', '.join(choices)}", value)
    return value


def check_device(device: Any) -> torch.device:
    """A ``torch.device`` that exists here: checked before anything is read or built."""
    try:
        if isinstance(device, str) and not device.strip():
            raise ValueError("empty")  # torch raises a bare RuntimeError for ''
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError, OverflowError):  # an int index beyond int64 is a ValueError
        raise ConfigError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if device.type == "cuda" and not _cuda_available():
        raise ConfigError(f"device {str(device)!r} is not available (no CUDA device found)")
    return device


def _cuda_available() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a CUDA build without a driver raises on the query
        return False


def describe(value: Any) -> str:
    """What a bad argument was, for a message: dtype and shape of a tensor, else type and repr."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"
