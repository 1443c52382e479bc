"""benchmarks/attack_budget.py: which PPA variants it runs, so each row differs from the default in one knob only."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import attack_budget  # noqa: E402


def test_factor_rows_set_candidates_only_and_eot_rows_use_the_recorded_erasure():
    midre = {"name": "midre", "erase_scale": [0.1, 0.8], "erase_ratio": [1.0, 1.0]}
    rows = attack_budget.variants(midre, per_class=4, factors=[1, 2], erasures=[1, 3])
    assert rows == {
        "ppa x1": {"candidates": 4},
        "ppa x2": {"candidates": 8},
        "ppa+eot K=1": {"eot": 1, "erase_scale": [0.1, 0.8], "erase_ratio": [1.0, 1.0]},
        "ppa+eot K=3": {"eot": 3, "erase_scale": [0.1, 0.8], "erase_ratio": [1.0, 1.0]},
    }


def test_a_target_without_erasure_gets_midres_default_area_range():
    rows = attack_budget.variants({"name": "nodef"}, per_class=2, factors=[], erasures=[2])
    assert rows == {"ppa+eot K=2": {"eot": 2, "erase_scale": [0.1, 0.4], "erase_ratio": [1.0, 1.0]}}
