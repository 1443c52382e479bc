"""CLI-wide error policy: usage errors and anticipated errors are one line, never a traceback."""

from __future__ import annotations

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
        (["harden", "a.safetensors", "b.safetensors"], r"^error: Missing option '--rank'\."),
        (["harden", "a.safetensors", "b.safetensors", "--rank", "x"], r"^error: Invalid value for '--rank'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    import re

    assert re.search(message, _one_error_line(result))


def test_runtime_error_is_one_line_exit_1(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 1
    assert _one_error_line(result).startswith("error: ")


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    for command in ("inspect", "harden", "train", "verify", "compare", "demo"):
        assert command in result.output
