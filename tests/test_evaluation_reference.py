"""Reference tests for the evaluation: exact expectations from hand-built inputs and from scipy.

- ``evaluate_attack`` with an evaluator whose outputs are known: per-class grouping, and which
  private images are the KNN / FID reference (only the attacked classes' training images);
- FID on full, non-diagonal covariances against ``scipy.linalg.sqrtm``;
- Δ of a defense that *raises* attack accuracy is negative;
- GMI's prior term rewards what the discriminator finds real.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from midefend.attacks import AttackResult
from midefend.evaluation import Classifier, evaluate_attack
from midefend.evaluation.metrics import frechet_distance, tradeoff_delta


class CodedNet(nn.Module):
    """Reads an image's class guess and features from its pixels: pixel 0 = predicted class, pixels 1-2 = features."""

    num_classes = 3

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        flat = x.flatten(1)
        if pre_logits:
            return flat[:, 1:3]
        return nn.functional.one_hot(flat[:, 0].round().long(), self.num_classes).float() * 10.0


def coded(cls: int, f1: float, f2: float) -> torch.Tensor:
    return torch.tensor([cls, f1, f2, 0.0]).view(1, 2, 2)


class TestEvaluateAttack:
    def setup_method(self):
        self.evaluator = Classifier(CodedNet(), input_size=(1, 2, 2), mean=(0.0,), std=(1.0,))
        # Attacked classes 2 and 0 (in that order), two reconstructions each.
        images = torch.stack([
            torch.stack([coded(2, 0.0, 0.0), coded(1, 1.0, 0.0)]),  # class 2: one right, one predicted as 1
            torch.stack([coded(0, 5.0, 5.0), coded(0, 6.0, 5.0)]),  # class 0: both right
        ])
        self.result = AttackResult("x", [2, 0], images, torch.tensor([[0.9, 0.8], [0.7, 0.6]]))
        # Private training images of classes 0, 1, 2; class 1 is not attacked.
        self.private = SimpleNamespace(
            images=torch.stack([coded(0, 5.0, 6.0), coded(0, 9.0, 9.0), coded(1, 1.0, 0.0), coded(2, 0.0, 3.0), coded(2, 2.0, 0.0)]),
            labels=torch.tensor([0, 0, 1, 2, 2]),
        )

    def test_accuracy_per_class_in_attack_order(self):
        m = evaluate_attack(self.result, self.evaluator, self.private)
        assert m["attack_acc_top1"] == 0.75
        assert m["attack_acc_top1_std"] == pytest.approx(0.25)  # per-class 0.5 and 1.0, population std
        assert [(r["class"], r["attack_acc_top1"]) for r in m["per_class"]] == [(2, 0.5), (0, 1.0)]
        assert [r["target_confidence"] for r in m["per_class"]] == pytest.approx([0.85, 0.65])
        assert m["num_reconstructions"] == 4 and m["accuracy"] is None and m["target_acc_top1"] is None

    def test_knn_uses_only_the_same_class_private_images(self):
        m = evaluate_attack(self.result, self.evaluator, self.private)
        # class 2 recon (0,0): nearest class-2 private (2,0) -> 4; (1,0): (2,0) -> 1
        # class 0 recon (5,5): (5,6) -> 1; (6,5): (5,6) -> 2.  The class-1 image (1,0) would give 0 for (1,0).
        assert m["knn_distance"] == pytest.approx((4 + 1 + 1 + 2) / 4)

    def test_fid_reference_is_the_attacked_classes_private_images(self):
        m = evaluate_attack(self.result, self.evaluator, self.private)
        recon = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [6.0, 5.0]])
        attacked = torch.tensor([[5.0, 6.0], [9.0, 9.0], [0.0, 3.0], [2.0, 0.0]])  # classes 0 and 2 only
        assert m["fid"] == pytest.approx(frechet_distance(recon, attacked))
        assert m["fid"] != pytest.approx(frechet_distance(recon, torch.cat([attacked, torch.tensor([[1.0, 0.0]])])))


def test_fid_matches_scipy_sqrtm_on_full_covariances():
    from scipy import linalg as scipy_linalg  # a dev dependency (and scikit-learn's)
    gen = torch.Generator().manual_seed(0)
    mix_a, mix_b = torch.randn(6, 6, generator=gen), torch.randn(6, 6, generator=gen)
    a = torch.randn(400, 6, generator=gen, dtype=torch.float64) @ mix_a.double() + 1.0
    b = torch.randn(300, 6, generator=gen, dtype=torch.float64) @ mix_b.double() - 0.5
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    assert abs(cov_a[0, 1]) > 0.1 and abs(cov_b[2, 3]) > 0.1  # genuinely non-diagonal
    root = scipy_linalg.sqrtm(cov_a @ cov_b)
    mu = a.mean(0).numpy() - b.mean(0).numpy()
    reference = float(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(np.real(root)))
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)


def test_delta_is_negative_when_the_defense_raises_attack_accuracy():
    # Accuracy 95 -> 90, attack accuracy 50 -> 60: Δ = (50 - 60) / (95 - 90) = -2.
    assert tradeoff_delta(acc_nodef=0.95, attack_nodef=0.5, acc_def=0.90, attack_def=0.6) == pytest.approx(-2.0)


def test_gmi_prior_term_rewards_realness():
    from midefend.attacks import get_attack
    from midefend.attacks.base import _Context

    prior = type("P", (), {"realness": lambda self, images: torch.tensor([4.0, -4.0]), "__call__": lambda self, z: z})()
    ctx = _Context(target=None, prior=prior, device=torch.device("cpu"), autocast={})
    attack = get_attack("gmi")(identity_weight=2.0)
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # the same identity loss for both samples
    loss = attack.objective(ctx, torch.zeros(2, 3), torch.zeros(2, 1, 2, 2), logits, torch.tensor([0, 0]))
    ce = math.log(1 + math.exp(-1.0))
    # softplus(-D): the sample the discriminator calls real (D = +4) costs less than the fake one (D = -4).
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-4.0)) + 2 * ce, math.log1p(math.exp(4.0)) + 2 * ce])
    assert loss[0] < loss[1]
