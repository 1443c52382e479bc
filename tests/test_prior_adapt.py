"""``adapt_prior`` / ``midefend prior adapt``: samples move toward the public set; a killed run resumes to the same weights."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from midefend.attacks import prior_adapt
from midefend.attacks.prior_adapt import adapt_prior, diff_augment, state_path
from midefend.attacks.prior_training import dcgan_init_
from midefend.attacks.priors import DCGANGenerator, GenerativePrior, load_prior, save_prior
from midefend.cli import app
from midefend.errors import ConfigError, DataError

TINY: dict = {"batch_size": 8, "disc_width": 8, "lr": 2e-3}


def _base() -> GenerativePrior:
    """The known start: a tiny RGB prior taught bright, warm-coloured images (mean about 0.55, clear colour)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = GenerativePrior(dcgan_init_(DCGANGenerator(latent_dim=8, channels=3, width=8, image_size=16)))
    g = torch.Generator().manual_seed(0)
    warm = torch.tensor([0.85, 0.6, 0.35])[None, :, None, None] + 0.05 * torch.randn(32, 3, 16, 16, generator=g)
    return adapt_prior(fresh, warm.clamp(0, 1), steps=60, name="base", **TINY)


def _dark_grey(n: int = 32) -> torch.Tensor:
    """The known answer: the public domain is grey and dark (mean 0.2), with a little texture."""
    g = torch.Generator().manual_seed(1)
    return (0.2 + 0.05 * torch.randn(n, 1, 16, 16, generator=g)).clamp(0, 1)


def _sample_stats(prior: GenerativePrior) -> tuple[float, float]:
    """(mean intensity, mean colour spread |RGB - grey|) of 256 samples."""
    with torch.no_grad():
        x = prior(torch.randn(256, prior.latent_dim, generator=torch.Generator().manual_seed(7)))
    return float(x.mean()), float((x - x.mean(1, keepdim=True)).abs().mean())


class TestAdapt:
    def test_samples_move_toward_the_public_set(self):
        base = _base()
        public = _dark_grey()
        adapted = adapt_prior(base, public, steps=120, **TINY)
        (mean0, colour0), (mean1, colour1) = _sample_stats(base), _sample_stats(adapted)
        target = float(public.mean())
        assert abs(mean1 - target) < 0.6 * abs(mean0 - target), (mean0, mean1, target)  # brightness moved towards the public set's
        assert colour1 < 0.5 * colour0, (colour0, colour1)  # grey public images: the RGB prior lost its colour
        assert adapted.has_discriminator and adapted.channels == 3  # same architecture: usable wherever face-gan is
        assert _sample_stats(base) == (mean0, colour0)  # the base prior is untouched

    def test_kill_then_resume_gives_the_same_weights(self, tmp_path, monkeypatch):
        base, public = _base(), _dark_grey()
        options = {"steps": 7, "checkpoint_every": 2, **TINY}
        whole = adapt_prior(base, public, tmp_path / "whole.safetensors", **options)
        out = tmp_path / "killed.safetensors"
        original = prior_adapt._gan_step
        monkeypatch.setattr(prior_adapt, "_gan_step", _dies_on(6, original))  # the last state written is the one after step 4
        with pytest.raises(KeyboardInterrupt):
            adapt_prior(base, public, out, **options)
        assert state_path(out).is_file() and not out.exists()
        monkeypatch.setattr(prior_adapt, "_gan_step", original)
        resumed = adapt_prior(base, public, out, resume=True, **options)
        for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(a, b), k
        assert not state_path(out).exists()  # removed once finished
        assert torch.equal(load_prior(out)(torch.zeros(1, 8)), whole(torch.zeros(1, 8)))

    def test_resume_refuses_other_settings(self, tmp_path, monkeypatch):
        base, public, out = _base(), _dark_grey(), tmp_path / "p.safetensors"
        monkeypatch.setattr(prior_adapt, "_gan_step", _dies_on(3, prior_adapt._gan_step))
        with pytest.raises(KeyboardInterrupt):
            adapt_prior(base, public, out, steps=4, checkpoint_every=2, **TINY)
        with pytest.raises(ConfigError, match="it was started with another settings"):
            adapt_prior(base, public, out, steps=5, checkpoint_every=2, resume=True, **TINY)

    def test_errors(self):
        with pytest.raises(DataError, match=r"needs public images \(N, C, H, W\) with N > 0"):
            adapt_prior(_base(), torch.zeros(0, 1, 16, 16))
        with pytest.raises(ConfigError, match="fine-tunes a midefend DCGAN prior"):
            adapt_prior(torch.nn.Linear(2, 2), torch.rand(2, 1, 16, 16))
        with pytest.raises(ConfigError, match="resume=True needs out"):
            adapt_prior(_base(), torch.rand(2, 1, 16, 16), resume=True)

    def test_diff_augment_is_a_shift_and_flip(self):
        x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float).view(2, 1, 8, 8)
        y = diff_augment(x, torch.Generator().manual_seed(0), translation=0.0, flip=True)
        assert all(torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(-1)) for i in range(2))
        z = diff_augment(x.requires_grad_(True), torch.Generator().manual_seed(0), translation=0.25, flip=False)
        z.sum().backward()  # differentiable
        assert z.shape == x.shape and set(x.grad.unique().tolist()) <= {0.0, 1.0}


def _dies_on(n: int, original):
    """``_gan_step`` that raises KeyboardInterrupt (as a kill) at its ``n``-th call."""
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    return step


class TestCLI:
    def test_prior_adapt_command(self, tmp_path):
        base = tmp_path / "base.safetensors"
        save_prior(_base(), base)
        public = tmp_path / "public"
        for person in ("a", "b"):
            (public / person).mkdir(parents=True)
            for i in range(4):
                Image.new("L", (20, 24), color=40 + 10 * i).save(public / person / f"{i}.png")
        out = tmp_path / "adapted.safetensors"
        args = ["prior", "adapt", "--from", base, "--data", public, "--out", out, "--steps", "3", "--batch-size", "4", "--disc-width", "4", "--quiet"]
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        assert load_prior(out).image_size == 16 and "adapted prior" in result.output

    def test_empty_folder_is_one_line(self, tmp_path):
        (tmp_path / "empty").mkdir()
        result = CliRunner().invoke(app, ["prior", "adapt", "--from", "face-gan", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o.safetensors")])
        assert result.exit_code == 1 and "no images" in result.output


class TestKill:
    def test_sigkill_then_resume_gives_the_same_weights(self, tmp_path):
        """A real kill (SIGKILL of ``midefend prior adapt`` once its first state file exists), then ``--resume``."""
        import os
        import signal
        import subprocess
        import sys
        import time
        from pathlib import Path

        base = tmp_path / "base.safetensors"
        save_prior(_base(), base)
        public = tmp_path / "public"
        public.mkdir()
        g = torch.Generator().manual_seed(0)
        for i in range(12):
            Image.fromarray((torch.rand(20, 20, generator=g) * 255).byte().numpy(), mode="L").save(public / f"{i}.png")
        args = ["prior", "adapt", "--from", str(base), "--data", str(public), "--steps", "300", "--batch-size", "8", "--disc-width", "8",
                "--checkpoint-every", "5", "--quiet"]  # fmt: skip
        killed = tmp_path / "killed.safetensors"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.Popen([sys.executable, "-m", "midefend", *args, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not state_path(killed).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL and state_path(killed).is_file() and not killed.exists()
        resumed = CliRunner().invoke(app, [*args, "--out", str(killed), "--resume"])
        assert resumed.exit_code == 0 and "resuming" in resumed.output, resumed.output
        whole = tmp_path / "whole.safetensors"
        assert CliRunner().invoke(app, [*args, "--out", str(whole)]).exit_code == 0
        a, b = load_prior(whole).state_dict(), load_prior(killed).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
