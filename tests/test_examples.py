"""Every script in examples/ runs to the end in its quick mode (so the examples never rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert [p.name for p in EXAMPLES] == ["harden_your_training_loop.py"]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_quick(script, orl_dir, tmp_path):
    out = tmp_path / "model.safetensors"
    env = {**os.environ, "MIDEFEND_EXAMPLES_QUICK": "1", "MIDEFEND_ORL_DIR": str(orl_dir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # quick mode trains one epoch: midefend's CALoR guard rails may rightly warn; nothing else may
    unexpected = [line for line in done.stderr.splitlines() if "Warning" in line and "confidence adaptation:" not in line and "harden: accuracy on the calibration data fell" not in line]
    assert not unexpected, done.stderr
    assert out.exists()
    from midefend.io.checkpoints import load_checkpoint

    ckpt = load_checkpoint(out)
    assert ckpt.arch == "timm/resnet18" and ckpt.hardening is not None
    assert ckpt.defense["name"] == "midre+calor"
    # the checkpoint verifies: its own split, its ImageFolder class order, its face-box preparation
    from midefend.evaluation.verify import verify

    assert ckpt.classes[:3] == ["s1", "s10", "s11"]
    report = verify(
        out, eval_model=out, attack="miface", classes="0-1", out_dir=tmp_path / "verify",
        attack_options={"per_class": 2, "steps": 2},
    )  # fmt: skip
    assert report["metrics"]["accuracy"] == pytest.approx(ckpt.extra["test_accuracy"], abs=1e-6)  # float32 mean vs Python division
    assert report["data"]["split"] == "the split recorded in the checkpoint (file lists)"
    assert (report["data"]["n_train"], report["data"]["n_test"]) == (35, 15)
