"""BREP-MI — label-only model inversion by boundary repulsion (Kahla et al., CVPR 2022).

The attacker sees only the target's top-1 label (an
:class:`~midefend.attacks.oracle.Oracle` with ``output="label"``). Per class
``y`` and candidate:

1. **Start inside the class**: draw random latents of the prior (from the
   class's own seeded stream, ``init_batch`` at a time) until the target
   labels ``candidates`` of them ``y``, spending at most ``init_queries``
   queries. A class with fewer hits reuses its hits; a class with none starts
   from its first random latents and cannot move (its reconstructions are
   then no better than random faces — the target's accuracy on them says so).
2. **Repel from the boundary**: sample ``points`` latents on the sphere of
   radius ``R`` around ``z`` (``z + R·u``, ``u`` uniform on the unit sphere)
   and ask their labels. The directions whose points leave the class point
   at the decision boundary; BREP moves the other way,
   ``M = −Σ_{label(z+R·u_n) ≠ y} u_n``, by ``step · R`` along ``M/‖M‖``, and
   keeps the move only if the target still labels the new point ``y`` (one
   more query). When every point of the sphere is inside the class, the
   sphere grows: ``R ← min(R · growth, max_radius)``.
3. The ``per_class`` candidates with the largest final radius are kept,
   largest first (a larger sphere fitted inside the class = farther from
   every boundary), the only confidence a label-only attacker can measure.

It queries the images as rendered: the ``augment`` and ``loss`` options of
the other attacks have no effect here.

Everything the attack decides depends only on labels: two targets with the
same argmax give the same reconstructions under one seed.

Queries per class: at most ``init_queries`` for the start, then per
iteration ``candidates · points`` for the sphere plus one per candidate that
moves; a class stops when its next iteration would not fit ``query_budget``
(or after ``steps`` iterations). Defaults, sized for a portfolio
(``points=16``, ``steps=12``, 4 candidates, ``init_queries=256``): at most
1,072 queries per class, ~43,000 for ORL's 40 classes (~7 minutes at ~10 ms
per query on 2 busy CPU cores); preset ``"fast"``: 4 iterations, 128 start
queries (at most 400 per class). The paper spends far more queries (a radius
schedule of thousands of iterations): read this as a budgeted BREP.

>>> BREPAttack.threat_model, BREPAttack().options["points"]
('label-only', 16)
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import _Context
from .oracle import Oracle
from .query import QueryAttack
from .registry import register_attack


@register_attack("brep")
class BREPAttack(QueryAttack):
    """Label-only boundary-repelling search in the prior's latent space."""

    threat_model = "label-only"
    oracle_output = "label"
    defaults = {
        "steps": 12,
        "points": 16,
        "radius": 2.0,
        "growth": 1.3,
        "max_radius": 12.0,
        "step": 1 / 3,
        "init_queries": 256,
        "init_batch": 64,
        "init_pool": 0,
        "augment": "none",
        "selection_augs": 0,
        "query_budget": None,
    }
    presets = {"fast": {"steps": 4, "init_queries": 128}}

    def validate_extra(self) -> None:
        super().validate_extra()
        o = self.options
        for key in ("points", "init_queries", "init_batch"):
            if not isinstance(o[key], int) or isinstance(o[key], bool) or o[key] < 1:
                raise ConfigError(f"{key} must be a positive integer, got {o[key]!r}")
        for key in ("radius", "max_radius", "step"):
            if not (isinstance(o[key], (int, float)) and o[key] > 0):
                raise ConfigError(f"{key} must be a positive number, got {o[key]!r}")
        if not (isinstance(o["growth"], (int, float)) and o["growth"] >= 1):
            raise ConfigError(f"growth must be a number >= 1, got {o['growth']!r}")
        if o["init_batch"] < o["candidates"]:
            raise ConfigError(f"init_batch must be >= candidates ({o['candidates']}), got {o['init_batch']}")
        if o["init_pool"] != 0:
            raise ConfigError("brep draws its own starting latents: leave init_pool at 0")
        budget = o["query_budget"]
        if budget is not None and budget < o["init_queries"]:
            raise ConfigError(f"query_budget ({budget}) must cover init_queries ({o['init_queries']})")

    def cost(self, num_classes: int) -> dict[str, int]:
        """At most this many images through the target (forward only, all queries; in ``init``)."""
        o = self.options
        per_class = o["init_queries"] + o["steps"] * o["candidates"] * (o["points"] + 1)
        if o["query_budget"] is not None:
            per_class = min(per_class, o["query_budget"])
        return {"optimisation": 0, "selection": 0, "init": num_classes * per_class, "kept": num_classes * o["per_class"]}

    def search(self, ctx: _Context, oracle: Oracle, classes: list[int], gens: list[torch.Generator], advance: Any) -> torch.Tensor:
        o = self.options
        n, k, m = len(classes), o["candidates"], o["points"]
        targets = torch.tensor(classes).repeat_interleave(k)
        owners = torch.arange(n).repeat_interleave(k)
        z = self._start(ctx, oracle, classes, gens)  # (n*k, d)
        d = z.shape[1]
        radius = torch.full((n * k,), float(o["radius"]))
        for _ in range(o["steps"]):
            # A class takes part in an iteration only if its whole worst case fits its budget.
            active = torch.tensor([self._fits(oracle, i, k * (m + 1)) for i in range(n)])
            if not active.any():
                break
            rows = active.repeat_interleave(k).nonzero().squeeze(1)
            u = torch.stack([torch.randn(k, m, d, generator=g) for g, a in zip(gens, active.tolist()) if a]).reshape(-1, m, d)
            u = u / u.norm(dim=2, keepdim=True)
            sphere = z[rows, None] + radius[rows, None, None] * u
            labels = self.ask(ctx, oracle, sphere.reshape(-1, d), owners[rows].repeat_interleave(m)).view(-1, m)
            outside = labels != targets[rows, None]
            inside_all = ~outside.any(dim=1)
            radius[rows[inside_all]] = (radius[rows[inside_all]] * o["growth"]).clamp(max=o["max_radius"])
            away = -(outside[..., None] * u).sum(dim=1)
            norm = away.norm(dim=1)
            moving = norm > 0
            if moving.any():
                movers = rows[moving]
                proposal = z[movers] + (o["step"] * radius[movers] / norm[moving])[:, None] * away[moving]
                kept = self.ask(ctx, oracle, proposal, owners[movers]) == targets[movers]
                z[movers[kept]] = proposal[kept]
            advance(1)
        order = radius.view(n, k).argsort(dim=1, descending=True, stable=True)[:, : o["per_class"]]
        return z.view(n, k, d)[torch.arange(n)[:, None], order]

    @staticmethod
    def _fits(oracle: Oracle, account: int, cost: int) -> bool:
        left = oracle.remaining(account)
        return left is None or left >= cost

    def _start(self, ctx: _Context, oracle: Oracle, classes: list[int], gens: list[torch.Generator]) -> torch.Tensor:
        """``candidates`` latents per class that the target labels as the class (see the module docstring)."""
        assert ctx.prior is not None
        o = self.options
        k, batch = o["candidates"], o["init_batch"]
        hits: list[list[torch.Tensor]] = [[] for _ in classes]
        first: list[torch.Tensor | None] = [None] * len(classes)
        spent = 0
        while spent + batch <= o["init_queries"]:
            searching = [i for i in range(len(classes)) if len(hits[i]) < k]
            if not searching:
                break
            drawn = [ctx.prior.sample_latents(batch, generator=gens[i]) for i in searching]
            accounts = torch.tensor(searching).repeat_interleave(batch)
            labels = self.ask(ctx, oracle, torch.cat(drawn), accounts).view(len(searching), batch)
            for row, i in enumerate(searching):
                first[i] = drawn[row] if first[i] is None else first[i]
                hits[i].extend(drawn[row][labels[row] == classes[i]])
            spent += batch
        starts = []
        for i in range(len(classes)):
            found = hits[i][:k]
            if found:
                starts.append(torch.stack([found[j % len(found)] for j in range(k)]))
            else:
                fallback = first[i] if first[i] is not None else ctx.prior.sample_latents(k, generator=gens[i])
                starts.append(fallback[:k])
        return torch.cat(starts)


__all__ = ["BREPAttack"]
