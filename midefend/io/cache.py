"""Where midefend keeps files it derives once and reuses (converted weights).

``$MIDEFEND_CACHE`` when set, else ``$XDG_CACHE_HOME/midefend``, else
``~/.cache/midefend``. Everything written there goes through
:func:`~midefend.io.atomic.atomic_write`, so a reader never finds a half-written
file, and every cached file carries a hash that its reader checks.

>>> import os
>>> os.environ["MIDEFEND_CACHE"] = "/tmp/midefend-cache-doctest"
>>> str(cache_dir())
'/tmp/midefend-cache-doctest'
>>> del os.environ["MIDEFEND_CACHE"]
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides the cache folder.
CACHE_ENV = "MIDEFEND_CACHE"


def cache_dir() -> Path:
    """The cache folder (not created here: writers create it when they first need it)."""
    value = os.environ.get(CACHE_ENV)
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "midefend"


__all__ = ["CACHE_ENV", "cache_dir"]
