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
low-rank head is warm-started in tanh's saturating regime (SVD ``down`` with
pre-activation RMS 2, ``up`` refitted by least squares to the trained logits:
``head_init="svd-lstsq"``, ``linear_range=2``) and, with the backbone,
fine-tuned for ``calor_epochs`` (10) with cross-entropy at ``calor_lr``
(1e-3; docs/calor.md has the measurements behind this recipe), and the CA
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
from ..distributed import is_main_process
from ..data.datasets import ClassificationData
from ..data.resolve import load_dataset
from ..errors import ConfigError
from .loop import check_device, check_seed, TrainResult, train_classifier
from .recipes import get_defense
from .settings import TrainSettings

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
    settings: TrainSettings | None = None,
    epochs: int | None = None,
    calor_epochs: int = 10,
    calor_lr: float = 1e-3,
    lr: float | None = None,
    batch_size: int | None = None,
    augment: str | None = None,
    size: int | None = None,
    channels: int | None = None,
    split_seed: int = 0,
    init: str | os.PathLike[str] | None = None,
    arch_options: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    **train_kwargs: Any,
) -> TrainResult:
    """Train a model on ``data`` with a defense and optionally save it to ``out``.

    Args:
        data: ``"orl"`` (from ``$MIDEFEND_ORL_DIR``), ``"digits"``, a folder
            (see :func:`midefend.data.load_dataset`), or a ``(train, test)`` pair.
        arch: a :func:`~midefend.architectures.build_model` name; built with
            ``in_chans`` = the data's channels.
        settings: a :class:`~midefend.training.settings.TrainSettings`; the keyword
            arguments in ``train_kwargs`` override it. Its ``defense`` is any registered
            defense (:func:`~midefend.training.recipes.list_defenses`) and its knobs
            (``rank``, ``erase_max``, ``smoothing``, ``beta``, ``hsic_x``, ``hsic_y``,
            ``freeze``, ...) set the defense's strength.
        epochs, lr, batch_size, augment: default per data set (table above) unless
            given here or in ``settings``.
        calor_epochs, calor_lr: the fine-tune stage of the recipes that start from a
            trained model (CALoR's head stage after the surgery, TL's fine-tune of the
            unfrozen layers); ``ca_lr``, ``ca_epochs``, ``ca_params`` and ``ca_optimizer``
            (settings): CALoR's CA fine-tune (of the head only, or ``"all"`` parameters;
            ``ca_optimizer="authors"``: the authors' SGD stage, see
            :func:`~midefend.training.train_classifier`).
        size, channels: image size and channels (default per data set: 64 grey
            for ORL, 32 grey for digits, 64 RGB for folders).
        split_seed: picks the train/test split; keep it fixed so targets and
            the evaluation model share the private training split.
        init: a checkpoint to start from (e.g. the NoDef model for CALoR and TL).
        arch_options: extra builder arguments, recorded in the checkpoint
            (e.g. ``{"freeze": 0.5}`` for ``facenet``).
        out: write a ``.safetensors`` checkpoint here (atomically).
        train_kwargs: :class:`~midefend.training.settings.TrainSettings` fields
            (``defense``, ``seed``, ``device``, ``progress``, ...).

    Returns:
        the :class:`~midefend.training.TrainResult`; ``result.extra["checkpoint"]``
        is the written path when ``out`` is given.
    """
    s = TrainSettings.build(settings, **train_kwargs)
    recipe = get_defense(s.defense)
    check_seed("seed", s.seed)
    check_seed("split_seed", split_seed)
    check_device(s.device)
    if isinstance(data, tuple):
        train, test = data
        spec = train.name
    else:
        spec = str(data)
        train, test = load_dataset(data, size=size, channels=channels, seed=split_seed)
    per_data = recipe_for(spec) if settings is None else {k: getattr(s, k) for k in ("epochs", "lr", "batch_size", "augment")}
    epochs = per_data["epochs"] if epochs is None else epochs
    lr = per_data["lr"] if lr is None else lr
    batch_size = per_data["batch_size"] if batch_size is None else batch_size
    augment = per_data["augment"] if augment is None else augment
    arch_kwargs = {"in_chans": train.channels, **(arch_options or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        model, start = _initial_model(init, arch, arch_kwargs, train)
    if start is not None and s.mean is None and s.std is None:  # keep the normalisation the initial model was trained with
        s = s.replace(mean=start["mean"], std=start["std"])
    fine_tune = recipe.fine_tunes  # CALoR and TL: the main stage fine-tunes a trained model
    s = s.replace(
        epochs=calor_epochs if fine_tune else epochs,
        pretrain_epochs=epochs if fine_tune and start is None else 0,
        calor_lr=calor_lr, lr=lr, batch_size=batch_size, augment=augment,
    )  # fmt: skip
    result = train_classifier(model, train, test, s)
    result.extra["data"] = describe_data(spec, train, test)
    if start is not None:
        result.extra["init"] = start
    saved_arch, saved_kwargs = recipe.architecture(arch, arch_kwargs, s)  # MID: the bottleneck head's wrapper
    if out is not None and is_main_process():  # torchrun: rank 0 writes the one checkpoint
        result.extra["checkpoint"] = str(save_result(result, out, arch=saved_arch, arch_kwargs=saved_kwargs, train=train))
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
        classes=train.classes,
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
    if init is None:
        # a fresh model starts from pre-trained weights where its architecture has them
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
