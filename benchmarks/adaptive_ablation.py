"""Which part of an adaptive attack helps or hurts: PPA with each adaptive option alone, on one ORL target.

`benchmarks/attacks.py` runs each adaptive variant with all its options at once (against CALoR: BPDA
through tanh *and* the CA-optimum loss). This script runs PPA plain, then with each option alone and with
all of them, on the same classes and seed, so a variant that scores below plain PPA can be traced to the
option responsible.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/adaptive_ablation.py \\
        --target /work/targets/orl-calor.safetensors --eval /work/targets/orl-eval.safetensors --classes 0-9

Writes ``results/adaptive_ablation.json`` and the section between the ``adaptive-ablation`` markers of
``RESULTS.md`` (command, machine, threads, load average).
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
sys.path.insert(0, str(HERE))

from markdown_section import replace_section  # noqa: E402

START, END = "<!-- adaptive-ablation:start -->", "<!-- adaptive-ablation:end -->"


def variants(defense: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``label -> options``: plain PPA, each adaptive option of the defense alone, then all of them."""
    from midefend.attacks.adaptive import adaptive_options

    full = adaptive_options(defense)  # what verify runs against this defense
    groups = {"eot": ("eot", "erase_scale", "erase_ratio"), "bpda": ("bpda",), "ca": ("ca_target",)}
    out: dict[str, dict[str, Any]] = {"ppa": {}}
    present = [name for name, keys in groups.items() if keys[0] in full]
    for name in present:
        out[f"ppa+{name}"] = {k: full[k] for k in groups[name] if k in full}
    if len(present) > 1:
        out["ppa+" + "+".join(present)] = full
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--classes", default="0-9")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=HERE / "out" / "adaptive_ablation")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from midefend.evaluation.verify import verify
    from midefend.io.checkpoints import load_checkpoint

    defense = load_checkpoint(args.target).defense
    defense = defense if isinstance(defense, dict) else {"name": defense}
    load = lambda: " / ".join(f"{v:.1f}" for v in os.getloadavg())  # noqa: E731
    summary: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/adaptive_ablation.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d %H:%M"), "load_start": load(), "target": args.target.stem, "defense": defense,
        "classes": args.classes, "rows": [],
    }  # fmt: skip
    for label, options in variants(defense).items():
        report = verify(
            args.target, eval_model=args.eval, prior="face-gan", attack="ppa", adaptive="off", classes=args.classes,
            out_dir=args.out_dir / args.target.stem / label, attack_options={"seed": 0, **options}, resume=True,
        )  # fmt: skip
        m, row = report["metrics"], report["attacks"][0]
        summary["rows"].append({"variant": label, "options": options, "attack_acc_top1": m["attack_acc_top1"], "attack_acc_top5": m["attack_acc_top5"],
                                "target_acc_top1": m["target_acc_top1"], "knn_distance": m["knn_distance"], "seconds": row["seconds"],
                                "reconstructions": m["num_reconstructions"]})  # fmt: skip
        print(label, json.dumps(summary["rows"][-1]), flush=True)
    summary["load_end"] = load()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "adaptive_ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    n = len(summary["rows"])
    lines = [
        START, "## Adaptive attacks, one option at a time (`benchmarks/adaptive_ablation.py`)", "",
        f"```bash\nMIDEFEND_ORL_DIR=../shared/data/orl_faces {summary['command']}\n```", "",
        f"{summary['machine']}; {summary['date']}; load average {summary['load_start']} at the start, {summary['load_end']} at the end. "
        f"Target `{summary['target']}` (defense {defense.get('name')}), classes {args.classes}, PPA with its published defaults, seed 0, "
        f"judged by `{args.eval.stem}`; {n} variants on the same classes and seed. One reconstruction is "
        f"{100 / summary['rows'][0]['reconstructions']:.1f} points.", "",
        "| variant | options | AttAcc@1 | AttAcc@5 | target acc on recon. | KNN | time (s) |", "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in summary["rows"]:
        lines.append(f"| {r['variant']} | `{json.dumps(r['options'])}` | {100 * r['attack_acc_top1']:.1f} | {100 * r['attack_acc_top5']:.1f} | "
                     f"{100 * r['target_acc_top1']:.1f} | {r['knn_distance']:.1f} | {r['seconds']:.0f} |")  # fmt: skip
    lines += ["", END]
    replace_section(args.results_md, START, END, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
