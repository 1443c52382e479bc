"""Old home of the argument checks: they live in :mod:`midefend._validate` now."""

from .._validate import check_bool, check_positive_int, check_positive_real, describe

__all__ = ["check_bool", "check_positive_int", "check_positive_real", "describe"]
