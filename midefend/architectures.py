"""Build a model from a name, so a checkpoint's metadata alone can rebuild it.

Names carry their source:

- ``"timm/resnet18"`` and ``"torchvision/resnet18"``: those libraries' models;
- ``"transformers/<model_type>"`` (``transformers/vit``, ``transformers/convnext``, ...):
  a Hugging Face image classifier built from the config in ``arch_kwargs["config"]``
  (no download; ``pip install 'midefend[hf]'``); its forward returns the logits
  tensor, not a ``ModelOutput``;
- ``"midefend/<name>"``: the small networks midefend ships;
- ``"<namespace>/<name>"``: your own, registered with :func:`register_architecture`.

A new process (``midefend verify`` on your checkpoint) finds your architectures
when their module is imported: ``midefend --arch-module my_pkg.models verify ...``,
``$MIDEFEND_ARCH_MODULES=my_pkg.models`` (comma-separated), or an entry point in
the ``midefend.architectures`` group of your package's metadata
(``[project.entry-points."midefend.architectures"] my_pkg = "my_pkg.models"``).
The keyword arguments are stored next to the name in checkpoints, so they must be
JSON-serialisable.

>>> model = build_model("timm/resnet18", num_classes=10, in_chans=1)
>>> model.num_classes
10
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from ._validate import check_positive_int
from .errors import ConfigError

_SOURCES = ("timm", "torchvision", "transformers", "midefend")
#: Namespaces of libraries midefend builds itself; user architectures take any other.
_RESERVED = ("timm", "torchvision", "transformers")
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
#: Builders that accept ``pretrained=True`` (see :func:`fresh_kwargs`).
PRETRAINED = frozenset({"midefend/facenet"})
#: Environment variable naming modules that register architectures (comma-separated).
ARCH_MODULES_ENV = "MIDEFEND_ARCH_MODULES"
ENTRY_POINT_GROUP = "midefend.architectures"
_plugins_loaded = False


def _full_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip("/") or name.count("/") > 1:
        raise ConfigError(f"architecture name must be 'name' or 'namespace/name', got {name!r}")
    full = name if "/" in name else f"midefend/{name}"
    if full.split("/")[0] in _RESERVED:
        raise ConfigError(f"architecture namespace {full.split('/')[0]!r} belongs to that library; register {name!r} under your own, e.g. 'my_pkg/{full.split('/')[1]}'")
    return full


def register_architecture(name: str, builder: Callable[..., nn.Module] | None = None) -> Any:
    """Register ``builder(num_classes=..., in_chans=..., **kwargs) -> nn.Module`` under ``name``.

    ``name`` is ``"namespace/name"`` (``"my_pkg/facenet"``); a bare name means
    ``"midefend/<name>"``. Use it as a decorator or call it with the builder;
    a second registration of the same name is a :class:`ConfigError`.

    >>> import torch.nn as nn
    >>> @register_architecture("doctest/tiny_mlp")
    ... def tiny_mlp(*, num_classes, in_chans=1, size=8):
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * size * size, num_classes))
    >>> build_model("doctest/tiny_mlp", num_classes=3)[1].out_features
    3
    """
    full = _full_name(name)

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(fn):
            raise ConfigError(f"the builder of architecture {full!r} must be callable, got {type(fn).__name__}")
        if full in _REGISTRY:
            raise ConfigError(f"architecture {full!r} is already registered")
        _REGISTRY[full] = fn
        return fn

    return decorator(builder) if builder is not None else decorator


def import_architecture_modules(modules: str | list[str]) -> list[str]:
    """Import modules that register architectures (``"a.b,c.d"`` or a list; found on ``sys.path`` or in the current folder)."""

    names = [m.strip() for m in (modules.split(",") if isinstance(modules, str) else modules) if m and m.strip()]
    for module in names:
        import_user_module(module, kind="architecture")
    return names


def import_user_module(module: str, *, kind: str) -> Any:
    """Import a user's module by dotted name (on ``sys.path`` or in the current folder); any error is one :class:`ConfigError` line.

    The trust rule of every plug-in (``--arch-module``, ``--prior-module``): naming a module runs its code, as
    ``python -c "import module"`` would; that is the user's explicit choice. Weights never run code: they are
    read from safetensors files only.
    """
    import importlib
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # the `midefend` script does not search the current folder by itself
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in a user's module: one line naming it
        raise ConfigError(f"cannot import {kind} module {module!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def _load_plugins() -> None:
    """Import ``$MIDEFEND_ARCH_MODULES`` and the ``midefend.architectures`` entry points (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import os
    from importlib.metadata import entry_points

    import_architecture_modules(os.environ.get(ARCH_MODULES_ENV, ""))
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()  # a module (registers on import) or a function (called below)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot load architecture plug-in {entry.name!r} ({entry.value}): {type(exc).__name__}: {exc}") from None


def list_architectures() -> list[str]:
    """Registered architectures: midefend's own and plug-ins (timm, torchvision, transformers names work too)."""
    _load_builtin()
    _load_plugins()
    return sorted(_REGISTRY)


def split_arch(arch: str) -> tuple[str, str]:
    """``"timm/resnet18"`` -> ``("timm", "resnet18")``; a bare name is midefend's when it has one (``"facenet"``), else timm's; any other namespace is a registry name."""
    if not isinstance(arch, str) or not arch:
        raise ConfigError(f"arch must be a non-empty string like 'timm/resnet18', got {arch!r}")
    source, sep, name = arch.partition("/")
    if not sep:
        _load_builtin()
        return ("midefend", arch) if f"midefend/{arch}" in _REGISTRY else ("timm", arch)
    return source, name


def fresh_kwargs(arch: str) -> dict[str, Any]:
    """Extra builder arguments for a model about to be trained: ``{"pretrained": True}`` where weights exist.

    Builders in :data:`PRETRAINED` take ``pretrained=True`` to start from weights on disk;
    training passes it for a fresh model, a checkpoint never does (it brings its own weights).
    """
    return {"pretrained": True} if "/".join(split_arch(arch)) in PRETRAINED else {}


def build_model(arch: str, *, num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Create an untrained model (no weights are ever downloaded)."""
    check_positive_int("num_classes", num_classes)
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
    if source == "transformers":
        from .hf import build_transformers_model

        return build_transformers_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    _load_builtin()
    arch = f"{source}/{name}"  # a bare midefend name ("facenet") in full
    if arch not in _REGISTRY:
        _load_plugins()
    if arch not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        hint = "" if source == "midefend" else f"; import the module that registers it (midefend --arch-module MODULE, ${ARCH_MODULES_ENV}, or a {ENTRY_POINT_GROUP!r} entry point)"
        raise ConfigError(f"unknown architecture {arch!r} (registered: {known}){hint}")
    return _REGISTRY[arch](num_classes=num_classes, in_chans=in_chans, **kwargs)


def vib(*, num_classes: int, in_chans: int = 3, base: str = "midefend/resnet_small", base_kwargs: dict | None = None,
        dim: int | None = None) -> nn.Module:  # fmt: skip
    """``base`` with MID's variational bottleneck head of ``dim`` units (default half the features).

    What a checkpoint trained with ``--defense mid`` records, so the file alone rebuilds the network.
    """
    from .defenses.baselines.mid import add_bottleneck

    if base == "midefend/vib":
        raise ConfigError("the base of midefend/vib cannot be midefend/vib itself")
    model = build_model(base, num_classes=num_classes, in_chans=in_chans, **(base_kwargs or {}))
    add_bottleneck(model, dim)
    return model


def _load_builtin() -> None:
    # midefend's own networks, registered on first use (nets and the FaceNet backbone import nothing from here)
    from .facenet.backbone import BUILTIN_ARCHITECTURES as FACENET
    from .nets import BUILTIN_ARCHITECTURES

    for name, fn in {**BUILTIN_ARCHITECTURES, **FACENET, "vib": vib}.items():
        _REGISTRY.setdefault(_full_name(name), fn)


__all__ = [
    "ARCH_MODULES_ENV",
    "ENTRY_POINT_GROUP",
    "PRETRAINED",
    "build_model",
    "fresh_kwargs",
    "import_architecture_modules",
    "import_user_module",
    "list_architectures",
    "register_architecture",
    "split_arch",
]
