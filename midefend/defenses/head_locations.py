"""Where the classifier head of a model lives, as dotted submodule paths.

No guessing: a head is found by one of three explicit rules, in this order.

1. ``head=`` passed by the caller (a dotted path or a list of them).
2. timm's convention: ``model.pretrained_cfg["classifier"]`` (or the older
   ``default_cfg``), a string or a tuple of strings (distilled DeiT:
   ``("head", "head_dist")``). midefend's own nets follow it too, and so can
   any model: give it ``pretrained_cfg = {"classifier": "fc"}``.
3. torchvision: the table :data:`TORCHVISION_HEADS` below, by model class.
   Auxiliary heads (Inception v3 ``AuxLogits.fc``, GoogLeNet ``aux1.fc2`` and
   ``aux2.fc2``) are included when the model was built with them.
4. Hugging Face ``transformers`` image classifiers (``...ForImageClassification``):
   their ``classifier`` attribute, an ``nn.Linear`` (ViT, ConvNeXt, Swin, ...)
   or a ``Sequential`` ending in one after shape-only layers (ResNet's
   ``Sequential(Flatten, Linear)`` -> ``classifier.1``).

>>> import torchvision
>>> find_head_paths(torchvision.models.vgg11(num_classes=3))
['classifier.6']
"""

from __future__ import annotations


import torch.nn as nn
import torchvision.models as tvm

from ..errors import ConfigError, HeadNotFoundError

__all__ = ["TORCHVISION_HEADS", "AUX_HEADS", "find_head_paths", "normalize_head_paths"]

# torchvision model class -> (main head paths). ResNeXt and Wide-ResNet are ResNet
# instances; the quantizable variants subclass these classes and are found too.
TORCHVISION_HEADS: dict[type[nn.Module], tuple[str, ...]] = {
    tvm.ResNet: ("fc",),
    tvm.RegNet: ("fc",),
    tvm.ShuffleNetV2: ("fc",),
    tvm.DenseNet: ("classifier",),
    tvm.VGG: ("classifier.6",),
    tvm.AlexNet: ("classifier.6",),
    tvm.EfficientNet: ("classifier.1",),
    tvm.MobileNetV2: ("classifier.1",),
    tvm.MNASNet: ("classifier.1",),
    tvm.MobileNetV3: ("classifier.3",),
    tvm.ConvNeXt: ("classifier.2",),
    tvm.VisionTransformer: ("heads.head",),
    tvm.SwinTransformer: ("head",),
    tvm.MaxVit: ("classifier.5",),
    tvm.Inception3: ("fc",),
    tvm.GoogLeNet: ("fc",),
    # SqueezeNet's head is a 1x1 Conv2d; listed so the error says what it is.
    tvm.SqueezeNet: ("classifier.1",),
}

# Auxiliary heads, hardened too when present (they are None with aux_logits=False).
AUX_HEADS: dict[type[nn.Module], tuple[str, ...]] = {
    tvm.Inception3: ("AuxLogits.fc",),
    tvm.GoogLeNet: ("aux1.fc2", "aux2.fc2"),
}


def normalize_head_paths(head: object) -> list[str]:
    """``"fc"`` -> ``["fc"]``; a list or tuple of non-empty strings -> a list; anything else is a ConfigError."""
    paths = [head] if isinstance(head, str) else head
    if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"head must be a dotted path like 'fc' or a non-empty list of them, got {head!r}")
    if len(set(paths)) != len(paths):
        raise ConfigError(f"head lists a path twice: {list(paths)!r}")
    return list(paths)


def _timm_classifier(model: nn.Module) -> object:
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict) and cfg.get("classifier"):
            return cfg["classifier"]
    return None


def _module_exists(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False


# Layers that only reshape or regularise: a Sequential head of these plus one Linear is that Linear.
_SHAPE_ONLY = (nn.Flatten, nn.Dropout, nn.Identity)


def _transformers_head(model: nn.Module) -> str | None:
    """``"classifier"`` (or ``"classifier.<i>"``) of a transformers image classifier; ``None`` otherwise."""
    if not type(model).__module__.startswith("transformers.") or not type(model).__name__.endswith("ForImageClassification"):
        return None
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        return "classifier"
    if isinstance(head, nn.Sequential):
        linear = [i for i, layer in enumerate(head) if isinstance(layer, nn.Linear)]
        others_ok = all(isinstance(layer, _SHAPE_ONLY) for i, layer in enumerate(head) if i not in linear)
        if len(linear) == 1 and others_ok:
            return f"classifier.{linear[0]}"
    return None


def find_head_paths(model: nn.Module, head: object = None) -> list[str]:
    """The dotted paths of ``model``'s classifier head(s) (not checked to be ``nn.Linear`` here)."""
    if head is not None:
        return normalize_head_paths(head)
    classifier = _timm_classifier(model)
    if classifier is not None:
        return normalize_head_paths(classifier)
    for cls, paths in TORCHVISION_HEADS.items():
        if isinstance(model, cls):
            aux = [p for p in AUX_HEADS.get(cls, ()) if _module_exists(model, p)]
            return list(paths) + aux
    hf_head = _transformers_head(model)
    if hf_head is not None:
        return [hf_head]
    raise HeadNotFoundError(
        f"cannot locate the classifier head of {type(model).__name__}: it is not a timm model "
        "(no pretrained_cfg['classifier']) nor a torchvision family midefend knows; "
        "pass head='dotted.path' naming its nn.Linear classifier"
    )
