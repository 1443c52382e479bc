"""One settings object for a training run, shared by the CLI, :func:`train_target` and :func:`train_classifier`.

:class:`TrainSettings` holds every training choice -- the defense and its
strength, the optimiser, the schedule, the run's device and seed -- so the
layers pass one object instead of repeating thirty keyword arguments.
:func:`train_classifier` still accepts the keyword arguments (``epochs=3``),
which it turns into settings with :meth:`TrainSettings.build`.

>>> s = TrainSettings.build(defense="nls", epochs=3)
>>> s.defense, s.epochs, s.smoothing
('nls', 3, -0.05)
>>> TrainSettings.build(s, beta=0.1).beta
0.1
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class TrainSettings:
    """Every training setting, with :func:`~midefend.training.train_classifier`'s defaults.

    The defenses' knobs (see :mod:`midefend.training.recipes` for which recipe reads which):

    - ``erase_max``: MIDRE's ``a_h``; ``rank``, ``pretrain_epochs``, ``head_lr_mult``,
      ``calor_lr``, ``ca_*``, ``head_*``, ``linear_range``: CALoR's head and
      confidence-adaptation stages (``ca_lr``/``ca_params`` default to 1e-4 and ``"head"``,
      or the authors' 2e-5 and ``"all"`` with ``ca_optimizer="authors"``);
    - ``smoothing``: NLS's factor (negative), ``nls_warmup``/``nls_ramp_end``: its schedule;
    - ``beta``, ``bottleneck_dim``: MID's KL weight and code size (default half the features);
    - ``hsic_x``, ``hsic_y``, ``hsic_sigma``: BiDO's weights and Gaussian kernel width;
    - ``freeze``: TL's frozen leading fraction of the parameters.
    """

    defense: str = "nodef"
    epochs: int = 60
    lr: float = 1e-3
    optimizer: str = "adamw"
    schedule: str = "cosine"
    batch_size: int = 32
    weight_decay: float | None = None
    erase_max: float = 0.4
    rank: int | None = None
    pretrain_epochs: int = 0
    head_lr_mult: float = 1.0
    calor_lr: float | None = None
    ca_epochs: int = 5
    ca_lr: float | None = None
    ca_params: str | None = None
    ca_optimizer: str = "default"
    ca_a: float = 1.0
    ca_b: float = 8.0
    head_activation: str = "tanh"
    head_init: str = "svd-lstsq"
    linear_range: float = 2.0
    smoothing: float = -0.05
    nls_warmup: float = 0.5
    nls_ramp_end: float = 0.75
    beta: float = 1e-2
    bottleneck_dim: int | None = None
    hsic_x: float = 0.05
    hsic_y: float = 0.5
    hsic_sigma: float = 5.0
    freeze: float = 0.5
    augment: Any = "light"
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    seed: int = 0
    device: str | torch.device = "cpu"
    amp: bool | None = None
    channels_last: bool = True
    eval_every: int = 5
    progress: bool = True
    resume: str | os.PathLike[str] | None = None

    @classmethod
    def build(cls, settings: TrainSettings | None = None, /, **overrides: Any) -> TrainSettings:
        """``settings`` (or the defaults) with ``overrides``; an unknown name is a one-line ConfigError."""
        if settings is not None and not isinstance(settings, TrainSettings):
            raise ConfigError(f"settings must be a TrainSettings, got {type(settings).__name__}")
        unknown = sorted(set(overrides) - set(field_names()))
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}; known: {', '.join(field_names())}")
        return dataclasses.replace(settings if settings is not None else cls(), **overrides)

    def replace(self, **overrides: Any) -> TrainSettings:
        """A copy with ``overrides`` (checked like :meth:`build`)."""
        return TrainSettings.build(self, **overrides)


def field_names() -> list[str]:
    """The names :class:`TrainSettings` accepts, in declaration order."""
    return [f.name for f in dataclasses.fields(TrainSettings)]


__all__ = ["TrainSettings", "field_names"]
