"""The identity verdict: what independent recognisers confirm, against chance, beside the evaluation model.

An evaluation model trained on the private data accepts reconstructions that carry adversarial
features transferred from the target (Ho et al. 2025; on our ORL targets it accepts 90 % where
FaceNet confirms at most 11 %). The headline of a verify report is therefore what *independent*
judges — face recognisers that never saw the private set and share no weights with the target —
confirm. With ``N`` reconstructions of ``C`` private classes:

=====================  ===============================================================================
quantity               definition
=====================  ===============================================================================
judge top-k            fraction of reconstructions whose true class is among the judge's k nearest
                       identities; chance ``k / C``
consensus top-1        fraction of reconstructions that *every* independent judge places nearest their
                       person; chance at most ``1 / C`` (equal to it when the judges always agree)
unconfirmed share      of the reconstructions the evaluation model accepts (its top-1 is the true
                       class), the fraction that *no* independent judge confirms — the estimate of
                       the evaluator's Type-I false positives; ``None`` when it accepts none
identities recovered   attacked classes at least half of whose reconstructions are consensus hits;
                       the count expected by chance is ``n · P(Binomial(K, 1/C) ≥ ⌈K/2⌉)``
=====================  ===============================================================================

A judge that shares weights with the target (FaceNet judging a target fine-tuned from the FaceNet
trunk) keeps its column but is marked and left out of the consensus: it sees the target's own
features, not an independent view of the face. Without any independent judge the headline falls
back to the evaluation model and says so.

>>> labels = torch.tensor([0, 0, 1, 1])
>>> onehot = lambda preds: torch.nn.functional.one_hot(torch.tensor(preds), 3).float()
>>> v = identity_verdict(labels, [
...     JudgeInput("facenet", "FaceNet", onehot([0, 0, 1, 2])),
...     JudgeInput("dlib", "dlib ResNet", onehot([0, 1, 1, 2])),
... ], num_classes=3, evaluator=JudgeInput("eval", "evaluation model", onehot([0, 1, 1, 1])))
>>> v.consensus_top1, v.evaluator_top1, v.unconfirmed_share  # consensus: items 0 and 2; eval accepts 0, 2, 3; 3 unconfirmed
(0.5, 0.75, 0.3333333333333333)
>>> v.headline_source, v.identities_recovered
('independent consensus', 2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from .metrics import topk_hits

#: The verdict's JSON layout (``to_json``); readers accept this version and reports without one.
VERDICT_VERSION = 1


@dataclass(frozen=True)
class JudgeInput:
    """One judge's scores on the reconstructions (``(N, C)``, higher = more likely that class).

    ``independent=False`` with a ``note`` marks a judge that must stay out of the consensus;
    ``fallbacks`` counts reconstructions the judge could not align (dlib without a detected face).
    """

    name: str
    description: str
    scores: torch.Tensor
    independent: bool = True
    note: str | None = None
    fallbacks: int | None = None


@dataclass(frozen=True)
class JudgeScore:
    """One judge's column of the verdict."""

    name: str
    description: str
    independent: bool
    top1: float
    top5: float
    chance_top1: float
    chance_top5: float
    note: str | None = None
    fallbacks: int | None = None


@dataclass(frozen=True)
class IdentityVerdict:
    """How much identity an attack's reconstructions carry, judged independently (see the module docstring)."""

    num_classes: int
    n_reconstructions: int
    n_identities: int
    judges: tuple[JudgeScore, ...]
    consensus_judges: tuple[str, ...]
    consensus_top1: float | None
    identities_recovered: int | None
    identities_by_chance: float | None
    evaluator: str | None = None
    evaluator_top1: float | None = None
    unconfirmed_share: float | None = None
    per_image: dict[str, list[int]] = field(default_factory=dict)

    @property
    def chance_top1(self) -> float:
        return 1.0 / self.num_classes

    @property
    def headline(self) -> float:
        """The consensus of the independent judges; the evaluation model's accuracy only when there is none."""
        if self.consensus_top1 is not None:
            return self.consensus_top1
        return self.evaluator_top1 if self.evaluator_top1 is not None else 0.0

    @property
    def headline_source(self) -> str:
        if self.consensus_top1 is not None:
            return "independent consensus"
        return "evaluation model (no independent judge)"

    def judge(self, name: str) -> JudgeScore | None:
        return next((j for j in self.judges if j.name == name), None)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["judges"] = [asdict(j) for j in self.judges]
        out["consensus_judges"] = list(self.consensus_judges)
        return {"version": VERDICT_VERSION, **out, "headline": self.headline, "headline_source": self.headline_source, "chance_top1": self.chance_top1}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdentityVerdict:
        version = data.get("version", VERDICT_VERSION)
        if version > VERDICT_VERSION:
            raise ConfigError(f"this identity verdict has format version {version}; this midefend reads up to {VERDICT_VERSION}: upgrade midefend")
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in data.items() if k in known}
        fields["judges"] = tuple(JudgeScore(**j) for j in data.get("judges", []))
        fields["consensus_judges"] = tuple(data.get("consensus_judges", []))
        return cls(**fields)


def chance_of_majority(per_class: int, num_classes: int) -> float:
    """``P(Binomial(K, 1/C) ≥ ⌈K/2⌉)``: a class counts as recovered by chance alone.

    >>> round(chance_of_majority(2, 4), 4)  # at least 1 of 2 hits at p = 1/4: 1 - (3/4)^2
    0.4375
    """
    if per_class < 1 or num_classes < 1:
        raise ConfigError(f"chance_of_majority needs K >= 1 and C >= 1, got {per_class} and {num_classes}")
    p, need = 1.0 / num_classes, math.ceil(per_class / 2)
    return sum(math.comb(per_class, j) * p**j * (1 - p) ** (per_class - j) for j in range(need, per_class + 1))


def _check(labels: torch.Tensor, judge: JudgeInput, num_classes: int) -> None:
    if judge.scores.ndim != 2 or judge.scores.shape[0] != labels.shape[0] or judge.scores.shape[1] != num_classes:
        raise ConfigError(f"judge {judge.name!r} scored {tuple(judge.scores.shape)}, expected ({labels.shape[0]}, {num_classes})")


def identity_verdict(
    labels: torch.Tensor, judges: Sequence[JudgeInput], *, num_classes: int, evaluator: JudgeInput | None = None
) -> IdentityVerdict:
    """The verdict of one attack from each judge's scores on its reconstructions (``labels``: the attacked class of each).

    ``judges`` are the face recognisers (independent unless marked); ``evaluator`` is the evaluation
    model trained on the private data, never counted as independent.
    """
    labels = labels.cpu().long()
    if labels.ndim != 1 or labels.numel() == 0:
        raise ConfigError(f"identity_verdict needs a non-empty (N,) label vector, got {tuple(labels.shape)}")
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ConfigError(f"judge names must be unique, got {names}")
    scores, hits = [], {}
    per_image: dict[str, list[int]] = {"labels": labels.tolist()}
    for judge in judges:
        _check(labels, judge, num_classes)
        hits[judge.name] = topk_hits(judge.scores, labels, 1)
        per_image[judge.name] = judge.scores.argmax(dim=1).cpu().tolist()
        scores.append(
            JudgeScore(
                name=judge.name, description=judge.description, independent=judge.independent, note=judge.note, fallbacks=judge.fallbacks,
                top1=float(hits[judge.name].float().mean()), top5=float(topk_hits(judge.scores, labels, 5).float().mean()),
                chance_top1=1.0 / num_classes, chance_top5=min(5, num_classes) / num_classes,
            )
        )
    independent = [j.name for j in judges if j.independent]
    consensus = recovered = by_chance = None
    if independent:
        agreed = torch.stack([hits[n] for n in independent]).all(dim=0)
        consensus = float(agreed.float().mean())
        classes = labels.unique()
        recovered = sum(int(2 * int(agreed[labels == c].sum()) >= int((labels == c).sum())) for c in classes)
        per_class = int((labels == classes[0]).sum())
        by_chance = len(classes) * chance_of_majority(per_class, num_classes)
    eval_top1 = unconfirmed = None
    if evaluator is not None:
        _check(labels, evaluator, num_classes)
        accepted = topk_hits(evaluator.scores, labels, 1)
        per_image[evaluator.name] = evaluator.scores.argmax(dim=1).cpu().tolist()
        eval_top1 = float(accepted.float().mean())
        if independent and accepted.any():
            confirmed = torch.stack([hits[n] for n in independent]).any(dim=0)
            unconfirmed = float((accepted & ~confirmed).sum()) / float(accepted.sum())
    return IdentityVerdict(
        num_classes=num_classes, n_reconstructions=int(labels.numel()), n_identities=int(labels.unique().numel()),
        judges=tuple(scores), consensus_judges=tuple(independent), consensus_top1=consensus,
        identities_recovered=recovered, identities_by_chance=by_chance,
        evaluator=evaluator.name if evaluator is not None else None, evaluator_top1=eval_top1, unconfirmed_share=unconfirmed,
        per_image=per_image,
    )


def shares_backbone(judge: str, target_arch: str | None) -> bool:
    """Whether ``target_arch`` (a checkpoint's recorded ``namespace/name``) is built on the judge's own network.

    >>> shares_backbone("facenet", "midefend/facenet"), shares_backbone("facenet", "timm/resnet18"), shares_backbone("dlib", "midefend/facenet")
    (True, False, False)
    """
    if not target_arch:
        return False
    name = str(target_arch).rsplit("/", 1)[-1].lower()
    return name == judge.lower() or name.startswith(f"{judge.lower()}_") or name.startswith(f"{judge.lower()}-")


def verdict_sentence(v: IdentityVerdict) -> str:
    """The verdict in plain words: identities recovered by the independent judges against chance, and the evaluator's claim.

    >>> v = IdentityVerdict(num_classes=40, n_reconstructions=80, n_identities=40, judges=(), consensus_judges=("facenet", "dlib"),
    ...     consensus_top1=0.05, identities_recovered=2, identities_by_chance=1.9, evaluator="eval", evaluator_top1=0.9, unconfirmed_share=0.95)
    >>> print(verdict_sentence(v))
    an attacker recovers 2 of 40 identities as judged by facenet and dlib (chance: 1.9); 5.0% of reconstructions are confirmed by both (chance 2.5%); the evaluation model would have claimed 90.0%, 95% of it unconfirmed
    """
    if v.consensus_top1 is None:
        line = "no independent judge: the headline is the evaluation model's acceptance, not confirmed identity"
        if v.evaluator_top1 is not None:
            line += f" ({100 * v.evaluator_top1:.1f}% of reconstructions accepted; chance {100 * v.chance_top1:.1f}%)"
        return line
    who = " and ".join(v.consensus_judges)
    both = "both" if len(v.consensus_judges) == 2 else "all of them" if len(v.consensus_judges) > 2 else who
    line = (
        f"an attacker recovers {v.identities_recovered} of {v.n_identities} identities as judged by {who} "
        f"(chance: {v.identities_by_chance:.1f}); {100 * v.consensus_top1:.1f}% of reconstructions are confirmed by {both} "
        f"(chance {100 * v.chance_top1:.1f}%)"
    )
    if v.evaluator_top1 is not None:
        line += f"; the evaluation model would have claimed {100 * v.evaluator_top1:.1f}%"
        if v.unconfirmed_share is not None:
            line += f", {100 * v.unconfirmed_share:.0f}% of it unconfirmed"
    return line


__all__ = [
    "VERDICT_VERSION",
    "average_verdicts",
    "IdentityVerdict",
    "JudgeInput",
    "JudgeScore",
    "chance_of_majority",
    "identity_verdict",
    "shares_backbone",
    "verdict_sentence",
]


_AVERAGED = ("consensus_top1", "identities_recovered", "evaluator_top1", "unconfirmed_share", "headline")


def average_verdicts(verdicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The verdict of repeated attack runs (JSON form): each number averaged over the runs that have it.

    Judges' top-1/top-5 are averaged too; ``per_image`` stays the first run's, and ``runs`` says how many were pooled.

    >>> a = {"consensus_top1": 0.1, "headline": 0.1, "identities_recovered": 2, "judges": [{"name": "f", "top1": 0.2, "top5": 0.5}]}
    >>> b = {**a, "consensus_top1": 0.3, "headline": 0.3, "identities_recovered": 3, "judges": [{"name": "f", "top1": 0.4, "top5": 0.5}]}
    >>> m = average_verdicts([a, b]); round(m["headline"], 6), m["identities_recovered"], round(m["judges"][0]["top1"], 6), m["runs"]
    (0.2, 2.5, 0.3, 2)
    """
    if not verdicts:
        raise ConfigError("average_verdicts needs at least one verdict")
    out = dict(verdicts[0])
    for key in _AVERAGED:
        values = [v[key] for v in verdicts if v.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
    judges = []
    for i, j in enumerate(verdicts[0].get("judges", [])):
        merged = dict(j)
        for key in ("top1", "top5"):
            merged[key] = sum(v["judges"][i][key] for v in verdicts) / len(verdicts)
        judges.append(merged)
    out["judges"] = judges
    out["runs"] = len(verdicts)
    return out
