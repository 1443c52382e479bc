"""``midefend train`` through typer's CliRunner: checkpoints with their training record, and errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from midefend.cli import app
from midefend.defenses.heads import LowRankTanhHead
from midefend.io import read_checkpoint_header
from midefend.io.checkpoints import load_checkpoint

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["train", *[str(a) for a in args]])


def assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three classes of 8 small RGB images: a dark, a bright and a striped class."""
    root = tmp_path_factory.mktemp("faces")
    for name, colour in (("dark", (20, 20, 20)), ("bright", (230, 230, 230)), ("red", (200, 20, 20))):
        (root / name).mkdir()
        for i in range(8):
            Image.new("RGB", (20, 24), color=tuple(min(255, c + 3 * i) for c in colour)).save(root / name / f"{i}.png")
    return root


def test_nodef_writes_a_checkpoint_with_its_record(folder, tmp_path):
    out = tmp_path / "nodef.safetensors"
    result = invoke("--data", folder, "--size", 16, "--epochs", 2, "--batch-size", 8, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert re.search(r"nodef midefend/resnet_small on .*: test accuracy \d+\.\d%", result.stdout)
    ckpt = load_checkpoint(out)
    assert (ckpt.arch, ckpt.num_classes, ckpt.input_size) == ("midefend/resnet_small", 3, (3, 16, 16))
    assert ckpt.mean == (0.5, 0.5, 0.5) and ckpt.defense == {"name": "nodef"}
    data = ckpt.extra["data"]
    assert data["classes"] == ["bright", "dark", "red"] and data["split"] == {"test_fraction": 0.2, "seed": 0}
    assert (data["n_train"], data["n_test"]) == (18, 6)
    assert 0.0 <= ckpt.extra["test_accuracy"] <= 1.0 and ckpt.extra["training"]["epochs"] == 2


def test_calor_from_an_init_checkpoint(folder, tmp_path):
    base = tmp_path / "base.safetensors"
    assert invoke("--data", folder, "--size", 16, "--epochs", 1, "--out", base, "-q").exit_code == 0
    out = tmp_path / "calor.safetensors"
    result = invoke(
        "--data", folder, "--size", 16, "--defense", "calor", "--rank", 2, "--calor-epochs", 1,
        "--ca-epochs", 1, "--init", base, "--out", out, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out)
    heads = [m for m in ckpt.model.modules() if isinstance(m, LowRankTanhHead)]
    assert len(heads) == 1 and heads[0].rank == 2
    assert ckpt.defense["name"] == "calor" and ckpt.defense["rank"] == 2 and ckpt.defense["ca_epochs"] == 1
    assert ckpt.extra["init"]["path"] == str(base)
    assert [s["name"] for s in ckpt.extra["training"]["stages"]] == ["head", "ca"]


def test_orl_by_name(orl_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MIDEFEND_ORL_DIR", str(orl_dir))
    out = tmp_path / "orl.safetensors"
    result = invoke("--data", "orl", "--size", 16, "--epochs", 1, "--defense", "midre", "--erase-max", 0.8, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    header = read_checkpoint_header(out)
    assert header["input_size"] == [1, 16, 16] and header["num_classes"] == 40
    assert header["defense"]["erase_scale"] == [0.1, 0.8]
    assert header["extra"]["data"]["split"] == {"train_per_class": 7, "seed": 0}
    assert header["extra"]["data"]["crop_box"] == [6, 18, 86, 98]


def test_errors_are_one_line_and_write_nothing(folder, tmp_path):
    out = tmp_path / "x.safetensors"
    assert_one_line_error(
        invoke("--data", folder, "--defense", "dp", "--out", out),
        r"unknown defense 'dp'; known defenses: bido, calor, mid, midre, midre\+calor, nls, nodef, tl$",
    )
    assert_one_line_error(
        invoke("--data", tmp_path / "nowhere", "--out", out), r"data '.*nowhere' is neither 'orl', 'digits'"
    )
    assert_one_line_error(invoke("--data", folder, "--out", tmp_path / "x.pt"), r"--out must end in \.safetensors")
    assert_one_line_error(
        invoke("--data", folder, "--out", tmp_path / "no" / "x.safetensors"), r"--out folder '.*no' does not exist"
    )
    assert_one_line_error(
        invoke("--data", folder, "--size", 16, "--arch", "timm/nonexistent_net", "--out", out),
        r"unknown timm architecture 'nonexistent_net'",
    )
    assert_one_line_error(
        invoke("--data", folder, "--size", 16, "--erase-max", 2, "--defense", "midre", "--out", out),
        r"erase_max must lie in \(0.1, 1\]",
    )
    assert list(tmp_path.iterdir()) == []


def test_resume_keeps_a_state_file(folder, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ("--data", folder, "--size", 16, "--epochs", 2, "--out", out, "--resume", "-q")
    assert invoke(*args).exit_code == 0
    state = tmp_path / "m.safetensors.state.pt"
    first = load_checkpoint(out).model.state_dict()
    assert state.exists()
    assert invoke(*args).exit_code == 0  # finished run: continues from the state, same weights
    second = load_checkpoint(out).model.state_dict()
    assert all(v.equal(second[k]) for k, v in first.items())
