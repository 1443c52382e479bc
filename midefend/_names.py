"""Name filtering shared by the attack and defense registries (torchvision's ``list_models`` shape)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable


def filter_names(names: Iterable[str], include: str | list[str] | None = None, exclude: str | list[str] | None = None) -> list[str]:
    """Sorted ``names`` kept by any ``include`` pattern and dropped by any ``exclude`` pattern (``fnmatch``).

    >>> filter_names(["ppa", "gmi", "plg"], include="p*", exclude="plg")
    ['ppa']
    """
    out = sorted(names)
    if include is not None:
        patterns = [include] if isinstance(include, str) else list(include)
        out = [n for n in out if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if exclude is not None:
        patterns = [exclude] if isinstance(exclude, str) else list(exclude)
        out = [n for n in out if not any(fnmatch.fnmatch(n, p) for p in patterns)]
    return out
