"""What PPA's budget buys: the candidate factor (1x, 2x, 4x) and the EOT erasures per step (1, 2, 4).

`verify`'s default portfolio must fit 15 minutes on 2 cores; PPA and its EOT variant are most of it. This
script measures, on one ORL target, the attack accuracy and the time of plain PPA with 1, 2 and 4 times as
many candidates as it keeps, and of PPA+EOT with 1, 2 and 4 erasures per step (at the default factor), so
the defaults are chosen from a measurement. Run it on the MIDRE target, where the attack has room to move
(NoDef is near its ceiling):

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/attack_budget.py \\
        --target /work/targets/orl-midre-0.8.safetensors --eval /work/targets/orl-eval.safetensors --threads 2

Writes ``results/attack_budget.json`` and the section between the ``attack-budget`` markers of
``RESULTS.md`` (command, machine, threads, load average before and after every row).
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

START, END = "<!-- attack-budget:start -->", "<!-- attack-budget:end -->"


def variants(defense: dict[str, Any], per_class: int, factors: list[int], erasures: list[int]) -> dict[str, dict[str, Any]]:
    """``label -> options``: plain PPA at each candidate factor, then PPA+EOT at each erasure count."""
    from midefend.attacks.adaptive import DEFAULT_ERASE_SCALE, adaptive_options

    out: dict[str, dict[str, Any]] = {f"ppa x{f}": {"candidates": f * per_class} for f in factors}
    recorded = adaptive_options(defense)  # the erasure the target was trained with; MIDRE's default otherwise
    erase = {
        "erase_scale": recorded.get("erase_scale", list(DEFAULT_ERASE_SCALE)),
        "erase_ratio": recorded.get("erase_ratio", [1.0, 1.0]),
    }
    out |= {f"ppa+eot K={k}": {"eot": k, **erase} for k in erasures}
    return out


def main() -> int:
    from midefend.attacks.adaptive import DEFAULT_EOT
    from midefend.attacks.ppa import PPAAttack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, name="attack_budget", classes="all")
    parser.add_argument("--factors", default="1,2,4", help="candidates per kept reconstruction (plain PPA rows)")
    parser.add_argument("--erasures", default="1,2,4", help="EOT erasures per step (PPA+EOT rows)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    factors = [int(v) for v in args.factors.split(",") if v]
    erasures = [int(v) for v in args.erasures.split(",") if v]
    defaults = PPAAttack().options
    per_class, factor = defaults["per_class"], defaults["candidates_factor"]
    summary = header("attack_budget.py", args.target, args.classes)
    for label, options in variants(summary["defense"], per_class, factors, erasures).items():
        summary["rows"].append(
            run_variant(label, options, target=args.target, eval_model=args.eval, classes=args.classes, out_dir=args.out_dir)
        )
    summary["load_end"] = load_average()
    summary["defaults"] = {"candidates_factor": factor, "eot": DEFAULT_EOT}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "attack_budget.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = summary["rows"]
    lines = [
        START, "## PPA's budget: candidates per kept reconstruction, erasures per EOT step (`benchmarks/attack_budget.py`)", "",
        f"```bash\nMIDEFEND_ORL_DIR=../shared/data/orl_faces {summary['command']}\n```", "",
        f"{summary['machine']}; {summary['date']}; load average {summary['load_start']} at the start, {summary['load_end']} at the end "
        f"(after each row: {', '.join(r['load_after'] for r in rows)}). Target `{summary['target']}` (defense "
        f"{summary['defense'].get('name')}), classes {args.classes}, seed 0, {per_class} reconstructions kept per class, judged by "
        f"`{args.eval.stem}`; one reconstruction is {100 / rows[0]['reconstructions']:.1f} points. `ppa xF` optimises F × {per_class} "
        f"candidates per class and keeps the {per_class} the target is most confident in under the selection augmentation; "
        f"`ppa+eot K=k` (at x{factor}) averages the loss over k erasures per step. The library's defaults: x{factor}, K={DEFAULT_EOT}.", "",
        *TABLE_HEAD,
    ]  # fmt: skip
    lines += [row_line(r) for r in rows] + ["", END]
    replace_section(args.results_md, START, END, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
