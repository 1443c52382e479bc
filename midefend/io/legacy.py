"""Import bare state dicts: the research code's pickled ``.pt`` files, or plain ``.safetensors``.

The MIDRE and CALoR authors' code saves ``torch.save({"model_state_dict": ...})``
(or ``{"state_dict": ...}``, or the state dict itself), often from a
``DataParallel`` model. Such a file holds weights only, so the architecture and
input conventions must be given explicitly; the result is an ordinary
:class:`~midefend.io.checkpoints.Checkpoint`, which
:func:`~midefend.io.checkpoints.save_checkpoint` can then turn into a
self-describing midefend checkpoint.

Unpickling can execute arbitrary code, so a pickled file is read only when the
caller passes ``allow_pickle=True``, and then only through
``torch.load(weights_only=True)``, whose restricted unpickler accepts tensors
and plain containers and refuses everything else (a malicious ``__reduce__``
never runs). Safetensors files need no flag.

>>> import tempfile, pathlib, torch
>>> from midefend.architectures import build_model
>>> model = build_model("timm/test_resnet", num_classes=4, in_chans=1)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "research.pt"
>>> torch.save({"epoch": 9, "model_state_dict": model.state_dict()}, path)
>>> ckpt = import_research_checkpoint(path, arch="timm/test_resnet", arch_kwargs={"in_chans": 1},
...     num_classes=4, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,), allow_pickle=True)
>>> ckpt.num_classes, ckpt.extra
(4, {'imported_from': 'research.pt', 'state_dict_key': 'model_state_dict'})
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, UnsafeCheckpointError
from .checkpoints import Checkpoint, _check_device, _read_tensors, restore_checkpoint
from .header import looks_like_pickle, read_safetensors_header
from .schema import make_metadata

__all__ = ["STATE_DICT_KEYS", "import_research_checkpoint", "is_pickle_file", "load_pickled_state_dict"]

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


def import_research_checkpoint(
    path: str | os.PathLike[str],
    *,
    arch: str,
    num_classes: int,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    arch_kwargs: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    defense: Mapping[str, Any] | None = None,
    hardening: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    key: str | None = None,
    allow_pickle: bool = False,
    device: str | torch.device = "cpu",
) -> Checkpoint:
    """Rebuild ``arch`` and load the bare state dict at ``path`` into it (strictly).

    Args:
        path: a ``torch.save`` file (``.pt``/``.pth``: needs ``allow_pickle=True``)
            or a ``.safetensors`` file (its metadata, if any, is ignored).
        arch, num_classes, input_size, mean, std, arch_kwargs, classes, defense, extra:
            as for :func:`~midefend.io.checkpoints.save_checkpoint`; the file does
            not say them, so they must be given.
        hardening: ``model.midefend_hardening`` of the saved model when it was
            hardened by :func:`midefend.harden` (re-creates its low-rank heads).
        key: the entry holding the weights; by default ``"model_state_dict"``,
            then ``"state_dict"``, then the whole object if it is a state dict.
        allow_pickle: permit reading a pickled file (with ``weights_only=True``).
            Pass it only for files you trust: the restricted unpickler is a
            safety net, not a reason to open files from strangers.
        device: where to put the model.

    ``extra`` gains ``imported_from`` (the file name) and ``state_dict_key``.
    ``_orig_mod.`` and ``module.`` prefixes are removed.

    Raises:
        UnsafeCheckpointError: a pickled file without ``allow_pickle=True`` (refused
            before anything is unpickled), or one that ``weights_only`` refuses.
        CheckpointError: unreadable file, no state dict inside, weights that do
            not fit ``arch``, NaN or infinite weights.
        ConfigError: an argument is invalid.
    """
    if allow_pickle is not True and allow_pickle is not False:
        raise ConfigError(f"allow_pickle must be True or False, got {allow_pickle!r}")
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigError(f"key must be a non-empty string or None, got {key!r}")
    device = _check_device(device)
    meta = make_metadata(
        arch=arch,
        num_classes=num_classes,
        input_size=input_size,
        mean=mean,
        std=std,
        arch_kwargs=arch_kwargs,
        classes=classes,
        defense=defense,
        hardening=hardening,
        extra=extra,
    )
    name = str(path)
    if is_pickle_file(path):
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"checkpoint {name!r} is a pickled PyTorch file; unpickling can run code, so pass allow_pickle=True "
                "(read with torch.load(weights_only=True)) only if you trust it"
            )
        tensors, found = load_pickled_state_dict(path, key=key)
    else:
        if key is not None:
            raise ConfigError(f"key={key!r} applies to pickled files only; {name!r} is not pickled")
        read_safetensors_header(path)  # clear errors for truncated / garbage files first
        tensors, found = _read_tensors(path), None
    meta["extra"] = {**(meta["extra"] or {}), "imported_from": Path(name).name, "state_dict_key": found}
    return restore_checkpoint(tensors, meta, device=device, path=Path(path))


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
