"""Hugging Face ``transformers`` image classifiers as midefend architectures (``transformers/<model_type>``).

A checkpoint of a transformers model stores ``arch="transformers/vit"`` and
``arch_kwargs={"config": {...}}`` (the model's config without its label maps,
see :func:`transformers_arch`), so ``load_checkpoint`` and ``midefend verify``
rebuild it from the file alone, with no download. The rebuilt model's forward
returns the logits tensor (a forward hook unwraps the ``ModelOutput``), as
every midefend attack and metric expects; the state-dict keys stay those of
the transformers model, so a model hardened and saved in a training script
loads back strictly.

>>> from transformers import ViTConfig, ViTForImageClassification  # doctest: +SKIP
>>> model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, num_labels=5))  # doctest: +SKIP
>>> arch, kwargs = transformers_arch(model)  # doctest: +SKIP
>>> arch  # doctest: +SKIP
'transformers/vit'
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .errors import ConfigError

# Config entries that build_model sets itself (num_classes, in_chans) or that carry no architecture.
_DROPPED = ("id2label", "label2id", "num_labels", "num_channels", "architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("transformers/... architectures need the transformers package: pip install 'midefend[hf]'") from None
    return transformers


def unwrap_logits(_module: nn.Module, _args: Any, output: Any) -> Any:
    """Forward hook: a ``ModelOutput`` (or tuple) becomes its logits tensor."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    if isinstance(output, tuple) and output:
        return output[0]
    return output


def returns_logits(model: nn.Module) -> nn.Module:
    """Make ``model``'s forward return its logits tensor (idempotent; keeps the module and its keys)."""
    if not getattr(model, "_midefend_returns_logits", False):
        model.register_forward_hook(unwrap_logits)
        model._midefend_returns_logits = True  # type: ignore[assignment]
    return model


def transformers_arch(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """``(arch, arch_kwargs)`` for :func:`~midefend.io.checkpoints.save_checkpoint` of a transformers model."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if config is None or not model_type or not hasattr(config, "to_dict"):
        raise ConfigError(f"{type(model).__name__} has no transformers config with a model_type")
    settings = {k: v for k, v in config.to_dict().items() if k not in _DROPPED}
    return f"transformers/{model_type}", {"in_chans": int(getattr(config, "num_channels", 3)), "config": settings}


def build_transformers_model(model_type: str, *, num_classes: int, in_chans: int = 3, config: dict[str, Any] | None = None) -> nn.Module:
    """An untrained ``AutoModelForImageClassification`` of ``model_type`` from ``config`` (a dict), logits out."""
    transformers = _transformers()
    settings = dict(config or {})
    settings.pop("model_type", None)
    try:
        cfg = transformers.AutoConfig.for_model(model_type, **settings)
    except ValueError as exc:
        raise ConfigError(f"unknown transformers model_type {model_type!r}: {str(exc).splitlines()[0]}") from None
    cfg.num_labels = num_classes
    if hasattr(cfg, "num_channels"):
        cfg.num_channels = in_chans
    try:
        model = transformers.AutoModelForImageClassification.from_config(cfg)
    except ValueError as exc:
        raise ConfigError(f"transformers has no image classifier for model_type {model_type!r}: {str(exc).splitlines()[0]}") from None
    return returns_logits(model)


__all__ = ["build_transformers_model", "returns_logits", "transformers_arch", "unwrap_logits"]
