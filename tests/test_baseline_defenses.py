"""Baseline defenses: NLS targets and schedule, MID's KL and head, BiDO's HSIC, TL's freeze (hand-computed)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from midefend.errors import ConfigError
from midefend.defenses.baselines import (
    HSICPenalty,
    NegativeLabelSmoothingLoss,
    VariationalBottleneckHead,
    freeze_leading,
    gaussian_kl,
    hsic,
    hsic_normalized,
    smoothed_targets,
    smoothing_schedule,
)
from midefend.defenses.baselines import bido, mid, nls, tl
from midefend.defenses.baselines.mid import BottleneckKL, split_stats


@pytest.mark.parametrize("module", [nls, mid, bido, tl])
def test_docstring_examples_run(module):
    assert doctest.testmod(module, raise_on_error=False).failed == 0


class TestNegativeLabelSmoothing:
    def test_targets_by_hand(self):
        # C = 4, alpha = -0.05: true class 1 - alpha + alpha / 4 = 1.0375, others alpha / 4 = -0.0125
        got = smoothed_targets(torch.tensor([2, 0]), 4, -0.05)
        want = torch.tensor([[-0.0125, -0.0125, 1.0375, -0.0125], [1.0375, -0.0125, -0.0125, -0.0125]])
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got.sum(1), torch.ones(2))

    def test_loss_equals_cross_entropy_against_targets(self):
        logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.3, 0.1]], dtype=torch.float64)
        y = torch.tensor([0, 2])
        loss = NegativeLabelSmoothingLoss(-0.05, schedule=False)(logits, y)
        want = 0.0
        for row, label in zip(logits.tolist(), y.tolist()):
            log_z = math.log(sum(math.exp(v) for v in row))
            q = [(1.05 if k == label else 0.0) - 0.05 / 3 for k in range(3)]
            want += -sum(qk * (v - log_z) for qk, v in zip(q, row))
        assert loss.item() == pytest.approx(want / 2, rel=1e-6)

    def test_schedule_by_hand(self):
        # 8 epochs: warm-up on plain CE for epochs 0-3, ramp 1/2 in epoch 4, full from epoch 5
        assert [smoothing_schedule(e, 8) for e in range(8)] == [0, 0, 0, 0, 0.5, 1, 1, 1]
        # 100 epochs as the authors: 0 before 50, (e + 1 - 50) / 25 up to 74, then 1
        values = [smoothing_schedule(e, 100) for e in range(100)]
        assert values[49] == 0 and values[50] == pytest.approx(1 / 25) and values[74] == 1 and values[99] == 1
        assert smoothing_schedule(0, 10, warmup=0, ramp_end=0) == 1

    def test_set_epoch_moves_the_factor_and_loss_is_ce_in_warmup(self):
        loss = NegativeLabelSmoothingLoss(-0.05)
        logits, y = torch.randn(5, 4), torch.randint(0, 4, (5,))
        loss.set_epoch(1, 8)
        assert loss.current == 0.0
        torch.testing.assert_close(loss(logits, y), nn.functional.cross_entropy(logits, y))
        loss.set_epoch(4, 8)
        assert loss.current == pytest.approx(-0.025)

    def test_bad_factor(self):
        with pytest.raises(ConfigError, match=r"smoothing must be a number in \[-1, 1\)"):
            NegativeLabelSmoothingLoss(1.5)
        with pytest.raises(ConfigError, match="need 0 <= warmup <= ramp_end <= 1"):
            smoothing_schedule(0, 10, warmup=0.8, ramp_end=0.5)


class TestMID:
    def test_kl_against_the_direct_formula(self):
        mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]], dtype=torch.float64)
        sigma = torch.tensor([[1.0, 0.5], [2.0, 0.1]], dtype=torch.float64)
        want = [
            sum(0.5 * (m * m + s * s - 2 * math.log(s) - 1) for m, s in zip(mr, sr))
            for mr, sr in zip(mu.tolist(), sigma.tolist())
        ]
        # first row written out: 0.5*(0.25+1-0-1) + 0.5*(1+0.25+1.386294-1) = 0.125 + 0.818147
        assert want[0] == pytest.approx(0.943147, abs=1e-6)
        torch.testing.assert_close(gaussian_kl(mu, sigma).double(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-7)
        # against torch.distributions' closed form
        p = torch.distributions.Normal(mu, sigma)
        q = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(sigma))
        torch.testing.assert_close(gaussian_kl(mu, sigma).double(), torch.distributions.kl_divergence(p, q).sum(1), rtol=1e-6, atol=1e-7)

    def test_sigma_parametrisation(self):
        mu, sigma = split_stats(torch.tensor([[1.0, 2.0, 5.0, 0.0]]))
        torch.testing.assert_close(mu, torch.tensor([[1.0, 2.0]]))
        torch.testing.assert_close(sigma, torch.tensor([[math.log(2.0), math.log1p(math.exp(-5.0))]]))

    def test_head_samples_in_training_and_uses_the_mean_in_eval(self):
        torch.manual_seed(0)
        head = VariationalBottleneckHead(6, 3)
        assert head.dim == 3 and head.stats.out_features == 6
        x = torch.randn(4, 6)
        head.eval()
        mu, _ = split_stats(head.stats(x))
        torch.testing.assert_close(head(x), head.fc(mu))
        head.train()
        assert not torch.allclose(head(x), head(x))

    def test_loss_is_ce_plus_beta_kl(self):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), VariationalBottleneckHead(8, 3, dim=2))
        criterion = BottleneckKL(beta=0.3)
        handles = criterion.attach(model)
        model.eval()
        x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
        logits = model(x)
        mu, sigma = split_stats(model[1].stats(model[0](x)))
        want = nn.functional.cross_entropy(logits, y) + 0.3 * gaussian_kl(mu, sigma).mean()
        torch.testing.assert_close(criterion(logits, y), want)
        for h in handles:
            h.remove()


def _np_hsic(x: np.ndarray, y: np.ndarray, kx, ky) -> float:
    """tr(K H L H) / (m-1)^2 written with loops."""
    m = len(x)
    K = [[kx(x[i], x[j]) for j in range(m)] for i in range(m)]
    L = [[ky(y[i], y[j]) for j in range(m)] for i in range(m)]
    H = [[(1.0 if i == j else 0.0) - 1.0 / m for j in range(m)] for i in range(m)]

    def mm(a, b):
        return [[sum(a[i][k] * b[k][j] for k in range(m)) for j in range(m)] for i in range(m)]

    prod = mm(mm(K, H), mm(L, H))
    return sum(prod[i][i] for i in range(m)) / (m - 1) ** 2


def _gauss(sigma: float):
    return lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma * sigma * a.size))


class TestHSIC:
    def test_biased_hsic_against_loops(self):
        rng = np.random.default_rng(0)
        x, z = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
        got = hsic(torch.tensor(x), torch.tensor(z), sigma_x=0.7, sigma_y=1.3).item()
        assert got == pytest.approx(_np_hsic(x, z, _gauss(0.7), _gauss(1.3)), rel=1e-5)
        got_lin = hsic(torch.tensor(x), torch.tensor(z), sigma_x=None, sigma_y=0.9).item()
        assert got_lin == pytest.approx(_np_hsic(x, z, lambda a, b: float(a @ b), _gauss(0.9)), rel=1e-5)

    def test_two_point_case_by_hand(self):
        # m=2, x = (0, 1), z = (0, 2) in 1-D, sigma 1: K = [[1, e^-1/2], [e^-1/2, 1]], L = [[1, e^-2], [e^-2, 1]]
        # KH = (1 - a)/2 [[1, -1], [-1, 1]]; tr(KH LH) = 2 * (1-a)/2 * (1-b)/2 * 2 = (1-a)(1-b), /(m-1)^2 = 1
        a, b = math.exp(-0.5), math.exp(-2.0)
        got = hsic(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]), sigma_x=1.0, sigma_y=1.0).item()
        assert got == pytest.approx((1 - a) * (1 - b), rel=1e-6)

    def test_normalized_hsic_against_numpy(self):
        rng = np.random.default_rng(1)
        x, z = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
        m, eps = 6, 1e-5
        K = np.array([[_gauss(5.0)(x[i], x[j]) for j in range(m)] for i in range(m)])
        L = np.array([[_gauss(5.0)(z[i], z[j]) for j in range(m)] for i in range(m)])
        H = np.eye(m) - 1.0 / m
        rk = K @ H @ np.linalg.inv(K @ H + eps * m * np.eye(m))
        rl = L @ H @ np.linalg.inv(L @ H + eps * m * np.eye(m))
        want = float(np.trace(rk @ rl))
        got = hsic_normalized(torch.tensor(x), torch.tensor(z), sigma_x=5.0, sigma_y=5.0).item()
        assert got == pytest.approx(want, rel=1e-3)

    def test_independent_is_small_dependent_is_large(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 2, generator=g)
        indep = hsic(x, torch.randn(64, 2, generator=g), sigma_x=1.0, sigma_y=1.0).item()
        dep = hsic(x, x * 2.0, sigma_x=1.0, sigma_y=1.0).item()
        assert dep > 10 * indep

    def test_penalty_sums_layers(self):
        torch.manual_seed(0)
        model = nn.Sequential()
        model.add_module("layer1", nn.Linear(4, 6))
        model.add_module("fc", nn.Linear(6, 3))
        model.pretrained_cfg = {"classifier": "fc"}
        pen = HSICPenalty(3, hsic_x=0.2, hsic_y=0.7, sigma=2.0, normalized=False)
        handles = pen.attach(model)
        x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
        logits = model(x)
        hidden = nn.functional.linear(x, model.layer1.weight, model.layer1.bias)  # not model.layer1(x): its hook would record it; both hooks see layer1's output: once as its output, once as the head's input
        onehot = nn.functional.one_hot(y, 3).float()
        term = 0.2 * hsic(x, hidden, sigma_x=2.0, sigma_y=2.0) - 0.7 * hsic(onehot, hidden, sigma_x=None, sigma_y=2.0)
        want = nn.functional.cross_entropy(logits, y) + 2 * term
        torch.testing.assert_close(pen(logits, y), want)
        for h in handles:
            h.remove()

    def test_errors(self):
        with pytest.raises(ConfigError, match="HSIC needs two batches of the same size >= 2"):
            hsic(torch.zeros(3, 2), torch.zeros(4, 2))
        with pytest.raises(ConfigError, match="hsic_x must be a non-negative number"):
            HSICPenalty(3, hsic_x=-1.0)
        pen = HSICPenalty(3, layers=["nope"])
        with pytest.raises(ConfigError, match="BiDO hidden layer\\(s\\) not in the model: nope"):
            pen.attach(nn.Sequential(nn.Linear(2, 2)))


class TestTransferFreeze:
    def _net(self):
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 3))
        net.pretrained_cfg = {"classifier": "3"}
        return net

    def test_fraction_counts_elements(self):
        # parameters: 0.weight 32, 0.bias 8, 2.weight 64, 2.bias 8, 3.* 27 -> total 139
        net = self._net()
        assert freeze_leading(net, 0.25) == ["0.weight"]  # 32 <= 34.75 < 40
        net = self._net()
        assert freeze_leading(net, 0.8) == ["0.weight", "0.bias", "2.weight"]  # 104 <= 111.2 < 112

    def test_head_never_frozen(self):
        net = self._net()
        assert freeze_leading(net, 0.99)[-1] == "2.bias"
        assert all(p.requires_grad for p in net[3].parameters())

    def test_frozen_parameters_stay_bit_identical_after_training_steps(self):
        torch.manual_seed(0)
        net = self._net()
        frozen = set(freeze_leading(net, 0.3))
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.1, weight_decay=0.05)
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(net(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
            opt.step()
        for name, p in net.named_parameters():
            if name in frozen:
                assert torch.equal(p, before[name]), name
            else:
                assert not torch.equal(p, before[name]), name

    def test_bad_fraction(self):
        with pytest.raises(ConfigError, match=r"freeze must be a fraction in \[0, 1\)"):
            freeze_leading(self._net(), 1.0)
