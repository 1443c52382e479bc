"""The defense registry, the shared TrainSettings, and each baseline trained end to end on tiny data."""

from __future__ import annotations

import copy

import pytest
import torch

from midefend.architectures import build_model
from midefend.data import ClassificationData
from midefend.defenses.baselines import VariationalBottleneckHead, freeze_leading
from midefend.errors import ConfigError
from midefend.io import load_checkpoint
from midefend.training import train_classifier, train_target
from midefend.training.recipes import DefenseRecipe, get_defense, list_defenses, register_defense
from midefend.training.settings import TrainSettings

TINY_NET = {"widths": (8, 16, 32), "depths": (1, 1, 1)}
ALL = ["bido", "calor", "mid", "midre", "midre+calor", "nls", "nodef", "tl"]


@pytest.fixture(scope="module")
def tiny() -> tuple[ClassificationData, ClassificationData]:
    """scikit-learn digits 0-3 at 16x16: 12 training and 4 test images per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = torch.from_numpy(digits.target) < 4
    images = torch.from_numpy(digits.images).float()[keep].unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(digits.target)[keep].long()
    data = ClassificationData(images.clamp(0, 1).contiguous(), labels, [str(d) for d in range(4)], name="sk-digits")
    small = data.subset(torch.cat([torch.nonzero(labels == c).flatten()[:16] for c in range(4)]))
    return small.split(train_per_class=12, seed=0)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("midefend/resnet_small", num_classes=4, in_chans=1, **TINY_NET)


FAST = {"lr": 3e-3, "batch_size": 16, "progress": False, "augment": "none", "channels_last": False}


class TestRegistry:
    def test_names(self):
        assert list_defenses() == ALL
        assert list_defenses(include="mid*") == ["mid", "midre", "midre+calor"]
        assert list_defenses(exclude=["*calor", "no*"]) == ["bido", "mid", "midre", "nls", "tl"]

    def test_unknown_name_lists_known_ones(self):
        with pytest.raises(ConfigError, match=r"^unknown defense 'dp'; known defenses: bido, calor, mid, midre, midre\+calor, nls, nodef, tl$"):
            get_defense("dp")
        with pytest.raises(ConfigError, match="unknown defense 'dp'"):
            data = ClassificationData(torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 3]), list("abcd"))
            train_classifier(tiny_model(), data, defense="dp")

    def test_registering_twice_raises(self):
        with pytest.raises(ConfigError, match=r"defense 'nls' is already registered \(by NegativeLabelSmoothing\)"):
            register_defense("nls")(type("Again", (DefenseRecipe,), {}))
        with pytest.raises(ConfigError, match="defense name must be a non-empty string"):
            register_defense("")

    def test_recipes_answer_the_loop_questions(self):
        assert [n for n in ALL if get_defense(n).low_rank_head] == ["calor", "midre+calor"]
        assert [n for n in ALL if get_defense(n).fine_tunes] == ["calor", "midre+calor", "tl"]
        assert {n: get_defense(n).knobs for n in ("nls", "mid", "bido", "tl", "midre")} == {
            "nls": ("smoothing",), "mid": ("beta",), "bido": ("hsic_x", "hsic_y"), "tl": ("freeze",), "midre": ("erase_max",),
        }  # fmt: skip

    def test_stage_lists(self):
        s = TrainSettings(epochs=4, lr=1e-3, calor_lr=1e-4)
        assert [(st.name, st.loss) for st in get_defense("nls").stages(s.replace(defense="nls"))] == [("train", "nls")]
        assert [(st.name, st.lr) for st in get_defense("tl").stages(s.replace(pretrain_epochs=3))] == [("pretrain", 1e-3), ("tune", 1e-4)]
        assert [st.name for st in get_defense("tl").stages(s)] == ["tune"]
        assert [st.name for st in get_defense("calor").stages(s.replace(pretrain_epochs=2))] == ["pretrain", "head", "ca"]

    @pytest.mark.parametrize(
        ("defense", "setting", "message"),
        [
            ("nls", {"smoothing": 1.0}, r"smoothing must be a number in \[-1, 1\)"),
            ("mid", {"beta": -0.1}, "beta must be a non-negative number, got -0.1"),
            ("mid", {"bottleneck_dim": 0}, "bottleneck_dim must be a positive integer, got 0"),
            ("bido", {"hsic_y": float("nan")}, "hsic_y must be a non-negative number"),
            ("tl", {"freeze": 1.2}, r"freeze must be a fraction in \[0, 1\)"),
            ("nls", {"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ],
    )
    def test_knobs_are_checked(self, defense, setting, message):
        with pytest.raises(ConfigError, match=message):
            get_defense(defense).stages(TrainSettings(defense=defense, **setting))


class TestSettings:
    def test_unknown_setting(self):
        with pytest.raises(ConfigError, match="unknown training setting\\(s\\): epoch, lr_max; known: defense, epochs, "):
            TrainSettings.build(epoch=3, lr_max=1.0)
        with pytest.raises(ConfigError, match="settings must be a TrainSettings, got dict"):
            TrainSettings.build({"epochs": 3})

    def test_keywords_and_settings_train_the_same_model(self, tiny):
        train, _ = tiny
        a = train_classifier(tiny_model(), train, epochs=1, **FAST)
        c = train_classifier(tiny_model(), train, None, TrainSettings(epochs=5, **FAST), epochs=1)  # keywords override
        for other in (c,):
            for (name, p), q in zip(a.model.state_dict().items(), other.model.state_dict().values()):
                assert torch.equal(p, q), name
        assert a.config == c.config


class TestBaselinesTrain:
    @pytest.mark.parametrize(
        ("defense", "knob", "record"),
        [
            ("nls", {"smoothing": -0.1}, {"name": "nls", "smoothing": -0.1, "warmup": 0.5, "ramp_end": 0.75}),
            ("mid", {"beta": 0.05}, {"name": "mid", "beta": 0.05, "bottleneck_dim": 128}),
            ("bido", {"hsic_x": 0.1, "hsic_y": 1.0}, {"name": "bido", "hsic_x": 0.1, "hsic_y": 1.0, "sigma": 5.0, "estimator": "normalized"}),
            ("tl", {"freeze": 0.6}, {"name": "tl", "freeze": 0.6, "tune_epochs": 1}),
        ],
    )
    def test_train_save_load(self, tiny, tmp_path, defense, knob, record):
        out = tmp_path / f"{defense}.safetensors"
        result = train_target(tiny, defense=defense, epochs=1, calor_epochs=1, out=out, **FAST, **knob)
        assert result.defense == record
        ckpt = load_checkpoint(out)
        assert ckpt.defense == record
        assert ckpt.arch == ("midefend/vib" if defense == "mid" else "midefend/resnet_small")
        x = ckpt.normalize(tiny[1].images)
        torch.testing.assert_close(ckpt.model(x), result.model(x))  # the file rebuilds the trained network
        assert [row["stage"] for row in result.history] == (["pretrain", "tune"] if defense == "tl" else ["train"])

    def test_mid_head_is_rebuilt_from_metadata(self, tiny, tmp_path):
        out = tmp_path / "mid.safetensors"
        looped = train_classifier(tiny_model(), tiny[0], defense="mid", epochs=1, bottleneck_dim=7, **FAST).model
        assert isinstance(looped.fc, VariationalBottleneckHead) and looped.fc.dim == 7  # the loop's own surgery
        train_target(tiny, defense="mid", epochs=1, bottleneck_dim=7, out=out, **FAST)
        ckpt = load_checkpoint(out)
        heads = [m for m in ckpt.model.modules() if isinstance(m, VariationalBottleneckHead)]
        assert len(heads) == 1 and heads[0].dim == 7 and ckpt.arch_kwargs["dim"] == 7
        assert ckpt.arch_kwargs["base"] == "midefend/resnet_small" and ckpt.defense["bottleneck_dim"] == 7

    def test_tl_leaves_frozen_parameters_bit_identical(self, tiny):
        train, _ = tiny
        model = tiny_model()
        before = copy.deepcopy(model.state_dict())
        frozen = set(freeze_leading(copy.deepcopy(model), 0.5))
        assert frozen and "fc.weight" not in frozen
        result = train_classifier(model, train, defense="tl", freeze=0.5, epochs=1, **FAST)
        params = dict(result.model.named_parameters())
        for name in params:
            assert torch.equal(params[name], before[name]) == (name in frozen), name
        assert all(p.requires_grad for p in result.model.parameters())  # unfrozen again after training

    def test_nls_schedule_reaches_the_loop(self, tiny, monkeypatch):
        from midefend.defenses.baselines import nls

        seen = []
        original = nls.NegativeLabelSmoothingLoss.set_epoch

        def spy(self, epoch, epochs):
            original(self, epoch, epochs)
            seen.append(self.current)

        monkeypatch.setattr(nls.NegativeLabelSmoothingLoss, "set_epoch", spy)
        train_classifier(tiny_model(), tiny[0], defense="nls", epochs=4, **FAST)
        assert seen == [0.0, 0.0, -0.05, -0.05]


def test_cli_trains_a_baseline_and_lists_the_registry(orl_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from midefend.cli import app

    monkeypatch.setenv("MIDEFEND_ORL_DIR", str(orl_dir))
    runner = CliRunner()
    out = tmp_path / "nls.safetensors"
    args = ["train", "--data", "orl", "--size", "16", "--epochs", "1", "--defense", "nls", "--smoothing", "-0.1", "--out", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out)
    assert ckpt.defense == {"name": "nls", "smoothing": -0.1, "warmup": 0.5, "ramp_end": 0.75}
    assert ckpt.extra["training"]["knobs"] == {"smoothing": -0.1}
    helptext = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "bido, calor, mid, midre, midre+calor, nls, nodef, tl" in helptext
