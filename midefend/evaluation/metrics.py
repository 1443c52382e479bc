"""Metrics of model-inversion papers, as pure functions of logits and features.

=======================  ===============================================================
metric                   definition
=======================  ===============================================================
natural accuracy         fraction of test images whose top-1 prediction is the label
attack accuracy @k       fraction of reconstructions whose class is among the top-k
                         predictions of an *independent evaluation model*; the std is
                         over the per-class accuracies (population std)
KNN distance             mean over reconstructions of ``min_j ‖f(x) − f(p_j)‖²``, ``p_j``
                         the private training images of the reconstruction's class,
                         ``f`` the evaluation model's penultimate features
FID (feature space)      ``‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½)`` between
                         reconstruction and private features (Fréchet distance of two
                         Gaussians fitted to them)
trade-off Δ              ``(AttAcc_nodef − AttAcc_def) / (Acc_nodef − Acc_def)``: attack
                         accuracy removed per point of natural accuracy lost; ``None``
                         (printed "OP", optimal) when the defense is as accurate as NoDef
=======================  ===============================================================

>>> import torch
>>> logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 2.0, 1.0], [2.0, 0.0, 1.0]])
>>> stat = attack_accuracy(logits, torch.tensor([0, 0, 1, 1]), k=1)
>>> stat.mean, stat.per_class, stat.std
(0.5, {0: 0.5, 1: 0.5}, 0.0)
>>> round(tradeoff_delta(acc_nodef=0.95, attack_nodef=0.8, acc_def=0.9, attack_def=0.3), 6)
10.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .._validate import check_positive_int
from ..errors import ConfigError


@dataclass
class AccuracyStat:
    """A mean accuracy with its spread across classes."""

    mean: float
    std: float
    per_class: dict[int, float] = field(default_factory=dict)


def _check_logits(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] == 0:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"logits must be a non-empty (N, num_classes) tensor, got {got}")
    if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:1]:
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"labels must have shape ({logits.shape[0]},) to match the logits, got {got}")


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Boolean ``(N,)``: is ``labels[i]`` among the ``k`` largest ``logits[i]``?"""
    _check_logits(logits, labels)
    check_positive_int("k", k)
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None].to(logits.device)).any(dim=1).cpu()


def accuracy(logits: torch.Tensor, labels: torch.Tensor, *, k: int = 1) -> float:
    """Top-``k`` accuracy of ``logits (N, C)`` against ``labels (N,)``, in ``[0, 1]``."""
    return float(topk_hits(logits, labels, k).float().mean())


def attack_accuracy(logits: torch.Tensor, labels: torch.Tensor, *, k: int = 1) -> AccuracyStat:
    """Top-``k`` attack accuracy: mean over reconstructions, population std over per-class accuracies.

    Args:
        logits: the evaluation model's logits on the reconstructions ``(N, C)``.
        labels: the class each reconstruction was made for ``(N,)``.
    """
    hits = topk_hits(logits, labels, k).float()
    labels = labels.cpu()
    per_class = {int(c): float(hits[labels == c].mean()) for c in labels.unique()}
    values = torch.tensor(list(per_class.values()), dtype=torch.float64)
    return AccuracyStat(mean=float(hits.mean()), std=float(values.std(correction=0)), per_class=per_class)


def knn_distance(
    recon_features: torch.Tensor, recon_labels: torch.Tensor, private_features: torch.Tensor, private_labels: torch.Tensor
) -> float:
    """Mean over reconstructions of the minimum squared L2 feature distance to their class's private images.

    >>> r = torch.tensor([[0.0, 0.0], [3.0, 0.0]]); p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    >>> knn_distance(r, torch.tensor([0, 1]), p, torch.tensor([0, 0, 1]))  # (min(1, 4) + 1) / 2
    1.0
    """
    for name, feats, labels in (("recon", recon_features, recon_labels), ("private", private_features, private_labels)):
        if feats.ndim != 2 or labels.shape != feats.shape[:1] or feats.shape[0] == 0:
            raise ConfigError(f"{name}_features must be non-empty (N, D) with {name}_labels (N,), got {tuple(feats.shape)} and {tuple(labels.shape)}")
    if recon_features.shape[1] != private_features.shape[1]:
        raise ConfigError(f"feature sizes differ: reconstructions {recon_features.shape[1]}, private {private_features.shape[1]}")
    r, p = recon_features.double().cpu(), private_features.double().cpu()
    recon_labels, private_labels = recon_labels.cpu(), private_labels.cpu()
    dists = torch.cdist(r, p).pow(2)  # (N_r, N_p)
    same = recon_labels[:, None] == private_labels[None, :]
    missing = sorted({int(c) for c in recon_labels[~same.any(dim=1)]})
    if missing:
        raise ConfigError(f"no private images of class(es) {missing[:5]} to measure the KNN distance against")
    return float(dists.masked_fill(~same, float("inf")).amin(dim=1).mean())


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N_a, D)`` and ``(N_b, D)``.

    ``Tr((Σ_a Σ_b)^½)`` is computed as ``Tr((Σ_a^½ Σ_b Σ_a^½)^½)``, a symmetric
    PSD square root (eigendecomposition in float64), so no complex parts appear.

    >>> a = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    >>> round(frechet_distance(a, a), 6)
    0.0
    >>> round(frechet_distance(a, a + torch.tensor([1.0, 2.0, 2.0])), 6)  # a shift adds ‖shift‖²
    9.0
    """
    for name, feats in (("features_a", features_a), ("features_b", features_b)):
        if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] < 2:
            raise ConfigError(f"{name} must be (N, D) with N >= 2, got {tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ConfigError(f"feature sizes differ: {features_a.shape[1]} and {features_b.shape[1]}")
    a, b = features_a.double().cpu(), features_b.double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    root_a = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2.0 * cross
    return max(float(value), 0.0)


def tradeoff_delta(*, acc_nodef: float, attack_nodef: float, acc_def: float, attack_def: float) -> float | None:
    """Δ = attack accuracy removed per unit of natural accuracy lost; ``None`` if no accuracy is lost
    (the papers print "OP": :func:`format_delta`).

    All four values in the same unit (fractions or percentages); Δ is a ratio, unit-free.
    """
    for name, value in (("acc_nodef", acc_nodef), ("attack_nodef", attack_nodef), ("acc_def", acc_def), ("attack_def", attack_def)):
        if not isinstance(value, (int, float)) or value != value:
            raise ConfigError(f"{name} must be a number, got {value!r}")
    if acc_def >= acc_nodef:
        return None
    return (attack_nodef - attack_def) / (acc_nodef - acc_def)


def format_delta(delta: float | None) -> str:
    """Δ as the papers print it: two decimals, or ``"OP"`` when no accuracy was lost (``None``).

    >>> format_delta(2.0), format_delta(None)
    ('2.00', 'OP')
    """
    return "OP" if delta is None else f"{delta:.2f}"


__all__ = [
    "AccuracyStat",
    "accuracy",
    "attack_accuracy",
    "frechet_distance",
    "knn_distance",
    "format_delta",
    "topk_hits",
    "tradeoff_delta",
]
