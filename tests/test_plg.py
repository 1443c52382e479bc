"""PLG-MI: pseudo-labels, the conditional GAN (training, file, cache) and the attack end to end."""

from __future__ import annotations

import pytest
import torch

from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)
from midefend.attacks import run_attack
from midefend.attacks import plg as plg_module
from midefend.attacks.conditional_prior import (
    ConditionalPrior,
    load_conditional_prior,
    pseudo_label,
    save_conditional_prior,
    train_conditional_prior,
)
from midefend.errors import CheckpointError, ConfigError
from midefend.evaluation.metrics import attack_accuracy


@pytest.fixture(scope="module")
def tiny(tiny_world):
    return tiny_world


class TestPseudoLabel:
    def test_top_n_most_confident_per_predicted_class(self):
        probs = torch.tensor(
            [
                [0.50, 0.30, 0.20],  # 0 -> class 0 (0.50)
                [0.10, 0.80, 0.10],  # 1 -> class 1 (0.80)
                [0.70, 0.20, 0.10],  # 2 -> class 0 (0.70)
                [0.40, 0.35, 0.25],  # 3 -> class 0 (0.40): third of class 0, dropped at top_n=2
                [0.05, 0.90, 0.05],  # 4 -> class 1 (0.90)
                [0.45, 0.10, 0.45],  # 5 -> class 0 (tie 0.45: argmax takes the first)
                [0.10, 0.20, 0.70],  # 6 -> class 2 (0.70), but 0.20 for class 1 is never used
            ]
        )
        index, label = pseudo_label(probs, top_n=2)
        assert index.tolist() == [2, 0, 4, 1, 6]
        assert label.tolist() == [0, 0, 1, 1, 2]
        index, label = pseudo_label(probs, top_n=10)  # class 0 keeps all four, most confident first
        assert index.tolist() == [2, 0, 5, 3, 4, 1, 6]

    def test_ties_keep_the_lower_index_and_empty_classes_stay_empty(self):
        probs = torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.6, 0.4, 0.0]])
        index, label = pseudo_label(probs, top_n=2)
        assert index.tolist() == [0, 1] and label.tolist() == [0, 0]

    def test_errors(self):
        with pytest.raises(ConfigError, match=r"top_n must be a positive integer, got 0"):
            pseudo_label(torch.ones(2, 2), top_n=0)


class TestConditionalPrior:
    def test_training_is_seeded_and_the_file_round_trips(self, tiny, tmp_path):
        images, labels = torch.rand(12, 1, 16, 16), torch.tensor([0, 1, 3] * 4)
        kw = {"num_classes": 5, "steps": 3, "batch_size": 4, "seed": 0}
        a = train_conditional_prior(tiny.prior, tiny.target, images, labels, **kw)
        b = train_conditional_prior(tiny.prior, tiny.target, images, labels, **kw)
        z = torch.randn(5, 16)
        y = torch.arange(5)
        assert torch.equal(a(z, y), b(z, y))
        assert not torch.equal(a(z, y), tiny.prior(z))  # it did train
        assert a.shift[[2, 4]].abs().sum() == 0 and a.shift[[0, 1, 3]].abs().sum() > 0  # only seen classes move
        path = save_conditional_prior(a, tmp_path / "c.safetensors", {"note": 1})
        loaded, info = load_conditional_prior(path)
        assert info == {"note": 1}
        assert torch.equal(loaded(z, y), a(z, y))
        assert torch.equal(loaded.discriminator(a(z, y), y), a.discriminator(a(z, y), y))
        assert isinstance(loaded, ConditionalPrior)

    def test_bad_file(self, tmp_path):
        (tmp_path / "junk.safetensors").write_bytes(b"junk")
        with pytest.raises(CheckpointError, match=r"cannot read the conditional prior"):
            load_conditional_prior(tmp_path / "junk.safetensors")


KW = {"per_class": 2, "candidates": 2, "steps": 60, "augment": "crop", "gan_steps": 20, "public_samples": 300, "top_n": 20,
      "precision": "fp32", "seed": 0}


class TestPLGAttack:
    def test_end_to_end_with_a_cached_gan(self, tiny, tmp_path, monkeypatch):
        result = run_attack("plg", tiny.target, tiny.prior, classes=[0, 3, 4], cache_dir=str(tmp_path), **KW)
        stage = result.config["conditional_gan"]
        assert stage["cached"] is False and stage["public_images"] == 300 and stage["pseudo_labelled"] >= 1
        assert [p.name for p in (tmp_path / "plg").iterdir()] == [stage["path"].rsplit("/", 1)[1]]
        images, labels = result.flat()
        # Measured on the digits the prior can be steered to: 1.0 with the target; the independent
        # evaluator agrees on 2 of 6 (0.33) — a 20-step GAN on a blurry 16×16 prior.
        assert attack_accuracy(tiny.target.predict(images), labels).mean >= 0.8

        def no_training(*args, **kwargs):
            raise AssertionError("the cached GAN should have been reused")

        monkeypatch.setattr(plg_module, "train_conditional_prior", no_training)
        again = run_attack("plg", tiny.target, tiny.prior, classes=[0, 3, 4], cache_dir=str(tmp_path), **KW)
        assert again.config["conditional_gan"]["cached"] is True
        assert torch.equal(again.images, result.images)

    def test_resume_and_seed(self, tiny, tmp_path):
        kw = {**KW, "steps": 5, "class_batch": 1, "classes": [0, 3], "cache_dir": str(tmp_path / "cache")}
        full = run_attack("plg", tiny.target, tiny.prior, out_dir=tmp_path / "run", **kw)
        (tmp_path / "run" / "class_00003.safetensors").unlink()
        resumed = run_attack("plg", tiny.target, tiny.prior, out_dir=tmp_path / "run", resume=True, **kw)
        assert torch.equal(resumed.images, full.images)

    def test_bad_options(self, tiny, tmp_path):
        with pytest.raises(ConfigError, match=r"plg starts from random latents of its conditional generator"):
            run_attack("plg", tiny.target, tiny.prior, init_pool=10)
        with pytest.raises(ConfigError, match=r"classes must be in 0..4 for this target, got \[9\]"):
            run_attack("plg", tiny.target, tiny.prior, classes=[9], cache_dir=str(tmp_path))
        assert not (tmp_path / "plg").exists()  # refused before any GAN training
