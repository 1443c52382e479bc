"""``harden()``: replace a model's classifier head(s) by CALoR's :class:`LowRankTanhHead`.

The head is located explicitly (``head=``, timm's ``pretrained_cfg["classifier"]``,
or torchvision's per-family table; see :mod:`midefend.defenses.head_locations`),
never by guessing "the last ``nn.Linear``". Each head must be an ``nn.Linear``;
it is replaced on the same device and with the same dtype, ``num_classes`` is
kept, and a :class:`HardenReport` says what was replaced. The report is also
stored on the model as ``model.midefend_hardening`` (a JSON-able dict) so that
checkpoints can record it, and the model can be rebuilt with::

    model = build_model(arch, num_classes=C)
    harden(model, rank=r, activation=a, norm=n, init="random", head=report["heads"] paths)
    model.load_state_dict(state_dict, strict=True)

>>> import torchvision
>>> model = torchvision.models.resnet18(num_classes=10)
>>> report = harden(model, rank=4)
>>> report.head_paths, type(model.fc).__name__
(['fc'], 'LowRankTanhHead')
>>> check_hardened(model)["fc"]["rank"]
4
"""

from __future__ import annotations

import copy as copy_module
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..models.wrappers import unwrap_model
from .._validate import check_choice
from ..errors import AlreadyHardenedError, ConfigError, HardenError, HeadNotFoundError
from ._checks import check_bool, check_positive_int, check_positive_real, describe
from .calibration import accuracy_on, calibration_batches
from .head_locations import find_head_paths
from .heads import ACTIVATIONS, LowRankTanhHead

__all__ = ["harden", "check_hardened", "hardened_heads", "check_harden_rank", "HardenReport", "HeadReplacement", "HARDENING_ATTR"]

logger = logging.getLogger(__name__)

#: Attribute under which ``harden`` records its report (a JSON-able dict) on the model.
HARDENING_ATTR = "midefend_hardening"
_INITS = ("svd", "random")


@dataclass(frozen=True)
class HeadReplacement:
    """One replaced head: where, and its shape."""

    path: str
    in_features: int
    num_classes: int
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "in_features": self.in_features, "num_classes": self.num_classes, "rank": self.rank}


@dataclass
class HardenReport:
    """What :func:`harden` did. ``model`` is the hardened model (a copy with ``copy=True``)."""

    model_class: str
    rank: int
    activation: str
    norm: bool
    init: str
    heads: list[HeadReplacement]
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    #: top-1 accuracy on labelled calibration data before / right after the surgery (no fine-tuning); None without labels
    accuracy_before: float | None = None
    accuracy_after: float | None = None

    @property
    def head_paths(self) -> list[str]:
        return [h.path for h in self.heads]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary; ``head=report["head_paths"]`` rebuilds the same structure."""
        return {
            "model_class": self.model_class,
            "rank": self.rank,
            "activation": self.activation,
            "norm": self.norm,
            "init": self.init,
            "head_paths": self.head_paths,
            "heads": [h.to_dict() for h in self.heads],
        }

    def __str__(self) -> str:
        header = f"hardened {self.model_class}: rank {self.rank}, {self.activation}, norm={self.norm}, init={self.init}"
        lines = [header]
        lines += [f"  {h.path}: Linear({h.in_features}, {h.num_classes}) -> rank {h.rank}" for h in self.heads]
        return "\n".join(lines)


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)  # works for Sequential/ModuleList children ("6") too


def _get_head(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise HeadNotFoundError(f"{type(model).__name__} has no submodule {path!r} to harden") from None


def hardened_heads(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Every :class:`LowRankTanhHead` in ``model``: ``{dotted path: head.config()}``, empty when not hardened.

    Paths are relative to the unwrapped model (no ``_orig_mod.`` or ``module.``
    prefix), as ``harden`` records them.

    >>> import torch.nn as nn
    >>> hardened_heads(nn.Sequential(nn.Linear(8, 4)))
    {}
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {describe(model)}")
    root = unwrap_model(model)
    return {name: module.config() for name, module in root.named_modules() if isinstance(module, LowRankTanhHead)}


def check_hardened(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Like the other ``check_*`` functions: :func:`hardened_heads` of a hardened ``model``, and a
    :class:`~midefend.errors.HardenError` when it has no :class:`LowRankTanhHead`.

    >>> import torch.nn as nn
    >>> check_hardened(nn.Sequential(nn.Linear(8, 4)))
    Traceback (most recent call last):
    ...
    midefend.errors.HardenError: Sequential is not hardened: it has no LowRankTanhHead (use midefend.harden)
    """
    heads = hardened_heads(model)
    if not heads:
        raise HardenError(f"{type(unwrap_model(model)).__name__} is not hardened: it has no LowRankTanhHead (use midefend.harden)")
    return heads


def _capture_head_inputs(
    model: nn.Module, model_name: str, heads: dict[str, nn.Module], batches: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Run the batches through ``model`` in eval mode and keep each head's input, flattened to ``(N, m)``."""
    captured: dict[str, list[torch.Tensor]] = {path: [] for path in heads}
    hooks = []
    for path, linear in heads.items():

        def hook(module: nn.Module, args: tuple, path: str = path) -> None:
            captured[path].append(args[0].detach().reshape(-1, args[0].shape[-1]))

        hooks.append(linear.register_forward_pre_hook(hook))
    # Restore every module's own mode afterwards (a frozen BatchNorm may sit in a training model).
    modes = {module: module.training for module in model.modules()}
    weight = next(iter(heads.values())).weight
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                model(batch.to(device=weight.device, dtype=weight.dtype))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"calibration could not be run through {model_name}: {first_line}") from None
    finally:
        for handle in hooks:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    # Heads the calibration did not reach (auxiliary heads run only in train mode) are left
    # out; harden() warns that their warm start is data-free.
    return {path: torch.cat(parts) for path, parts in captured.items() if parts}


def harden(
    model: nn.Module,
    *,
    rank: int,
    activation: str = "tanh",
    norm: bool = True,
    init: str = "svd",
    head: str | Sequence[str] | None = None,
    copy: bool = False,
    allow_rehardening: bool = False,
    calibration: Any = None,
    linear_range: float = 0.1,
    refit_up: bool = False,
) -> HardenReport:
    """Replace the classifier head(s) of ``model`` by :class:`LowRankTanhHead`, in place by default.

    Args:
        model: a timm model, a torchvision classifier, or any ``nn.Module`` with
            ``head=`` naming its ``nn.Linear`` head(s). ``torch.compile`` and
            DDP wrappers are looked through.
        rank: the head's rank ``r``, ``1 <= r <= min(in_features, num_classes)``
            for every head (``r == min`` warns: no compression).
        activation, norm: as for :class:`LowRankTanhHead`.
        init: ``"svd"`` warm-starts each head from the trained ``nn.Linear`` by
            truncated SVD (:meth:`LowRankTanhHead.from_linear`), so a trained model
            needs only a short fine-tune; ``"random"`` initialises it like a fresh
            layer (to train from scratch, or to rebuild a structure before
            loading a hardened state dict).
        head: dotted path(s) of the head(s), overriding the automatic lookup.
        copy: harden a deep copy and leave ``model`` untouched (the copy is
            ``report.model``). Default ``False``: the model is changed in place,
            like ``opacus``' ``fix``; keep a reference to the old head if you
            need it.
        allow_rehardening: replace heads that are already ``LowRankTanhHead``
            (with ``init="random"`` only: an SVD of a nonlinear head is meaningless).
        calibration: optional training inputs for the SVD warm start: a batch, a
            list of batches, an ``(inputs, labels)`` pair or a ``DataLoader``
            (:mod:`~midefend.defenses.calibration`). The heads' inputs on it set
            BatchNorm's statistics and the activation's scale (see ``from_linear``).
            Without it the warm start assumes standardised features, which trained
            features rarely are, and a ``UserWarning`` says so. With labels, the
            report's ``accuracy_before``/``accuracy_after`` give the accuracy on it
            before and right after the surgery, and a drop of more than 5 points warns.
        linear_range: RMS of the activation's input at the warm start (``from_linear``).
        refit_up: after the SVD warm start, set each head's ``up`` by least squares to
            reproduce the original logits on ``calibration`` (``from_linear``): with a large
            ``linear_range`` this starts saturated and still near the trained logits.

    Returns:
        a :class:`HardenReport`; ``report.to_dict()`` is also stored as
        ``model.midefend_hardening``.

    Raises:
        ConfigError: a bad argument, or a rank outside ``[1, min(m, C)]`` for a head.
        HeadNotFoundError: no head found, or a head that is not an ``nn.Linear``
            (SqueezeNet's 1x1 ``Conv2d``, a timm head with ``num_classes=0``).
        AlreadyHardenedError: the model already has a ``LowRankTanhHead``.

    >>> import timm
    >>> model = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=5, img_size=32)
    >>> harden(model, rank=3, init="random").head_paths
    ['head', 'head_dist']
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {describe(model)}")
    rank = check_positive_int("rank", rank)
    check_choice("activation", activation, sorted(ACTIVATIONS))
    check_bool("norm", norm)
    check_bool("copy", copy)
    check_bool("allow_rehardening", allow_rehardening)
    check_choice("init", init, _INITS)

    check_positive_real("linear_range", linear_range)
    check_bool("refit_up", refit_up)
    if refit_up and (init != "svd" or calibration is None):
        raise ConfigError("refit_up=True needs init='svd' and calibration data")
    batches, calibration_labels = calibration_batches(calibration) if calibration is not None else ([], None)

    root = unwrap_model(model)
    name = type(root).__name__
    paths = find_head_paths(root, head)
    existing = hardened_heads(root)
    if existing and not allow_rehardening:
        raise AlreadyHardenedError(
            f"{name} is already hardened (LowRankTanhHead at {', '.join(existing)}); "
            "pass allow_rehardening=True to replace it"
        )

    # Check every head before changing anything, so a failure leaves the model as it was.
    plan = {path: _checked_head(root, name, path, rank, init) for path in paths}

    if copy:
        model = copy_module.deepcopy(model)
        root = unwrap_model(model)
        plan = {path: root.get_submodule(path) for path in plan}

    accuracy_before = accuracy_on(root, batches, calibration_labels) if calibration_labels else None
    features: dict[str, torch.Tensor] = {}
    if batches and init == "svd":
        features = _capture_head_inputs(root, name, plan, batches)
    uncalibrated = [path for path in plan if init == "svd" and path not in features]
    if uncalibrated:
        # Trained features are rarely standardised: a larger scale saturates tanh and the warm start
        # drifts (measured on a trained MLP: 0.9% logit error with calibration, 22% without).
        warnings.warn(
            f"harden(init='svd') without calibration data for {', '.join(uncalibrated)}: the warm start assumes "
            "standardised features; pass calibration=<a batch of training inputs> for a close warm start",
            UserWarning,
            stacklevel=2,
        )

    replaced = []
    for path, old in plan.items():
        new = _new_head(old, rank, activation, norm, init, features.get(path), linear_range, refit_up)
        new.train(old.training)
        _set_submodule(root, path, new)
        replaced.append(HeadReplacement(path, new.in_features, new.num_classes, new.rank))
        logger.info("harden: %s.%s -> %r", name, path, new)

    report = HardenReport(name, rank, activation, norm, init, replaced, model=model)
    setattr(root, HARDENING_ATTR, report.to_dict())
    if calibration_labels:
        report.accuracy_before = accuracy_before
        report.accuracy_after = accuracy_on(root, batches, calibration_labels)
        logger.info("harden: calibration accuracy %.3f before, %.3f after the surgery", accuracy_before, report.accuracy_after)
        if report.accuracy_after < (accuracy_before or 0.0) - 0.05:
            warnings.warn(
                f"harden: accuracy on the calibration data fell from {accuracy_before:.1%} to {report.accuracy_after:.1%} "
                "with the low-rank head; fine-tune with cross-entropy (a larger rank keeps more) before the CA stage",
                UserWarning,
                stacklevel=2,
            )
    return report


def _checked_head(root: nn.Module, name: str, path: str, rank: int, init: str) -> nn.Module:
    """The head at ``path`` if ``harden`` can replace it with rank ``rank``; else the typed error."""
    module = _get_head(root, path)
    if isinstance(module, LowRankTanhHead):
        if init == "svd":
            raise HardenError(f"{name}.{path} is already a LowRankTanhHead: re-hardening needs init='random'")
    elif not isinstance(module, nn.Linear):
        raise HeadNotFoundError(
            f"{name}.{path} is of type {type(module).__name__}, not an nn.Linear classifier; "
            "harden() only replaces linear heads (pass head= to name one)"
        )
    in_features, num_classes = _head_shape(module)
    bound = min(in_features, num_classes)
    if rank > bound:
        raise ConfigError(
            f"rank must be in [1, {bound}] for {name}.{path} "
            f"(min(in_features={in_features}, num_classes={num_classes})), got {rank}"
        )
    return module


def check_harden_rank(model: nn.Module, rank: int, head: str | Sequence[str] | None = None) -> None:
    """Raise what ``harden(model, rank=rank)`` would raise about the heads or the rank, changing nothing.

    Lets a training run refuse a bad rank before hours of pre-training instead of after.
    """
    rank = check_positive_int("rank", rank)
    root = unwrap_model(model)
    for path in find_head_paths(root, head):
        _checked_head(root, type(root).__name__, path, rank, "random")


def _head_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, LowRankTanhHead):
        return module.in_features, module.num_classes
    return module.in_features, module.out_features


def _new_head(
    old: nn.Module,
    rank: int,
    activation: str,
    norm: bool,
    init: str,
    features: torch.Tensor | None,
    linear_range: float,
    refit_up: bool = False,
) -> LowRankTanhHead:
    if init == "svd":
        return LowRankTanhHead.from_linear(
            old, rank, activation=activation, norm=norm, features=features, linear_range=linear_range,
            refit_up=refit_up and features is not None,
        )  # fmt: skip
    weight = old.down.weight if isinstance(old, LowRankTanhHead) else old.weight
    in_features, num_classes = _head_shape(old)
    return LowRankTanhHead(
        in_features, num_classes, rank, activation, norm, True, device=weight.device, dtype=weight.dtype
    )
