"""Attack registry: attacks register under a name, the CLI and ``run_attack`` look them up.

Shaped like torchvision's model registry: registering a name twice is an error,
and :func:`list_attacks` filters with shell-style patterns. The registry never imports the attacks:
the package (``midefend/attacks/__init__.py``) imports the built-in ones, which register themselves,
as timm's ``register_model`` modules do.

>>> "ppa" in list_attacks()
True
>>> get_attack("ppa").__name__
'PPAAttack'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from .._names import filter_names
from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Attack

A = TypeVar("A", bound="type[Attack]")

_ATTACKS: dict[str, type[Attack]] = {}


def register_attack(name: str) -> Callable[[A], A]:
    """Class decorator: register an :class:`~midefend.attacks.base.Attack` subclass as ``name``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"attack name must be a non-empty string, got {name!r}")

    def decorator(cls: A) -> A:
        if name in _ATTACKS:
            raise ConfigError(f"attack {name!r} is already registered (by {_ATTACKS[name].__name__})")
        cls.name = name
        _ATTACKS[name] = cls
        return cls

    return decorator


def list_attacks(include: str | list[str] | None = None, exclude: str | list[str] | None = None) -> list[str]:
    """Sorted names of the registered attacks, optionally filtered by ``fnmatch`` patterns."""
    return filter_names(_ATTACKS, include, exclude)


def get_attack(name: str) -> type[Attack]:
    """The attack class registered as ``name`` (:class:`ConfigError` naming the known ones otherwise)."""
    if name not in _ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(_ATTACKS))}")
    return _ATTACKS[name]


__all__ = ["get_attack", "list_attacks", "register_attack"]
