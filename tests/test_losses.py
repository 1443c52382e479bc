"""ConfidenceAdaptationLoss: formula, minimiser, gradients, stability, argument errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import devices
from hypothesis import given, settings
from hypothesis import strategies as st

from midefend import ConfigError
from midefend.defenses.losses import ConfidenceAdaptationLoss, confidence_adaptation_loss


def _hand_loss(logits: list[float], y: int, a: float, b: float) -> float:
    """The formula with the math module: p_y = e^{z_y} / sum_k e^{z_k}, L = a p_y^b log p_y."""
    p = math.exp(logits[y]) / sum(math.exp(z) for z in logits)
    return a * p**b * math.log(p)


class TestConfidenceAdaptationValues:
    def test_hand_computed_values(self):
        rows = [[2.0, 0.0, 0.0], [0.0, 1.0, -1.0], [0.5, 0.5, 3.0]]
        targets = [0, 2, 2]
        logits = torch.tensor(rows, dtype=torch.float64)
        got = confidence_adaptation_loss(logits, torch.tensor(targets), a=1.0, b=8.0, reduction="none")
        want = torch.tensor([_hand_loss(r, y, 1.0, 8.0) for r, y in zip(rows, targets)], dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
        # one value written out: p = e^2 / (e^2 + 2) = 0.786986..., p^8 = 0.147142..., log p = -0.239545..., product -0.035247...
        assert got[0].item() == pytest.approx(-0.0352471, abs=1e-7)

    def test_a_scales_and_b_changes_exponent(self):
        logits = torch.tensor([[1.0, 0.0, -2.0, 0.5]], dtype=torch.float64)
        y = torch.tensor([0])
        got = confidence_adaptation_loss(logits, y, a=0.25, b=3.0)
        assert got.item() == pytest.approx(_hand_loss([1.0, 0.0, -2.0, 0.5], 0, 0.25, 3.0), rel=1e-12)

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_reductions_and_module_equal_functional(self, reduction):
        logits = torch.randn(6, 5, dtype=torch.float64)
        y = torch.randint(0, 5, (6,))
        per_sample = confidence_adaptation_loss(logits, y, reduction="none")
        expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
        module = ConfidenceAdaptationLoss(a=1.0, b=8.0, reduction=reduction)
        torch.testing.assert_close(module(logits, y), expected)
        assert module(logits, y).shape == ((6,) if reduction == "none" else ())

    def test_empty_batch_none_reduction(self):
        out = confidence_adaptation_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), reduction="none")
        assert out.shape == (0,)

    def test_repr_and_optimal_confidence(self):
        module = ConfidenceAdaptationLoss(a=0.25, b=8)
        assert repr(module) == "ConfidenceAdaptationLoss(a=0.25, b=8.0, reduction='mean')"
        assert module.optimal_confidence == pytest.approx(math.exp(-1 / 8))
        json.dumps({"a": module.a, "b": module.b})

    @settings(max_examples=60, deadline=None)
    @given(
        logits=st.lists(st.floats(-30, 30, allow_nan=False), min_size=2, max_size=8),
        b=st.floats(0.5, 16),
        a=st.floats(0.1, 4),
    )
    def test_bounded_by_value_at_minimiser(self, logits, b, a):
        # min over t in (0, 1] of t^b log t is at t = exp(-1/b), where it equals -1/(e b).
        z = torch.tensor([logits], dtype=torch.float64)
        loss = confidence_adaptation_loss(z, torch.tensor([0]), a=a, b=b).item()
        assert -a / (math.e * b) - 1e-12 <= loss <= 0.0


class TestConfidenceAdaptationMinimiser:
    @pytest.mark.parametrize("b", [2.0, 8.0])
    def test_free_logits_converge_to_exp_minus_one_over_b(self, b):
        torch.manual_seed(0)
        logits = torch.randn(1, 10, dtype=torch.float64)
        logits[0, 3] += 4.0  # start confident: the gradient vanishes when p_y << exp(-1/b)
        logits.requires_grad_()
        opt = torch.optim.Adam([logits], lr=0.05)
        y = torch.tensor([3])
        for _ in range(600):
            opt.zero_grad()
            confidence_adaptation_loss(logits, y, b=b).backward()
            opt.step()
        p_y = torch.softmax(logits.detach(), dim=1)[0, 3].item()
        assert abs(p_y - math.exp(-1.0 / b)) < 1e-3

    def test_gradient_matches_analytic_form(self):
        # dL/dz_k = a p^b (b log p + 1) (1[k=y] - p_k)
        torch.manual_seed(1)
        a, b = 0.7, 5.0
        z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
        y = torch.tensor([0, 5, 2, 2])
        confidence_adaptation_loss(z, y, a=a, b=b, reduction="sum").backward()
        p = torch.softmax(z.detach(), dim=1)
        p_y = p.gather(1, y[:, None])
        onehot = torch.nn.functional.one_hot(y, 6).double()
        expected = a * p_y**b * (b * torch.log(p_y) + 1) * (onehot - p)
        torch.testing.assert_close(z.grad, expected, rtol=1e-10, atol=1e-14)


class TestConfidenceAdaptationStability:
    def test_extreme_logits_are_finite(self):
        z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], requires_grad=True)
        loss = confidence_adaptation_loss(z, torch.tensor([0, 0, 1]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
        # rows: p_y = 1 -> 0; p_y = e^-2e4 -> 0 (underflow); p_y = 1/2 -> 2^-8 log(1/2)
        assert loss.item() == pytest.approx((0.0 + 0.0 + 0.5**8 * math.log(0.5)) / 3, rel=1e-5)

    @pytest.mark.parametrize("device", devices())
    def test_on_device(self, device):
        z = torch.tensor([[2.0, 0.0, 0.0]], device=device, requires_grad=True)
        loss = ConfidenceAdaptationLoss()(z, torch.tensor([0], device=device))
        loss.backward()
        assert loss.device.type == torch.device(device).type
        assert loss.item() == pytest.approx(_hand_loss([2.0, 0.0, 0.0], 0, 1.0, 8.0), rel=1e-5)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision_matches_float32_and_grads_finite(self, dtype):
        torch.manual_seed(2)
        z = (torch.randn(16, 7) * 20).to(dtype)
        z[0, 0] = 6e4 if dtype == torch.float16 else 1e4
        y = torch.randint(0, 7, (16,))
        zh = z.clone().requires_grad_()
        loss = confidence_adaptation_loss(zh, y)
        loss.backward()
        assert loss.dtype == torch.float32
        assert zh.grad.dtype == dtype and torch.isfinite(zh.grad).all()
        torch.testing.assert_close(loss, confidence_adaptation_loss(z.float(), y))


class TestConfidenceAdaptationErrors:
    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"a": 0}, r"a must be a positive finite number, got 0"),
            ({"a": -1.0}, r"a must be a positive finite number, got -1.0"),
            ({"a": True}, r"a must be a positive finite number, got True"),
            ({"b": 0.0}, r"b must be a positive finite number, got 0.0"),
            ({"b": float("inf")}, r"b must be a positive finite number, got inf"),
            ({"b": "8"}, r"b must be a positive finite number, got '8'"),
            ({"reduction": "avg"}, r"reduction must be one of mean, sum, none, got 'avg'"),
        ],
    )
    def test_bad_hyperparameters(self, kwargs, match):
        with pytest.raises(ConfigError, match=match):
            ConfidenceAdaptationLoss(**kwargs)
        with pytest.raises(ConfigError, match=match):
            confidence_adaptation_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), **kwargs)

    def test_integer_logits(self):
        with pytest.raises(ConfigError, match=r"logits must be a float tensor of shape \(N, C\), got a torch.int64 tensor"):
            confidence_adaptation_loss(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long))

    def test_logits_wrong_rank(self):
        with pytest.raises(ConfigError, match=r"logits must have shape \(N, C\), got \(3,\)"):
            confidence_adaptation_loss(torch.zeros(3), torch.zeros(1, dtype=torch.long))

    def test_float_targets(self):
        with pytest.raises(ConfigError, match=r"target must be an integer tensor of class indices, got a torch.float32"):
            confidence_adaptation_loss(torch.zeros(2, 3), torch.zeros(2))

    def test_target_shape(self):
        with pytest.raises(ConfigError, match=r"target must have shape \(2,\) to match logits \(2, 3\), got \(2, 1\)"):
            confidence_adaptation_loss(torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long))

    def test_target_out_of_range(self):
        with pytest.raises(ConfigError, match=r"target values must be in \[0, 3\), got range \[0, 3\]"):
            confidence_adaptation_loss(torch.zeros(2, 3), torch.tensor([0, 3]))
