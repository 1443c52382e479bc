"""benchmarks/reproduce.py end to end in its quick mode, and benchmarks/check.py's verdicts."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import check  # noqa: E402

MARGINS = {"relative_drop": {"default": 0.4, "midre+calor": 0.6}, "max_accuracy_loss": 0.05}


def result(models: dict[str, tuple[float, float]]) -> dict:
    """A minimal results file: model -> (accuracy, attack acc@1)."""
    return {"datasets": {"orl": {"models": {m: {"mean": {"accuracy": a, "attack_top1": t}} for m, (a, t) in models.items()}}}}


class TestCheck:
    def test_margins_met(self):
        lines, misses = check.check(result({"nodef": (0.95, 0.80), "calor": (0.93, 0.48), "midre+calor": (0.92, 0.32)}), MARGINS)
        assert misses == []
        assert lines[0].startswith("ok   orl    calor") and "drop +40%, need 40%" in lines[0]

    def test_each_miss_is_named(self):
        res = result({"nodef": (0.95, 0.80), "calor": (0.93, 0.50), "midre+calor": (0.85, 0.30)})
        lines, misses = check.check(res, MARGINS)
        assert misses == [
            "orl calor: attack acc@1 dropped 38% relative to NoDef, margin is 40%",
            "orl midre+calor: lost 10.0% accuracy, allowed 5.0%",
        ]
        assert [line[:4] for line in lines] == ["MISS", "MISS"]

    def test_missing_nodef(self):
        _, misses = check.check(result({"calor": (0.9, 0.5)}), MARGINS)
        assert misses == ["orl: no NoDef result to compare against"]

    def test_exit_codes(self, tmp_path, capsys):
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"check": MARGINS}))
        good, bad = tmp_path / "good.json", tmp_path / "bad.json"
        good.write_text(json.dumps(result({"nodef": (0.95, 0.80), "calor": (0.95, 0.20)})))
        bad.write_text(json.dumps(result({"nodef": (0.95, 0.80), "calor": (0.95, 0.72)})))
        assert check.main(["--results", str(good), "--config", str(config)]) == 0
        assert "all margins met" in capsys.readouterr().out
        assert check.main(["--results", str(bad), "--config", str(config)]) == 1
        assert "missed: orl calor: attack acc@1 dropped 10% relative to NoDef, margin is 40%" in capsys.readouterr().err
        broken = tmp_path / "broken.json"
        broken.write_text("{")
        with pytest.raises(SystemExit, match=r"^error: cannot read the results file .*broken.json"):
            check.main(["--results", str(broken), "--config", str(config)])
        assert check.main(["--results", str(tmp_path / "config.json"), "--config", str(config)]) == 2

    def test_checked_in_result_is_readable(self):
        # the committed summary parses and holds every defended model of both data sets
        summary = json.loads((BENCH / "results" / "reproduce.json").read_text())
        config = json.loads((BENCH / "config.json").read_text())
        lines, _ = check.check(summary, config["check"])
        assert len(lines) == 8 and all(line.startswith(("ok", "MISS")) for line in lines)  # 4 defenses x 2 data sets
        for block in summary["datasets"].values():
            assert set(block["models"]) == {"nodef", "midre-0.4", "midre-0.8", "calor", "midre+calor"}
            assert all(len(m["seeds"]) == len(config["seeds"]) for m in block["models"].values())


def test_quick_run_writes_everything_and_resumes(tmp_path, capsys):
    import reproduce

    md = tmp_path / "RESULTS.md"
    md.write_text("# results\n\nkept above\n\n<!-- reproduce:start -->\nold\n<!-- reproduce:end -->\n\nkept below\n")
    args = ["--quick", "--out-dir", str(tmp_path / "out"), "--results-dir", str(tmp_path / "results"), "--results-md", str(md)]
    assert reproduce.main(args) == 0
    first = json.loads((tmp_path / "results" / "reproduce.json").read_text())
    digits = first["datasets"]["digits"]
    assert set(digits["models"]) == {"nodef", "midre-0.4", "midre-0.8", "calor", "midre+calor"}
    for entry in digits["models"].values():
        assert set(entry["seeds"][0]["by_loss"]) == {"poincare", "max-margin"}
        assert entry["seeds"][0]["attack_top1"] == max(entry["seeds"][0]["by_loss"].values())  # strongest loss
    assert digits["rank"] in (2, 3) and [c["rank"] for c in digits["curve"]] == [r for r in (2, 3) if r != digits["rank"]]
    text = md.read_text()
    assert text.startswith("# results\n\nkept above\n") and text.rstrip().endswith("kept below") and "old" not in text
    assert text.count("<!-- reproduce:start -->") == 1 and "| MIDRE+CALoR |" in text
    for png in (tmp_path / "results" / "tradeoff.png", tmp_path / "results" / "grid-digits.png", tmp_path / "out" / "digits" / "grid-with-private.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    # the committed grid has one column per model; only the local one adds the private images
    widths = [Image.open(p).width for p in (tmp_path / "results" / "grid-digits.png", tmp_path / "out" / "digits" / "grid-with-private.png")]
    assert widths[1] - widths[0] == (widths[0] - 4) // 5  # 4 px margin, 5 equal columns
    capsys.readouterr()
    # --resume reuses every training and attack: same numbers, nothing recomputed
    assert reproduce.main([*args, "--resume"]) == 0
    assert "reuse digits-nodef-s0-poincare" in capsys.readouterr().out
    again = json.loads((tmp_path / "results" / "reproduce.json").read_text())
    assert again["seconds_by_step"] == {}
    assert set(again["reused_seconds_by_step"]) == set(first["seconds_by_step"])  # time of reused steps still counted
    assert again["datasets"]["digits"]["models"] == digits["models"]
    # --report-only rebuilds the same summary from the run's results.json (which check.py also reads)
    capsys.readouterr()
    assert reproduce.main([*args, "--report-only"]) == 0
    rebuilt = json.loads((tmp_path / "results" / "reproduce.json").read_text())
    assert rebuilt["datasets"] == again["datasets"] and "reuse" not in capsys.readouterr().out
    capsys.readouterr()
    code = check.main(["--results", str(tmp_path / "out" / "results.json")])
    verdicts = capsys.readouterr().out.splitlines()
    assert code in (0, 1) and [line.split()[2] for line in verdicts if line.startswith(("ok", "MISS"))] == [
        "midre-0.4", "midre-0.8", "calor", "midre+calor"]  # fmt: skip
    assert code == (1 if any(line.startswith("MISS") for line in verdicts) else 0)


def test_config_quick_block_merges_over_the_full_one():
    import reproduce

    full = reproduce.load_config(BENCH / "config.json", quick=False)
    quick = reproduce.load_config(BENCH / "config.json", quick=True)
    assert "quick" not in full and full["seeds"] == [0, 1, 2] and set(full["datasets"]) == {"orl", "digits"}
    assert set(quick["datasets"]) == {"digits"} and quick["seeds"] == [0]
    merged = copy.deepcopy(full["datasets"]["digits"])
    merged.update(json.loads((BENCH / "config.json").read_text())["quick"]["datasets"]["digits"])
    assert quick["datasets"]["digits"] == merged and quick["check"] == full["check"]
