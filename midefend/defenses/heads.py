"""The CALoR low-rank classifier head: ``BatchNorm1d -> Linear(m, r) -> tanh -> Linear(r, C)``.

A standard head is one ``Linear(m, C)`` whose weight is (almost always) full rank
``min(m, C)``. CALoR factorises it through ``r << min(m, C)`` dimensions and puts a
saturating ``tanh`` in between: the logits then carry less information about the
input (the attacker's "MI overfitting" has less to hold on to) and the saturated
tanh makes the attacker's gradients vanish. The layer order follows the CALoR
authors' code (``BatchNorm1d`` first, both ``Linear`` layers with bias).

Shapes: input ``(..., m)`` (any number of leading dimensions; they are flattened
for the ``BatchNorm1d``), output ``(..., C)``; with ``pre_logits=True`` the output
is the rank-``r`` activation ``(..., r)``.

>>> import torch
>>> head = LowRankTanhHead(512, 10, rank=4)
>>> head(torch.randn(8, 512)).shape
torch.Size([8, 10])
>>> head(torch.randn(8, 512), pre_logits=True).shape
torch.Size([8, 4])
>>> head.config()
{'in_features': 512, 'num_classes': 10, 'rank': 4, 'activation': 'tanh', 'norm': True, 'bias': True}
"""

from __future__ import annotations

import copy
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .._validate import check_choice
from ..errors import ConfigError
from ._checks import check_bool, check_positive_int, check_positive_real, describe

__all__ = ["LowRankTanhHead", "ACTIVATIONS", "validate_rank"]


@dataclass(frozen=True)
class _Activation:
    """An activation by name, with the point where it is (locally) linear.

    ``act(c + z) ~= value + slope * z`` for small ``z``; :meth:`LowRankTanhHead.from_linear`
    uses this to run the activation in its linear regime at the warm start.
    """

    module: type[nn.Module]
    center: float
    value: float
    slope: float


# The CALoR paper compares tanh, sigmoid and ReLU (its Table 5); identity is the
# "LoR without activation" ablation. ReLU is exactly linear on z > 0, so its
# operating point is shifted to 1.
ACTIVATIONS: dict[str, _Activation] = {
    "tanh": _Activation(nn.Tanh, center=0.0, value=0.0, slope=1.0),
    "sigmoid": _Activation(nn.Sigmoid, center=0.0, value=0.5, slope=0.25),
    "relu": _Activation(nn.ReLU, center=1.0, value=1.0, slope=1.0),
    "identity": _Activation(nn.Identity, center=0.0, value=0.0, slope=1.0),
}


def validate_rank(rank: Any, in_features: int, num_classes: int) -> int:
    """Check ``1 <= rank <= min(in_features, num_classes)`` and return it as ``int``.

    ``rank > min(m, C)`` is an error: the head could not be warm-started by SVD
    and stores more parameters than the linear head it replaces, for no gain.
    ``rank == min(m, C)`` is allowed with a ``UserWarning``: such a head is not
    low-rank, so it gives no CALoR protection, but it is the one rank at which
    :meth:`LowRankTanhHead.from_linear` reproduces the original head (up to the
    activation), which is how tests and users check the surgery itself.

    >>> validate_rank(50, 512, 530)
    50
    """
    bound = min(in_features, num_classes)
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise ConfigError(f"rank must be an integer in [1, {bound}] (min(in_features, num_classes)), got {rank!r}")
    if rank < 1 or rank > bound:
        raise ConfigError(
            f"rank must be in [1, {bound}] (min(in_features={in_features}, num_classes={num_classes})), got {rank}"
        )
    if rank == bound:
        warnings.warn(
            f"rank={rank} equals min(in_features={in_features}, num_classes={num_classes}): the head is not "
            "low-rank and gives no CALoR protection (use it only to check the surgery)",
            UserWarning,
            stacklevel=3,
        )
    return int(rank)


class LowRankTanhHead(nn.Module):
    """CALoR's low-rank head: ``up(act(down(norm(x))))``.

    ``norm`` is ``BatchNorm1d(in_features)`` (or ``Identity`` with ``norm=False``),
    ``down`` is ``Linear(in_features, rank)``, ``act`` the activation
    (``"tanh"`` by default; ``"sigmoid"``, ``"relu"`` and ``"identity"`` for the
    paper's ablations), ``up`` is ``Linear(rank, num_classes)``.

    Args:
        in_features: ``m``, the feature size the replaced head received.
        num_classes: ``C``, the number of logits.
        rank: ``r``, in ``[1, min(m, C)]`` (see :func:`validate_rank`).
        activation: activation name, one of :data:`ACTIVATIONS`.
        norm: put a ``BatchNorm1d`` first, as the authors' code does.
        bias: give both ``Linear`` layers a bias (the authors' code does).
        device, dtype: where to create the parameters.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        rank: int,
        activation: str = "tanh",
        norm: bool = True,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.rank = validate_rank(rank, self.in_features, self.num_classes)
        check_choice("activation", activation, sorted(ACTIVATIONS))
        check_bool("norm", norm)
        check_bool("bias", bias)
        self.activation_name = activation
        factory = {"device": device, "dtype": dtype}
        self.norm: nn.Module = nn.BatchNorm1d(self.in_features, **factory) if norm else nn.Identity()
        self.down = nn.Linear(self.in_features, self.rank, bias=bias, **factory)
        self.act = ACTIVATIONS[activation].module()
        self.up = nn.Linear(self.rank, self.num_classes, bias=bias, **factory)

    @property
    def has_norm(self) -> bool:
        return isinstance(self.norm, nn.BatchNorm1d)

    def reset_parameters(self) -> None:
        """Re-initialise like a freshly built head (PyTorch's default Linear/BatchNorm init)."""
        if self.has_norm:
            self.norm.reset_parameters()
        self.down.reset_parameters()
        self.up.reset_parameters()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(..., m) -> (..., C)``, or ``(..., r)`` with ``pre_logits=True``."""
        if x.shape[-1] != self.in_features:
            raise ConfigError(
                f"LowRankTanhHead expects inputs of shape (..., {self.in_features}), got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        # BatchNorm1d normalises dim 1, so token inputs (B, N, m) are flattened to (B*N, m).
        h = self.norm(x.reshape(-1, self.in_features))
        h = self.act(self.down(h))
        if not pre_logits:
            h = self.up(h)
        return h.reshape(*lead, h.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"rank={self.rank}, activation={self.activation_name!r}"
        )

    def config(self) -> dict[str, Any]:
        """The constructor arguments as a JSON-able dict (checkpoints rebuild the head from it)."""
        return {
            "in_features": self.in_features,
            "num_classes": self.num_classes,
            "rank": self.rank,
            "activation": self.activation_name,
            "norm": self.has_norm,
            "bias": self.down.bias is not None,
        }

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        rank: int,
        *,
        activation: str = "tanh",
        norm: bool = True,
        features: torch.Tensor | None = None,
        linear_range: float = 0.1,
        refit_up: bool = False,
    ) -> LowRankTanhHead:
        """Warm-start a head from a trained ``nn.Linear`` by truncated SVD.

        With ``W = U S V^T`` (``W`` is ``C x m``) and the top ``r`` singular
        triplets, ``W_r = U_r S_r V_r^T`` is the best rank-``r`` approximation of
        ``W`` (Eckart-Young). The head is set so that, in eval mode,

        ``down(norm(x)) = c + alpha * V_r^T (x - mu)`` and
        ``up(h) = U_r S_r diag(1 / (g * alpha)) (h - f) + b + W_r mu``,

        where ``(c, f, g)`` are the activation's operating point, value and slope
        there (tanh: ``0, 0, 1``; sigmoid: ``0, 0.5, 0.25``; ReLU: ``1, 1, 1``).
        Then ``head(x) = W_r x + b + (nonlinearity error)``. Two things change the
        function, and this is how they are compensated:

        * **the activation**: ``act(c + z) ~= f + g z`` only for small ``z``. Each
          rank coordinate is scaled by ``alpha_i`` so that its root-mean-square
          is ``linear_range`` (0.1 by default), where tanh departs from linear by
          about ``1.3 * linear_range**2`` (~1.3%) in relative RMS; ``up``
          multiplies by ``1 / alpha_i`` to undo the scaling. A smaller
          ``linear_range`` is closer but makes ``up``'s weights larger (and the
          fine-tune starts further from tanh's saturated, protective regime).
        * **BatchNorm**: it is set to the features' statistics (``running_mean =
          mu``, ``running_var = var``, weight 1, bias 0) and ``down`` absorbs the
          standard deviation, so the head is the same function in eval mode and
          (up to batch-statistics noise) in train mode.

        ``features`` (``(N, m)``, penultimate features of some training images) gives
        ``mu``, ``var`` and the RMS used for ``alpha``. Without it, midefend
        assumes standardised features (``mu = 0``, ``var = 1``, each coordinate
        of RMS 1): BatchNorm is the identity in eval mode but in train mode it
        normalises each batch, so the first training steps see a different
        function; pass ``features`` whenever you can.

        At ``rank = min(m, C)`` with ``features``, the warm start is within about
        1% (relative RMS of the logits) of the original head; below full rank
        the truncation error ``W - W_r`` adds to that.

        This is a faithful copy of the trained head, which is NOT CALoR's
        mechanism: with ``linear_range=0.1`` the tanh stays linear and passes the
        attacker's gradients unchanged. A large ``linear_range`` (e.g. 2: about a
        third of the units saturated) starts in the saturating regime, where
        ``up``'s ``1/alpha`` scaling no longer restores the logits (tanh squashes
        them); ``refit_up=True`` (needs ``features``) then sets ``up`` (weight and
        bias) by least squares so that the head reproduces the original logits
        ``linear(features)`` as well as the saturated rank-``r`` code allows, the
        best ``up`` for the fixed ``down`` (a tiny ridge keeps it well posed).
        See docs/calor.md.

        >>> import torch
        >>> linear = torch.nn.Linear(64, 10)
        >>> feats = torch.randn(256, 64)
        >>> head = LowRankTanhHead.from_linear(linear, 5, features=feats).eval()
        >>> err = (head(feats) - linear(feats)).norm() / linear(feats).norm()
        >>> bool(err < 1.0), head.norm.running_mean.shape
        (True, torch.Size([64]))
        """
        if not isinstance(linear, nn.Linear):
            raise ConfigError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        linear_range = check_positive_real("linear_range", linear_range)
        check_bool("refit_up", refit_up)
        if refit_up and features is None:
            raise ConfigError("refit_up=True needs features (the head's inputs on some training images)")
        weight = linear.weight.detach()
        num_classes, in_features = weight.shape
        head = cls(
            in_features, num_classes, rank, activation, norm, True, device=weight.device, dtype=weight.dtype
        )
        act = ACTIVATIONS[head.activation_name]
        # SVD in float64 on the CPU-or-device copy: half-precision SVD is not supported.
        w64 = weight.double()
        bias64 = linear.bias.detach().double() if linear.bias is not None else w64.new_zeros(num_classes)
        u, s, vh = torch.linalg.svd(w64, full_matrices=False)
        u_r, s_r, v_r = u[:, : head.rank], s[: head.rank], vh[: head.rank]  # (C, r), (r,), (r, m)

        mean, std, coord_rms = _feature_stats(features, in_features, v_r, w64)
        alpha = linear_range / coord_rms.clamp_min(1e-12)  # (r,)

        with torch.no_grad():
            if head.has_norm:
                bn = head.norm
                bn.running_mean.copy_(mean)
                # BN divides by sqrt(running_var + eps): take eps out so that this is std
                # (a feature with variance below eps keeps sqrt(eps), and down absorbs that).
                bn.running_var.copy_((std**2 - bn.eps).clamp_min(0.0))
                std = (bn.running_var.double() + bn.eps).sqrt()
                bn.weight.fill_(1.0)
                bn.bias.fill_(0.0)
                bn.num_batches_tracked.zero_()
                # norm(x) = (x - mu) / std  =>  down weight = alpha V_r diag(std), down bias = c.
                head.down.weight.copy_(alpha[:, None] * v_r * std[None, :])
                head.down.bias.fill_(act.center)
            else:
                head.down.weight.copy_(alpha[:, None] * v_r)
                head.down.bias.copy_(act.center - alpha * (v_r @ mean))
            up_w = u_r * (s_r / (act.slope * alpha))[None, :]  # (C, r)
            head.up.weight.copy_(up_w)
            head.up.bias.copy_(bias64 + w64 @ mean - up_w.sum(dim=1) * act.value)
            # w64 @ mean above uses the full W: the rank-r part of it is W_r mu and the
            # rest, (W - W_r) mu, is the constant part of the truncation error, kept exactly.
        if refit_up:
            _refit_up(head, features.detach().to(device=weight.device, dtype=torch.float64), w64, bias64)
        return head


def _refit_up(head: LowRankTanhHead, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Set ``head.up`` to the least-squares map from the head's rank-``r`` code to ``features @ W.T + b`` (float64)."""
    with torch.no_grad():
        code = copy.deepcopy(head).double().eval()(features, pre_logits=True)  # (N, r), the activation's output
        design = torch.cat([code, code.new_ones(len(code), 1)], dim=1)  # (N, r + 1): weights and bias
        target = features @ weight.T + bias  # (N, C), the original head's logits
        gram = design.T @ design
        ridge = 1e-8 * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        solution = torch.linalg.solve(gram + ridge, design.T @ target)  # (r + 1, C)
        head.up.weight.copy_(solution[:-1].T)
        head.up.bias.copy_(solution[-1])


def _feature_stats(
    features: torch.Tensor | None, in_features: int, v_r: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mu, std, rms of V_r^T (x - mu))`` in float64, from ``features`` or for standardised inputs."""
    if features is None:
        mean = weight.new_zeros(in_features)
        std = weight.new_ones(in_features)
        # V_r has orthonormal rows, so for unit-variance uncorrelated x each coordinate has RMS 1.
        return mean, std, weight.new_ones(v_r.shape[0])
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        raise ConfigError(f"features must be a float tensor of shape (N, {in_features}), got {describe(features)}")
    if features.ndim != 2 or features.shape[1] != in_features or features.shape[0] < 2:
        raise ConfigError(f"features must have shape (N >= 2, {in_features}), got {tuple(features.shape)}")
    f64 = features.detach().to(device=weight.device, dtype=torch.float64)
    if not torch.isfinite(f64).all():
        raise ConfigError("features contains NaN or infinite values")
    mean = f64.mean(dim=0)
    # Biased variance, as BatchNorm normalises with; a constant feature keeps std 1.
    std = f64.var(dim=0, unbiased=False).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    coords = (f64 - mean) @ v_r.T  # (N, r)
    rms = coords.pow(2).mean(dim=0).sqrt()
    rms = torch.where(rms > 1e-12, rms, torch.ones_like(rms))
    return mean, std, rms
