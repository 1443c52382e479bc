"""Pickled (``torch.save``) checkpoints: recognise one by its first bytes, and read its state dict
with ``torch.load(weights_only=True)`` -- only where the user explicitly allowed it."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from .header import looks_like_pickle

__all__ = ["STATE_DICT_KEYS", "is_pickle_file", "load_pickled_state_dict"]

# Where research checkpoints keep the weights, tried in this order.
STATE_DICT_KEYS = ("model_state_dict", "state_dict")


def is_pickle_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts like a ``torch.save`` archive or a pickle (only 8 bytes are read)."""
    if Path(path).exists() and not Path(path).is_dir() and not Path(path).is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file (a pipe, socket or device)")
    try:
        with open(path, "rb") as handle:
            return looks_like_pickle(handle.read(8))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, expected a file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc.strerror or exc}") from None


def load_pickled_state_dict(path: str | os.PathLike[str], *, key: str | None = None) -> tuple[dict[str, torch.Tensor], str | None]:
    """Read a pickled checkpoint with ``torch.load(weights_only=True)`` and find its state dict.

    Returns ``(state_dict, key)``: ``key`` is where the state dict was found
    (``None`` when the file is the state dict itself). Call this only for files
    the user explicitly allowed to be unpickled.

    Raises:
        UnsafeCheckpointError: the pickle holds objects other than tensors and
            plain containers (``weights_only`` refused it; nothing was executed).
        CheckpointError: not a readable pickle, or no state dict inside.
    """
    name = str(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(str(exc))
        raise UnsafeCheckpointError(
            f"checkpoint {name!r} holds objects other than tensors, which torch.load(weights_only=True) refuses "
            f"to unpickle (nothing was executed): {reason}"
        ) from None
    except Exception as exc:  # torch.load raises many types on garbage (RuntimeError, EOFError, ...)
        raise CheckpointError(f"checkpoint {name!r} is not a readable PyTorch file: {type(exc).__name__}: {exc}") from None
    return _find_state_dict(obj, key=key, name=name)


def _unpickler_reason(message: str) -> str:
    """The informative sentence of torch's long weights_only error (e.g. "Unsupported global: GLOBAL exec ...")."""
    for line in message.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
        if "unsupported GLOBAL" in line:
            # A global from a blocked module (os.system -> posix.system) gets this sentence instead.
            return line.strip().rstrip(".")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else "refused"


def _find_state_dict(obj: Any, *, key: str | None, name: str) -> tuple[dict[str, torch.Tensor], str | None]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {name!r} holds a {type(obj).__name__}, expected a dict of tensors")
    if key is not None:
        if key not in obj:
            shown = ", ".join(repr(k) for k in list(obj)[:8])
            raise CheckpointError(f"checkpoint {name!r} has no entry {key!r} (entries: {shown})")
        return _as_state_dict(obj[key], name=name, where=f"entry {key!r}"), key
    for candidate in STATE_DICT_KEYS:
        if isinstance(obj.get(candidate), Mapping):
            return _as_state_dict(obj[candidate], name=name, where=f"entry {candidate!r}"), candidate
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _as_state_dict(obj, name=name, where="file"), None
    shown = ", ".join(repr(k) for k in list(obj)[:8])
    raise CheckpointError(
        f"checkpoint {name!r} has no state dict: no {' or '.join(map(repr, STATE_DICT_KEYS))} entry and not a dict "
        f"of tensors (entries: {shown}); pass key= to name the entry"
    )


def _as_state_dict(obj: Any, *, name: str, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"checkpoint {name!r}: {where} is not a non-empty dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {name!r}: {where} is not a state dict ({bad[0]!r} is not a named tensor)")
    return dict(obj)
