"""The target's private data, as its owner split and prepared it, in the target's class order.

``verify`` measures the natural accuracy on held-out images and the KNN
distance / FID against the training images, so it needs exactly the owner's
split and preprocessing. In order of precedence:

1. ``train_data=`` and ``test_data=`` (``verify --train-data DIR --test-data DIR``):
   two class folders, used as given;
2. a split recorded in the checkpoint as file lists
   (``extra["data"]["split"] = {"train_files": [...], "test_files": [...]}``,
   paths ``class/file`` relative to the data folder);
3. the recorded (or ``data=``) spec with midefend's seeded per-class split
   (what :func:`midefend.training.train_target` records).

Images are prepared as the checkpoint's ``preprocess`` field says (``box``: a
crop box; ``crop``: ``"center"`` square or ``"none"``; resized bilinearly to
``input_size``); without it a square model gets the centred square and a
non-square one the whole frame. Finally labels are matched to the model by
class name (:mod:`midefend.evaluation.class_order`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data.datasets import ClassificationData
from ..errors import ConfigError, DataError
from .class_order import align_data, model_classes


def recorded_data(ckpt: Any) -> dict[str, Any]:
    """The checkpoint's data record (``extra["data"]``) when it is one; ``{}`` for none or free text."""
    data = (getattr(ckpt, "extra", None) or {}).get("data")
    return data if isinstance(data, dict) else {}


def preparation(ckpt: Any) -> dict[str, Any]:
    """How to prepare images for ``ckpt``: ``{"size": (H, W), "channels": C, "box": ..., "crop": ...}``."""
    channels, height, width = ckpt.input_size
    recorded = getattr(ckpt, "preprocess", None) or {}
    box = recorded.get("box")
    crop = recorded.get("crop") or ("center" if height == width else "none")
    return {"size": height if height == width else (height, width), "channels": channels, "box": tuple(box) if box else None, "crop": crop}


def _folder(path: str | os.PathLike[str], prep: dict[str, Any]) -> ClassificationData:
    from ..data.folders import load_image_folder

    return load_image_folder(path, size=prep["size"], channels=prep["channels"], box=prep["box"], crop=prep["crop"])


def _by_files(data: ClassificationData, files: list[str], part: str) -> ClassificationData:
    position = {name: i for i, name in enumerate(data.info["files"])}
    missing = [name for name in files if name not in position]
    if missing:
        raise DataError(
            f"the checkpoint's {part} split names {len(missing)} file(s) not found in {data.info['source']} "
            f"(first: {', '.join(missing[:3])})"
        )
    return data.subset([position[name] for name in files], part=part)


def _load_spec(spec: str | Path, ckpt: Any, recorded: dict[str, Any], split_seed: int | None) -> tuple[ClassificationData, ClassificationData]:
    from ..data.resolve import ORL_ENV, is_orl_layout, load_dataset

    source = recorded.get("source")
    if spec == "orl" and not os.environ.get(ORL_ENV) and source and Path(source).is_dir():
        spec = source  # the ORL folder the target was trained from, when $MIDEFEND_ORL_DIR is unset
    split = recorded.get("split") or {}
    prep = preparation(ckpt)
    if isinstance(split.get("train_files"), list) and isinstance(split.get("test_files"), list):
        full = _folder(spec, prep)
        return _by_files(full, split["train_files"], "train"), _by_files(full, split["test_files"], "test")
    seed = split_seed if split_seed is not None else int(split.get("seed", 0))
    rule: dict[str, Any] = {}
    if split.get("train_per_class") is not None:
        rule["train_per_class"] = int(split["train_per_class"])
    if split.get("test_fraction") is not None:
        rule["test_fraction"] = float(split["test_fraction"])
    custom = getattr(ckpt, "preprocess", None) or not isinstance(prep["size"], int)
    if custom and Path(spec).is_dir():
        # the owner's preparation, then midefend's split rule for this kind of folder
        full = _folder(spec, prep)
        if is_orl_layout(Path(spec)):
            return full.split(train_per_class=rule.get("train_per_class", 7), seed=seed)
        return full.split(test_fraction=rule.get("test_fraction", 0.2), seed=seed)
    return load_dataset(spec, size=prep["size"], channels=prep["channels"], seed=seed, **rule)


def load_private_data(
    ckpt: Any,
    data: str | Path | None = None,
    *,
    split_seed: int | None = None,
    train_data: str | Path | None = None,
    test_data: str | Path | None = None,
) -> tuple[ClassificationData, ClassificationData]:
    """The target's private ``(train, test)``, prepared for it and relabelled into its class order.

    ``train.info["class_order"]`` says where the class order came from and
    ``train.info["split_source"]`` which split was used (see the module docstring).
    """
    if (train_data is None) != (test_data is None):
        raise ConfigError("give both --train-data and --test-data (the training and the held-out class folders), or neither")
    if train_data is not None:
        if data is not None:
            raise ConfigError("give either --data or --train-data/--test-data, not both")
        prep = preparation(ckpt)
        train, test = _folder(train_data, prep), _folder(test_data, prep)
        spec, split_source = f"{train_data} (train) + {test_data} (test)", "the given training and test folders"
    else:
        recorded = recorded_data(ckpt)
        spec = data if data is not None else recorded.get("spec")
        if spec is None:
            text = (getattr(ckpt, "extra", None) or {}).get("data")
            hint = f" (its extra['data'] is {str(text)[:60]!r}, not a data record)" if text is not None else ""
            raise ConfigError(
                f"the checkpoint does not record its data set{hint}: pass --data (orl, digits or a folder) "
                "or --train-data DIR --test-data DIR"
            )
        train, test = _load_spec(spec, ckpt, recorded, split_seed)
        files = (recorded.get("split") or {}).get("test_files")
        split_source = "the split recorded in the checkpoint (file lists)" if isinstance(files, list) else "midefend's seeded per-class split"
    # Labels are matched to the model by class name, never by folder position.
    names, note = model_classes(ckpt, train.classes)
    train, test = align_data(train, test, names, spec=str(spec))
    train.info["class_order"] = note
    train.info["split_source"] = split_source
    return train, test


__all__ = ["load_private_data", "preparation", "recorded_data"]
