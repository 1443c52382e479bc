"""midefend.evaluation: the frozen-classifier wrapper, features, metrics, reports and ``verify``.

>>> from midefend.evaluation import tradeoff_delta
>>> print(tradeoff_delta(acc_nodef=0.9, attack_nodef=0.6, acc_def=0.92, attack_def=0.3))  # no accuracy lost
None
"""

from __future__ import annotations

from ..models.classifier import Classifier as Classifier
from .evaluate import evaluate_attack as evaluate_attack
from .evaluate import natural_accuracy as natural_accuracy
from ..models.features import extract_features as extract_features
from .metrics import AccuracyStat as AccuracyStat
from .metrics import accuracy as accuracy
from .metrics import attack_accuracy as attack_accuracy
from .metrics import frechet_distance as frechet_distance
from .metrics import knn_distance as knn_distance
from .metrics import topk_hits as topk_hits
from .metrics import format_delta as format_delta
from .metrics import tradeoff_delta as tradeoff_delta
from .reports import comparison_rows as comparison_rows
from .reports import load_report as load_report
from .reports import render_comparison_markdown as render_comparison_markdown
from .reports import save_grid as save_grid
from .reports import write_comparison as write_comparison
from .reports import write_report as write_report
from .verify import parse_classes as parse_classes
from .verify import verify as verify
from .recognisers import available_recognisers as available_recognisers
from .recognisers import load_recogniser as load_recogniser
from .recognisers import register_recogniser as register_recogniser
from .. import dlibface as _dlibface
from .. import facenet as _facenet

# The built-in independent face judges, in the order verify lists them (each package stays free of this layer).
register_recogniser("facenet", _facenet.load_facenet, _facenet.is_available, _facenet.FaceNet.description)
register_recogniser("dlib", _dlibface.load_dlibface, _dlibface.is_available, _dlibface.DlibFace.description)

__all__ = [
    "AccuracyStat",
    "Classifier",
    "accuracy",
    "attack_accuracy",
    "available_recognisers",
    "comparison_rows",
    "evaluate_attack",
    "extract_features",
    "frechet_distance",
    "knn_distance",
    "load_recogniser",
    "load_report",
    "natural_accuracy",
    "parse_classes",
    "register_recogniser",
    "render_comparison_markdown",
    "save_grid",
    "topk_hits",
    "format_delta",
    "tradeoff_delta",
    "verify",
    "write_comparison",
    "write_report",
]
