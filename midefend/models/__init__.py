"""midefend.models: what attacks and evaluation both use -- the frozen :class:`Classifier`, its
penultimate features and the image adapter -- below both of them, plus :func:`unwrap_model`."""

from .classifier import Classifier
from .features import extract_features
from .images import adapt_images
from .wrappers import unwrap_model

__all__ = ["Classifier", "adapt_images", "extract_features", "unwrap_model"]
