"""Bring your own generator: ``--prior-module pkg.mod:factory`` (midefend.attacks.user_prior)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import toy_stylegan
from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)
from midefend.attacks import ModulePrior, load_module_prior, run_attack, wrap_module_prior
from midefend.cli import app
from midefend.errors import CheckpointError, ConfigError
from midefend.models.classifier import Classifier


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "toy.safetensors"
    save_file({k: v.contiguous() for k, v in toy_stylegan.build(seed=1).state_dict().items()}, str(path))
    return path


def _target() -> Classifier:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 3))
    return Classifier(net, input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))


class TestLoad:
    def test_user_module_loads_with_its_weights(self, weights):
        prior = load_module_prior("toy_stylegan:build", weights)
        assert isinstance(prior, ModulePrior) and prior.space == "w" and prior.truncation == 0.5  # PPA's defaults
        assert (prior.latent_dim, prior.channels, prior.image_size) == (toy_stylegan.W_DIM, 3, 16)
        reference = toy_stylegan.build(seed=1).eval()
        z = torch.randn(3, toy_stylegan.Z_DIM, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            expected = (reference(z) + 1) / 2
            w = reference.mapping(z)[:, 0]
            assert torch.allclose(prior(w), expected.clamp(0, 1), atol=1e-6)
        assert not any(p.requires_grad for p in prior.parameters())  # frozen like every prior
        assert prior.config()["module"] == "toy_stylegan:build"

    def test_z_space_and_factory_weights(self):
        prior = load_module_prior("toy_stylegan:plain", None)
        assert prior.space == "z" and prior.latent_dim == 4
        images = prior(prior.sample_latents(2, generator=torch.Generator().manual_seed(0)))
        assert images.shape == (2, 1, 16, 16) and 0 <= float(images.min()) and float(images.max()) <= 1

    @pytest.mark.parametrize(
        ("spec", "error", "message"),
        [
            ("toy_stylegan:nope", ConfigError, r"^prior module 'toy_stylegan' has no factory 'nope'$"),
            ("no_such_module_xyz:build", ConfigError, r"^cannot import prior module 'no_such_module_xyz': ModuleNotFoundError"),
            ("toy_stylegan", ConfigError, r"^prior module must be 'package.module:factory'"),
            ("toy_stylegan:wrong_shape", ConfigError, r"returns \(4, 3, 16, 16\) for 4 latents, but declares \(4, 3, 32, 32\)"),
            ("toy_stylegan:wrong_range", ConfigError, r"returns values in \[-.*\], outside its declared output_range \(0, 1\)$"),
            ("toy_stylegan:not_a_module", ConfigError, r"must return a torch.nn.Module, got str$"),
        ],
    )
    def test_refused_with_one_line(self, spec, error, message):
        with pytest.raises(error, match=message) as info:
            load_module_prior(spec, None)
        assert "\n" not in str(info.value)

    def test_pickle_refused_unopened(self, tmp_path, monkeypatch):
        path = tmp_path / "toy.pt"
        torch.save(toy_stylegan.build().state_dict(), path)
        opened = []
        monkeypatch.setattr(torch, "load", lambda *a, **k: opened.append(a))
        with pytest.raises(CheckpointError, match=r"are a pickle \(torch.save\); midefend never unpickles a file") as info:
            load_module_prior("toy_stylegan:build", path)
        assert "\n" not in str(info.value) and not opened

    def test_weights_of_another_module_refused(self, tmp_path):
        path = tmp_path / "other.safetensors"
        save_file({"weight": torch.zeros(2)}, str(path))
        with pytest.raises(CheckpointError, match=r"do not fit the module: Error\(s\) in loading state_dict"):
            load_module_prior("toy_stylegan:build", path)

    def test_options_checked(self):
        with pytest.raises(ConfigError, match="truncation needs a w-space"):
            load_module_prior("toy_stylegan:plain", None, truncation=0.7)
        with pytest.raises(ConfigError, match="declares no 'mapping' and 'synthesis'"):
            load_module_prior("toy_stylegan:plain", None, space="w")
        with pytest.raises(ConfigError, match=r"truncation must be in \(0, 1\]"):
            load_module_prior("toy_stylegan:build", None, truncation=0.0)
        with pytest.raises(ConfigError, match="center_crop must be a positive number of pixels <= 16"):
            load_module_prior("toy_stylegan:build", None, center_crop=17)


class TestWSpace:
    def test_truncation_pulls_starts_towards_w_avg(self):
        module = toy_stylegan.build()
        full = wrap_module_prior(module, space="w", truncation=1.0)
        half = wrap_module_prior(module, space="w", truncation=0.5)
        assert torch.equal(half.w_avg, module.mapping.w_avg)  # the declared mean, not an estimate
        a = full.sample_latents(6, generator=torch.Generator().manual_seed(3))
        b = half.sample_latents(6, generator=torch.Generator().manual_seed(3))
        assert torch.allclose(b - half.w_avg, 0.5 * (a - full.w_avg), atol=1e-6)

    def test_w_avg_estimated_when_not_declared(self):
        module = toy_stylegan.build()
        del module.mapping.w_avg
        prior = wrap_module_prior(module, space="w")
        z = torch.randn(4096, toy_stylegan.Z_DIM, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(prior.w_avg, module.mapping(z)[:, 0].mean(0), atol=1e-5)

    def test_center_crop(self):
        prior = wrap_module_prior(toy_stylegan.build(), center_crop=12)
        w = prior.sample_latents(2)
        assert prior(w).shape == (2, 3, 12, 12) and prior.image_size == 12
        full = wrap_module_prior(toy_stylegan.build())
        assert torch.equal(prior(w), full(w)[..., 2:14, 2:14])

    def test_ppa_searches_w_with_truncation(self):
        prior = wrap_module_prior(toy_stylegan.build(), space="w", truncation=0.5)
        target = _target()
        options = {"classes": [0, 2], "per_class": 1, "candidates": 2, "init_pool": 8, "selection_augs": 2, "augment": "none"}
        result = run_attack("ppa", target, prior, steps=20, **options)
        assert result.images.shape == (2, 1, 1, 16, 16)
        start = run_attack("ppa", target, prior, steps=1, **options)
        assert float(result.target_confidence.mean()) > float(start.target_confidence.mean())  # the w search raised the class confidence
        assert not torch.equal(result.images, start.images)

    def test_attacks_that_cannot_use_it_say_so(self):
        from midefend.attacks import get_attack
        from midefend.errors import AttackError

        prior = wrap_module_prior(toy_stylegan.build())
        with pytest.raises(AttackError, match="needs a prior that exposes its feature maps"):
            get_attack("ifgmi")().check_prior(prior)
        with pytest.raises(AttackError, match="fine-tunes a midefend DCGAN prior"):
            get_attack("plg")().check_prior(prior)


class TestCLI:
    def test_verify_with_prior_module(self, tiny_world, weights, tmp_path):
        out = tmp_path / "run"
        args = ["verify", tiny_world.paths["target"], "--eval-model", tiny_world.paths["eval"], "--data", tiny_world.folder,
                "--prior-module", "toy_stylegan:build", "--prior", weights, "--truncation", "0.7", "--no-reach",
                "--out", out, "--attack", "ppa", "--steps", "3", "--per-class", "1", "--init-pool", "8", "--classes", "0-1", "--quiet"]  # fmt: skip
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        prior = json.loads((out / "attack" / "attack.json").read_text())["prior"]
        assert prior["module"] == "toy_stylegan:build" and prior["space"] == "w" and prior["truncation"] == 0.7
        assert report["format"] == "midefend-verify-report"

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (["--prior-module", "toy_stylegan:nope", "--prior", "factory"], "error: prior module 'toy_stylegan' has no factory 'nope'"),
            (["--prior-module", "toy_stylegan:build"], "error: --prior-module needs --prior WEIGHTS.safetensors"),
            (["--truncation", "0.5"], "--truncation applies to a generator of your own"),
        ],
    )
    def test_refusals_are_one_line(self, tiny_world, tmp_path, extra, message):
        args = ["verify", tiny_world.paths["target"], "--data", tiny_world.folder, "--out", tmp_path / "r", "--attack", "ppa", "--quiet", *extra]
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code in (1, 2) and message in " ".join(result.output.split()), result.output

    def test_pickle_refused_on_the_command_line(self, tiny_world, tmp_path):
        path = tmp_path / "toy.pt"
        torch.save(toy_stylegan.build().state_dict(), path)
        args = ["verify", tiny_world.paths["target"], "--data", tiny_world.folder, "--out", tmp_path / "r", "--attack", "ppa", "--quiet",
                "--prior-module", "toy_stylegan:build", "--prior", path]  # fmt: skip
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 1 and "midefend never unpickles a file" in result.output
