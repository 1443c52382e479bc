"""Report files: they exist, parse, hold the metrics, and are written atomically."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from midefend.errors import ConfigError
from midefend.evaluation.reports import (
    COMPARISON_HEADER,
    comparison_cells,
    comparison_rows,
    load_report,
    render_comparison_markdown,
    save_grid,
    write_comparison,
    write_report,
)


def _metrics(acc, att1, att5=0.9, knn=100.0, fid=30.0):
    return {
        "accuracy": acc,
        "attack_acc_top1": att1,
        "attack_acc_top1_std": 0.1,
        "attack_acc_top5": att5,
        "attack_acc_top5_std": 0.05,
        "knn_distance": knn,
        "fid": fid,
        "target_acc_top1": 1.0,
        "target_confidence_mean": 0.9,
        "per_class": [{"class": 0, "attack_acc_top1": att1}],
    }


def _report(name, acc, att1):
    return {"target": {"name": name, "path": f"{name}.safetensors", "arch": "a", "defense": name}, "attack": {"attack": "ppa"}, "metrics": _metrics(acc, att1)}


class TestWriteReport:
    def test_files_exist_and_parse(self, tmp_path):
        private = torch.rand(3, 1, 8, 8)
        recon = torch.rand(3, 2, 1, 8, 8)
        paths = write_report(tmp_path / "out", _report("nodef", 0.95, 0.6), private=private, reconstructions=recon)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grid.png", "report.json", "report.md"]
        data = json.loads(paths["json"].read_text())
        assert data["format"] == "midefend-verify-report" and data["version"] == 1
        assert data["metrics"]["attack_acc_top1"] == 0.6
        assert data["files"]["grid"].endswith("grid.png")
        md = paths["markdown"].read_text()
        assert "| attack accuracy @1, eval model (%) | 60.0 ± 10.0 |" in md
        assert "![reconstructions](grid.png)" in md
        assert load_report(tmp_path / "out") == data
        assert load_report(paths["json"]) == data

    def test_grid_layout_and_pixels(self, tmp_path):
        private = torch.zeros(2, 1, 4, 4)
        recon = torch.ones(2, 3, 1, 4, 4)
        save_grid(tmp_path / "g.png", private, recon, padding=2)
        image = Image.open(tmp_path / "g.png")
        # 4 columns (private + 3) and 2 rows of 4 px tiles with 2 px padding around each.
        assert image.size == (2 + 4 * (4 + 2), 2 + 2 * (4 + 2))
        import numpy as np

        array = torch.from_numpy(np.array(image.convert("L")))
        assert array[2, 2] == 0  # first tile: the (black) private image
        assert array[2, 8] == 255  # second tile: a (white) reconstruction

    def test_grid_shape_errors(self, tmp_path):
        with pytest.raises(ConfigError, match=r"grid needs private \(N, C, H, W\) and reconstructions \(N, K, C, H, W\)"):
            save_grid(tmp_path / "g.png", torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 1, 4, 4))
        with pytest.raises(ConfigError, match=r"private images \(1, 4, 4\) and reconstructions \(3, 4, 4\) differ in shape"):
            save_grid(tmp_path / "g.png", torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 3, 4, 4))
        assert not (tmp_path / "g.png").exists()

    def test_failed_write_leaves_previous_file(self, tmp_path, monkeypatch):
        paths = write_report(tmp_path, _report("nodef", 0.95, 0.6))
        before = paths["json"].read_text()
        import midefend.evaluation.reports as reports

        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(reports.json, "dumps", broken)
        with pytest.raises(OSError, match="disk full"):
            write_report(tmp_path, _report("nodef", 0.5, 0.1))
        assert paths["json"].read_text() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]

    def test_load_report_errors(self, tmp_path):
        with pytest.raises(ConfigError, match=r"report .*missing.json' does not exist"):
            load_report(tmp_path / "missing.json")
        (tmp_path / "bad.json").write_text("{not json")
        with pytest.raises(ConfigError, match=r"is not readable JSON"):
            load_report(tmp_path / "bad.json")
        (tmp_path / "other.json").write_text('{"format": "something-else"}')
        with pytest.raises(ConfigError, match=r"is not a midefend verify report"):
            load_report(tmp_path / "other.json")


class TestComparison:
    def test_rows_and_delta(self):
        reports = [_report("nodef", 0.95, 0.60), _report("midre", 0.90, 0.30), _report("calor", 0.96, 0.20)]
        rows = comparison_rows(reports)
        assert [r["name"] for r in rows] == ["nodef", "midre", "calor"]
        assert rows[0]["delta"] is None
        assert rows[1]["delta"] == pytest.approx((0.60 - 0.30) / (0.95 - 0.90))
        assert rows[2]["delta"] is None and rows[2]["no_accuracy_lost"] is True  # more accurate than NoDef
        assert rows[0]["no_accuracy_lost"] is None and rows[1]["no_accuracy_lost"] is False
        assert [comparison_cells(r)[COMPARISON_HEADER.index("Δ")] for r in rows] == ["–", "6.00", "OP"]

    def test_markdown_table(self):
        rows = comparison_rows([_report("nodef", 0.95, 0.60), _report("midre", 0.90, 0.30)], ["NoDef", "MIDRE"])
        lines = render_comparison_markdown(rows).splitlines()
        assert lines[0] == ("| model | Acc (%) | identity (%) | judges @1 (%) | eval AttAcc@1 (%) | unconfirmed (%) | eval AttAcc@5 (%) "
                            "| KNN | FID | Δ | strongest attack |")
        # reports without an identity verdict (older ones): the identity cells say so with "–"
        assert lines[2] == "| NoDef | 95.0 | – | – | 60.0 ± 10.0 | – | 90.0 ± 5.0 | 100.00 | 30.0 | – | ppa |"
        assert lines[3] == "| MIDRE | 90.0 | – | – | 30.0 ± 10.0 | – | 90.0 ± 5.0 | 100.00 | 30.0 | 6.00 | ppa |"
        assert lines[5].startswith("Each model is judged by its strongest attack, chosen by the identity headline")
        assert lines[5].endswith("± is the std over classes; Δ is the papers' trade-off on the evaluation model's accuracy.")

    def test_identity_columns_first(self):
        identity = {"headline": 0.1, "consensus_top1": 0.1, "unconfirmed_share": 0.875,
                    "judges": [{"name": "facenet", "top1": 0.2, "independent": True}, {"name": "dlib", "top1": 0.15, "independent": True}]}
        report = _report("nodef", 0.95, 0.60)
        report["metrics"]["identity"] = identity
        cells = comparison_cells(comparison_rows([report])[0])
        assert cells[:7] == ["nodef", "95.0", "10.0", "facenet 20.0, dlib 15.0", "60.0 ± 10.0", "87.5", "90.0 ± 5.0"]
        # a face recogniser judged alone (no evaluation model): the eval columns show nothing, not its numbers twice
        report["metrics"]["evaluator"] = "facenet"
        cells = comparison_cells(comparison_rows([report])[0])
        assert cells[4] == "–" and cells[6] == "–" and cells[2] == "10.0"

    def test_write_comparison(self, tmp_path):
        rows = comparison_rows([_report("nodef", 0.95, 0.60), _report("midre", 0.90, 0.30)])
        paths = write_comparison(tmp_path, rows)
        data = json.loads(paths["json"].read_text())
        assert data["format"] == "midefend-comparison" and len(data["rows"]) == 2
        assert paths["markdown"].read_text() == render_comparison_markdown(rows)

    def test_empty(self):
        with pytest.raises(ConfigError, match="compare needs at least one report"):
            comparison_rows([])


class TestReachSection:
    def test_reach_table_in_markdown(self, tmp_path):
        report = _report("nodef", 0.95, 0.6)
        report["reach"] = {
            "format": "midefend-reach", "images": 20, "chance_top1": 0.025, "grid": "reach-grid.png",
            "real": {"facenet": {"top1": 1.0}, "dlib": {"top1": 0.95}},
            "spaces": [{"space": "latent", "mse": 0.00781, "judges": {"facenet": {"top1": 0.25}, "dlib": {"top1": 0.05}}}],
        }  # fmt: skip
        md = write_report(tmp_path, report)["markdown"].read_text()
        assert "| search space | pixel MSE | facenet top-1 (%) | dlib top-1 (%) |" in md
        assert "| the real photos | – | 100.0 | 95.0 |" in md and "| latent | 0.0078 | 25.0 | 5.0 |" in md
        assert "(chance 2.5 %)" in md and "![real | projection](reach-grid.png)" in md

    def test_no_reach_no_section(self, tmp_path):
        assert "Prior reach" not in write_report(tmp_path, _report("nodef", 0.95, 0.6))["markdown"].read_text()


class TestReportsNeverOverclaim:
    """The verdict says what a run covers, judges are named as what they are, one strongest attack everywhere."""

    def _facenet_only(self):
        judge = {"name": "facenet", "top1": 0.1, "top5": 0.3, "chance_top1": 0.025, "chance_top5": 0.125, "independent": True}
        m = {**_metrics(0.95, 0.1), "evaluator": "facenet", "facenet": {"delta_face": 0.9, "agreement": None},
             "identity": {"headline": 0.1, "consensus_top1": 0.1, "chance_top1": 0.025, "unconfirmed_share": None, "consensus_judges": ["facenet"],
                          "identities_recovered": 1, "n_identities": 40, "identities_by_chance": 1.0, "judges": [judge]}}  # fmt: skip
        return {"target": {"name": "t", "path": "t.safetensors", "arch": "a", "defense": None}, "eval_model": None,
                "judges": [{"name": "facenet", "kind": "face recogniser", "description": "FaceNet (CASIA-WebFace)", "independent": True}],
                "prior": {"name": "face-gan"}, "strongest_attack": "ppa", "attack": {"attack": "ppa"}, "verdict": "v", "metrics": m,
                "attacks": [{"name": "ppa", "threat_model": "white-box", "adaptive": False, "metrics": m, "seconds": 1.0}]}  # fmt: skip

    def test_facenet_only_labels(self):
        from midefend.evaluation.reports import render_markdown

        md = render_markdown(self._facenet_only())
        assert "`None`" not in md and "eval model" not in md.lower().replace("evaluation model", ""), md
        assert "- judge facenet: FaceNet (CASIA-WebFace) (independent)" in md
        assert "| attack accuracy @1, facenet (%) |" in md

    def test_the_strongest_attack_is_named_once(self):
        from midefend.evaluation.reports import render_markdown, verdict_line

        report = {**_report("calor", 0.95, 0.6), "strongest_attack": "ppa+eot+bpda+ca",
                  "attacks": [{"name": "ppa+eot+bpda+ca", "threat_model": "white-box", "adaptive": True, "metrics": _metrics(0.95, 0.6)}]}  # fmt: skip
        report["verdict"] = verdict_line(report)
        md = render_markdown(report)
        verdict = next(line for line in md.splitlines() if line.startswith("**Verdict:"))
        bullet = next(line for line in md.splitlines() if line.startswith("- strongest attack:"))
        assert "strongest attack ppa+eot+bpda+ca (white-box, adaptive)" in verdict
        assert bullet.startswith("- strongest attack: ppa+eot+bpda+ca (")
        named = {word for line in md.splitlines() if "strongest attack" in line for word in line.replace("(", " ").split() if word.startswith("ppa")}
        assert named == {"ppa+eot+bpda+ca"}, named

    def test_a_fast_subset_verdict_says_so(self):
        from midefend.evaluation.reports import render_markdown, verdict_line

        report = {**_report("nodef", 0.95, 0.0), "strongest_attack": "ppa", "target": {"name": "nodef", "num_classes": 40},
                  "attacks": [{"name": "ppa", "threat_model": "white-box", "preset": "fast", "metrics": _metrics(0.95, 0.0)}]}  # fmt: skip
        report["metrics"]["per_class"] = [{"class": 0}, {"class": 1}]
        report["verdict"] = verdict_line(report)
        assert report["verdict"].startswith("smoke test (--fast), not a verdict; 2 of 40 classes attacked: strongest attack ppa")
        assert render_markdown(report).splitlines()[2].startswith("**Verdict: smoke test (--fast), not a verdict; 2 of 40 classes attacked:")

    def test_a_60_column_log_keeps_every_value_whole(self, tmp_path):
        """Output to a pipe (a log, CI, ``| tee``) with COLUMNS=60: no cell is cut ("stronge…") or split over lines."""
        import os
        import subprocess
        import sys

        for name, att in (("nodef-with-a-long-name", 0.6), ("midre+calor-with-a-long-name", 0.3)):
            report = {**_report(name, 0.95, att), "strongest_attack": "ppa+eot+bpda+ca"}
            write_report(tmp_path / name, report, private=torch.rand(1, 1, 4, 4), reconstructions=torch.rand(1, 1, 1, 4, 4))
        env = {**os.environ, "COLUMNS": "60", "TERM": "dumb"}
        done = subprocess.run([sys.executable, "-m", "midefend", "compare", str(tmp_path / "nodef-with-a-long-name"),
                               str(tmp_path / "midre+calor-with-a-long-name")], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "…" not in done.stdout, done.stdout
        rows = [line for line in done.stdout.splitlines() if "long-name" in line and line.startswith("│")]
        assert len(rows) == 2 and all("ppa+eot+bpda+ca" in row and "95.0" in row for row in rows), done.stdout
        assert "nodef-with-a-long-name: strongest attack ppa+eot+bpda+ca" in done.stdout  # the table's strongest attack, not another
        assert "nothing written" in done.stdout and sorted(p.name for p in tmp_path.iterdir()) == ["midre+calor-with-a-long-name", "nodef-with-a-long-name"]
