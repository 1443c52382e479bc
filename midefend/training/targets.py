"""One call from a data-set name to a trained (and saved) target or evaluation model.

:func:`train_target` is what ``midefend train`` and ``midefend demo`` run:
load the data (:func:`midefend.data.load_dataset`), build the architecture,
train with a defense recipe (:func:`~midefend.training.train_classifier`),
and write a checkpoint whose metadata records the data, the split, the
defense and the test accuracy.

Defaults per data set (all trained from scratch; each overridable):

=========  ========================  ======  =====  ==========  ======
data       architecture              epochs  lr     batch size  augment
=========  ========================  ======  =====  ==========  ======
``orl``    ``midefend/resnet_small``  60     1e-3   16          light
``digits`` ``midefend/resnet_small``  15     1e-3   64          digits
a folder   ``midefend/resnet_small``  60     1e-3   16          light
=========  ========================  ======  =====  ==========  ======

CALoR recipes need a trained backbone (see :mod:`midefend.training.stages`):
``init=`` a NoDef checkpoint of the same architecture (fast: the benchmarks
reuse their NoDef model), or, without it, the backbone is first trained for
``epochs`` with cross-entropy (plus erasing for ``midre+calor``); then the
SVD-warm-started low-rank head and the backbone are fine-tuned for
``calor_epochs`` (10) with cross-entropy at ``calor_lr`` (1e-4), and the CA
fine-tune runs ``ca_epochs`` (5, the CALoR authors' stage-2 length) at
``ca_lr`` (1e-4) on the low-rank head only (``ca_params="head"``; the
authors fine-tune everything, ``"all"``). On ORL, fine-tuning everything
either left the confidence where it was (lr 2e-5: p_y 0.997 -> 0.984) or
cost 5 points of test accuracy (1e-4: 100% -> 95.0%, p_y 0.90); the head alone
moved p_y from 0.997 to 0.92 toward exp(-1/8) = 0.88 at 97.5%
(benchmarks/RESULTS.md).

>>> result = train_target("digits", defense="nodef", epochs=1, out="nodef.safetensors")  # doctest: +SKIP
>>> result.test_accuracy  # doctest: +SKIP
0.97...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..architectures import build_model, fresh_kwargs
from ..data.datasets import ClassificationData
from ..data.resolve import load_dataset
from ..errors import ConfigError
from .loop import check_device, check_seed, TrainResult, train_classifier

#: The target architecture midefend trains by default (fast on CPUs at 32-64 px).
DEFAULT_TARGET_ARCH = "midefend/resnet_small"
#: The independent evaluation model: a different architecture (VGG-style, no skips).
DEFAULT_EVAL_ARCH = "midefend/vgg_small"

_RECIPES = {
    "orl": {"epochs": 60, "lr": 1e-3, "batch_size": 16, "augment": "light"},
    "digits": {"epochs": 15, "lr": 1e-3, "batch_size": 64, "augment": "digits"},
}


def recipe_for(data: str | os.PathLike[str]) -> dict[str, Any]:
    """The default ``epochs``, ``lr``, ``batch_size`` and ``augment`` for a data spec (table above).

    >>> recipe_for("digits")["augment"]
    'digits'
    """
    key = str(data)
    return dict(_RECIPES["digits" if key.startswith("digits") else "orl"])


def train_target(
    data: str | os.PathLike[str] | tuple[ClassificationData, ClassificationData],
    *,
    arch: str = DEFAULT_TARGET_ARCH,
    defense: str = "nodef",
    rank: int | None = None,
    erase_max: float = 0.4,
    epochs: int | None = None,
    calor_epochs: int = 10,
    calor_lr: float = 1e-4,
    ca_epochs: int = 5,
    ca_lr: float = 1e-4,
    ca_params: str = "head",
    lr: float | None = None,
    batch_size: int | None = None,
    augment: str | None = None,
    size: int | None = None,
    channels: int | None = None,
    split_seed: int = 0,
    seed: int = 0,
    init: str | os.PathLike[str] | None = None,
    arch_options: dict[str, Any] | None = None,
    device: str = "cpu",
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **train_kwargs: Any,
) -> TrainResult:
    """Train a model on ``data`` with ``defense`` and optionally save it to ``out``.

    Args:
        data: ``"orl"`` (from ``$MIDEFEND_ORL_DIR``), ``"digits"``, a folder
            (see :func:`midefend.data.load_dataset`), or a ``(train, test)`` pair.
        arch: a :func:`~midefend.architectures.build_model` name; built with
            ``in_chans`` = the data's channels.
        defense: ``"nodef"``, ``"midre"``, ``"calor"`` or ``"midre+calor"``.
        rank, erase_max: CALoR's head rank (default from the class count) and
            MIDRE's ``a_h`` (0.4 or 0.8).
        epochs, lr, batch_size, augment: default per data set (table above).
        calor_epochs, calor_lr, ca_epochs, ca_lr, ca_params: CALoR's head stage
            (cross-entropy fine-tune after the surgery) and CA fine-tune (of the
            head only, or ``"all"`` parameters).
        size, channels: image size and channels (default per data set: 64 grey
            for ORL, 32 grey for digits, 64 RGB for folders).
        split_seed: picks the train/test split; keep it fixed so targets and
            the evaluation model share the private training split.
        seed: model initialisation and training randomness.
        init: a checkpoint to start from (e.g. the NoDef model for CALoR).
        arch_options: extra builder arguments, recorded in the checkpoint
            (e.g. ``{"freeze": 0.5}`` for ``facenet``).
        out: write a ``.safetensors`` checkpoint here (atomically).
        train_kwargs: passed on to :func:`~midefend.training.train_classifier`.

    Returns:
        the :class:`~midefend.training.TrainResult`; ``result.extra["checkpoint"]``
        is the written path when ``out`` is given.
    """
    check_seed("seed", seed)
    check_seed("split_seed", split_seed)
    check_device(device)
    if isinstance(data, tuple):
        train, test = data
        spec = train.name
    else:
        spec = str(data)
        train, test = load_dataset(data, size=size, channels=channels, seed=split_seed)
    recipe = recipe_for(spec)
    epochs = recipe["epochs"] if epochs is None else epochs
    lr = recipe["lr"] if lr is None else lr
    batch_size = recipe["batch_size"] if batch_size is None else batch_size
    augment = recipe["augment"] if augment is None else augment
    arch_kwargs = {"in_chans": train.channels, **(arch_options or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, start = _initial_model(init, arch, arch_kwargs, train)
    if start is not None:  # keep the normalisation the initial model was trained with
        train_kwargs.setdefault("mean", start["mean"])
        train_kwargs.setdefault("std", start["std"])
    calor = "calor" in defense
    result = train_classifier(
        model,
        train,
        test,
        defense=defense,
        epochs=calor_epochs if calor else epochs,
        pretrain_epochs=epochs if calor and start is None else 0,
        calor_lr=calor_lr,
        ca_epochs=ca_epochs,
        ca_lr=ca_lr,
        ca_params=ca_params,
        lr=lr,
        batch_size=batch_size,
        augment=augment,
        rank=rank,
        erase_max=erase_max,
        seed=seed,
        device=device,
        progress=progress,
        **train_kwargs,
    )
    result.extra["data"] = describe_data(spec, train, test)
    if start is not None:
        result.extra["init"] = start
    if out is not None:
        result.extra["checkpoint"] = str(save_result(result, out, arch=arch, arch_kwargs=arch_kwargs, train=train))
    return result


def train_evaluation_model(
    data: str | os.PathLike[str] | tuple[ClassificationData, ClassificationData],
    *,
    arch: str = DEFAULT_EVAL_ARCH,
    augment: str | None = None,
    **kwargs: Any,
) -> TrainResult:
    """The independent evaluation model: a different architecture, no defense, strong augmentation.

    It judges attacks (does a reconstruction look like the private class?),
    so it must be accurate and must not share the target's architecture.
    ``augment`` defaults to ``"strong"`` (``"digits"`` for digit data, which
    must not be flipped). Other arguments as :func:`train_target`.
    """
    if augment is None:
        augment = "digits" if str(data).startswith("digits") else "strong"
    kwargs.setdefault("defense", "nodef")
    if kwargs["defense"] != "nodef":
        raise ConfigError(f"an evaluation model is trained without a defense, got defense={kwargs['defense']!r}")
    result = train_target(data, arch=arch, augment=augment, **kwargs)
    return result


def describe_data(spec: str, train: ClassificationData, test: ClassificationData | None) -> dict[str, Any]:
    """The data provenance a checkpoint records: spec, name, classes, split, sizes."""
    return {
        "spec": spec,
        "name": train.name,
        "source": train.info.get("source"),
        "classes": list(train.classes),
        "split": {k: v for k, v in train.info.get("split", {}).items() if k != "part"},
        "n_train": len(train),
        "n_test": len(test) if test is not None else 0,
        "crop_box": train.info.get("box"),
    }


def save_result(
    result: TrainResult,
    out: str | os.PathLike[str],
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    train: ClassificationData,
) -> Path:
    """Write ``result.model`` with its training record to ``out`` (see :func:`midefend.io.checkpoints.save_checkpoint`)."""
    from ..io.checkpoints import save_checkpoint

    extra = {
        "test_accuracy": result.test_accuracy,
        "train_accuracy": result.train_accuracy,
        "train_confidence": result.train_confidence,
        "train_seconds": round(result.seconds, 1),
        "training": result.config,
        **result.extra,
    }
    return save_checkpoint(
        result.model,
        out,
        arch=arch,
        arch_kwargs=arch_kwargs,
        num_classes=train.num_classes,
        input_size=(train.channels, train.size, train.size),
        mean=result.mean,
        std=result.std,
        defense=result.defense,
        extra=extra,
    )


def _initial_model(
    init: str | os.PathLike[str] | None, arch: str, arch_kwargs: dict[str, Any], train: ClassificationData
) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """A fresh model, or the one in checkpoint ``init`` (checked against ``arch`` and the data)."""
    if init is None:  # a fresh model starts from pre-trained weights where its architecture has them
        return build_model(arch, num_classes=train.num_classes, **arch_kwargs, **fresh_kwargs(arch)), None
    from ..io.checkpoints import load_checkpoint

    ckpt = load_checkpoint(init)
    expected = (train.channels, train.size, train.size)
    if ckpt.arch != arch or ckpt.num_classes != train.num_classes or tuple(ckpt.input_size) != expected:
        raise ConfigError(
            f"init checkpoint {init} holds {ckpt.arch} for {ckpt.num_classes} classes at {tuple(ckpt.input_size)}, "
            f"but this run trains {arch} for {train.num_classes} classes at {expected}"
        )
    ckpt.model.train()
    start = {
        "path": str(init),
        "defense": ckpt.defense,
        "test_accuracy": (ckpt.extra or {}).get("test_accuracy"),
        "mean": list(ckpt.mean),
        "std": list(ckpt.std),
    }
    return ckpt.model, start


__all__ = [
    "DEFAULT_EVAL_ARCH",
    "DEFAULT_TARGET_ARCH",
    "describe_data",
    "recipe_for",
    "save_result",
    "train_evaluation_model",
    "train_target",
]
