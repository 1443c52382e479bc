"""CALoR's recipe: the authors' CA optimiser option, and the default recipe's head regime."""

from __future__ import annotations

import copy

import pytest
import torch

from midefend.errors import ConfigError
from midefend.training import defense_stages
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
