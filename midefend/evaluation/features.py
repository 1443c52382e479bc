"""Old home of :func:`extract_features`: it lives in :mod:`midefend.models.features`."""

from ..models.features import extract_features

__all__ = ["extract_features"]
