"""The midefend checkpoint metadata: what it holds, and its validation.

A midefend checkpoint is a safetensors file whose string metadata holds one key,
``"midefend"``, whose value is a JSON object (format version 1)::

    {
      "format_version": 1,
      "midefend_version": "0.1.0",              # informational
      "arch": "timm/resnet18",                  # a name for midefend.architectures.build_model
      "arch_kwargs": {"in_chans": 1},           # its constructor keyword arguments
      "num_classes": 40,
      "classes": ["s1", "s2", ...] | null,      # class names, index = label (how verify matches data by name)
      "input_size": [1, 64, 64],                # (C, H, W) the model expects
      "mean": [0.5], "std": [0.5],              # per channel: the model sees (x - mean) / std, x in [0, 1]
      "preprocess": {"box": [6, 18, 86, 98], "crop": "center", "resize": "bilinear"} | null,
                                                # how a raw image becomes the input: crop box (left, top,
                                                # right, bottom) or crop policy ("center" square, "none"),
                                                # then a bilinear resize to input_size
      "defense": {"name": "calor", ...} | null, # how it was trained (free-form JSON object)
      "hardening": {...} | null,                # model.midefend_hardening, written by harden()
      "extra": {...} | null                     # anything else (data, split, accuracy, ...)
    }

:func:`validate_metadata` checks a dict against that schema. The same checks
serve :func:`~midefend.io.checkpoints.save_checkpoint` (bad arguments, raised as
:class:`~midefend.errors.ConfigError` naming the argument) and loading (a file of
the wrong schema, raised as :class:`~midefend.errors.CheckpointError` naming the
file and field).

>>> meta = validate_metadata({"format_version": 1, "arch": "timm/resnet18", "arch_kwargs": {"in_chans": 1},
...     "num_classes": 40, "input_size": [1, 64, 64], "mean": [0.5], "std": [0.5]})
>>> meta["input_size"], meta["defense"]
([1, 64, 64], None)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .._version import __version__
from ..errors import CheckpointError, ConfigError, MidefendError

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "decode_metadata", "encode_metadata", "make_metadata", "validate_metadata"]

FORMAT_VERSION = 1
METADATA_KEY = "midefend"

_REQUIRED = ("format_version", "arch", "arch_kwargs", "num_classes", "input_size", "mean", "std")
_OPTIONAL_DICTS = ("defense", "hardening", "extra")
_FIELDS = frozenset(_REQUIRED + _OPTIONAL_DICTS + ("midefend_version", "classes", "preprocess"))
_CROP_POLICIES = ("center", "none")
_PREPROCESS_KEYS = frozenset(("box", "crop", "resize"))
# build_model() takes these itself; in arch_kwargs they would be passed twice.
_RESERVED_KWARGS = ("num_classes", "pretrained", "weights")


def validate_metadata(meta: Any, *, source: str | None = None) -> dict[str, Any]:
    """Check ``meta`` against the schema; return a normalised copy (lists, not tuples; ``None`` defaults).

    Args:
        meta: the metadata dict.
        source: the file it was read from. ``None`` (arguments of ``save_checkpoint``):
            raise :class:`ConfigError` naming the argument (``"input_size must be ..."``).
            A file name: raise :class:`CheckpointError` naming the file and field.
    """
    error: type[MidefendError] = ConfigError if source is None else CheckpointError
    top = "metadata " if source is None else f"checkpoint {source!r}: metadata "
    where = "" if source is None else f"{top}field "
    if not isinstance(meta, dict):
        raise error(f"{top}must be a JSON object, got {type(meta).__name__}")
    missing = [key for key in _REQUIRED if key not in meta]
    unknown = sorted(set(meta) - _FIELDS)
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown else [])
        raise error(f"{top}does not follow the midefend schema ({'; '.join(parts)})")
    version = meta["format_version"]
    if version != FORMAT_VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        hint = " (written by a newer midefend; upgrade midefend)" if newer else ""
        raise error(f"{where}format_version must be {FORMAT_VERSION}, got {version!r}{hint}")
    out: dict[str, Any] = {"format_version": FORMAT_VERSION}
    if "midefend_version" in meta:
        if not isinstance(meta["midefend_version"], str):
            raise error(f"{where}midefend_version must be a string, got {meta['midefend_version']!r}")
        out["midefend_version"] = meta["midefend_version"]
    out["arch"] = _check_arch(meta["arch"], error, where)
    out["arch_kwargs"] = _check_arch_kwargs(meta["arch_kwargs"], error, where)
    out["num_classes"] = _check_positive_int("num_classes", meta["num_classes"], error, where)
    out["classes"] = _check_classes(meta.get("classes"), out["num_classes"], error, where)
    out["input_size"] = _check_input_size(meta["input_size"], error, where)
    channels = out["input_size"][0]
    expected_channels = out["arch_kwargs"].get("in_chans", 3)
    if channels != expected_channels:
        raise error(
            f"{where}input_size has {channels} channel(s) but the architecture is built with in_chans={expected_channels!r} "
            "(set arch_kwargs={'in_chans': C} for non-RGB models)"
        )
    out["mean"] = _check_per_channel("mean", meta["mean"], channels, error, where, positive=False)
    out["std"] = _check_per_channel("std", meta["std"], channels, error, where, positive=True)
    for key in _OPTIONAL_DICTS:
        out[key] = _check_json_object(key, meta.get(key), error, where)
    out["preprocess"] = _check_preprocess(meta.get("preprocess"), error, where)
    return out


def make_metadata(
    *,
    arch: Any,
    num_classes: Any,
    input_size: Any,
    mean: Any,
    std: Any,
    arch_kwargs: Any = None,
    classes: Any = None,
    preprocess: Any = None,
    defense: Any = None,
    hardening: Any = None,
    extra: Any = None,
) -> dict[str, Any]:
    """Validated metadata from user arguments (tuples and mappings accepted); raises :class:`ConfigError`."""
    return validate_metadata(
        {
            "format_version": FORMAT_VERSION,
            "midefend_version": __version__,
            "arch": arch,
            "arch_kwargs": _plain(arch_kwargs),
            "num_classes": num_classes,
            "classes": _plain(classes),
            "preprocess": _plain(preprocess),
            "input_size": _plain(input_size),
            "mean": _plain(mean),
            "std": _plain(std),
            "defense": _plain(defense),
            "hardening": _plain(hardening),
            "extra": _plain(extra),
        }
    )


def _plain(value: Any) -> Any:
    # Accept any Mapping / tuple from callers; the checks below expect dict / list.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """The safetensors string metadata for a validated ``meta`` dict."""
    return {METADATA_KEY: json.dumps(meta, sort_keys=True, allow_nan=False), "format": "pt"}


def decode_metadata(metadata: dict[str, str] | None, *, name: str) -> dict[str, Any]:
    """Parse and validate the midefend metadata of the file ``name`` (raises CheckpointError)."""
    if not metadata or METADATA_KEY not in metadata:
        raise CheckpointError(
            f"checkpoint {name!r} has no midefend metadata (no {METADATA_KEY!r} key in its safetensors header); "
            "write it with save_checkpoint(), or rebuild a bare state dict with import_research_checkpoint(path, arch=...)"
        )
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {name!r}: its {METADATA_KEY!r} metadata is not valid JSON ({exc})") from None
    return validate_metadata(meta, source=name)


def _check_arch(arch: Any, error: type[MidefendError], where: str) -> str:
    if not isinstance(arch, str) or not arch.strip():
        raise error(f"{where}arch must be a non-empty string like 'timm/resnet18', got {arch!r}")
    return arch


def _check_arch_kwargs(kwargs: Any, error: type[MidefendError], where: str) -> dict[str, Any]:
    if kwargs is None:
        return {}
    kwargs = _check_json_object("arch_kwargs", kwargs, error, where)
    reserved = [key for key in _RESERVED_KWARGS if key in kwargs]
    if reserved:
        raise error(f"{where}arch_kwargs must not contain {', '.join(reserved)} (got {kwargs!r}); pass num_classes= itself")
    return kwargs


def _check_positive_int(field: str, value: Any, error: type[MidefendError], where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{where}{field} must be a positive integer, got {value!r}")
    return value


def _check_classes(classes: Any, num_classes: int, error: type[MidefendError], where: str) -> list[str] | None:
    if classes is None:
        return None
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) and c for c in classes):
        raise error(f"{where}classes must be a list of non-empty strings (the class names, index = label), got {classes!r:.80}")
    if len(classes) != num_classes:
        raise error(f"{where}classes names {len(classes)} classes but num_classes is {num_classes}")
    seen: set[str] = set()
    repeated = sorted({c for c in classes if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
    if repeated:
        raise error(f"{where}classes must be unique, got {', '.join(map(repr, repeated[:3]))} more than once")
    return [str(c) for c in classes]


def _check_preprocess(value: Any, error: type[MidefendError], where: str) -> dict[str, Any] | None:
    prep = _check_json_object("preprocess", value, error, where)
    if prep is None:
        return None
    unknown = sorted(set(prep) - _PREPROCESS_KEYS)
    if unknown:
        raise error(f"{where}preprocess has unknown key(s) {', '.join(unknown)} (known: box, crop, resize)")
    box = prep.get("box")
    if box is not None:
        ok = isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box)
        if not ok or box[0] >= box[2] or box[1] >= box[3]:
            raise error(f"{where}preprocess box must be [left, top, right, bottom] with left < right and top < bottom, got {box!r}")
    if prep.get("crop", "center") not in _CROP_POLICIES:
        raise error(f"{where}preprocess crop must be one of {', '.join(_CROP_POLICIES)}, got {prep['crop']!r}")
    if prep.get("resize", "bilinear") != "bilinear":
        raise error(f"{where}preprocess resize must be 'bilinear' (the only resize midefend applies), got {prep['resize']!r}")
    return prep


def _check_input_size(size: Any, error: type[MidefendError], where: str) -> list[int]:
    message = f"{where}input_size must be 3 positive integers (C, H, W), got {size!r}"
    if not isinstance(size, (list, tuple)) or len(size) != 3:
        raise error(message)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
        raise error(message)
    return [int(v) for v in size]


def _check_per_channel(
    field: str, values: Any, channels: int, error: type[MidefendError], where: str, *, positive: bool
) -> list[float]:
    kind = "positive finite numbers" if positive else "finite numbers"
    message = f"{where}{field} must be {channels} {kind} (one per input channel), got {values!r}"
    if not isinstance(values, (list, tuple)) or len(values) != channels:
        raise error(message)
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise error(message)
        if positive and value <= 0:
            raise error(message)
        out.append(float(value))
    return out


def _check_json_object(field: str, value: Any, error: type[MidefendError], where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise error(f"{where}{field} must be a JSON object (dict) or None, got {type(value).__name__}")
    try:
        # Round-trip: turns tuples into lists and rejects NaN, sets, tensors, non-string keys.
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise error(f"{where}{field} must be JSON-serialisable: {exc}") from None
