"""Defense recipes registered by name (``nodef``, ``midre``, ``calor``, ``midre+calor``, ``nls``, ``mid``, ``bido``, ``tl``).

>>> get_defense("mid").knobs
('beta',)
"""

from __future__ import annotations

from .base import DefenseRecipe as DefenseRecipe
from .base import criterion_attached as criterion_attached
from .base import set_epoch as set_epoch
from .registry import get_defense as get_defense
from .registry import list_defenses as list_defenses
from .registry import register_defense as register_defense

# The built-in recipes register themselves on import (the registry never imports them).
from . import published as published  # noqa: E402  nodef, midre, calor, midre+calor
from . import baselines as baselines  # noqa: E402  nls, mid, bido, tl

__all__ = ["DefenseRecipe", "criterion_attached", "get_defense", "list_defenses", "register_defense", "set_epoch"]
