"""benchmarks/verify_time.py: its table states the 15-minute verdict per target and leaves no attack cell blank."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import verify_time  # noqa: E402


def _row(target: str, wall: float, attacks: dict[str, float]) -> dict:
    return {"target": target, "wall_seconds": wall, "attack_seconds": attacks, "other_seconds": 100.0, "strongest": "ppa",
            "strongest_top1": 0.5875, "load_before": "1.0 / 1.0 / 1.0", "load_after": "2.0 / 2.0 / 2.0"}  # fmt: skip


def test_table_marks_targets_over_the_goal_and_missing_attacks():
    summary = {"command": "python benchmarks/verify_time.py", "machine": "x86_64", "threads": "2 threads", "date": "today",
               "rows": [_row("fits", 900.0, {"ppa": 190.0, "ppa+eot": 400.0}), _row("slow", 901.0, {"ppa": 250.0})]}  # fmt: skip
    lines = verify_time.markdown(summary)
    assert lines[0] == verify_time.START and lines[-1] == verify_time.END
    header = next(line for line in lines if line.startswith("| target"))
    assert header.startswith("| target | wall (min) | within 15 min | ppa (s) | ppa+eot (s) | other (s) |")
    assert "| fits | 15.0 | yes | 190 | 400 | 100 | ppa, 58.8 % |" in "\n".join(lines)
    assert "| slow | 15.0 | **no** | 250 | – | 100 | ppa, 58.8 % |" in "\n".join(lines)


def test_fresh_cache_links_only_facenet(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDEFEND_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "plg").mkdir(parents=True)
    (tmp_path / "cache" / "facenet-x.safetensors").write_bytes(b"weights")
    (tmp_path / "cache" / "plg" / "plg-1.safetensors").write_bytes(b"gan")
    fresh = verify_time.fresh_cache()
    try:
        assert sorted(p.name for p in fresh.iterdir()) == ["facenet-x.safetensors"]
        assert (fresh / "facenet-x.safetensors").read_bytes() == b"weights"
    finally:
        import shutil

        shutil.rmtree(fresh)
