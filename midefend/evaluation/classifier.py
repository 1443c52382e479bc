"""Old home of :class:`Classifier`: it lives in :mod:`midefend.models.classifier` (below attacks and evaluation)."""

from ..models.classifier import Classifier

__all__ = ["Classifier"]
