"""The wheel a user would install: it builds, ships py.typed, installs and imports elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from midefend.defenses.erasing_native import HAVE_NATIVE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: setuptools is already here and the machine may be offline.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("midefend-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "midefend/py.typed" in names
    assert "midefend/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "midefend = midefend.cli:main" in text


def test_wheel_installs_and_imports(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import midefend, sys; "
        "from midefend import MidefendError; "
        "from midefend.defenses.erasing_native import HAVE_NATIVE; "
        "print(midefend.__file__, HAVE_NATIVE)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    path, native = result.stdout.split()
    assert path.startswith(str(target))
    assert native == str(HAVE_NATIVE)  # the installed wheel carries the loop whenever this checkout has it


def test_wheel_ships_the_compiled_loop(wheel):
    if not HAVE_NATIVE:
        pytest.skip("no compiled erasing loop in this environment")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("midefend/defenses/_erase_cpu") and n.endswith((".so", ".pyd")) for n in names)


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory) -> Path:
    """The source tree without build products: an in-tree or ``build/`` copy of the compiled loop
    would otherwise be packed as up to date, whatever the compiler does."""
    tree = tmp_path_factory.mktemp("src") / "midefend"
    junk = shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "out", "*.so", "*.pyd", "*.egg-info", "__pycache__", ".*cache", ".hypothesis")
    shutil.copytree(ROOT, tree, ignore=junk)
    return tree


def test_sdist_ships_the_c_source(tmp_path, clean_tree):
    # --skip-dependency-check: the build backend is here, offline; the "wheel" package may not be
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check", "--outdir", str(tmp_path), str(clean_tree)],
        check=True,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("midefend-*.tar.gz")
    names = tarfile.open(sdist).getnames()
    assert any(n.endswith("midefend/defenses/_erase_cpu.c") for n in names)
    assert any(n.endswith("/setup.py") for n in names)


@pytest.mark.skipif(sys.platform == "win32", reason="CC=/bin/false stands for 'no compiler' on POSIX")
def test_without_a_compiler_the_install_works_and_erases_with_torch(tmp_path, clean_tree):
    out, target = tmp_path / "wheel", tmp_path / "site"
    env = {**os.environ, "CC": "/bin/false"}  # every compile fails, as on a machine without one
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(clean_tree)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    (whl,) = out.glob("midefend-*.whl")
    assert not any(n.endswith((".so", ".pyd")) for n in zipfile.ZipFile(whl).namelist())
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(whl)],
        check=True, capture_output=True,
    )  # fmt: skip
    code = (
        "import torch; from midefend import random_erase_batch; "
        "from midefend.defenses.erasing_native import HAVE_NATIVE; "
        "y = random_erase_batch(torch.zeros(4, 3, 16, 16), scale=(0.25, 0.25), value=1.0); "
        "print(HAVE_NATIVE, int(y.sum()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)},
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout.split() == ["False", str(4 * 3 * 8 * 8)]  # 8x8 boxes through the torch path
