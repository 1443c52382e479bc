"""``midefend verify`` / ``compare`` / ``demo`` on tiny checkpoints: files, resume, error paths."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)
from midefend.cli import app
from midefend.evaluation.verify import parse_classes
from midefend.errors import ConfigError

FAST = ["--attack", "ppa", "--steps", "4", "--per-class", "2", "--quiet"]


def _run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _verify_args(w, out, *extra):
    return ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--prior", w.paths["prior"], "--out", out, *FAST, *extra]


class TestVerify:
    def test_writes_reports_and_resumes(self, tiny_world, tmp_path):
        out = tmp_path / "run"
        result = _run(*_verify_args(tiny_world, out))
        assert result.exit_code == 0, result.output
        assert "AttAcc@1" in result.output
        report = json.loads((out / "report.json").read_text())
        assert report["format"] == "midefend-verify-report"
        metrics = report["metrics"]
        assert len(metrics["per_class"]) == 5 and metrics["num_reconstructions"] == 10
        for key in ("accuracy", "attack_acc_top1", "attack_acc_top5", "knn_distance", "fid", "target_acc_top1"):
            assert isinstance(metrics[key], float), key
        assert 0.0 <= metrics["attack_acc_top1"] <= metrics["attack_acc_top5"] <= 1.0
        assert report["attack"]["steps"] == 4 and report["attack"]["per_class"] == 2
        assert "| FID (eval features) |" in (out / "report.md").read_text()
        grid = Image.open(out / "grid.png")
        assert grid.size == (2 + 3 * 18, 2 + 5 * 18)  # 5 classes × (private + 2 reconstructions), 16 px tiles
        assert sorted(p.name for p in (out / "attack").glob("class_*.safetensors")) == [f"class_0000{c}.safetensors" for c in range(5)]

        again = _run(*_verify_args(tiny_world, out, "--resume"))
        assert again.exit_code == 0, again.output
        resumed = json.loads((out / "report.json").read_text())
        assert resumed["metrics"] == metrics

    def test_class_subset(self, tiny_world, tmp_path):
        result = _run(*_verify_args(tiny_world, tmp_path / "sub", "--classes", "1-2"))
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "sub" / "report.json").read_text())
        assert [row["class"] for row in report["metrics"]["per_class"]] == [1, 2]


class TestCompare:
    def test_table_from_checkpoints_and_reports(self, tiny_world, tmp_path):
        w = tiny_world
        out = tmp_path / "cmp"
        args = ["compare", w.paths["target"], w.paths["eval"], "--eval-model", w.paths["eval"], "--data", w.folder]
        result = _run(*args, "--prior", w.paths["prior"], "--out", out, *FAST)
        assert result.exit_code == 0, result.output
        table = (out / "compare.md").read_text().splitlines()
        assert table[0] == ("| model | Acc (%) | identity (%) | judges @1 (%) | eval AttAcc@1 (%) | unconfirmed (%) | eval AttAcc@5 (%) "
                            "| KNN | FID | Δ | strongest attack |")
        # no face recogniser on this data: the identity column falls back to the evaluation model, labelled "(eval)"
        cells = [line.split(" | ") for line in table[2:4]]
        assert [(c[2].endswith(" (eval)"), c[3], c[2].removesuffix(" (eval)") == c[4].split(" ± ")[0]) for c in cells] == [(True, "–", True)] * 2
        assert [line.split(" | ")[0] for line in table[2:4]] == ["| target", "| eval"]
        assert [line.split(" | ")[-1] for line in table[2:4]] == ["ppa |", "ppa |"]
        rows = json.loads((out / "compare.json").read_text())["rows"]
        # From the saved reports alone (no attack): the same table.
        again = _run("compare", out / "target" / "report.json", out / "eval", "--out", tmp_path / "cmp2")
        assert again.exit_code == 0, again.output
        assert json.loads((tmp_path / "cmp2" / "compare.json").read_text())["rows"] == rows

    def test_writes_nothing_without_out(self, tiny_world, tmp_path, monkeypatch):
        """No --out: the table is printed and no file is left anywhere (not runs/compare in the working directory)."""
        w = tiny_world
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        args = ["compare", w.paths["target"], w.paths["eval"], "--eval-model", w.paths["eval"], "--data", w.folder]
        result = _run(*args, "--prior", w.paths["prior"], *FAST)
        assert result.exit_code == 0, result.output
        assert "model-inversion comparison" in result.output and "nothing written (pass --out DIR" in result.output
        assert list(cwd.iterdir()) == []
        refused = _run(*args, "--prior", w.paths["prior"], "--resume", *FAST)
        assert refused.exit_code == 1 and "--resume continues the verify runs in --out DIR" in refused.output

    def test_needs_two_models(self, tiny_world, tmp_path):
        result = _run("compare", tiny_world.paths["target"], "--eval-model", tiny_world.paths["eval"])
        assert result.exit_code == 1
        assert "error: compare needs a NoDef model and at least one defended model, got 1 path(s)" in result.output

    def test_checkpoint_without_eval_model(self, tiny_world, tmp_path):
        result = _run("compare", tiny_world.paths["target"], tiny_world.paths["eval"], "--data", tiny_world.folder, "--out", tmp_path)
        assert result.exit_code == 1
        assert "error: no evaluation model: pass --eval-model EVAL.safetensors (an independent model trained on the private data), or --eval-model facenet for face data" in result.output


class TestErrors:
    def _assert_one_line_error(self, result, message):
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert message in result.output

    def test_unknown_attack(self, tiny_world, tmp_path):
        self._assert_one_line_error(_run(*_verify_args(tiny_world, tmp_path, "--attack", "foo")), "unknown attack 'foo'; known attacks: brep, gmi, ifgmi, miface, nes, plg, ppa")

    def test_missing_prior_file(self, tiny_world, tmp_path):
        w = tiny_world
        args = ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--prior", tmp_path / "no.safetensors", "--out", tmp_path, *FAST]
        self._assert_one_line_error(_run(*args), "is neither 'face-gan' nor an existing file")

    def test_gmi_with_face_prior(self, tiny_world, tmp_path):
        w = tiny_world
        args = ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--out", tmp_path, *FAST, "--attack", "gmi"]
        self._assert_one_line_error(_run(*args), "attack 'gmi' needs a prior with a discriminator; prior 'face-gan' has none")

    def test_bad_classes(self, tiny_world, tmp_path):
        self._assert_one_line_error(_run(*_verify_args(tiny_world, tmp_path, "--classes", "3-9")), "classes must be in 0..4, got 5 in '3-9'")

    def test_bad_loss(self, tiny_world, tmp_path):
        self._assert_one_line_error(_run(*_verify_args(tiny_world, tmp_path, "--loss", "hinge")), "unknown identity loss 'hinge'")

    def test_corrupt_checkpoint(self, tiny_world, tmp_path):
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(b"\x00" * 32)
        w = tiny_world
        result = _run("verify", bad, "--eval-model", w.paths["eval"], "--data", w.folder, "--out", tmp_path / "o", *FAST)
        assert result.exit_code == 1 and result.output.startswith("error: "), result.output
        assert not (tmp_path / "o" / "report.json").exists()

    def test_data_with_other_class_count(self, tiny_world, tmp_path):
        from attack_fixtures import write_digit_folder

        subset = tiny_world.train.labels < 3
        folder = write_digit_folder(tmp_path / "three", tiny_world.train.images[subset], tiny_world.train.labels[subset])
        w = tiny_world
        args = ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", folder, "--prior", w.paths["prior"], "--out", tmp_path / "o", *FAST]
        self._assert_one_line_error(_run(*args), "has 3 classes but the target model has 5")

    def test_missing_eval_model_is_a_usage_error(self, tiny_world, tmp_path):
        result = _run("verify", tiny_world.paths["target"], "--eval-model", tmp_path / "none.safetensors")
        assert result.exit_code == 2

    def test_demo_bad_data(self):
        self._assert_one_line_error(_run("demo", "--data", "cifar"), "--data must be 'digits' or 'orl', got 'cifar'")

    def test_demo_orl_without_folder(self, monkeypatch):
        monkeypatch.delenv("MIDEFEND_ORL_DIR", raising=False)
        self._assert_one_line_error(_run("demo", "--data", "orl"), "--data orl needs --data-dir PATH")


class TestParseClasses:
    def test_forms(self):
        assert parse_classes("all", 5) is None
        assert parse_classes("2", 5) == [2]
        assert parse_classes("0-1,4", 5) == [0, 1, 4]

    @pytest.mark.parametrize("spec", ["a-b", "3-1", "1,,2"])
    def test_bad(self, spec):
        with pytest.raises(ConfigError, match=r"classes must be 'all', a range like '0-9' or a list like '1,4,7', got"):
            parse_classes(spec, 5)


class _PooledEmbedder(torch.nn.Module):
    """A cheap stand-in for FaceNet: 4x4 average pooling of the grey image, unit length."""

    name, description = "facenet", "4x4 pooled pixels (a test stand-in)"

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def embed(self, images):
        grey = images.mean(dim=1, keepdim=True)
        return torch.nn.functional.normalize(torch.nn.functional.adaptive_avg_pool2d(grey, 4).flatten(1), dim=1)


class TestFaceNetJudge:
    def test_both_judges_and_their_agreement(self, tiny_world, tmp_path, monkeypatch):
        import midefend.evaluation.recognisers as recognisers

        monkeypatch.setattr(recognisers, "load_recogniser", lambda name, device="cpu": _PooledEmbedder())
        out = tmp_path / "both"
        result = _run(*_verify_args(tiny_world, out, "--eval-model", "facenet"))
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        face, metrics = report["metrics"]["facenet"], report["metrics"]
        assert report["eval_model"]["name"] == "eval"
        assert [(j["name"], j["independent"]) for j in report["judges"]] == [("eval", False), ("facenet", True)]
        assert 0.0 <= face["attack_acc_top1"] <= face["attack_acc_top5"] <= 1.0 and face["delta_face"] >= 0.0
        # agreement counts reconstructions (10 here) with equal verdicts; with hit rates a and b it lies in [|a + b - 1|, 1 - |a - b|]
        a, b, agree = metrics["attack_acc_top1"], face["attack_acc_top1"], face["agreement"]
        assert abs(agree * 10 - round(agree * 10)) < 1e-5  # a float32 fraction
        assert abs(a + b - 1) - 1e-6 <= agree <= 1 - abs(a - b) + 1e-6
        text = (out / "report.md").read_text()
        assert "| facenet nearest identity @1 / @5 (%) |" in text and "| eval model and facenet agree" in text
        # one independent judge: the headline is its top-1, the evaluation model's number stands beside it
        identity = metrics["identity"]
        assert identity["consensus_judges"] == ["facenet"] and identity["consensus_top1"] == face["attack_acc_top1"]
        assert identity["evaluator_top1"] == metrics["attack_acc_top1"]
        assert "as judged by facenet" in report["verdict"] and "as judged by facenet" in result.output

    def test_bad_eval_model_value_is_a_usage_error(self, tiny_world, tmp_path):
        result = _run("verify", tiny_world.paths["target"], "--eval-model", "facenett")
        assert result.exit_code == 2 and "'facenett' is neither a face recogniser (facenet, dlib) nor an existing checkpoint file" in result.output
