"""A checkpoint's low-rank head regime on its own training images (``midefend inspect --regime``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..defenses.head_regime import regime_record
from .verify import load_private_data

__all__ = ["checkpoint_regime"]


def checkpoint_regime(checkpoint: str | Path, data: str | Path | None = None, *, device: str = "cpu") -> dict[str, Any]:
    """``{"data": ..., "heads": {path: regime dict}}`` on the training split of ``data`` (default: the recorded data).

    The images are normalised as the checkpoint records; the model runs in eval
    mode (see :func:`midefend.defenses.head_regime.head_regime`).
    """
    from ..io.checkpoints import load_checkpoint

    ckpt = load_checkpoint(checkpoint, device=device)
    train, _ = load_private_data(ckpt, data)
    heads = regime_record(ckpt.model, ckpt.normalize(train.images.to(device)))
    return {"data": f"{train.name} training split, {len(train)} images, eval mode", "heads": heads}
