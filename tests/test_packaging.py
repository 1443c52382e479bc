"""The wheel a user would install: pure Python from pyproject.toml alone; it builds, ships py.typed, installs, imports and erases elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

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
    assert {f"midefend/review/static/{n}" for n in ("index.html", "app.js", "app.css")} <= names  # the review page ships
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "midefend = midefend.cli:main" in text


def test_wheel_is_pure_python(wheel):
    # no compiled extension of our own: the same wheel serves every platform
    assert wheel.name.endswith("-py3-none-any.whl")
    assert not any(n.endswith((".so", ".pyd", ".c")) for n in zipfile.ZipFile(wheel).namelist())


def test_wheel_installs_imports_and_erases(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import torch, midefend; from midefend import random_erase_batch; "
        "y = random_erase_batch(torch.zeros(4, 3, 16, 16), scale=(0.25, 0.25), value=1.0); "
        "print(midefend.__file__, midefend.__version__, int(y.sum()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    path, version, erased = result.stdout.split()
    assert path.startswith(str(target))
    assert version == wheel.name.split("-")[1]  # pyproject's dynamic version reads midefend/_version.py
    assert erased == str(4 * 3 * 8 * 8)  # 8x8 boxes


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory) -> Path:
    """The source tree without build products or caches."""
    tree = tmp_path_factory.mktemp("src") / "midefend"
    junk = shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "out", "*.egg-info", "__pycache__", ".*cache", ".hypothesis")
    shutil.copytree(ROOT, tree, ignore=junk)
    return tree


def test_sdist_builds_from_pyproject_alone(tmp_path, clean_tree):
    # --skip-dependency-check: the build backend is here, offline; the "wheel" package may not be
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check", "--outdir", str(tmp_path), str(clean_tree)],
        check=True,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("midefend-*.tar.gz")
    names = tarfile.open(sdist).getnames()
    assert any(n.endswith("/pyproject.toml") for n in names) and any(n.endswith("midefend/_version.py") for n in names)
    assert not any(n.endswith(("/setup.py", ".c")) for n in names)
