"""Adaptive attacks (BPDA + CA target, EOT), PPA's final selection and per-step augmentation, on hand-built toys.

Each toy is built so that the right answer is known without running the code under test:

- a target whose low-rank tanh head is saturated everywhere near the start: its input gradient is
  exactly zero in float32, so a plain gradient attack cannot move (its reconstructions all stay in
  the start's class: target accuracy = chance), while a straight-through (BPDA) backward reaches
  every class;
- a digits target trained with random erasing: the EOT objective (loss averaged over 8 erasures)
  varies less from step to step than the one-erasure objective;
- a target that is confident on one candidate only in its exact pixel layout and on another under
  every crop: the final selection must keep the second (highest mean confidence under augmentation).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from midefend.attacks import Attack, run_attack
from midefend.attacks.adaptive import adaptive_options, ca_optimum, ca_target_loss, straight_through_heads
from midefend.attacks.augment import apply_params, draw_params
from midefend.attacks.base import _Context, class_seed
from midefend.defenses.heads import LowRankTanhHead
from midefend.errors import ConfigError
from midefend.evaluation import Classifier
from reliability_fixtures import one_thread  # noqa: F401  (autouse fixture)


# ----------------------------------------------------------------------------- saturated tanh head


def saturated_target() -> Classifier:
    """4 classes = the sign pattern of a rank-2 tanh code; the code is ~60 +- 10 near mid-grey (tanh = 1.0 exactly)."""
    head = LowRankTanhHead(16, 4, rank=2, norm=False)
    with torch.no_grad():
        w = torch.zeros(2, 16)
        w[0, :8] = w[1, 8:] = 100.0 / math.sqrt(8)
        head.down.weight.copy_(w)
        head.down.bias.fill_(60.0)
        head.up.weight.copy_(1.5 * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]))
        head.up.bias.zero_()
    return Classifier(nn.Sequential(nn.Flatten(), head), input_size=(1, 4, 4), mean=(0.5,), std=(0.5,))


SATURATED_KW = {"classes": [0, 1, 2, 3], "per_class": 1, "steps": 60, "lr": 0.05, "tv_weight": 0.0, "seed": 0, "precision": "fp32"}


def target_accuracy(target: Classifier, result) -> float:
    images, labels = result.flat()
    return float((target.predict(images).argmax(1) == labels).float().mean())


class TestSaturatedTanhHead:
    def test_gradient_is_exactly_zero_and_bpda_restores_it(self):
        target = saturated_target()
        x = torch.full((1, 1, 4, 4), 0.5, requires_grad=True)
        target(x)[0, 3].backward()
        assert torch.count_nonzero(x.grad) == 0
        x.grad = None
        with straight_through_heads(target.model) as changed:
            logits = target(x)
            logits[0, 3].backward()
        assert changed == 1
        assert torch.count_nonzero(x.grad) == 16
        assert isinstance(target.model[1].act, nn.Tanh)  # restored after the block
        torch.testing.assert_close(logits, target(x))  # the forward pass is unchanged

    def test_plain_attack_stalls_at_chance(self):
        target = saturated_target()
        result = run_attack("miface", target, **SATURATED_KW)
        assert target_accuracy(target, result) == 0.25  # every reconstruction stays in class 0 (chance: 1/4)

    @pytest.mark.parametrize("adaptation", [{"bpda": True}, adaptive_options({"name": "calor", "rank": 2, "ca_b": 8.0})])
    def test_adaptive_attack_recovers_every_class(self, adaptation):
        target = saturated_target()
        result = run_attack("miface", target, **SATURATED_KW, **adaptation)
        assert target_accuracy(target, result) == 1.0
        assert result.config["bpda"] is True


class TestCATargetLoss:
    def test_zero_at_the_optimum_and_positive_on_both_sides(self):
        p = ca_optimum(8.0)
        assert p == pytest.approx(math.exp(-1 / 8))
        logit = math.log(p / (1 - p))  # two classes: p_0 = sigmoid(z_0 - z_1)
        at = ca_target_loss(torch.tensor([[logit, 0.0]]), torch.tensor([0]), p_target=p)
        below = ca_target_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), p_target=p)
        above = ca_target_loss(torch.tensor([[8.0, 0.0]]), torch.tensor([0]), p_target=p)
        assert float(at) == pytest.approx(0.0, abs=1e-10)
        assert float(below) == pytest.approx((math.log(0.5) - math.log(p)) ** 2)
        assert float(above) > 0

    def test_errors(self):
        with pytest.raises(ConfigError, match=r"ca_target must be in \(0, 1\), got 1.0"):
            ca_target_loss(torch.zeros(1, 2), torch.tensor([0]), p_target=1.0)
        with pytest.raises(ConfigError, match=r"ca_b must be a positive number, got 0"):
            ca_optimum(0)
        with pytest.raises(ConfigError, match=r"attack 'x' does not support the adaptive options"):
            type("X", (Attack,), {"name": "x"})(eot=2)


class TestAdaptiveOptions:
    def test_from_the_defense_record(self):
        assert adaptive_options({"name": "nodef"}) == {}
        assert adaptive_options({"name": "midre", "erase_scale": [0.1, 0.8], "erase_ratio": [1.0, 1.0]}) == {
            "eot": 4, "erase_scale": [0.1, 0.8], "erase_ratio": [1.0, 1.0],
        }
        assert adaptive_options({"name": "calor", "rank": 12, "ca_b": 4.0}) == {"bpda": True, "ca_target": round(math.exp(-0.25), 4)}
        forced = adaptive_options({"name": "nodef"}, force=True)
        assert forced["eot"] == 4 and forced["erase_scale"] == [0.1, 0.4] and forced["bpda"] is True


# ----------------------------------------------------------------------------- EOT against erasing


def erasing_trained_target() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A softmax regression on 8x8 digits trained with one random erasure per image (MIDRE, area 0.1-0.4)."""
    from sklearn.datasets import load_digits

    from midefend.defenses.erasing import random_erase_batch

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=5e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            erased = random_erase_batch(x[idx], scale=(0.1, 0.4), generator=gen)
            loss = nn.functional.cross_entropy(net((erased - 0.5) / 0.5), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return Classifier(net, input_size=(1, 8, 8), mean=(0.5,), std=(0.5,)), x, y


def test_eot_objective_varies_less_from_step_to_step():
    target, x, y = erasing_trained_target()
    assert float((target.predict(x).argmax(1) == y).float().mean()) > 0.85
    ctx = _Context(target, None, torch.device("cpu"), {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": False})
    params = torch.cat([x[y == c][:4] for c in range(5)])  # 4 fixed "reconstructions" of each of classes 0-4
    targets = torch.arange(5).repeat_interleave(4)

    def step_losses(eot: int) -> torch.Tensor:
        attack = get_miface(eot)
        gens = [torch.Generator().manual_seed(class_seed(0, c)) for c in range(5)]
        with torch.no_grad():
            return torch.stack([attack.step_loss(ctx, params, targets, None, gens).sum() for _ in range(30)])

    one, eight = step_losses(1), step_losses(8)
    assert one.std() > 0  # the erasures really change the objective
    # Averaging 8 independent erasures divides the variance by ~8; 3 leaves room for sampling noise.
    assert float(eight.var()) < float(one.var()) / 3
    assert abs(float(eight.mean()) - float(one.mean())) < 3 * float(one.std()) / math.sqrt(30) + 1e-6  # same expectation


def get_miface(eot: int):
    from midefend.attacks import get_attack

    return get_attack("miface")(per_class=4, eot=eot, erase_scale=(0.1, 0.4))


# ----------------------------------------------------------------------------- PPA's final selection


class LookupNet(nn.Module):
    """Class-0 logit 10 on exactly CRISP, 3 on the constant 0.5 image, 1 on constant 0.3, -5 elsewhere; class 1: 0."""

    def __init__(self, crisp: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("crisp", crisp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        s = torch.full((x.shape[0],), -5.0)
        s = torch.where((flat - 0.3).abs().amax(1) < 1e-4, 1.0, s)
        s = torch.where((flat - 0.5).abs().amax(1) < 1e-4, 3.0, s)
        s = torch.where((flat - self.crisp.flatten()).abs().amax(1) < 1e-4, 10.0, s)
        s = s + 0.0 * flat.sum(1)  # a graph for the (vanishing) optimisation step
        return torch.stack([s, torch.zeros_like(s)], dim=1)


class FixedCandidates(Attack):
    """Pixel candidates given up front; a vanishing learning rate leaves them where they are."""

    name = "fixed-candidates"
    uses_prior = False
    defaults = {"steps": 1, "lr": 1e-12, "augment": "crop+flip", "selection_augs": 100, "selection_scale": [0.5, 0.9], "selection_ratio": [0.8, 1.2]}
    start: torch.Tensor

    def init_params(self, ctx, classes, gens):
        return self.start.clone()

    def render(self, ctx, params):
        return params


def test_final_selection_keeps_the_most_robust_candidates():
    crisp = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = Classifier(LookupNet(crisp), input_size=(1, 8, 8), mean=(0.0,), std=(1.0,))
    attack = FixedCandidates(per_class=2, candidates=3, precision="fp32")
    # crisp: p = sigmoid(10) clean, sigmoid(-5) under any crop; 0.5: sigmoid(3) always; 0.3: sigmoid(1) always.
    attack.start = torch.stack([crisp, torch.full((1, 8, 8), 0.5), torch.full((1, 8, 8), 0.3)])
    result = attack.run(target, classes=[0])
    torch.testing.assert_close(result.images[0], attack.start[1:])  # robust first, the crisp one dropped
    torch.testing.assert_close(result.target_confidence[0], torch.sigmoid(torch.tensor([3.0, 1.0])))
    # Selecting by the clean confidence alone would have kept the crisp candidate first.
    attack.options["selection_augs"] = 0
    assert torch.equal(attack.run(target, classes=[0]).images[0, 0], crisp)


# ----------------------------------------------------------------------------- PPA's per-step augmentation


def test_ppa_optimises_through_the_drawn_crop_and_flip(monkeypatch):
    from midefend.attacks.ppa import PPAAttack
    from midefend.attacks.priors import DCGANGenerator, GenerativePrior

    torch.manual_seed(0)
    prior = GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16))
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 3))
    target = Classifier(net, input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))
    seen, rendered = [], []
    net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()) if torch.is_grad_enabled() else None)
    render = PPAAttack.render

    def recording_render(self, ctx, params):
        images = render(self, ctx, params)
        if params.requires_grad:
            rendered.append(images.detach().clone())
        return images

    monkeypatch.setattr(PPAAttack, "render", recording_render)
    steps, k = 3, 2
    run_attack("ppa", target, prior, classes=[1], per_class=1, candidates=k, steps=steps, init_pool=8, seed=5, precision="fp32")
    assert len(seen) == len(rendered) == steps
    aug = draw_params(torch.Generator().manual_seed(class_seed(5, 1)), (steps, k), scale=(0.9, 1.0), flip=True)
    for step in range(steps):
        expected = (apply_params(rendered[step], aug[step]) - 0.5) / 0.5  # what the target's network receives
        torch.testing.assert_close(seen[step], expected)
        assert not torch.allclose(seen[step], (rendered[step] - 0.5) / 0.5, atol=1e-3)
