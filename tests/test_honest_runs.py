"""Honest runs: a smoke-size verify completes with the metrics it cannot compute marked, and the cost knobs reach the attack."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from attack_fixtures import tiny_world  # noqa: F401  (session fixture)
from midefend.cli import app
from midefend.data.datasets import ClassificationData
from midefend.errors import DataError
from midefend.evaluation.feasibility import check_classes_present, fid_not_computable, planned_notes


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


class TestFeasibility:
    def test_fid_needs_two_of_each(self):
        assert fid_not_computable(2, 2) is None
        assert fid_not_computable(1, 5) == "FID needs at least 2 reconstructions and 2 private images, got 1 and 5"
        assert fid_not_computable(5, 1) is not None

    def test_planned_notes_count_the_attacked_classes(self):
        data = ClassificationData(torch.zeros(6, 1, 4, 4), torch.tensor([0, 0, 0, 1, 1, 2]), ["a", "b", "c"])
        assert planned_notes(data, [0], 3, per_class=1) == {"fid": "FID needs at least 2 reconstructions and 2 private images, got 1 and 3"}
        assert planned_notes(data, [2], 3, per_class=4) == {"fid": "FID needs at least 2 reconstructions and 2 private images, got 4 and 1"}
        assert planned_notes(data, None, 3, per_class=1) == {}

    def test_missing_class_is_refused_before_the_attack(self):
        data = ClassificationData(torch.zeros(2, 1, 4, 4), torch.tensor([0, 0]), ["a", "b"])
        with pytest.raises(DataError, match=r"^the private training data has no image of 1 attacked class\(es\) \(b\); attack other --classes"):
            check_classes_present(data, None, 2)
        check_classes_present(data, [0], 2)


class TestSmokeRun:
    def test_one_class_one_image_completes(self, tiny_world, tmp_path):
        w, out = tiny_world, tmp_path / "smoke"
        args = ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--prior", w.paths["prior"],
                "--attack", "ppa", "--classes", "0", "--per-class", "1", "--candidates", "2", "--init-pool", "3", "--steps", "2", "--out", out]
        result = _run(*args)
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        m = report["metrics"]
        assert m["fid"] is None
        assert m["not_computed"]["fid"].startswith("FID needs at least 2 reconstructions and 2 private images, got 1 and ")
        assert m["attack_acc_top1"] in (0.0, 1.0) and m["knn_distance"] is not None
        assert report["attack"]["init_pool"] == 3  # the CLI's cost knob reached the attack
        markdown = (out / "report.md").read_text()
        assert "| FID (eval features) | not computed: FID needs at least 2 reconstructions" in markdown
        assert "note: FID will not be computed (FID needs at least 2 reconstructions" in result.output
