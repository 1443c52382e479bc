"""Class identity by name: match a data set's classes to a model's, never by position alone.

A label is only an index; what it means is the class *name* it stood for when
the model was trained. Folder loaders disagree on the order: torchvision's
``ImageFolder`` sorts folder names as plain strings (``s1, s10, s11, ..., s2``),
midefend's own loaders sort them naturally (``s1, s2, ..., s10``). On ORL the two
orders give 39 of 40 identities a different label, so a model trained with one
and checked with the other looks 2.5 % accurate. Hence:

- checkpoints record the class names (``save_checkpoint(..., classes=...)``);
- :func:`relabel_to` rewrites a data set's labels into a model's class order, and
  refuses (one-line :class:`~midefend.errors.DataError`) when the names differ;
- for a checkpoint without names, :func:`imagefolder_order` is the assumption
  (torchvision's convention, what most training code used), and verify says so.

>>> imagefolder_order(["s2", "s10", "s1"])
['s1', 's10', 's2']
>>> import torch
>>> from midefend.data.datasets import ClassificationData
>>> data = ClassificationData(torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 2]), ["s1", "s2", "s10"])
>>> relabel_to(data, ["s1", "s10", "s2"]).labels.tolist()
[0, 2, 1]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import DataError
from .datasets import ClassificationData

#: How the report describes the two sources of a model's class order.
ORDER_RECORDED = "class names recorded in the checkpoint"
ORDER_ASSUMED = (
    "no class names recorded in the checkpoint: assumed torchvision ImageFolder order "
    "(class folder names sorted as strings); record them with save_checkpoint(..., classes=dataset.classes)"
)


def imagefolder_order(names: Sequence[str]) -> list[str]:
    """The class order torchvision's ``ImageFolder`` gives these folder names: sorted as plain strings."""
    return sorted(names)


def name_differences(have: Sequence[str], want: Sequence[str], *, have_name: str = "the data", want_name: str = "the model", limit: int = 3) -> str:
    """A short text naming the first names of ``want`` missing from ``have`` and vice versa ('' if none)."""
    have_set, want_set = set(have), set(want)
    missing = [name for name in want if name not in have_set]
    unknown = [name for name in have if name not in want_set]
    parts = []
    for label, names in ((f"missing from {have_name}", missing), (f"not classes of {want_name}", unknown)):
        if names:
            shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def label_map(
    have: Sequence[str], want: Sequence[str], *, have_name: str = "the data", want_name: str = "the model", subject: str | None = None
) -> list[int]:
    """``out[i]`` = the position in ``want`` of ``have[i]`` (the two lists must hold the same names).

    ``subject`` names ``have`` at the start of the error (default ``have_name``).
    """
    differences = name_differences(have, want, have_name=have_name, want_name=want_name)
    if differences:
        raise DataError(f"{subject or have_name} has classes that differ from {want_name}'s ({differences})")
    index = {name: i for i, name in enumerate(want)}
    return [index[name] for name in have]


def relabel_to(data: ClassificationData, model_classes: Sequence[str], *, what: str | None = None) -> ClassificationData:
    """``data`` with labels rewritten into ``model_classes``' order (images untouched, same ``info``)."""
    mapping = label_map(data.classes, model_classes, subject=what or f"data {data.name!r}")
    if mapping == list(range(len(mapping))):
        return data
    labels = torch.tensor(mapping, dtype=torch.long)[data.labels]
    return ClassificationData(data.images, labels, list(model_classes), name=data.name, info=dict(data.info))


__all__ = ["ORDER_ASSUMED", "ORDER_RECORDED", "imagefolder_order", "label_map", "name_differences", "relabel_to"]
