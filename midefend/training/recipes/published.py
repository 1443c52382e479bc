"""The two published defenses midefend implements, and their combination: ``nodef``, ``midre``, ``calor``, ``midre+calor``.

Their stages are :func:`midefend.training.stages.defense_stages` (the table there).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from ...defenses.losses import ConfidenceAdaptationLoss
from ..settings import TrainSettings
from ..stages import Stage, defense_stages
from .base import DefenseRecipe
from .registry import register_defense


class _Published(DefenseRecipe):
    erasing: bool = False

    def stages(self, s: TrainSettings) -> list[Stage]:
        return defense_stages(
            self.name, epochs=s.epochs, lr=s.lr, erase_max=s.erase_max, pretrain_epochs=s.pretrain_epochs,
            head_lr_mult=s.head_lr_mult, calor_lr=s.calor_lr, ca_epochs=s.ca_epochs, ca_lr=s.ca_lr,
            ca_params=s.ca_params, ca_optimizer=s.ca_optimizer,
        )  # fmt: skip

    def criterion(self, stage: Stage, s: TrainSettings, num_classes: int) -> nn.Module:
        if stage.loss == "ca":
            return ConfidenceAdaptationLoss(a=s.ca_a, b=s.ca_b)
        return nn.CrossEntropyLoss()

    def record(self, s: TrainSettings, stages: list[Stage], model: nn.Module) -> dict[str, Any]:
        record: dict[str, Any] = {"name": self.name}
        if self.erasing:
            record["erase_scale"] = [0.1, float(s.erase_max)]
            record["erase_ratio"] = [1.0, 1.0]
        if self.low_rank_head:
            record["rank"] = s.rank
            record["ca_a"], record["ca_b"] = float(s.ca_a), float(s.ca_b)
            record["ca_epochs"] = sum(st.epochs for st in stages if st.loss == "ca")
            if record["ca_epochs"]:
                record["ca_params"] = "head" if any(st.head_only for st in stages) else "all"
        return record


@register_defense("nodef")
class NoDefense(_Published):
    summary = "no defense: cross-entropy training"


@register_defense("midre")
class MIDRE(_Published):
    summary = "random erasing during training, erased area ~ U[0.1, erase_max]"
    source = "MIDRE (random erasing against model inversion)"
    knobs = ("erase_max",)
    erasing = True


@register_defense("calor")
class CALoR(_Published):
    summary = "low-rank tanh head (harden) + confidence-adaptation fine-tune"
    source = "CALoR (confidence adaptation and low-rank compression)"
    knobs = ("rank", "ca_b")
    low_rank_head = True
    fine_tunes = True


@register_defense("midre+calor")
class MIDREPlusCALoR(_Published):
    summary = "CALoR with random erasing in its cross-entropy stages"
    source = "MIDRE + CALoR (midefend's combination)"
    knobs = ("rank", "erase_max")
    erasing = True
    low_rank_head = True
    fine_tunes = True
