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


def test_top_level_is_the_core_and_the_rest_lives_in_subpackages():
    assert len(midefend.__all__) <= 22
    assert {"harden", "random_erase_batch", "RandomErasingTransform", "LowRankTanhHead", "ConfidenceAdaptationLoss",
            "save_checkpoint", "load_checkpoint", "Classifier", "verify", "MidefendError"} <= set(midefend.__all__)  # fmt: skip
    for package, names in midefend._MOVED.items():
        sub = importlib.import_module(package)
        for name in names:
            assert name not in midefend.__all__ and name in sub.__all__, (package, name)


def test_a_moved_name_still_resolves_with_a_warning():
    from midefend.data import load_orl

    with pytest.warns(DeprecationWarning, match=r"^midefend.load_orl moved: import it from midefend.data$"):
        assert midefend.load_orl is load_orl
    with pytest.raises(AttributeError, match=r"module 'midefend' has no attribute 'nothing_here'"):
        _ = midefend.nothing_here
