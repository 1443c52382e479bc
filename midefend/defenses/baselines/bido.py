"""BiDO-HSIC: bilateral dependency optimisation (Peng, Liu, Han and Sugiyama, KDD 2022).

For hidden representations ``Z_1 .. Z_L`` of a batch ``X`` with labels ``Y``,

    ``loss = CE + sum_l ( lambda_x * HSIC(X, Z_l) - lambda_y * HSIC(Y, Z_l) )``:

less dependence of the hidden layers on the input (what an inversion attack
recovers), more on the label (what the task needs).

Kernels (as in the authors' code): a Gaussian kernel on the flattened inputs
and hidden features, ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2 d))`` with ``d``
the feature dimension and ``sigma = 5``; a linear kernel ``Y Y^T`` on one-hot
labels. Two estimators:

- :func:`hsic` -- the biased empirical HSIC of Gretton et al. (2005),
  ``tr(K H L H) / (m - 1)^2`` with ``H = I - 11^T / m``;
- :func:`hsic_normalized` -- the normalised variant the BiDO code trains with
  (``hsic_normalized_cca``): ``tr(R_K R_L)`` with ``R_K = K H (K H + eps m I)^-1``,
  ``eps = 1e-5``; it lies in ``[0, m]`` whatever the feature scale, which keeps the
  published ``(lambda_x, lambda_y) = (0.05, 0.5)`` meaningful across layers.

The hidden layers default to the outputs of the network's stages (``layer1``..
``layer4`` of a ResNet, the ``blocks`` of midefend's nets, timm's ``stages``)
plus the penultimate features (the head's input), as BiDO takes the output of
each VGG block and the final features.

>>> import torch
>>> x = torch.eye(3)
>>> round(float(hsic(x, x, sigma_x=None, sigma_y=None)), 4)  # linear kernels: tr(HIHI)/4 = 2/4
0.5
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..._validate import check_positive_real, fail, is_real
from ...errors import ConfigError

__all__ = ["HSICPenalty", "default_hidden_layers", "gaussian_kernel", "hsic", "hsic_normalized"]

#: BiDO-HSIC's weights for face data (the authors' CelebA setting) and kernel width.
DEFAULT_HSIC_X, DEFAULT_HSIC_Y, DEFAULT_SIGMA = 0.05, 0.5, 5.0


def gaussian_kernel(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2 d))`` for ``x`` of shape ``(m, d)`` (BiDO's scaling by ``d``)."""
    x = _at_least_float32(x.flatten(1))
    sq = x.square().sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0)
    return torch.exp(-dist / (2.0 * sigma * sigma * x.shape[1]))


def _kernel(x: torch.Tensor, sigma: float | None) -> torch.Tensor:
    """Gaussian kernel, or the linear kernel ``x x^T`` for ``sigma=None``."""
    if sigma is None:
        x = _at_least_float32(x.flatten(1))
        return x @ x.T
    return gaussian_kernel(x, sigma)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _centre(k: torch.Tensor) -> torch.Tensor:
    """``K H`` with ``H = I - 11^T / m`` (subtract each row's mean)."""
    return k - k.mean(dim=1, keepdim=True)


def hsic(x: torch.Tensor, y: torch.Tensor, *, sigma_x: float | None = DEFAULT_SIGMA, sigma_y: float | None = DEFAULT_SIGMA) -> torch.Tensor:
    """Biased empirical HSIC ``tr(K H L H) / (m - 1)^2`` of two batches ``(m, ...)``; ``sigma=None``: linear kernel."""
    m = _check_pair(x, y)
    kh, lh = _centre(_kernel(x, sigma_x)), _centre(_kernel(y, sigma_y))
    return (kh * lh.T).sum() / (m - 1) ** 2


def hsic_normalized(
    x: torch.Tensor, y: torch.Tensor, *, sigma_x: float | None = DEFAULT_SIGMA, sigma_y: float | None = DEFAULT_SIGMA, eps: float = 1e-5
) -> torch.Tensor:
    """BiDO's normalised HSIC ``tr(R_K R_L)``, ``R = K H (K H + eps m I)^-1`` (module docstring)."""
    m = _check_pair(x, y)
    eye = torch.eye(m, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
    kh, lh = _centre(_kernel(x, sigma_x)), _centre(_kernel(y, sigma_y))
    rk = kh @ torch.linalg.inv(kh + eps * m * eye)
    rl = lh @ torch.linalg.inv(lh + eps * m * eye)
    return (rk * rl.T).sum()


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> int:
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ConfigError(f"HSIC needs two batches of the same size >= 2, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x.shape[0]


def default_hidden_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules whose outputs BiDO constrains (see the module docstring); the head's
    input is added by :class:`HSICPenalty` itself."""
    names = dict(model.named_modules())
    resnet = [n for n in ("layer1", "layer2", "layer3", "layer4") if n in names]
    if resnet:
        return resnet
    for container in ("blocks", "stages", "features", "layers"):
        module = names.get(container)
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module):
            return [f"{container}.{i}" for i in range(len(module))]
    return []


class HSICPenalty(nn.Module):
    """``CE + sum_l (hsic_x * HSIC(X, Z_l) - hsic_y * HSIC(Y, Z_l))`` with hooks on the model (module docstring).

    :meth:`attach` registers a forward pre-hook on the model (its normalised
    input ``X``), forward hooks on the hidden ``layers`` (default
    :func:`default_hidden_layers`) and a pre-hook on the head (the penultimate
    features); the loss then reads what the last forward pass recorded.
    """

    def __init__(
        self,
        num_classes: int,
        hsic_x: float = DEFAULT_HSIC_X,
        hsic_y: float = DEFAULT_HSIC_Y,
        *,
        sigma: float = DEFAULT_SIGMA,
        normalized: bool = True,
        layers: list[str] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("hsic_x", hsic_x), ("hsic_y", hsic_y)):
            if not is_real(value) or value < 0:
                raise fail(name, "a non-negative number", value)
        check_positive_real("sigma", sigma)
        self.num_classes, self.hsic_x, self.hsic_y, self.sigma = num_classes, float(hsic_x), float(hsic_y), float(sigma)
        self.measure = hsic_normalized if normalized else hsic
        self.layers = layers
        self._input: torch.Tensor | None = None
        self._hidden: list[torch.Tensor] = []
        self.last_terms: tuple[float, float] = (0.0, 0.0)  # mean HSIC(X, Z) and HSIC(Y, Z) of the last batch

    def attach(self, model: nn.Module) -> list:
        from ..head_locations import find_head_paths

        layers = default_hidden_layers(model) if self.layers is None else list(self.layers)
        modules = dict(model.named_modules())
        unknown = [name for name in layers if name not in modules]
        if unknown:
            raise ConfigError(f"BiDO hidden layer(s) not in the model: {', '.join(unknown)}")

        def keep_input(_module, inputs):
            self._input, self._hidden = inputs[0], []

        def keep_output(_module, _inputs, output):
            self._hidden.append(output)

        def keep_head_input(_module, inputs):
            self._hidden.append(inputs[0])

        handles = [model.register_forward_pre_hook(keep_input)]
        handles += [modules[name].register_forward_hook(keep_output) for name in layers]
        handles += [model.get_submodule(path).register_forward_pre_hook(keep_head_input) for path in find_head_paths(model)]
        return handles

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._input is None or not self._hidden:
            raise RuntimeError("HSICPenalty: nothing recorded; call attach(model) and run the model first")
        x = self._input.flatten(1).float()
        y = F.one_hot(target.long(), self.num_classes).float()
        loss = F.cross_entropy(logits.float(), target)
        hx_sum, hy_sum = 0.0, 0.0
        for z in self._hidden:
            hx = self.measure(x, z.flatten(1).float(), sigma_x=self.sigma, sigma_y=self.sigma)
            hy = self.measure(y, z.flatten(1).float(), sigma_x=None, sigma_y=self.sigma)
            loss = loss + self.hsic_x * hx - self.hsic_y * hy
            hx_sum, hy_sum = hx_sum + hx.item(), hy_sum + hy.item()
        self.last_terms = (hx_sum / len(self._hidden), hy_sum / len(self._hidden))
        self._input, self._hidden = None, []
        return loss
