"""The in-memory data set every midefend loader returns, and its per-class split.

Model-inversion experiments use small private data sets (ORL: 400 faces,
digits 0-4: 2500 images), so midefend keeps them as one tensor in memory:
no DataLoader workers, no decoding in the training loop, and batch
augmentation can run on the whole batch at once.

A :class:`ClassificationData` holds

- ``images``: float32 ``(N, C, H, W)`` in ``[0, 1]`` (not normalised; models
  expect ``(x - mean) / std``, see :mod:`midefend.training`),
- ``labels``: int64 ``(N,)`` in ``0 .. len(classes) - 1``,
- ``classes``: the class names, index = label,
- ``name``: a short name (``"orl"``, ``"digits-private"``, a folder name),
- ``info``: JSON-serialisable provenance (source path, split, seed) that
  checkpoints record; folder loaders add ``files`` (each sample's
  ``class/file`` path, kept in step by :meth:`subset` and :meth:`split`).

>>> import torch
>>> data = ClassificationData(torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]), ["a", "b"], name="toy")
>>> len(data), data.num_classes, data.channels, data.size
(4, 2, 1, 8)
>>> image, label = data[2]
>>> image.shape, int(label)
(torch.Size([1, 8, 8]), 1)
>>> train, test = data.split(train_per_class=1, seed=0)
>>> len(train), len(test), train.info["split"]["part"]
(2, 2, 'train')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from .._validate import check_positive_int
from ..errors import ConfigError, DataError


@dataclass(eq=False)
class ClassificationData(Dataset):
    """Images and labels of one classification data set, held in memory (see the module docstring)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "data"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4:
            shape = tuple(self.images.shape) if isinstance(self.images, torch.Tensor) else type(self.images).__name__
            raise DataError(f"images must be a (N, C, H, W) tensor, got {shape}")
        if self.images.dtype != torch.float32:
            raise DataError(f"images must be float32 in [0, 1], got dtype {self.images.dtype}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.shape != (self.images.shape[0],):
            got = tuple(self.labels.shape) if isinstance(self.labels, torch.Tensor) else type(self.labels).__name__
            raise DataError(f"labels must have shape ({self.images.shape[0]},) to match the images, got {got}")
        self.labels = self.labels.long()
        self.classes = list(self.classes)
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(
                f"labels must lie in 0..{len(self.classes) - 1} for {len(self.classes)} classes, "
                f"got {int(self.labels.min())}..{int(self.labels.max())}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return (
            f"ClassificationData(name={self.name!r}, n={len(self)}, classes={self.num_classes}, "
            f"shape={tuple(self.images.shape[1:])})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        """The image height (midefend's loaders make square images)."""
        return int(self.images.shape[2])

    def subset(self, indices: torch.Tensor | list[int], *, part: str | None = None) -> ClassificationData:
        """The samples at ``indices`` (same classes, so labels keep their meaning)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        info = dict(self.info)
        files = info.get("files")
        if isinstance(files, list) and len(files) == len(self):
            info["files"] = [files[i] for i in index.tolist()]
        if part is not None:
            info["split"] = {**info.get("split", {}), "part": part}
        return ClassificationData(self.images[index], self.labels[index], self.classes, name=self.name, info=info)

    def split(
        self,
        *,
        train_per_class: int | None = None,
        test_fraction: float | None = None,
        seed: int = 0,
    ) -> tuple[ClassificationData, ClassificationData]:
        """Split every class the same way: ``(train, test)``, deterministic under ``seed``.

        Give exactly one of ``train_per_class`` (ORL's 7/3 protocol: 7 images of
        each identity for training, the rest for testing) or ``test_fraction``
        (``round(n_c * test_fraction)`` images of each class ``c`` for testing,
        at least one). Within each class a permutation drawn from a generator
        seeded with ``seed`` picks the images, so the split does not depend on
        file order quirks and a different seed gives a different split.
        """
        if (train_per_class is None) == (test_fraction is None):
            raise ConfigError(
                f"give exactly one of train_per_class and test_fraction, got "
                f"train_per_class={train_per_class!r}, test_fraction={test_fraction!r}"
            )
        if train_per_class is not None:
            check_positive_int("train_per_class", train_per_class)
        if test_fraction is not None and not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
        generator = torch.Generator().manual_seed(seed)
        train_idx: list[torch.Tensor] = []
        test_idx: list[torch.Tensor] = []
        for label in range(self.num_classes):
            members = torch.nonzero(self.labels == label).flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            if train_per_class is not None:
                n_train = train_per_class
            else:
                n_train = len(members) - max(1, round(len(members) * float(test_fraction)))  # type: ignore[arg-type]
            if n_train < 1 or n_train >= len(members):
                raise DataError(
                    f"class {self.classes[label]!r} has {len(members)} images, too few to keep "
                    f"{n_train} for training and at least one for testing"
                )
            train_idx.append(members[:n_train])
            test_idx.append(members[n_train:])
        rule = {"train_per_class": train_per_class} if train_per_class is not None else {"test_fraction": test_fraction}
        self_split = {**rule, "seed": seed}
        parts = []
        for part, idx in (("train", train_idx), ("test", test_idx)):
            chosen = torch.cat(idx).sort().values
            subset = self.subset(chosen)
            subset.info["split"] = {**self_split, "part": part}
            parts.append(subset)
        return parts[0], parts[1]


def check_num_classes(classes: list[str], where: str) -> None:
    """A classifier needs at least two classes; say where they were looked for."""
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes, found {len(classes)} in {where}")


__all__ = ["ClassificationData", "check_num_classes"]
