"""benchmarks/erasing.py runs end to end on a tiny batch: table, JSON, and the goal check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import erasing as bench  # noqa: E402


def test_runs_and_writes_every_method(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "SHAPES", [(8, 3, 16, 16)])
    monkeypatch.setattr(bench, "DTYPES", [torch.float32])
    threads = torch.get_num_threads()
    try:
        code = bench.main(["--device", "cpu", "--repeats", "2", "--json", str(tmp_path / "e.json")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0  # without --check a missed goal only prints
    (result,) = json.loads((tmp_path / "e.json").read_text())["results"]
    assert result["shape"] == [8, 3, 16, 16] and result["dtype"] == "float32"
    names = set(result["ms"])
    assert {"floor: fill_ of the erased pixels", "midefend random_erase_batch, in place",
            "midefend RandomErasingTransform, per sample", "torchvision v2.RandomErasing, per sample",
            "timm RandomErasing (batch, const)"} <= names  # fmt: skip
    assert all(ms > 0 for ms in result["ms"].values())
    mine = result["ms"]["midefend random_erase_batch, in place"]
    for name, ms in result["ms"].items():
        assert result["speedup_of_midefend_inplace"][name] == pytest.approx(ms / mine)
    assert "midefend random_erase_batch, in place" in capsys.readouterr().out


def test_check_goals_names_each_miss():
    row = {"device": "cpu", "shape": [256, 3, 64, 64], "dtype": "float32", "ratio_to_floor": {},
           "speedup_of_midefend_inplace": {"torchvision v2.RandomErasing, per sample": 9.0,
                                           "timm RandomErasing (batch, const)": 3.5}}  # fmt: skip
    assert bench.check_goals([row]) == ["only 9.0x faster than torchvision (goal 10x)"]
    row["speedup_of_midefend_inplace"]["timm RandomErasing (batch, const)"] = 2.0
    assert bench.check_goals([row]) == [
        "only 9.0x faster than torchvision (goal 10x)",
        "only 2.0x faster than timm (goal 3x)",
    ]
    row["shape"] = [128, 3, 224, 224]  # the goals are set for 64x64 only
    assert bench.check_goals([row]) == []


def test_markdown_goes_between_the_markers_and_nowhere_else(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SHAPES", [(4, 3, 8, 8)])
    monkeypatch.setattr(bench, "DTYPES", [torch.float32])
    page = tmp_path / "erasing.md"
    page.write_text(f"# Erasing\n\nbefore\n\n{bench.START}\nstale table\n{bench.END}\n\nafter\n")
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--device", "cpu", "--repeats", "1", "--markdown", str(page)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = page.read_text()
    assert text.startswith("# Erasing\n\nbefore\n\n" + bench.START) and text.endswith(bench.END + "\n\nafter\n")
    assert "stale table" not in text and text.count(bench.START) == 1
    section = text.split(bench.START)[1].split(bench.END)[0]
    assert "load average" in section and "**cpu, 4x3x8x8 float32**" in section
    (row,) = [line for line in section.splitlines() if line.startswith("| midefend random_erase_batch, in place |")]
    assert row.endswith("| 1.0x |")  # its speed-up over itself
