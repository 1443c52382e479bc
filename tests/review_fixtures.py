"""A small synthetic verify run for the ``midefend review`` tests, built without running an attack.

``make_run(root)`` writes, in well under a second:

- ``root/data``: 5 classes x 5 grey 20x20 PNGs (the "private" data), and a tiny target
  checkpoint ``root/target.safetensors`` that records it (as ``train_target`` would);
- ``root/run/attacks/ppa``: 2 reconstructions per class through the attack engine's own
  result store (``attack.json`` + ``class_<c>.safetensors``);
- ``root/run/report.json``: a verify report whose ``ppa`` row carries
  ``identity.per_image`` verdicts of two judges: ``"evaluation model"`` always right,
  ``"facenet"`` right on even reconstructions only (the odd ones get the next class).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from midefend.attacks.base import _ResultStore
from midefend.evaluation.reports import REPORT_FORMAT, REPORT_VERSION
from tests.reliability_fixtures import TARGET_ARCH, TARGET_KW, make_checkpoint, make_image_folder

CLASSES, PER_CLASS = 5, 2
LABELS = [c for c in range(CLASSES) for _ in range(PER_CLASS)]  # flat, class-major
EVAL_PRED = list(LABELS)
FACENET_PRED = [c if i % 2 == 0 else (c + 1) % CLASSES for i, c in enumerate(LABELS)]


def _metrics() -> dict:
    return {"accuracy": 0.9, "attack_acc_top1": 0.5, "attack_acc_top1_std": 0.1, "attack_acc_top5": 0.9, "attack_acc_top5_std": 0.1,
            "knn_distance": 1.0, "fid": None, "target_acc_top1": 1.0, "per_class": [0.5] * CLASSES, "not_computed": {"fid": "too few images"}}


def make_run(root: Path, *, per_image: bool = True) -> Path:
    """The synthetic run folder (see the module docstring); returns ``root/run``."""
    data = make_image_folder(root / "data", classes=CLASSES, per_class=5)
    target = make_checkpoint(root / "target.safetensors", data, arch=TARGET_ARCH, arch_kwargs=TARGET_KW, num_classes=CLASSES)
    run = root / "run"
    store = _ResultStore(run / "attacks" / "ppa", {"attack": "ppa", "classes": list(range(CLASSES)), "config": {"seed": 0}})
    store.open(resume=False)
    gen = torch.Generator().manual_seed(0)
    for c in range(CLASSES):
        images = (torch.rand(PER_CLASS, 1, 16, 16, generator=gen) * 0.3 + 0.15 * c).clamp(0, 1)
        store.save_class(c, images, torch.full((PER_CLASS,), 0.9))
    row = {"name": "ppa", "attack": "ppa", "adaptive": False, "threat_model": "white-box", "metrics": _metrics(), "seconds": 1.0}
    if per_image:
        row["metrics"]["identity"] = {"per_image": {"labels": LABELS, "eval": EVAL_PRED, "facenet": FACENET_PRED}}  # as verify writes it
    report = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "target": {"name": "target", "path": str(target), "arch": TARGET_ARCH},
        "eval_model": {"path": "eval.safetensors"}, "data": {"spec": str(data)}, "strongest_attack": "ppa", "attack": {"attack": "ppa"},
        "metrics": _metrics(), "attacks": [row], "verdict": "synthetic", "notes": [],
    }  # fmt: skip
    (run / "report.json").write_text(json.dumps(report, indent=1))
    return run
