"""benchmarks/erasing_cpu.py runs end to end on toy sizes: rows for every case, threads and load, the Markdown section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import erasing_cpu as bench  # noqa: E402


def test_runs_with_and_without_load_and_writes_the_section(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "IMAGES", [((1, 16, 16), torch.uint8)])
    monkeypatch.setattr(bench, "BATCHES", [(4, 3, 16, 16)])
    monkeypatch.setattr(bench, "THREADS", (1, 2))
    monkeypatch.setattr(bench, "IMAGES_PER_TURN", 2)
    page = tmp_path / "erasing.md"
    page.write_text(f"# Erasing\n\n{bench.START}\nstale\n{bench.END}\n\nafter\n")
    threads = torch.get_num_threads()
    args = ["--repeats", "1", "--load-procs", "1", "--load-seconds", "20", "--json", str(tmp_path / "e.json"), "--markdown", str(page)]
    assert bench.main(args) == 0
    assert torch.get_num_threads() == threads  # restored
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    # 2 aspects x 1 image + 1 batch, at 2 thread counts, without and with load
    assert len(rows) == 3 * 2 * 2 and {r["load"] for r in rows} == {False, True}
    image = next(r for r in rows if r["kind"] == "image")
    assert set(image["us"]) == {"torchvision", "timm", "midefend", "midefend in place"}
    assert image["midefend_over"]["timm"] == image["us"]["midefend in place"] / image["us"]["timm"]
    text = page.read_text()
    assert "stale" not in text and text.endswith(f"{bench.END}\n\nafter\n") and "load average" in text


def test_slower_names_the_rival_each_path_must_beat():
    rows = [{"kind": "image", "case": "c", "threads": 2, "load": True, "midefend_over": {"torchvision": 1.5, "timm": 3.0}},
            {"kind": "batch", "case": "b", "threads": 1, "load": False, "midefend_over": {"torchvision": 0.1, "timm": 0.9}}]  # fmt: skip
    assert bench.slower({"rows": rows}) == ["image c, 2 threads, loaded: 1.50x torchvision"]
