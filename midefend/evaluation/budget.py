"""``verify --budget 30m``: fit a verify run into a wall-time budget, and say what that cut costs in certainty.

A full portfolio against a realistic model can take hours on a CPU. Given a budget, :func:`plan_budget`
chooses, from the dry-run estimate (:mod:`~midefend.evaluation.cost`):

1. **the attacks that are never cut**: PPA and every adaptive variant the target's defense calls for. On
   every ORL target measured so far plain PPA was the strongest attack, and a defense is judged by the
   strongest attack that knows it — dropping either would make the verdict optimistic;
2. **at least** ``min_classes`` **classes** for those attacks (fewer only when even that does not fit, and
   the plan then says the run is a smoke test, not a verdict);
3. **the other attacks**, cheapest per class first, as long as they fit at that class count; what does not
   fit is listed with the seconds it would have needed;
4. **more classes** with what is left, up to all of them.

The classes are a seeded random sample of the attackable classes (sorted), so the headline is an estimate of
the whole model's: :func:`headline_interval` gives its 95 % confidence interval from the per-class spread with
the finite-population correction (zero width when every class was attacked).

>>> parse_budget("30m"), parse_budget("90s"), parse_budget("1.5h"), parse_budget("120")
(1800.0, 90.0, 5400.0, 120.0)
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..errors import ConfigError

#: Attacks a budget never drops (with every adaptive variant): the strongest on every target measured so far.
ALWAYS_KEPT = ("ppa",)
#: The estimate misses the evaluation, data loading and chunking: the plan keeps this share of the budget free.
SAFETY = 0.15


def parse_budget(text: str | float | int) -> float:
    """Seconds from ``"30m"``, ``"90s"``, ``"1.5h"`` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
        if not match:
            raise ConfigError(f"budget must look like '30m', '90s', '1.5h' or a number of seconds, got {text!r}")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not seconds > 0:
        raise ConfigError(f"budget must be positive, got {text!r}")
    return seconds


@dataclass(frozen=True)
class BudgetPlan:
    """What a budgeted verify runs: the classes, the attacks kept and dropped, and the predicted time."""

    budget_seconds: float
    classes: list[int]
    total_classes: int
    attacks: list[str]
    dropped: list[dict[str, Any]] = field(default_factory=list)
    predicted_seconds: float = 0.0
    smoke_test: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line: the budget, the classes and attacks it allows, and what it left out."""
        line = (
            f"budget {self.budget_seconds / 60:.0f} min: {len(self.classes)} of {self.total_classes} classes (a seeded sample), "
            f"attacks {', '.join(self.attacks)}; predicted {self.predicted_seconds / 60:.1f} min"
        )
        if self.dropped:
            line += "; left out: " + ", ".join(f"{d['attack']} ({d['reason']})" for d in self.dropped)
        if self.smoke_test:
            line += "; too small a budget for a verdict: a smoke test"
        return line


def _core(row: dict[str, Any]) -> bool:
    return bool(row.get("adaptive")) or row["name"] in ALWAYS_KEPT


def plan_budget(
    estimate: dict[str, Any], *, budget_seconds: float, class_pool: Sequence[int], min_classes: int = 10, seed: int = 0
) -> BudgetPlan:
    """Choose classes and attacks so that the estimated run fits ``budget_seconds`` (see the module docstring).

    Args:
        estimate: :func:`~midefend.evaluation.cost.estimate_run`'s estimate for all of ``class_pool``
            (``attacks``: rows with ``name``, ``adaptive``, ``seconds``; ``reach``: its row or ``None``).
        class_pool: the classes the run could attack.
        min_classes: the fewest classes a verdict needs (more when the budget allows).
    """
    n = len(class_pool)
    if n == 0:
        raise ConfigError("plan_budget needs at least one class to attack")
    usable = budget_seconds * (1 - SAFETY)
    per_class = {row["name"]: row["seconds"] / n for row in estimate["attacks"]}
    fixed_per_class = (estimate.get("reach") or {}).get("seconds", 0.0) / n  # the reach step projects one photo per class
    core = [row["name"] for row in estimate["attacks"] if _core(row)]
    others = sorted((row["name"] for row in estimate["attacks"] if not _core(row)), key=lambda name: per_class[name])

    def cost(names: Sequence[str], k: int) -> float:
        return k * (fixed_per_class + sum(per_class[a] for a in names))

    floor = min(min_classes, n)
    k = floor
    while k > 1 and cost(core, k) > usable:
        k -= 1
    smoke = k < floor
    kept, dropped = list(core), []
    for name in others:
        if cost([*kept, name], k) <= usable:
            kept.append(name)
        else:
            dropped.append({"attack": name, "reason": f"needs {per_class[name] * k / 60:.1f} more min at {k} classes"})
    while k < n and cost(kept, k + 1) <= usable:
        k += 1
    classes = sorted(random.Random(seed).sample(list(class_pool), k))
    order = [row["name"] for row in estimate["attacks"]]
    return BudgetPlan(
        budget_seconds=float(budget_seconds), classes=classes, total_classes=n, attacks=[a for a in order if a in kept],
        dropped=dropped, predicted_seconds=round(cost(kept, k), 1), smoke_test=smoke,
    )


def headline_interval(per_class: Sequence[float], *, population: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of the mean of ``per_class`` scores as an estimate over all ``population`` classes.

    The standard error of a sample mean without replacement: ``s / sqrt(k) · sqrt((N − k) / (N − 1))``
    (``s``: the sample std, ``k`` classes sampled of ``N``); clipped to [0, 1].

    >>> headline_interval([0.0, 0.5, 1.0, 0.5], population=4)   # every class attacked: no sampling error
    (0.5, 0.5)
    >>> lo, hi = headline_interval([0.0, 0.5, 1.0, 0.5], population=40); round(lo, 3), round(hi, 3)
    (0.116, 0.884)
    """
    k = len(per_class)
    if k == 0 or population < k:
        raise ConfigError(f"headline_interval needs 1 to {population} class scores, got {k}")
    mean = sum(per_class) / k
    if k == population or k == 1:
        return (mean, mean) if k == population else (0.0, 1.0)
    s = math.sqrt(sum((v - mean) ** 2 for v in per_class) / (k - 1))
    half = z * s / math.sqrt(k) * math.sqrt((population - k) / (population - 1))
    return max(0.0, mean - half), min(1.0, mean + half)


def per_class_headline(identity: dict[str, Any]) -> list[float]:
    """Per attacked class, the share of its reconstructions the headline counts (consensus, else the evaluation model)."""
    per_image = identity.get("per_image") or {}
    labels = per_image.get("labels") or []
    judges = list(identity.get("consensus_judges") or [])
    if not judges:
        judges = [identity["evaluator"]] if identity.get("evaluator") in per_image else []
    if not labels or not judges:
        return []
    hits: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        hits.setdefault(label, []).append(int(all(per_image[j][i] == label for j in judges)))
    return [sum(v) / len(v) for _, v in sorted(hits.items())]


__all__ = ["ALWAYS_KEPT", "SAFETY", "BudgetPlan", "headline_interval", "parse_budget", "per_class_headline", "plan_budget"]
