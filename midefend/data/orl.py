"""The ORL / AT&T faces: 40 people x 10 grey 92x112 images in ``sN/M.pgm``.

The data set of the first model-inversion attack (Fredrikson et al., 2015);
credit: Olivetti Research Laboratory. midefend never ships it: point
:func:`load_orl` at a copy (tests and benchmarks read ``$MIDEFEND_ORL_DIR``).

Preprocessing (DESIGN.md): each 92x112 image is cropped to the face box
``(left, top, right, bottom) = (6, 18, 86, 98)``, an 80x80 square, so the face
fills the frame as the attack prior's faces do; then resized to ``size``.
The split keeps ``train_per_class`` images of every person for training (7/3
by default) chosen by a permutation seeded with ``seed``.

>>> import os
>>> train, test = load_orl(os.environ["MIDEFEND_ORL_DIR"])  # doctest: +SKIP
>>> len(train), len(test), tuple(train.images.shape[1:])  # doctest: +SKIP
(280, 120, (1, 64, 64))
"""

from __future__ import annotations

from pathlib import Path

from .datasets import ClassificationData
from .folders import load_image_folder

#: The face box in the 92x112 ORL image: (left, top, right, bottom).
ORL_FACE_BOX = (6, 18, 86, 98)


def load_orl(
    root: str | Path,
    *,
    size: int = 64,
    channels: int = 1,
    train_per_class: int = 7,
    seed: int = 0,
    crop: bool = True,
) -> tuple[ClassificationData, ClassificationData]:
    """Load ORL from ``root`` and split it per identity: ``(train, test)``.

    ``crop=False`` keeps the whole 92x112 frame (centre square). Labels
    follow the folder names in natural order: ``s1`` -> 0, ..., ``s40`` -> 39.
    Errors (missing folder, empty identity, unreadable file) are
    :class:`~midefend.errors.DataError`.
    """
    data = load_image_folder(root, size=size, channels=channels, box=ORL_FACE_BOX if crop else None, name="orl")
    data.info["crop"] = crop
    return data.split(train_per_class=train_per_class, seed=seed)


__all__ = ["ORL_FACE_BOX", "load_orl"]
