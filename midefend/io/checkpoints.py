"""Checkpoints that rebuild themselves: safetensors weights + JSON metadata.

A midefend checkpoint is one ``.safetensors`` file: the model's ``state_dict``
plus, in the safetensors string metadata, a JSON object naming the
architecture, its constructor arguments, the class count, input size,
normalisation, defense and hardening configuration (the schema is in
:mod:`midefend.io.schema`). :func:`load_checkpoint` therefore needs nothing but
the path: it rebuilds the architecture with
:func:`midefend.architectures.build_model`, re-applies the head surgery recorded
by :func:`midefend.harden`, and loads the weights strictly.

Nothing here ever unpickles: safetensors stores raw tensor bytes and a JSON
header. Pickled ``torch.save`` files are recognised by their first bytes and
refused (see :func:`midefend.io.legacy.import_research_checkpoint` for the
explicit, ``weights_only`` import of research checkpoints).

>>> import tempfile, pathlib, torch
>>> from midefend.architectures import build_model
>>> model = build_model("timm/test_resnet", num_classes=4, in_chans=1)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
>>> _ = save_checkpoint(model, path, arch="timm/test_resnet", arch_kwargs={"in_chans": 1},
...                     num_classes=4, input_size=(1, 32, 32), mean=(0.5,), std=(0.5,))
>>> ckpt = load_checkpoint(path)
>>> ckpt.arch, ckpt.num_classes, ckpt.input_size, ckpt.model.training
('timm/test_resnet', 4, (1, 32, 32), False)
>>> from midefend.io import read_checkpoint_header
>>> read_checkpoint_header(path)["num_classes"]
4
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._validate import check_bool, check_device
from ..errors import CheckpointError, ConfigError, MidefendError
from ..models.wrappers import unwrap_model
from .atomic import atomic_write
from .header import read_safetensors_header
from .pickled import is_pickle_file, load_pickled_state_dict
from .schema import decode_metadata, encode_metadata, make_metadata

__all__ = [
    "Checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "strip_state_dict_prefixes",
]

# Wrappers that prefix every state_dict key: torch.compile and (Distributed)DataParallel.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (on ``device``, in eval mode) and its metadata.

    ``mean`` / ``std`` describe the input the model expects: ``(x - mean) / std``
    per channel with ``x`` in ``[0, 1]`` and shape ``(B, *input_size)``;
    :meth:`normalize` applies it.
    """

    model: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    defense: dict[str, Any] | None = None
    hardening: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    path: Path | None = None
    classes: list[str] | None = None
    preprocess: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel for ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]``."""
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    arch: str,
    num_classes: int,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    arch_kwargs: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    preprocess: Mapping[str, Any] | None = None,
    defense: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and everything needed to rebuild it to ``path`` (atomically).

    Args:
        model: the model; ``torch.compile`` and (Distributed)DataParallel wrappers
            are unwrapped, so the file never holds ``_orig_mod.`` / ``module.`` keys.
        path: the ``.safetensors`` file to write; its folder must exist. An existing
            file is replaced only once the new one is completely written.
        arch: a :func:`~midefend.architectures.build_model` name, e.g. ``"timm/resnet18"``.
        num_classes: the number of logits.
        input_size: ``(C, H, W)`` the model expects.
        mean, std: per-channel normalisation the model expects on inputs in ``[0, 1]``.
        arch_kwargs: further constructor arguments (JSON values), e.g. ``{"in_chans": 1}``.
        classes: the class names, index = label (e.g. torchvision ``ImageFolder``'s
            ``dataset.classes``). ``midefend verify`` matches the data's class
            folders to the model by these names; without them it has to assume
            torchvision's ``ImageFolder`` order (folder names sorted as strings).
        preprocess: how a raw image becomes the model's input, e.g.
            ``{"box": [6, 18, 86, 98]}`` (crop box, then resize) or
            ``{"crop": "none"}`` (resize the whole frame, as ``Resize((h, w))``);
            default: the centred square for square inputs. ``verify`` applies it.
        defense: how the model was trained (JSON object), e.g. ``{"name": "calor", "rank": 16}``.
        extra: anything else worth keeping (JSON object): data set, split, accuracy ...

    The hardening configuration is read from ``model.midefend_hardening`` (set by
    :func:`midefend.harden`). Before writing, the metadata is checked by
    rebuilding the architecture (on the ``meta`` device, no memory) and comparing
    every key and shape with ``model.state_dict()``: a wrong ``arch``,
    ``num_classes`` or ``in_chans`` fails here, not when someone loads the file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: an argument is invalid or does not describe ``model``.
        CheckpointError: a weight is NaN or infinite.
        OSError: the file cannot be written (missing or read-only folder, disk full).
    """
    model = unwrap_model(model)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    meta = make_metadata(
        arch=arch,
        num_classes=num_classes,
        input_size=input_size,
        mean=mean,
        std=std,
        arch_kwargs=arch_kwargs,
        classes=classes,
        preprocess=preprocess,
        defense=defense,
        hardening=getattr(model, "midefend_hardening", None),
        extra=extra,
    )
    _check_hardening_recorded(model, meta["hardening"])
    tensors = _tensors_for_saving(model)
    _check_finite(tensors, f"model to save to {str(path)!r}")
    reference = _rebuild(meta, device="meta", error=ConfigError, source=None)
    problem = _state_dict_mismatch(tensors, reference.state_dict(), have="model", want="architecture")
    if problem:
        raise ConfigError(
            f"arch={meta['arch']!r} with num_classes={meta['num_classes']}, arch_kwargs={meta['arch_kwargs']} "
            f"does not describe this model: {problem}"
        )
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=encode_metadata(meta))
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", allow_pickle: bool = False
) -> Checkpoint:
    """Rebuild the model saved by :func:`save_checkpoint` from ``path`` alone.

    Reads and validates the header first (no tensor data), rebuilds the
    architecture and its hardened head(s), then loads the weights strictly: a
    missing, unexpected or mis-shaped key is an error that lists a few of them.
    Floating-point weights keep the dtype they were saved in. The model is
    returned on ``device`` in eval mode.

    ``allow_pickle`` exists so that a pickled file gets an explicit answer:
    without it a ``torch.save`` file is refused before anything is unpickled
    (:class:`~midefend.errors.UnsafeCheckpointError`); with it the file is read
    with ``torch.load(weights_only=True)`` (which refuses arbitrary objects), but
    since such a file holds no architecture, the error then points to
    :func:`midefend.io.legacy.import_research_checkpoint`, which takes ``arch=``,
    ``num_classes=`` ... explicitly.

    Raises:
        CheckpointError: missing, truncated, corrupt or wrong-schema file; unknown
            architecture; weights that do not fit it; NaN or infinite weights.
        UnsafeCheckpointError: a pickled file (and, under ``allow_pickle=True``,
            one that ``weights_only`` refuses).
        ConfigError: ``device`` is invalid or not available.
    """
    device = _check_device(device)
    check_bool("allow_pickle", allow_pickle)
    name = str(path)
    if allow_pickle and is_pickle_file(path):
        load_pickled_state_dict(path)  # refuses malicious pickles (weights_only) before the hint below
        raise CheckpointError(
            f"checkpoint {name!r} is a pickled state dict without architecture metadata; rebuild it with "
            "midefend.io.import_research_checkpoint(path, arch=..., num_classes=..., input_size=..., mean=..., std=..., "
            "allow_pickle=True)"
        )
    header = read_safetensors_header(path)
    meta = decode_metadata(header.metadata, name=name)
    _check_header_fits(header.tensors, meta, name)
    tensors = _read_tensors(path)
    return restore_checkpoint(tensors, meta, device=device, path=Path(path))


def _check_header_fits(tensors: Mapping[str, Any], meta: dict[str, Any], name: str) -> None:
    """Compare the header's tensor names and shapes with the architecture built on the ``meta`` device.

    Nothing is allocated and no tensor data is read, so a crafted header that claims
    a huge architecture (``num_classes`` of 10**9 over a file of a few kilobytes)
    is refused before the real build could exhaust memory.
    """
    expected = _rebuild(meta, device="meta", error=CheckpointError, source=name).state_dict()
    problem = _state_dict_mismatch(_match_prefixes(dict(tensors), expected), expected)
    if problem:
        raise CheckpointError(f"checkpoint {name!r} does not fit {meta['arch']} with {meta['num_classes']} classes: {problem}")


def restore_checkpoint(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], *, device: torch.device, path: Path
) -> Checkpoint:
    """Build the model ``meta`` describes and load ``tensors`` into it strictly (shared by the importers)."""
    name = str(path)
    _check_finite(tensors, f"checkpoint {name!r}")
    model = _rebuild(meta, device="cpu", error=CheckpointError, source=name)
    expected = model.state_dict()
    tensors = _match_prefixes(tensors, expected)
    problem = _state_dict_mismatch(tensors, expected)
    if problem:
        raise CheckpointError(f"checkpoint {name!r} does not fit {meta['arch']} with {meta['num_classes']} classes: {problem}")
    float_dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(float_dtypes) == 1:
        # Keep half / bfloat16 models in their dtype, so their logits are reproduced exactly.
        model = model.to(dtype=float_dtypes.pop())
    model.load_state_dict(tensors, strict=True)
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ConfigError(f"device {str(device)!r} is not available: {str(exc).splitlines()[0]}") from None
    model.eval()
    return Checkpoint(
        model=model,
        arch=meta["arch"],
        arch_kwargs=meta["arch_kwargs"],
        num_classes=meta["num_classes"],
        input_size=tuple(meta["input_size"]),  # type: ignore[arg-type]
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        defense=meta["defense"],
        hardening=meta["hardening"],
        extra=meta["extra"],
        path=path,
        metadata=meta,
        classes=meta.get("classes") or _classes_in_extra(meta),
        preprocess=meta.get("preprocess"),
    )


def strip_state_dict_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove ``_orig_mod.`` (torch.compile) and ``module.`` (DataParallel) prefixes shared by every key.

    A prefix is removed only when *every* key carries it, repeatedly, so nested
    wrappers (``module._orig_mod.``) are undone in any order.

    >>> strip_state_dict_prefixes({"module._orig_mod.fc.weight": 1, "module._orig_mod.fc.bias": 2})
    {'fc.weight': 1, 'fc.bias': 2}
    """
    out = dict(state_dict)
    changed = True
    while changed and out:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in out):
                out = {key[len(prefix) :]: value for key, value in out.items()}
                changed = True
    return out


# --------------------------------------------------------------------------- internals


_check_device = check_device  # the old private name (midefend.io.legacy and older callers)


def _check_hardening_recorded(model: nn.Module, hardening: dict[str, Any] | None) -> None:
    # A LowRankTanhHead put in by hand cannot be rebuilt: the file would not say where it goes.
    from ..defenses.surgery import hardened_heads

    heads = hardened_heads(model)
    if heads and not hardening:
        raise ConfigError(
            f"model has LowRankTanhHead(s) at {', '.join(heads)} but no model.midefend_hardening record, so the "
            "checkpoint could not rebuild it; create the heads with midefend.harden()"
        )


def _tensors_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied weights), so a second
    # name for the same storage gets its own copy; everything goes to the CPU.
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        ident = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
        if value.numel() and ident in seen:
            value = value.clone()
        seen.add(ident)
        tensors[key] = value
    return tensors


def _classes_in_extra(meta: dict[str, Any]) -> list[str] | None:
    # Files written by midefend's train_target before the ``classes`` field keep the names in extra["data"].
    data = (meta.get("extra") or {}).get("data")
    names = data.get("classes") if isinstance(data, dict) else None
    if isinstance(names, list) and len(names) == meta["num_classes"] and all(isinstance(n, str) and n for n in names):
        return names if len(set(names)) == len(names) else None
    return None


def _check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    bad = [key for key, value in tensors.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(f"{what} has NaN or infinite values in {len(bad)} tensor(s): {shown}")


def _rebuild(meta: dict[str, Any], *, device: str, error: type[MidefendError], source: str | None) -> nn.Module:
    """Build the architecture (and hardened heads) ``meta`` describes; any failure becomes ``error``."""
    from ..architectures import build_model

    where = "" if source is None else f"checkpoint {source!r}: "
    try:
        with _on_device(device):
            model = build_model(meta["arch"], num_classes=meta["num_classes"], **meta["arch_kwargs"])
    except MidefendError as exc:
        raise error(f"{where}cannot build architecture {meta['arch']!r}: {exc}") from None
    except Exception as exc:  # third-party constructors raise anything on bad kwargs
        if device == "meta":
            # Some constructors compute on their tensors (e.g. .item()), which the
            # meta device cannot; fall back to a real (CPU) build.
            return _rebuild(meta, device="cpu", error=error, source=source)
        raise error(
            f"{where}cannot build architecture {meta['arch']!r} with arch_kwargs={meta['arch_kwargs']}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if meta.get("hardening"):
        _apply_hardening(model, meta["hardening"], error=error, where=where)
    return model


@contextlib.contextmanager
def _on_device(device: str):
    if device == "meta":
        with torch.device("meta"):
            yield
    else:
        yield


def _apply_hardening(model: nn.Module, hardening: dict[str, Any], *, error: type[MidefendError], where: str) -> None:
    """Re-create the low-rank heads that ``harden()`` recorded (random init; weights come next)."""
    from ..defenses.surgery import HARDENING_ATTR, harden

    try:
        heads = hardening["heads"]
        with warnings.catch_warnings():
            # harden() already warned about a full-rank head when the model was hardened.
            warnings.simplefilter("ignore", UserWarning)
            harden(
                model,
                rank=hardening["rank"],
                activation=hardening["activation"],
                norm=hardening["norm"],
                head=[h["path"] for h in heads],
                init="random",
            )
    except MidefendError as exc:
        raise error(f"{where}cannot re-create the hardened head(s): {exc}") from None
    except (KeyError, TypeError) as exc:
        raise error(f"{where}hardening metadata is malformed ({type(exc).__name__}: {exc})") from None
    # harden() just recorded init="random"; keep the record of how the saved model was made.
    setattr(model, HARDENING_ATTR, hardening)


def _match_prefixes(tensors: dict[str, torch.Tensor], expected: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    # Strip wrapper prefixes only when the keys do not already fit: a model may
    # legitimately own a submodule called "module".
    if set(tensors) == set(expected):
        return tensors
    return strip_state_dict_prefixes(tensors)


def _state_dict_mismatch(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, have: str = "file", want: str = "model"
) -> str:
    """A one-line description of missing / unexpected / mis-shaped keys ('' when they match).

    ``have`` names where ``tensors`` come from, ``want`` what they must fit.
    """
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    shapes = [
        f"{key} {tuple(tensors[key].shape)} in {have} vs {tuple(expected[key].shape)} in {want}"
        for key in expected
        if key in tensors and tuple(tensors[key].shape) != tuple(expected[key].shape)
    ]
    parts = []
    labels = (f"keys missing from the {have}", f"keys unexpected by the {want}", "shape mismatches")
    for label, items in zip(labels, (missing, unexpected, shapes)):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            parts.append(f"{len(items)} {label} ({shown})")
    return "; ".join(parts)


def _read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {str(exc).splitlines()[0]}") from None
