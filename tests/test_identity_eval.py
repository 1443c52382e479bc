"""FaceNet as a judge: nearest-identity accuracy, δ_face and agreement, with an embedder of known outputs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from midefend.attacks.base import AttackResult
from midefend.errors import ConfigError
from midefend.evaluation.evaluate import evaluate_attack
from midefend.evaluation.evaluators import (
    Evaluators,
    FaceJudge,
    build_evaluators,
    judge,
    split_eval_specs,
)
from midefend.evaluation.identity import (
    NearestIdentityEvaluator,
    agreement,
    class_distances,
    delta_face,
    identity_metrics,
)


class PixelEmbedder(nn.Module):
    """``embed(x)`` = the image's pixels, flattened: images of shape (B, 1, 1, 2) are 2-d points."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the module a device
        self.calls = 0

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return images.flatten(1)


def points(*xy: tuple[float, float]) -> torch.Tensor:
    return torch.tensor(xy, dtype=torch.float32).view(len(xy), 1, 1, 2)


# Gallery: class 0 at (0, 0) and (1, 0); class 1 at (0, 3); class 2 at (4, 4).
GALLERY, GALLERY_LABELS = points((0, 0), (1, 0), (0, 3), (4, 4)), torch.tensor([0, 0, 1, 2])
# Reconstructions of classes 0 and 1, two each (hand-computed class distances in the comments).
RECON = points((0.5, 0), (0, 2.5), (0, 2), (4, 3.5))
EXPECTED = torch.tensor(
    [
        [0.5, math.sqrt(9.25), math.sqrt(28.25)],  # nearest: class 0 -> hit
        [2.5, 0.5, math.sqrt(18.25)],  # nearest: class 1 -> miss (made for 0)
        [2.0, 1.0, math.sqrt(20.0)],  # nearest: class 1 -> hit
        [math.sqrt(21.25), math.sqrt(16.25), 0.5],  # nearest: class 2 -> miss (made for 1)
    ],
    dtype=torch.float64,
)


def make_result() -> AttackResult:
    return AttackResult(attack="fake", classes=[0, 1], images=RECON.view(2, 2, 1, 1, 2), target_confidence=torch.zeros(2, 2))


def make_evaluator() -> NearestIdentityEvaluator:
    return NearestIdentityEvaluator(PixelEmbedder(), GALLERY, GALLERY_LABELS, num_classes=3)


class TestNearestIdentity:
    def test_class_distances(self):
        got = class_distances(RECON.flatten(1), GALLERY.flatten(1), GALLERY_LABELS, num_classes=4)
        torch.testing.assert_close(got[:, :3], EXPECTED)
        assert torch.isinf(got[:, 3]).all()  # class 3 has no gallery image

    def test_metrics_hand_computed(self):
        other = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])  # hits all four
        m = identity_metrics(make_result(), make_evaluator(), other_scores=other)
        assert m["attack_acc_top1"] == 0.5 and m["attack_acc_top1_std"] == 0.0  # one hit per class
        assert m["attack_acc_top5"] == 1.0  # 3 classes: every true class is among the 5 nearest
        assert m["delta_face"] == pytest.approx((0.5 + 2.5 + 1.0 + math.sqrt(16.25)) / 4)
        assert m["agreement"] == 0.5  # FaceNet misses reconstructions 1 and 3, the other judge hits all

    def test_top2_ranks_by_distance(self):
        scores = make_evaluator().predict(RECON)
        assert scores.argsort(dim=1, descending=True).tolist() == [[0, 1, 2], [1, 0, 2], [1, 0, 2], [2, 1, 0]]

    def test_evaluate_attack_accepts_it_and_embeds_once(self):
        evaluator = make_evaluator()
        metrics = evaluate_attack(make_result(), evaluator, SimpleNamespace(images=GALLERY, labels=GALLERY_LABELS))
        assert metrics["attack_acc_top1"] == 0.5
        assert metrics["knn_distance"] == pytest.approx((0.25 + 6.25 + 1.0 + 16.25) / 4)  # squared, in embedding space
        identity_metrics(make_result(), evaluator)
        # the reconstructions, the whole gallery and its attacked-class subset: each embedded once
        assert evaluator.embedder.calls == 3

    def test_delta_face_needs_the_class(self):
        with pytest.raises(ConfigError, match=r"no private images of class\(es\) \[3\] to measure δ_face against"):
            delta_face(torch.tensor([[0.1, float("inf"), 0.2, float("inf")]]), torch.tensor([3]))

    def test_agreement(self):
        a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        assert agreement(a, b, torch.tensor([0, 0, 0])) == pytest.approx(1 / 3)  # hit/hit, hit/miss, miss/hit


class TestResolve:
    def test_split_specs(self):
        assert split_eval_specs(None) == ([], [])
        assert split_eval_specs("facenet") == ([], ["facenet"])
        assert split_eval_specs(["e.safetensors"]) == (["e.safetensors"], [])
        assert split_eval_specs(["DLIB", "e.safetensors", "facenet", "dlib"], known=("facenet", "dlib")) == (["e.safetensors"], ["dlib", "facenet"])

    def test_other_data_needs_an_eval_model(self):
        train = SimpleNamespace(name="digits", images=GALLERY, labels=GALLERY_LABELS)
        with pytest.raises(ConfigError, match=r"^no evaluation model: pass --eval-model EVAL.safetensors .* or --eval-model facenet for face data$"):
            build_evaluators(None, target_ckpt=SimpleNamespace(num_classes=3), train=train, device="cpu", load=None)

    def test_face_data_without_recognisers(self, monkeypatch):
        import midefend.evaluation.recognisers as recognisers

        monkeypatch.setattr(recognisers, "available_recognisers", lambda: [])
        train = SimpleNamespace(name="orl", images=GALLERY, labels=GALLERY_LABELS)
        with pytest.raises(ConfigError, match=r"^no evaluation model: the face recognisers, the default on face data, are not installed \(.*\); or pass --eval-model EVAL.safetensors$"):
            build_evaluators(None, target_ckpt=SimpleNamespace(num_classes=3), train=train, device="cpu", load=None)

    def test_missing_checkpoint_and_two_checkpoints(self, tmp_path):
        train = SimpleNamespace(name="orl", images=GALLERY, labels=GALLERY_LABELS)
        with pytest.raises(ConfigError, match=r"is neither a face recogniser \(facenet, dlib\) nor an existing checkpoint file"):
            build_evaluators(str(tmp_path / "no.safetensors"), target_ckpt=SimpleNamespace(num_classes=3), train=train, device="cpu", load=None)
        with pytest.raises(ConfigError, match=r"at most one trained evaluation model"):
            build_evaluators(["a", "b"], target_ckpt=SimpleNamespace(num_classes=3), train=train, device="cpu", load=None)

    def test_judge_with_facenet_only_headlines_facenet(self):
        evaluators = Evaluators(faces=[FaceJudge(make_evaluator(), "pixels")])
        metrics = judge(make_result(), evaluators, SimpleNamespace(images=GALLERY, labels=GALLERY_LABELS))
        assert metrics["evaluator"] == "facenet" and metrics["attack_acc_top1"] == 0.5
        assert metrics["facenet"]["attack_acc_top1"] == 0.5 and metrics["facenet"]["agreement"] is None
        identity = metrics["identity"]  # one independent judge: the consensus is its own top-1
        assert identity["consensus_top1"] == 0.5 and identity["headline_source"] == "independent consensus"
        assert identity["evaluator_top1"] is None and identity["unconfirmed_share"] is None
        assert identity["per_image"] == {"labels": [0, 0, 1, 1], "facenet": [0, 1, 1, 2]}

    def test_shared_backbone_is_marked_and_left_out(self, monkeypatch):
        import midefend.evaluation.recognisers as recognisers

        monkeypatch.setattr(recognisers, "load_recogniser", lambda name, device="cpu": PixelEmbedder())
        train = SimpleNamespace(name="orl", images=GALLERY, labels=GALLERY_LABELS)
        target = SimpleNamespace(num_classes=3, arch="midefend/facenet")
        evaluators = build_evaluators("facenet", target_ckpt=target, train=train, device="cpu", load=None)
        assert [(f.name, f.independent) for f in evaluators.faces] == [("facenet", False)]
        assert evaluators.faces[0].note == "not independent: the target (midefend/facenet) is built on facenet's own network"
        identity = judge(make_result(), evaluators, train)["identity"]
        assert identity["consensus_judges"] == [] and identity["consensus_top1"] is None
        assert identity["judges"][0]["independent"] is False and identity["judges"][0]["top1"] == 0.5
