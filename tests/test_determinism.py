"""Same seed, same results on the CPU: ``midefend verify`` reports and ``midefend train`` weights.

Each pair of runs happens in one process with the global RNG deliberately
moved in between (``torch.manual_seed`` of another value, and some draws), so
the tests also show that midefend's results depend only on its ``--seed``, not
on whatever the caller's RNG state happens to be. A different seed must give a
different result, so the equality is not vacuous.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from midefend.attacks.priors import DCGANGenerator, GenerativePrior, save_prior
from midefend.io import read_checkpoint_header

from reliability_fixtures import one_thread  # noqa: F401  (autouse fixture)
from reliability_fixtures import invoke, make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    paths = make_workspace(tmp_path_factory.mktemp("determinism"))
    torch.manual_seed(0)
    prior = GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16), name="tiny")
    paths["prior"] = save_prior(prior, paths["data"].parent / "prior.safetensors")
    return paths


def disturb_global_rng(seed: int) -> None:
    torch.manual_seed(seed)
    torch.rand(17)


ATTACKS = {
    "miface": ["--attack", "miface", "--steps", "8", "--per-class", "2", "--candidates", "3"],
    "ppa": ["--attack", "ppa", "--steps", "4", "--per-class", "1", "--candidates", "2"],
}


def run_verify(ws: dict[str, Path], out: Path, attack: str, seed: int) -> dict:
    result = invoke("verify", ws["target"], "--eval-model", ws["eval"], "--prior", ws["prior"], "--out", out,
                    "--seed", seed, "-q", *ATTACKS[attack])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    report.pop("timing")  # wall-clock seconds
    for row in report["attacks"]:
        row.pop("seconds")
    report["files"] = {k: Path(v).name for k, v in report["files"].items()}
    return report


def reconstructions(out: Path) -> dict[str, torch.Tensor]:
    return {p.name: load_file(str(p))["images"] for p in sorted((out / "attack").glob("class_*.safetensors"))}


class TestVerify:
    @pytest.mark.parametrize("attack", sorted(ATTACKS))
    def test_same_seed_same_report(self, ws, tmp_path, attack):
        disturb_global_rng(1)
        first = run_verify(ws, tmp_path / "a", attack, seed=5)
        disturb_global_rng(2)
        second = run_verify(ws, tmp_path / "b", attack, seed=5)
        assert first == second
        images_a, images_b = reconstructions(tmp_path / "a"), reconstructions(tmp_path / "b")
        assert images_a.keys() == images_b.keys() and len(images_a) == 4
        assert all(torch.equal(images_a[k], images_b[k]) for k in images_a)
        assert (tmp_path / "a" / "grid.png").read_bytes() == (tmp_path / "b" / "grid.png").read_bytes()

        run_verify(ws, tmp_path / "c", attack, seed=6)
        images_c = reconstructions(tmp_path / "c")
        assert not all(torch.equal(images_a[k], images_c[k]) for k in images_a)

    def test_class_results_do_not_depend_on_the_other_classes(self, ws, tmp_path):
        """A class's reconstruction is the same whether it is attacked alone or with all others."""
        run_verify(ws, tmp_path / "all", "miface", seed=5)
        result = invoke("verify", ws["target"], "--eval-model", ws["eval"], "--out", tmp_path / "one", "--seed", 5,
                        "--classes", "2", "-q", *ATTACKS["miface"])  # fmt: skip
        assert result.exit_code == 0, result.output
        alone = reconstructions(tmp_path / "one")
        assert list(alone) == ["class_00002.safetensors"]
        assert torch.equal(alone["class_00002.safetensors"], reconstructions(tmp_path / "all")["class_00002.safetensors"])


def train(ws: dict[str, Path], out: Path, defense: str, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    result = invoke("train", "--data", ws["data"], "--out", out, "--defense", defense, "--seed", seed, "--size", 16,
                    "--channels", 1, "--epochs", 2, "--calor-epochs", 1, "--ca-epochs", 1, "--batch-size", 8, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    header = read_checkpoint_header(out)
    header["extra"].pop("train_seconds")
    for key in ("path", "file_bytes"):
        header.pop(key)
    return load_file(str(out)), header


class TestTrain:
    @pytest.mark.parametrize("defense", ["nodef", "midre+calor"])
    def test_same_seed_same_weights(self, ws, tmp_path, defense):
        disturb_global_rng(1)
        weights_a, header_a = train(ws, tmp_path / "a.safetensors", defense, seed=3)
        disturb_global_rng(2)
        weights_b, header_b = train(ws, tmp_path / "b.safetensors", defense, seed=3)
        assert weights_a.keys() == weights_b.keys()
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
        assert header_a == header_b  # metadata too: accuracy, confidence, history-derived numbers

        weights_c, _ = train(ws, tmp_path / "c.safetensors", defense, seed=4)
        assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
