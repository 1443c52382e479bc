"""Every script in examples/ runs to the end in its quick mode (so the examples never rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def unexpected_warnings(stderr: str) -> list[str]:
    """Warning lines other than midefend's CALoR guard rails (quick mode trains one epoch: they may rightly fire)."""
    expected = ("confidence adaptation:", "harden: accuracy on the calibration data fell")
    return [line for line in stderr.splitlines() if "Warning" in line and not any(e in line for e in expected)]


def test_there_are_examples():
    assert [p.name for p in EXAMPLES] == ["ddp_train.py", "harden_your_training_loop.py"]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_quick(script, orl_dir, tmp_path):
    out = tmp_path / "model.safetensors"
    env = {**os.environ, "MIDEFEND_EXAMPLES_QUICK": "1", "MIDEFEND_ORL_DIR": str(orl_dir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not unexpected_warnings(done.stderr), done.stderr
    assert out.exists()
    from midefend.io.checkpoints import load_checkpoint

    ckpt = load_checkpoint(out)
    assert ckpt.arch == "timm/resnet18" and ckpt.hardening is not None
    assert ckpt.defense["name"] == "midre+calor"
    if script.name == "harden_your_training_loop.py":
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


def test_ddp_example_on_two_cpu_processes(orl_dir, tmp_path):
    """examples/ddp_train.py under torchrun: 2 gloo processes, rank 0 writes a checkpoint that loads."""
    script = next(p for p in EXAMPLES if p.name == "ddp_train.py")
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "MIDEFEND_EXAMPLES_QUICK": "1", "MIDEFEND_ORL_DIR": str(orl_dir), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not unexpected_warnings(done.stderr), done.stderr
    assert done.stdout.count("saved ") == 1 and "on 2 process(es)" in done.stdout  # rank 0 alone saves
    from midefend.io.checkpoints import load_checkpoint

    ckpt = load_checkpoint(out)
    assert ckpt.hardening is not None and ckpt.extra["world_size"] == 2
