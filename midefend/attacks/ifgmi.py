"""IF-GMI — intermediate-feature search (Qiu et al., ECCV 2024), with a DCGAN prior.

A latent-space attack can only draw what the generator draws from a latent; when
the prior cannot draw a person (see :mod:`midefend.evaluation.reach`), no latent
reaches them. IF-GMI first runs the latent search (PPA's: best initial latents of
a scored pool, Poincaré loss, a random crop and flip per step), then walks down
the generator: at each feature level in ``levels`` (0: the 4×4 map) it takes the
generator's own feature map ``h₀`` of the current candidates and optimises
``h`` in the **l1 ball** ``‖h − h₀‖₁ ≤ radius · ‖h₀‖₁`` (per candidate, over the
whole map), the image being drawn by the rest of the generator from ``h``. The
next level starts from the features the optimised map produces. The final
selection is PPA's (mean target confidence over augmentations).

The ball's radius is **relative** to the feature map's own l1 norm, so one
number means the same freedom at every level and for every generator (the face
GAN's 4×4 map has about 8,000 values of mean magnitude 0.06, its 8×8 map 16,000
of 0.05). ``radius`` decides between "the prior's faces, slightly moved" and
"anything the later layers can draw": at 0 IF-GMI is the latent search; without a
bound the 8×8 maps reproduce any ORL photo (pixel MSE 0.0003) and the attack may
draw adversarial features instead of a face. The default, 0.3, is the smallest
radius at which the face prior's 8×8 maps draw most ORL identities by pixels alone
(FaceNet 95 %, against 22 % at 0.1 and 17.5 % in the latent; ``docs/reach.md``,
``benchmarks/RESULTS.md`` section "The prior's reach and IF-GMI").

After every step the features are projected onto the ball exactly
(:func:`project_l1_ball`, Duchi et al., 2008). The features are not clipped to
be non-negative (the ReLU outputs they replace are): the later layers accept any
real map, as in the authors' formulation.

IF-GMI supports the adaptive options (:mod:`midefend.attacks.adaptive`). It is
not in ``verify``'s default portfolio: it costs PPA's latent search plus
``layer_steps`` steps per level, which does not fit the 15-minute budget of an
ORL target on 2 cores (``benchmarks/RESULTS.md``); run it with ``--attack ifgmi``.

>>> project_l1_ball(torch.tensor([[3.0, 1.0, 0.5]]), 3.0).tolist()  # θ = 0.5: each magnitude loses 0.5
[[2.5, 0.5, 0.0]]
>>> IFGMIAttack(per_class=1).options["levels"], IFGMIAttack(per_class=1).options["radius"]
([0, 1], 0.3)
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import AttackError, ConfigError
from ..models.images import adapt_images
from .augment import draw_params, policy
from .base import LatentAttack, _Context
from .ppa import PPAAttack
from .registry import register_attack

#: Relative l1 radius of the default ball (see the module docstring and the radius curve in RESULTS.md).
DEFAULT_RADIUS = 0.3


def project_l1_ball(x: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``x`` ``(B, D)`` onto the l1 ball of ``radius`` (a number or ``(B,)``).

    Rows already inside are returned unchanged; the others are soft-thresholded,
    ``sign(x) · max(|x| − θ, 0)``, with the ``θ`` that puts them exactly on the sphere
    (Duchi, Shalev-Shwartz, Singer & Chandra, 2008: sort, cumulative sums, one pass).

    >>> project_l1_ball(torch.tensor([[1.0, 1.0]]), 1.0)
    tensor([[0.5000, 0.5000]])
    """
    if x.ndim != 2:
        raise ConfigError(f"project_l1_ball needs (B, D) rows, got shape {tuple(x.shape)}")
    r = torch.as_tensor(radius, dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()
    if (r < 0).any() or not torch.isfinite(r).all():
        raise ConfigError("the l1 radius must be a finite non-negative number")
    magnitude = x.abs()
    inside = magnitude.sum(1) <= r
    mu = magnitude.sort(dim=1, descending=True).values
    cumulative = mu.cumsum(1)
    j = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)
    active = mu - (cumulative - r[:, None]) / j > 0  # true on a prefix of the sorted magnitudes
    rho = active.sum(1).clamp(min=1)  # how many coordinates stay non-zero
    theta = (cumulative.gather(1, (rho - 1)[:, None]).squeeze(1) - r) / rho
    projected = x.sign() * (magnitude - theta[:, None]).clamp(min=0)
    projected = torch.where((r == 0)[:, None], torch.zeros_like(x), projected)
    return torch.where(inside[:, None], x, projected)


@register_attack("ifgmi")
class IFGMIAttack(LatentAttack):
    """Latent search, then layer-by-layer search of the generator's feature maps within a relative l1 ball.

    Options (on top of PPA's): ``levels`` (feature levels searched, in order; default
    ``[0, 1]``: the 4×4 and 8×8 maps of a 64×64 DCGAN), ``layer_steps`` (Adam steps per
    level), ``layer_lr`` (their learning rate, in feature units) and ``radius`` (the
    ball's l1 radius relative to the level's own feature norm; ``None``: no bound).
    """

    threat_model = "white-box"
    supports_adaptive = True
    in_portfolio = False
    defaults = {
        **PPAAttack.defaults,  # the latent search and the selection are PPA's
        "levels": [0, 1],
        "layer_steps": 50,
        "layer_lr": 0.01,
        "radius": DEFAULT_RADIUS,
    }
    presets = {"fast": {**PPAAttack.presets["fast"], "layer_steps": 25}}

    def __init__(self, preset: str | None = None, **options: Any) -> None:
        self._phase: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (level, centre, radius) while searching features
        super().__init__(preset, **options)
        if "radius" in options and options["radius"] is None:  # the engine drops None options; here None means "no bound"
            self.options["radius"] = None

    def validate_extra(self) -> None:
        super().validate_extra()
        o = self.options
        levels = o["levels"]
        if not isinstance(levels, (list, tuple)) or any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in levels):
            raise ConfigError(f"levels must be a list of non-negative integers, got {levels!r}")
        if list(levels) != sorted(set(levels)):
            raise ConfigError(f"levels must be increasing without repeats (the search walks down the generator), got {levels!r}")
        o["levels"] = list(levels)
        if not isinstance(o["layer_steps"], int) or isinstance(o["layer_steps"], bool) or o["layer_steps"] < 0:
            raise ConfigError(f"layer_steps must be a non-negative integer, got {o['layer_steps']!r}")
        if not (isinstance(o["layer_lr"], (int, float)) and o["layer_lr"] > 0):
            raise ConfigError(f"layer_lr must be a positive number, got {o['layer_lr']!r}")
        r = o["radius"]
        if r is not None and not (isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r < float("inf")):
            raise ConfigError(f"radius must be a non-negative number (relative to the feature norm) or None, got {r!r}")

    def check_prior(self, prior: Any) -> None:
        if prior is None:
            return
        levels = getattr(prior, "num_levels", None)
        if not levels or not hasattr(prior, "from_features"):
            raise AttackError(f"attack {self.name!r} needs a prior that exposes its feature maps (a midefend DCGAN prior)")
        if self.options["levels"] and self.options["levels"][-1] >= levels:
            raise AttackError(f"attack {self.name!r}: the prior has feature levels 0..{levels - 1}, asked for {self.options['levels']}")

    def total_steps(self) -> int:
        return int(self.options["steps"] + self.options["layer_steps"] * len(self.options["levels"]))

    def render(self, ctx: _Context, params: torch.Tensor) -> torch.Tensor:
        if self._phase is None:
            return super().render(ctx, params)
        assert ctx.prior is not None
        c, h, w = ctx.target.input_size
        return adapt_images(ctx.prior.from_features(params, self._phase[0]), channels=c, size=(h, w))

    def after_step(self, params: torch.Tensor) -> None:
        if self._phase is not None and self.options["radius"] is not None:
            _, centre, radius = self._phase
            delta = project_l1_ball((params - centre).flatten(1).float(), radius)
            params.copy_(centre + delta.view_as(params).to(params.dtype))

    def _attack_chunk(self, ctx: _Context, chunk: list[int], advance: Any) -> tuple[torch.Tensor, torch.Tensor]:
        from .base import class_seed

        o = self.options
        k = o["candidates"]
        scale, flip = policy(o["augment"])
        self._phase = None
        gens = [torch.Generator().manual_seed(class_seed(o["seed"], c)) for c in chunk]
        targets = torch.tensor(chunk, device=ctx.device).repeat_interleave(k)
        params = self.init_params(ctx, chunk, gens).to(ctx.device).detach().clone().requires_grad_(True)
        # The latent phase's draws come first, as in every latent attack; the feature phases draw after the selection's.
        step_aug = torch.cat([draw_params(g, (o["steps"], k), scale=scale, flip=flip) for g in gens], dim=1)
        select_aug = torch.cat(
            [draw_params(g, (o["selection_augs"], k), scale=o["selection_scale"] or scale, ratio=o["selection_ratio"], flip=flip) for g in gens], dim=1
        )
        try:
            params = self._optimise(ctx, params, targets, step_aug, gens, advance, lr=o["lr"])
            level_from: int | None = None
            for level in o["levels"]:
                assert ctx.prior is not None
                with torch.no_grad():
                    centre = ctx.prior.features(params, level, start=level_from).float()
                radius = (o["radius"] or 0.0) * centre.flatten(1).abs().sum(1)
                self._phase = (level, centre, radius)
                layer_aug = torch.cat([draw_params(g, (o["layer_steps"], k), scale=scale, flip=flip) for g in gens], dim=1)
                params = self._optimise(ctx, centre.clone().requires_grad_(True), targets, layer_aug, gens, advance, lr=o["layer_lr"])
                level_from = level
            return self._select(ctx, params, targets, select_aug, gens)
        finally:
            self._phase = None

    def cost(self, num_classes: int) -> dict[str, int]:
        out = super().cost(num_classes)
        o = self.options
        extra = num_classes * o["candidates"] * o["layer_steps"] * len(o["levels"])
        out["renders"] += extra
        out["optimisation"] += extra * max(1, o["eot"])
        return out


__all__ = ["DEFAULT_RADIUS", "IFGMIAttack", "project_l1_ball"]
