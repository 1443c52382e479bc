"""Load an ImageFolder-style tree: one subfolder per class, images inside.

::

    root/
      alice/  1.png 2.png ...
      bob/    1.png 2.png ...

Class names are the subfolder names in natural order (``s2`` before ``s10``),
and the label of a class is its position in that order. This is *not*
torchvision's ``ImageFolder`` order (plain string sort: ``s1, s10, s11, ...``);
midefend keeps its own order so that every model it trained keeps its labels,
and records the names with every checkpoint. Labels are matched to a model by
these names (:mod:`midefend.data.class_names`), never by position. Hidden folders (``.git``) and files that are not images are
ignored. Every failure is a one-line :class:`~midefend.errors.DataError`:
a missing folder, a folder with fewer than two classes, a class without
images, an image Pillow cannot read.

>>> import tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for person in ("ann", "bob"):
...     (root / person).mkdir()
...     for i in range(3):
...         Image.new("L", (40, 50), color=30 * i).save(root / person / f"{i}.png")
>>> data = load_image_folder(root, size=16, channels=1)
>>> data.classes, tuple(data.images.shape), data.labels.tolist()
(['ann', 'bob'], (6, 1, 16, 16), [0, 0, 0, 1, 1, 1])
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from .datasets import ClassificationData, check_num_classes
from .images import check_size_channels, list_images, natural_key, read_image


def find_classes(root: str | Path) -> list[Path]:
    """The class subfolders of ``root`` in natural order (errors if ``root`` is not a folder)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data folder {root} is not a folder")
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    check_num_classes([p.name for p in folders], f"{root} (expected one subfolder per class)")
    return folders


def load_image_folder(
    root: str | Path,
    *,
    size: int | tuple[int, int],
    channels: int = 3,
    box: tuple[int, int, int, int] | None = None,
    crop: str = "center",
    name: str | None = None,
) -> ClassificationData:
    """Read every image under ``root/<class>/`` into one :class:`ClassificationData`.

    ``size`` (an int for squares, or ``(height, width)``) and ``channels``
    (1 grey, 3 RGB) fix the output shape ``(N, channels, height, width)``;
    ``box`` crops every image the same way before resizing, else ``crop``
    decides (``"center"``: the centred square, ``"none"``: the whole frame; see
    :func:`~midefend.data.images.read_image`). ``info["files"]`` lists each
    image's path relative to ``root`` (``class/file``), in sample order. Split
    it with :meth:`ClassificationData.split`.
    """
    check_size_channels(size, channels)
    root = Path(root)
    folders = find_classes(root)
    images: list[torch.Tensor] = []
    labels: list[int] = []
    names: list[str] = []
    for label, folder in enumerate(folders):
        files = list_images(folder)
        if not files:
            raise DataError(f"class folder {folder} contains no images")
        for path in files:
            images.append(read_image(path, size=size, channels=channels, box=box, crop=crop))
            labels.append(label)
            names.append(f"{folder.name}/{path.name}")
    info: dict = {"source": str(root.resolve()), "size": size if isinstance(size, int) else list(size), "channels": channels}
    info["files"] = names
    if box is not None:
        info["box"] = list(box)
    elif crop != "center":
        info["crop"] = crop
    return ClassificationData(
        torch.stack(images),
        torch.tensor(labels, dtype=torch.long),
        [p.name for p in folders],
        name=name or root.name,
        info=info,
    )


def load_unlabelled_images(
    root: str | Path, *, size: int | tuple[int, int], channels: int = 3, box: tuple[int, int, int, int] | None = None, crop: str = "center"
) -> torch.Tensor:
    """Every image in ``root`` and in its subfolders (one level: a flat folder or class folders; labels ignored) as ``(N, channels, H, W)``.

    The public images a prior is trained or adapted on. Read as :func:`load_image_folder` reads them (``box``, ``crop``);
    an empty folder is a one-line :class:`~midefend.errors.DataError`.
    """
    check_size_channels(size, channels)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    folders = [root] + sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    files = [path for folder in folders for path in list_images(folder)]
    if not files:
        raise DataError(f"data folder {root} has no images (directly or in its subfolders)")
    return torch.stack([read_image(path, size=size, channels=channels, box=box, crop=crop) for path in files])


__all__ = ["find_classes", "load_image_folder", "load_unlabelled_images"]
