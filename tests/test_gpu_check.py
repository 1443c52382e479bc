"""benchmarks/gpu_check.py --dry-run: the GPU proof's whole plan runs on the CPU at toy sizes, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_dry_run_writes_every_planned_step(tmp_path):
    out, md = tmp_path / "gpu_check.json", tmp_path / "RESULTS.md"
    md.write_text(f"# Results\n\n{gpu_check.START}\nstale\n{gpu_check.END}\n\nafter\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--json", str(out), "--results", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and set(result["steps"]) == set(gpu_check.STEPS)
    for name, step in result["steps"].items():
        assert step["status"] in ("ok", "skipped"), (name, step.get("error"), step.get("traceback"))
    assert result["steps"]["torchrun"]["skipped"].startswith("needs 2 GPUs")
    assert "collected" in result["steps"]["cuda_tests"]["summary"]
    (row,) = result["steps"]["erase"]["rows"]
    assert "midefend random_erase_batch (auto: Triton on CUDA)" in row["ms"] and row["x_floor"]["floor: fill_ of the erased pixels"] == 1.0
    assert set(result["steps"]["train_step"]["overhead_pct"]) == {"midre", "calor", "midre+calor"}
    assert all(r["returncode"] == 0 and r["report"] for r in result["steps"]["verify"]["runs"].values())
    text = md.read_text()
    assert "stale" not in text and text.endswith(f"{gpu_check.END}\n\nafter\n") and "Dry run" in text


def test_the_real_plan_fits_eight_minutes():
    real = gpu_check.plan(dry_run=False)
    assert real.device == "cuda" and sum(real.limits_s.values()) <= 8 * 60
    assert real.train_arch == "resnet50" and real.train_size == 224
    assert real.verify_targets["resnet18-112"] == {"arch": "timm/resnet18", "size": 112, "channels": 3}
    assert set(gpu_check.plan(dry_run=True).limits_s) == set(gpu_check.STEPS)
