"""Shared fixtures. ORL is read from $MIDEFEND_ORL_DIR (set by .ci/run).

Unset -> tests that need it skip with that reason; set but missing -> they fail,
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
        pytest.skip("MIDEFEND_ORL_DIR is not set (point it at the ORL faces folder)")
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
