"""Forced-choice trials: which reconstructions a person judges, and against which candidate identities.

One trial shows one reconstruction beside ``K`` candidate identities: its true
class and ``K - 1`` other classes drawn at random, in a random order. The trial
list is drawn once, from a recorded seed, and stored with the answers, so a
resumed review shows exactly the same trials.

Sampling is balanced over classes: the classes are visited round-robin (in a
seeded random order), one not-yet-used reconstruction of each per round, until
``max_trials`` trials per attack are drawn or the reconstructions run out. So
with 40 classes and ``max_trials=40`` every class is judged once.

Each trial carries an opaque id (random hex, no class information); the page
only ever sees ids and the candidates' *slot* numbers, never a class index.

>>> trials = draw_trials({"ppa": [0, 0, 1, 1, 2, 2, 3, 3]}, classes=range(4), k=3, max_trials=4, seed=0)
>>> sorted(t.label for t in trials)                      # one reconstruction of each class
[0, 1, 2, 3]
>>> all(t.label in t.candidates and len(set(t.candidates)) == 3 for t in trials)
True
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Trial", "draw_trials"]


@dataclass(frozen=True)
class Trial:
    """One forced-choice trial.

    Attributes:
        id: opaque token naming the trial on the page (12 hex digits, no class information).
        attack: the attack row (``report.json``'s ``attacks[i]["name"]``) the reconstruction comes from.
        index: the reconstruction's position in that attack's flat, class-major result (the order of
            ``identity.per_image`` in ``report.json``).
        label: the true class (the target's class index) of the reconstruction.
        candidates: the ``K`` candidate classes in the order the page shows them (slot 0 is key 1).
    """

    id: str
    attack: str
    index: int
    label: int
    candidates: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "attack": self.attack, "index": self.index, "label": self.label, "candidates": list(self.candidates)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trial:
        return cls(str(data["id"]), str(data["attack"]), int(data["index"]), int(data["label"]), tuple(int(c) for c in data["candidates"]))


def _balanced(labels: Sequence[int], max_trials: int, rng: random.Random) -> list[int]:
    """Indices into ``labels``: round-robin over the classes (seeded order), at most ``max_trials``."""
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(int(c), []).append(i)
    order = sorted(by_class)
    rng.shuffle(order)
    for c in order:
        rng.shuffle(by_class[c])
    picked: list[int] = []
    while len(picked) < max_trials and any(by_class[c] for c in order):
        for c in order:
            if by_class[c] and len(picked) < max_trials:
                picked.append(by_class[c].pop())
    return picked


def draw_trials(
    attacks: Mapping[str, Sequence[int]], *, classes: Iterable[int], k: int = 4, max_trials: int = 40, seed: int = 0
) -> list[Trial]:
    """Draw the trials of a review, shuffled across attacks.

    Args:
        attacks: attack name -> the true class of each of its reconstructions (flat, class-major).
        classes: the classes that can be candidates (those with private training images).
        k: candidates per trial (the true class among them); chance is ``1/k``.
        max_trials: at most this many trials per attack.
        seed: the seed of every draw (recorded in ``human.json``).

    Raises:
        ConfigError: ``k`` < 2, fewer than ``k`` candidate classes, or a reconstruction whose class
            has no private images.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"k (candidates per trial) must be an integer >= 2, got {k!r}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {max_trials!r}")
    pool = sorted({int(c) for c in classes})
    if len(pool) < k:
        raise ConfigError(f"{k} candidates per trial need at least {k} classes with private images; this run has {len(pool)} (use a smaller --k)")
    rng = random.Random(seed)
    trials: list[Trial] = []
    used_ids: set[str] = set()
    for name in sorted(attacks):
        labels = attacks[name]
        for index in _balanced(labels, max_trials, rng):
            label = int(labels[index])
            if label not in pool:
                raise ConfigError(f"attack {name!r} reconstructed class {label}, which has no private training images")
            others = rng.sample([c for c in pool if c != label], k - 1)
            candidates = [label, *others]
            rng.shuffle(candidates)
            token = f"{rng.getrandbits(48):012x}"
            while token in used_ids:
                token = f"{rng.getrandbits(48):012x}"
            used_ids.add(token)
            trials.append(Trial(token, name, index, label, tuple(candidates)))
    rng.shuffle(trials)
    return trials
