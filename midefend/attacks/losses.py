"""Identity losses of model-inversion attacks: low when the target model sees class ``y``.

All take raw logits ``z`` of shape ``(B, C)`` and integer targets ``y`` of shape
``(B,)`` and return a loss per sample (``reduction="none"``), their mean or sum.
They compute in (at least) float32 even when the logits come from a bfloat16 autocast.

==================  ====================================================  ===========
name                loss per sample                                       from
==================  ====================================================  ===========
``poincare``        ``arccosh(1 + 2‖u−v‖² / ((1−‖u‖²)(1−‖v‖²)))``,        PPA
                    ``u = z/‖z‖₁``, ``v = clip(onehot(y) − ε, 0, 1)``
``max-margin``      ``−z_y + max_{j≠y} z_j``                              PLG-MI
``logit``           ``−z_y``                                              LOMMA
``cross-entropy``   ``−log softmax(z)_y``                                 GMI
==================  ====================================================  ===========

Why the Poincaré loss: it measures the distance of the L1-normalised logits to
a point near the one-hot corner in the Poincaré ball; unlike cross-entropy its
gradient does not vanish once the softmax saturates, so the attack keeps
pushing the logit vector towards the class (Struppek et al., 2022).

>>> import torch
>>> z = torch.tensor([[2.0, 0.0, -1.0]])
>>> float(max_margin_loss(z, torch.tensor([0])))
-2.0
>>> float(logit_loss(z, torch.tensor([2])))
1.0
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

IdentityLoss = Callable[..., torch.Tensor]


def _check(logits: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"logits must be a (B, C) tensor, got {got}")
    if not isinstance(targets, torch.Tensor) or targets.shape != logits.shape[:1]:
        got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ConfigError(f"targets must have shape ({logits.shape[0]},) to match the logits, got {got}")
    if reduction not in ("none", "mean", "sum"):
        raise ConfigError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    # Half-precision logits (autocast) are promoted; float32/float64 keep their precision.
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def poincare_loss(logits: torch.Tensor, targets: torch.Tensor, *, eps: float = 1e-4, reduction: str = "mean") -> torch.Tensor:
    """Poincaré distance between L1-normalised logits and the (shrunk) one-hot target.

    ``u = z / ‖z‖₁`` lies in the unit ball (``‖u‖₂ ≤ ‖u‖₁ = 1``) and
    ``v = clip(onehot(y) − eps, 0, 1)`` just inside it, so both denominators
    ``1 − ‖·‖²`` are positive; they are clamped at ``1e-12`` for the corner
    case of a single non-zero logit.

    Args:
        logits: ``(B, C)``.
        targets: ``(B,)`` class indices.
        eps: how far the target is pulled inside the ball (PPA: ``1e-4``).
        reduction: ``"none"`` -> ``(B,)``, ``"mean"`` or ``"sum"`` -> scalar.

    >>> z = torch.tensor([[1.0, 1.0]])
    >>> # u = (.5, .5), v = (.5, 0): arccosh(1 + 2 * .25 / (.5 * .75)) = arccosh(7/3)
    >>> round(float(poincare_loss(z, torch.tensor([0]), eps=0.5)), 4)
    1.491
    """
    z = _check(logits, targets, reduction)
    if not 0.0 <= eps < 1.0:
        raise ConfigError(f"eps must be in [0, 1), got {eps!r}")
    # float64 inside: 1 - ‖v‖² = 2·eps - eps² loses ~3 digits to cancellation in float32.
    z64 = z.double()
    u = z64 / z64.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
    v = (F.one_hot(targets, z.shape[1]).double() - eps).clamp(0.0, 1.0)
    num = 2.0 * (u - v).pow(2).sum(dim=1)
    den = (1.0 - u.pow(2).sum(dim=1)).clamp_min(1e-12) * (1.0 - v.pow(2).sum(dim=1)).clamp_min(1e-12)
    return _reduce(torch.acosh(1.0 + num / den).to(z.dtype), reduction)


def max_margin_loss(logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``−z_y + max_{j≠y} z_j``: negative once class ``y`` has the top logit (PLG-MI)."""
    z = _check(logits, targets, reduction)
    if z.shape[1] < 2:
        raise ConfigError(f"max-margin loss needs at least 2 classes, got logits of shape {tuple(z.shape)}")
    z_y = z.gather(1, targets[:, None]).squeeze(1)
    others = z.masked_fill(F.one_hot(targets, z.shape[1]).bool(), float("-inf"))
    return _reduce(-z_y + others.amax(dim=1), reduction)


def logit_loss(logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``−z_y``: the LOMMA logit loss (unbounded below; pair it with a prior)."""
    z = _check(logits, targets, reduction)
    return _reduce(-z.gather(1, targets[:, None]).squeeze(1), reduction)


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``−log softmax(z)_y``: the identity loss of GMI."""
    z = _check(logits, targets, reduction)
    return F.cross_entropy(z, targets, reduction=reduction)


IDENTITY_LOSSES: dict[str, IdentityLoss] = {
    "poincare": poincare_loss,
    "max-margin": max_margin_loss,
    "logit": logit_loss,
    "cross-entropy": cross_entropy_loss,
}


def get_identity_loss(name: str) -> IdentityLoss:
    """The loss function registered as ``name`` (one of :data:`IDENTITY_LOSSES`)."""
    if name not in IDENTITY_LOSSES:
        raise ConfigError(f"unknown identity loss {name!r}; expected one of {', '.join(IDENTITY_LOSSES)}")
    return IDENTITY_LOSSES[name]


__all__ = [
    "IDENTITY_LOSSES",
    "cross_entropy_loss",
    "get_identity_loss",
    "logit_loss",
    "max_margin_loss",
    "poincare_loss",
]
