"""The package surface: version, __all__, error hierarchy, CLI --version."""

from __future__ import annotations

import importlib

import pytest

import midefend
from midefend import errors


def test_all_names_resolve():
    for name in midefend.__all__:
        assert hasattr(midefend, name), name


def test_version_is_pep440():
    from packaging.version import Version

    assert str(Version(midefend.__version__)) == midefend.__version__


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_midefend_error(name):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.MidefendError)


def test_config_error_is_value_error():
    assert issubclass(errors.ConfigError, ValueError)


def test_cli_version():
    from typer.testing import CliRunner

    from midefend.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"midefend {midefend.__version__}"


def test_py_typed_shipped():
    spec = importlib.util.find_spec("midefend")
    from pathlib import Path

    assert (Path(spec.origin).parent / "py.typed").is_file()
