"""How long the default ``midefend verify`` takes on ORL targets, as a user runs it: one command per target.

Runs ``midefend verify TARGET --eval-model EVAL --eval-model facenet -q`` in a fresh process per target (the
import and start-up included), each with an empty PLG cache (so PLG's conditional GAN is trained, as on a
user's first run; FaceNet's one-time conversion is reused from the normal cache), and measures the wall time
against the 15-minute goal of the 2-core machine. The per-attack times come from each ``report.json``.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/verify_time.py \\
        --targets /work/targets/orl-midre-0.8.safetensors /work/targets/orl-midre+calor.safetensors \\
        --eval /work/targets/orl-eval.safetensors

Writes ``results/verify_time.json`` and the section between the ``verify-time`` markers of ``RESULTS.md``
(command, machine, threads, load average before and after each target).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from markdown_section import replace_section  # noqa: E402
from ppa_variants import load_average  # noqa: E402

START, END = "<!-- verify-time:start -->", "<!-- verify-time:end -->"
GOAL_MINUTES = 15.0


def fresh_cache() -> Path:
    """A new cache folder holding only FaceNet's converted weights (linked), so PLG starts cold."""
    from midefend.io.cache import cache_dir

    folder = Path(tempfile.mkdtemp(prefix="midefend-cache-"))
    for weights in cache_dir().glob("facenet-*.safetensors"):
        (folder / weights.name).symlink_to(weights)
    return folder


def time_one(target: Path, eval_model: Path, out: Path, threads: int | None) -> dict[str, Any]:
    """One ``midefend verify`` in its own process; wall time, load, and the report's per-attack seconds."""
    cache = fresh_cache()
    env = os.environ | {"MIDEFEND_CACHE": str(cache)}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "midefend", "verify", str(target), "--eval-model", str(eval_model), "--eval-model", "facenet"]
    cmd += ["--out", str(out), "-q"]
    load_before, start = load_average(), time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"verify of {target} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    report = json.loads((out / "report.json").read_text())
    attacks = {row["name"]: row["seconds"] for row in report["attacks"]}
    strongest = next(row for row in report["attacks"] if row["name"] == report["strongest_attack"])
    return {
        "target": target.stem,
        "wall_seconds": round(wall, 1),
        "report_seconds": report["timing"]["total_seconds"],
        "attack_seconds": attacks,
        "other_seconds": round(wall - sum(attacks.values()), 1),
        "strongest": report["strongest_attack"],
        "strongest_top1": strongest["metrics"]["attack_acc_top1"],
        "load_before": load_before,
        "load_after": load_average(),
    }


def markdown(summary: dict[str, Any]) -> list[str]:
    names = sorted({name for row in summary["rows"] for name in row["attack_seconds"]})
    lines = [
        START,
        "## How long the default `verify` takes (`benchmarks/verify_time.py`)",
        "",
        f"```bash\nMIDEFEND_ORL_DIR=../shared/data/orl_faces {summary['command']}\n```",
        "",
        f"{summary['machine']}; {summary['threads']}; {summary['date']}. One `midefend verify TARGET --eval-model "
        "orl-eval --eval-model facenet` per target in a fresh process (start-up included), all 40 classes, the default "
        "portfolio and adaptive variants, PLG's cache empty (its conditional GAN is trained, as on a first run; "
        "FaceNet's one-time conversion is reused). Other: start-up, PLG's GAN, the judges and the report.",
        "",
        f"| target | wall (min) | within {GOAL_MINUTES:.0f} min | " + " | ".join(f"{n} (s)" for n in names)
        + " | other (s) | strongest attack, AttAcc@1 | load before → after |",
        "|---|---|---|" + "---|" * len(names) + "---|---|---|",
    ]  # fmt: skip
    for r in summary["rows"]:
        cells = " | ".join(f"{r['attack_seconds'][n]:.0f}" if n in r["attack_seconds"] else "–" for n in names)
        ok = "yes" if r["wall_seconds"] <= GOAL_MINUTES * 60 else "**no**"
        lines.append(
            f"| {r['target']} | {r['wall_seconds'] / 60:.1f} | {ok} | {cells} | {r['other_seconds']:.0f} | "
            f"{r['strongest']}, {100 * r['strongest_top1']:.1f} % | {r['load_before']} → {r['load_after']} |"
        )
    return lines + ["", END]


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=Path, nargs="+", required=True)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each verify (default: torch's)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "out" / "verify_time")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    missing = [str(p) for p in [*args.targets, args.eval] if not p.is_file()]
    if missing:
        print(f"error: no such checkpoint: {missing[0]}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/verify_time.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": f"{args.threads} threads" if args.threads else f"{torch.get_num_threads()} threads (torch's default)",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rows": [],
    }
    for target in args.targets:
        row = time_one(target, args.eval, args.out_dir / target.stem, args.threads)
        summary["rows"].append(row)
        print(json.dumps(row), flush=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "verify_time.json").write_text(json.dumps(summary, indent=2) + "\n")
    replace_section(args.results_md, START, END, markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
