"""A tiny CALoR run through ``train_target``: run under torchrun by test_distributed_training, and in one process as its reference.

The model has no BatchNorm in its backbone (per-rank batch statistics would make
data-parallel training differ from one process by design); the low-rank head's
BatchNorm is synchronised across ranks. No erasing (its boxes come from a
per-rank stream) and no dropout: two processes must then train what one does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed
import torch.nn as nn

from midefend.architectures import register_architecture
from midefend.data import ClassificationData

ARCH = "midefend/ddp_test_net"
SETTINGS = dict(
    arch=ARCH, defense="calor", epochs=4, calor_epochs=2, calor_lr=1e-2, ca_epochs=1, ca_lr=1e-2, rank=3,
    lr=3e-2, batch_size=8, augment="light", seed=3,
)  # fmt: skip


class TinyNet(nn.Module):
    """conv -> ReLU -> mean pool -> ``fc``: a classifier head ``harden`` finds, and no BatchNorm."""

    def __init__(self, num_classes: int, in_chans: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 12, 3, padding=1)
        self.fc = nn.Linear(12, num_classes)
        self.pretrained_cfg = {"classifier": "fc", "num_classes": num_classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@register_architecture("ddp_test_net")
def _build(num_classes: int, in_chans: int = 1, **kwargs) -> nn.Module:
    return TinyNet(num_classes, in_chans)


def tiny_data() -> tuple[ClassificationData, ClassificationData]:
    """48 training and 16 test images, 4 classes, 8x8 grey: class c is brighter in quadrant c."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    images = torch.rand(64, 1, 8, 8, generator=gen) * 0.5
    for i, c in enumerate(labels.tolist()):
        images[i, 0, (c // 2) * 4 : (c // 2) * 4 + 4, (c % 2) * 4 : (c % 2) * 4 + 4] += 0.5
    names = [f"c{c}" for c in range(4)]
    return ClassificationData(images[:48], labels[:48], names, name="quadrants"), ClassificationData(images[48:], labels[48:], names, name="quadrants-test")


def train(out: Path, resume: Path | None = None):
    from midefend.training import train_target

    return train_target(tiny_data(), out=out, progress=False, resume=resume, **SETTINGS)


class _Interrupted(Exception):
    pass


def interrupted_then_resumed(out: Path, stop_after: int = 3) -> None:
    """Train to ``out`` with a resume file, stopped on every rank after ``stop_after`` epochs, then started again."""
    from midefend.training import loop

    original, calls = loop._Step.epoch, [0]

    def epoch(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] > stop_after:
            raise _Interrupted
        return original(self, *args, **kwargs)

    state = out.with_name(out.name + ".state.pt")
    loop._Step.epoch = epoch
    try:
        train(out, resume=state)
    except _Interrupted:
        torch.distributed.barrier()  # rank 0 has written the state of the last finished epoch
    finally:
        loop._Step.epoch = original
    assert state.is_file() and not out.exists()
    train(out, resume=state)


if __name__ == "__main__":
    train(Path(sys.argv[1]))
    if len(sys.argv) > 2:
        interrupted_then_resumed(Path(sys.argv[2]))
