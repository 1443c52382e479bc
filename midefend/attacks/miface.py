"""MI-Face — pixel-space model inversion (Fredrikson et al., 2015), no generator.

Optimise the pixels ``x ∈ [0, 1]^(C×H×W)`` of each reconstruction directly:

    ``L(x) = L_id(T(x), y) + λ_tv · TV(x)``,
    ``TV(x) = mean |x[:, i+1, j] − x[:, i, j]| + mean |x[:, i, j+1] − x[:, i, j]|``,

with projection onto ``[0, 1]`` after every Adam step. The total-variation
term is the only image prior (it favours smooth images). Starts from mid-grey
plus small per-class seeded noise. Works on small, simple targets (the
original attacked a softmax regression on ORL); against deep nets it tends to
find adversarial patterns — that contrast is why generator priors exist.

>>> MIFaceAttack().options["tv_weight"]
0.05
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Attack, _Context
from .registry import register_attack


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image ``(B,)``: mean absolute vertical + horizontal differences.

    >>> float(total_variation(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]))[0])
    1.0
    """
    dv = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dh = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dv + dh


@register_attack("miface")
class MIFaceAttack(Attack):
    """Pixel-space attack with a total-variation prior."""

    threat_model = "white-box"
    uses_prior = False
    supports_adaptive = True
    # Pixel-space reconstructions of a deep target are adversarial noise; an EOT variant would cost
    # eot x its 300 steps for little: the default portfolio adapts the prior-based attacks only.
    adaptive_in_portfolio = False
    defaults = {"loss": "cross-entropy", "lr": 0.05, "steps": 300, "tv_weight": 0.05, "augment": "none"}

    def validate_extra(self) -> None:
        tv = self.options["tv_weight"]
        if not isinstance(tv, (int, float)) or tv < 0:
            raise ConfigError(f"tv_weight must be a non-negative number, got {tv!r}")

    def init_params(self, ctx: _Context, classes: list[int], gens: list[torch.Generator]) -> torch.Tensor:
        c, h, w = ctx.target.input_size
        k = self.options["candidates"]
        return torch.cat([(0.5 + 0.05 * torch.randn(k, c, h, w, generator=g)).clamp(0, 1) for g in gens])

    def render(self, ctx: _Context, params: torch.Tensor) -> torch.Tensor:
        return params

    def objective(self, ctx: _Context, params: torch.Tensor, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return super().objective(ctx, params, images, logits, targets) + self.options["tv_weight"] * total_variation(images.float())

    def after_step(self, params: torch.Tensor) -> None:
        params.clamp_(0.0, 1.0)


__all__ = ["MIFaceAttack", "total_variation"]
