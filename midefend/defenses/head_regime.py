"""Where a low-rank head's activation operates: linear, or saturated (CALoR's mechanism).

CALoR puts ``tanh`` between the two factors of its head so that an attacker's
gradient vanishes: ``d tanh(z)/dz = 1 - tanh(z)**2`` is ``0.07`` at ``|z| = 2``
and ``0.98`` at ``|z| = 0.14``. Whether a trained head does this is a property
of its pre-activations ``z = down(norm(x))`` on real inputs, not of its
structure: a head whose ``z`` stays small is a linear rank-``r`` map (the
paper's "Identity" ablation), however it is drawn. :func:`head_regime` measures
it, per low-rank head, in eval mode:

* ``pre_rms``: root-mean-square of ``z`` over all inputs and units;
* ``saturated``: fraction of ``(input, unit)`` pairs with ``|z| > 2``
  (:data:`SATURATION_THRESHOLD`);
* ``mean_slope``: mean of the activation's derivative at ``z`` (``tanh'(z)``
  for the tanh head; 1 for identity, ``z > 0`` for ReLU, ``s (1 - s)`` for sigmoid).

A tanh head with ``mean_slope > 0.9`` (:data:`LINEAR_SLOPE`) is said to be in
the linear regime: it passes gradients almost unchanged.

>>> import torch
>>> from midefend.defenses.heads import LowRankTanhHead
>>> head = LowRankTanhHead(4, 3, rank=2, norm=False)
>>> with torch.no_grad():
...     _ = head.down.weight.copy_(torch.eye(2, 4)); _ = head.down.bias.zero_()
>>> regime = head_regime(head, torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, -3.0, 0.0, 0.0]]))[""]
>>> regime.saturated, round(regime.pre_rms, 4)
(0.5, 2.1213)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from .._validate import describe
from .heads import LowRankTanhHead

__all__ = ["HeadRegime", "LINEAR_SLOPE", "SATURATION_THRESHOLD", "head_regime", "regime_record", "warn_if_linear"]

#: ``|z|`` above which a tanh unit counts as saturated (``tanh'(2) = 0.071``).
SATURATION_THRESHOLD = 2.0
#: Mean ``tanh'`` above which a head is in the linear regime (``tanh'(0.33) = 0.9``).
LINEAR_SLOPE = 0.9


@dataclass(frozen=True)
class HeadRegime:
    """Pre-activation statistics of one low-rank head on some inputs (see the module docstring)."""

    activation: str
    pre_rms: float
    saturated: float
    mean_slope: float
    samples: int

    @property
    def linear(self) -> bool:
        """A tanh or sigmoid head whose mean slope is within 10% of its slope at the operating point."""
        peak = {"tanh": 1.0, "sigmoid": 0.25}.get(self.activation)
        return peak is not None and self.mean_slope > LINEAR_SLOPE * peak

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return (
            f"{self.activation}: pre-activation RMS {self.pre_rms:.3g}, {self.saturated:.1%} saturated (|z| > 2), "
            f"mean slope {self.mean_slope:.3g} on {self.samples} inputs"
        )


def _input_batches(data: Any) -> Iterable[torch.Tensor]:
    """Model inputs from a tensor, or from an iterable of tensors or ``(x, y, ...)`` tuples (a DataLoader)."""
    if isinstance(data, torch.Tensor):
        if not data.is_floating_point() or data.ndim < 2 or len(data) == 0:
            raise ConfigError(f"data must be a non-empty float tensor of model inputs, got {describe(data)}")
        yield data
        return
    if not isinstance(data, Iterable):
        raise ConfigError(f"data must be a float tensor of model inputs or an iterable of batches, got {describe(data)}")
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ConfigError(f"every batch must be a float tensor of model inputs (or an (x, y) pair), got {describe(x)}")
        yield x


def head_regime(model: nn.Module, data: Any, *, batch_size: int = 256) -> dict[str, HeadRegime]:
    """``{dotted path: HeadRegime}`` for every :class:`LowRankTanhHead` in ``model`` (``""`` when ``model`` is one).

    ``data``: normalised model inputs: a ``(N, ...)`` float tensor (run in chunks of
    ``batch_size``), or an iterable of such batches or of ``(x, y)`` pairs (a
    ``DataLoader``). The model runs in eval mode under ``no_grad``; every module's
    mode is restored afterwards. ConfigError when the model has no low-rank head
    or ``data`` reaches none of them.
    """
    heads = {name: m for name, m in model.named_modules() if isinstance(m, LowRankTanhHead)}
    if not heads:
        raise ConfigError(f"{type(model).__name__} has no low-rank head (harden it first)")
    sums = {name: torch.zeros(4, dtype=torch.float64) for name in heads}  # sum z^2, count |z|>2, sum slope, count
    hooks = []
    for name, head in heads.items():

        def hook(module: nn.Module, args: tuple, name: str = name) -> None:
            z = args[0].detach().double()
            with torch.enable_grad():
                zz = z.clone().requires_grad_(True)
                (slope,) = torch.autograd.grad(module.forward(zz).sum(), zz)  # elementwise: its derivative (forward: no hook)
            sums[name] += torch.stack(
                [z.pow(2).sum(), (z.abs() > SATURATION_THRESHOLD).sum().double(), slope.sum(), torch.tensor(z.numel())]
            ).cpu()

        hooks.append(head.act.register_forward_pre_hook(hook))
    modes = {module: module.training for module in model.modules()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            for batch in _input_batches(data):
                for start in range(0, len(batch), batch_size):
                    model(batch[start : start + batch_size].to(device))
    finally:
        for handle in hooks:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    out = {}
    for name, (sq, sat, slope, count) in sums.items():
        if count == 0:
            continue
        n = int(count.item())
        out[name] = HeadRegime(
            activation=heads[name].activation_name,
            pre_rms=math.sqrt(sq.item() / n),
            saturated=sat.item() / n,
            mean_slope=slope.item() / n,
            samples=n // heads[name].rank,
        )
    if not out:
        raise ConfigError("data reached none of the model's low-rank heads")
    return out


def warn_if_linear(regimes: dict[str, HeadRegime], where: str) -> bool:
    """A ``UserWarning`` for each head in the linear regime; returns whether any was."""
    linear = {name or "head": r for name, r in regimes.items() if r.linear}
    for name, regime in linear.items():
        warnings.warn(
            f"{where}: low-rank head {name!r} ends in its activation's linear regime ({regime}); its gradients do "
            "not vanish, so it protects like CALoR's identity ablation (see docs/calor.md)",
            UserWarning,
            stacklevel=3,
        )
    return bool(linear)


def regime_record(model: nn.Module, inputs: Any, *, warn: str | None = None) -> dict[str, dict[str, Any]]:
    """``{path: HeadRegime.to_dict()}`` as training records store it; with ``warn``, :func:`warn_if_linear` first."""
    regimes = head_regime(model, inputs)
    if warn is not None:
        warn_if_linear(regimes, warn)
    return {name: regime.to_dict() for name, regime in regimes.items()}
