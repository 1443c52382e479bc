"""midefend's own small networks for low-resolution data (registered as ``midefend/<name>``).

No pretrained weights can be downloaded here and the benchmarks train on two
CPU cores, so the default models are narrow and downsample early: a 3x3
stride-2 stem takes 64x64 faces to 32x32 before any wide layer (a timm
``resnet18`` costs about 10x more per step at 64x64 and reaches the same
accuracy on ORL).

- ``midefend/resnet_small`` -- the default **target**: stem + four residual
  stages (widths 32-64-128-256, one basic block each by default), global
  average pooling, a linear head ``fc``.
- ``midefend/vgg_small`` -- the default **evaluation model**, a deliberately
  different architecture: plain conv-BN-ReLU pairs with max pooling (no
  skip connections), then an MLP ``pre_logits`` (256 units, dropout) and a
  linear head ``fc``. Its 256-d penultimate features serve the KNN distance.

Both follow timm's calling convention, so :func:`midefend.harden` and the
evaluation code treat them like timm models: ``forward_features(x)``,
``forward_head(x, pre_logits=False)``, ``num_features``, ``num_classes`` and
``pretrained_cfg["classifier"] == "fc"``.

>>> import torch
>>> from midefend.architectures import build_model
>>> model = build_model("midefend/resnet_small", num_classes=40, in_chans=1)
>>> model(torch.zeros(2, 1, 64, 64)).shape
torch.Size([2, 40])
>>> evaluator = build_model("midefend/vgg_small", num_classes=40, in_chans=1)
>>> evaluator.forward_head(evaluator.forward_features(torch.zeros(2, 1, 64, 64)), pre_logits=True).shape
torch.Size([2, 256])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from .errors import ConfigError


def conv_bn_relu(in_chans: int, out_chans: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: BatchNorm follows), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """``relu(bn(conv(conv_bn_relu(x))) + shortcut(x))``; the shortcut is a strided 1x1 conv when the shape changes."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_chans, out_chans, stride)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_chans != out_chans:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chans)
            )
        # Zero-init the last BN's scale: each block starts as the identity, which
        # trains faster from scratch (Goyal et al., 2017).
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class _TimmLike(nn.Module):
    """Shared head plumbing: ``forward = forward_head(forward_features(x))``."""

    num_features: int
    num_classes: int
    fc: nn.Module
    pre_logits: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features -> ``pre_logits`` (penultimate features) -> ``fc`` (logits)."""
        x = self.pre_logits(self.pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_widths(widths: Sequence[int], depths: Sequence[int] | None = None) -> None:
    if len(widths) < 1 or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ConfigError(f"widths must be a non-empty sequence of positive integers, got {list(widths)!r}")
    if depths is not None and (len(depths) != len(widths) or any(not isinstance(d, int) or d < 1 for d in depths)):
        raise ConfigError(f"depths must give a positive block count per stage ({len(widths)} stages), got {list(depths)!r}")


class ResNetSmall(_TimmLike):
    """Narrow ResNet for 32-128 px inputs (see the module docstring); ``depths`` blocks per stage."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (1, 1, 1, 1),
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_widths(widths, depths)
        self.num_classes = num_classes
        self.stem = conv_bn_relu(in_chans, widths[0], stride=2)
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.pre_logits = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.num_features = channels
        self.fc = nn.Linear(channels, num_classes)
        self.pretrained_cfg = {"classifier": "fc", "num_classes": num_classes}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class VGGSmall(_TimmLike):
    """VGG-style net: per stage two conv-BN-ReLU then 2x2 max pooling; MLP classifier."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        hidden: int = 256,
        drop_rate: float = 0.3,
    ) -> None:
        super().__init__()
        _check_widths(widths)
        self.num_classes = num_classes
        layers: list[nn.Module] = [conv_bn_relu(in_chans, widths[0], stride=2)]
        channels = widths[0]
        for stage, width in enumerate(widths):
            layers += [conv_bn_relu(channels, width), conv_bn_relu(width, width)]
            if stage < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.pre_logits = nn.Sequential(
            nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate)
        )
        self.num_features = hidden
        self.fc = nn.Linear(hidden, num_classes)
        self.pretrained_cfg = {"classifier": "fc", "num_classes": num_classes}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


#: midefend's own architectures by name; :mod:`midefend.architectures` registers them (this module
#: imports nothing of midefend's but the errors, so the two cannot form an import cycle; ``midefend/vib``,
#: which builds another architecture, is registered by :mod:`midefend.architectures` itself).
BUILTIN_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def _builtin(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BUILTIN_ARCHITECTURES[name] = fn
        return fn

    return add


@_builtin("resnet_small")
def resnet_small(*, num_classes: int, in_chans: int = 3, **kwargs) -> ResNetSmall:
    """The default target model (``widths``, ``depths``, ``drop_rate`` adjustable)."""
    return ResNetSmall(num_classes, in_chans, **kwargs)


@_builtin("vgg_small")
def vgg_small(*, num_classes: int, in_chans: int = 3, **kwargs) -> VGGSmall:
    """The default evaluation model (``widths``, ``hidden``, ``drop_rate`` adjustable)."""
    return VGGSmall(num_classes, in_chans, **kwargs)


__all__ = ["BasicBlock", "ResNetSmall", "VGGSmall", "conv_bn_relu", "resnet_small", "vgg_small"]
