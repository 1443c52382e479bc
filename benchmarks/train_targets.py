"""Train the ORL and digits targets with every defense, and the evaluation models; check the bars.

The runs (one process, one after another: they are CPU-heavy)::

    orl-nodef        midefend/resnet_small, from scratch
    orl-midre-0.4    random erasing, a_h = 0.4
    orl-midre-0.8    random erasing, a_h = 0.8
    orl-calor        low-rank head (rank 16) on the NoDef backbone, head stage + CA fine-tune
    orl-midre+calor  the same on the MIDRE-0.4 backbone, erasing in the head stage
    orl-eval         midefend/vgg_small, strong augmentation (the independent evaluation model)
    digits-nodef     midefend/resnet_small on digits 0-4
    digits-eval      midefend/vgg_small on digits 0-4

Bars (issue 4): ORL NoDef >= 90%; every defended ORL model within 5 points of
NoDef; ORL evaluation model >= 90%; digits 0-4 >= 97%. The script prints a
Markdown table (test accuracy, mean training confidence p_y, wall time, and
CPU time of the process, which a busy shared machine inflates less),
writes ``results.json`` and the checkpoints to ``--out-dir``, and exits 1 if a
bar is missed.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/train_targets.py
    python benchmarks/train_targets.py --only orl-nodef,orl-calor --threads 2
    python benchmarks/train_targets.py --quick     # 2 epochs each: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from midefend.training.targets import DEFAULT_EVAL_ARCH, train_evaluation_model, train_target

RUNS = ["orl-nodef", "orl-midre-0.4", "orl-midre-0.8", "orl-calor", "orl-midre+calor", "orl-eval", "digits-nodef", "digits-eval"]


def plan(name: str, out: Path, quick: bool) -> tuple:
    """``(function, data, kwargs)`` for one named run."""
    epochs = {"epochs": 2, "calor_epochs": 1, "ca_epochs": 1} if quick else {}
    ckpt = {"out": out / f"{name}.safetensors"}
    if name == "orl-nodef":
        return train_target, "orl", {"defense": "nodef", **epochs, **ckpt}
    if name.startswith("orl-midre-") and "calor" not in name:
        return train_target, "orl", {"defense": "midre", "erase_max": float(name.rsplit("-", 1)[1]), **epochs, **ckpt}
    if name == "orl-calor":
        return train_target, "orl", {"defense": "calor", "rank": 16, "init": out / "orl-nodef.safetensors", **epochs, **ckpt}
    if name == "orl-midre+calor":
        init = out / "orl-midre-0.4.safetensors"
        return train_target, "orl", {"defense": "midre+calor", "rank": 16, "init": init, **epochs, **ckpt}
    if name == "orl-eval":
        return train_evaluation_model, "orl", {"seed": 1, **epochs, **ckpt}
    if name == "digits-nodef":
        return train_target, "digits", {"defense": "nodef", **epochs, **ckpt}
    if name == "digits-eval":
        return train_evaluation_model, "digits", {"seed": 1, **epochs, **ckpt}
    raise SystemExit(f"unknown run {name!r}; known: {', '.join(RUNS)}")


def check_bars(results: dict[str, dict]) -> list[str]:
    """The issue's must-show bars; returns the failures (empty when all hold)."""
    failures = []

    def acc(name: str) -> float | None:
        return results[name]["test_accuracy"] if name in results else None

    nodef = acc("orl-nodef")
    if nodef is not None and nodef < 0.90:
        failures.append(f"orl-nodef {nodef:.1%} < 90%")
    for name in ("orl-midre-0.4", "orl-midre-0.8", "orl-calor", "orl-midre+calor"):
        if nodef is not None and acc(name) is not None and acc(name) < nodef - 0.05:
            failures.append(f"{name} {acc(name):.1%} more than 5 points below NoDef {nodef:.1%}")
    if acc("orl-eval") is not None and acc("orl-eval") < 0.90:
        failures.append(f"orl-eval {acc('orl-eval'):.1%} < 90%")
    if acc("digits-nodef") is not None and acc("digits-nodef") < 0.97:
        failures.append(f"digits-nodef {acc('digits-nodef'):.1%} < 97%")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(RUNS), help="comma-separated run names")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/out/targets"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 epochs per run (smoke test, no bars)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results_path = args.out_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.only.split(","):
        function, data, kwargs = plan(name, args.out_dir, args.quick)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = function(data, progress=not args.no_progress, **kwargs)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        ca_rows = [row for row in result.history if row["stage"] == "ca"]
        before_ca = [row for row in result.history if row["stage"] != "ca"]
        results[name] = {
            "arch": kwargs.get("arch", DEFAULT_EVAL_ARCH if function is train_evaluation_model else "midefend/resnet_small"),
            "defense": result.defense,
            "epochs": len(result.history),
            "test_accuracy": result.test_accuracy,
            "train_confidence": result.train_confidence,
            "batch_confidence_before_ca": before_ca[-1]["confidence"] if ca_rows and before_ca else None,
            "batch_confidence_after_ca": ca_rows[-1]["confidence"] if ca_rows else None,
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1),  # CPU time of this process (all threads): robust to a busy machine
            "quick": args.quick,
            "threads": args.threads,
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
        }
        print(f"{name}: test {result.test_accuracy:.1%}, p_y {result.train_confidence:.3f}, {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
        results_path.write_text(json.dumps(results, indent=2))
    print()
    print("| run | arch | epochs | test accuracy | train p_y | wall time | CPU time |")
    print("|---|---|---|---|---|---|---|")
    for name in RUNS:
        if name in results:
            r = results[name]
            print(
                f"| {name} | {r['arch']} | {r['epochs']} | {r['test_accuracy']:.1%} | "
                f"{r['train_confidence']:.3f} | {r['wall_seconds'] / 60:.1f} min | {r['cpu_seconds'] / 60:.1f} min |"
            )
    if args.quick:
        return 0
    failures = check_bars(results)
    for failure in failures:
        print(f"BAR MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
