"""benchmarks/reproduce_v2.py's table and goals on hand-built verify reports with known numbers, and check.py --v2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import check  # noqa: E402
import reproduce_v2 as v2  # noqa: E402

MARGINS = {"relative_drop": {"default": 0.4, "midre+calor": 0.6}, "max_accuracy_loss": 0.05}
RECORDS = {
    "nodef": {"name": "nodef"},
    "midre": {"name": "midre", "erase_scale": [0.1, 0.8], "erase_ratio": [1.0, 1.0]},
    "calor": {"name": "calor", "rank": 16, "ca_a": 1.0, "ca_b": 8.0},
    "midre+calor": {"name": "midre+calor", "rank": 16, "ca_b": 8.0, "erase_scale": [0.1, 0.4]},
    "nls": {"name": "nls", "smoothing": -0.05},
}


def report(
    defense: str, acc: float, att: float, *, classes=range(40), steps: int = 100, strongest: str = "ppa", facenet: float = 0.1
) -> dict:
    """A verify report.json as ``verify`` writes it, reduced to the fields the v2 table reads."""
    rows = [
        {"name": "miface", "attack": "miface", "adaptive": False, "threat_model": "white-box", "config": {"steps": 300, "per_class": 4, "seed": 0, "preset": None}},
        {"name": "ppa", "attack": "ppa", "adaptive": False, "threat_model": "white-box", "config": {"steps": steps, "per_class": 4, "seed": 0, "preset": None}},
    ]  # fmt: skip
    if defense != "nodef":  # the adaptive variant: not part of the signature (its rows differ by defense)
        rows.append(
            {
                "name": "ppa+eot",
                "attack": "ppa",
                "adaptive": True,
                "threat_model": "white-box",
                "config": {"steps": steps, "eot": 4},
            }
        )
    return {
        "format": "midefend-verify-report",
        "target": {
            "name": f"orl-{defense}",
            "defense": RECORDS[defense]["name"],
            "defense_config": RECORDS[defense],
            "test_accuracy_recorded": acc,
        },
        "eval_model": {"name": "orl-eval"},
        "facenet": {"name": "facenet"},
        "prior": {"name": "face-gan"},
        "threat_model": "white-box",
        "adaptive_mode": "auto",
        "repeats": 1,
        "strongest_attack": strongest,
        "metrics": {
            "accuracy": acc,
            "attack_acc_top1": att,
            "attack_acc_top5": min(1.0, att + 0.05),
            "knn_distance": 90.0,
            "target_acc_top1": 1.0,
            "facenet": {"attack_acc_top1": facenet, "attack_acc_top5": 0.3, "delta_face": 0.85, "agreement": 0.2},
            "per_class": [{"class": c} for c in classes],
        },  # fmt: skip
        "attacks": rows,
    }


def row(defense: str, seed: int, acc: float, att: float, **kwargs) -> dict:
    return v2.row_from_report(
        report(defense, acc, att, **kwargs), defense=defense, seed=seed, source=f"attacked /x/{defense}-s{seed}/report.json"
    )


# NoDef 2 seeds (attack 0.90 / 0.80); MIDRE -2 points, -44 %; CALoR no accuracy lost, -35 %; MIDRE+CALoR -7 points; NLS -4 points
ROWS = [
    row("nodef", 0, 0.99, 0.90),
    row("nodef", 1, 0.99, 0.80),
    row("midre", 0, 0.97, 0.475),
    row("calor", 0, 0.99, 0.55),
    row("midre+calor", 0, 0.92, 0.20),
    row("nls", 0, 0.95, 0.80, strongest="miface"),
]


class TestTable:
    def test_delta_std_and_matched_band(self):
        s = v2.summarize(ROWS, MARGINS)
        m = s["datasets"]["orl"]["models"]
        assert m["nodef"]["mean"]["attack_top1"] == pytest.approx(0.85)
        assert m["nodef"]["std"]["attack_top1"] == pytest.approx(0.0707107, abs=1e-6)  # std over the two seeds
        assert m["midre"]["std"]["attack_top1"] is None  # one seed: no ±
        assert m["midre"]["delta"] == pytest.approx((0.85 - 0.475) / 0.02)
        assert m["calor"]["delta"] is None  # no accuracy lost: "OP"
        assert m["midre"]["relative_drop"] == pytest.approx(1 - 0.475 / 0.85)
        assert [d for d, e in m.items() if e.get("matched")] == ["midre", "calor", "nls"]  # NLS: 4 points, inside the band
        assert m["midre+calor"]["matched"] is False and m["midre+calor"]["accuracy_loss"] == pytest.approx(0.07)
        assert (
            m["midre"]["setting"] == "a_h=0.8"
            and m["calor"]["setting"] == "rank=16, ca_b=8"
            and m["nls"]["setting"] == "smoothing=-0.05"
        )
        assert m["nls"]["strongest"] == ["miface"] and m["nls"]["mean"]["facenet_top1"] == pytest.approx(0.1)

    def test_markdown_rows(self):
        s = v2.summarize(ROWS, MARGINS)
        lines = v2.table_lines(s)
        assert lines[0].startswith("| defense | setting | Acc | strongest AttAcc@1 | ± (2 seeds) |")
        nodef, midre, calor, mc = lines[2:6]
        assert nodef.startswith("| NoDef | – | 99.0 ± 0.0 | 85.0 | 7.1 | 90.0 | ppa | 10.0 | 90.0 | 0.850 | – | – | – |")
        assert midre.startswith("| MIDRE | a_h=0.8 | 97.0 | 47.5 | – |") and "| 18.75 | 44% | yes |" in midre
        assert "| OP | 35% | yes |" in calor
        assert mc.endswith("| 9.29 | 76% | **no** (7.0 pts) |")  # (85 - 20) / 7

    def test_goal_verdicts(self):
        s = v2.summarize(ROWS, MARGINS)
        goals = {r["model"]: r for r in s["goals"]}
        assert set(goals) == {"midre", "calor", "midre+calor"}  # the baselines carry no goal
        assert goals["midre"]["ok_attack"] and goals["midre"]["ok_accuracy"]
        assert not goals["calor"]["ok_attack"] and goals["calor"]["ok_accuracy"]
        assert goals["midre+calor"]["ok_attack"] and not goals["midre+calor"]["ok_accuracy"]
        text = v2.goal_lines(s)
        assert text[0].startswith("- MIDRE: strongest-attack AttAcc@1 47.5% vs NoDef 85.0%, 44% lower (goal ≥ 40%)") and text[
            0
        ].endswith("**met**")
        assert "35% lower (goal ≥ 40%)" in text[1] and text[1].endswith("**missed**")
        assert "76% lower (goal ≥ 60%); 7.0 points of accuracy lost (goal ≤ 5)" in text[2] and text[2].endswith("**missed**")
        assert text[3] == "- within 5 points of NoDef's accuracy (matched): MIDRE, CALoR, NLS"
        assert (
            text[4].startswith("- outside the band, so **not at matched accuracy**")
            and "MIDRE+CALoR (7.0 points below)" in text[4]
        )

    def test_missing_goal_defense_is_said(self):
        s = v2.summarize(ROWS[:3], MARGINS)
        assert "- CALoR: not in this run — **missed** (no number)" in v2.goal_lines(s)

    def test_refuses_to_mix_classes_or_options(self):
        with pytest.raises(
            v2.RunError, match=r"^cannot put nodef-s0 .* and calor-s0 .* attacked with different classes \(0-39 vs 0-9\)"
        ):
            v2.summarize([ROWS[0], row("calor", 0, 0.99, 0.5, classes=range(10))], MARGINS)
        with pytest.raises(v2.RunError, match=r"attacked with different attacks"):
            v2.summarize([ROWS[0], row("calor", 0, 0.99, 0.5, steps=50)], MARGINS)

    def test_classes_text(self):
        assert v2.classes_text([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and v2.classes_text(list(range(40))) == "0-39"


class TestInput:
    def test_strength_and_tuned(self, tmp_path):
        tuned = tmp_path / "tune.json"
        tuned.write_text(json.dumps({"defense": "calor", "param": "rank", "chosen_value": 8}))
        assert v2.parse_strengths(["mid.beta=0.001,nls.smoothing=-0.1"], [tuned]) == {
            "mid": {"beta": 0.001},
            "nls": {"smoothing": -0.1},
            "calor": {"rank": 8},
        }
        with pytest.raises(v2.RunError, match=r"^--strength must look like DEFENSE.KNOB=VALUE .*got 'beta=1'$"):
            v2.parse_strengths(["beta=1"], [])
        with pytest.raises(v2.RunError, match=r"^--strength 'nope.beta=1': unknown defense 'nope'"):
            v2.parse_strengths(["nope.beta=1"], [])
        tuned.write_text(json.dumps({"defense": "calor", "param": "rank", "chosen_value": None}))
        with pytest.raises(v2.RunError, match="tune chose no value of rank for calor"):
            v2.parse_strengths([], [tuned])


def _reports_dir(tmp_path: Path, **over) -> Path:
    folder = tmp_path / "attacks"
    numbers = {"nodef": (0.99, 0.90), "midre": (0.97, 0.50), "calor": (0.975, 0.50), "midre+calor": (0.975, 0.30)}
    for defense, stem in v2.TARGET_STEMS.items():
        (folder / stem).mkdir(parents=True)
        (folder / stem / "report.json").write_text(json.dumps(report(defense, *numbers[defense], **over.get(defense, {}))))
    return folder


class TestRun:
    ARGS = ["--defenses", "nodef,midre,calor,midre+calor"]

    def _args(self, tmp_path, folder):
        md = tmp_path / "RESULTS.md"
        md.write_text("# results\n\nkept\n")
        return [*self.ARGS, "--reports-from", str(folder), "--reports-command", "python benchmarks/attacks.py --targets-dir T",
                "--out-dir", str(tmp_path / "out"), "--results-dir", str(tmp_path / "res"), "--results-md", str(md)]  # fmt: skip

    def test_reused_reports_make_the_section(self, tmp_path, monkeypatch):
        monkeypatch.setenv("MIDEFEND_ORL_DIR", "unused")  # nothing is trained or attacked: every row is reused
        args = self._args(tmp_path, _reports_dir(tmp_path))
        assert v2.main(args) == 0
        summary = json.loads((tmp_path / "res" / "reproduce_v2.json").read_text())
        assert set(summary["datasets"]["orl"]["models"]) == {"nodef", "midre", "calor", "midre+calor"}
        assert (tmp_path / "res" / "tradeoff-v2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        text = (tmp_path / "RESULTS.md").read_text()
        assert text.startswith("# results\n\nkept\n") and text.count(v2.START) == 1 and text.rstrip().endswith(v2.END)
        assert "made by `python benchmarks/attacks.py --targets-dir T`" in text and "nodef-s0 from `" in text
        assert "Attack settings of every row: classes 0-39; judges orl-eval + FaceNet" in text
        assert "| MIDRE+CALoR | rank=16, a_h=0.4 | 97.5 |" in text and "**met**" in text
        assert v2.main(args) == 0 and (tmp_path / "RESULTS.md").read_text().count(v2.START) == 1  # rewritten in place

    def test_a_tagged_run_writes_its_own_section_and_files_beside_the_untagged_one(self, tmp_path, monkeypatch, capsys):
        monkeypatch.setenv("MIDEFEND_ORL_DIR", "unused")
        args = self._args(tmp_path, _reports_dir(tmp_path))
        assert v2.main(args) == 0 and v2.main([*args, "--tag", "seeds", "--note", "Ten classes, to fit 90 minutes."]) == 0
        assert (tmp_path / "res" / "reproduce_v2.json").is_file() and (tmp_path / "res" / "reproduce_v2-seeds.json").is_file()
        assert (tmp_path / "res" / "tradeoff-v2-seeds.png").is_file()
        text = (tmp_path / "RESULTS.md").read_text()
        assert text.count(v2.START) == 1 and text.count("<!-- reproduce-v2-seeds:start -->") == 1
        assert text.rstrip().endswith("<!-- reproduce-v2-seeds:end -->") and "## Reproduction v2 (seeds):" in text
        assert "reproduce_v2-seeds.json`):" in text  # its goal line names its own file for check.py --v2
        untagged, tagged = text.split("<!-- reproduce-v2-seeds:start -->")
        assert "Ten classes" not in untagged and "\n\nTen classes, to fit 90 minutes.\n\n" in tagged  # its own paragraph
        assert v2.main([*args, "--tag", "Seeds 3"]) == 2
        assert "--tag must be lower-case letters, digits and dashes" in capsys.readouterr().err

    def test_mixed_reports_are_refused_before_any_work(self, tmp_path, monkeypatch, capsys):
        monkeypatch.setenv("MIDEFEND_ORL_DIR", "unused")
        folder = _reports_dir(tmp_path, calor={"classes": range(10)})
        assert v2.main(self._args(tmp_path, folder)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: cannot put nodef-s0") and "different classes (0-39 vs 0-9)" in err and "\n" not in err
        assert v2.main([*self._args(tmp_path, _reports_dir(tmp_path / "b")), "--classes", "0-9"]) == 2
        assert "--classes 0-9 differs from the reused reports' classes 0-39" in capsys.readouterr().err
        assert not (tmp_path / "res").exists()

    def test_bad_arguments_are_one_line(self, tmp_path, capsys, monkeypatch):
        monkeypatch.setenv("MIDEFEND_ORL_DIR", "unused")
        assert v2.main(["--defenses", "nodef,foo", "--out-dir", str(tmp_path)]) == 2
        assert capsys.readouterr().err.startswith("error: --defenses: unknown 'foo'; known: nodef, midre")
        assert v2.main(["--seeds", "0,x", "--out-dir", str(tmp_path)]) == 2
        assert "--seeds must be integers" in capsys.readouterr().err


class TestCheckV2:
    def test_exit_codes(self, tmp_path, capsys):
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"check": MARGINS}))
        bad, good = tmp_path / "bad.json", tmp_path / "good.json"
        bad.write_text(json.dumps(v2.summarize(ROWS, MARGINS)))
        assert check.main(["--v2", str(bad), "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert "missed: orl calor: attack acc@1 dropped 35% relative to NoDef, margin is 40%" in err
        assert "missed: orl midre+calor: lost 7.0% accuracy, allowed 5.0%" in err and "nls" not in err  # baselines carry no goal
        met = [
            ROWS[0],
            row("midre", 0, 0.99, 0.4),
            row("calor", 0, 0.97, 0.5),
            row("midre+calor", 0, 0.95, 0.3),
            row("nls", 0, 0.5, 0.9),
        ]
        good.write_text(json.dumps(v2.summarize(met, MARGINS)))
        assert check.main(["--v2", str(good), "--config", str(config)]) == 0
        assert "all margins met" in capsys.readouterr().out
        partial = tmp_path / "partial.json"
        partial.write_text(json.dumps(v2.summarize(met[:2], MARGINS)))
        assert check.main(["--v2", str(partial), "--config", str(config)]) == 1
        assert "missed: orl calor: not in the results" in capsys.readouterr().err
        broken = tmp_path / "broken.json"
        broken.write_text("{")
        assert check.main(["--v2", str(broken), "--config", str(config)]) == 2
        assert capsys.readouterr().err.startswith("error: cannot read the v2 results file")
        assert check.main(["--v2", str(tmp_path / "none.json"), "--config", str(config)]) == 2


def test_each_strength_is_attacked_in_its_own_folder(tmp_path, monkeypatch):
    """A rerun at another strength must not resume (and be refused by) the folder of the previous model."""
    from argparse import Namespace

    args = Namespace(out_dir=tmp_path, targets_dir=None, reports_from=[], classes="all", fast=False, skip=[], steps=None)
    runner = v2.Runner(args, {"mid": {"beta": 0.003}})
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"weights")
    monkeypatch.setattr(runner, "model", lambda key, seed: ckpt)
    monkeypatch.setattr(runner, "eval_checkpoint", lambda: tmp_path / "eval.safetensors")
    folders: list[str] = []

    def fake_verify(checkpoint, *, out_dir, **kwargs):
        folders.append(out_dir.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        return {"strongest_attack": "ppa"}

    import importlib

    monkeypatch.setattr(importlib.import_module("midefend.evaluation.verify"), "verify", fake_verify)
    runner.attacked("mid", 0)
    runner.strengths = {"mid": {"beta": 0.01}}
    runner.attacked("mid", 0)
    runner.strengths = {}
    runner.attacked("mid", 0)
    assert folders == ["mid-beta0.003-s0", "mid-beta0.01-s0", "mid-s0"]
