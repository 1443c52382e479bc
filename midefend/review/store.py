"""``RUN_DIR/review/human.json``: the trials of one reviewer and their answers, written atomically.

Layout (``"format": "midefend-human-review"``, version 1)::

    {"format": ..., "version": 1, "reviewer": "ana" | null, "seed": 0, "k": 4, "shots": 3,
     "attacks": ["ppa"], "trials": [Trial.to_json(), ...],
     "answers": {"<trial id>": {"slot": 2 | null, "choice": 17 | null, "correct": true, "at": "2026-...Z"}}}

``slot`` is the position the person picked (``null``: "none of these / can't
tell"), ``choice`` the class in that slot. The file is rewritten after every
answer (temporary file, then rename), so closing the page loses nothing and the
next ``midefend review`` resumes. A file that cannot be read back is reported in
one line and never overwritten.

The file holds the true classes; it stays on disk and is never served to the page.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io.atomic import atomic_write_text
from .trials import Trial

__all__ = ["FORMAT", "Answer", "ReviewFile", "load_review", "review_files", "review_path", "save_review"]

FORMAT = "midefend-human-review"
VERSION = 1
_REVIEWER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


@dataclass(frozen=True)
class Answer:
    """One answer: the slot picked (``None``: none of these / can't tell) and the class in it."""

    slot: int | None
    choice: int | None
    correct: bool
    at: str

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "choice": self.choice, "correct": self.correct, "at": self.at}


@dataclass
class ReviewFile:
    """The trials and answers of one reviewer (see the module docstring for the JSON layout)."""

    path: Path
    reviewer: str | None
    seed: int
    k: int
    shots: int
    attacks: list[str]
    trials: list[Trial]
    answers: dict[str, Answer] = field(default_factory=dict)

    def trial(self, trial_id: str) -> Trial | None:
        return next((t for t in self.trials if t.id == trial_id), None)

    def answer(self, trial_id: str, slot: int | None) -> Answer:
        """Record the answer ``slot`` (``None``: none / can't tell) to trial ``trial_id`` (not yet saved)."""
        trial = self.trial(trial_id)
        if trial is None:
            raise DataError(f"no trial {trial_id!r} in this review")
        if slot is not None and not 0 <= slot < len(trial.candidates):
            raise DataError(f"slot must be in 0..{len(trial.candidates) - 1} or none, got {slot!r}")
        choice = trial.candidates[slot] if slot is not None else None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.answers[trial_id] = Answer(slot, choice, choice == trial.label, stamp)
        return self.answers[trial_id]

    @property
    def next_open(self) -> int:
        """Index of the first unanswered trial (``len(trials)`` when all are answered)."""
        return next((i for i, t in enumerate(self.trials) if t.id not in self.answers), len(self.trials))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "reviewer": self.reviewer, "seed": self.seed, "k": self.k, "shots": self.shots,
            "attacks": self.attacks, "trials": [t.to_json() for t in self.trials],
            "answers": {key: a.to_json() for key, a in self.answers.items()},
        }  # fmt: skip


def check_reviewer(name: str | None) -> str | None:
    """``name`` when it is a safe file-name part (letters, digits, ``_.-``, up to 40); raises DataError otherwise."""
    if name is not None and not _REVIEWER.match(name):
        raise DataError(f"reviewer name {name!r} must be 1-40 letters, digits, '_', '.' or '-' (it becomes part of a file name)")
    return name


def review_path(run_dir: str | Path, reviewer: str | None = None) -> Path:
    """``RUN_DIR/review/human.json``, or ``human-<reviewer>.json``."""
    check_reviewer(reviewer)
    return Path(run_dir) / "review" / (f"human-{reviewer}.json" if reviewer else "human.json")


def review_files(run_dir: str | Path) -> list[Path]:
    """Every reviewer's file in ``RUN_DIR/review`` (``human.json``, ``human-*.json``), sorted."""
    folder = Path(run_dir) / "review"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("human*.json") if p.name == "human.json" or p.name.startswith("human-"))


def _damaged(path: Path, why: str) -> DataError:
    return DataError(f"review file {str(path)!r} is damaged ({why}); it was left unchanged: repair it or move it away to start over")


def load_review(path: str | Path) -> ReviewFile | None:
    """The review stored at ``path``; ``None`` when there is none. A damaged file raises a one-line DataError."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(p, f"not readable JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _damaged(p, f"not a {FORMAT} file")
    if data.get("version") != VERSION:
        raise _damaged(p, f"version {data.get('version')!r}, this midefend reads version {VERSION}")
    try:
        trials = [Trial.from_json(t) for t in data["trials"]]
        answers = {
            str(key): Answer(None if a["slot"] is None else int(a["slot"]), None if a["choice"] is None else int(a["choice"]), bool(a["correct"]), str(a["at"]))
            for key, a in data["answers"].items()
        }
        review = ReviewFile(p, data.get("reviewer"), int(data["seed"]), int(data["k"]), int(data.get("shots", 3)), [str(x) for x in data["attacks"]], trials, answers)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(p, f"a missing or malformed field: {type(exc).__name__} {exc}") from None
    known = {t.id for t in trials}
    stray = [key for key in answers if key not in known]
    if stray:
        raise _damaged(p, f"answer to unknown trial {stray[0]!r}")
    for t in trials:
        answer = answers.get(t.id)
        if answer is not None and answer.correct != (answer.choice == t.label):
            raise _damaged(p, f"the answer to trial {t.id!r} does not match its candidates")
    return review


def save_review(review: ReviewFile) -> Path:
    """Write ``review`` to its path atomically (the ``review`` folder is created when missing)."""
    review.path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(review.path, json.dumps(review.to_json(), indent=1) + "\n", fsync=True)
