"""NES — a black-box, score-based attack: natural evolution strategies over the prior's latents.

The attacker sees only the target's probability vector (through an
:class:`~midefend.attacks.oracle.Oracle`), never a gradient. It maximises the
margin of the class in log-probability space,

    ``f(z) = log p_y(G(z)) − max_{j≠y} log p_j(G(z))``

(which equals the logit margin ``z_y − max_{j≠y} z_j``, PLG-MI's max-margin,
recovered from probabilities), with the antithetic NES gradient estimate
(Wierstra et al., 2014; Ilyas et al., 2018)

    ``ĝ = Σ_i (f(z + σ ε_i) − f(z − σ ε_i)) ε_i / (2 n σ)``,  ``ε_i ~ N(0, I)``, ``i = 1..n``,

fed to Adam (ascent). Each pair of a step sees the same random crop/flip of
the step (common random numbers), so augmentation adds no noise to the
difference. Mirror's black-box variant (An et al., 2022) searches the same
kind of latent space with a genetic algorithm; NES spends the same queries on
a gradient estimate.

The objective is fixed (the ``loss`` option of the gradient attacks has no
effect here). Queries: a shared pool of ``init_pool`` random latents is scored once
(each class starts from its ``candidates`` best, as in PPA); then per class
``steps · candidates · 2 · samples`` for the search and ``candidates ·
(selection_augs + 1)`` for the final choice (skipped when ``candidates ==
per_class``: the clean answer orders them, ``candidates`` queries). With
``query_budget`` set, ``steps`` shrinks to what the budget affords.

Defaults, sized for a portfolio on ORL (40 classes, face GAN, ~10 ms per
query on 2 busy CPU cores, dominated by the generator): ``samples=8``,
``steps=15``, 4 candidates, 1,000 pool latents: 964 queries per class,
~40,000 in all (~7 minutes). Preset ``"fast"``: 5 steps, 500 pool latents
(324 per class). NES wants more: raise ``steps`` or set ``query_budget``.

>>> NESAttack().options["samples"], NESAttack.threat_model
(8, 'black-box')
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .augment import NUM_PARAMS, draw_params, policy
from .base import _Context
from .oracle import Oracle
from .query import QueryAttack
from .registry import register_attack

_TINY = 1e-30  # probabilities below this count as this (log stays finite: margins cap at ~69)


def log_margin(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log p_y − max_{j≠y} log p_j`` per row of ``probs (B, C)`` (the logit margin, from probabilities).

    >>> round(float(log_margin(torch.tensor([[0.5, 0.25, 0.25]]), torch.tensor([0]))[0]), 4)
    0.6931
    """
    logp = probs.clamp_min(_TINY).log()
    own = logp.gather(1, targets[:, None]).squeeze(1)
    others = logp.scatter(1, targets[:, None], float("-inf")).amax(dim=1)
    return own - others


@register_attack("nes")
class NESAttack(QueryAttack):
    """Black-box latent search with antithetic NES gradient estimates (probabilities only)."""

    threat_model = "black-box"
    oracle_output = "probabilities"
    defaults = {"steps": 15, "lr": 0.1, "init_pool": 1000, "samples": 8, "sigma": 0.3, "query_budget": None}
    presets = {"fast": {"steps": 5, "init_pool": 500}}

    def validate_extra(self) -> None:
        super().validate_extra()
        o = self.options
        if not isinstance(o["samples"], int) or isinstance(o["samples"], bool) or o["samples"] < 1:
            raise ConfigError(f"samples must be a positive integer, got {o['samples']!r}")
        if not (isinstance(o["sigma"], (int, float)) and o["sigma"] > 0):
            raise ConfigError(f"sigma must be a positive number, got {o['sigma']!r}")
        if o["init_pool"] == 0:
            raise ConfigError("init_pool must be positive for the black-box attack (it starts from the best pool latents)")

    def cost(self, num_classes: int) -> dict[str, int]:
        """Images through the target (all forward only, all queries): the pool in ``init`` with the search."""
        o = self.options
        k, selecting = o["candidates"], o["candidates"] > o["per_class"]
        per_class = o["steps"] * k * 2 * o["samples"] + (k * (o["selection_augs"] + 1) if selecting else k)
        if o["query_budget"] is not None:
            per_class = min(per_class, o["query_budget"])
        return {"optimisation": 0, "selection": 0, "init": o["init_pool"] + num_classes * per_class, "kept": num_classes * o["per_class"]}

    def search(self, ctx: _Context, oracle: Oracle, classes: list[int], gens: list[torch.Generator], advance: Any) -> torch.Tensor:
        o = self.options
        n, k, pairs, sigma = len(classes), o["candidates"], o["samples"], float(o["sigma"])
        selecting = k > o["per_class"]
        select_cost = k * (o["selection_augs"] + 1) if selecting else k
        steps = self.affordable(oracle, select_cost, 2 * pairs * k, o["steps"])
        scale, flip = policy(o["augment"])
        latents = self._start(ctx, classes)  # (n, k, d)
        d = latents.shape[-1]
        owners = torch.arange(n).repeat_interleave(k)  # one oracle account per class
        targets = torch.tensor(classes).repeat_interleave(k)
        step_aug = torch.stack([draw_params(g, (steps, k), scale=scale, flip=flip) for g in gens], dim=1)  # (T, n, k, NUM_PARAMS)
        z = latents.reshape(n * k, d).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=o["lr"])
        for step in range(steps):
            eps = torch.stack([torch.randn(k, pairs, d, generator=g) for g in gens]).reshape(n * k, pairs, d)
            points = torch.cat([z.detach()[:, None] + sigma * eps, z.detach()[:, None] - sigma * eps], dim=1)  # (nk, 2p, d)
            aug = step_aug[step].reshape(n * k, 1, NUM_PARAMS).expand(-1, 2 * pairs, -1).reshape(-1, NUM_PARAMS)
            augment = aug if o["augment"] != "none" else None
            probs = self.ask(ctx, oracle, points.reshape(-1, d), owners.repeat_interleave(2 * pairs), augment)
            f = log_margin(probs, targets.repeat_interleave(2 * pairs)).view(n * k, 2, pairs)
            grad = ((f[:, 0] - f[:, 1])[..., None] * eps).sum(dim=1) / (2 * pairs * sigma)
            optimizer.zero_grad(set_to_none=True)
            z.grad = -grad  # ascent on f
            optimizer.step()
            advance(1)
        advance(o["steps"] - steps)
        return self._choose(ctx, oracle, z.detach(), targets, owners, gens, selecting).view(n, o["per_class"], d)

    def _start(self, ctx: _Context, classes: list[int]) -> torch.Tensor:
        """Each class's ``candidates`` best latents of the shared pool, scored once through a pool oracle."""
        if ctx.pool_scores is None:
            assert ctx.prior is not None
            pool = ctx.prior.sample_latents(self.options["init_pool"], generator=torch.Generator().manual_seed(self.options["seed"]))
            oracle = Oracle(ctx.target, output="probabilities", autocast=ctx.autocast)
            probs = self.ask(ctx, oracle, pool, torch.zeros(pool.shape[0], dtype=torch.long))
            ctx.pool_latents, ctx.pool_scores = pool, probs.clamp_min(_TINY).log()
            self._query_log.record_shared(oracle.queries[0])
        best = ctx.pool_scores[:, classes].topk(self.options["candidates"], dim=0).indices.T  # (n, k)
        return ctx.pool_latents[best]

    def _choose(
        self, ctx: _Context, oracle: Oracle, z: torch.Tensor, targets: torch.Tensor, owners: torch.Tensor, gens: list[torch.Generator], selecting: bool
    ) -> torch.Tensor:
        """Keep ``per_class`` candidates: highest mean probability over the clean image and ``selection_augs`` augmentations."""
        o = self.options
        n, k = len(gens), o["candidates"]
        rows = torch.arange(n * k)
        clean = self.ask(ctx, oracle, z, owners)
        if not selecting:  # nothing to drop: order by the clean margin
            score = log_margin(clean, targets)
        else:
            scale, flip = policy(o["augment"])
            augs = torch.stack(
                [draw_params(g, (o["selection_augs"], k), scale=o["selection_scale"] or scale, ratio=o["selection_ratio"], flip=flip) for g in gens],
                dim=1,
            )
            score = clean[rows, targets]
            for i in range(o["selection_augs"]):
                score = score + self.ask(ctx, oracle, z, owners, augs[i].reshape(-1, NUM_PARAMS))[rows, targets]
        order = score.view(n, k).argsort(dim=1, descending=True, stable=True)[:, : o["per_class"]]
        return z.view(n, k, -1)[torch.arange(n)[:, None], order]


__all__ = ["NESAttack", "log_margin"]
