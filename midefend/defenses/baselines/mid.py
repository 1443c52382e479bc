"""MID: a variational information bottleneck before the classifier head (Wang, Zhang and Jia, AAAI 2021).

The head ``fc: R^m -> R^C`` is replaced by an encoder to a ``k``-dimensional
Gaussian code and a linear classifier on a sample of it::

    stats = Linear(m, 2k)(features)
    mu, sigma = stats[:, :k], softplus(stats[:, k:] - 5)
    z = mu + sigma * eps, eps ~ N(0, I)        (training; eval uses z = mu)
    logits = Linear(k, C)(z)

and training minimises ``CE(logits, y) + beta * KL(N(mu, sigma^2) || N(0, I))``,

    ``KL = 1/2 * sum_j (mu_j^2 + sigma_j^2 - 2 log sigma_j - 1)``

per sample, averaged over the batch. ``k = m // 2`` and the ``softplus(. - 5)``
parametrisation of ``sigma`` follow the authors' VGG16/MCNN models (also in
the BiDO authors' repository, ``BiDO/model.py`` ``VGG16_vib``; its training
loop ``engine.train_vib`` defaults to ``beta = 1e-2``). ``beta`` sets the
strength: more ``beta``, less information about the input in ``z``.

One deliberate difference: the authors' models sample ``z`` in eval mode too,
so their predictions are random; midefend uses the mean in eval mode (as
Alemi et al.'s VIB at test time with one deterministic draw), so accuracy and
attack gradients are reproducible.

>>> import torch
>>> gaussian_kl(torch.zeros(1, 3), torch.ones(1, 3))
tensor([0.])
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..._validate import check_positive_int

__all__ = ["BottleneckKL", "VariationalBottleneckHead", "add_bottleneck", "gaussian_kl", "split_stats"]

#: ``beta`` when none is given (``engine.train_vib``'s default in the BiDO authors' code).
DEFAULT_BETA = 1e-2


def split_stats(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 2k)`` encoder output -> ``mu``, ``sigma = softplus(raw - 5)`` (each ``(B, k)``)."""
    k = stats.shape[1] // 2
    return stats[:, :k], F.softplus(stats[:, k:] - 5.0)


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag sigma^2) || N(0, I))`` per sample, ``(B,)``."""
    mu, sigma = mu.float(), sigma.float()
    return 0.5 * (mu.square() + sigma.square() - 2.0 * sigma.log() - 1.0).sum(dim=1)


class VariationalBottleneckHead(nn.Module):
    """``features (B, m) -> logits (B, C)`` through a ``k``-dimensional Gaussian code (module docstring).

    ``stats`` is the encoder (``Linear(m, 2k)``), ``fc`` the classifier (``Linear(k, C)``).
    The KL term is computed by the loss from ``stats``' output (a forward hook), so
    the head itself holds no state between calls.
    """

    def __init__(self, in_features: int, num_classes: int, dim: int | None = None) -> None:
        super().__init__()
        in_features = check_positive_int("in_features", in_features)
        num_classes = check_positive_int("num_classes", num_classes)
        dim = max(1, in_features // 2) if dim is None else check_positive_int("bottleneck dim", dim)
        self.in_features, self.num_classes, self.dim = in_features, num_classes, dim
        self.stats = nn.Linear(in_features, 2 * dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, sigma = split_stats(self.stats(x))
        z = mu + sigma * torch.randn_like(sigma) if self.training else mu
        return self.fc(z)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, dim={self.dim}"


class BottleneckKL(nn.Module):
    """``CE(logits, y) + beta * mean KL`` for a model with one :class:`VariationalBottleneckHead`.

    :meth:`attach` hooks the head's encoder, so every forward pass records the
    ``mu``/``sigma`` the next loss call uses.
    """

    def __init__(self, beta: float = DEFAULT_BETA) -> None:
        super().__init__()
        self.beta = float(beta)
        self._stats: torch.Tensor | None = None

    def attach(self, model: nn.Module) -> list:
        heads = [m for m in model.modules() if isinstance(m, VariationalBottleneckHead)]
        if len(heads) != 1:
            from ...errors import ConfigError

            raise ConfigError(f"the MID loss needs a model with exactly one VariationalBottleneckHead, found {len(heads)}")

        def keep(_module, _inputs, output):
            self._stats = output

        return [heads[0].stats.register_forward_hook(keep)]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._stats is None:
            raise RuntimeError("BottleneckKL: no encoder output recorded; call attach(model) and run the model first")
        mu, sigma = split_stats(self._stats.float())
        self._stats = None
        return F.cross_entropy(logits.float(), target) + self.beta * gaussian_kl(mu, sigma).mean()


def add_bottleneck(model: nn.Module, dim: int | None = None, *, head: object = None) -> VariationalBottleneckHead:
    """Replace ``model``'s linear classifier head by a :class:`VariationalBottleneckHead` (in place); returns it.

    The head is found as :func:`midefend.harden` finds it (``head=`` a dotted path
    overrides); the new head takes the old one's device and dtype (its weights are fresh).
    """
    from ...errors import ConfigError
    from ..head_locations import find_head_paths

    paths = find_head_paths(model, head)
    if len(paths) != 1:
        raise ConfigError(f"MID needs one classifier head, found {len(paths)}: {', '.join(paths)}")
    old = model.get_submodule(paths[0])
    if not isinstance(old, nn.Linear):
        raise ConfigError(f"MID replaces an nn.Linear head, but {paths[0]!r} is {type(old).__name__}")
    new = VariationalBottleneckHead(old.in_features, old.out_features, dim).to(device=old.weight.device, dtype=old.weight.dtype)
    parent_path, _, name = paths[0].rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, name, new)
    return new
