"""Read one image file into a square float tensor: crop, resize, grey or RGB.

Every loader funnels its files through :func:`read_image`, so they all agree:

1. decode with Pillow (PGM, PNG, JPEG, BMP, ... whatever Pillow reads),
2. crop to ``box = (left, top, right, bottom)`` if given, else to the
   centred square of side ``min(width, height)`` (so faces and digits are
   never stretched),
3. convert to ``"L"`` (1 channel) or ``"RGB"`` (3 channels),
4. resize to ``size x size`` with bilinear filtering (Pillow low-pass filters
   when it shrinks, so small sizes do not alias),
5. return float32 ``(C, size, size)`` in ``[0, 1]`` (``uint8 / 255``).

>>> import tempfile, pathlib
>>> from PIL import Image
>>> path = pathlib.Path(tempfile.mkdtemp()) / "grey.png"
>>> Image.new("L", (92, 112), color=255).save(path)
>>> x = read_image(path, size=64, channels=3)
>>> tuple(x.shape), float(x.min()), float(x.max())
((3, 64, 64), 1.0, 1.0)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

#: File name endings treated as images when scanning folders (lower case).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

_MODES = {1: "L", 3: "RGB"}


MAX_SIZE = 4096


def check_size_channels(size: int, channels: int) -> None:
    """Validate the two arguments every loader takes (one-line errors naming them)."""
    # The upper bound keeps a typo (or a crafted header) from decoding images that cannot fit in memory.
    if not isinstance(size, int) or isinstance(size, bool) or not 4 <= size <= MAX_SIZE:
        raise ConfigError(f"size must be an integer in [4, {MAX_SIZE}], got {size!r}")
    if channels not in _MODES:
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def read_image(
    path: str | Path,
    *,
    size: int,
    channels: int,
    box: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Decode ``path`` and return float32 ``(channels, size, size)`` in ``[0, 1]`` (steps in the module docstring)."""
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    check_size_channels(size, channels)
    try:
        with Image.open(path) as image:
            image.load()
            picture = image
    except (UnidentifiedImageError, DecompressionBombError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    width, height = picture.size
    if box is None:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    elif not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
        raise DataError(f"crop box {box} does not fit image {path} of size {width}x{height}")
    picture = picture.convert(_MODES[channels]).crop(box).resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.uint8).reshape(size, size, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name with numbers in numeric order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=natural_key)


def natural_key(path: Path) -> tuple:
    """Sort key that puts ``s2`` before ``s10`` and ``2.pgm`` before ``10.pgm``."""
    import re

    parts = re.split(r"(\d+)", path.name)
    return tuple(int(p) if p.isdigit() else p.lower() for p in parts)


__all__ = ["IMAGE_EXTENSIONS", "MAX_SIZE", "check_size_channels", "list_images", "natural_key", "read_image"]
