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


def test_one_import_path_per_name_and_no_shims():
    """The names the top level held before 0.2 are gone (no version with them was released): one home each."""
    for old in ("load_orl", "train_target", "run_attack", "knn_distance", "EraseBoxes", "Checkpoint"):
        with pytest.raises(AttributeError, match=rf"module 'midefend' has no attribute '{old}'"):
            getattr(midefend, old)
    assert not hasattr(midefend, "_MOVED")
    assert set(midefend.__all__) <= set(dir(midefend))
    # a lazy name is the object of its home module, not a copy or a wrapper
    from midefend.defenses.surgery import harden

    assert midefend.harden is harden


def test_import_midefend_does_not_import_torch():
    """``import midefend`` and ``--help`` stay cheap: torch loads on the first use of a torch-using name."""
    import subprocess
    import sys

    code = ("import sys, midefend; heavy = sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules); "
            "assert not heavy, heavy; midefend.harden; assert 'torch' in sys.modules")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
