"""CALoR's recipe: the authors' CA optimiser option, and the default recipe's head regime."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import inspect
import math
import sys
import warnings
from pathlib import Path

import torch.nn as nn

from midefend.data import ClassificationData
from midefend.errors import ConfigError
from midefend.training.settings import TrainSettings
from midefend.training import defense_stages, train_classifier
from midefend.training.targets import train_target
from midefend.training import loop as loop_module
from midefend.training.stages import Stage
from test_training import fit, tiny, trained  # noqa: F401  (fixtures)


class TestAuthorsCAOptimizer:
    def test_stage(self):
        ca = defense_stages("calor", epochs=2, lr=1e-3, ca_optimizer="authors")[-1]
        assert ca == Stage("ca", 5, 2e-5, loss="ca", head_only=False, optimizer="authors-sgd", milestones=(3, 4))
        default = defense_stages("calor", epochs=2, lr=1e-3)[-1]
        assert default == Stage("ca", 5, 1e-4, loss="ca", head_only=True)
        # explicit values win over the preset's
        mixed = defense_stages("calor", epochs=2, lr=1e-3, ca_optimizer="authors", ca_lr=1e-3, ca_params="head")[-1]
        assert (mixed.lr, mixed.head_only, mixed.optimizer) == (1e-3, True, "authors-sgd")
        with pytest.raises(ConfigError, match=r"^ca_optimizer must be one of default, authors, got 'adam'$"):
            defense_stages("calor", epochs=2, lr=1e-3, ca_optimizer="adam")

    def test_builds_sgd_and_multistep_on_the_whole_model(self, tiny, trained, monkeypatch):
        built = []
        original = loop_module._stage_optimizer

        def spy(stage, *args, **kwargs):
            built.append((stage, *original(stage, *args, **kwargs)))
            return built[-1][1:]

        monkeypatch.setattr(loop_module, "_stage_optimizer", spy)
        train, test = tiny
        result = fit(copy.deepcopy(trained.model), train, test, defense="calor", rank=4, epochs=1, ca_epochs=5, ca_optimizer="authors")
        stage, optim, sched = built[-1]
        assert stage.name == "ca"
        assert type(optim) is torch.optim.SGD and len(optim.param_groups) == 1
        group = optim.param_groups[0]
        assert (group["momentum"], group["nesterov"], group["weight_decay"], group["dampening"]) == (0.9, False, 0.0, 0)
        assert {id(p) for p in group["params"]} == {id(p) for p in result.model.parameters()}  # the whole model
        steps = len(train) // 16 + (len(train) % 16 >= 2)
        assert type(sched) is torch.optim.lr_scheduler.MultiStepLR
        assert dict(sched.milestones) == {3 * steps: 1, 4 * steps: 1} and sched.gamma == 0.1
        ca_lrs = [row["lr"] for row in result.history if row["stage"] == "ca"]  # lr after each epoch's last step
        assert ca_lrs == pytest.approx([2e-5, 2e-5, 2e-6, 2e-7, 2e-7], rel=1e-9)
        assert result.defense["ca_params"] == "all"


class TestRefitUp:
    """``from_linear(..., refit_up=True)``: ``up`` is the least-squares map from the rank-r code to the old logits."""

    @staticmethod
    def _case():
        torch.manual_seed(0)
        linear = torch.nn.Linear(12, 6)
        feats = torch.randn(200, 12) * 3 + 1
        return linear, feats

    def test_normal_equations_hold(self):
        from midefend.defenses.heads import LowRankTanhHead

        linear, feats = self._case()
        head = LowRankTanhHead.from_linear(linear, 3, features=feats, linear_range=2.0, refit_up=True).double().eval()
        f64 = feats.double()
        code = head(f64, pre_logits=True)
        design = torch.cat([code, torch.ones(len(code), 1, dtype=torch.float64)], dim=1)
        residual = head(f64) - (f64 @ linear.weight.double().T + linear.bias.double())
        # the least-squares optimum: the residual is orthogonal to every column of the design (weights and bias)
        torch.testing.assert_close(design.T @ residual, torch.zeros(4, 6, dtype=torch.float64), atol=2e-3, rtol=0)
        plain = LowRankTanhHead.from_linear(linear, 3, features=feats, linear_range=2.0).double().eval()
        plain_residual = plain(f64) - (f64 @ linear.weight.double().T + linear.bias.double())
        assert residual.norm() < 0.8 * plain_residual.norm()  # saturated: 1/alpha alone does not restore the logits
        torch.testing.assert_close(head.down.weight, plain.down.weight)  # down is the SVD warm start either way

    def test_errors(self):
        from midefend.defenses.heads import LowRankTanhHead
        from midefend.defenses.surgery import harden

        linear, _ = self._case()
        with pytest.raises(ConfigError, match=r"^refit_up=True needs features \(the head's inputs on some training images\)$"):
            LowRankTanhHead.from_linear(linear, 3, refit_up=True)
        with pytest.raises(ConfigError, match=r"^refit_up=True needs init='svd' and calibration data$"):
            harden(torch.nn.Sequential(torch.nn.Linear(4, 3)), rank=2, head="0", refit_up=True)


class DigitsMLP(nn.Module):
    """A small MLP for 8x8 digits whose head ``fc`` harden() finds (pretrained_cfg)."""

    pretrained_cfg = {"classifier": "fc"}

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def digits_nodef():
    """scikit-learn's 8x8 digits (10 classes, 75/25 split) and a confident NoDef MLP trained on them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    data = ClassificationData(images.contiguous(), torch.from_numpy(digits.target).long(), [str(d) for d in range(10)], name="sk8")
    train, test = data.split(test_fraction=0.25, seed=0)
    torch.manual_seed(0)
    nodef = train_classifier(DigitsMLP(), train, test, epochs=30, lr=3e-3, batch_size=64, augment="none", progress=False)
    return train, test, nodef


class TestDefaultRecipeRegime:
    """The default CALoR recipe ends saturated (mean tanh' well below 1) and near the CA optimum."""

    # Measured (benchmarks/calor_regime.py): the default ends at mean tanh' 0.26 on ORL and 0.37 here,
    # the linear warm start at 0.98-0.99; 0.6 separates them with a wide margin.
    SATURATED = 0.6

    def run(self, digits_nodef, **kwargs):
        train, test, nodef = digits_nodef
        settings = {"defense": "calor", "rank": 6, "epochs": 10, "lr": 1e-4, "calor_lr": 1e-3, "batch_size": 64,
                    "augment": "none", "progress": False}  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the linear-regime warning of the linear case
            return train_classifier(copy.deepcopy(nodef.model), train, test, **(settings | kwargs))

    def test_saturated_and_confident(self, digits_nodef):
        optimum = math.exp(-1 / 8)
        before = self.run(digits_nodef, ca_epochs=0)
        after = self.run(digits_nodef)
        regime = after.extra["head_regime"]["fc"]
        assert regime["mean_slope"] < self.SATURATED and regime["saturated"] > 0.15
        assert after.extra["head_regime_start"]["fc"]["mean_slope"] < self.SATURATED  # saturated from the start
        assert before.train_confidence > optimum  # confident before CA, so the CA loss has a gradient
        assert abs(after.train_confidence - optimum) < abs(before.train_confidence - optimum)  # CA pulls toward it
        assert abs(after.train_confidence - optimum) < 0.08
        assert after.test_accuracy > digits_nodef[2].test_accuracy - 0.05

    def test_the_linear_copy_stays_linear(self, digits_nodef):
        linear = self.run(digits_nodef, head_init="svd", linear_range=0.1, calor_lr=1e-4, ca_epochs=0)
        assert linear.extra["head_regime"]["fc"]["mean_slope"] > 0.9  # what the threshold above tells apart


def test_benchmark_default_candidate_is_the_library_default():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from calor_regime import CANDIDATES, DEFAULT_CANDIDATE

    # the training settings' defaults, overridden where train_target has its own (calor_lr)
    defaults = {**{f.name: f.default for f in dataclasses.fields(TrainSettings)},
                **{k: p.default for k, p in inspect.signature(train_target).parameters.items() if p.default is not inspect.Parameter.empty}}  # fmt: skip
    defaults["ca_lr"] = defense_stages("calor", epochs=1, lr=1.0)[-1].lr
    defaults["ca_params"] = "head" if defense_stages("calor", epochs=1, lr=1.0)[-1].head_only else "all"
    assert {k: defaults[k] for k in CANDIDATES[DEFAULT_CANDIDATE][1]} == CANDIDATES[DEFAULT_CANDIDATE][1]

