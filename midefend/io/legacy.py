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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, UnsafeCheckpointError
from .._validate import check_bool, check_device
from .checkpoints import Checkpoint, _read_tensors, restore_checkpoint
from .header import read_safetensors_header
from .pickled import STATE_DICT_KEYS, is_pickle_file, load_pickled_state_dict
from .schema import make_metadata

__all__ = ["STATE_DICT_KEYS", "import_research_checkpoint", "is_pickle_file", "load_pickled_state_dict"]

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
    check_bool("allow_pickle", allow_pickle)
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigError(f"key must be a non-empty string or None, got {key!r}")
    device = check_device(device)
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
