"""PyTorch Lightning callbacks: MIDRE's erasing on the device batch, and CALoR's CA stage.

``pip install 'midefend[lightning]'``. Both are plain callbacks; your
``LightningModule`` stays as it is, except that the CA stage needs to know
which attribute holds your loss::

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = timm.create_model("resnet18", num_classes=40)
            self.criterion = nn.CrossEntropyLoss()      # the CA stage swaps this attribute

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.criterion(self.model(x), y)

    harden(net.model, rank=16, calibration=loader)      # CALoR's head, before training goes on
    trainer = L.Trainer(max_epochs=40, callbacks=[
        MIDREErasing(scale=(0.1, 0.4)),                 # one box per image, on the device batch
        ConfidenceAdaptationStage(start_epoch=30),      # CA loss (head only) from epoch 30
    ])

:class:`MIDREErasing` erases ``batch[0]`` in place with
:func:`~midefend.defenses.random_erase_batch` (one launch per batch on the
GPU); ``normalized=(mean, std)`` says how the batch was normalised, so the
ImageNet-mean fill lands in pixel space. :class:`ConfidenceAdaptationStage`
sets ``pl_module.<loss_attr>`` to :class:`~midefend.defenses.ConfidenceAdaptationLoss`
at ``start_epoch`` and, with ``head_only=True`` (midefend's default, see
``docs/verify-your-model.md``), stops the gradients of every parameter outside
the low-rank heads; the loss warns once if the model is too unconfident for it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - depends on the extra
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
    except ImportError:
        raise ImportError("midefend.integrations.lightning needs PyTorch Lightning: pip install 'midefend[lightning]'") from None


class MIDREErasing(Callback):
    """Erase one random box per training image of ``batch[0]`` (or ``batch[key]``) before each step."""

    def __init__(self, *, scale: tuple[float, float] = (0.1, 0.4), ratio: tuple[float, float] = (1.0, 1.0),
                 value: Any = "mean", normalized: Any = None, key: int | str = 0, seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.options = {"scale": scale, "ratio": ratio, "value": value, "normalized": normalized}
        self.key = key
        self.seed = seed
        self._generator: torch.Generator | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        from ..defenses import random_erase_batch

        x = batch[self.key]
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ConfigError(f"MIDREErasing needs batch[{self.key!r}] to be a (B, C, H, W) image tensor, got {type(x).__name__}")
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        random_erase_batch(x, **self.options, generator=self._generator, inplace=True)


class ConfidenceAdaptationStage(Callback):
    """From ``start_epoch`` on, train with CALoR's CA loss (``a * p_y**b * log p_y``) instead of ``<loss_attr>``."""

    def __init__(self, *, start_epoch: int, a: float = 1.0, b: float = 8.0, loss_attr: str = "criterion", head_only: bool = True) -> None:
        super().__init__()
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ConfigError(f"start_epoch must be a non-negative integer, got {start_epoch!r}")
        self.start_epoch, self.a, self.b, self.loss_attr, self.head_only = start_epoch, a, b, loss_attr, head_only
        self.active = False

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.active or trainer.current_epoch < self.start_epoch:
            return
        from ..defenses import ConfidenceAdaptationLoss, LowRankTanhHead

        if not hasattr(pl_module, self.loss_attr):
            raise ConfigError(f"ConfidenceAdaptationStage swaps pl_module.{self.loss_attr}, which {type(pl_module).__name__} does not have")
        setattr(pl_module, self.loss_attr, ConfidenceAdaptationLoss(a=self.a, b=self.b))
        if self.head_only:
            heads = [m for m in pl_module.modules() if isinstance(m, LowRankTanhHead)]
            if not heads:
                raise ConfigError("ConfidenceAdaptationStage(head_only=True) found no LowRankTanhHead: harden() the model first")
            keep = {id(p) for head in heads for p in head.parameters()}
            for p in pl_module.parameters():
                if id(p) not in keep:
                    p.requires_grad_(False)
        self.active = True


__all__ = ["ConfidenceAdaptationStage", "MIDREErasing"]
