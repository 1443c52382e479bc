"""What a defense recipe is: the stages it trains, the loss of each stage, what it does to the model.

A recipe answers the training loop's questions about one defense, so the
loop never tests defense names:

- :meth:`~DefenseRecipe.stages` -- the list of :class:`~midefend.training.stages.Stage`;
- :meth:`~DefenseRecipe.prepare` -- changes to the model before training (MID's bottleneck head);
- :meth:`~DefenseRecipe.criterion` -- the loss of a stage, ``loss(logits, y)``; it may
  have ``attach(model)`` (forward hooks that record what it needs, e.g. hidden
  features) and ``set_epoch(epoch, epochs)`` (a schedule);
- :meth:`~DefenseRecipe.stage_scope` -- a context around a stage (TL's frozen layers);
- :meth:`~DefenseRecipe.record` -- the defense configuration a checkpoint records;
- :meth:`~DefenseRecipe.architecture` -- the architecture name a checkpoint records, when
  the recipe changes the network (so the file alone rebuilds it).

Class attributes: ``knobs`` (the settings that set the strength, the main one
first), ``low_rank_head`` (uses ``harden(rank)``), ``fine_tunes`` (starts from a
trained model: :func:`~midefend.training.train_target` passes ``init`` or pre-trains).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch.nn as nn

from ..settings import TrainSettings
from ..stages import Stage


class DefenseRecipe:
    """Base class; the default is plain cross-entropy training that changes nothing else."""

    name: ClassVar[str] = "recipe"
    summary: ClassVar[str] = ""
    source: ClassVar[str] = ""
    knobs: ClassVar[tuple[str, ...]] = ()
    low_rank_head: ClassVar[bool] = False
    fine_tunes: ClassVar[bool] = False

    def stages(self, s: TrainSettings) -> list[Stage]:
        raise NotImplementedError

    def prepare(self, model: nn.Module, s: TrainSettings, num_classes: int) -> None:
        """Change ``model`` in place before training (default: nothing)."""

    def criterion(self, stage: Stage, s: TrainSettings, num_classes: int) -> nn.Module:
        """The loss of ``stage`` (default: cross-entropy)."""
        return nn.CrossEntropyLoss()

    @contextlib.contextmanager
    def stage_scope(self, model: nn.Module, stage: Stage, s: TrainSettings) -> Iterator[None]:
        """A context around ``stage`` (default: none)."""
        yield

    def record(self, s: TrainSettings, stages: list[Stage], model: nn.Module) -> dict[str, Any]:
        """The defense configuration checkpoints record: the name and the knobs' values."""
        return {"name": self.name, **{knob: getattr(s, knob) for knob in self.knobs}}

    def architecture(self, arch: str, arch_kwargs: dict[str, Any], s: TrainSettings) -> tuple[str, dict[str, Any]]:
        """The architecture name and arguments of the trained network (default: unchanged)."""
        return arch, arch_kwargs


@contextlib.contextmanager
def criterion_attached(criterion: nn.Module, model: nn.Module) -> Iterator[None]:
    """Register ``criterion.attach(model)``'s hooks (if it has any) for the duration of the block."""
    attach = getattr(criterion, "attach", None)
    handles = attach(model) if attach is not None else []
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def set_epoch(criterion: nn.Module, epoch: int, epochs: int) -> None:
    """Tell a scheduled loss which epoch (0-based, of ``epochs``) starts."""
    step = getattr(criterion, "set_epoch", None)
    if step is not None:
        step(epoch, epochs)


__all__ = ["DefenseRecipe", "criterion_attached", "set_epoch"]
