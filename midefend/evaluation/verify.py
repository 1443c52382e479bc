"""``verify``: attack a checkpoint, judge the reconstructions, write the reports — one call.

This is what ``midefend verify`` runs::

    target  = load_checkpoint(CKPT)            # the model to check
    eval    = load_checkpoint(EVAL)            # independent evaluation model
    train, test = load_dataset(data, ...)      # the target's private split
    result  = run_attack(attack, target, prior, classes=..., out_dir=OUT/attack)
    metrics = evaluate_attack(result, eval, train, target=target, test=test)
    write_report(OUT, ...)                     # report.json, report.md, grid.png

``data`` defaults to the data set recorded in the target checkpoint (``extra["data"]``,
written by :func:`midefend.training.train_target`), with the same split, so the
KNN distance and FID compare against exactly the images the target trained on.

>>> parse_classes("0-3,7", 10)
[0, 1, 2, 3, 7]
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .._version import __version__
from ..errors import ConfigError, DataError
from .classifier import Classifier
from .evaluators import build_evaluators, judge
from .reports import write_report


def parse_classes(spec: str | Sequence[int] | None, num_classes: int) -> list[int] | None:
    """``"all"``/``None`` -> ``None`` (all classes); ``"0-9"``, ``"1,4,7"``, ``"0-3,7"`` -> sorted indices."""
    if spec is None or spec == "all":
        return None
    if not isinstance(spec, str):
        return [int(c) for c in spec]
    out: set[int] = set()
    try:
        for part in spec.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first > last:
                raise ValueError
            out.update(range(first, last + 1))
    except ValueError:
        raise ConfigError(f"classes must be 'all', a range like '0-9' or a list like '1,4,7', got {spec!r}") from None
    bad = sorted(c for c in out if c >= num_classes)
    if bad:
        raise ConfigError(f"classes must be in 0..{num_classes - 1}, got {bad[0]} in {spec!r}")
    return sorted(out)


def _load(path: Any, device: str) -> Any:
    """A loaded checkpoint as is, or a path loaded with :func:`~midefend.io.checkpoints.load_checkpoint`."""
    from ..io.checkpoints import load_checkpoint

    if hasattr(path, "model") and hasattr(path, "input_size"):
        return path
    return load_checkpoint(path, device=device)


def _describe(ckpt: Any, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "path": str(ckpt.path) if getattr(ckpt, "path", None) else None,
        "arch": ckpt.arch,
        "defense": (ckpt.defense or {}).get("name") if isinstance(ckpt.defense, dict) else ckpt.defense,
        "defense_config": ckpt.defense,
        "num_classes": ckpt.num_classes,
        "input_size": list(ckpt.input_size),
        "test_accuracy_recorded": (ckpt.extra or {}).get("test_accuracy"),
    }


def load_private_data(ckpt: Any, data: str | Path | None = None, *, split_seed: int | None = None) -> tuple[Any, Any]:
    """The target's private ``(train, test)`` split, at its input size and channels."""
    from ..data.resolve import ORL_ENV, load_dataset

    recorded = (ckpt.extra or {}).get("data") or {}
    spec = data if data is not None else recorded.get("spec")
    if spec is None:
        raise ConfigError("the checkpoint does not record its data set: pass --data (orl, digits or a folder)")
    source = recorded.get("source")
    if data is None and spec == "orl" and not os.environ.get(ORL_ENV) and source and Path(source).is_dir():
        spec = source  # the ORL folder the target was trained from, when $MIDEFEND_ORL_DIR is unset
    split = recorded.get("split") or {}
    seed = split_seed if split_seed is not None else int(split.get("seed", 0))
    kwargs: dict[str, Any] = {"size": ckpt.input_size[1], "channels": ckpt.input_size[0], "seed": seed}
    if "train_per_class" in split and split["train_per_class"] is not None:
        kwargs["train_per_class"] = int(split["train_per_class"])
    if "test_fraction" in split and split["test_fraction"] is not None:
        kwargs["test_fraction"] = float(split["test_fraction"])
    train, test = load_dataset(spec, **kwargs)
    if train.num_classes != ckpt.num_classes:
        raise DataError(f"data {str(spec)!r} has {train.num_classes} classes but the target model has {ckpt.num_classes}")
    return train, test


def verify(
    checkpoint: Any,
    *,
    eval_model: Any = None,
    data: str | Path | None = None,
    prior: Any = "face-gan",
    attack: str = "ppa",
    classes: str | Sequence[int] | None = None,
    out_dir: str | Path = "runs/verify",
    resume: bool = False,
    device: str = "cpu",
    progress: bool = False,
    split_seed: int | None = None,
    attack_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Attack ``checkpoint`` and write ``report.json``, ``report.md`` and ``grid.png`` to ``out_dir``.

    Args:
        checkpoint: a midefend checkpoint path (or a loaded ``Checkpoint``).
        eval_model: the independent judge: a checkpoint, ``"facenet"``, or a list of both;
            default FaceNet on face data (see :mod:`~midefend.evaluation.evaluators`).
        data: ``"orl"``, ``"digits"`` or a folder; default: the target's recorded data.
        prior: ``"face-gan"``, a prior file from :func:`~midefend.attacks.train_prior`,
            or a :class:`~midefend.attacks.GenerativePrior` (ignored by ``miface``).
        attack: a registered attack name (:func:`~midefend.attacks.list_attacks`).
        classes: ``"all"``, ``"0-9"``, ``"1,4,7"`` or a list of indices.
        out_dir: output folder; the attack's per-class results go to ``out_dir/attack``.
        resume: reuse the per-class results of an interrupted run in ``out_dir``.
        attack_options: passed to the attack (``per_class``, ``steps``, ``loss``, ``seed`` ...).

    Returns:
        the report dict (as written to ``report.json``).
    """
    from ..attacks import get_attack, load_prior, run_attack
    from ..attacks.priors import GenerativePrior

    start = time.perf_counter()
    attack_cls = get_attack(attack)
    instance = attack_cls(**(attack_options or {}))
    target_ckpt = _load(checkpoint, device)
    target_name = Path(target_ckpt.path).stem if getattr(target_ckpt, "path", None) else "target"
    target = Classifier.from_checkpoint(target_ckpt, name=target_name)
    train, test = load_private_data(target_ckpt, data, split_seed=split_seed)
    judges = build_evaluators(eval_model, target_ckpt=target_ckpt, train=train, device=device, load=_load)
    class_list = parse_classes(classes, target_ckpt.num_classes)
    the_prior = None
    if attack_cls.uses_prior:
        the_prior = prior if isinstance(prior, GenerativePrior) else load_prior(prior, device=device)
    out = Path(out_dir)
    result = run_attack(instance, target, the_prior, classes=class_list, out_dir=out / "attack", resume=resume, device=device, progress=progress)
    metrics = judge(result, judges, train, target=target.to(device), test=test)
    firsts = torch.stack([train.images[(train.labels == c).nonzero()[0, 0]] for c in result.classes])
    report = {
        "midefend_version": __version__,
        "target": _describe(target_ckpt, target_name),
        "eval_model": _describe(judges.trained_ckpt, judges.trained.name) if judges.trained is not None else judges.describe_face(),
        "facenet": judges.describe_face() if judges.face is not None else None,
        "prior": the_prior.config() if the_prior is not None else None,
        "data": {"spec": str(data) if data is not None else (target_ckpt.extra or {}).get("data", {}).get("spec"), "n_train": len(train), "n_test": len(test)},
        "attack": result.config,
        "metrics": metrics,
        "timing": {"attack_seconds": round(result.seconds, 2), "total_seconds": round(time.perf_counter() - start, 2), "device": str(device)},
    }
    paths = write_report(out, report, private=firsts, reconstructions=result.images)
    report["files"] = {k: str(v) for k, v in paths.items()}
    return report


__all__ = ["load_private_data", "parse_classes", "verify"]
