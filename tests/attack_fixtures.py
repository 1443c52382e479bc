"""Tiny models, data and prior for the attack, metric and CLI tests (seconds on one core).

scikit-learn's 8×8 digits, zero-padded to 16×16: private classes 0–4 (the
target's), public 5–9 (the prior's), as in GMI's MNIST split. The target is a
narrow ``midefend/resnet_small``, the evaluation model a narrow
``midefend/vgg_small`` (another architecture), both trained with a plain loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from midefend.architectures import build_model

MEAN, STD = (0.5,), (0.5,)
TARGET_ARCH, TARGET_KW = "midefend/resnet_small", {"widths": [8, 16], "depths": [1, 1]}
EVAL_ARCH, EVAL_KW = "midefend/vgg_small", {"widths": [8, 16], "hidden": 32, "drop_rate": 0.0}


def tiny_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(private_images, private_labels, public_images)``: 16×16 grey in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = F.pad(torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0, (4, 4, 4, 4))
    y = torch.tensor(digits.target, dtype=torch.long)
    private = y < 5
    return x[private], y[private], x[~private]


def train_tiny(arch: str, kwargs: dict, x: torch.Tensor, y: torch.Tensor, *, seed: int, epochs: int = 12) -> torch.nn.Module:
    """A plain Adam loop on normalised images; returns the model in eval mode."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=int(y.max()) + 1, in_chans=1, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(model((x[idx] - 0.5) / 0.5), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
