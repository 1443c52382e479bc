"""Put the private data and the evaluation model into the *target's* class order, by class name.

``verify`` compares three things that each number the classes: the target, the
independent evaluation model and the private data folder. They agree on
*names*, not necessarily on positions (torchvision's ``ImageFolder`` sorts
``s1, s10, s11, ...``; midefend's loaders ``s1, s2, s3, ...``). Everything is
mapped into the target's order:

- :func:`model_classes`: a checkpoint's names, or torchvision's ``ImageFolder``
  order of the data's names when the checkpoint records none (with a note saying so);
- :func:`align_data`: the data relabelled into the target's order;
- :class:`ReorderedClassifier`: the evaluation model with its logits permuted
  into the target's order.

>>> import torch
>>> base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
>>> clf = ReorderedClassifier(base, order=[2, 0, 1], input_size=(1, 2, 2), mean=(0.0,), std=(1.0,))
>>> x = torch.rand(5, 1, 2, 2)
>>> torch.equal(clf(x), base(x)[:, [2, 0, 1]])
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..data.class_names import ORDER_ASSUMED, ORDER_RECORDED, imagefolder_order, label_map, relabel_to
from ..data.datasets import ClassificationData
from ..errors import DataError
from .classifier import Classifier


def model_classes(ckpt: Any, data_classes: Sequence[str], *, what: str = "the target model") -> tuple[list[str], str]:
    """``(names, note)``: the checkpoint's class names in label order, and where that order comes from."""
    names = getattr(ckpt, "classes", None)
    if names:
        return list(names), ORDER_RECORDED
    if len(data_classes) != ckpt.num_classes:
        raise DataError(
            f"the data has {len(data_classes)} classes but {what} has {ckpt.num_classes} "
            "(and records no class names to match them by)"
        )
    return imagefolder_order(data_classes), ORDER_ASSUMED


def align_data(
    train: ClassificationData, test: ClassificationData, names: Sequence[str], *, spec: str
) -> tuple[ClassificationData, ClassificationData]:
    """``train`` and ``test`` relabelled into the order ``names`` (a one-line DataError when the names differ)."""
    what = f"data {spec!r}"
    return relabel_to(train, names, what=what), relabel_to(test, names, what=what)


class ReorderedClassifier(Classifier):
    """A :class:`Classifier` whose logit column ``i`` is the model's column ``order[i]``.

    Features (for KNN and FID) do not depend on the class order and are left alone.
    """

    def __init__(self, model: nn.Module, *, order: Sequence[int], **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.register_buffer("order", torch.as_tensor(list(order), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).index_select(1, self.order)


def evaluator_in_target_order(eval_ckpt: Any, target_names: Sequence[str], data_classes: Sequence[str]) -> tuple[Classifier, str]:
    """The evaluation model as a classifier in the target's class order, and the note on its order."""
    eval_names, note = model_classes(eval_ckpt, data_classes, what="the evaluation model")
    order = label_map(list(target_names), eval_names, have_name="the target model", want_name="the evaluation model")
    name = eval_ckpt.path.stem if getattr(eval_ckpt, "path", None) is not None else eval_ckpt.arch
    common = {"input_size": eval_ckpt.input_size, "mean": eval_ckpt.mean, "std": eval_ckpt.std, "name": name}
    if order == list(range(len(order))):
        return Classifier(eval_ckpt.model, **common), note
    return ReorderedClassifier(eval_ckpt.model, order=order, **common), note


__all__ = ["ReorderedClassifier", "align_data", "evaluator_in_target_order", "model_classes"]
