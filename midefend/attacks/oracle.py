"""What a black-box or label-only attacker sees of the target: a query-counting oracle.

A white-box attacker differentiates through the target; a black-box attacker
behind an API only gets the probability vector, a label-only attacker only
the top-1 label. :class:`Oracle` is the one door through which the black-box
and label-only attacks of midefend reach the target:

- ``output="probabilities"``: ``softmax(logits)`` as float32 ``(B, C)``;
  ``output="label"``: ``argmax`` as int64 ``(B,)``. Nothing else leaves it
  (no logits, no features, no gradient: it computes under ``torch.no_grad``
  and returns detached tensors, so an attack cannot backpropagate into the
  target even by accident).
- **One query = one image.** Every image is charged to an *account* (the
  attacks use one account per attacked class), and each account has the
  same budget.
- **Budgets are enforced exactly, by refusal.** A call that would take any
  account past its budget raises :class:`QueryBudgetExceeded` *before* the
  target sees anything: nothing is answered, nothing is counted. So the
  count never exceeds the budget, and an attack that plans its queries from
  :meth:`Oracle.remaining` stops cleanly at it (midefend's attacks do; the
  error is the guard against a planning bug).

>>> import torch
>>> from midefend.evaluation import Classifier
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
>>> target = Classifier(net, input_size=(1, 2, 2), mean=(0.0,), std=(1.0,))
>>> oracle = Oracle(target, output="label", budget=5)
>>> oracle(torch.rand(3, 1, 2, 2)).shape, oracle.queries
(torch.Size([3]), [3])
>>> oracle(torch.rand(3, 1, 2, 2))
Traceback (most recent call last):
...
midefend.attacks.oracle.QueryBudgetExceeded: query budget exhausted: account 0 has used 3 of 5 queries and 3 more were asked
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..errors import AttackError, ConfigError
from ..evaluation.classifier import Classifier

#: What an oracle may return.
OUTPUTS = ("probabilities", "label")


class QueryBudgetExceeded(AttackError):
    """A query would have taken an account past its budget (nothing was answered or counted)."""


class Oracle:
    """The target behind an API: probabilities or labels only, queries counted per account.

    Args:
        target: the attacked model (kept private to the oracle).
        output: ``"probabilities"`` (black-box) or ``"label"`` (label-only).
        budget: queries allowed per account (``None``: unlimited, still counted).
        accounts: number of accounts (an attack uses one per class).
        autocast: keyword arguments of :class:`torch.autocast` for the target's
            forward pass (``None``: float32).
    """

    def __init__(
        self,
        target: Classifier,
        *,
        output: str = "probabilities",
        budget: int | None = None,
        accounts: int = 1,
        autocast: dict[str, Any] | None = None,
    ) -> None:
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 0):
            raise ConfigError(f"budget must be a non-negative integer or None, got {budget!r}")
        if not isinstance(accounts, int) or accounts < 1:
            raise ConfigError(f"accounts must be a positive integer, got {accounts!r}")
        self._target = target
        self.output = output
        self.budget = budget
        self._autocast = autocast
        self.queries = [0] * accounts

    def remaining(self, account: int = 0) -> int | None:
        """Queries left to ``account`` (``None`` without a budget)."""
        return None if self.budget is None else self.budget - self.queries[account]

    def __call__(self, images: torch.Tensor, accounts: torch.Tensor | None = None) -> torch.Tensor:
        """Answer one query per image of ``images (B, C, H, W)`` in ``[0, 1]``.

        Args:
            accounts: ``(B,)`` the account each image is charged to (default: all to account 0).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"an oracle query takes images (B, C, H, W), got {got}")
        n = images.shape[0]
        if accounts is None:
            accounts = torch.zeros(n, dtype=torch.long)
        if accounts.shape != (n,):
            raise ConfigError(f"accounts must have shape ({n},), got {tuple(accounts.shape)}")
        asked = torch.bincount(accounts.cpu(), minlength=len(self.queries)).tolist()
        if len(asked) > len(self.queries):
            raise ConfigError(f"accounts must be in 0..{len(self.queries) - 1}, got {int(accounts.max())}")
        if self.budget is not None:
            for account, (used, more) in enumerate(zip(self.queries, asked)):
                if used + more > self.budget:
                    raise QueryBudgetExceeded(
                        f"query budget exhausted: account {account} has used {used} of {self.budget} queries and {more} more were asked"
                    )
        with torch.no_grad(), torch.autocast(**self._autocast) if self._autocast else contextlib.nullcontext():
            logits = self._target(images).float()
        self.queries = [used + more for used, more in zip(self.queries, asked)]
        answer = logits.softmax(dim=1) if self.output == "probabilities" else logits.argmax(dim=1)
        return answer.detach()

    def __repr__(self) -> str:
        return f"Oracle(output={self.output!r}, budget={self.budget}, queries={sum(self.queries)})"


__all__ = ["OUTPUTS", "Oracle", "QueryBudgetExceeded"]
