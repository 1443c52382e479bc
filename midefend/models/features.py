"""Penultimate features of a classifier: the space KNN distance and FID are measured in.

"Penultimate" means the vector the classifier head consumes (after global
pooling, before the last linear map / low-rank head). How to reach it depends
on the model family, tried in this order:

1. timm models: ``model.forward_head(model.forward_features(x), pre_logits=True)``
   (also right for models hardened with a ``LowRankTanhHead``: timm's
   ``pre_logits`` stops before the head, whatever the head is);
2. models whose ``forward`` accepts ``pre_logits`` (midefend's own nets):
   ``model(x, pre_logits=True)``;
3. models with ``get_classifier()`` or a head attribute (``fc``, ``head``,
   ``classifier``): the input of that module, caught with a forward hook.

>>> import torch, timm
>>> model = timm.create_model("resnet18", num_classes=3, in_chans=1).eval()
>>> extract_features(model, torch.rand(2, 1, 32, 32)).shape
torch.Size([2, 512])
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from ..errors import ConfigError

_HEAD_ATTRS = ("fc", "head", "classifier", "last_linear")


def _accepts_pre_logits(model: nn.Module) -> bool:
    try:
        return "pre_logits" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _head_module(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            return head
    for attr in _HEAD_ATTRS:
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            return head
    return None


def extract_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features ``(B, D)`` of ``model`` for its (already normalised) input ``x``.

    Raises:
        ConfigError: the model offers none of the three ways above.
    """
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
    elif _accepts_pre_logits(model):
        feats = model(x, pre_logits=True)
    else:
        head = _head_module(model)
        if head is None:
            raise ConfigError(
                f"cannot find the penultimate features of {type(model).__name__}: it has no timm "
                "forward_head, no forward(x, pre_logits=True) and no fc/head/classifier module"
            )
        captured: list[torch.Tensor] = []
        handle = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        try:
            model(x)
        finally:
            handle.remove()
        feats = captured[0]
    return feats.flatten(1)


__all__ = ["extract_features"]
