"""LowRankTanhHead: structure, forward against a hand-written reference, SVD warm start, errors."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import devices
from hypothesis import given, settings
from hypothesis import strategies as st

from midefend import ConfigError
from midefend.defenses.heads import ACTIVATIONS, LowRankTanhHead, validate_rank


def _reference_forward(head: LowRankTanhHead, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d (eval statistics) -> Linear -> tanh -> Linear, written with plain tensor ops."""
    bn = head.norm
    h = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    h = torch.tanh(h @ head.down.weight.T + head.down.bias)
    return h @ head.up.weight.T + head.up.bias


class TestLowRankTanhHeadModule:
    def test_structure_and_attributes(self):
        head = LowRankTanhHead(32, 12, rank=5)
        assert (head.in_features, head.num_classes, head.rank, head.activation_name) == (32, 12, 5, "tanh")
        assert isinstance(head.norm, nn.BatchNorm1d) and head.norm.num_features == 32
        assert (head.down.in_features, head.down.out_features) == (32, 5)
        assert isinstance(head.act, nn.Tanh)
        assert (head.up.in_features, head.up.out_features) == (5, 12)
        assert head.down.bias is not None and head.up.bias is not None
        assert "in_features=32, num_classes=12, rank=5, activation='tanh'" in repr(head)

    def test_no_norm_no_bias(self):
        head = LowRankTanhHead(16, 4, rank=2, norm=False, bias=False)
        assert isinstance(head.norm, nn.Identity)
        assert head.down.bias is None and head.up.bias is None
        assert head.config() == {"in_features": 16, "num_classes": 4, "rank": 2, "activation": "tanh", "norm": False, "bias": False}
        assert sorted(head.state_dict()) == ["down.weight", "up.weight"]

    @pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
    def test_activation_by_name(self, activation):
        head = LowRankTanhHead(8, 6, rank=3, activation=activation)
        assert isinstance(head.act, ACTIVATIONS[activation].module)
        assert head.config()["activation"] == activation

    def test_forward_matches_reference_in_eval_mode(self):
        head = LowRankTanhHead(20, 7, rank=4)
        with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
            head.norm.running_mean.normal_()
            head.norm.running_var.uniform_(0.5, 2.0)
            head.norm.weight.normal_()
            head.norm.bias.normal_()
        head.eval()
        x = torch.randn(9, 20)
        torch.testing.assert_close(head(x), _reference_forward(head, x))
        pre = head(x, pre_logits=True)
        assert pre.shape == (9, 4) and pre.abs().max() < 1  # tanh output
        torch.testing.assert_close(head.up(pre), head(x))

    def test_train_mode_uses_batch_statistics(self):
        head = LowRankTanhHead(6, 5, rank=2).train()
        x = torch.randn(32, 6) * 3 + 1
        normed = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + head.norm.eps)
        expected = torch.tanh(normed @ head.down.weight.T + head.down.bias) @ head.up.weight.T + head.up.bias
        torch.testing.assert_close(head(x), expected)

    def test_token_inputs_flatten_leading_dimensions(self):
        head = LowRankTanhHead(10, 3, rank=2).eval()
        x = torch.randn(2, 5, 10)
        out = head(x)
        assert out.shape == (2, 5, 3)
        torch.testing.assert_close(out, head(x.reshape(10, 10)).reshape(2, 5, 3))
        assert head(x, pre_logits=True).shape == (2, 5, 2)

    def test_config_rebuilds_identical_head(self):
        head = LowRankTanhHead(24, 9, rank=3, activation="sigmoid").eval()
        config = json.loads(json.dumps(head.config()))
        clone = LowRankTanhHead(**config)
        clone.load_state_dict(head.state_dict(), strict=True)
        x = torch.randn(4, 24)
        torch.testing.assert_close(clone.eval()(x), head(x))

    def test_device_dtype_and_backward(self):
        head = LowRankTanhHead(12, 5, rank=3, dtype=torch.float64)
        assert all(p.dtype == torch.float64 for p in head.parameters())
        head(torch.randn(8, 12, dtype=torch.float64)).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())

    def test_pickle_and_reset(self):
        head = LowRankTanhHead(12, 5, rank=3)
        clone = pickle.loads(pickle.dumps(head))
        torch.testing.assert_close(clone.state_dict(), head.state_dict())
        with torch.no_grad():
            head.norm.weight.fill_(3.0)
        head.reset_parameters()
        assert torch.equal(head.norm.weight, torch.ones(12))

    def test_wrong_feature_size(self):
        head = LowRankTanhHead(12, 5, rank=3)
        with pytest.raises(ConfigError, match=r"expects inputs of shape \(\.\.\., 12\), got \(4, 13\)"):
            head(torch.randn(4, 13))


class TestRankValidation:
    @pytest.mark.parametrize(
        "rank, match",
        [
            (0, r"rank must be in \[1, 10\] \(min\(in_features=64, num_classes=10\)\), got 0"),
            (-3, r"rank must be in \[1, 10\] .*got -3"),
            (11, r"rank must be in \[1, 10\] .*got 11"),
            (2.0, r"rank must be an integer in \[1, 10\] .*got 2.0"),
            (True, r"rank must be an integer in \[1, 10\] .*got True"),
            ("4", r"rank must be an integer in \[1, 10\] .*got '4'"),
        ],
    )
    def test_bad_rank(self, rank, match):
        with pytest.raises(ConfigError, match=match):
            LowRankTanhHead(64, 10, rank=rank)

    def test_full_rank_warns(self):
        with pytest.warns(UserWarning, match=r"rank=10 equals min\(in_features=64, num_classes=10\): the head is not low-rank"):
            LowRankTanhHead(64, 10, rank=10)

    def test_low_rank_is_silent_and_numpy_int_accepted(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert validate_rank(np.int64(9), 64, 10) == 9

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"in_features": 0}, r"in_features must be a positive integer, got 0"),
            ({"num_classes": 2.5}, r"num_classes must be a positive integer, got 2.5"),
            ({"activation": "gelu"}, r"activation must be one of identity, relu, sigmoid, tanh, got 'gelu'"),
            ({"norm": 1}, r"norm must be True or False, got 1"),
            ({"bias": None}, r"bias must be True or False, got None"),
        ],
    )
    def test_bad_constructor_arguments(self, kwargs, match):
        args = {"in_features": 16, "num_classes": 8, "rank": 2, **kwargs}
        with pytest.raises(ConfigError, match=match):
            LowRankTanhHead(**args)


def _svd_reference(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, rank: int, x: np.ndarray) -> np.ndarray:
    """The rank-r affine approximation the warm start aims at: W_r (x - mu) + W mu + b (numpy, float64)."""
    u, s, vh = np.linalg.svd(weight, full_matrices=False)
    w_r = (u[:, :rank] * s[:rank]) @ vh[:rank]
    return (x - mean) @ w_r.T + weight @ mean + bias


def _relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def trained_like_linear():
    """A Linear with decaying singular values, and features that are not standardised."""
    gen = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(48, 10, generator=gen, dtype=torch.float64))
    s = torch.logspace(1, -1, 10, dtype=torch.float64)
    linear = nn.Linear(48, 10, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_((u * s) @ v.T)
        linear.bias.normal_(generator=gen)
    features = torch.rand(400, 48, generator=gen, dtype=torch.float64) * torch.linspace(0.5, 4, 48, dtype=torch.float64) + 1.0
    return linear, features


class TestFromLinear:
    @pytest.mark.parametrize("norm", [True, False])
    @pytest.mark.parametrize("rank", [10, 4])
    def test_identity_activation_equals_truncated_svd(self, trained_like_linear, rank, norm):
        linear, feats = trained_like_linear
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            head = LowRankTanhHead.from_linear(linear, rank, activation="identity", norm=norm, features=feats).eval()
        x = feats[:50]
        ref = _svd_reference(linear.weight.detach().numpy(), linear.bias.detach().numpy(), feats.mean(0).numpy(), rank, x.numpy())
        torch.testing.assert_close(head(x), torch.from_numpy(ref), rtol=1e-9, atol=1e-9)

    @settings(max_examples=40, deadline=None)
    @given(
        shape=st.tuples(st.integers(2, 24), st.integers(2, 24)).flatmap(
            lambda mc: st.tuples(st.just(mc[0]), st.just(mc[1]), st.integers(1, min(mc)))
        ),
        norm=st.booleans(),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_identity_activation_property(self, shape, norm, seed):
        # For any shape and rank, the linear warm start is exactly the centred truncated SVD.
        in_features, num_classes, rank = shape
        gen = torch.Generator().manual_seed(seed)
        linear = nn.Linear(in_features, num_classes, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.normal_(generator=gen)
            linear.bias.normal_(generator=gen)
        feats = torch.randn(64, in_features, generator=gen, dtype=torch.float64) * 2 + 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            head = LowRankTanhHead.from_linear(linear, rank, activation="identity", norm=norm, features=feats).eval()
        w, b, mu = linear.weight.detach().numpy(), linear.bias.detach().numpy(), feats.mean(0).numpy()
        ref = torch.from_numpy(_svd_reference(w, b, mu, rank, feats.numpy()))
        torch.testing.assert_close(head(feats), ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))

    @pytest.mark.parametrize("device", devices())
    def test_keeps_device(self, device):
        linear = nn.Linear(16, 8, device=device)
        head = LowRankTanhHead.from_linear(linear, 3, features=torch.randn(32, 16))  # features follow the head
        assert {p.device.type for p in head.parameters()} == {torch.device(device).type}
        assert head(torch.randn(4, 16, device=device)).shape == (4, 8)

    def test_without_features_assumes_standardised_inputs(self, trained_like_linear):
        linear, _ = trained_like_linear
        head = LowRankTanhHead.from_linear(linear, 4, activation="identity").eval()
        assert torch.equal(head.norm.running_mean, torch.zeros(48, dtype=torch.float64))
        x = torch.randn(20, 48, dtype=torch.float64)
        ref = _svd_reference(linear.weight.detach().numpy(), linear.bias.detach().numpy(), np.zeros(48), 4, x.numpy())
        torch.testing.assert_close(head(x), torch.from_numpy(ref), rtol=1e-9, atol=1e-9)

    @pytest.mark.parametrize("activation, tol", [("tanh", 0.02), ("sigmoid", 0.01), ("relu", 1e-9)])
    def test_full_rank_close_to_original(self, trained_like_linear, activation, tol):
        # tanh(z) - z ~ z^3/3: at RMS(z) = 0.1 the rank-r part is off by ~1.3% (relative RMS).
        linear, feats = trained_like_linear
        with pytest.warns(UserWarning, match="not low-rank"):
            head = LowRankTanhHead.from_linear(linear, 10, activation=activation, features=feats)
        ref = linear(feats).detach()
        assert _relative_rms(head.eval()(feats).detach(), ref) < tol
        # BatchNorm holds the features' statistics, so train mode computes the same function up to
        # BatchNorm's eps (train mode divides by sqrt(var + eps), the warm start by sqrt(var)).
        assert _relative_rms(head.train()(feats).detach(), ref) < tol + 1e-4

    def test_closeness_improves_with_smaller_linear_range(self, trained_like_linear):
        linear, feats = trained_like_linear
        ref = linear(feats).detach()
        errors = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for linear_range in (0.4, 0.1, 0.025):
                head = LowRankTanhHead.from_linear(linear, 10, features=feats, linear_range=linear_range).eval()
                errors.append(_relative_rms(head(feats).detach(), ref))
        assert errors[0] > 4 * errors[1] > 16 * errors[2] > 0  # quadratic in linear_range

    def test_pre_activation_rms_is_linear_range(self, trained_like_linear):
        linear, feats = trained_like_linear
        head = LowRankTanhHead.from_linear(linear, 6, features=feats, linear_range=0.2).eval()
        z = head.down(head.norm(feats)).detach()
        torch.testing.assert_close(z.pow(2).mean(0).sqrt(), torch.full((6,), 0.2, dtype=torch.float64))
        torch.testing.assert_close(head.norm.running_mean, feats.mean(0))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_keeps_dtype(self, dtype):
        linear = nn.Linear(16, 8).to(dtype)
        head = LowRankTanhHead.from_linear(linear, 3)
        assert all(p.dtype == dtype for p in head.parameters())
        assert head(torch.randn(4, 16, dtype=dtype)).dtype == dtype

    def test_linear_without_bias(self):
        linear = nn.Linear(16, 8, bias=False)
        head = LowRankTanhHead.from_linear(linear, 3, activation="identity", norm=False)
        x = torch.randn(5, 16)
        ref = _svd_reference(linear.weight.detach().double().numpy(), np.zeros(8), np.zeros(16), 3, x.double().numpy())
        torch.testing.assert_close(head(x).double(), torch.from_numpy(ref), rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"linear": nn.Conv2d(3, 3, 1)}, r"linear must be a torch.nn.Linear, got Conv2d"),
            ({"features": torch.randn(10, 15)}, r"features must have shape \(N >= 2, 16\), got \(10, 15\)"),
            ({"features": torch.ones(10, 16, dtype=torch.long)}, r"features must be a float tensor of shape \(N, 16\), got a torch.int64 tensor"),
            ({"features": torch.full((4, 16), float("nan"))}, r"features contains NaN or infinite values"),
            ({"linear_range": 0.0}, r"linear_range must be a positive finite number, got 0.0"),
            ({"rank": 9}, r"rank must be in \[1, 8\]"),
        ],
    )
    def test_errors(self, kwargs, match):
        args = {"linear": nn.Linear(16, 8), "rank": 3, **kwargs}
        linear, rank = args.pop("linear"), args.pop("rank")
        with pytest.raises(ConfigError, match=match):
            LowRankTanhHead.from_linear(linear, rank, **args)


def test_functional_reference_uses_same_layers():
    # Guards the reference above: with norm=False the head is two F.linear calls around tanh.
    head = LowRankTanhHead(8, 4, rank=2, norm=False)
    x = torch.randn(3, 8)
    expected = F.linear(torch.tanh(F.linear(x, head.down.weight, head.down.bias)), head.up.weight, head.up.bias)
    torch.testing.assert_close(head(x), expected)
