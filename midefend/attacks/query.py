"""The engine hook of the query attacks (black-box, label-only): the target only through an oracle.

:class:`QueryAttack` keeps everything of :class:`~midefend.attacks.base.Attack`
that does not touch the target — per-class seeding, chunks, resume, the
result store — and replaces the gradient loop by :meth:`QueryAttack.search`,
which sees the target only through an :class:`~midefend.attacks.oracle.Oracle`
with one account per class and a per-class budget (``query_budget``).

Queries. Every image an attack shows the target is a query, charged to the
class it is for; queries spent once for all classes (a shared pool of initial
latents, seeded by ``seed`` alone) are counted apart. The counts are kept in
``out_dir/queries.json`` (written before the class's result), so a resumed
run reports the same total as an uninterrupted one. ``result.config`` gets
``queries`` (the total), ``queries_shared`` and ``queries_per_class``.

Reporting. ``result.target_confidence`` (the target's probability of the
class on each final reconstruction) is computed for the report after the
search, outside the oracle and uncounted; the attack never sees it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import AttackError, ConfigError
from ..evaluation.classifier import Classifier
from .augment import apply_params
from .base import AttackResult, LatentAttack, _Context, class_seed
from .oracle import Oracle
from .priors import GenerativePrior

_QUERY_FILE = "queries.json"


class QueryAttack(LatentAttack):
    """Base of attacks that query the target through an :class:`Oracle` (override :meth:`search`).

    Extra option: ``query_budget`` — queries allowed per class (``None``: as
    many as the other settings need). Subclasses set :attr:`threat_model`
    and :attr:`oracle_output`.
    """

    threat_model: ClassVar[str] = "black-box"
    oracle_output: ClassVar[str] = "probabilities"

    def validate_extra(self) -> None:
        super().validate_extra()
        budget = self.options.get("query_budget")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
            raise ConfigError(f"query_budget must be a positive integer or None, got {budget!r}")

    # ------------------------------------------------------------------ hooks

    def search(self, ctx: _Context, oracle: Oracle, classes: list[int], gens: list[torch.Generator], advance: Any) -> torch.Tensor:
        """Final latents ``(len(classes), per_class, latent_dim)``, best first (override)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses

    def ask(
        self,
        ctx: _Context,
        oracle: Oracle,
        latents: torch.Tensor,
        accounts: torch.Tensor,
        aug: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Render ``latents`` (optionally augmented by ``aug (B, NUM_PARAMS)``, see :mod:`~midefend.attacks.augment`) and query them, in slices of ``max_batch``."""
        answers = []
        step = self.options["max_batch"]
        for start in range(0, latents.shape[0], step):
            with torch.no_grad(), torch.autocast(**ctx.autocast):
                images = self.render(ctx, latents[start : start + step].to(ctx.device))
                if aug is not None:
                    images = apply_params(images, aug[start : start + step])
            answers.append(oracle(images.float().clamp(0.0, 1.0), accounts[start : start + step]).cpu())
        return torch.cat(answers)

    def affordable(self, oracle: Oracle, fixed: int, per_round: int, wanted: int) -> int:
        """How many rounds of ``per_round`` queries per class fit after ``fixed`` ones: ``min(wanted, ...)``."""
        if oracle.budget is None:
            return wanted
        if fixed > oracle.budget:
            raise AttackError(
                f"attack {self.name!r} needs at least {fixed} queries per class before its first step; query_budget is {oracle.budget}"
            )
        return min(wanted, (oracle.budget - fixed) // per_round)

    # ------------------------------------------------------------------ engine

    def run(self, target: Classifier, prior: GenerativePrior | None = None, **kwargs: Any) -> AttackResult:
        """:meth:`Attack.run <midefend.attacks.base.Attack.run>`, with the query counts in ``result.config``."""
        out_dir = kwargs.get("out_dir")
        self._query_log = _QueryLog(Path(out_dir) / _QUERY_FILE if out_dir is not None else None, bool(kwargs.get("resume")))
        result = super().run(target, prior, **kwargs)
        per_class = self._query_log.counts(result.classes)
        result.config["queries"] = self._query_log.shared + sum(per_class) if None not in per_class else None
        result.config["queries_shared"] = self._query_log.shared
        result.config["queries_per_class"] = per_class
        return result

    def _attack_chunk(self, ctx: _Context, chunk: list[int], advance: Any) -> tuple[torch.Tensor, torch.Tensor]:
        gens = [torch.Generator().manual_seed(class_seed(self.options["seed"], c)) for c in chunk]
        oracle = Oracle(ctx.target, output=self.oracle_output, budget=self.options["query_budget"], accounts=len(chunk), autocast=ctx.autocast)
        latents = self.search(ctx, oracle, chunk, gens, advance)
        self._query_log.record(dict(zip(chunk, oracle.queries)))
        n, k = latents.shape[:2]
        with torch.inference_mode():  # for the report only: never shown to the attack
            images = self.render(ctx, latents.reshape(n * k, -1).to(ctx.device)).float().clamp(0, 1)
            targets = torch.tensor(chunk, device=ctx.device).repeat_interleave(k)
            conf = ctx.target(images).float().softmax(1)[torch.arange(n * k, device=ctx.device), targets]
        return images.view(n, k, *images.shape[1:]).cpu().contiguous(), conf.view(n, k).cpu()


class _QueryLog:
    """Query counts per class (and of the shared pool), kept in ``queries.json`` for resume."""

    def __init__(self, path: Path | None, resume: bool) -> None:
        self.path = path
        self.classes: dict[str, int] = {}
        self.shared = 0
        if resume and path is not None and path.is_file():
            try:
                saved = json.loads(path.read_text())
                self.classes = {str(k): int(v) for k, v in saved["classes"].items()}
                self.shared = int(saved["shared"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise AttackError(f"cannot resume: {str(path)!r} is unreadable ({exc})") from None

    def record(self, counts: dict[int, int]) -> None:
        self.classes.update({str(c): int(q) for c, q in counts.items()})
        self._save()

    def record_shared(self, count: int) -> None:
        """Queries spent once per run for all classes (a shared pool of initial latents)."""
        self.shared = int(count)
        self._save()

    def _save(self) -> None:
        from ..io.atomic import atomic_write_text

        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"shared": self.shared, "classes": self.classes}, indent=1, sort_keys=True))

    def counts(self, classes: list[int]) -> list[int | None]:
        return [self.classes.get(str(c)) for c in classes]


def merged_query_counts(folders: list[Path], classes: list[int]) -> dict[str, Any]:
    """The query counts of a sharded run, as one process would report them (``{}`` when no shard counted).

    Each shard spends the shared pool once, on the same latents (it is seeded by ``seed`` alone), so the
    merged figure counts it once: what one attacker needs, and what a single-process run reports.
    """
    logs = [_QueryLog(folder / _QUERY_FILE, resume=True) for folder in folders if (folder / _QUERY_FILE).is_file()]
    if not logs:
        return {}
    merged = _QueryLog(None, resume=False)
    for log in logs:
        merged.classes.update(log.classes)
        merged.shared = max(merged.shared, log.shared)
    per_class = merged.counts(classes)
    total = merged.shared + sum(per_class) if None not in per_class else None  # type: ignore[arg-type]
    return {"queries": total, "queries_shared": merged.shared, "queries_per_class": per_class}


__all__ = ["QueryAttack", "merged_query_counts"]
