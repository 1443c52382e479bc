"""Metrics on synthetic logits and features with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midefend.errors import ConfigError
from midefend.evaluation.classifier import Classifier
from midefend.evaluation.features import extract_features
from midefend.evaluation.metrics import (
    accuracy,
    attack_accuracy,
    format_delta,
    frechet_distance,
    knn_distance,
    topk_hits,
    tradeoff_delta,
)


class TestAccuracy:
    def test_top1_and_top5(self):
        # 6 classes; the label's rank in each row is 1, 2, 6, 5.
        logits = torch.tensor(
            [
                [9.0, 1, 2, 3, 4, 5],
                [5.0, 9, 1, 2, 3, 4],
                [1.0, 2, 3, 4, 5, 9],
                [4.0, 3, 9, 8, 7, 1],
            ]
        )
        labels = torch.tensor([0, 0, 0, 0])
        assert topk_hits(logits, labels, 1).tolist() == [True, False, False, False]
        assert accuracy(logits, labels) == 0.25
        assert accuracy(logits, labels, k=5) == 0.75  # rank 6 misses
        assert accuracy(logits, labels, k=100) == 1.0  # k is capped at the class count

    def test_attack_accuracy_per_class_std(self):
        # class 0: 2 of 2 right; class 1: 1 of 4 right; class 2: 0 of 2 right.
        labels = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
        predicted = torch.tensor([0, 0, 1, 0, 0, 2, 0, 1])
        logits = torch.nn.functional.one_hot(predicted, 3).float()
        stat = attack_accuracy(logits, labels)
        assert stat.mean == pytest.approx(3 / 8)
        assert stat.per_class == {0: 1.0, 1: 0.25, 2: 0.0}
        mean_pc = (1.0 + 0.25 + 0.0) / 3
        std = math.sqrt(sum((v - mean_pc) ** 2 for v in (1.0, 0.25, 0.0)) / 3)
        assert stat.std == pytest.approx(std)

    def test_errors(self):
        with pytest.raises(ConfigError, match=r"logits must be a non-empty \(N, num_classes\) tensor, got \(0, 3\)"):
            accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
        with pytest.raises(ConfigError, match=r"labels must have shape \(2,\) to match the logits, got \(3,\)"):
            accuracy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
        with pytest.raises(ConfigError, match=r"k must be a positive integer, got 0"):
            accuracy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), k=0)


class TestKNN:
    def test_known_value(self):
        recon = torch.tensor([[0.0, 0.0], [3.0, 0.0], [10.0, 10.0]])
        private = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.0, 0.0]])
        # class 0 privates: (1,0), (0,2); class 1: (3,1), (0,0).
        # recon 0 (class 0): min(1, 4) = 1; recon 1 (class 1): min(1, 9) = 1; recon 2 (class 0): min(181, 164) = 164
        value = knn_distance(recon, torch.tensor([0, 1, 0]), private, torch.tensor([0, 0, 1, 1]))
        assert value == pytest.approx((1 + 1 + 164) / 3)

    def test_only_same_class_counts(self):
        recon = torch.zeros(1, 4)
        private = torch.stack([torch.zeros(4), torch.ones(4)])
        # The identical private image belongs to another class: the distance is to the class-1 image.
        assert knn_distance(recon, torch.tensor([1]), private, torch.tensor([0, 1])) == pytest.approx(4.0)

    def test_missing_class(self):
        with pytest.raises(ConfigError, match=r"no private images of class\(es\) \[2\]"):
            knn_distance(torch.zeros(1, 2), torch.tensor([2]), torch.zeros(3, 2), torch.tensor([0, 0, 1]))

    def test_feature_size_mismatch(self):
        with pytest.raises(ConfigError, match=r"feature sizes differ: reconstructions 2, private 3"):
            knn_distance(torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 3), torch.tensor([0]))


class TestFrechet:
    def test_identical_sets_zero(self):
        a = torch.randn(300, 5, generator=torch.Generator().manual_seed(1))
        assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)

    def test_diagonal_gaussians_closed_form(self):
        # Two sets with exactly known sample means and (diagonal) sample covariances:
        # FD = |mu_a - mu_b|^2 + sum_i (s_ai - s_bi)^2 for diagonal covariances with std s.
        base = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # mean 0, cov (4/3) I
        a = base * torch.tensor([1.0, 2.0])
        b = base * torch.tensor([3.0, 1.0]) + torch.tensor([1.0, -2.0])
        c = 4.0 / 3.0  # stds: a (1, 2)·√c, b (3, 1)·√c -> (1 - 3)² c + (2 - 1)² c = 5c
        expected = (1.0 + 4.0) + 5.0 * c
        assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)

    @settings(max_examples=20, deadline=None)
    @given(st.integers(0, 10_000))
    def test_symmetric_and_nonnegative(self, seed):
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(40, 3, generator=g), torch.randn(30, 3, generator=g) * 2 + 1
        ab, ba = frechet_distance(a, b), frechet_distance(b, a)
        assert ab >= 0
        assert ab == pytest.approx(ba, rel=1e-6, abs=1e-9)

    def test_errors(self):
        with pytest.raises(ConfigError, match=r"features_a must be \(N, D\) with N >= 2, got \(1, 3\)"):
            frechet_distance(torch.zeros(1, 3), torch.zeros(4, 3))
        with pytest.raises(ConfigError, match=r"feature sizes differ: 3 and 2"):
            frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))


class TestTradeoff:
    def test_delta(self):
        assert tradeoff_delta(acc_nodef=90.0, attack_nodef=80.0, acc_def=85.0, attack_def=40.0) == pytest.approx(8.0)

    def test_op_when_no_accuracy_lost(self):
        assert tradeoff_delta(acc_nodef=0.9, attack_nodef=0.8, acc_def=0.9, attack_def=0.2) is None  # no accuracy lost
        assert tradeoff_delta(acc_nodef=0.9, attack_nodef=0.8, acc_def=0.95, attack_def=0.9) is None
        assert format_delta(None) == "OP" and format_delta(8.0) == "8.00" and format_delta(-0.125) == "-0.12"

    def test_error(self):
        with pytest.raises(ConfigError, match=r"acc_def must be a number, got None"):
            tradeoff_delta(acc_nodef=0.9, attack_nodef=0.8, acc_def=None, attack_def=0.2)


class _PreLogitsNet(torch.nn.Module):
    """A net of the ``forward(x, pre_logits=True)`` convention."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        self.out = torch.nn.Linear(3, 2)

    def forward(self, x, pre_logits: bool = False):
        f = self.body(x)
        return f if pre_logits else self.out(f)


class TestFeatures:
    def test_timm_model(self):
        import timm

        model = timm.create_model("resnet18", num_classes=3, in_chans=1).eval()
        x = torch.rand(2, 1, 32, 32)
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.equal(extract_features(model, x), expected)

    def test_pre_logits_convention(self):
        model = _PreLogitsNet().eval()
        x = torch.rand(2, 1, 2, 2)
        assert torch.equal(extract_features(model, x), model.body(x))

    def test_head_hook(self):
        import torchvision

        model = torchvision.models.resnet18(num_classes=3).eval()
        x = torch.rand(1, 3, 32, 32)
        feats = extract_features(model, x)
        assert feats.shape == (1, 512)
        torch.testing.assert_close(model.fc(feats), model(x))

    def test_unknown_model(self):
        with pytest.raises(ConfigError, match=r"cannot find the penultimate features of Sequential"):
            extract_features(torch.nn.Sequential(torch.nn.Flatten()), torch.rand(1, 4))

    def test_classifier_wrapper_adapts_and_normalises(self):
        model = _PreLogitsNet().eval()
        clf = Classifier(model, input_size=(1, 2, 2), mean=(0.5,), std=(0.25,))
        x = torch.rand(3, 3, 4, 4)  # RGB 4x4 in; grey 2x2 expected by the model
        grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        small = torch.nn.functional.interpolate(grey, size=(2, 2), mode="bilinear", antialias=True, align_corners=False)
        torch.testing.assert_close(clf(x), model((small - 0.5) / 0.25))
        assert not any(p.requires_grad for p in model.parameters())

    def test_classifier_errors(self):
        with pytest.raises(ConfigError, match=r"input_size must be \(C, H, W\), got \(2, 2\)"):
            Classifier(_PreLogitsNet(), input_size=(2, 2), mean=(0.5,), std=(0.5,))
        with pytest.raises(ConfigError, match=r"std values must be positive, got \(0.0,\)"):
            Classifier(_PreLogitsNet(), input_size=(1, 2, 2), mean=(0.5,), std=(0.0,))
