"""Build a model from a name, so a checkpoint's metadata alone can rebuild it.

Names carry their source: ``"timm/resnet18"``, ``"torchvision/resnet18"``, or
``"midefend/<name>"`` for the small networks midefend ships for low-resolution
data (registered with :func:`register_architecture`). The keyword arguments are
stored next to the name in checkpoints, so they must be JSON-serialisable.

>>> model = build_model("timm/resnet18", num_classes=10, in_chans=1)
>>> model.num_classes
10
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from .errors import ConfigError

_SOURCES = ("timm", "torchvision", "midefend")
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_PRETRAINED: set[str] = set()


def register_architecture(name: str, *, pretrained: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder ``fn(num_classes=..., in_chans=..., **kwargs) -> nn.Module`` as ``midefend/<name>``.

    ``pretrained=True``: the builder takes ``pretrained=True`` to start from
    weights on disk; training passes it for a fresh model (see
    :func:`fresh_kwargs`), a checkpoint never does (it brings its own weights).
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ConfigError(f"architecture 'midefend/{name}' is already registered")
        _REGISTRY[name] = fn
        if pretrained:
            _PRETRAINED.add(name)
        return fn

    return decorator


def fresh_kwargs(arch: str) -> dict[str, Any]:
    """Extra builder arguments for a model about to be trained: ``{"pretrained": True}`` where weights exist."""
    source, name = split_arch(arch)
    return {"pretrained": True} if source == "midefend" and name in _PRETRAINED else {}


def list_architectures() -> list[str]:
    """midefend's own architectures (timm and torchvision names are accepted too)."""
    _load_builtin()
    return sorted(f"midefend/{name}" for name in _REGISTRY)


def split_arch(arch: str) -> tuple[str, str]:
    """``"timm/resnet18"`` -> ``("timm", "resnet18")``; a bare name is midefend's when registered (``"facenet"``), else timm's."""
    if not isinstance(arch, str) or not arch:
        raise ConfigError(f"arch must be a non-empty string like 'timm/resnet18', got {arch!r}")
    source, sep, name = arch.partition("/")
    if not sep:
        _load_builtin()
        return ("midefend", arch) if arch in _REGISTRY else ("timm", arch)
    if source not in _SOURCES:
        raise ConfigError(f"unknown architecture source {source!r} in {arch!r}; expected one of {', '.join(_SOURCES)}")
    return source, name


def build_model(arch: str, *, num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Create an untrained model (no weights are ever downloaded)."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    source, name = split_arch(arch)
    if source == "timm":
        import timm

        if not timm.is_model(name):
            raise ConfigError(f"unknown timm architecture {name!r}")
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if source == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise ConfigError(f"unknown torchvision architecture {name!r}")
        if in_chans != 3:
            raise ConfigError(f"torchvision models take 3 input channels, got in_chans={in_chans}")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    _load_builtin()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ConfigError(f"unknown midefend architecture {name!r} (known: {known})")
    return _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, **kwargs)


def _load_builtin() -> None:
    # midefend's own small networks register themselves on import.
    from . import nets  # noqa: F401
    from .facenet import backbone  # noqa: F401


__all__ = ["build_model", "fresh_kwargs", "list_architectures", "register_architecture", "split_arch"]
