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
