"""CALoR's confidence-adaptation (CA) loss.

For logits ``z`` of shape ``(N, C)`` and targets ``y`` of shape ``(N,)``, with
``p_y = softmax(z)_y``,

    ``L_CA = a * p_y**b * log(p_y)``.

``t -> t**b * log t`` on ``(0, 1]`` has its minimum at ``t = exp(-1/b)`` (CALoR,
appendix B): unlike cross-entropy, which pushes ``p_y -> 1``, the CA loss holds the
training confidence at ``exp(-1/8) ~= 0.8825`` for ``b = 8``, which biases the
attacker's objective (maximal confidence) away from the private data. Used in the
second, fine-tuning stage after ordinary cross-entropy training. Its gradient
``a * p_y**b * (b log p_y + 1)`` vanishes when ``p_y << exp(-1/b)``, so it only
works on a model that is already confident (see DESIGN.md).

Computed from ``log_softmax`` as ``a * exp(b * log p_y) * log p_y``, in float32 at
least: finite for logits of ±1e4 and for float16/bfloat16 inputs. The authors' code
uses ``alpha=0.25, gamma=8``, which is ``a=0.25, b=8`` here (the same as ``a=1``
with a 4x smaller SGD learning rate).

>>> import torch
>>> logits = torch.tensor([[2.0, 0.0, 0.0]])
>>> loss = confidence_adaptation_loss(logits, torch.tensor([0]))
>>> p = torch.softmax(logits, dim=1)[0, 0]
>>> bool(torch.isclose(loss, p**8 * torch.log(p)))
True
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validate import check_choice
from ..errors import ConfigError
from ._checks import check_positive_real, describe

__all__ = ["ConfidenceAdaptationLoss", "confidence_adaptation_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_hyper(a: Any, b: Any, reduction: Any) -> None:
    check_positive_real("a", a)
    check_positive_real("b", b)
    check_choice("reduction", reduction, _REDUCTIONS)


def _is_integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex())


def confidence_adaptation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    a: float = 1.0,
    b: float = 8.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``a * p_y**b * log(p_y)`` per sample, reduced by ``reduction``.

    Args:
        logits: ``(N, C)`` float tensor.
        target: ``(N,)`` integer class indices in ``[0, C)``.
        a, b: the loss' scale and exponent (CALoR: ``a=1, b=8``).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Returns:
        A float32 tensor (float64 for float64 logits): the loss is evaluated at
        float32 precision or more even for half-precision logits, and the
        gradient flows back to the logits in their own dtype.
    """
    _check_hyper(a, b, reduction)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ConfigError(f"logits must be a float tensor of shape (N, C), got {describe(logits)}")
    if logits.ndim != 2:
        raise ConfigError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor) or target.dtype == torch.bool or not _is_integer(target):
        raise ConfigError(f"target must be an integer tensor of class indices, got {describe(target)}")
    if target.shape != logits.shape[:1]:
        raise ConfigError(
            f"target must have shape ({logits.shape[0]},) to match logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    # Checked on the CPU only: on an accelerator it would cost a host sync every step
    # (an out-of-range index there fails inside gather, as in cross_entropy).
    if target.device.type == "cpu" and target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ConfigError(
            f"target values must be in [0, {num_classes}), got range [{int(target.min())}, {int(target.max())}]"
        )
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    log_p = F.log_softmax(logits.to(compute_dtype), dim=1)
    log_py = log_p.gather(1, target.long().unsqueeze(1)).squeeze(1)  # (N,), <= 0
    # p**b = exp(b log p): underflows to exactly 0 for very negative log p, and then
    # the gradient a * p**b * (b log p + 1) is 0 * finite = 0, never NaN.
    loss = a * torch.exp(b * log_py) * log_py
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


#: "Far below" the CA optimum: the loss' gradient scales with p_y**b, so at half the optimum it is
#: 2**-b of its size there (1/256 at b=8): the CA stage then barely moves the model.
UNCONFIDENT_FRACTION = 0.5


def warn_if_unconfident(mean_p_y: float, b: float) -> bool:
    """Warn (and return True) when the mean ``p_y`` is far below the CA optimum ``exp(-1/b)``.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_if_unconfident(0.19, 8.0), warn_if_unconfident(0.95, 8.0)
    (True, False)
    >>> len(caught)
    1
    """
    optimum = math.exp(-1.0 / b)
    if mean_p_y >= UNCONFIDENT_FRACTION * optimum:
        return False
    warnings.warn(
        f"confidence adaptation: the model's mean p_y is {mean_p_y:.3f}, far below the CA optimum exp(-1/b) = "
        f"{optimum:.3f}; the CA loss' gradient vanishes there (it scales with p_y**{b:g}), so this stage will barely "
        "change the model. Train the cross-entropy stage longer (after harden(): a head fine-tune until the "
        "model is confident) before the CA fine-tune.",
        UserWarning,
        stacklevel=2,
    )
    return True


class ConfidenceAdaptationLoss(nn.Module):
    """Module form of :func:`confidence_adaptation_loss`: ``loss = module(logits, target)``.

    >>> import torch
    >>> criterion = ConfidenceAdaptationLoss(a=1.0, b=8.0)
    >>> criterion(torch.zeros(4, 10), torch.arange(4)).shape
    torch.Size([])
    """

    #: Batches checked for a model too unconfident for the CA loss (each check costs a host sync).
    CONFIDENCE_CHECKS = 10

    def __init__(self, a: float = 1.0, b: float = 8.0, reduction: str = "mean") -> None:
        super().__init__()
        _check_hyper(a, b, reduction)
        self.a = float(a)
        self.b = float(b)
        self.reduction = reduction
        self._checks_left = self.CONFIDENCE_CHECKS

    @property
    def optimal_confidence(self) -> float:
        """``exp(-1/b)``, the ``p_y`` that minimises the loss."""
        return math.exp(-1.0 / self.b)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = confidence_adaptation_loss(logits, target, self.a, self.b, self.reduction)
        if self._checks_left > 0 and logits.shape[0]:
            self._checks_left -= 1
            with torch.no_grad():
                p_y = F.softmax(logits.detach().float(), dim=1).gather(1, target.long().unsqueeze(1)).mean()
            if warn_if_unconfident(float(p_y), self.b):
                self._checks_left = 0
        return loss

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}, reduction={self.reduction!r}"
