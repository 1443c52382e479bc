"""The low-rank head's regime statistics (tanh pre-activation RMS, saturation, mean slope) and where they show."""

from __future__ import annotations

import doctest
import json
import math
import warnings

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from midefend.cli import app
from midefend.defenses import head_regime as head_regime_module
from midefend.defenses.head_regime import HeadRegime, head_regime, regime_record, warn_if_linear
from midefend.defenses.heads import LowRankTanhHead
from midefend.errors import ConfigError

# Pre-activations the hand-built head produces on INPUTS: one unit per column.
Z = torch.tensor([[0.0, 3.0], [1.0, -3.0], [-0.5, 2.5]], dtype=torch.float64)


def hand_head(activation: str = "tanh") -> nn.Module:
    """A head whose down projection copies the first two input features: z = x[:, :2]."""
    head = LowRankTanhHead(4, 3, rank=2, activation=activation, norm=False).double()
    with torch.no_grad():
        head.down.weight.copy_(torch.eye(2, 4))
        head.down.bias.zero_()
    return head


INPUTS = torch.cat([Z, torch.randn(3, 2, dtype=torch.float64)], dim=1)  # the last two features do not reach z


class TestHeadRegime:
    def test_tanh_statistics_exact(self):
        regime = head_regime(hand_head(), INPUTS)[""]
        values = Z.flatten().tolist()
        assert regime.pre_rms == pytest.approx(math.sqrt(sum(v * v for v in values) / 6), abs=1e-12)
        assert regime.saturated == pytest.approx(3 / 6)  # |3|, |-3|, |2.5| > 2
        assert regime.mean_slope == pytest.approx(sum(1 - math.tanh(v) ** 2 for v in values) / 6, abs=1e-12)
        assert regime.samples == 3 and regime.activation == "tanh"

    @pytest.mark.parametrize(
        "activation, slope",
        [
            ("identity", lambda v: 1.0),
            ("relu", lambda v: float(v > 0)),
            ("sigmoid", lambda v: (1 / (1 + math.exp(-v))) * (1 - 1 / (1 + math.exp(-v)))),
        ],
    )
    def test_slope_is_the_activations_derivative(self, activation, slope):
        regime = head_regime(hand_head(activation), INPUTS)[""]
        assert regime.mean_slope == pytest.approx(sum(slope(v) for v in Z.flatten().tolist()) / 6, abs=1e-12)

    def test_batches_and_pairs_give_the_same_result(self):
        whole = head_regime(hand_head(), INPUTS)[""]
        pairs = [(INPUTS[:2], torch.tensor([0, 1])), (INPUTS[2:], torch.tensor([2]))]
        for other in (head_regime(hand_head(), pairs)[""], head_regime(hand_head(), INPUTS, batch_size=1)[""]):
            assert other.to_dict() == pytest.approx(whole.to_dict(), abs=1e-12)

    def test_eval_mode_and_modes_restored(self):
        torch.manual_seed(0)
        head = LowRankTanhHead(4, 3, rank=2).double()
        head.norm.running_mean.fill_(10.0)  # eval mode uses these; a train-mode batch would not
        x = torch.randn(8, 4, dtype=torch.float64)
        model = nn.Sequential(nn.Identity(), head).train()
        regime = head_regime(model, x)["1"]
        z = head.down((x - 10.0) / math.sqrt(1 + head.norm.eps))
        assert regime.pre_rms == pytest.approx(z.pow(2).mean().sqrt().item(), rel=1e-9)
        assert model.training and head.norm.training
        assert head.norm.running_mean.eq(10.0).all()  # statistics untouched

    def test_hooks_removed(self):
        head = hand_head()
        head_regime(head, INPUTS)
        assert not head.act._forward_pre_hooks

    def test_errors(self):
        with pytest.raises(ConfigError, match=r"^Linear has no low-rank head \(harden it first\)$"):
            head_regime(nn.Linear(4, 3), INPUTS)
        with pytest.raises(ConfigError, match=r"^data must be a non-empty float tensor of model inputs, got a torch.int64"):
            head_regime(hand_head(), torch.ones(3, 4, dtype=torch.long))
        with pytest.raises(ConfigError, match=r"^data reached none of the model's low-rank heads$"):
            head_regime(hand_head(), [])

    def test_linear_warning(self):
        linear = HeadRegime("tanh", pre_rms=0.1, saturated=0.0, mean_slope=0.99, samples=10)
        saturated = HeadRegime("tanh", pre_rms=3.0, saturated=0.8, mean_slope=0.1, samples=10)
        identity = HeadRegime("identity", pre_rms=0.1, saturated=0.0, mean_slope=1.0, samples=10)
        with pytest.warns(UserWarning, match=r"^run: low-rank head 'fc' ends in its activation's linear regime \(tanh: pre-activation RMS 0.1,"):
            assert warn_if_linear({"fc": linear}, "run")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not warn_if_linear({"fc": saturated, "head": identity}, "run")

    def test_record(self):
        record = regime_record(hand_head(), INPUTS)
        assert set(record) == {""} and record[""]["saturated"] == 0.5

    def test_doctest(self):
        assert doctest.testmod(head_regime_module, raise_on_error=False).failed == 0


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    from midefend.architectures import build_model
    from midefend.defenses.surgery import harden
    from midefend.io.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = build_model("timm/test_resnet", num_classes=5, in_chans=1).eval()
    harden(model, rank=2, init="random")
    record = {"fc": {"activation": "tanh", "pre_rms": 0.5, "saturated": 0.25, "mean_slope": 0.75, "samples": 9}}
    path = tmp_path_factory.mktemp("regime") / "calor.safetensors"
    save_checkpoint(
        model, path, arch="timm/test_resnet", arch_kwargs={"in_chans": 1}, num_classes=5, input_size=(1, 32, 32),
        mean=(0.5,), std=(0.5,), defense={"name": "calor"}, extra={"head_regime": record},
    )  # fmt: skip
    return path


class TestInspectRegime:
    def test_recorded_regime_in_table(self, digits_ckpt):
        result = CliRunner().invoke(app, ["inspect", str(digits_ckpt)])
        assert result.exit_code == 0, result.output
        for text in ("head regime", "fc: pre-activation RMS 0.5,", "25.0% saturated (|z| > 2)", "tanh' 0.75"):
            assert text in result.stdout, text  # the table folds the row across lines
        assert "(training record)" in result.stdout

    def test_measured_regime_matches_the_library(self, digits_ckpt):
        from midefend.data.resolve import load_dataset
        from midefend.io.checkpoints import load_checkpoint

        result = CliRunner().invoke(app, ["inspect", str(digits_ckpt), "--regime", "--data", "digits", "--json"])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)["head_regime"]
        ckpt = load_checkpoint(digits_ckpt)
        train, _ = load_dataset("digits", size=32, channels=1, seed=0)
        expected = head_regime(ckpt.model, ckpt.normalize(train.images))["fc"]
        assert shown["heads"]["fc"] == expected.to_dict()
        assert shown["data"].endswith(f"{len(train)} images, eval mode")
