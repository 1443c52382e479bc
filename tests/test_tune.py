"""``tune`` on synthetic trade-offs where the answer is known (fake trainer and scorer), and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from midefend.cli import app
from midefend.data import ClassificationData
from midefend.errors import ConfigError
from midefend.evaluation.tune import Row, choose, param_name, parse_values, tune


def _data(n_per_class: int = 10, classes: int = 4, size: int = 8) -> ClassificationData:
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return ClassificationData(torch.rand(len(labels), 1, size, size), labels, [f"c{i}" for i in range(classes)], name="toy")


# rank -> (held-out accuracy, attack accuracy): lower rank protects more and costs more accuracy
TRADEOFF = {None: (0.95, 0.60), 4: (0.70, 0.05), 8: (0.905, 0.15), 12: (0.93, 0.30), 16: (0.95, 0.50)}


class FakeTrainer:
    def __init__(self):
        self.calls = []

    def __call__(self, s, fit, heldout):
        self.calls.append((s.defense, s.rank, len(fit), len(heldout)))
        return None if s.defense == "nodef" else s.rank


def fake_scorer(model, fit, heldout):
    accuracy, attack = TRADEOFF[model]
    return {"accuracy": accuracy, "attack_accuracy": attack, "note": 1.0}


class TestChoose:
    def test_picks_strongest_within_budget(self):
        trainer = FakeTrainer()
        result = tune(
            _data(), defense="calor", param="rank", values=[4, 8, 12, 16], max_acc_drop=5, trainer=trainer, scorer=fake_scorer
        )
        assert result.chosen.value == 8  # 90.5 % >= 95 - 5; rank 4 protects more but costs 25 points
        assert [r.value for r in result.rows] == [4, 8, 12, 16] and result.nodef.value is None
        assert result.rows[0].extra == {"note": 1.0}
        # NoDef first, then each value; every model sees the same fit/held-out split of the TRAINING data
        assert trainer.calls == [
            ("nodef", None, 28, 12),
            ("calor", 4, 28, 12),
            ("calor", 8, 28, 12),
            ("calor", 12, 28, 12),
            ("calor", 16, 28, 12),
        ]

    def test_budget_moves_the_choice(self):
        kwargs = {"defense": "calor", "param": "rank", "values": [4, 8, 12, 16], "trainer": FakeTrainer(), "scorer": fake_scorer}
        assert tune(_data(), max_acc_drop=30, **kwargs).chosen.value == 4
        assert tune(_data(), max_acc_drop=2, **kwargs).chosen.value == 12
        assert tune(_data(), max_acc_drop=0, **kwargs).chosen.value == 16

    def test_nothing_within_budget(self):
        nodef = Row(None, 0.95, 0.6)
        assert choose(nodef, [Row(4, 0.5, 0.0)], max_acc_drop=5) is None

    def test_ties_prefer_accuracy(self):
        nodef = Row(None, 0.95, 0.6)
        assert choose(nodef, [Row(1, 0.91, 0.2), Row(2, 0.94, 0.2)], max_acc_drop=5).value == 2

    def test_writes_json_and_png(self, tmp_path):
        result = tune(
            _data(),
            defense="calor",
            param="rank",
            values=[4, 8],
            trainer=FakeTrainer(),
            scorer=fake_scorer,
            out_dir=tmp_path / "t",
        )
        record = json.loads((tmp_path / "t" / "tune.json").read_text())
        assert record["chosen_value"] == 8 and record["split"]["test_set_used"] is False
        assert [r["value"] for r in record["rows"]] == [4, 8] and record["nodef"]["accuracy"] == 0.95
        assert (tmp_path / "t" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert result.files["json"].endswith("tune.json")


class TestArguments:
    def test_param_and_values(self):
        assert param_name("erase-max") == "erase_max"
        assert parse_values("4, 8,12") == [4, 8, 12] and parse_values("0.4,0.8") == [0.4, 0.8]
        with pytest.raises(ConfigError, match="--param 'width' is not a training setting"):
            param_name("width")
        with pytest.raises(ConfigError, match="--values must be numbers separated by commas, got '4,x'"):
            parse_values("4,x")
        with pytest.raises(ConfigError, match="--values must list distinct numbers"):
            parse_values("4,4")

    def test_bad_value_fails_before_training(self):
        trainer = FakeTrainer()
        with pytest.raises(ConfigError, match="erase_max must lie in"):
            tune(_data(), defense="midre", param="erase-max", values=[0.4, 2.0], trainer=trainer, scorer=fake_scorer)
        assert trainer.calls == []
        with pytest.raises(ConfigError, match="unknown defense 'x'"):
            tune(_data(), defense="x", param="rank", values=[4], trainer=trainer, scorer=fake_scorer)


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["tune", "--data", "digits", "--defense", "nope", "--param", "rank", "--values", "4", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "unknown defense 'nope'; known defenses: bido, calor" in result.stderr
    result = runner.invoke(
        app,
        ["tune", "--data", "digits", "--defense", "calor", "--param", "rank", "--values", "4,a", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 1 and "--values must be numbers separated by commas" in result.stderr
    assert not (tmp_path / "o").exists()


def test_default_trainer_and_scorer_run_end_to_end(tmp_path):
    """The real path (no fakes) on tiny data: NoDef, TL from this run's NoDef, MI-Face scored by an evaluator."""
    from midefend.evaluation.tune import DefaultTrainer, MIFaceScorer
    from midefend.training.settings import TrainSettings

    torch.manual_seed(0)
    data = _data(n_per_class=6, classes=3, size=32)  # vgg_small (the judge) pools four times
    settings = TrainSettings(epochs=1, batch_size=4, augment="none", channels_last=False, calor_lr=1e-3)
    trainer = DefaultTrainer(arch_kwargs={"widths": (8, 16), "depths": (1, 1)})
    result = tune(
        data, defense="tl", param="freeze", values=[0.3], settings=settings, holdout=0.34, trainer=trainer,
        scorer=MIFaceScorer(steps=2, eval_epochs=1), out_dir=tmp_path,
    )  # fmt: skip
    for row in (result.nodef, *result.rows):
        assert 0.0 <= row.accuracy <= 1.0 and 0.0 <= row.attack_accuracy <= 1.0
        assert row.accuracy * 3 == pytest.approx(round(row.accuracy * 3))  # one held-out image per class (2 of 6 -> 6 in all)
    assert result.split["n_heldout"] == 6 and result.split["n_fit"] == 12
    assert json.loads((tmp_path / "tune.json").read_text())["defense"] == "tl"


class TestScorers:
    def test_default_scorer_is_the_portfolio(self, monkeypatch):
        from midefend.evaluation import tune as tune_module

        seen = []

        def fake_call(self, model, fit, heldout):
            seen.append(type(self).__name__)
            return fake_scorer(model, fit, heldout)

        monkeypatch.setattr(tune_module.PortfolioScorer, "__call__", fake_call)
        result = tune(_data(), defense="calor", param="rank", values=[8], trainer=FakeTrainer())
        assert seen == ["PortfolioScorer", "PortfolioScorer"] and result.chosen.value == 8

    def test_cli_scorer_choice(self, tmp_path, monkeypatch):
        """``--scorer`` reaches tune: the portfolio by default with the attack options, MI-Face on request."""
        from midefend.evaluation import tune as tune_module

        captured = {}

        def fake_tune(train, **kwargs):
            captured["scorer"] = kwargs["scorer"]
            nodef, row = Row(None, 0.9, 0.5), Row(4, 0.9, 0.2)
            return tune_module.TuneResult("calor", "rank", 5.0, nodef, [row], row, {})

        monkeypatch.setattr(tune_module, "tune", fake_tune)
        base = [
            "tune",
            "--data",
            "digits",
            "--defense",
            "calor",
            "--param",
            "rank",
            "--values",
            "4",
            "--out",
            str(tmp_path / "o"),
        ]
        result = CliRunner().invoke(app, base + ["--attack-classes", "0-2", "--attack-steps", "7", "--prior", "none"])
        assert result.exit_code == 0, result.output
        scorer = captured["scorer"]
        assert isinstance(scorer, tune_module.PortfolioScorer)
        assert (scorer.classes, scorer.steps, scorer.per_class, scorer.fast, scorer.prior_spec) == ("0-2", 7, 1, True, None)
        result = CliRunner().invoke(app, base + ["--scorer", "miface"])
        assert result.exit_code == 0, result.output
        assert isinstance(captured["scorer"], tune_module.MIFaceScorer) and captured["scorer"].steps == 100
        result = CliRunner().invoke(app, base + ["--scorer", "ppa"])
        assert result.exit_code == 1 and "--scorer must be portfolio or miface, got 'ppa'" in result.stderr

    def test_portfolio_scorer_takes_the_strongest_attack_end_to_end(self):
        """The real scorer on tiny data and a tiny prior: every planned attack runs, the adaptive one included."""
        from midefend.attacks.priors import DCGANGenerator, GenerativePrior
        from midefend.evaluation.tune import DefaultTrainer, PortfolioScorer
        from midefend.training.settings import TrainSettings

        torch.manual_seed(0)
        data = _data(n_per_class=6, classes=3, size=32)
        prior = GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16))
        settings = TrainSettings(epochs=1, batch_size=4, augment="none", channels_last=False)
        trainer = DefaultTrainer(arch_kwargs={"widths": (8, 16), "depths": (1, 1)})
        scorer = PortfolioScorer(prior=prior, steps=2, eval_epochs=1)
        result = tune(
            data,
            defense="midre",
            param="erase-max",
            values=[0.4],
            settings=settings,
            holdout=0.34,
            trainer=trainer,
            scorer=scorer,
        )
        nodef, midre = result.nodef.extra, result.rows[0].extra
        assert (
            set(nodef["attack_accuracy_by_attack"]) >= {"miface", "ppa"} and "ppa+eot" not in nodef["attack_accuracy_by_attack"]
        )
        assert "ppa+eot" in midre["attack_accuracy_by_attack"]  # the adaptive variant the defense record calls for
        for row in (result.nodef, *result.rows):
            assert row.attack_accuracy == max(row.extra["attack_accuracy_by_attack"].values())
            assert row.extra["attack_accuracy_by_attack"][row.extra["strongest_attack"]] == row.attack_accuracy
        with pytest.raises(ConfigError, match="threat model must be one of"):
            PortfolioScorer(threat_model="grey-box")
