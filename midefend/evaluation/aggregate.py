"""Combine repeated attack runs into one row, and pick the strongest row of a portfolio.

The papers print attack accuracy as mean ± the standard deviation over
repeated attack runs (5 seeds); a standard deviation over *classes* is 5–10×
larger at ORL's scale, so the two must never be set side by side. A row keeps
both: ``attack_acc_top1_std_runs`` (``None`` for one run) and
``attack_acc_top1_std_classes`` (the per-class spread, averaged over runs);
``attack_acc_top1_std`` is the one shown after "±", and ``std_over`` says
which (``"runs"`` with more than one run, else ``"classes"``). The same holds
for top-5.

>>> a = {"attack_acc_top1": 0.5, "attack_acc_top1_std": 0.3, "attack_acc_top5": 0.9, "attack_acc_top5_std": 0.1, "fid": 10.0}
>>> b = {**a, "attack_acc_top1": 0.7, "fid": 12.0}
>>> m = combine_runs([a, b])
>>> m["attack_acc_top1"], round(m["attack_acc_top1_std"], 6), m["std_over"], m["attack_acc_top1_std_classes"], m["fid"]
(0.6, 0.1, 'runs', 0.3, 11.0)
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from ..errors import ConfigError

_ACC_KEYS = ("attack_acc_top1", "attack_acc_top5")


def combine_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One metrics dict from the metrics of ``N >= 1`` runs: means of the numbers, both kinds of std.

    Numbers are averaged (``None`` stays ``None``); ``per_class`` rows are those of the first run
    with the top-1/top-5 accuracies averaged over runs. Population std (``ddof=0``), as numpy prints it.
    """
    if not runs:
        raise ConfigError("combine_runs needs at least one run")
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if key == "per_class" or key.endswith("_std"):
            continue
        values = [r.get(key) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = float(statistics.fmean(values)) if not all(isinstance(v, int) for v in values) else values[0]
        else:
            out[key] = value
    if len(runs) > 1 and isinstance(runs[0].get("identity"), dict):
        from .consensus import average_verdicts

        out["identity"] = average_verdicts([r["identity"] for r in runs])
    for key in _ACC_KEYS:
        out[f"{key}_std_classes"] = float(statistics.fmean(r[f"{key}_std"] for r in runs))
        out[f"{key}_std_runs"] = float(statistics.pstdev(r[key] for r in runs)) if len(runs) > 1 else None
        out[f"{key}_std"] = out[f"{key}_std_runs"] if len(runs) > 1 else out[f"{key}_std_classes"]
    out["std_over"] = "runs" if len(runs) > 1 else "classes"
    out["runs"] = len(runs)
    if "per_class" in runs[0]:
        rows = []
        for i, row in enumerate(runs[0]["per_class"]):
            merged = dict(row)
            for key in _ACC_KEYS:
                if key in row:
                    merged[key] = float(statistics.fmean(r["per_class"][i][key] for r in runs))
            rows.append(merged)
        out["per_class"] = rows
    return out


def strength(row: dict[str, Any]) -> tuple[float, float]:
    """How strong one portfolio row is: the identity headline first, the evaluator's accuracy @1 to break ties.

    The identity headline (``metrics["identity"]["headline"]``: the consensus of the independent
    judges, see :mod:`~midefend.evaluation.consensus`) decides; rows of older reports without it
    are ranked by the evaluation model alone.
    """
    m = row["metrics"]
    identity = m.get("identity") or {}
    headline = identity.get("headline")
    return (float(headline) if headline is not None else float(m["attack_acc_top1"]), float(m["attack_acc_top1"]))


def strongest(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The row with the highest :func:`strength` (the first of equals, in portfolio order).

    >>> strongest([{"name": "a", "metrics": {"attack_acc_top1": 0.4}}, {"name": "b", "metrics": {"attack_acc_top1": 0.6}}])["name"]
    'b'
    >>> rows = [{"name": "a", "metrics": {"attack_acc_top1": 0.9, "identity": {"headline": 0.05}}},
    ...         {"name": "b", "metrics": {"attack_acc_top1": 0.6, "identity": {"headline": 0.10}}}]
    >>> strongest(rows)["name"]  # the evaluator prefers a; the independent judges confirm more of b
    'b'
    """
    if not rows:
        raise ConfigError("the portfolio produced no attack rows")
    best = 0
    for i, row in enumerate(rows):
        if strength(row) > strength(rows[best]):
            best = i
    return rows[best]


__all__ = ["combine_runs", "strength", "strongest"]
