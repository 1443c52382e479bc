"""CLI-wide error policy: usage errors and anticipated errors are one line, never a traceback."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from midefend.cli import app

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], r"^error: No such command 'bogus'\. \(see 'midefend --help'\)$"),
        (["inspect"], r"^error: Missing argument 'CKPT'\. \(see 'midefend inspect --help'\)$"),
        (["harden", __file__, "b.safetensors"], r"^error: Missing option '--rank'\."),  # IN must exist: this file
        (["harden", __file__, "b.safetensors", "--rank", "x"], r"^error: Invalid value for '--rank'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    import re

    assert re.search(message, _one_error_line(result))


def test_runtime_error_is_one_line_exit_1(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    result = runner.invoke(app, ["inspect", str(tmp_path / "empty.safetensors")])
    assert result.exit_code == 1
    assert _one_error_line(result).startswith("error: ")


def _commands_given(path: str) -> list[list[str]]:
    """Every command that reads an input file, called with ``path`` as that file."""
    return [
        ["inspect", path],
        ["harden", path, path + ".out", "--rank", "2"],
        ["verify", path, "--data", "digits", "--eval-model", path],
        ["compare", path, path],
    ]


@pytest.mark.parametrize("index", range(4), ids=["inspect", "harden", "verify", "compare"])
def test_exit_code_policy_is_the_same_in_every_command(tmp_path, index):
    """One policy: an input path that does not exist is a usage error (2) in every command; a file
    that exists but is not a checkpoint is a runtime error (1)."""
    missing = _commands_given(str(tmp_path / "missing.safetensors"))[index]
    result = runner.invoke(app, missing)
    assert result.exit_code == 2, result.output
    # verify's --eval-model also takes the word 'facenet', so its message names both choices
    assert re.fullmatch(
        r"error: Invalid value for .*(?:(?:file|path) '.*missing\.safetensors' does not exist\.|'.*missing\.safetensors' is neither a face recogniser \(facenet, dlib\) nor an existing checkpoint file).*",
        _one_error_line(result),
    )
    (tmp_path / "garbage.safetensors").write_bytes(b"not a checkpoint at all")
    garbage = _commands_given(str(tmp_path / "garbage.safetensors"))[index]
    result = runner.invoke(app, garbage)
    assert result.exit_code == 1, result.output
    assert _one_error_line(result).startswith("error: ")


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    for command in ("inspect", "harden", "train", "verify", "compare", "demo"):
        assert command in result.output
