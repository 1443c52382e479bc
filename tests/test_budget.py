"""verify --budget: the plan (classes, attacks kept and dropped), the headline's interval, and the run it narrows."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)

from midefend.cli import app
from midefend.errors import ConfigError
from midefend.evaluation.budget import headline_interval, parse_budget, per_class_headline, plan_budget


def _estimate(classes: int = 40) -> dict:
    # seconds per class: ppa 10, ppa+eot 20 (adaptive), miface 5, nes 2, brep 3; the reach step 1
    per_class = {"ppa": (10, False), "ppa+eot": (20, True), "miface": (5, False), "nes": (2, False), "brep": (3, False)}
    rows = [{"name": n, "adaptive": a, "seconds": s * classes} for n, (s, a) in per_class.items()]
    return {"attacks": rows, "reach": {"seconds": 1.0 * classes}, "classes": classes}


class TestParse:
    @pytest.mark.parametrize(("text", "seconds"), [("30m", 1800.0), ("90s", 90.0), ("2h", 7200.0), ("0.5h", 1800.0), (" 45 ", 45.0), (120, 120.0)])
    def test_units(self, text, seconds):
        assert parse_budget(text) == seconds

    @pytest.mark.parametrize("text", ["thirty", "30 min", "-5m", "0", "1d"])
    def test_refused(self, text):
        with pytest.raises(ConfigError, match=r"^budget must (look like '30m', '90s', '1.5h' or a number of seconds|be positive), got"):
            parse_budget(text)


class TestPlan:
    def test_fits_every_attack_then_adds_classes(self):
        # usable = 600 * 0.85 = 510 s; all attacks + reach cost 41 s per class -> 12 classes (492 s), 13 would be 533
        plan = plan_budget(_estimate(), budget_seconds=600, class_pool=range(40), seed=0)
        assert plan.attacks == ["ppa", "ppa+eot", "miface", "nes", "brep"] and plan.dropped == []
        assert len(plan.classes) == 12 and plan.predicted_seconds == 492.0 and not plan.smoke_test
        assert plan.classes == sorted(plan.classes) and set(plan.classes) <= set(range(40))

    def test_drops_the_dearest_others_never_ppa_or_adaptive(self):
        # usable 340: ppa + ppa+eot + reach = 31 s/class at 10 classes = 310; +nes (2) = 330; +brep (3) = 360 > 340; miface too
        plan = plan_budget(_estimate(), budget_seconds=400, class_pool=range(40), seed=0)
        assert plan.attacks == ["ppa", "ppa+eot", "nes"] and len(plan.classes) == 10
        assert [d["attack"] for d in plan.dropped] == ["brep", "miface"]
        assert plan.dropped[1]["reason"] == "needs 0.8 more min at 10 classes"  # 5 s x 10 classes

    def test_too_small_is_a_smoke_test(self):
        # usable 85: the core alone (31 s/class) fits 2 classes, not the 10 a verdict needs
        plan = plan_budget(_estimate(), budget_seconds=100, class_pool=range(40), seed=0)
        assert len(plan.classes) == 2 and plan.smoke_test and "ppa+eot" in plan.attacks
        assert "too small a budget for a verdict: a smoke test" in plan.describe()

    def test_large_budget_takes_every_class(self):
        plan = plan_budget(_estimate(), budget_seconds=1e6, class_pool=range(40))
        assert plan.classes == list(range(40)) and plan.dropped == []

    def test_seeded_sample(self):
        a = plan_budget(_estimate(), budget_seconds=600, class_pool=range(40), seed=3)
        assert a.classes == plan_budget(_estimate(), budget_seconds=600, class_pool=range(40), seed=3).classes
        assert a.classes != plan_budget(_estimate(), budget_seconds=600, class_pool=range(40), seed=4).classes


class TestInterval:
    def test_reference(self):
        scores = [0.0, 0.5, 1.0, 0.5]
        s = math.sqrt(0.5 / 3)
        half = 1.96 * s / 2 * math.sqrt(36 / 39)
        assert headline_interval(scores, population=40) == pytest.approx((0.5 - half, 0.5 + half))
        assert headline_interval(scores, population=4) == (0.5, 0.5)  # a census has no sampling error
        assert headline_interval([0.0, 0.0, 1.0], population=40)[0] == 0.0  # clipped

    def test_per_class_from_the_consensus(self):
        identity = {"consensus_judges": ["facenet", "dlib"], "evaluator": "eval",
                    "per_image": {"labels": [0, 0, 3, 3], "facenet": [0, 0, 3, 1], "dlib": [0, 2, 3, 1], "eval": [0, 0, 3, 3]}}
        assert per_class_headline(identity) == [0.5, 0.5]
        assert per_class_headline({**identity, "consensus_judges": []}) == [1.0, 1.0]  # no independent judge: the evaluator


class TestVerifyWithBudget:
    def test_a_budget_too_small_attacks_one_class_and_says_so(self, tiny_world, tmp_path, monkeypatch):
        import midefend.evaluation.cost as cost

        def fake(run, *, device="cpu", repeats=1, reach=True):  # 10 s per class of PPA on this machine, say
            n = len(run.classes) if run.classes is not None else run.target_ckpt.num_classes
            return {"attacks": [{"name": p.label, "adaptive": p.adaptive, "seconds": 10.0 * n} for p in run.planned], "reach": None, "classes": n}

        monkeypatch.setattr(cost, "estimate_run", fake)
        w, out = tiny_world, tmp_path / "run"
        args = ["verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--prior", w.paths["prior"], "--out", out,
                "--attack", "ppa", "--steps", "4", "--per-class", "2", "--quiet", "--no-reach", "--budget", "20s"]  # fmt: skip
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        budget = report["budget"]
        assert budget["budget_seconds"] == 20.0 and budget["smoke_test"] and len(budget["classes"]) == 1
        assert [c["class"] for c in report["metrics"]["per_class"]] == budget["classes"]
        assert report["verdict"].startswith("budgeted run (0 min) too small for a verdict: a smoke test")
        assert "1 of 5 classes attacked" in report["verdict"]
