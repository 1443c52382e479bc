"""PPA variants on one ORL target, one row each: the shared loop of ``adaptive_ablation.py`` and ``attack_budget.py``.

Each variant is one ``verify --attack ppa --adaptive off`` run with extra attack options, on the same
classes and seed, judged by the same evaluation model, so the rows differ only in those options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch


HERE = Path(__file__).resolve().parent


def add_common_arguments(parser: argparse.ArgumentParser, *, name: str, classes: str) -> None:
    """``--target``, ``--eval``, ``--classes``, ``--threads`` and where the run and its results go."""
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--classes", default=classes)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=HERE / "out" / name)
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def header(script: str, target: Path, classes: str) -> dict[str, Any]:
    """The run's identity: command, machine, threads, start time and load, target and its recorded defense."""
    from midefend.io.checkpoints import load_checkpoint

    defense = load_checkpoint(target).defense
    return {
        "command": shlex.join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_start": load_average(),
        "target": target.stem,
        "defense": defense if isinstance(defense, dict) else {"name": defense},
        "classes": classes,
        "rows": [],
    }


def run_variant(
    label: str, options: dict[str, Any], *, target: Path, eval_model: Path, classes: str, out_dir: Path
) -> dict[str, Any]:
    """One PPA run with ``options`` on top of its defaults (resumable in ``out_dir/<target>/<label>``); its row."""
    from midefend.evaluation.verify import verify

    report = verify(
        target, eval_model=eval_model, prior="face-gan", attack="ppa", adaptive="off", classes=classes,
        out_dir=out_dir / target.stem / label, attack_options={"seed": 0, **options}, resume=True,
    )  # fmt: skip
    m, row = report["metrics"], report["attacks"][0]
    out = {
        "variant": label, "options": options, "attack_acc_top1": m["attack_acc_top1"], "attack_acc_top5": m["attack_acc_top5"],
        "target_acc_top1": m["target_acc_top1"], "knn_distance": m["knn_distance"], "seconds": row["seconds"],
        "reconstructions": m["num_reconstructions"], "load_after": load_average(),
    }  # fmt: skip
    print(label, json.dumps(out), flush=True)
    return out


def row_line(r: dict[str, Any]) -> str:
    """``| variant | options | AttAcc@1 | AttAcc@5 | target acc | KNN | time |`` for one row."""
    return (
        f"| {r['variant']} | `{json.dumps(r['options'])}` | {100 * r['attack_acc_top1']:.1f} | {100 * r['attack_acc_top5']:.1f} | "
        f"{100 * r['target_acc_top1']:.1f} | {r['knn_distance']:.1f} | {r['seconds']:.0f} |"
    )


TABLE_HEAD = [
    "| variant | options | AttAcc@1 | AttAcc@5 | target acc on recon. | KNN | time (s) |",
    "|---|---|---|---|---|---|---|",
]
