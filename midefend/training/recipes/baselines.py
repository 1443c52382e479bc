"""The baseline defenses the papers compare against, as recipes: ``nls``, ``mid``, ``bido``, ``tl``.

Their losses and modules live in :mod:`midefend.defenses.baselines` (formulas,
defaults and sources there and in ``docs/defenses.md``).

==========  =========================================================================
defense     stages
==========  =========================================================================
``nls``     ``train``: ``epochs`` of label smoothing with factor ``smoothing`` (-0.05),
            plain cross-entropy for the first ``nls_warmup`` (half) of them, ramped in
            up to ``nls_ramp_end`` (three quarters)
``mid``     the head becomes a variational bottleneck; ``train``: CE + ``beta`` * KL
``bido``    ``train``: CE + sum over hidden layers of ``hsic_x`` * HSIC(X, Z) - ``hsic_y`` * HSIC(Y, Z)
``tl``      [``pretrain``: cross-entropy, ``pretrain_epochs``, only if > 0] -> ``tune``:
            cross-entropy, ``epochs`` at ``calor_lr`` (default ``lr``) with the leading
            ``freeze`` fraction of the parameters frozen
==========  =========================================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch.nn as nn

from ...defenses.baselines.bido import HSICPenalty
from ...defenses.baselines.mid import BottleneckKL, VariationalBottleneckHead, add_bottleneck
from ...defenses.baselines.nls import NegativeLabelSmoothingLoss, check_smoothing, smoothing_schedule
from ...defenses.baselines.tl import check_fraction, freeze_leading
from ..._validate import check_positive_int, fail, is_real
from ..settings import TrainSettings
from ..stages import Stage, defense_stages
from .base import DefenseRecipe
from .registry import register_defense


def _one_stage(s: TrainSettings, loss: str) -> list[Stage]:
    # nodef's single stage validates epochs and lr; only the loss differs
    return [dataclasses.replace(stage, loss=loss) for stage in defense_stages("nodef", epochs=s.epochs, lr=s.lr)]


def _check_non_negative(name: str, value: Any) -> float:
    if not is_real(value) or value < 0:
        raise fail(name, "a non-negative number", value)
    return float(value)


@register_defense("nls")
class NegativeLabelSmoothing(DefenseRecipe):
    summary = "negative label smoothing after a cross-entropy warm-up"
    source = "Struppek, Hintersdorf and Kersting, Be Careful What You Smooth For, ICLR 2024"
    knobs = ("smoothing",)

    def stages(self, s: TrainSettings) -> list[Stage]:
        check_smoothing(s.smoothing)
        smoothing_schedule(0, 1, warmup=s.nls_warmup, ramp_end=s.nls_ramp_end)
        return _one_stage(s, "nls")

    def criterion(self, stage: Stage, s: TrainSettings, num_classes: int) -> nn.Module:
        return NegativeLabelSmoothingLoss(s.smoothing, warmup=s.nls_warmup, ramp_end=s.nls_ramp_end)

    def record(self, s: TrainSettings, stages: list[Stage], model: nn.Module) -> dict[str, Any]:
        return {"name": self.name, "smoothing": float(s.smoothing), "warmup": s.nls_warmup, "ramp_end": s.nls_ramp_end}


@register_defense("mid")
class MutualInformationDefense(DefenseRecipe):
    summary = "variational information bottleneck before the head, CE + beta * KL"
    source = "Wang, Zhang and Jia, Improving Robustness to Model Inversion Attacks via Mutual Information Regularization, AAAI 2021"
    knobs = ("beta",)

    def stages(self, s: TrainSettings) -> list[Stage]:
        _check_non_negative("beta", s.beta)
        if s.bottleneck_dim is not None:
            check_positive_int("bottleneck_dim", s.bottleneck_dim)
        return _one_stage(s, "mid")

    def prepare(self, model: nn.Module, s: TrainSettings, num_classes: int) -> None:
        if not any(isinstance(m, VariationalBottleneckHead) for m in model.modules()):
            add_bottleneck(model, s.bottleneck_dim)

    def criterion(self, stage: Stage, s: TrainSettings, num_classes: int) -> nn.Module:
        return BottleneckKL(beta=s.beta)

    def record(self, s: TrainSettings, stages: list[Stage], model: nn.Module) -> dict[str, Any]:
        heads = [m for m in model.modules() if isinstance(m, VariationalBottleneckHead)]
        return {"name": self.name, "beta": float(s.beta), "bottleneck_dim": heads[0].dim if heads else s.bottleneck_dim}

    def architecture(self, arch: str, arch_kwargs: dict[str, Any], s: TrainSettings) -> tuple[str, dict[str, Any]]:
        if arch == "midefend/vib":
            return arch, arch_kwargs
        rest = {k: v for k, v in arch_kwargs.items() if k != "in_chans"}
        wrapped = {"in_chans": arch_kwargs.get("in_chans", 3), "base": arch, "base_kwargs": rest, "dim": s.bottleneck_dim}
        return "midefend/vib", wrapped


@register_defense("bido")
class BilateralDependencyOptimization(DefenseRecipe):
    summary = "HSIC: less dependence of hidden layers on the input, more on the label"
    source = "Peng, Liu, Han and Sugiyama, Bilateral Dependency Optimization, KDD 2022"
    knobs = ("hsic_x", "hsic_y")

    def stages(self, s: TrainSettings) -> list[Stage]:
        _check_non_negative("hsic_x", s.hsic_x)
        _check_non_negative("hsic_y", s.hsic_y)
        return _one_stage(s, "bido")

    def criterion(self, stage: Stage, s: TrainSettings, num_classes: int) -> nn.Module:
        return HSICPenalty(num_classes, s.hsic_x, s.hsic_y, sigma=s.hsic_sigma)

    def record(self, s: TrainSettings, stages: list[Stage], model: nn.Module) -> dict[str, Any]:
        return {"name": self.name, "hsic_x": float(s.hsic_x), "hsic_y": float(s.hsic_y), "sigma": float(s.hsic_sigma), "estimator": "normalized"}


@register_defense("tl")
class TransferLearning(DefenseRecipe):
    summary = "fine-tune only the last part of a pre-trained network (leading fraction frozen)"
    source = "Ho et al., Model Inversion Robustness: Can Transfer Learning Help?, CVPR 2024"
    knobs = ("freeze",)
    fine_tunes = True

    def stages(self, s: TrainSettings) -> list[Stage]:
        check_fraction(s.freeze)
        (pretrain,) = defense_stages("nodef", epochs=max(1, s.pretrain_epochs), lr=s.lr)
        (tune,) = defense_stages("nodef", epochs=s.epochs, lr=s.calor_lr if s.calor_lr is not None else s.lr)
        tune = dataclasses.replace(tune, name="tune")
        return [dataclasses.replace(pretrain, name="pretrain"), tune] if s.pretrain_epochs else [tune]

    @contextlib.contextmanager
    def stage_scope(self, model: nn.Module, stage: Stage, s: TrainSettings) -> Iterator[None]:
        if stage.name != "tune":
            yield
            return
        names = set(freeze_leading(model, s.freeze))
        frozen = [p for name, p in model.named_parameters() if name in names]
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def record(self, s: TrainSettings, stages: list[Stage], model: nn.Module) -> dict[str, Any]:
        return {"name": self.name, "freeze": float(s.freeze), "tune_epochs": sum(st.epochs for st in stages if st.name == "tune")}
