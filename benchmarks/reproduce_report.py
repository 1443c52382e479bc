"""Summaries, Markdown, the trade-off plot and reconstruction grids for ``reproduce.py``.

Every model is judged by its strongest attack: per seed, the identity loss with the highest
attack acc@1; the table gives mean ± std over seeds of that run's numbers.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

from midefend.evaluation import format_delta, tradeoff_delta

START, END = "<!-- reproduce:start -->", "<!-- reproduce:end -->"
#: Two-sided 95 % critical values of Student's t by degrees of freedom (a t-test of two means, n seeds each: 2n - 2).
T_CRITICAL = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}
LABELS = {"nodef": "NoDef", "calor": "CALoR", "midre+calor": "MIDRE+CALoR"}


def label(model: str) -> str:
    if model.startswith("midre-"):
        return f"MIDRE (a_h = {model.split('-', 1)[1]})"
    return LABELS.get(model, model)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(block: dict[str, Any]) -> dict[str, Any]:
    """Per model: mean/std over seeds of the strongest attack's numbers, per-loss means, Δ, noise."""
    models: dict[str, Any] = {}
    for model, runs in block["runs"].items():
        best = [run["attacks"][run["strongest"]] for run in runs]
        series = {
            "accuracy": [run["accuracy"] for run in runs],
            "attack_top1": [b["attack_acc_top1"] for b in best],
            "attack_top5": [b["attack_acc_top5"] for b in best],
            "knn": [b["knn_distance"] for b in best],
            "target_acc_on_recon": [b["target_acc_top1"] for b in best],
            "train_confidence": [run["train_confidence"] for run in runs],
        }
        stats = {k: _mean_std(v) for k, v in series.items()}
        losses = list(runs[0]["attacks"])
        models[model] = {
            "mean": {k: m for k, (m, _) in stats.items()},
            "std": {k: s for k, (_, s) in stats.items()},
            "seeds": [
                {"seed": run["seed"], "strongest": run["strongest"], **{k: v[i] for k, v in series.items()},
                 "by_loss": {loss: a["attack_acc_top1"] for loss, a in run["attacks"].items()}}
                for i, run in enumerate(runs)
            ],  # fmt: skip
            "attack_top1_by_loss": {loss: statistics.fmean(run["attacks"][loss]["attack_acc_top1"] for run in runs) for loss in losses},
        }
    base = models.get("nodef")
    for model, entry in models.items():
        if base is None or model == "nodef":
            continue
        m, b = entry["mean"], base["mean"]
        entry["delta"] = tradeoff_delta(acc_nodef=b["accuracy"], attack_nodef=b["attack_top1"], acc_def=m["accuracy"], attack_def=m["attack_top1"])
        entry["no_accuracy_lost"] = entry["delta"] is None
        entry["relative_drop"] = (b["attack_top1"] - m["attack_top1"]) / b["attack_top1"] if b["attack_top1"] > 0 else 0.0
        n = len(entry["seeds"])
        diff = b["attack_top1"] - m["attack_top1"]
        se = math.sqrt((entry["std"]["attack_top1"] ** 2 + base["std"]["attack_top1"] ** 2) / n) if n > 1 else None
        critical = T_CRITICAL.get(2 * n - 2, 2.0)
        entry["attack_drop_t"] = diff / se if se else None
        entry["t_critical"] = critical
        # below the t-test's 95 % critical value the seeds cannot tell the two models apart; with no
        # spread at all, only an exactly equal mean is "noise"
        entry["within_noise"] = abs(diff) < critical * se if se else diff == 0 and n > 1
    return {key: value for key, value in block.items() if key != "runs"} | {"models": models}


def _pct(mean: float, std: float | None = None) -> str:
    return f"{100 * mean:.1f}" if std is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def dataset_markdown(name: str, block: dict[str, Any], config: dict[str, Any], results_dir: Path, md_dir: Path) -> list[str]:
    cfg = config["datasets"][name]
    attack = block["attack"]
    sweep = block["rank_sweep"]
    seeds = len(config["seeds"])
    lines = [
        f"### {name.upper() if name == 'orl' else name.capitalize()}",
        "",
        f"Target `midefend/resnet_small` from scratch ({cfg['epochs']} epochs; CALoR: {cfg['calor_epochs']} head + "
        f"{cfg['ca_epochs']} CA epochs of the {cfg.get('ca_params', 'head')} at lr {cfg.get('ca_lr', 1e-4):g}, from the seed's "
        f"NoDef / MIDRE model), evaluation model `midefend/vgg_small` "
        f"({_pct(block['eval_accuracy'])}% test accuracy), prior `{Path(str(block['prior'])).name}`, PPA with "
        f"{attack['candidates']} → {attack['per_class']} reconstructions per class, {attack['steps']} steps, "
        f"classes {block['classes']}; {seeds} seeds; each model judged by its strongest loss of "
        f"{', '.join(config['losses'])}. Wall time {block['wall_seconds'] / 60:.1f} min.",
        "",
        "| Defense | Acc ↑ | AttAcc@1 ↓ | AttAcc@5 ↓ | KNN Dist ↑ | Δ ↑ | AttAcc@1 drop | strongest loss (per seed) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, e in block["models"].items():
        m, s = e["mean"], e["std"]
        delta_txt = "–" if "no_accuracy_lost" not in e else format_delta(e["delta"])
        drop = "–" if "relative_drop" not in e else f"{100 * e['relative_drop']:.0f}%" + (" (within noise)" if e["within_noise"] else "")
        lines.append(
            f"| {label(model)} | {_pct(m['accuracy'], s['accuracy'])} | {_pct(m['attack_top1'], s['attack_top1'])} | "
            f"{_pct(m['attack_top5'], s['attack_top5'])} | {m['knn']:.1f} ± {s['knn']:.1f} | {delta_txt} | {drop} | "
            f"{', '.join(x['strongest'] for x in e['seeds'])} |"
        )
    lines += ["", "Mean attack acc@1 (%) per identity loss (the table above takes the strongest per seed):", ""]
    losses = list(next(iter(block["models"].values()))["attack_top1_by_loss"])
    lines += ["| Defense | " + " | ".join(losses) + " | target's acc on its reconstructions |", "|---|" + "---|" * (len(losses) + 1)]
    for model, e in block["models"].items():
        lines.append(f"| {label(model)} | " + " | ".join(_pct(e["attack_top1_by_loss"][loss]) for loss in losses)
                     + f" | {_pct(e['mean']['target_acc_on_recon'])} |")  # fmt: skip
    ranks = ", ".join(f"r{r}: {_pct(row['accuracy'])}%" for r, row in sweep["ranks"].items())
    lines += [
        "",
        f"CALoR rank sweep (seed 0; NoDef trained on {sweep['fit']} images, accuracy on {sweep['held_out']} held-out training "
        f"images): NoDef {_pct(sweep['nodef_accuracy'])}%, {ranks} → rank **{sweep['chosen']}** (smallest within "
        f"{100 * sweep['tolerance']:.0f} points of NoDef).",
    ]
    if block["curve"]:
        pts = "; ".join(f"r{c['rank']}: acc {_pct(c['accuracy'])}%, attack acc@1 {_pct(c['attack_acc_top1'])}%" for c in block["curve"])
        lines.append(f"Other ranks on the full training split (seed 0, {block['curve'][0]['loss']} loss): {pts}.")
    grid = results_dir / f"grid-{name}.png"
    lines += [
        "",
        f"Best reconstruction of the first classes per model (seed 0, strongest loss; the private images are not "
        f"committed — `out/reproduce/{name}/grid-with-private.png` shows them next to it):",
        "",
        f"![reconstructions, {name}]({os.path.relpath(grid, md_dir)})",
        "",
    ]
    return lines


def goal_lines(summary: dict[str, Any]) -> list[str]:
    """The issue's goals, each with its verdict."""
    from check import verdicts  # benchmarks/check.py: the same margins, the same verdicts

    rows, _ = verdicts(summary, summary["config"]["check"])
    out = []
    for name, block in summary["datasets"].items():
        models = block["models"]
        defended = {k: v for k, v in models.items() if k != "nodef"}
        for r in (r for r in rows if r["data"] == name):
            ok = r["ok_attack"] and r["ok_accuracy"]
            out.append(
                f"- {name} {label(r['model'])}: attack acc@1 {100 * r['drop']:.0f}% lower than NoDef (goal ≥ {100 * r['need']:.0f}%), "
                f"{100 * r['accuracy_loss']:.1f} points of accuracy lost (goal ≤ {100 * r['max_loss']:.0f}) — **{'met' if ok else 'missed'}**"
                + (" (difference within seed noise)" if models[r["model"]]["within_noise"] else "")
            )
        # "OP" (no accuracy lost) is the best possible trade-off
        ranked = {k: math.inf if v.get("no_accuracy_lost") else v.get("delta") for k, v in defended.items()}
        ranked = {k: d for k, d in ranked.items() if isinstance(d, float)}
        if ranked:
            best = max(ranked, key=ranked.get)
            verdict = "met" if best == "midre+calor" else "missed"
            shown = format_delta(None if ranked[best] == math.inf else ranked[best])
            out.append(f"- {name}: best Δ is {label(best)} ({shown}); goal: MIDRE+CALoR — **{verdict}**")
    reused = sum(summary.get("reused_seconds_by_step", {}).values())
    minutes = (summary["wall_seconds"] + reused) / 60
    what = "total wall time" if not reused else f"wall time plus the {reused / 60:.1f} min of reused steps"
    out.append(f"- {what}: {minutes:.1f} min on this machine (goal ≤ 60 min) — **{'met' if minutes <= 60 else 'missed'}**")
    return out


def time_lines(summary: dict[str, Any]) -> list[str]:
    reused = summary.get("reused_seconds_by_step", {})
    steps = {**reused, **summary["seconds_by_step"]}
    buckets: dict[str, float] = {}
    for key, seconds in steps.items():
        kind = "attacks" if any(key.endswith("-" + loss) for loss in summary["config"]["losses"]) else "training"
        if key.endswith(("-eval", "-prior")) or "-sweep-" in key:
            kind = "evaluation models, priors, rank sweep"
        buckets[kind] = buckets.get(kind, 0.0) + seconds
    lines = [f"- {kind}: {seconds / 60:.1f} min" for kind, seconds in sorted(buckets.items(), key=lambda kv: -kv[1])]
    if reused:
        lines.append(f"- ({len(reused)} of these {len(steps)} steps were reused from an earlier run's records)")
    return lines


def write_markdown(summary: dict[str, Any], md_path: Path, results_dir: Path) -> None:
    """Replace the section between the reproduce markers of ``md_path`` (appended when absent)."""
    md_dir = md_path.resolve().parent
    body = [
        START,
        "## Reproduction: MIDRE and CALoR against model inversion (`benchmarks/reproduce.py`)",
        "",
        "Written by the script itself from one run. Command, machine and time:",
        "",
        f"```bash\nMIDEFEND_ORL_DIR=../shared/data/orl_faces {summary['command'].strip()}\npython benchmarks/check.py\n```",
        "",
        f"{summary['machine']}; {summary['date']}; wall {summary['wall_seconds'] / 60:.1f} min, "
        f"CPU {summary['cpu_seconds'] / 60:.1f} min. Summary: `{os.path.relpath(results_dir / 'reproduce.json', md_dir)}`.",
        "",
        "Columns as in the papers (MIDRE Tab. B.2, CALoR Tab. 2): natural test accuracy, attack accuracy top-1/top-5 of "
        "the independent evaluation model, KNN distance (evaluation-model features, to the class's private training "
        "images), Δ = (AttAcc_NoDef − AttAcc_def) / (Acc_NoDef − Acc_def) (\"OP\" when no accuracy is lost). "
        "± is the std over seeds; \"within noise\" marks a difference to NoDef below the 95 % critical value of a "
        "two-sample t-test over the seeds.",
        "",
    ]
    for name, block in summary["datasets"].items():
        body += dataset_markdown(name, block, summary["config"], results_dir, md_dir)
    body += [f"![privacy-utility trade-off]({os.path.relpath(results_dir / 'tradeoff.png', md_dir)})", "", "Goals:", ""]
    body += goal_lines(summary)
    body += ["", "Where the time went:", ""] + time_lines(summary) + ["", END]
    from markdown_section import replace_section

    replace_section(md_path, START, END, body)


def plot_tradeoff(summary: dict[str, Any], path: Path) -> None:
    """Attack acc@1 (strongest loss) against natural accuracy, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        block = summary["datasets"][name]
        for model, e in block["models"].items():
            m, s = e["mean"], e["std"]
            ax.errorbar(100 * m["accuracy"], 100 * m["attack_top1"], xerr=100 * s["accuracy"], yerr=100 * s["attack_top1"],
                        fmt="o", capsize=3, label=label(model) + (f" (r{block['rank']})" if "calor" in model else ""))  # fmt: skip
        if block["curve"]:
            chosen = block["models"].get("calor")
            pts = [(c["rank"], c["accuracy"], c["attack_acc_top1"]) for c in block["curve"]]
            if chosen is not None:
                seed0 = chosen["seeds"][0]
                pts.append((block["rank"], seed0["accuracy"], seed0["by_loss"].get(block["curve"][0]["loss"], float("nan"))))
            pts.sort()
            ax.plot([100 * p[1] for p in pts], [100 * p[2] for p in pts], "--", color="grey", lw=1,
                    label=f"CALoR ranks (seed 0, {block['curve'][0]['loss']})")  # fmt: skip
            for r, acc, att in pts:
                ax.annotate(f"r{r}", (100 * acc, 100 * att), textcoords="offset points", xytext=(4, 4), fontsize=8, color="grey")
        ax.set_xlabel("natural test accuracy (%)")
        ax.set_ylabel("attack acc@1, strongest loss (%)")
        ax.set_title(f"{name}: lower right is better")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


SHORT = {"nodef": "NoDef", "calor": "CALoR", "midre+calor": "M+C"}


def reconstruction_grid(name: str, block: dict[str, Any], path: Path, *, private: bool, rows: int = 8, tile_px: int = 64) -> None:
    """Row = class; columns: (a private image,) then each model's best reconstruction (seed 0, strongest loss).

    The checked-in grids leave the private images out: ORL comes from ``../shared`` and must not be committed.
    """
    from PIL import Image, ImageDraw

    per_class = block["attack"]["per_class"]
    sources = []
    for model, runs in block["runs"].items():
        run = runs[0]
        short = SHORT.get(model, "MIDRE " + model.split("-", 1)[-1] if model.startswith("midre-") else model)
        sources.append((short, Image.open(run["attacks"][run["strongest"]]["grid"]).convert("RGB")))
    first = sources[0][1]
    tile = (first.width - 2) // (per_class + 1)  # save_grid: each image plus 2 px of padding
    n = min(rows, (first.height - 2) // tile)
    side = max(tile_px, tile - 2)
    head, gap = 16, 4
    columns = ([("private", first)] if private else []) + sources
    out = Image.new("RGB", ((side + gap) * len(columns) + gap, head + (side + gap) * n + gap), "white")
    draw = ImageDraw.Draw(out)
    for col, (text, img) in enumerate(columns):
        src_col = 0 if text == "private" else 1  # the private image, or the model's best reconstruction
        x = gap + col * (side + gap)
        draw.text((x, 2), text, fill="black")
        for row in range(n):
            left, top = 2 + src_col * tile, 2 + row * tile
            cell = img.crop((left, top, left + tile - 2, top + tile - 2)).resize((side, side), Image.NEAREST)
            out.paste(cell, (x, head + gap + row * (side + gap)))
    tmp = path.with_name(path.stem + ".tmp.png")
    out.save(tmp, format="PNG")
    os.replace(tmp, path)
