"""Face recognisers by name: the independent judges ``verify`` asks for, behind one small interface.

A recogniser is a module with

- ``name``: its registry name (``"facenet"``, ``"dlib"``);
- ``description``: exactly which network it is (weights, training data, output size);
- ``embed(images)``: ``(B, C, H, W)`` in ``[0, 1]``, C 1 or 3, any size -> ``(B, D)`` embeddings
  (nearest identity by l2 distance, see :class:`~midefend.evaluation.identity.NearestIdentityEvaluator`);
- optionally ``aligned(images)`` -> ``(B,)`` bool, where it aligns faces and can fall back.

This module only keeps the table; the packages that implement recognisers
register them (the built-ins, FaceNet then dlib, in
:mod:`midefend.evaluation`'s ``__init__``), so adding a third touches neither
this file nor ``verify``::

    register_recogniser("arcface", load_arcface, arcface_installed, "ArcFace R100 (MS1MV3, 512-d)")

>>> "facenet" in registered_recognisers() and "dlib" in registered_recognisers()
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class RecogniserSpec:
    """One registry entry: how to load a recogniser and whether it is installed."""

    name: str
    loader: Callable[..., Any]
    is_available: Callable[[], bool]
    description: str


_REGISTRY: dict[str, RecogniserSpec] = {}


def register_recogniser(name: str, loader: Callable[..., Any], is_available: Callable[[], bool], description: str) -> None:
    """Add a recogniser: ``loader(device=...)`` returns the module, ``is_available()`` says whether it can.

    Registering the same entry again (a re-imported package) is a no-op; another entry under a taken name is refused.

    Raises:
        ConfigError: an empty name or description, a loader that is not callable, or a name already taken.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"a face recogniser needs a non-empty name without surrounding spaces, got {name!r}")
    if not callable(loader) or not callable(is_available):
        raise ConfigError(f"face recogniser {name!r}: loader and is_available must be callables")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"face recogniser {name!r} needs a description saying which network it is")
    spec = RecogniserSpec(name, loader, is_available, description)
    if name in _REGISTRY and _REGISTRY[name] != spec:
        raise ConfigError(f"a face recogniser named {name!r} is already registered ({_REGISTRY[name].description})")
    _REGISTRY[name] = spec


def registered_recognisers() -> list[str]:
    """Every registered recogniser's name, installed or not, in registration order."""
    return list(_REGISTRY)


def available_recognisers() -> list[str]:
    """The registered recognisers that are installed, in registration order (the built-ins: facenet, dlib)."""
    return [name for name, spec in _REGISTRY.items() if spec.is_available()]


def recogniser_spec(name: str) -> RecogniserSpec:
    """The registry entry of ``name``; a one-line ConfigError listing the known names otherwise."""
    if name not in _REGISTRY:
        known = ", ".join(_REGISTRY) or "none"
        raise ConfigError(f"unknown face recogniser {name!r}; known: {known}")
    return _REGISTRY[name]


def load_recogniser(name: str, device: str | torch.device = "cpu") -> Any:
    """The recogniser ``name``, loaded on ``device``: a module with ``.name``, ``.description`` and ``.embed(images)``.

    Raises:
        ConfigError: an unknown name (the message lists the known ones), a recogniser
            that is not installed (its loader's one-line message), or a loader whose
            module lacks the interface.
    """
    spec = recogniser_spec(name)
    module = spec.loader(device=device)
    missing = [attr for attr in ("name", "description", "embed") if not hasattr(module, attr)]
    if missing:
        raise ConfigError(f"face recogniser {name!r}: its loader returned {type(module).__name__} without {', '.join(missing)}")
    if module.name != name:
        raise ConfigError(f"face recogniser {name!r}: its loader returned a module named {module.name!r}")
    return module


__all__ = ["RecogniserSpec", "available_recognisers", "load_recogniser", "recogniser_spec", "register_recogniser", "registered_recognisers"]
