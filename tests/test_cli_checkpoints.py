"""``midefend inspect`` and ``midefend harden`` through typer's CliRunner, success and error paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from midefend.architectures import build_model
from midefend.defenses.surgery import harden
from midefend.errors import CheckpointError
from midefend.io import read_checkpoint_header
from midefend.io.checkpoints import load_checkpoint, save_checkpoint
from midefend.cli import app

SPEC = {
    "arch": "timm/test_resnet",
    "arch_kwargs": {"in_chans": 1},
    "num_classes": 7,
    "input_size": (1, 32, 32),
    "mean": (0.5,),
    "std": (0.25,),
}

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, pattern: str, code: int = 1) -> None:
    """Exit ``code``, exactly one line on stderr, ``error: ...`` matching ``pattern``, no traceback."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(SPEC["arch"], num_classes=SPEC["num_classes"], **SPEC["arch_kwargs"])
    net.train()
    with torch.no_grad():
        net(torch.rand(4, *SPEC["input_size"]))
    return net.eval()


@pytest.fixture(scope="module")
def plain(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("cli") / "plain.safetensors"
    return save_checkpoint(model, path, **SPEC, defense={"name": "nodef"}, extra={"acc": 0.9})


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, plain) -> Path:
    path = tmp_path_factory.mktemp("cli") / "hardened.safetensors"
    result = invoke("harden", plain, path, "--rank", 3)
    assert result.exit_code == 0, result.output
    return path


class TestInspect:
    def test_table(self, plain):
        result = invoke("inspect", plain)
        assert result.exit_code == 0, result.output
        info = read_checkpoint_header(plain)
        for text in (
            "timm/test_resnet (in_chans=1)",
            "1 x 32 x 32",
            "mean (0.5), std (0.25)",
            "original (not hardened)",
            '{"name": "nodef"}',
            f"{info['num_tensors']:,} ({info['num_parameters']:,} values)",
            f"{info['tensor_bytes']:,} of tensors, {info['file_bytes']:,} on disk",
            "midefend checkpoint v1",
        ):
            assert text in result.stdout, text
        assert re.search(r"classes\s*│\s*7\s", result.stdout)

    def test_table_hardened(self, hardened):
        result = invoke("inspect", hardened)
        assert result.exit_code == 0, result.output
        assert "fc: low-rank tanh head, rank 3, 96 -> 7, norm=True" in result.stdout

    def test_json_is_the_header(self, plain):
        result = invoke("inspect", plain, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == read_checkpoint_header(plain)

    def test_check(self, plain):
        result = invoke("inspect", plain, "--check")
        assert result.exit_code == 0, result.output
        assert "the model rebuilds and its weights load strictly" in result.stdout
        result = invoke("inspect", plain, "--json", "--check")
        assert json.loads(result.stdout)["check"] == "ok"

    def test_missing(self, tmp_path):
        result = invoke("inspect", tmp_path / "no.safetensors")  # a missing input path: usage error, as in verify
        assert_one_line_error(result, r"Invalid value for 'CKPT': (?i:file) '.*no.safetensors' does not exist\. \(see 'midefend inspect --help'\)$", code=2)

    def test_empty(self, tmp_path):
        (tmp_path / "e.safetensors").write_bytes(b"")
        assert_one_line_error(invoke("inspect", tmp_path / "e.safetensors"), r"is empty \(0 bytes\)$")

    def test_garbage(self, tmp_path):
        (tmp_path / "g.safetensors").write_bytes(b"\xff" * 64)
        assert_one_line_error(invoke("inspect", tmp_path / "g.safetensors"), r"is not a valid safetensors file")

    def test_truncated(self, tmp_path, plain):
        (tmp_path / "t.safetensors").write_bytes(plain.read_bytes()[:-10])
        assert_one_line_error(invoke("inspect", tmp_path / "t.safetensors"), r"is truncated: its header describes")

    def test_pickle(self, tmp_path, model):
        torch.save(model.state_dict(), tmp_path / "m.pt")
        assert_one_line_error(invoke("inspect", tmp_path / "m.pt"), r"is a pickled PyTorch file, not safetensors")

    def test_check_finds_nan(self, tmp_path, model):
        from safetensors.torch import save_file

        from midefend.io.schema import encode_metadata, make_metadata

        tensors = {k: v.clone() for k, v in model.state_dict().items()}
        tensors["fc.weight"][0, 0] = float("nan")
        save_file(tensors, str(tmp_path / "n.safetensors"), metadata=encode_metadata(make_metadata(**SPEC)))
        assert invoke("inspect", tmp_path / "n.safetensors").exit_code == 0  # the header alone is fine
        assert_one_line_error(
            invoke("inspect", tmp_path / "n.safetensors", "--check"), r"has NaN or infinite values in 1 tensor\(s\): fc.weight$"
        )

    def test_debug_shows_the_exception(self, tmp_path):
        (tmp_path / "empty.safetensors").write_bytes(b"")  # exists (a missing path is a usage error, exit 2)
        result = invoke("--debug", "inspect", tmp_path / "empty.safetensors")
        assert result.exit_code == 1
        assert isinstance(result.exception, CheckpointError)

    def test_missing_argument(self):
        result = invoke("inspect")
        assert result.exit_code == 2
        assert "Missing argument 'CKPT'" in result.output


class TestHarden:
    def test_writes_hardened_checkpoint(self, plain, hardened, model):
        ckpt = load_checkpoint(hardened)
        assert ckpt.hardening["rank"] == 3 and ckpt.hardening["head_paths"] == ["fc"]
        assert ckpt.hardening["init"] == "svd" and ckpt.hardening["norm"] is True
        assert ckpt.defense == {"name": "calor", "rank": 3, "activation": "tanh", "heads": ["fc"], "fine_tuned": False}
        assert ckpt.extra == {"hardened_from": "plain.safetensors", "source_extra": {"acc": 0.9}}
        assert ckpt.input_size == (1, 32, 32) and ckpt.mean == (0.5,) and ckpt.std == (0.25,)
        # The same surgery done in Python gives the same model.
        reference = load_checkpoint(plain).model
        with pytest.warns(UserWarning, match="without calibration data"):
            harden(reference, rank=3)
        x = torch.rand(3, 1, 32, 32)
        with torch.no_grad():
            assert torch.equal(ckpt.model(x), reference.eval()(x))

    def test_summary(self, plain, tmp_path):
        result = invoke("harden", plain, tmp_path / "h.safetensors", "--rank", 2)
        assert result.exit_code == 0, result.output
        # Linear(96, 7): 96*7 + 7 = 679; BN(96) 192 + Linear(96, 2) 194 + Linear(2, 7) 21 = 407.
        assert "fc: 96 features -> 7 classes, now rank 2: 679 -> 407 parameters" in result.stdout
        assert f"wrote {tmp_path / 'h.safetensors'}" in result.stdout
        # harden()'s warning about the missing calibration data becomes a one-line note on stderr.
        notes = result.stderr.strip().splitlines()
        assert len(notes) == 1 and notes[0].startswith("note: ") and "calibration" in notes[0]

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            (["--no-norm"], {"norm": False, "activation": "tanh", "init": "svd"}),
            (["--activation", "sigmoid", "--init", "random"], {"norm": True, "activation": "sigmoid", "init": "random"}),
            (["--head", "fc"], {"head_paths": ["fc"]}),
        ],
    )
    def test_options(self, plain, tmp_path, options, expected):
        out = tmp_path / "h.safetensors"
        result = invoke("harden", plain, out, "--rank", 4, *options)
        assert result.exit_code == 0, result.output
        hardening = read_checkpoint_header(out)["hardening"]
        assert {k: hardening[k] for k in expected} == expected
        assert load_checkpoint(out).hardening == hardening

    def test_refuses_to_overwrite(self, plain, tmp_path):
        out = tmp_path / "h.safetensors"
        out.write_bytes(b"keep me")
        assert_one_line_error(invoke("harden", plain, out, "--rank", 3), r"OUT '.*h.safetensors' already exists; pass --force to overwrite it$")
        assert out.read_bytes() == b"keep me"
        result = invoke("harden", plain, out, "--rank", 3, "--force")
        assert result.exit_code == 0, result.output
        assert read_checkpoint_header(out)["hardening"]["rank"] == 3

    def test_already_hardened(self, hardened, tmp_path):
        out = tmp_path / "h2.safetensors"
        assert_one_line_error(
            invoke("harden", hardened, out, "--rank", 2), r"already hardened \(LowRankTanhHead at fc\); pass --reharden --init random"
        )
        assert not out.exists()
        result = invoke("harden", hardened, out, "--rank", 2, "--reharden", "--init", "random")
        assert result.exit_code == 0, result.output
        assert load_checkpoint(out).hardening["rank"] == 2

    @pytest.mark.parametrize(
        ("options", "pattern"),
        [
            (["--rank", "0"], r"rank must be a positive integer, got 0$"),
            (["--rank", "-3"], r"rank must be a positive integer, got -3$"),
            (["--rank", "8"], r"rank must be in \[1, 7\] for ResNet.fc \(min\(in_features=96, num_classes=7\)\), got 8$"),
            (["--rank", "3", "--activation", "swish"], r"activation must be one of identity, relu, sigmoid, tanh, got 'swish'$"),
            (["--rank", "3", "--init", "pca"], r"init must be one of svd, random, got 'pca'$"),
            (["--rank", "3", "--head", "classifier"], r"ResNet has no submodule 'classifier' to harden$"),
            (["--rank", "3", "--head", "conv1.0"], r"ResNet.conv1.0 is .*Conv2d, not an nn.Linear classifier"),
        ],
    )
    def test_bad_options(self, plain, tmp_path, options, pattern):
        assert_one_line_error(invoke("harden", plain, tmp_path / "h.safetensors", *options), pattern)
        assert list(tmp_path.iterdir()) == []

    def test_bad_input_file(self, tmp_path):
        (tmp_path / "in.safetensors").write_bytes(b"x" * 20)
        assert_one_line_error(
            invoke("harden", tmp_path / "in.safetensors", tmp_path / "out.safetensors", "--rank", 3), r"not a valid safetensors file"
        )
        assert_one_line_error(invoke("harden", tmp_path / "none.safetensors", tmp_path / "out.safetensors", "--rank", 3), r".*'IN': (?i:file) .* does not exist\..*", code=2)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]

    def test_bad_output_path(self, plain, tmp_path):
        assert_one_line_error(
            invoke("harden", plain, tmp_path / "missing" / "h.safetensors", "--rank", 3), r"the folder of OUT '.*missing' does not exist$"
        )
        assert_one_line_error(invoke("harden", plain, tmp_path, "--rank", 3, "--force"), r"OUT '.*' is a folder")

    def test_missing_rank(self, plain, tmp_path):
        result = invoke("harden", plain, tmp_path / "h.safetensors")
        assert result.exit_code == 2
        assert "Missing option '--rank'" in result.output
        assert list(tmp_path.iterdir()) == []
