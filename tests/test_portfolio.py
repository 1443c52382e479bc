"""``verify``'s portfolio: which attacks run, the headline is the strongest row, repeats, dry run."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from typer.testing import CliRunner

from attack_fixtures import tiny_world  # noqa: F401  (session fixture: tiny models, data, prior)
from midefend.attacks import Attack, register_attack
from midefend.attacks.registry import _ATTACKS
from midefend.cli import app
from midefend.errors import ConfigError
from midefend.evaluation.aggregate import combine_runs, strongest
from midefend.evaluation.portfolio import allowed_threat_models, plan_portfolio
from reliability_fixtures import one_thread  # noqa: F401  (autouse fixture)

TINY = ["--steps", "2", "--per-class", "1", "--candidates", "2", "--quiet"]


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _verify(w, out, *extra):
    return _run("verify", w.paths["target"], "--eval-model", w.paths["eval"], "--data", w.folder, "--prior", w.paths["prior"], "--out", out, *TINY, *extra)


class _Fake(Attack):
    uses_prior = False


BUILTIN = ("gmi", "miface", "ppa")


@pytest.fixture(autouse=True)
def builtin_only(monkeypatch):
    """Only the three built-in attacks are registered here, whatever else other modules register."""
    from midefend.attacks.registry import list_attacks

    list_attacks()  # load the built-ins
    monkeypatch.setattr("midefend.attacks.registry._ATTACKS", {n: _ATTACKS[n] for n in BUILTIN})


@pytest.fixture
def fake_attacks(builtin_only):
    """Register a black-box, a label-only and a slow attack for one test."""
    added = {
        "zz-black": type("B", (_Fake,), {"threat_model": "black-box"}),
        "zz-label": type("L", (_Fake,), {"threat_model": "label-only"}),
        "zz-slow": type("S", (_Fake,), {"in_portfolio": False}),
    }
    for name, cls in added.items():
        register_attack(name)(cls)
    yield added
    from midefend.attacks import registry

    for name in added:
        registry._ATTACKS.pop(name)


class TestPlan:
    def test_threat_models_allow_the_weaker_ones(self):
        assert allowed_threat_models("white-box") == ("white-box", "black-box", "label-only")
        assert allowed_threat_models("label-only") == ("label-only",)
        with pytest.raises(ConfigError, match=r"threat model must be one of white-box, black-box, label-only, got 'grey-box'"):
            allowed_threat_models("grey-box")

    def test_registered_attacks_join_by_threat_model(self, fake_attacks, tiny_world):
        names = lambda tm: [p.label for p in plan_portfolio(threat_model=tm, prior=tiny_world.prior)[0]]  # noqa: E731
        assert names("white-box") == ["gmi", "miface", "ppa", "zz-black", "zz-label"]
        assert names("black-box") == ["zz-black", "zz-label"]
        assert names("label-only") == ["zz-label"]
        planned, skipped = plan_portfolio(threat_model="black-box", prior=tiny_world.prior)
        assert {s["attack"]: s["reason"] for s in skipped}["zz-slow"].startswith("not in the default portfolio")
        assert {s["attack"]: s["reason"] for s in skipped}["ppa"] == "needs white-box access; the threat model is black-box"
        # --attack runs a left-out attack all the same.
        assert [p.label for p in plan_portfolio(attack="zz-slow")[0]] == ["zz-slow"]

    def test_prior_decides_what_runs(self, tiny_world):
        from midefend.attacks.priors import DCGANGenerator, GenerativePrior

        no_disc = GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16), name="plain")
        planned, skipped = plan_portfolio(prior=no_disc)
        assert [p.label for p in planned] == ["miface", "ppa"]
        assert "needs a prior with a discriminator" in {s["attack"]: s["reason"] for s in skipped}["gmi"]
        assert [p.label for p in plan_portfolio(prior=None)[0]] == ["miface"]

    def test_adaptive_variants_follow_the_defense(self, tiny_world):
        midre = {"name": "midre", "erase_scale": [0.1, 0.8], "erase_ratio": [1.0, 1.0]}
        planned, _ = plan_portfolio(defense=midre, prior=tiny_world.prior, options={"per_class": 1, "init_pool": 50})
        assert [p.label for p in planned] == ["gmi", "gmi+eot", "miface", "ppa", "ppa+eot"]  # miface: adaptive_in_portfolio False
        ppa_eot = planned[-1].build()
        assert ppa_eot.options["eot"] == 4 and ppa_eot.options["erase_scale"] == [0.1, 0.8] and ppa_eot.adaptive
        assert ppa_eot.options["init_pool"] == 50 and "init_pool" not in planned[2].options  # miface has no pool
        assert [p.label for p in plan_portfolio(attack="miface", defense=midre)[0]] == ["miface", "miface+eot"]
        assert [p.label for p in plan_portfolio(defense=midre, prior=tiny_world.prior, adaptive="off")[0]] == ["gmi", "miface", "ppa"]
        forced = plan_portfolio(defense={"name": "nodef"}, prior=tiny_world.prior, adaptive="on")[0]
        assert [p.label for p in forced] == ["gmi", "gmi+eot+bpda+ca", "miface", "ppa", "ppa+eot+bpda+ca"]
        with pytest.raises(ConfigError, match=r"adaptive must be one of auto, on, off, got 'yes'"):
            plan_portfolio(adaptive="yes")

    def test_an_option_reaches_only_the_attacks_that_know_it(self, tiny_world, monkeypatch):
        from midefend.attacks import registry
        from midefend.attacks.nes import NESAttack

        monkeypatch.setitem(registry._ATTACKS, "nes", NESAttack)  # the fixture's registry, not the module-level one
        planned, _ = plan_portfolio(prior=tiny_world.prior, options={"per_class": 1, "query_budget": 100})
        budgets = {p.label: p.build().options.get("query_budget", "absent") for p in planned}
        assert budgets == {"gmi": "absent", "miface": "absent", "nes": 100, "ppa": "absent"}

    def test_an_option_no_planned_attack_knows_is_refused(self, tiny_world, tmp_path):
        # --attack ppa --query-budget 100 would otherwise run PPA and drop the budget without a word
        with pytest.raises(ConfigError, match=r"^option 'query_budget' applies to none of the planned attacks \(ppa\)$"):
            plan_portfolio(attack="ppa", prior=tiny_world.prior, options={"per_class": 1, "query_budget": 100})
        result = _verify(tiny_world, tmp_path / "out", "--attack", "ppa", "--public", "some/folder")
        assert result.exit_code == 1, result.output  # a valid command line whose options cannot apply: a run error
        assert "option 'public' applies to none of the planned attacks (ppa)" in result.output
        assert not (tmp_path / "out").exists()

    def test_fast_preset(self, tiny_world):
        planned, _ = plan_portfolio(attack="ppa", prior=tiny_world.prior, fast=True, options={"per_class": 3})
        ppa = planned[0].build()
        assert ppa.preset == "fast" and ppa.options["candidates"] == 3 and ppa.options["selection_augs"] == 16


class TestAggregate:
    def test_strongest_takes_the_first_of_equals(self):
        rows = [{"name": n, "metrics": {"attack_acc_top1": a}} for n, a in (("a", 0.2), ("b", 0.5), ("c", 0.5))]
        assert strongest(rows)["name"] == "b"

    def test_one_run_shows_the_class_std(self):
        m = combine_runs([{"attack_acc_top1": 0.5, "attack_acc_top1_std": 0.3, "attack_acc_top5": 1.0, "attack_acc_top5_std": 0.0}])
        assert m["std_over"] == "classes" and m["attack_acc_top1_std"] == 0.3 and m["attack_acc_top1_std_runs"] is None


class TestVerifyPortfolio:
    def test_headline_is_the_strongest_row(self, tiny_world, tmp_path):
        out = tmp_path / "run"
        result = _verify(tiny_world, out, "--adaptive", "on")
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        rows = report["attacks"]
        assert [r["name"] for r in rows] == ["gmi", "gmi+eot+bpda+ca", "miface", "ppa", "ppa+eot+bpda+ca"]
        best = max(rows, key=lambda r: r["metrics"]["attack_acc_top1"])  # max keeps the first of equals
        assert report["strongest_attack"] == best["name"]
        assert report["metrics"] == best["metrics"] and report["attack"] == best["config"]
        for row in rows:
            assert {"name", "adaptive", "threat_model", "metrics", "seconds", "queries"} <= set(row)
            assert row["adaptive"] == ("+" in row["name"]) and row["threat_model"] == "white-box"
            assert (out / row["grid"]).is_file()
            assert (out / "attacks" / row["name"] / "attack.json").is_file()
            assert isinstance(row["metrics"]["target_acc_top1"], float)
        md = (out / "report.md").read_text().splitlines()
        assert md[2] == f"**Verdict: {report['verdict']}.**"
        assert report["verdict"].startswith(f"strongest attack {best['name']} (white-box")
        assert "verdict: strongest attack" in result.output
        assert sum(line.startswith("| ppa") for line in md) == 2  # the per-attack table

    def test_repeats_give_the_std_over_runs(self, tiny_world, tmp_path):
        out = tmp_path / "rep"
        result = _verify(tiny_world, out, "--attack", "miface", "--repeats", "2", "--classes", "0-1")
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        (row,) = report["attacks"]
        m, runs = row["metrics"], row["runs"]
        assert [r["seed"] for r in runs] == [0, 1] and m["std_over"] == "runs" and m["runs"] == 2
        assert m["attack_acc_top1"] == pytest.approx(statistics.fmean(r["attack_acc_top1"] for r in runs))
        assert m["attack_acc_top1_std"] == pytest.approx(statistics.pstdev(r["attack_acc_top1"] for r in runs))
        assert "std over 2 runs" in (out / "report.md").read_text()
        from safetensors.torch import load_file

        a, b = (load_file(str(out / "attacks" / "miface" / f"run{i}" / "class_00000.safetensors"))["images"] for i in (0, 1))
        assert not torch.equal(a, b)

    def test_dry_run_prints_the_cost_and_writes_nothing(self, tiny_world, tmp_path):
        out = tmp_path / "dry"
        result = _verify(tiny_world, out, "--attack", "ppa", "--dry-run", "--classes", "0-2")
        assert result.exit_code == 0, result.output
        assert not out.exists()
        # 3 classes x 2 candidates x 2 steps = 12 optimisation images; selection 3 x 2 x (100 + 1) = 606,
        # init 2000 latents x 2 (image and its mirror) = 4000 forward-only.
        assert "ppa" in result.output and "12 images forward+backward" in result.output
        assert "4,606 forward only" in result.output
        assert "estimated attack time: about" in result.output
