"""Read one image file into a square float tensor: crop, resize, grey or RGB.

Every loader funnels its files through :func:`read_image`, so they all agree:

1. decode with Pillow (PGM, PNG, JPEG, BMP, ... whatever Pillow reads),
2. crop to ``box = (left, top, right, bottom)`` if given, else (``crop="center"``,
   the default) to the centred square of side ``min(width, height)`` (so faces
   and digits are never stretched), or not at all (``crop="none"``: the whole
   frame is resized, as torchvision's ``Resize((h, w))`` does),
3. convert to ``"L"`` (1 channel) or ``"RGB"`` (3 channels),
4. resize to ``size`` (an int: ``size x size``; a pair: ``(height, width)``)
   with bilinear filtering (Pillow low-pass filters when it shrinks, so small
   sizes do not alias),
5. return float32 ``(C, height, width)`` in ``[0, 1]`` (``uint8 / 255``).

>>> import tempfile, pathlib
>>> from PIL import Image
>>> path = pathlib.Path(tempfile.mkdtemp()) / "grey.png"
>>> Image.new("L", (92, 112), color=255).save(path)
>>> x = read_image(path, size=64, channels=3)
>>> tuple(x.shape), float(x.min()), float(x.max())
((3, 64, 64), 1.0, 1.0)
>>> tuple(read_image(path, size=(112, 92), channels=1, crop="none").shape)
(1, 112, 92)
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


#: How an image without a crop box is fitted to the output size.
CROP_POLICIES = ("center", "none")


def _is_side(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 4 <= value <= MAX_SIZE


def check_size_channels(size: int | tuple[int, int], channels: int) -> None:
    """Validate the two arguments every loader takes (one-line errors naming them)."""
    # The upper bound keeps a typo (or a crafted header) from decoding images that cannot fit in memory.
    pair = isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_side(v) for v in size)
    if not (_is_side(size) or pair):
        raise ConfigError(f"size must be an integer in [4, {MAX_SIZE}] or a (height, width) pair of them, got {size!r}")
    if channels not in _MODES:
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def height_width(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` as ``(height, width)``: an int means a square."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def read_image(
    path: str | Path,
    *,
    size: int | tuple[int, int],
    channels: int,
    box: tuple[int, int, int, int] | None = None,
    crop: str = "center",
) -> torch.Tensor:
    """Decode ``path`` and return float32 ``(channels, height, width)`` in ``[0, 1]`` (steps in the module docstring)."""
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    check_size_channels(size, channels)
    if crop not in CROP_POLICIES:
        raise ConfigError(f"crop must be one of {', '.join(CROP_POLICIES)}, got {crop!r}")
    height, width_out = height_width(size)
    try:
        with Image.open(path) as image:
            image.load()
            picture = image
    except (UnidentifiedImageError, DecompressionBombError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    width, tall = picture.size
    if box is None and crop == "none":
        box = (0, 0, width, tall)
    elif box is None:
        side = min(width, tall)
        left, top = (width - side) // 2, (tall - side) // 2
        box = (left, top, left + side, top + side)
    elif not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= tall):
        raise DataError(f"crop box {box} does not fit image {path} of size {width}x{tall}")
    picture = picture.convert(_MODES[channels]).crop(tuple(box)).resize((width_out, height), Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.uint8).reshape(height, width_out, channels)
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


__all__ = ["CROP_POLICIES", "IMAGE_EXTENSIONS", "MAX_SIZE", "check_size_channels", "height_width", "list_images", "natural_key", "read_image"]
