"""The defense registry: recipes register under a name; training and the CLI look them up.

Shaped like torchvision's model registry (and midefend's attack registry):
registering a name twice is an error, :func:`list_defenses` filters with
shell-style patterns, and an unknown name is refused with the known ones. The registry never imports
the recipes: the package (``midefend/training/recipes/__init__.py``) imports the built-in ones.

>>> list_defenses()
['bido', 'calor', 'mid', 'midre', 'midre+calor', 'nls', 'nodef', 'tl']
>>> get_defense("nls").knobs
('smoothing',)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from ..._names import filter_names
from ...errors import ConfigError

if TYPE_CHECKING:
    from .base import DefenseRecipe

R = TypeVar("R", bound="type[DefenseRecipe]")

_DEFENSES: dict[str, DefenseRecipe] = {}


def register_defense(name: str) -> Callable[[R], R]:
    """Class decorator: register an instance of a :class:`~midefend.training.recipes.base.DefenseRecipe` subclass as ``name``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"defense name must be a non-empty string, got {name!r}")

    def decorator(cls: R) -> R:
        if name in _DEFENSES:
            raise ConfigError(f"defense {name!r} is already registered (by {type(_DEFENSES[name]).__name__})")
        cls.name = name
        _DEFENSES[name] = cls()
        return cls

    return decorator


def list_defenses(include: str | list[str] | None = None, exclude: str | list[str] | None = None) -> list[str]:
    """Sorted names of the registered defenses, optionally filtered by ``fnmatch`` patterns."""
    return filter_names(_DEFENSES, include, exclude)


def get_defense(name: str) -> DefenseRecipe:
    """The recipe registered as ``name``; a one-line :class:`ConfigError` naming the known ones otherwise."""
    if not isinstance(name, str) or name not in _DEFENSES:
        raise ConfigError(f"unknown defense {name!r}; known defenses: {', '.join(sorted(_DEFENSES))}")
    return _DEFENSES[name]


__all__ = ["get_defense", "list_defenses", "register_defense"]
