"""Shared fixtures. ORL is read from $MIDEFEND_ORL_DIR, else from ``../shared/data/orl_faces``
beside the clone (where .ci/run and the README's test command find it without an extra step).

Neither -> tests that need it skip with that reason; set but missing -> they fail,
so CI can never skip silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def _cuda_available() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:  # a CUDA build on a machine without a driver
        return False


ORL_BESIDE_CLONE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "orl_faces"


def pytest_configure(config):
    # Set the variable (not just the fixture) so subprocess tests and examples see the same folder.
    if not os.environ.get("MIDEFEND_ORL_DIR") and ORL_BESIDE_CLONE.is_dir():
        os.environ["MIDEFEND_ORL_DIR"] = str(ORL_BESIDE_CLONE)


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    value = os.environ.get("MIDEFEND_ORL_DIR")
    if not value:
        pytest.skip(f"MIDEFEND_ORL_DIR is not set and {ORL_BESIDE_CLONE} does not exist (point MIDEFEND_ORL_DIR at the ORL faces folder)")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"MIDEFEND_ORL_DIR={value} is set but is not a folder")
    return path


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


def devices() -> list:
    """CPU always; CUDA marked so it is skipped without a GPU (torchvision's cpu_and_cuda)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
