"""Identity losses of the attacks: hand-computed values, invariances, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midefend.attacks.losses import (
    IDENTITY_LOSSES,
    cross_entropy_loss,
    get_identity_loss,
    logit_loss,
    max_margin_loss,
    poincare_loss,
)
from midefend.errors import ConfigError


def _poincare_by_hand(z: list[float], y: int, eps: float) -> float:
    l1 = sum(abs(v) for v in z)
    u = [v / l1 for v in z]
    v = [min(max((1.0 if i == y else 0.0) - eps, 0.0), 1.0) for i in range(len(z))]
    diff = sum((a - b) ** 2 for a, b in zip(u, v))
    nu, nv = sum(a * a for a in u), sum(b * b for b in v)
    return math.acosh(1 + 2 * diff / ((1 - nu) * (1 - nv)))


class TestPoincare:
    def test_two_class_value(self):
        # u = (.5, .5), v = (.5, 0): arccosh(1 + 2 * 0.25 / (0.5 * 0.75)) = arccosh(7/3)
        loss = poincare_loss(torch.tensor([[1.0, 1.0]]), torch.tensor([0]), eps=0.5)
        assert loss.item() == pytest.approx(math.acosh(7 / 3), rel=1e-6)

    @pytest.mark.parametrize("z,y", [([3.0, -1.0, 0.0], 0), ([0.5, 2.0, -1.5, 1.0], 3), ([-2.0, -1.0], 1)])
    def test_matches_hand_formula_default_eps(self, z, y):
        loss = poincare_loss(torch.tensor([z]), torch.tensor([y]))
        assert loss.item() == pytest.approx(_poincare_by_hand(z, y, 1e-4), rel=1e-5)

    def test_reductions(self):
        z = torch.tensor([[3.0, -1.0, 0.0], [0.0, 1.0, 2.0]])
        y = torch.tensor([0, 2])
        per = poincare_loss(z, y, reduction="none")
        assert per.shape == (2,)
        assert per[0].item() == pytest.approx(_poincare_by_hand([3.0, -1.0, 0.0], 0, 1e-4), rel=1e-5)
        assert poincare_loss(z, y, reduction="sum").item() == pytest.approx(per.sum().item(), rel=1e-6)
        assert poincare_loss(z, y).item() == pytest.approx(per.mean().item(), rel=1e-6)

    def test_closer_to_target_is_lower(self):
        y = torch.tensor([0])
        assert poincare_loss(torch.tensor([[5.0, 1.0, 1.0]]), y) < poincare_loss(torch.tensor([[1.0, 1.0, 1.0]]), y)

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.floats(-20, 20), min_size=3, max_size=3).filter(lambda z: sum(abs(v) for v in z) > 1e-3), st.floats(0.1, 10))
    def test_invariant_to_positive_scaling(self, z, scale):
        t = torch.tensor([z], dtype=torch.float64)
        y = torch.tensor([1])
        a, b = poincare_loss(t, y), poincare_loss(t * scale, y)
        assert torch.isfinite(a) and a >= 0
        assert a.item() == pytest.approx(b.item(), rel=1e-4, abs=1e-6)

    def test_bfloat16_logits_computed_in_float32(self):
        z = torch.tensor([[3.0, -1.0, 0.0]])
        loss = poincare_loss(z.bfloat16(), torch.tensor([0]))
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(_poincare_by_hand([3.0, -1.0, 0.0], 0, 1e-4), rel=1e-5)

    def test_gradient_finite_and_points_to_target(self):
        z = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
        poincare_loss(z, torch.tensor([0])).backward()
        assert torch.isfinite(z.grad).all()
        assert z.grad[0, 0] < 0  # raising the target logit lowers the loss

    def test_bad_eps(self):
        with pytest.raises(ConfigError, match=r"eps must be in \[0, 1\), got 1.5"):
            poincare_loss(torch.zeros(1, 3), torch.tensor([0]), eps=1.5)


class TestMaxMarginLogitCrossEntropy:
    def test_max_margin_values(self):
        z = torch.tensor([[2.0, 0.0, -1.0], [2.0, 0.0, -1.0]])
        out = max_margin_loss(z, torch.tensor([0, 2]), reduction="none")
        assert out.tolist() == [-2.0, 3.0]  # -2 + 0; 1 + 2

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.floats(-50, 50), min_size=4, max_size=4), st.floats(-100, 100), st.integers(0, 3))
    def test_max_margin_shift_invariant(self, z, shift, y):
        t = torch.tensor([z], dtype=torch.float64)
        target = torch.tensor([y])
        assert max_margin_loss(t + shift, target).item() == pytest.approx(max_margin_loss(t, target).item(), abs=1e-9)

    def test_logit_value(self):
        assert logit_loss(torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([2])).item() == 1.0

    def test_cross_entropy_value(self):
        z = [2.0, 0.0, -1.0]
        expected = -(2.0 - math.log(sum(math.exp(v) for v in z)))
        assert cross_entropy_loss(torch.tensor([z]), torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)

    def test_max_margin_needs_two_classes(self):
        with pytest.raises(ConfigError, match=r"max-margin loss needs at least 2 classes, got logits of shape \(1, 1\)"):
            max_margin_loss(torch.zeros(1, 1), torch.tensor([0]))


class TestRegistryAndErrors:
    def test_names(self):
        assert list(IDENTITY_LOSSES) == ["poincare", "max-margin", "logit", "cross-entropy"]
        assert get_identity_loss("max-margin") is max_margin_loss

    def test_unknown_name(self):
        with pytest.raises(ConfigError, match=r"unknown identity loss 'hinge'; expected one of poincare, max-margin"):
            get_identity_loss("hinge")

    @pytest.mark.parametrize("fn", list(IDENTITY_LOSSES.values()))
    def test_shape_errors(self, fn):
        with pytest.raises(ConfigError, match=r"logits must be a \(B, C\) tensor, got \(3,\)"):
            fn(torch.zeros(3), torch.tensor([0]))
        with pytest.raises(ConfigError, match=r"targets must have shape \(2,\) to match the logits, got \(3,\)"):
            fn(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
        with pytest.raises(ConfigError, match=r"reduction must be 'none', 'mean' or 'sum', got 'avg'"):
            fn(torch.zeros(2, 3), torch.tensor([0, 1]), reduction="avg")
