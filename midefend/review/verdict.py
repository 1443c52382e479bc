"""The human verdict of a run: accuracy against chance with a 95 % interval, per attack, and the judges' agreement.

:func:`human_verdict` reads only JSON (``report.json`` and ``review/human*.json``),
never the images, so ``verify``'s report writer and ``compare`` can call it cheaply.

- **Accuracy**: share of trials whose picked candidate is the true identity;
  "none of these / can't tell" counts as wrong. **Chance** is ``1/K`` (the mean
  over trials when reviewers used different ``K``). The interval is the 95 %
  Wilson score interval (:mod:`~midefend.review.stats`). The identity counts as
  recognised above chance when the interval's lower end is above chance.
- **Several reviewers** are pooled: each answer is one trial of the pooled count
  (reviewers who share a seed judge the same reconstructions, so the pooled
  interval is somewhat optimistic); each reviewer's own numbers are kept too.
- **Judges**: for each automatic judge whose per-reconstruction top-1 verdicts
  the report records (``attacks[i]["metrics"]["identity"]["per_image"]``), on the same
  trials: the judge's accuracy, its agreement with the person (both recognise
  the identity, or both do not), and how many of its hits the person did not
  confirm (its false positives, if the person is right).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .stats import wilson_interval
from .store import ReviewFile, load_review, review_files

__all__ = ["NOT_RECORDED", "human_verdict"]

FORMAT = "midefend-human-verdict"
NOT_RECORDED = "judges' per-image verdicts not recorded in this report"
INTERVAL = "Wilson score interval, 95 %"


def _rate(correct: int, n: int, chance: float | None = None) -> dict[str, Any]:
    low, high = wilson_interval(correct, n)
    out: dict[str, Any] = {"n": n, "correct": correct, "accuracy": correct / n if n else None, "ci95": [low, high]}
    if chance is not None:
        out["chance"] = chance
        out["above_chance"] = bool(n and low > chance)
    return out


def _per_image(report: dict[str, Any], attack: str) -> dict[str, list[int]] | None:
    for row in report.get("attacks") or []:
        if row.get("name") == attack:
            identity = (row.get("metrics") or {}).get("identity") or row.get("identity") or {}  # verify writes it under metrics
            per_image = identity.get("per_image")
            return per_image if isinstance(per_image, dict) and isinstance(per_image.get("labels"), list) else None
    return None


def _judges(records: list[tuple[Any, Any]], per_image: dict[str, list[int]] | None) -> dict[str, Any]:
    """Agreement of each judge with the person on the answered trials ``records`` ((trial, answer) pairs)."""
    if per_image is None:
        return {"note": NOT_RECORDED}
    labels = per_image["labels"]
    if any(t.index >= len(labels) or int(labels[t.index]) != t.label for t, _ in records):
        return {"note": "the judges' per-image verdicts do not match these trials (was the attack re-run after the review?)"}
    out: dict[str, Any] = {}
    for judge, predictions in per_image.items():
        if judge == "labels" or not isinstance(predictions, list) or len(predictions) != len(labels):
            continue
        hits = [int(predictions[t.index]) == t.label for t, _ in records]
        agree = sum(h == a.correct for h, (_, a) in zip(hits, records))
        unconfirmed = sum(h and not a.correct for h, (_, a) in zip(hits, records))
        n = len(records)
        out[judge] = {
            "n": n, "judge_accuracy": sum(hits) / n if n else None, "agreement": agree / n if n else None,
            "judge_hits": sum(hits), "judge_hits_not_confirmed": unconfirmed,
        }  # fmt: skip
    return out or {"note": NOT_RECORDED}


def _reviewer_name(review: ReviewFile) -> str:
    return review.reviewer or "(default)"


def human_verdict(run_dir: str | Path) -> dict[str, Any] | None:
    """The human verdict of ``run_dir`` (see the module docstring); ``None`` when nobody has answered a trial.

    Raises:
        DataError: a damaged ``human*.json`` (one line naming it; nothing is changed).
    """
    run = Path(run_dir)
    reviews = [r for r in (load_review(p) for p in review_files(run)) if r is not None and r.answers]
    if not reviews:
        return None
    try:
        report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    pooled: dict[str, list[tuple[Any, Any, ReviewFile]]] = {}
    for review in reviews:
        for trial in review.trials:
            answer = review.answers.get(trial.id)
            if answer is not None:
                pooled.setdefault(trial.attack, []).append((trial, answer, review))
    attacks: dict[str, Any] = {}
    for name in sorted(pooled, key=lambda a: (a != report.get("strongest_attack"), a)):
        items = pooled[name]
        chance = sum(1 / len(t.candidates) for t, _, _ in items) / len(items)
        row = _rate(sum(a.correct for _, a, _ in items), len(items), chance)
        row["none_of_these"] = sum(a.slot is None for _, a, _ in items)
        row["by_reviewer"] = {}
        for review in reviews:
            own = [(t, a) for t, a, r in items if r is review]
            if own:
                row["by_reviewer"][_reviewer_name(review)] = _rate(sum(a.correct for _, a in own), len(own))
        row["judges"] = _judges([(t, a) for t, a, _ in items], _per_image(report, name))
        attacks[name] = row
    everything = [x for items in pooled.values() for x in items]
    overall_chance = sum(1 / len(t.candidates) for t, _, _ in everything) / len(everything)
    return {
        "format": FORMAT, "interval": INTERVAL, "reviewers": [_reviewer_name(r) for r in reviews],
        "files": [r.path.name for r in reviews], "strongest_attack": report.get("strongest_attack"),
        "overall": _rate(sum(a.correct for _, a, _ in everything), len(everything), overall_chance), "attacks": attacks,
    }  # fmt: skip




