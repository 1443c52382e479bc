"""CALoR guard rails: the CA loss warns on an unconfident model, harden takes labelled calibration data and a DataLoader."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from midefend.defenses.calibration import calibration_batches, short_description
from midefend.defenses.losses import ConfidenceAdaptationLoss
from midefend.defenses.surgery import harden
from midefend.errors import ConfigError

from attack_fixtures import tiny_world  # noqa: F401  (session fixture)


def _logits_with_confidence(p: float, n: int = 8, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax gives probability ``p`` to the target class, the rest shared equally."""
    margin = math.log(p * (classes - 1) / (1 - p))
    logits = torch.zeros(n, classes)
    target = torch.arange(n) % classes
    logits[torch.arange(n), target] = margin
    return logits, target


class TestConfidenceWarning:
    def test_fires_once_on_an_unconfident_model(self):
        loss = ConfidenceAdaptationLoss(b=8.0)
        logits, target = _logits_with_confidence(0.19)
        with pytest.warns(UserWarning, match=r"mean p_y is 0\.190, far below the CA optimum exp\(-1/b\) = 0\.882; .*Train the cross-entropy stage longer"):
            loss(logits, target)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss(logits, target)  # once per loss module

    def test_silent_on_a_confident_model(self):
        loss = ConfidenceAdaptationLoss(b=8.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for p in (0.95, 0.88, 0.5):  # 0.5 is above half the optimum (0.44): the gradient is still useful
                logits, target = _logits_with_confidence(p)
                loss(logits, target)

    def test_the_loss_value_is_unchanged(self):
        logits, target = _logits_with_confidence(0.19)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ConfidenceAdaptationLoss(b=8.0)(logits, target)
        assert float(value) == pytest.approx(0.19**8 * math.log(0.19), rel=1e-4)


def _mlp(classes=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, classes))


class TestCalibration:
    def test_forms(self):
        x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
        inputs, labels = calibration_batches(DataLoader(TensorDataset(x, y), batch_size=4))
        assert [len(b) for b in inputs] == [4, 4, 2] and torch.equal(torch.cat(labels), y)
        inputs, labels = calibration_batches([{"pixel_values": x, "labels": y}])
        assert torch.equal(inputs[0], x) and torch.equal(labels[0], y)
        inputs, labels = calibration_batches([x[:5], x[5:]])
        assert len(inputs) == 2 and labels is None

    def test_error_does_not_print_a_tensor(self):
        with pytest.raises(ConfigError) as info:
            harden(_mlp(), rank=2, head="2", calibration=[torch.zeros(3, 6, dtype=torch.long), torch.zeros(3, 6)])
        assert "tensor([" not in str(info.value) and len(str(info.value)) < 300
        assert short_description(torch.zeros(100, 100)) == "a torch.float32 tensor of shape (100, 100)"

    def test_accuracy_before_and_after_the_surgery(self):
        model = _mlp().eval()
        x = torch.randn(64, 6)
        with torch.no_grad():
            y = model(x).argmax(1)  # labels the model gets all right: accuracy before = 1
        loader = DataLoader(TensorDataset(x, y), batch_size=16)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = harden(model, rank=1, head="2", calibration=loader)
        assert report.accuracy_before == 1.0
        with torch.no_grad():
            expected = (model(x).argmax(1) == y).float().mean().item()
        assert report.accuracy_after == pytest.approx(expected)
        assert report.accuracy_after < 0.95  # rank 1 of 4 classes must lose accuracy, and says so
        assert any("accuracy on the calibration data fell from 100.0%" in str(w.message) for w in caught)

    def test_no_labels_no_accuracy(self):
        report = harden(_mlp(), rank=2, head="2", calibration=torch.randn(32, 6))
        assert report.accuracy_before is None and report.accuracy_after is None


class TestHardenCommand:
    def test_calibration_folder_and_defense_record(self, tiny_world, tmp_path):
        import re

        from typer.testing import CliRunner

        from midefend.cli import app
        from midefend.evaluation.evaluate import natural_accuracy
        from midefend.io.checkpoints import load_checkpoint

        out = tmp_path / "hard.safetensors"
        result = CliRunner().invoke(app, ["harden", str(tiny_world.paths["target"]), str(out), "--rank", "2", "--calibration-data", str(tiny_world.folder)])
        assert result.exit_code == 0, result.output
        found = re.search(r"accuracy on the calibration data: ([\d.]+)% before, ([\d.]+)% after the surgery", result.output)
        assert found, result.output
        everything = type(tiny_world.train)(
            torch.cat([tiny_world.train.images, tiny_world.test.images]), torch.cat([tiny_world.train.labels, tiny_world.test.labels]), tiny_world.train.classes
        )
        assert float(found.group(1)) == pytest.approx(100 * natural_accuracy(tiny_world.target, everything), abs=0.05)
        ckpt = load_checkpoint(out)
        assert ckpt.defense["name"] == "calor" and ckpt.defense["fine_tuned"] is False and ckpt.defense["rank"] == 2
