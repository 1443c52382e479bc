"""Every attack and adaptive variant against the ORL targets: do the adaptive attacks move the defended numbers?

Runs ``verify``'s default portfolio (white-box threat model: every registered
attack the face-GAN prior allows, plus the adaptive variant the target's
recorded defense calls for — EOT over erasures against MIDRE, BPDA + the
CA-optimum loss against CALoR) on the ORL targets NoDef, MIDRE (a_h = 0.8),
CALoR and MIDRE+CALoR (seed 0), judged by the independent evaluation model.
Against a defended target the portfolio holds each attack with and without
its adaptation, so the table answers the question row by row.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/attacks.py --targets-dir /work/targets
    python benchmarks/attacks.py --classes 0-9 --steps 50          # a reduced run (say so when you quote it)

Writes ``results/attacks.json`` and the section between the ``attacks``
markers of ``RESULTS.md`` (load average and thread count included); the
checkpoints are copied to ``--out-dir`` first and read from there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from markdown_section import replace_section  # noqa: E402

START, END = "<!-- attacks:start -->", "<!-- attacks:end -->"
GAP_START, GAP_END = "<!-- identity-gap:start -->", "<!-- identity-gap:end -->"
TARGETS = {"NoDef": "orl-nodef", "MIDRE (a_h = 0.8)": "orl-midre-0.8", "CALoR": "orl-calor", "MIDRE+CALoR": "orl-midre+calor"}


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def run(args: argparse.Namespace, publish: Any) -> dict[str, Any]:
    """Verify each target in turn; ``publish(summary)`` after each, so an interrupted run keeps its finished targets."""
    from midefend.attacks import list_attacks
    from midefend.attacks import registry
    from midefend.evaluation.verify import verify

    list_attacks()  # registers the built-in attacks
    skipped = [name for name in args.skip.split(",") if name]
    for name in skipped:  # this run's portfolio leaves them out (the report says so)
        registry._ATTACKS.pop(name, None)
    models_dir = args.out_dir / "targets"
    models_dir.mkdir(parents=True, exist_ok=True)
    wanted = {label: stem for label, stem in TARGETS.items() if not args.only or stem in args.only.split(",")}
    for stem in [*wanted.values(), args.eval_name]:
        src = args.targets_dir / f"{stem}.safetensors"
        if not src.is_file():
            sys.exit(f"missing {src}: train the ORL targets first (benchmarks/train_targets.py)")
        shutil.copy2(src, models_dir / src.name)
    options: dict[str, Any] = {"seed": 0}
    for key in ("steps", "per_class"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    summary: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/attacks.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_start": _load(),
        "classes": args.classes,
        "options": options,
        "fast": args.fast,
        "eval_model": args.eval_name,
        "facenet": args.facenet,
        "skipped_by_benchmark": skipped,
        "adaptive": args.adaptive,
        "note": args.note,
        "targets": {},
    }
    from midefend.evaluation.recognisers import available_recognisers

    faces = available_recognisers() if args.facenet else []
    summary["judges"] = faces
    judges = [models_dir / f"{args.eval_name}.safetensors", *faces]
    for label, stem in wanted.items():
        start = time.perf_counter()
        report = verify(
            models_dir / f"{stem}.safetensors", eval_model=judges, prior="face-gan",
            classes=args.classes, out_dir=args.out_dir / stem, resume=args.resume, attack_options=options, fast=args.fast,
            adaptive=args.adaptive, log=lambda line, s=stem: print(f"{s}: {line}", flush=True),
        )
        wall = time.perf_counter() - start
        summary["targets"][label] = {
            "checkpoint": stem,
            "defense": report["target"]["defense_config"],
            "accuracy": report["metrics"]["accuracy"],
            "strongest_attack": report["strongest_attack"],
            "verify_seconds": round(wall, 1),
            "load_after": _load(),
            "rows": [
                {k: row[k] for k in ("name", "adaptive", "threat_model", "seconds", "queries")}
                | {k: row["metrics"].get(k) for k in ("attack_acc_top1", "attack_acc_top1_std", "attack_acc_top5", "target_acc_top1", "knn_distance")}
                | _facenet_columns(row["metrics"].get("facenet"))
                | _identity_columns(row["metrics"].get("identity"))
                for row in report["attacks"]
            ],
            "skipped": report["skipped_attacks"],
        }
        print(f"{stem}: verify {wall:.0f} s, strongest {report['strongest_attack']}, load {_load()}", flush=True)
        summary["load_end"] = _load()
        publish(summary)
    return summary


def _facenet_columns(judged: dict[str, Any] | None) -> dict[str, Any]:
    """FaceNet's verdict on one attack's reconstructions (the second, independent judge), or nothing."""
    if not judged:
        return {}
    return {"facenet_top1": judged["attack_acc_top1"], "facenet_top5": judged["attack_acc_top5"], "delta_face": judged["delta_face"], "agreement": judged["agreement"]}


def _identity_columns(identity: dict[str, Any] | None) -> dict[str, Any]:
    """The identity verdict of one attack (midefend.evaluation.consensus): consensus, each judge, unconfirmed share."""
    if not identity:
        return {}
    return {
        "consensus_top1": identity.get("consensus_top1"), "consensus_judges": identity.get("consensus_judges"),
        "identities_recovered": identity.get("identities_recovered"), "identities_by_chance": identity.get("identities_by_chance"),
        "n_identities": identity.get("n_identities"), "chance_top1": identity.get("chance_top1"),
        "unconfirmed_share": identity.get("unconfirmed_share"),
        "judges": {j["name"]: {"top1": j["top1"], "top5": j["top5"], "independent": j["independent"], "fallbacks": j.get("fallbacks")} for j in identity.get("judges", [])},
    }  # fmt: skip


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from runs of ``--only`` targets (run in parallel): their targets in TARGETS order, each
    labelled with its run's classes, evaluation model and adaptive mode when the runs differ in them; the
    first run's remaining settings, every command, the first start load and the last end load."""
    merged = dict(summaries[0])
    differ = [k for k in ("classes", "eval_model", "adaptive", "skipped_by_benchmark") if len({str(s.get(k)) for s in summaries}) > 1]
    blocks: dict[str, Any] = {}
    for s in summaries:
        for label, block in s["targets"].items():
            if differ:
                label += " (" + "; ".join(f"{k.replace('_by_benchmark', '').replace('_', ' ')} {_text(s.get(k))}" for k in differ) + ")"
            blocks[label] = block
    merged["targets"] = {label: blocks[label] for base in TARGETS for label in blocks if label.split(" (")[0] == base.split(" (")[0] and label.startswith(base)}
    merged["command"] = "\n".join(s["command"] for s in summaries)
    merged["load_end"] = summaries[-1].get("load_end", merged.get("load_end"))
    if differ:
        merged.update({k: "per target (see the labels)" for k in differ})
    return merged


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value) if value else "–"


def adaptive_effects(block: dict[str, Any]) -> list[str]:
    """One line per adaptive row: its attack accuracy against the same attack without adaptation."""
    rows = {r["name"]: r for r in block["rows"]}
    lines = []
    for row in block["rows"]:
        base = rows.get(row["name"].split("+")[0])
        if row["adaptive"] and base is not None:
            d1 = 100 * (row["attack_acc_top1"] - base["attack_acc_top1"])
            dt = 100 * ((row["target_acc_top1"] or 0) - (base["target_acc_top1"] or 0))
            lines.append(f"{row['name']} vs {base['name']}: attack acc@1 {d1:+.1f} points, target's own accuracy on the reconstructions {dt:+.1f} points")
    return lines


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _count(v: int | None) -> str:
    return "–" if not v else f"{v:,}"


def markdown(summary: dict[str, Any]) -> list[str]:
    lines = [
        START,
        "## Attacks and adaptive attacks against the ORL targets (`benchmarks/attacks.py`)",
        "",
        "Written by the script from one run. Command, machine, load:",
        "",
        f"```bash\nMIDEFEND_ORL_DIR=../shared/data/orl_faces {summary['command']}\n```",
        "",
        f"{summary['machine']}; {summary['date']}; load average (1/5/15 min) {summary['load_start']} at the start, "
        f"{summary['load_end']} at the end (the machine is shared: wall times are inflated by the other jobs). "
        f"Classes: {summary['classes']}; options {summary['options']}{'; fast presets' if summary['fast'] else ''}; "
        f"evaluation model `{summary['eval_model']}`; adaptive variants: {summary['adaptive']}. "
        "Each target gets `verify`'s default portfolio (white-box; GMI needs a prior with a discriminator and the face GAN has none); "
        "the adaptive variant follows the defense the checkpoint records. ± is the std over classes (one run per attack).",
        "",
        *([f"**Note:** {summary['note']}", ""] if summary.get("note") else []),
        *([f"Left out of this run (`--skip`): {_text(summary['skipped_by_benchmark'])}.", ""] if isinstance(summary.get("skipped_by_benchmark"), list) and summary["skipped_by_benchmark"] else []),
        "Identity first: **consensus** = reconstructions that every independent face recogniser (" + _text(summary.get("judges") or ["facenet"])
        + ") places nearest their person among all private identities (chance 1/C); each judge's nearest-identity top-1; "
        "**unconfirmed** = of the reconstructions the evaluation model accepts, the share no independent judge confirms. "
        "Then the papers' metric (the evaluation model's AttAcc, trained on the private data), the target's own accuracy on "
        "the reconstructions, KNN (evaluation features). The strongest attack is chosen by the consensus (ties: the evaluation model).",
        "",
        "| target | Acc | attack | adaptive | consensus @1 | identities recovered | judges @1 | eval AttAcc@1 | unconfirmed | eval AttAcc@5 | target acc on recon. | KNN | queries | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, block in summary["targets"].items():
        for i, row in enumerate(block["rows"]):
            strongest = " **(strongest)**" if row["name"] == block["strongest_attack"] else ""
            judges = ", ".join(f"{name} {_pct(j['top1'])}" + (f" ({j['fallbacks']} unaligned)" if j.get("fallbacks") else "") for name, j in (row.get("judges") or {}).items()) or "–"
            recovered = f"{row['identities_recovered']} of {row['n_identities']} (chance {row['identities_by_chance']:.1f})" if row.get("identities_recovered") is not None else "–"
            lines.append(
                f"| {label if i == 0 else ''} | {_pct(block['accuracy']) if i == 0 else ''} | {row['name']}{strongest} | "
                f"{'yes' if row['adaptive'] else 'no'} | {_pct(row.get('consensus_top1'))} | {recovered} | {judges} | "
                f"{_pct(row['attack_acc_top1'])} ± {_pct(row['attack_acc_top1_std'])} | {_pct(row.get('unconfirmed_share'))} | "
                f"{_pct(row['attack_acc_top5'])} | {_pct(row['target_acc_top1'])} | {row['knn_distance']:.1f} | "
                f"{_count(row.get('queries'))} | {row['seconds']:.0f} |"
            )
    lines += ["", "The gap between the evaluation model and the independent judges, on each target's strongest attack:", ""]
    for label, block in summary["targets"].items():
        row = next(r for r in block["rows"] if r["name"] == block["strongest_attack"])
        if row.get("consensus_top1") is not None:
            lines.append(
                f"- {label}: the evaluation model accepts {_pct(row['attack_acc_top1'])} %, the independent judges together confirm "
                f"{_pct(row['consensus_top1'])} % (chance {_pct(row['chance_top1'])} %); {_pct(row.get('unconfirmed_share'))} % of the accepted "
                "reconstructions are confirmed by no independent judge"
            )
    lines += ["", "Do the adaptive attacks move the defended numbers?", ""]
    for label, block in summary["targets"].items():
        effects = adaptive_effects(block)
        if effects:
            lines += [f"- {label}: " + "; ".join(effects)]
    lines += ["", "Wall time of the whole default `verify` (attacks and evaluation) per target:", ""]
    lines += [f"- {label}: {block['verify_seconds'] / 60:.1f} min (load average after: {block['load_after']})" for label, block in summary["targets"].items()]
    lines += ["", END]
    return lines


def readme_lines(summary: dict[str, Any]) -> list[str]:
    """The evaluator-vs-independent gap in three lines for the README (between the identity-gap markers)."""
    best = [next(r for r in b["rows"] if r["name"] == b["strongest_attack"]) for b in summary["targets"].values()]
    best = [r for r in best if r.get("consensus_top1") is not None]
    if not best:
        return [GAP_START, GAP_END]
    lo_e, hi_e = min(r["attack_acc_top1"] for r in best), max(r["attack_acc_top1"] for r in best)
    lo_c, hi_c = min(r["consensus_top1"] for r in best), max(r["consensus_top1"] for r in best)
    unconf = [r["unconfirmed_share"] for r in best if r.get("unconfirmed_share") is not None]
    recovered = max(r["identities_recovered"] for r in best)
    return [
        GAP_START,
        f"**Identity, judged independently** (`benchmarks/attacks.py`, {summary['date'][:10]}, {len(best)} ORL targets, classes {summary['classes']}, load "
        f"{summary['load_start']}): on each target's strongest attack the evaluation model accepts {_pct(lo_e)}–{_pct(hi_e)} % of the reconstructions, "
        f"while FaceNet and dlib together confirm {_pct(lo_c)}–{_pct(hi_c)} % (chance {_pct(best[0]['chance_top1'])} %);",
        f"{_pct(min(unconf))}–{_pct(max(unconf))} % of the evaluation model's hits are confirmed by no independent judge, and "
        + ("no attack recovers a single identity" if recovered == 0 else f"no attack recovers more than {recovered} identit{'y' if recovered == 1 else 'ies'}")
        + ". The face prior cannot draw most ORL people (its reach, [docs/reach.md](docs/reach.md)), so",
        "these targets cannot show what a defense protects: [benchmarks/RESULTS.md](benchmarks/RESULTS.md#attacks-and-adaptive-attacks-against-the-orl-targets-benchmarksattackspy).",
        GAP_END,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets-dir", type=Path, default=Path("benchmarks/out/targets"))
    parser.add_argument("--eval-name", default="orl-eval", help="checkpoint stem of the evaluation model in --targets-dir")
    parser.add_argument("--only", default="", help="comma-separated checkpoint stems to run (default: all four)")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/out/attacks-portfolio"))
    parser.add_argument("--classes", default="all")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--no-facenet", dest="facenet", action="store_false", help="judge by the evaluation model only (default: FaceNet too)")
    parser.add_argument("--skip", default="", help="comma-separated registered attacks to leave out of this run (said in the section)")
    parser.add_argument("--adaptive", choices=("auto", "on", "off"), default="auto", help="verify's --adaptive (default auto: from the defense record)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--note", default="", help="a sentence printed under the table (e.g. why a run was reduced)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--readme", type=Path, default=None, help="also write the three-line identity gap between the README's identity-gap markers")
    parser.add_argument("--report-only", type=Path, nargs="+", default=None, metavar="JSON",
                        help="rewrite the Markdown section and results/attacks.json from saved summaries (several: runs of "
                        "--only targets in parallel, merged in TARGETS order), computing nothing")  # fmt: skip
    args = parser.parse_args()
    if args.report_only is not None:
        summary = merge_summaries([json.loads(p.read_text()) for p in args.report_only])
        if args.note:
            summary["note"] = args.note
        args.results_dir.mkdir(parents=True, exist_ok=True)
        tmp = args.results_dir / "attacks.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, args.results_dir / "attacks.json")
        replace_section(args.results_md, START, END, markdown(summary))
        if args.readme is not None:
            replace_section(args.readme, GAP_START, GAP_END, readme_lines(summary))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    def publish(summary: dict[str, Any]) -> None:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        tmp = args.results_dir / "attacks.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, args.results_dir / "attacks.json")
        replace_section(args.results_md, START, END, markdown(summary))

    summary = run(args, publish)
    print("\n".join(markdown(summary)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
