"""FaceNet as a pre-trained face backbone: ``midefend/facenet`` (``midefend train --arch facenet``).

The papers' realistic target is a network pre-trained on many faces and
fine-tuned on the private identities (CALoR reports its largest gains there).
:func:`facenet_backbone` builds :class:`~midefend.facenet.model.InceptionResnetV1`
with a linear head ``fc`` on the 512-d bottleneck and, with ``pretrained=True``,
FaceNet's CASIA-WebFace weights (:func:`~midefend.facenet.loader.facenet_state_dict`).

- **Input.** Each image is prewhitened inside the network (per-image mean 0,
  std 1, as FaceNet was trained), so the data set's normalisation does not
  matter. At least 75 px (three stride-2 reductions must leave a 1×1 map);
  160 px is the pre-training size; 96 px measured 0.63x its cost per step (benchmarks/RESULTS.md).
- **Grey input** (``in_chans=1``): the first convolution's kernel is summed
  over RGB, which equals feeding the grey image as three equal channels.
- **freeze**: the leading fraction of the trunk's 29 stages
  (:meth:`~midefend.facenet.model.InceptionResnetV1.stages`) gets
  ``requires_grad=False`` (``round(fraction * 29)`` stages; ``0.5``: the stem,
  the Block35s, Mixed-6a and two Block17s stay as pre-trained).
- ``pretrained`` is used only when a model is built for training; a checkpoint
  rebuilds the architecture with ``pretrained=False`` and loads its own weights,
  so reading a fine-tuned checkpoint needs neither the package nor the cache.

>>> model = facenet_backbone(num_classes=40, in_chans=1, freeze=0.5)
>>> model.conv2d_1a_3x3.weight.shape, model.conv2d_1a_3x3.weight.requires_grad, model.fc.weight.requires_grad
(torch.Size([32, 1, 3, 3]), False, True)
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .model import InceptionResnetV1


def freeze_leading(model: InceptionResnetV1, fraction: float) -> int:
    """``requires_grad=False`` on the first ``round(fraction * 29)`` trunk stages; returns that count."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"freeze must be a fraction in [0, 1], got {fraction!r}")
    stages = model.stages()
    count = round(fraction * len(stages))
    for stage in stages[:count]:
        for p in stage.parameters():
            p.requires_grad_(False)
    return count


def facenet_backbone(*, num_classes: int, in_chans: int = 3, pretrained: bool = False, freeze: float = 0.0, drop_rate: float = 0.0) -> InceptionResnetV1:
    """Inception-ResNet-v1 with a ``num_classes`` head; FaceNet's weights when ``pretrained``."""
    if in_chans not in (1, 3):
        raise ConfigError(f"the FaceNet backbone takes 1 or 3 input channels, got in_chans={in_chans}")
    model = InceptionResnetV1(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, prewhiten_input=True)
    if pretrained:
        from .loader import facenet_state_dict

        state = dict(facenet_state_dict())
        if in_chans == 1:
            state["conv2d_1a_3x3.weight"] = state["conv2d_1a_3x3.weight"].sum(dim=1, keepdim=True)
        with torch.no_grad():
            missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not name.startswith("fc.") for name in missing):
            raise ConfigError(f"FaceNet weights do not fit the backbone: missing {missing[:3]}, unexpected {unexpected[:3]}")
    freeze_leading(model, freeze)
    return model


#: Registered by :mod:`midefend.architectures` (this module imports nothing from there).
BUILTIN_ARCHITECTURES = {"midefend/facenet": facenet_backbone}

__all__ = ["BUILTIN_ARCHITECTURES", "facenet_backbone", "freeze_leading"]
