"""Resume an interrupted training run exactly where it stopped.

With ``train_classifier(..., resume=path)`` the loop writes, after every
epoch, everything the next epoch depends on: the model, optimiser, schedule
and loss-scaler states, the states of the shuffling/augmentation and erasing
generators and of the global RNG, the history, and where it is (stage index,
epochs done in that stage). The file is written atomically (temporary file,
then rename), so a kill at any moment leaves the previous epoch's state.

Started again with the same arguments, the loop loads the file and continues
with the next epoch; because every random stream is restored, the resumed
run ends with the same weights as an uninterrupted one. A file from a
different run (other settings or data) is refused by its fingerprint.
A finished run's file is kept: starting it again returns at once.

The file is a ``torch.save`` dict of tensors and plain values, read back with
``torch.load(weights_only=True)``: loading it never executes code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..data.datasets import ClassificationData
from ..errors import CheckpointError, ConfigError
from ..io.atomic import atomic_write

FORMAT_VERSION = 1


def run_fingerprint(config: dict[str, Any], train: ClassificationData, model: torch.nn.Module) -> str:
    """A hash of the run's settings, its training data and the model's parameter shapes."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"{train.name}|{len(train)}|{train.num_classes}|{tuple(train.images.shape)}".encode())
    digest.update(train.labels.numpy().tobytes())
    digest.update(f"{float(train.images.double().sum()):.9e}".encode())
    digest.update(repr([(k, tuple(v.shape)) for k, v in model.state_dict().items()]).encode())
    return digest.hexdigest()


def save_state(path: str | os.PathLike[str], **state: Any) -> None:
    """Write ``state`` (plus the global RNG states) atomically to ``path``."""
    state = {"format_version": FORMAT_VERSION, "rng_cpu": torch.get_rng_state(), **state}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | os.PathLike[str], fingerprint: str) -> dict[str, Any] | None:
    """The saved state at ``path``, or ``None`` if there is none yet; restores the global RNG.

    Raises:
        CheckpointError: the file is not a midefend training state.
        ConfigError: it belongs to a different run (other settings, data or model).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise CheckpointError(f"cannot read training state {path}: {type(exc).__name__}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a midefend training state (format {FORMAT_VERSION})")
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"resume file {path} belongs to a different run (other settings, data or model); "
            "delete it or choose another resume path"
        )
    torch.set_rng_state(state["rng_cpu"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state


__all__ = ["FORMAT_VERSION", "load_state", "run_fingerprint", "save_state"]
