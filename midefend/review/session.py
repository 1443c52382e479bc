"""A review in progress: its stored trials and answers, and the images each trial shows, behind opaque tokens.

The page never sees a class index or a file path: a trial is named by its
opaque id, its candidates by slot (0..K-1, the on-screen order) and every image
by a random token that maps, in this process only, to one image. The tokens of
one class's private images differ from trial to trial, so nothing in the page
links a candidate to a class.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .store import ReviewFile, load_review, review_path, save_review
from .trials import draw_trials

__all__ = ["ReviewOptions", "ReviewSession", "open_review"]

NOTICE = (
    "This page shows private training images of the model's owner. Keep it on this computer, "
    "do not share screenshots, and close it when you are done."
)


@dataclass(frozen=True)
class ReviewOptions:
    """How a review is drawn (recorded in ``human.json``; a resumed review keeps its own)."""

    k: int = 4
    trials: int = 40
    shots: int = 3
    seed: int = 0
    all_attacks: bool = False
    reviewer: str | None = None
    data: str | None = None
    train_data: str | None = None
    test_data: str | None = None


@dataclass
class ReviewSession:
    """The review file plus the images of its trials (``image_of[token]`` renders one PNG)."""

    review: ReviewFile
    reconstruction: Callable[[str, int], Any]
    private: dict[int, Any]
    _tokens: dict[str, tuple[str, Any]] = field(default_factory=dict)
    _trial_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    _png: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _token(self, what: tuple[str, Any]) -> str:
        token = secrets.token_urlsafe(12)
        self._tokens[token] = what
        return token

    def state(self) -> dict[str, Any]:
        r = self.review
        open_ = [i for i, t in enumerate(r.trials) if t.id not in r.answers]
        return {"total": len(r.trials), "answered": len(r.trials) - len(open_), "next": r.next_open, "open": open_, "k": r.k, "notice": NOTICE}

    def trial_payload(self, number: int) -> dict[str, Any]:
        """What the page needs for trial ``number`` (0-based): ids, slots and image URLs, never a class."""
        trials = self.review.trials
        if not 0 <= number < len(trials):
            raise ConfigError(f"trial number must be in 0..{len(trials) - 1}, got {number}")
        trial = trials[number]
        with self.lock:
            if trial.id not in self._trial_tokens:
                self._trial_tokens[trial.id] = {
                    "reconstruction": "img/" + self._token(("recon", (trial.attack, trial.index))),
                    "candidates": [
                        {"slot": slot, "images": ["img/" + self._token(("private", (c, j))) for j in range(len(self.private[c]))]}
                        for slot, c in enumerate(trial.candidates)
                    ],
                }
            answer = self.review.answers.get(trial.id)
        given = None if answer is None else ("none" if answer.slot is None else answer.slot)
        return {"id": trial.id, "number": number, "total": len(trials), **self._trial_tokens[trial.id], "answer": given}

    def image(self, token: str) -> bytes | None:
        """PNG bytes of the image behind ``token``; ``None`` for an unknown token."""
        from .images import png_bytes

        with self.lock:
            what = self._tokens.get(token)
            if what is None:
                return None
            if token not in self._png:
                kind, key = what
                image = self.reconstruction(*key) if kind == "recon" else self.private[key[0]][key[1]]
                self._png[token] = png_bytes(image)
            return self._png[token]

    def answer(self, trial_id: str, slot: int | None) -> dict[str, Any]:
        """Record and save an answer; returns the new state (no word on whether it was right)."""
        with self.lock:
            self.review.answer(trial_id, slot)
            save_review(self.review)
        return self.state()


def open_review(run_dir: str | Path, options: ReviewOptions) -> ReviewSession:
    """Resume the review in ``RUN_DIR/review`` or draw a new one; load the images its trials need."""
    from .images import load_attack_images, load_candidates, read_report

    run = Path(run_dir)
    report = read_report(run)
    path = review_path(run, options.reviewer)
    review = load_review(path)  # a damaged file raises here, before anything is written
    if review is None:
        names = [row["name"] for row in report["attacks"]] if options.all_attacks else [report.get("strongest_attack") or report["attacks"][0]["name"]]
        labels = {name: load_attack_images(run, name).labels for name in names}
        private = load_candidates(report, shots=options.shots, data=options.data, train_data=options.train_data, test_data=options.test_data)
        trials = draw_trials(labels, classes=private, k=options.k, max_trials=options.trials, seed=options.seed)
        review = ReviewFile(path, options.reviewer, options.seed, options.k, options.shots, names, trials)
        save_review(review)
    else:
        private = load_candidates(report, shots=review.shots, data=options.data, train_data=options.train_data, test_data=options.test_data)
    cache: dict[str, Any] = {}

    def reconstruction(attack: str, index: int) -> Any:
        if attack not in cache:
            cache[attack] = load_attack_images(run, attack).images
        return cache[attack][index]

    missing = sorted({c for t in review.trials for c in t.candidates if c not in private})
    if missing:
        raise ConfigError(f"the private data has no images of class {missing[0]}, which this review shows (pass the data the run used)")
    return ReviewSession(review, reconstruction, private)
