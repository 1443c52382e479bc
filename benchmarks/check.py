"""Check a ``reproduce.py`` result against the margins in ``benchmarks/config.json``.

Exits 1, naming every miss, when a defended model's attack acc@1 (its strongest attack, mean
over seeds) is not below NoDef's by the configured relative margin, or when it lost more
natural accuracy than allowed; exits 0 when all hold; exits 2 on an unreadable file.

    python benchmarks/check.py                                   # the checked-in result
    python benchmarks/check.py --results benchmarks/out/reproduce/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: cannot read the {what} {path}: {exc}") from None


def check(results: dict, margins: dict) -> tuple[list[str], list[str]]:
    """``(lines, misses)``: one readable line per defended model, and the failed checks."""
    rel = margins["relative_drop"]
    max_loss = margins.get("max_accuracy_loss")
    lines, misses = [], []
    for data, block in results["datasets"].items():
        models = block["models"]
        if "nodef" not in models:
            misses.append(f"{data}: no NoDef result to compare against")
            continue
        base_att, base_acc = models["nodef"]["mean"]["attack_top1"], models["nodef"]["mean"]["accuracy"]
        for name, model in models.items():
            if name == "nodef":
                continue
            need = rel.get(name, rel.get("default"))
            att, acc = model["mean"]["attack_top1"], model["mean"]["accuracy"]
            drop = (base_att - att) / base_att if base_att > 0 else 0.0
            ok_att = need is None or drop >= need
            ok_acc = max_loss is None or base_acc - acc <= max_loss
            lines.append(
                f"{'ok  ' if ok_att and ok_acc else 'MISS'} {data:6s} {name:12s} attack acc@1 {att:6.1%} vs NoDef "
                f"{base_att:6.1%} (drop {drop:+.0%}, need {need:.0%}); accuracy {acc:6.1%} vs {base_acc:6.1%}"
            )
            if not ok_att:
                misses.append(f"{data} {name}: attack acc@1 dropped {drop:.0%} relative to NoDef, margin is {need:.0%}")
            if not ok_acc:
                misses.append(f"{data} {name}: lost {base_acc - acc:.1%} accuracy, allowed {max_loss:.1%}")
    return lines, misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results" / "reproduce.json")
    parser.add_argument("--config", type=Path, default=HERE / "config.json")
    args = parser.parse_args(argv)
    results = load_json(args.results, "results file")
    config = load_json(args.config, "config file")
    try:
        lines, misses = check(results, config["check"])
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
