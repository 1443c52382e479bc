"""The new attacks (PLG-MI, NES black-box, BREP-MI label-only) beside PPA on ORL targets.

For each target checkpoint and attack, on ORL (40
identities, face-GAN prior, seed 0; the attack and metrics of ``midefend
verify``), judged by the independent evaluation model: attack accuracy @1/@5
(left "not evaluated" while the evaluation model does not exist yet; a later
``--resume`` reloads the reconstructions and adds them), the target's own accuracy on the
reconstructions, queries (black-box and label-only attacks), wall time (and,
for PLG, the conditional-GAN stage apart: trained on the first run, read from
the cache afterwards). The load average is recorded before and after each
run: the machine is shared, so wall times are only comparable within a run.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/more_attacks.py \\
        --targets-dir /work/targets --targets orl-nodef,orl-midre-0.8,orl-calor --budget fast

``--budget default`` runs every attack with its defaults; ``--budget fast``
with its documented ``"fast"`` preset. Each finished run is
kept in ``--out-dir/records/`` and reused by ``--resume``. The Markdown table
goes between the ``more-attacks`` markers of ``--results-md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from midefend.errors import MidefendError

START, END = "<!-- more-attacks:start -->", "<!-- more-attacks:end -->"

#: The attack preset of each budget: "default" — each attack's defaults; "fast" — each attack's "fast" preset.
BUDGETS: dict[str, str | None] = {"default": None, "fast": "fast"}


def attack_once(target_path: Path, attack: str, preset: str | None, out: Path, threads: int, classes: list[int] | None) -> tuple[Any, dict[str, Any]]:
    """Run (or, with the per-class results in ``out``, reload) one attack; the record of what it cost."""
    from midefend.attacks import load_face_prior, run_attack
    from midefend.evaluation import Classifier
    from midefend.io.checkpoints import load_checkpoint

    target = Classifier.from_checkpoint(load_checkpoint(target_path), name=target_path.stem)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = run_attack(attack, target, load_face_prior(), classes=classes, out_dir=out, resume=True, seed=0, preset=preset)
    images, labels = result.flat()
    record = {
        "target": target_path.stem, "attack": attack, "preset": preset, "classes": len(result.classes),
        "threat_model": result.config.get("threat_model", "white-box"),
        "target_acc": float((target.predict(images).argmax(1) == labels).float().mean()),
        "queries": result.config.get("queries"), "attack_seconds": round(result.seconds, 1), "gan": result.config.get("conditional_gan"),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), "threads": threads,
    }
    return result, record


def evaluate(result: Any, target_path: Path, evaluator_path: Path) -> dict[str, float]:
    """AttAcc@1/@5 of the independent evaluation model (``verify``'s metrics)."""
    from midefend.evaluation import Classifier
    from midefend.evaluation.evaluate import evaluate_attack
    from midefend.evaluation.verify import load_private_data
    from midefend.io.checkpoints import load_checkpoint

    ckpt = load_checkpoint(target_path)
    train, test = load_private_data(ckpt, "orl")
    evaluator = Classifier.from_checkpoint(load_checkpoint(evaluator_path))
    metrics = evaluate_attack(result, evaluator, train, target=Classifier.from_checkpoint(ckpt), test=test)
    return {"acc1": metrics["attack_acc_top1"], "acc5": metrics["attack_acc_top5"], "knn": metrics["knn_distance"]}


def markdown(records: list[dict[str, Any]], args: argparse.Namespace, missing: list[str] | None = None) -> list[str]:
    lines = [
        START,
        "## More attacks: PLG-MI, NES (black-box), BREP-MI (label-only) beside PPA (`benchmarks/more_attacks.py`)",
        "",
        f"Written by the script from one run: ORL, classes {args.classes} of 40, face-GAN prior, seed 0, evaluation model "
        f"`{Path(args.eval_model).stem}`; each attack's {'defaults' if BUDGETS[args.budget] is None else repr(BUDGETS[args.budget]) + ' preset'} "
        "(settings: `docs/attacks.md` and each attack's docstring). "
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC.",
        "",
        "AttAcc: the evaluation model's top-1/top-5 accuracy on the reconstructions (mean over classes); target acc: the "
        "attacked model's own top-1 accuracy on them (low = the optimisation failed, not privacy). Queries: images shown "
        "to the target through the oracle (black-box / label-only only). Time: the attack's wall time; PLG's includes its "
        "conditional-GAN stage (given apart: trained, or read from the cache). Load: the 1-minute load average before / "
        "after the run on the shared 2-core machine (wall times grow with it).",
        "",
        "| target | attack | threat model | classes | AttAcc@1 | AttAcc@5 | target acc | queries | time (min) | load |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        gan = r.get("gan")
        extra = f" (GAN stage {gan['seconds'] / 60:.1f}{', cached' if gan.get('cached') else ''})" if gan else ""
        minutes = (r["attack_seconds"] + (gan["seconds"] if gan else 0.0)) / 60
        acc = [f"{100 * r[k]:.1f}" if r.get(k) is not None else "not evaluated" for k in ("acc1", "acc5")]
        queries = f"{r['queries']:,}" if r.get("queries") is not None else "–"
        target_acc = f"{100 * r['target_acc']:.1f}" if r.get("target_acc") is not None else "–"
        lines.append(
            f"| {r['target']} | {r['attack']} | {r['threat_model']} | {r['classes']} | {acc[0]} | {acc[1]} | "
            f"{target_acc} | {queries} | {minutes:.1f}{extra} | {r['load_before']:.1f} / {r['load_after']:.1f} |"
        )
    if missing:
        lines += ["", f"Not run (no checkpoint in `{args.targets_dir}` when this ran, or it failed): {'; '.join(missing)}."]
    return lines + ["", END]


def write_section(path: Path, lines: list[str]) -> None:
    from midefend.io.atomic import atomic_write_text

    text = path.read_text() if path.is_file() else "# midefend benchmark results\n"
    section = "\n".join(lines)
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(path, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets-dir", type=Path, default=Path("benchmarks/out/targets"))
    parser.add_argument("--targets", default="orl-nodef,orl-midre-0.8,orl-calor")
    parser.add_argument("--eval-model", default=None, help="default: TARGETS_DIR/orl-eval.safetensors")
    parser.add_argument("--attacks", default="ppa,plg,nes,brep")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/out/more_attacks"))
    parser.add_argument("--results-md", type=Path, default=Path("benchmarks/RESULTS.md"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", default="all", help="'all' (the 40 identities) or a range such as 0-9 (a cheaper run)")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs of --out-dir/records")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from midefend.io.atomic import atomic_write_text

    os.environ.setdefault("MIDEFEND_CACHE", str(args.out_dir / "cache"))  # the PLG GAN, reused by --resume
    args.eval_model = args.eval_model or str(args.targets_dir / "orl-eval.safetensors")
    evaluator = Path(args.eval_model)
    from midefend.evaluation.verify import parse_classes

    classes = None if args.classes == "all" else parse_classes(args.classes, 40)
    records_dir = args.out_dir / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    missing: list[str] = []
    for target in args.targets.split(","):
        path = args.targets_dir / f"{target}.safetensors"
        if not path.is_file():
            print(f"skipping {target}: {path} does not exist", file=sys.stderr)
            missing.append(target)
            continue
        for attack in args.attacks.split(","):
            preset = BUDGETS[args.budget]
            record_path = records_dir / f"{target}-{attack}-{args.budget}-{args.classes}.json"
            record = json.loads(record_path.read_text()) if args.resume and record_path.is_file() else None
            if record is None or (record.get("acc1") is None and evaluator.is_file()):
                print(f"{target} / {attack} ...", flush=True)
                try:
                    result, fresh = attack_once(path, attack, preset, args.out_dir / f"{target}-{attack}-{args.budget}-{args.classes}", args.threads, classes)
                except MidefendError as exc:  # e.g. a checkpoint this version cannot read: say so in the table, go on
                    print(f"{target} / {attack}: {exc}", file=sys.stderr)
                    missing.append(f"{target} / {attack} ({exc})")
                    continue
                record = record or fresh  # a reloaded run keeps the time of the run that computed it
                if evaluator.is_file():
                    record.update(evaluate(result, path, evaluator))
                atomic_write_text(record_path, json.dumps(record, indent=1))
                print(json.dumps(record), flush=True)
            records.append(record)
            write_section(args.results_md, markdown(records, args, missing))
    write_section(args.results_md, markdown(records, args, missing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
