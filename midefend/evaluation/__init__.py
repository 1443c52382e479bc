"""midefend.evaluation: the frozen-classifier wrapper, features, metrics and reports."""

from __future__ import annotations

from .classifier import Classifier as Classifier
from .features import extract_features as extract_features

__all__ = ["Classifier", "extract_features"]
