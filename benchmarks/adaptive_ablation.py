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
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from markdown_section import replace_section  # noqa: E402
from ppa_variants import TABLE_HEAD, add_common_arguments, header, load_average, row_line, run_variant  # noqa: E402

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
    add_common_arguments(parser, name="adaptive_ablation", classes="0-9")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = header("adaptive_ablation.py", args.target, args.classes)
    defense = summary["defense"]
    for label, options in variants(defense).items():
        summary["rows"].append(
            run_variant(label, options, target=args.target, eval_model=args.eval, classes=args.classes, out_dir=args.out_dir)
        )
    summary["load_end"] = load_average()
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
        *TABLE_HEAD,
    ]  # fmt: skip
    lines += [row_line(r) for r in summary["rows"]] + ["", END]
    replace_section(args.results_md, START, END, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
