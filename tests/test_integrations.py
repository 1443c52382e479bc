"""Lightning callbacks run a few real training steps: erasing on the device batch, the CA stage."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning", reason="the [lightning] extra is not installed")

from midefend.defenses import ConfidenceAdaptationLoss, random_erase_batch  # noqa: E402
from midefend.defenses.surgery import harden  # noqa: E402
from midefend.integrations.lightning import ConfidenceAdaptationStage, MIDREErasing  # noqa: E402


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU())
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.body(x))


class Module(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = TinyNet()
        self.criterion = nn.CrossEntropyLoss()
        self.seen: list[torch.Tensor] = []
        self.losses: list[type] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append(x.detach().clone())
        self.losses.append(type(self.criterion))
        return self.criterion(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(epochs, callbacks):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)  # fmt: skip


def _data(n=8):
    torch.manual_seed(0)
    return torch.rand(n, 3, 4, 4), torch.arange(n) % 4


def test_erasing_is_the_seeded_batch_erase():
    x, y = _data()
    module = Module()
    _trainer(1, [MIDREErasing(scale=(0.2, 0.4), seed=3)]).fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    expected = random_erase_batch(x.clone(), scale=(0.2, 0.4), ratio=(1.0, 1.0), value="mean", generator=torch.Generator().manual_seed(3))
    assert torch.equal(module.seen[0], expected) and not torch.equal(module.seen[0], x)


class Snapshot(L.Callback):
    """The body's parameters when the CA epoch starts (after the CA stage's callback has run)."""

    def __init__(self) -> None:
        self.body: list[torch.Tensor] = []
        self.head: list[torch.Tensor] = []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.body = [p.detach().clone() for p in pl_module.model.body.parameters()]
            self.head = [p.detach().clone() for p in pl_module.model.fc.parameters()]


def test_ca_stage_swaps_the_loss_and_trains_only_the_head():
    x, y = _data()
    module = Module()
    harden(module.model, rank=2, head="fc", calibration=x)
    snapshot = Snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an untrained toy is unconfident: the CA loss rightly warns
        _trainer(2, [ConfidenceAdaptationStage(start_epoch=1), snapshot]).fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    assert module.losses == [nn.CrossEntropyLoss, ConfidenceAdaptationLoss]
    # during the CA epoch the body stays as it was and the head moves
    assert all(torch.equal(a, b) for a, b in zip(snapshot.body, module.model.body.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(snapshot.head, module.model.fc.parameters()))


def test_ca_stage_needs_a_hardened_model():
    from midefend.errors import ConfigError

    x, y = _data()
    with pytest.raises(ConfigError, match=r"found no LowRankTanhHead: harden\(\) the model first"):
        _trainer(1, [ConfidenceAdaptationStage(start_epoch=0)]).fit(Module(), DataLoader(TensorDataset(x, y), batch_size=8))


class TestHFTrainer:
    """A tiny ViT trained a few steps with transformers' Trainer: erasing collator, then the CA loss."""

    def _setup(self, tmp_path):
        transformers = pytest.importorskip("transformers")
        pytest.importorskip("accelerate")
        cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16, num_labels=4)  # fmt: skip
        torch.manual_seed(0)
        model = transformers.ViTForImageClassification(cfg)
        x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 4
        rows = [{"pixel_values": x[i], "labels": y[i]} for i in range(16)]
        args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to=[],
                                              use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)  # fmt: skip
        return transformers, model, rows, args, x

    def test_erasing_collator_then_ca_loss(self, tmp_path):
        from midefend.integrations.hf_trainer import ErasingCollator, ca_compute_loss_func

        transformers, model, rows, args, x = self._setup(tmp_path)
        collator = ErasingCollator(scale=(0.2, 0.4), seed=5)
        batch = ErasingCollator(scale=(0.2, 0.4), seed=5)(rows[:8])
        expected = random_erase_batch(x[:8].clone(), scale=(0.2, 0.4), ratio=(1.0, 1.0), value="mean", generator=torch.Generator().manual_seed(5))
        assert torch.equal(batch["pixel_values"], expected)
        transformers.Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
        report = harden(model, rank=2, calibration=x)
        assert report.head_paths == ["classifier"]
        calls = []
        loss_func = ca_compute_loss_func(b=8.0)

        def counted(outputs, labels, num_items_in_batch=None):
            calls.append(labels.shape[0])
            return loss_func(outputs, labels, num_items_in_batch)

        before = [p.detach().clone() for p in model.classifier.parameters()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # two steps leave the toy unconfident: the CA loss rightly warns
            transformers.Trainer(model=model, args=args, train_dataset=rows, compute_loss_func=counted).train()
        assert calls == [8, 8]
        assert any(not torch.equal(a, b) for a, b in zip(before, model.classifier.parameters()))
