"""Adaptive attacks: what an attacker who knows the defense changes in the attack loop.

A defense is only shown to work if it holds against an attacker who knows it
(Athalye et al., 2018). midefend's two defenses each call for one change:

- **Random erasing (MIDRE)** — the target was trained on images with one box
  erased, so its class evidence is spread out and a single erasure makes the
  identity loss jump from step to step (MIDRE's own adaptive attack, its
  appendix D.5, used one fresh erasure per step and saw the loss fluctuate).
  EOT (expectation over transformation) averages the loss over ``eot`` erasures
  per step, drawn with the area range the checkpoint records, and the final
  selection scores candidates under erasure too.
- **Low-rank tanh head + CA loss (CALoR)** — a saturated ``tanh`` passes almost
  no gradient, and the CA fine-tune makes the model's own optimum
  ``p_y = exp(-1/b)`` rather than 1. BPDA (backward pass differentiable
  approximation) keeps the forward pass and replaces tanh's backward by the
  identity (:func:`straight_through_heads`); :func:`ca_target_loss` aims the
  identity loss at ``exp(-1/b)``: ``(log p_y − log p*)²``, whose gradient does
  not vanish where ``p_y`` is small.

:func:`adaptive_options` turns a checkpoint's defense record (``erase_scale``,
``erase_ratio`` for MIDRE; ``rank``, ``ca_b`` for CALoR) into the attack
options that switch these on.

>>> adaptive_options({"name": "midre+calor", "erase_scale": [0.1, 0.8], "erase_ratio": [1.0, 1.0], "rank": 12, "ca_b": 8.0})
{'eot': 4, 'erase_scale': [0.1, 0.8], 'erase_ratio': [1.0, 1.0], 'bpda': True, 'ca_target': 0.8825}
>>> adaptive_options({"name": "nodef"})
{}
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError

#: Erasures per step of the EOT objective (one forward/backward pass of the target each): 4 cuts the
#: loss's step-to-step variance by 4 at 4x the cost of a step (8 would not fit verify's 15-minute CPU budget).
DEFAULT_EOT = 4
#: MIDRE's default area range, used when adaptation is forced on a target that records none.
DEFAULT_ERASE_SCALE = (0.1, 0.4)
#: CALoR's default ``b`` (the CA optimum is ``exp(-1/b)``).
DEFAULT_CA_B = 8.0


def ca_optimum(b: float) -> float:
    """``exp(-1/b)``: where the CA loss ``a · p^b · log p`` has its minimum (b=8: 0.8825)."""
    if not (isinstance(b, (int, float)) and b > 0 and math.isfinite(b)):
        raise ConfigError(f"ca_b must be a positive number, got {b!r}")
    return math.exp(-1.0 / b)


def ca_target_loss(logits: torch.Tensor, targets: torch.Tensor, *, p_target: float, reduction: str = "mean") -> torch.Tensor:
    """``(log softmax(z)_y − log p*)²``: zero where the target's confidence is ``p*``, not 1.

    >>> z = torch.tensor([[0.0, 0.0]])  # p_y = 0.5
    >>> float(ca_target_loss(z, torch.tensor([0]), p_target=0.5))
    0.0
    """
    from .losses import _check, _reduce

    z = _check(logits, targets, reduction)
    if not 0.0 < p_target < 1.0:
        raise ConfigError(f"ca_target must be in (0, 1), got {p_target!r}")
    log_p = z.log_softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    return _reduce((log_p - math.log(p_target)).pow(2), reduction)


class StraightThroughTanh(nn.Module):
    """``tanh`` forward, identity backward (BPDA): ``x + (tanh(x) − x).detach()``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (torch.tanh(x) - x).detach()


@contextlib.contextmanager
def straight_through_heads(model: nn.Module) -> Iterator[int]:
    """Within the block, every tanh low-rank head of ``model`` back-propagates through tanh as the identity.

    Yields how many heads were changed (0 for a model without one: the block is then a no-op).
    The forward pass, and so every logit, is unchanged.
    """
    from ..defenses.heads import LowRankTanhHead

    heads = [m for m in model.modules() if isinstance(m, LowRankTanhHead) and isinstance(m.act, nn.Tanh)]
    originals = [h.act for h in heads]
    for head in heads:
        head.act = StraightThroughTanh()
    try:
        yield len(heads)
    finally:
        for head, act in zip(heads, originals):
            head.act = act


def erase_copies(images: torch.Tensor, per_class: int, generators: list[torch.Generator], copies: int, *, scale: Any, ratio: Any) -> torch.Tensor:
    """``copies`` erased versions of every image, ``(copies · B, C, H, W)`` copy-major.

    ``images`` is class-major (``per_class`` rows per class, one generator per
    class), so each class draws its boxes from its own stream. One square-ish
    box per image, area fraction in ``scale``, filled with the ImageNet mean in
    pixel space, as midefend's MIDRE training erases; differentiable outside the box.
    """
    from ..defenses.erasing import random_erase_batch

    rows = []
    for i, g in enumerate(generators):
        block = images[i * per_class : (i + 1) * per_class]
        repeated = block.repeat(copies, 1, 1, 1)  # copy-major within the class
        rows.append(random_erase_batch(repeated, p=1.0, scale=tuple(scale), ratio=tuple(ratio), value="mean", generator=g).view(copies, per_class, *block.shape[1:]))
    return torch.cat(rows, dim=1).reshape(copies * images.shape[0], *images.shape[1:])


def adaptive_options(defense: Mapping[str, Any] | None, *, force: bool = False) -> dict[str, Any]:
    """Attack options that adapt to ``defense`` (a checkpoint's defense record); ``{}`` when nothing applies.

    ``force=True`` switches every adaptation on, with MIDRE's and CALoR's defaults where the
    record has no values (a defended checkpoint that does not say so).
    """
    record = dict(defense or {})
    name = str(record.get("name") or "")
    options: dict[str, Any] = {}
    if force or "erase_scale" in record or name.startswith("midre"):
        options["eot"] = DEFAULT_EOT
        options["erase_scale"] = [float(v) for v in record.get("erase_scale") or DEFAULT_ERASE_SCALE]
        options["erase_ratio"] = [float(v) for v in record.get("erase_ratio") or (1.0, 1.0)]
    if force or "calor" in name or record.get("rank") is not None:
        options["bpda"] = True
        options["ca_target"] = round(ca_optimum(float(record.get("ca_b") or DEFAULT_CA_B)), 4)
    return options


__all__ = [
    "DEFAULT_CA_B",
    "DEFAULT_EOT",
    "DEFAULT_ERASE_SCALE",
    "StraightThroughTanh",
    "adaptive_options",
    "ca_optimum",
    "ca_target_loss",
    "erase_copies",
    "straight_through_heads",
]
