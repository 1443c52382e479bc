"""A frozen classifier that takes images in ``[0, 1]`` of any channel count and size.

Attacks and metrics pass images around in ``[0, 1]``; each model expects its
own input: ``(x - mean) / std`` at its ``input_size`` ``(C, H, W)``.
:class:`Classifier` bundles the model with that contract, converts grey/RGB and
resizes (:func:`~midefend.models.images.adapt_images`), normalises, and
exposes logits and penultimate features. The model is put in eval mode with
``requires_grad=False`` on its parameters: attacks differentiate through it
with respect to the *input* only.

>>> import torch, timm
>>> net = timm.create_model("resnet18", num_classes=4, in_chans=1)
>>> clf = Classifier(net, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,))
>>> clf(torch.rand(2, 3, 64, 64)).shape  # RGB 64×64 in, adapted to grey 32×32
torch.Size([2, 4])
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError
from .features import extract_features
from .images import adapt_images


class Classifier(nn.Module):
    """``model`` + its input contract; ``forward(x01) -> logits``, ``features(x01) -> (B, D)``."""

    def __init__(self, model: nn.Module, *, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], name: str = "model") -> None:
        super().__init__()
        if len(input_size) != 3:
            raise ConfigError(f"input_size must be (C, H, W), got {tuple(input_size)!r}")
        channels = int(input_size[0])
        if len(mean) not in (1, channels) or len(std) not in (1, channels):
            raise ConfigError(f"mean/std must have 1 or {channels} values, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ConfigError(f"std values must be positive, got {tuple(std)!r}")
        self.model = model
        self.input_size = (channels, int(input_size[1]), int(input_size[2]))
        self.name = name
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)
        self.freeze()

    @classmethod
    def from_checkpoint(cls, ckpt: Any, *, name: str | None = None) -> Classifier:
        """Wrap a :class:`~midefend.io.checkpoints.Checkpoint` (its model, input size, mean and std)."""
        label = name or (ckpt.path.stem if getattr(ckpt, "path", None) is not None else ckpt.arch)
        return cls(ckpt.model, input_size=ckpt.input_size, mean=ckpt.mean, std=ckpt.std, name=label)

    def freeze(self) -> Classifier:
        self.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> Classifier:
        # Always eval: BatchNorm statistics and dropout must not change during an attack.
        return super().train(False)

    def for_inference(self) -> Classifier:
        """A copy that computes the same logits faster: BatchNorm folded into the convolutions (see
        :mod:`~midefend.models.folding`), the caller's model untouched; ``self`` when nothing folds.

        The copy runs the model's own code, so CALoR's heads are still there for BPDA to patch. It is
        checked on a probe batch: logits that differ by more than rounding mean the trace missed
        something, and the original is used instead.
        """
        from ..defenses.heads import LowRankTanhHead
        from .folding import folded_copy

        return folded_copy(
            self,
            self.model,
            lambda folded: copy.deepcopy(self, memo={id(self.model): folded}),  # a subclass keeps its own code and attributes
            lambda: torch.rand(3, *self.input_size, generator=torch.Generator().manual_seed(0)).to(self.mean.device),
            opaque=(LowRankTanhHead,),  # its forward checks shapes: not traceable
        )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Adapt ``x`` in ``[0, 1]`` to the model's channels and size, then normalise."""
        x = adapt_images(x, channels=self.input_size[0], size=self.input_size[1:])
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(self.prepare(x))
        # transformers models return a ModelOutput; midefend works on the logits tensor
        return getattr(out, "logits", out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, D)`` (see :func:`~midefend.models.features.extract_features`)."""
        return extract_features(self.model, self.prepare(x))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, *, batch_size: int = 256, features: bool = False) -> torch.Tensor:
        """Logits (or features) for many images, in batches, without autograd; returns float32 on the CPU."""
        device = self.mean.device
        outs = []
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)
            outs.append((self.features(batch) if features else self(batch)).float().cpu())
        if not outs:
            raise ConfigError("predict needs at least one image, got an empty batch")
        return torch.cat(outs)


__all__ = ["Classifier"]
