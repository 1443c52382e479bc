"""harden() and check_hardened(): lookup, replacement, report, refusals, rebuild recipe, warm start."""

from __future__ import annotations

import json
import warnings

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from conftest import devices

from midefend import AlreadyHardenedError, ConfigError, HardenError, HeadNotFoundError, LowRankTanhHead
from midefend.defenses.surgery import HARDENING_ATTR, HardenReport, check_hardened, harden, hardened_heads


# The data-free warm start warns (tested in TestSvdWarmStart); most tests here do not calibrate.
pytestmark = pytest.mark.filterwarnings("ignore:harden\\(init='svd'\\) without calibration data")


def _resnet(num_classes: int = 10) -> nn.Module:
    return torchvision.models.resnet18(num_classes=num_classes)


class _Plain(nn.Module):
    """A model that neither timm nor torchvision knows: its head is found only through head=."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU())
        self.out = nn.Linear(16, 5)
        self.conv_out = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        return self.out(self.body(x))


def _relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


class TestHardenReplacesHead:
    def test_torchvision_resnet_in_place(self):
        model = _resnet()
        old_fc = model.fc
        report = harden(model, rank=4)
        assert isinstance(model.fc, LowRankTanhHead) and model.fc is not old_fc
        assert report.model is model
        assert report.to_dict() == {
            "model_class": "ResNet",
            "rank": 4,
            "activation": "tanh",
            "norm": True,
            "init": "svd",
            "head_paths": ["fc"],
            "heads": [{"path": "fc", "in_features": 512, "num_classes": 10, "rank": 4}],
        }
        assert getattr(model, HARDENING_ATTR) == json.loads(json.dumps(report.to_dict()))
        assert str(report).splitlines() == [
            "hardened ResNet: rank 4, tanh, norm=True, init=svd",
            "  fc: Linear(512, 10) -> rank 4",
        ]

    def test_copy_leaves_original_untouched(self):
        model = _resnet()
        report = harden(model, rank=3, copy=True, activation="sigmoid", norm=False)
        assert isinstance(model.fc, nn.Linear) and not hasattr(model, HARDENING_ATTR)
        hardened = report.model
        assert hardened is not model and isinstance(hardened.fc, LowRankTanhHead)
        assert hardened.fc.config() == {"in_features": 512, "num_classes": 10, "rank": 3, "activation": "sigmoid", "norm": False, "bias": True}
        assert hardened_heads(model) == {}
        with pytest.raises(HardenError, match=r"^ResNet is not hardened: it has no LowRankTanhHead \(use midefend.harden\)$"):
            check_hardened(model)

    def test_keeps_dtype_and_training_flag(self):
        model = _resnet().double().eval()
        harden(model, rank=2)
        assert not model.fc.training
        assert {p.dtype for p in model.fc.parameters()} == {torch.float64}
        assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64

    @pytest.mark.parametrize("device", devices())
    def test_keeps_device_with_calibration_on_cpu(self, device):
        model = _resnet().to(device).eval()
        harden(model, rank=2, calibration=torch.randn(4, 3, 32, 32))  # moved to the model's device
        assert {p.device.type for p in model.fc.parameters()} == {torch.device(device).type}
        assert model(torch.randn(2, 3, 32, 32, device=device)).shape == (2, 10)

    def test_explicit_head_on_a_plain_model(self):
        model = _Plain()
        report = harden(model, rank=2, head="out", init="random")
        assert report.head_paths == ["out"] and isinstance(model.out, LowRankTanhHead)
        assert model(torch.randn(3, 12)).shape == (3, 5)

    def test_explicit_head_list_inside_sequential(self):
        model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 6))
        report = harden(model, rank=2, head=("0", "2"))
        assert report.head_paths == ["0", "2"]
        assert isinstance(model[0], LowRankTanhHead) and isinstance(model[2], LowRankTanhHead)
        assert model(torch.randn(4, 12)).shape == (4, 6)

    def test_timm_distilled_deit_has_two_heads(self):
        model = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=6, img_size=32)
        report = harden(model, rank=3)
        assert report.head_paths == ["head", "head_dist"]
        assert sorted(check_hardened(model)) == ["head", "head_dist"]

    def test_inception_and_googlenet_aux_heads(self):
        inception = torchvision.models.inception_v3(num_classes=5, init_weights=False)
        assert harden(inception, rank=2, init="random").head_paths == ["fc", "AuxLogits.fc"]
        no_aux = torchvision.models.inception_v3(num_classes=5, aux_logits=False, init_weights=False)
        assert harden(no_aux, rank=2, init="random").head_paths == ["fc"]
        googlenet = torchvision.models.googlenet(num_classes=5, init_weights=False)
        assert harden(googlenet, rank=2, init="random").head_paths == ["fc", "aux1.fc2", "aux2.fc2"]

    def test_wrapped_models_are_looked_through(self):
        model = _resnet()
        wrapped = nn.DataParallel(model)  # on a CPU-only machine it just holds .module
        report = harden(wrapped, rank=2)
        assert report.head_paths == ["fc"] and isinstance(model.fc, LowRankTanhHead)
        assert list(check_hardened(wrapped)) == ["fc"]

    def test_pretrained_cfg_convention_for_custom_models(self):
        model = _Plain()
        model.pretrained_cfg = {"classifier": "out"}
        assert harden(model, rank=2).head_paths == ["out"]


class TestHardenRefuses:
    def test_squeezenet_conv_head(self):
        model = torchvision.models.squeezenet1_0(num_classes=10)
        with pytest.raises(HeadNotFoundError, match=r"SqueezeNet.classifier.1 is of type Conv2d, not an nn.Linear classifier"):
            harden(model, rank=4)

    def test_timm_conv_head_and_removed_head(self):
        with pytest.raises(HeadNotFoundError, match=r"DLA.fc is of type Conv2d, not an nn.Linear"):
            harden(timm.create_model("dla34", num_classes=10), rank=4)
        with pytest.raises(HeadNotFoundError, match=r"ResNet.fc is of type Identity, not an nn.Linear"):
            harden(timm.create_model("resnet10t", num_classes=0), rank=4)

    def test_unknown_model_without_head(self):
        with pytest.raises(HeadNotFoundError, match=r"cannot locate the classifier head of _Plain: .*pass head='dotted.path'"):
            harden(_Plain(), rank=2)

    def test_head_path_missing_or_not_linear(self):
        with pytest.raises(HeadNotFoundError, match=r"_Plain has no submodule 'head.fc' to harden"):
            harden(_Plain(), rank=2, head="head.fc")
        with pytest.raises(HeadNotFoundError, match=r"_Plain.conv_out is of type Conv2d"):
            harden(_Plain(), rank=2, head="conv_out")

    @pytest.mark.parametrize(
        "rank, match",
        [
            (0, r"rank must be a positive integer, got 0"),
            (True, r"rank must be a positive integer, got True"),
            (2.5, r"rank must be a positive integer, got 2.5"),
            (11, r"rank must be in \[1, 10\] for ResNet.fc \(min\(in_features=512, num_classes=10\)\), got 11"),
        ],
    )
    def test_bad_rank_changes_nothing(self, rank, match):
        model = _resnet()
        with pytest.raises(ConfigError, match=match):
            harden(model, rank=rank)
        assert isinstance(model.fc, nn.Linear) and not hasattr(model, HARDENING_ATTR)

    def test_second_head_invalid_leaves_first_untouched(self):
        model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
        with pytest.raises(ConfigError, match=r"rank must be in \[1, 3\] for Sequential.2"):
            harden(model, rank=5, head=["0", "2"])
        assert isinstance(model[0], nn.Linear)

    def test_full_rank_warns(self):
        with pytest.warns(UserWarning, match=r"rank=10 equals min\(in_features=512, num_classes=10\)"):
            harden(_resnet(), rank=10)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"activation": "elu"}, r"activation must be one of identity, relu, sigmoid, tanh, got 'elu'"),
            ({"norm": "yes"}, r"norm must be True or False, got 'yes'"),
            ({"init": "xavier"}, r"init must be one of svd, random, got 'xavier'"),
            ({"copy": 1}, r"copy must be True or False, got 1"),
            ({"allow_rehardening": None}, r"allow_rehardening must be True or False, got None"),
            ({"head": 3}, r"head must be a dotted path like 'fc' or a non-empty list of them, got 3"),
            ({"head": []}, r"head must be a dotted path like 'fc' or a non-empty list of them, got \[\]"),
            ({"head": ["fc", "fc"]}, r"head lists a path twice: \['fc', 'fc'\]"),
            ({"linear_range": -1.0}, r"linear_range must be a positive finite number, got -1.0"),
            ({"linear_range": 0, "init": "random"}, r"linear_range must be a positive finite number, got 0"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ConfigError, match=match):
            harden(_resnet(), rank=2, **kwargs)

    def test_not_a_module(self):
        with pytest.raises(ConfigError, match=r"model must be a torch.nn.Module, got str 'resnet18'"):
            harden("resnet18", rank=2)
        with pytest.raises(ConfigError, match=r"model must be a torch.nn.Module, got int 3"):
            check_hardened(3)
        with pytest.raises(ConfigError, match=r"model must be a torch.nn.Module, got int 3"):
            hardened_heads(3)


class TestRehardening:
    def test_already_hardened_is_refused(self):
        model = _resnet()
        harden(model, rank=4)
        with pytest.raises(AlreadyHardenedError, match=r"ResNet is already hardened \(LowRankTanhHead at fc\); pass allow_rehardening=True"):
            harden(model, rank=2)

    def test_rehardening_with_random_init(self):
        model = _resnet()
        harden(model, rank=4)
        report = harden(model, rank=2, init="random", allow_rehardening=True)
        assert model.fc.rank == 2 and report.heads[0].rank == 2
        assert getattr(model, HARDENING_ATTR)["rank"] == 2

    def test_rehardening_needs_random_init(self):
        model = _resnet()
        harden(model, rank=4)
        with pytest.raises(HardenError, match=r"ResNet.fc is already a LowRankTanhHead: re-hardening needs init='random'"):
            harden(model, rank=2, allow_rehardening=True)


class TestCheckHardened:
    def test_reports_paths_and_configs(self):
        model = timm.create_model("resnet10t", num_classes=8)
        assert hardened_heads(model) == {}
        with pytest.raises(HardenError, match=r"^ResNet is not hardened: it has no LowRankTanhHead \(use midefend.harden\)$"):
            check_hardened(model)
        harden(model, rank=3, activation="relu")
        assert check_hardened(model) == {
            "fc": {"in_features": 512, "num_classes": 8, "rank": 3, "activation": "relu", "norm": True, "bias": True}
        }


class TestRebuildRecipe:
    """What checkpoints do: base model -> harden(init="random", head=recorded paths) -> strict load."""

    @pytest.mark.parametrize("source", ["timm", "torchvision"])
    def test_rebuild_from_recorded_config(self, source):
        def build():
            if source == "timm":
                return timm.create_model("deit_tiny_distilled_patch16_224", num_classes=6, img_size=32)
            return _resnet(6)

        model = build()
        harden(model, rank=3, activation="tanh", norm=True)
        with torch.no_grad():  # make the BatchNorm statistics non-trivial
            for head in (m for m in model.modules() if isinstance(m, LowRankTanhHead)):
                head.norm.running_mean.normal_()
        recorded = json.loads(json.dumps(getattr(model, HARDENING_ATTR)))

        rebuilt = build()
        harden(rebuilt, rank=recorded["rank"], activation=recorded["activation"], norm=recorded["norm"], init="random", head=recorded["head_paths"])
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


class TestSvdWarmStart:
    """At full rank the warm start reproduces the model: tanh is kept in its linear regime
    (RMS 0.1 at its input, ~1.3% deviation at most) and BatchNorm holds the features' statistics.
    Tolerance: 3% relative RMS of the logits on random inputs."""

    @pytest.mark.parametrize(
        "build",
        [
            pytest.param(lambda: _resnet(10), id="torchvision-resnet18"),
            pytest.param(lambda: timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32), id="timm-vit"),
        ],
    )
    @pytest.mark.parametrize("calibrate", [False, True])
    def test_full_rank_logits_close(self, build, calibrate):
        model = build().eval()
        x = torch.randn(32, 3, 32, 32)
        with torch.no_grad():
            reference = model(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # full rank: "not low-rank"
            hardened = harden(model, rank=10, copy=True, calibration=x if calibrate else None).model
        x_new = torch.randn(32, 3, 32, 32)
        with torch.no_grad():
            assert _relative_rms(hardened(x), reference) < 0.03
            assert _relative_rms(hardened(x_new), model(x_new)) < 0.03

    def test_warns_without_calibration(self):
        with pytest.warns(UserWarning, match=r"harden\(init='svd'\) without calibration data for fc: the warm start assumes standardised"):
            harden(_resnet(10), rank=4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            harden(_resnet(10), rank=4, init="random")
            harden(_resnet(10), rank=4, calibration=torch.randn(4, 3, 32, 32))

    def test_calibration_sets_batchnorm_statistics(self):
        model = _resnet(10).eval()
        x = torch.randn(16, 3, 32, 32)
        features = {}
        handle = model.fc.register_forward_pre_hook(lambda m, args: features.setdefault("x", args[0]))
        with torch.no_grad():
            model(x)
        handle.remove()
        harden(model, rank=4, calibration=[x[:8], x[8:]])
        torch.testing.assert_close(model.fc.norm.running_mean, features["x"].mean(0))

    def test_calibration_keeps_modes_and_converts_dtype(self):
        model = _resnet(10).train()
        model.layer1.eval()  # e.g. a frozen stage
        harden(model, rank=4, calibration=torch.randn(4, 3, 32, 32, dtype=torch.float64))
        assert model.training and not model.layer1.training and model.layer2.training and model.fc.training

    @pytest.mark.parametrize(
        "calibration, match",
        [
            ("images", r"calibration must be a float tensor of model inputs, a list of them, an \(inputs, labels\) pair or a DataLoader of such batches, got str$"),
            ([], r"^calibration is empty: give at least one batch of training inputs$"),
            (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), r"calibration must be a float tensor .*got a torch.uint8 tensor"),
            (torch.randn(2, 5, 32, 32), r"calibration could not be run through ResNet: .*"),
        ],
    )
    def test_bad_calibration(self, calibration, match):
        model = _resnet(10)
        with pytest.raises(ConfigError, match=match):
            harden(model, rank=4, calibration=calibration)
        assert isinstance(model.fc, nn.Linear) and model.training

    def test_random_init_is_not_a_warm_start(self):
        model = _resnet(10).eval()
        x = torch.randn(8, 3, 32, 32)
        with torch.no_grad():
            reference = model(x)
        hardened = harden(model, rank=9, init="random", copy=True).model
        with torch.no_grad():
            assert _relative_rms(hardened(x), reference) > 0.5


class TestHardenReportType:
    def test_report_is_a_dataclass_without_model_in_dict(self):
        report = harden(_resnet(), rank=2)
        assert isinstance(report, HardenReport)
        assert "model" not in report.to_dict()
        json.dumps(report.to_dict())
