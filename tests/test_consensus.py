"""The identity verdict: consensus of independent judges, unconfirmed share, chance, independence, strongest row."""

from __future__ import annotations

import math

import pytest
import torch

from midefend.errors import ConfigError
from midefend.evaluation.aggregate import combine_runs, strongest
from midefend.evaluation.consensus import (
    IdentityVerdict,
    JudgeInput,
    average_verdicts,
    chance_of_majority,
    identity_verdict,
    shares_backbone,
    verdict_sentence,
)


def onehot(preds: list[int], num_classes: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(preds), num_classes).float()


# Three classes attacked (0, 1, 2), two reconstructions each, C = 4 private classes.
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
FACENET = JudgeInput("facenet", "FaceNet", onehot([0, 0, 1, 3, 3, 2]))  # hits 0, 1, 2, 5
DLIB = JudgeInput("dlib", "dlib ResNet", onehot([0, 3, 1, 1, 3, 3]))  # hits 0, 2, 3
EVAL = JudgeInput("eval", "evaluation model", onehot([0, 0, 1, 1, 2, 2]))  # accepts all six


class TestIdentityVerdict:
    def test_hand_computed(self):
        v = identity_verdict(LABELS, [FACENET, DLIB], num_classes=4, evaluator=EVAL)
        # consensus: both hit items 0 and 2 -> 2 of 6
        assert v.consensus_top1 == pytest.approx(2 / 6) and v.consensus_judges == ("facenet", "dlib")
        assert [(j.name, j.top1) for j in v.judges] == [("facenet", pytest.approx(4 / 6)), ("dlib", pytest.approx(3 / 6))]
        assert v.evaluator_top1 == 1.0
        # confirmed by at least one judge: items 0, 1, 2, 3, 5 -> only item 4 of the six accepted is unconfirmed
        assert v.unconfirmed_share == pytest.approx(1 / 6)
        # per class, consensus hits: class 0 one of two (recovered), class 1 one of two (recovered), class 2 none
        assert v.identities_recovered == 2 and v.n_identities == 3 and v.n_reconstructions == 6
        assert v.identities_by_chance == pytest.approx(3 * (1 - (3 / 4) ** 2))
        assert v.headline == v.consensus_top1 and v.headline_source == "independent consensus"

    def test_chance_levels(self):
        v = identity_verdict(LABELS, [FACENET], num_classes=4)
        assert v.chance_top1 == 0.25
        assert (v.judges[0].chance_top1, v.judges[0].chance_top5) == (0.25, 1.0)  # top-5 of 4 classes: always
        assert identity_verdict(torch.zeros(2, dtype=torch.long), [JudgeInput("f", "", torch.zeros(2, 40))], num_classes=40).judges[0].chance_top5 == 0.125

    def test_top5(self):
        scores = torch.tensor([[6.0, 5, 4, 3, 2, 1, 0], [0.0, 1, 2, 3, 4, 5, 6]])  # class 0 ranks 1st, then 7th
        v = identity_verdict(torch.tensor([0, 0]), [JudgeInput("f", "", scores)], num_classes=7)
        assert (v.judges[0].top1, v.judges[0].top5) == (0.5, 0.5)

    def test_chance_of_majority_reference(self):
        assert chance_of_majority(1, 40) == pytest.approx(1 / 40)
        assert chance_of_majority(4, 10) == pytest.approx(sum(math.comb(4, j) * 0.1**j * 0.9 ** (4 - j) for j in (2, 3, 4)))
        with pytest.raises(ConfigError, match=r"^chance_of_majority needs K >= 1 and C >= 1, got 0 and 4$"):
            chance_of_majority(0, 4)

    def test_not_independent_is_left_out(self):
        marked = JudgeInput("facenet", "FaceNet", FACENET.scores, independent=False, note="shares the target's network")
        v = identity_verdict(LABELS, [marked, DLIB], num_classes=4, evaluator=EVAL)
        assert v.consensus_judges == ("dlib",) and v.consensus_top1 == pytest.approx(3 / 6)
        assert v.judge("facenet").independent is False and v.judge("facenet").top1 == pytest.approx(4 / 6)  # its column stays
        assert v.unconfirmed_share == pytest.approx(3 / 6)  # dlib confirms 0, 2, 3 of the six accepted

    def test_no_independent_judge_falls_back_to_the_evaluator(self):
        v = identity_verdict(LABELS, [], num_classes=4, evaluator=EVAL)
        assert v.consensus_top1 is None and v.unconfirmed_share is None and v.identities_recovered is None
        assert v.headline == 1.0 and v.headline_source == "evaluation model (no independent judge)"
        assert verdict_sentence(v).startswith("no independent judge: the headline is the evaluation model's acceptance")

    def test_evaluator_accepting_nothing(self):
        v = identity_verdict(LABELS, [FACENET], num_classes=4, evaluator=JudgeInput("eval", "", onehot([3] * 6)))
        assert v.evaluator_top1 == 0.0 and v.unconfirmed_share is None

    def test_json_round_trip_and_version(self):
        v = identity_verdict(LABELS, [FACENET, DLIB], num_classes=4, evaluator=EVAL)
        data = v.to_json()
        assert data["version"] == 1 and data["headline"] == v.consensus_top1 and data["chance_top1"] == 0.25
        assert data["per_image"] == {"labels": [0, 0, 1, 1, 2, 2], "facenet": [0, 0, 1, 3, 3, 2], "dlib": [0, 3, 1, 1, 3, 3], "eval": [0, 0, 1, 1, 2, 2]}
        assert IdentityVerdict.from_json(data) == v
        with pytest.raises(ConfigError, match=r"^this identity verdict has format version 2; this midefend reads up to 1: upgrade midefend$"):
            IdentityVerdict.from_json({**data, "version": 2})

    def test_bad_inputs(self):
        with pytest.raises(ConfigError, match=r"^judge 'facenet' scored \(6, 4\), expected \(6, 5\)$"):
            identity_verdict(LABELS, [FACENET], num_classes=5)
        with pytest.raises(ConfigError, match=r"^judge names must be unique"):
            identity_verdict(LABELS, [FACENET, FACENET], num_classes=4)
        with pytest.raises(ConfigError, match=r"^identity_verdict needs a non-empty \(N,\) label vector"):
            identity_verdict(torch.zeros(0, dtype=torch.long), [], num_classes=4)

    def test_sentence(self):
        v = identity_verdict(LABELS, [FACENET, DLIB], num_classes=4, evaluator=EVAL)
        assert verdict_sentence(v) == (
            "an attacker recovers 2 of 3 identities as judged by facenet and dlib (chance: 1.3); 33.3% of reconstructions are "
            "confirmed by both (chance 25.0%); the evaluation model would have claimed 100.0%, 17% of it unconfirmed"
        )


class TestIndependence:
    @pytest.mark.parametrize(
        ("judge", "arch", "shared"),
        [("facenet", "midefend/facenet", True), ("facenet", "facenet", True), ("FaceNet", "my_pkg/facenet_small", True),
         ("facenet", "timm/resnet18", False), ("dlib", "midefend/facenet", False), ("facenet", None, False), ("facenet", "timm/facenetwork", False)],
    )  # fmt: skip
    def test_shares_backbone(self, judge, arch, shared):
        assert shares_backbone(judge, arch) is shared


def _row(name: str, evaluator: float, headline: float | None) -> dict:
    metrics = {"attack_acc_top1": evaluator}
    if headline is not None:
        metrics["identity"] = {"headline": headline}
    return {"name": name, "metrics": metrics}


class TestStrongestByIdentity:
    def test_identity_decides_not_the_evaluator(self):
        rows = [_row("ppa", 0.9, 0.05), _row("ppa+eot", 0.6, 0.125), _row("nes", 0.95, 0.0)]
        assert strongest(rows)["name"] == "ppa+eot"

    def test_ties_broken_by_the_evaluator_then_order(self):
        assert strongest([_row("a", 0.5, 0.1), _row("b", 0.7, 0.1)])["name"] == "b"
        assert strongest([_row("a", 0.7, 0.1), _row("b", 0.7, 0.1)])["name"] == "a"

    def test_older_rows_without_identity(self):
        assert strongest([_row("a", 0.5, None), _row("b", 0.7, None)])["name"] == "b"


class TestRepeatedRuns:
    def test_verdicts_averaged_over_runs(self):
        one = identity_verdict(LABELS, [FACENET, DLIB], num_classes=4, evaluator=EVAL).to_json()
        two = identity_verdict(LABELS, [FACENET, JudgeInput("dlib", "", onehot([0, 0, 1, 1, 2, 2]))], num_classes=4, evaluator=EVAL).to_json()
        merged = average_verdicts([one, two])
        assert merged["runs"] == 2 and merged["headline"] == pytest.approx((2 / 6 + 4 / 6) / 2)
        assert merged["judges"][1]["top1"] == pytest.approx((3 / 6 + 1.0) / 2)
        base = {"attack_acc_top1": 1.0, "attack_acc_top1_std": 0.0, "attack_acc_top5": 1.0, "attack_acc_top5_std": 0.0}
        combined = combine_runs([{**base, "identity": one}, {**base, "identity": two}])
        assert combined["identity"]["headline"] == pytest.approx(0.5)
