"""One shard of an attack run: shard ``i`` of ``N`` owns a contiguous, balanced group of whole chunks.

The engine (:mod:`midefend.attacks.base`) selects a shard's chunks with it; :mod:`midefend.attacks.sharding`
runs shards and merges their results.

>>> Shard.parse("1/4")
Shard(index=1, count=4)
>>> Shard(1, 4).dirname
'shard-0001-of-0004'
>>> chunks = [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
>>> [Shard(i, 2).select(chunks) for i in range(2)]
[[[0, 1], [2, 3]], [[4, 5], [6, 7], [8]]]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError

_SPEC_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count`` fixed shards of a class list."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"shard count must be a positive integer, got {self.count!r}")
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index < self.count:
            raise ConfigError(f"shard index must be in 0..{self.count - 1} for {self.count} shards, got {self.index!r}")

    @classmethod
    def parse(cls, spec: str | Shard) -> Shard:
        """``"i/N"`` (``i`` from 0 to ``N-1``, e.g. ``$SLURM_ARRAY_TASK_ID/N``) -> :class:`Shard`."""
        if isinstance(spec, Shard):
            return spec
        match = _SPEC_PATTERN.match(str(spec))
        if match is None:
            raise ConfigError(f"shard must look like 'i/N' with 0 <= i < N (e.g. '0/4'), got {spec!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def dirname(self) -> str:
        """The shard's result folder name, ``shard-<i>-of-<N>``."""
        return f"shard-{self.index:04d}-of-{self.count:04d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, chunks: Sequence[Sequence[int]]) -> list[list[int]]:
        """This shard's contiguous, balanced group of whole chunks (empty when there are fewer chunks than shards)."""
        m = len(chunks)
        return [list(chunk) for chunk in chunks[self.index * m // self.count : (self.index + 1) * m // self.count]]


__all__ = ["Shard"]
