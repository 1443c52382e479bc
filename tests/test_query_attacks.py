"""Black-box (NES) and label-only (BREP-MI) attacks and the query oracle they see the target through."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from attack_fixtures import record_chunks
from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)
from midefend.attacks import DCGANGenerator, GenerativePrior, get_attack, list_attacks, run_attack
from midefend.attacks.base import class_seed
from midefend.attacks.oracle import Oracle, QueryBudgetExceeded
from midefend.errors import ConfigError
from midefend.evaluation import Classifier
from midefend.evaluation.metrics import attack_accuracy


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this target refuses gradients")


class Counting(nn.Module):
    """Wraps a model: counts the images it sees; optionally an affine map of the logits or no backward."""

    def __init__(self, model: nn.Module, *, scale: float = 1.0, shift: float = 0.0, no_backward: bool = False) -> None:
        super().__init__()
        self.model, self.scale, self.shift, self.no_backward = model, scale, shift, no_backward
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        logits = self.model(x) * self.scale + self.shift
        return _NoBackward.apply(logits) if self.no_backward else logits


class Constant(nn.Module):
    """A 'target' whose output carries no class signal: the same logits for every input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0.0 * x.flatten(1)[:, :1]


def wrap(model: nn.Module, like: Classifier) -> Classifier:
    return Classifier(model, input_size=like.input_size, mean=like.mean.flatten().tolist(), std=like.std.flatten().tolist())


@pytest.fixture(scope="module")
def tiny(tiny_world):
    return tiny_world


@pytest.fixture(scope="module")
def linear_world():
    """An 8×8 random DCGAN and a linear target: random latents reach classes 0 and 3 often, 2 rarely, 1 never."""
    torch.manual_seed(0)
    prior = GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=8), name="random")
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    return prior, Classifier(net, input_size=(1, 8, 8), mean=(0.5,), std=(0.5,))


# ---------------------------------------------------------------------- oracle


class TestOracle:
    def make(self, **kw):
        net = Counting(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
        return net, Oracle(Classifier(net, input_size=(1, 2, 2), mean=(0.0,), std=(1.0,)), **kw)

    def test_budget_is_exact_and_refusal_answers_nothing(self):
        net, oracle = self.make(output="label", budget=10)
        oracle(torch.rand(4, 1, 2, 2))
        oracle(torch.rand(6, 1, 2, 2))
        assert oracle.queries == [10] and oracle.remaining() == 0 and net.images == 10
        with pytest.raises(QueryBudgetExceeded, match=r"account 0 has used 10 of 10 queries and 1 more were asked"):
            oracle(torch.rand(1, 1, 2, 2))
        assert oracle.queries == [10] and net.images == 10  # refused before the target saw anything

    def test_a_batch_over_budget_is_refused_whole(self):
        net, oracle = self.make(budget=10)
        with pytest.raises(QueryBudgetExceeded, match=r"used 0 of 10 queries and 11 more"):
            oracle(torch.rand(11, 1, 2, 2))
        assert oracle.queries == [0] and net.images == 0

    def test_accounts(self):
        _, oracle = self.make(budget=3, accounts=2)
        oracle(torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 1, 1]))
        assert oracle.queries == [1, 3]
        with pytest.raises(QueryBudgetExceeded, match=r"account 1 has used 3 of 3"):
            oracle(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
        oracle(torch.rand(2, 1, 2, 2), torch.tensor([0, 0]))
        assert oracle.queries == [3, 3]

    def test_outputs_and_no_gradient(self):
        net, probs = self.make(output="probabilities")
        _, labels = self.make(output="label")
        labels._target = probs._target
        x = torch.rand(5, 1, 2, 2, requires_grad=True)
        logits = net.model(x).detach()
        p = probs(x)
        torch.testing.assert_close(p, logits.softmax(1))
        assert torch.equal(labels(x), logits.argmax(1))
        assert not p.requires_grad and p.grad_fn is None

    def test_errors(self):
        with pytest.raises(ConfigError, match=r"output must be one of probabilities, label, got 'logits'"):
            self.make(output="logits")
        with pytest.raises(ConfigError, match=r"budget must be a non-negative integer or None, got -1"):
            self.make(budget=-1)


# ---------------------------------------------------------------------- NES (black-box)

NES_KW = {"per_class": 2, "candidates": 2, "steps": 60, "lr": 0.2, "init_pool": 100, "samples": 5, "augment": "crop", "precision": "fp32", "seed": 0}
DRAWABLE = [0, 3, 4]  # the digits the public prior (trained on 5-9) can be steered to; 1 and 2 it cannot


class TestNES:
    def test_succeeds_on_a_target_whose_backward_raises(self, tiny):
        with pytest.raises(RuntimeError, match="refuses gradients"):  # a gradient attack cannot run on it
            run_attack("ppa", wrap(Counting(tiny.target.model, no_backward=True), tiny.target), tiny.prior, classes=[0], per_class=1, steps=1, init_pool=4)
        guarded = Counting(tiny.target.model, no_backward=True)
        result = run_attack("nes", wrap(guarded, tiny.target), tiny.prior, classes=DRAWABLE, **NES_KW)
        images, labels = result.flat()
        # Measured: 1.0 with the real target, 0.67 with the independent evaluator (chance 0.2).
        assert attack_accuracy(tiny.target.predict(images), labels).mean >= 0.8
        assert attack_accuracy(tiny.eval.predict(images), labels).mean >= 0.5
        # Every image the target saw is a counted query, except the engine's class count (1)
        # and the report's confidence on the 3 × 2 final images.
        assert guarded.images == result.config["queries"] + 1 + 6
        assert result.config["queries_per_class"] == [5 * 2 * 2 * 60 + 2] * 3 and result.config["queries_shared"] == 100

    def test_fails_without_class_signal(self, tiny):
        constant = wrap(Constant(torch.tensor([[0.3, 0.1, -0.2, 0.0, 0.5]])), tiny.target)
        result = run_attack("nes", constant, tiny.prior, classes=DRAWABLE, **NES_KW)
        # No signal: every estimated gradient is exactly zero, nothing moves, and all classes keep
        # the same (tied) pool latents; an image can then be right for one class at most.
        assert all(torch.equal(result.images[0], result.images[c]) for c in range(3))
        images, labels = result.flat()
        assert attack_accuracy(tiny.target.predict(images), labels).mean <= 1 / 3 + 1e-6

    def test_query_budget_is_respected_exactly(self, tiny):
        result = run_attack("nes", tiny.target, tiny.prior, classes=[1, 3], **{**NES_KW, "query_budget": 250})
        # per class: 2 for the final order, then rounds of 2 candidates × 2 × 5 samples = 20: 12 rounds
        assert result.config["queries_per_class"] == [2 + 12 * 20] * 2
        with pytest.raises(Exception, match=r"needs at least 2 queries per class before its first step; query_budget is 1"):
            run_attack("nes", tiny.target, tiny.prior, classes=[1], **{**NES_KW, "query_budget": 1})

    def test_same_seed_same_result_and_resume(self, tiny, tmp_path, monkeypatch):
        kw = {**NES_KW, "steps": 4, "class_batch": 1, "classes": [0, 2, 4]}
        full = run_attack("nes", tiny.target, tiny.prior, out_dir=tmp_path, **kw)
        again = run_attack("nes", tiny.target, tiny.prior, **kw)
        other = run_attack("nes", tiny.target, tiny.prior, **{**kw, "seed": 1})
        assert torch.equal(full.images, again.images) and not torch.equal(full.images, other.images)
        (tmp_path / "class_00002.safetensors").unlink()
        calls = record_chunks(monkeypatch, get_attack("nes"))
        resumed = run_attack("nes", tiny.target, tiny.prior, out_dir=tmp_path, resume=True, **kw)
        assert calls == [[2]]
        assert torch.equal(resumed.images, full.images)
        assert resumed.config["queries"] == full.config["queries"] == 100 + 3 * (4 * 20 + 2)


# ---------------------------------------------------------------------- BREP (label-only)

BREP_KW = {"per_class": 2, "steps": 20, "points": 8, "init_queries": 64, "init_batch": 16, "precision": "fp32", "seed": 0}


class TestBREP:
    def test_reconstructions_depend_only_on_labels(self, linear_world):
        prior, target = linear_world
        same_labels = wrap(Counting(target.model, scale=3.0, shift=5.0), target)
        a = run_attack("brep", target, prior, **BREP_KW)
        b = run_attack("brep", same_labels, prior, **BREP_KW)
        assert torch.equal(a.images, b.images)
        assert a.config["queries_per_class"] == b.config["queries_per_class"]
        assert not torch.equal(a.target_confidence, b.target_confidence)  # the logits did differ
        # Control: a target with other labels (negated logits) leads elsewhere.
        other = run_attack("brep", wrap(Counting(target.model, scale=-1.0), target), prior, **BREP_KW)
        assert not torch.equal(a.images[0], other.images[0])

    def test_repels_from_the_boundary_where_it_can_start(self, linear_world):
        prior, target = linear_world
        start = run_attack("brep", target, prior, classes=[0, 3], **{**BREP_KW, "steps": 1})
        end = run_attack("brep", target, prior, classes=[0, 3], **{**BREP_KW, "steps": 40})
        images, labels = end.flat()
        assert torch.equal(target.predict(images).argmax(1), labels)  # every move kept the label
        # Measured: mean confidence 0.27 -> 0.38 (class 0) and 0.27 -> 0.37 (class 3).
        assert bool((end.target_confidence.mean(1) > start.target_confidence.mean(1) + 0.05).all())

    def test_no_start_no_attack(self, linear_world):
        prior, target = linear_world
        result = run_attack("brep", target, prior, classes=[1], **BREP_KW)
        # Class 1 is never the label of a random latent: the attack keeps its first draws, unmoved.
        first = prior.sample_latents(16, generator=torch.Generator().manual_seed(class_seed(0, 1)))[:2]
        torch.testing.assert_close(result.images[0], prior(first))  # (channels_last in the run: not bit-equal)
        assert result.config["queries_per_class"] == [64 + 20 * 2 * (8 + 1)]  # searched, proposed, refused

    def test_query_budget_is_respected_exactly(self, linear_world):
        prior, target = linear_world
        result = run_attack("brep", target, prior, classes=[0, 1, 3], **{**BREP_KW, "query_budget": 150})
        # a class stops when its next iteration's worst case (2 × (8 + 1) = 18) would not fit
        assert all(150 - 18 < q <= 150 for q in result.config["queries_per_class"])
        assert result.config["queries_per_class"][1] == 64 + 4 * 18

    def test_same_seed_same_result_and_resume(self, linear_world, tmp_path):
        prior, target = linear_world
        kw = {**BREP_KW, "class_batch": 1, "classes": [0, 2, 3]}
        full = run_attack("brep", target, prior, out_dir=tmp_path, **kw)
        other = run_attack("brep", target, prior, **{**kw, "seed": 5})
        assert not torch.equal(full.images, other.images)
        (tmp_path / "class_00003.safetensors").unlink()
        resumed = run_attack("brep", target, prior, out_dir=tmp_path, resume=True, **kw)
        assert torch.equal(resumed.images, full.images)
        assert resumed.config["queries_per_class"] == full.config["queries_per_class"]

    @pytest.mark.parametrize(
        "options,message",
        [
            ({"init_pool": 10}, r"brep draws its own starting latents: leave init_pool at 0"),
            ({"growth": 0.5}, r"growth must be a number >= 1, got 0.5"),
            ({"query_budget": 10}, r"query_budget \(10\) must cover init_queries \(256\)"),
        ],
    )
    def test_bad_options(self, options, message):
        with pytest.raises(ConfigError, match=message):
            get_attack("brep")(**options)


def test_threat_models_are_declared():
    assert "nes" in list_attacks() and "brep" in list_attacks() and "plg" in list_attacks()
    assert (get_attack("nes").threat_model, get_attack("brep").threat_model, get_attack("plg").threat_model) == (
        "black-box", "label-only", "white-box",
    )
