"""Check a ``reproduce.py`` result against the margins in ``benchmarks/config.json``.

Exits 1, naming every miss, when a defended model's attack acc@1 (its strongest attack, mean
over seeds) is not below NoDef's by the configured relative margin, or when it lost more
natural accuracy than allowed; exits 0 when all hold; exits 2 on an unreadable file.

``--v2 [FILE]`` checks the reproduction v2 instead (``reproduce_v2.py``: every model judged by
``verify``'s strongest attack): the same margins for the goal defenses MIDRE, CALoR and
MIDRE+CALoR (a goal defense missing from the file is a miss; the baselines carry no goal).

    python benchmarks/check.py                                   # the checked-in result
    python benchmarks/check.py --results benchmarks/out/reproduce/results.json
    python benchmarks/check.py --v2                              # benchmarks/results/reproduce_v2.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the defenses the issue sets goals for in the reproduction v2 (the baselines are compared, not graded)
V2_GOALS = ("midre", "calor", "midre+calor")


def load_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: cannot read the {what} {path}: {exc}") from None


def verdicts(results: dict, margins: dict, only: tuple[str, ...] | None = None) -> tuple[list[dict], list[str]]:
    """One dict per defended model (its drop, the margin, both verdicts), and the data sets without NoDef.

    ``only``: these models only (default: every model but NoDef)."""
    rel = margins["relative_drop"]
    max_loss = margins.get("max_accuracy_loss")
    rows, no_base = [], []
    for data, block in results["datasets"].items():
        models = block["models"]
        if "nodef" not in models:
            no_base.append(data)
            continue
        base_att, base_acc = models["nodef"]["mean"]["attack_top1"], models["nodef"]["mean"]["accuracy"]
        for name, model in models.items():
            if name == "nodef" or (only is not None and name not in only):
                continue
            need = rel.get(name, rel.get("default"))
            att, acc = model["mean"]["attack_top1"], model["mean"]["accuracy"]
            drop = (base_att - att) / base_att if base_att > 0 else 0.0
            rows.append({
                "data": data, "model": name, "attack": att, "base_attack": base_att, "drop": drop, "need": need,
                "accuracy": acc, "base_accuracy": base_acc, "accuracy_loss": base_acc - acc, "max_loss": max_loss,
                "ok_attack": need is None or drop >= need, "ok_accuracy": max_loss is None or base_acc - acc <= max_loss,
            })  # fmt: skip
    return rows, no_base


def check(results: dict, margins: dict, only: tuple[str, ...] | None = None) -> tuple[list[str], list[str]]:
    """``(lines, misses)``: one readable line per defended model, and the failed checks.

    With ``only``, each of those models missing from a data set is a miss too."""
    rows, no_base = verdicts(results, margins, only)
    lines, misses = [], [f"{data}: no NoDef result to compare against" for data in no_base]
    for data, block in results["datasets"].items():
        misses += [f"{data} {name}: not in the results" for name in only or () if name not in block["models"]]
    for r in rows:
        lines.append(
            f"{'ok  ' if r['ok_attack'] and r['ok_accuracy'] else 'MISS'} {r['data']:6s} {r['model']:12s} attack acc@1 "
            f"{r['attack']:6.1%} vs NoDef {r['base_attack']:6.1%} (drop {r['drop']:+.0%}, need {r['need']:.0%}); "
            f"accuracy {r['accuracy']:6.1%} vs {r['base_accuracy']:6.1%}"
        )
        if not r["ok_attack"]:
            misses.append(
                f"{r['data']} {r['model']}: attack acc@1 dropped {r['drop']:.0%} relative to NoDef, margin is {r['need']:.0%}"
            )
        if not r["ok_accuracy"]:
            misses.append(f"{r['data']} {r['model']}: lost {r['accuracy_loss']:.1%} accuracy, allowed {r['max_loss']:.1%}")
    return lines, misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results" / "reproduce.json")
    parser.add_argument("--config", type=Path, default=HERE / "config.json")
    parser.add_argument("--v2", type=Path, nargs="?", const=HERE / "results" / "reproduce_v2.json", default=None, metavar="FILE",
                        help="check a reproduce_v2.py result (default file: results/reproduce_v2.json) for the goal defenses")  # fmt: skip
    args = parser.parse_args(argv)
    if args.v2 is not None:
        try:  # v2: an unreadable file is exit 2 as well, with the one-line message
            results, config = load_json(args.v2, "v2 results file"), load_json(args.config, "config file")
        except SystemExit as exc:
            print(exc, file=sys.stderr)
            return 2
        args.results = args.v2
    else:
        results = load_json(args.results, "results file")
        config = load_json(args.config, "config file")
    try:
        lines, misses = check(results, config["check"], V2_GOALS if args.v2 is not None else None)
    except (KeyError, TypeError) as exc:
        print(f"error: {args.results} or {args.config} lacks the field {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if misses:
        print("\n".join(f"missed: {m}" for m in misses), file=sys.stderr)
        return 1
    print("all margins met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
