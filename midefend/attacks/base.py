"""The attack engine shared by every attack: batching, seeding, selection, resume.

An attack reconstructs, for each target class ``c``, images the target model
assigns to ``c``. Every attack here follows one loop, batched over *all*
classes and candidates at once (a batch is ``classes × candidates`` images):

1. **init**: ``candidates`` starting points per class (latents of the prior,
   or pixels);
2. **optimise** for ``steps`` Adam steps: render images, apply a fresh random
   crop/flip per sample (:mod:`~midefend.attacks.augment`), minimise the
   attack's objective (an identity loss from :mod:`~midefend.attacks.losses`,
   plus a prior term for some attacks), summed over the batch so that every
   sample's gradient is independent of the batch size;
3. **select** (PPA): score each candidate by the target's mean confidence in
   its class over ``selection_augs`` random augmentations (the selection
   augmentation: ``selection_scale``/``selection_ratio`` crops, plus a flip
   where the policy flips) and keep the ``per_class`` most robust ones.

Adaptive options (:mod:`~midefend.attacks.adaptive`), for attacks that declare
:attr:`Attack.supports_adaptive`: ``eot`` erasures per step (the identity
objective averaged over them, and the selection scored under erasure),
``bpda`` (tanh heads back-propagate as the identity) and ``ca_target`` (the
identity loss aims at the CA optimum instead of 1).

Class attributes every attack declares: :attr:`Attack.threat_model` (what the
attacker sees: ``"white-box"``, ``"black-box"`` or ``"label-only"``),
:attr:`Attack.uses_prior`, :attr:`Attack.in_portfolio` (``False`` keeps a slow
attack out of ``verify``'s default portfolio; ``--attack NAME`` still runs it),
:attr:`Attack.supports_adaptive` and :attr:`Attack.adaptive_in_portfolio`
and :attr:`Attack.presets` (named option sets, e.g. ``"fast"``). An attack that
counts queries writes ``result.config["queries"]``.

Seeding and resume. Every random draw of class ``c`` (its initial noise, its
augmentations) comes from a generator seeded from ``(seed, c)``, and the shared
pool of initial latents from ``seed`` alone, so a class's result does not
depend on which other classes run. Classes are processed in fixed chunks
(``class_batch`` classes, a memory bound; the chunking depends only on the
class list), each chunk's per-class results are written to ``out_dir`` as
soon as it finishes, and ``resume=True`` recomputes only chunks with missing
classes: the result is identical to an uninterrupted run.

Speed. Target and prior are frozen (eval mode, no parameter gradients) and
converted to ``channels_last``; with ``precision="auto"`` the forward and
backward passes run under bfloat16 autocast where the hardware supports it
(AVX512-BF16/AMX CPUs, recent GPUs); initial scoring and final selection run in
float32 under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from .._validate import check_bool, check_int, check_positive_int, check_positive_real
from ..errors import AttackError, ConfigError
from ..models.classifier import Classifier
from ._progress import progress_bar
from .adaptive import ca_target_loss, erase_copies, straight_through_heads
from .augment import apply_params, draw_params, policy
from .losses import get_identity_loss
from ..models.images import adapt_images
from .priors import GenerativePrior, inference_prior
from .shard import Shard

_STATE_FILE = "attack.json"
_PRECISIONS = ("auto", "fp32", "bf16")
#: What an attacker may see of the target, strongest first; a white-box attacker may run them all.
THREAT_MODELS = ("white-box", "black-box", "label-only")


@dataclass
class AttackResult:
    """Reconstructions of one attack run.

    Attributes:
        attack: the attack's registry name.
        classes: the attacked classes, in order.
        images: ``(N, K, C, H, W)`` in ``[0, 1]``, in the target's input format
            (``N`` classes, ``K = per_class`` reconstructions each, best first).
        target_confidence: ``(N, K)`` the target's softmax probability of the
            class on each reconstruction (no augmentation).
        config: the attack's settings (JSON-serialisable).
        seconds: wall time of the run (only the part this call computed).
    """

    attack: str
    classes: list[int]
    images: torch.Tensor
    target_confidence: torch.Tensor
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (N*K, C, H, W), labels (N*K,))``: each reconstruction with its class."""
        n, k = self.images.shape[:2]
        labels = torch.tensor(self.classes, dtype=torch.long).repeat_interleave(k)
        return self.images.reshape(n * k, *self.images.shape[2:]), labels


@dataclass
class _Context:
    """What one run shares across chunks."""

    target: Classifier
    prior: GenerativePrior | None
    device: torch.device
    autocast: dict[str, Any]
    pool_scores: torch.Tensor | None = None
    pool_latents: torch.Tensor | None = None


def class_seed(seed: int, cls: int) -> int:
    """Seed of class ``cls``'s private random stream (a fixed mix of ``seed`` and ``cls``)."""
    return (int(seed) * 1_000_003 + int(cls) * 7_919 + 12_345) % (2**63)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where bfloat16 matmuls are native (AVX512-BF16/AMX CPU, CUDA with bf16), else ``"fp32"``."""
    if precision not in _PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return "bf16" if native else "fp32"
    return "fp32"


class Attack:
    """Base class of the registered attacks (see the module docstring for the loop).

    Subclasses set :attr:`uses_prior` and implement :meth:`init_params`,
    :meth:`render` and (optionally) :meth:`objective` / :meth:`after_step`.
    Keyword arguments common to all attacks:

    Args:
        per_class: reconstructions kept per class (``K``).
        candidates: candidates optimised per class (``≥ per_class``); the
            ``per_class`` most robust under augmentation are kept. Default:
            ``candidates_factor × per_class``.
        candidates_factor: see ``candidates`` (PPA: 4).
        steps: Adam steps.
        lr: Adam learning rate.
        loss: identity loss name (:data:`~midefend.attacks.losses.IDENTITY_LOSSES`).
        augment: ``"crop+flip"``, ``"crop"`` (for digits: a flipped digit is
            another shape) or ``"none"``.
        selection_augs: augmentations per candidate in the final selection.
        selection_scale: crop area range of the selection augmentation
            (default ``None``: the optimisation policy's).
        selection_ratio: crop aspect-ratio range of the selection augmentation.
        eot, erase_scale, erase_ratio: erasures per step (0: off) and their
            area / aspect ranges (adaptive, against random erasing).
        bpda: back-propagate through tanh heads as the identity (adaptive).
        ca_target: aim the identity loss at this confidence (adaptive,
            against the CA loss; ``None``: off).
        seed: seeds everything (per class, see the module docstring).
        class_batch: classes per chunk; default: as many as fit in
            ``max_batch`` images.
        max_batch: images through the target per optimisation step (EOT's ``eot``
            erased copies of each candidate included) when ``class_batch`` is unset.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (autocast).
    """

    name: ClassVar[str] = "attack"
    #: What the attack needs of the target: ``"white-box"`` (gradients), ``"black-box"`` (probabilities), ``"label-only"``.
    threat_model: ClassVar[str] = "white-box"
    #: Whether the attack needs a generator prior.
    uses_prior: ClassVar[bool] = True
    #: Whether ``verify``'s default portfolio runs it (``False`` for an attack too slow to run by default).
    in_portfolio: ClassVar[bool] = True
    #: Whether the engine's adaptive options (``eot``, ``bpda``, ``ca_target``) reach this attack's loop.
    supports_adaptive: ClassVar[bool] = False
    #: Whether the default portfolio adds this attack's adaptive variant (``--attack NAME`` always does).
    adaptive_in_portfolio: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    #: Named option sets (``Attack(preset="fast")``); explicit options override them.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, preset: str | None = None, **options: Any) -> None:
        base = {
            "per_class": 4,
            "candidates": None,
            "candidates_factor": 1,
            "steps": 200,
            "lr": 0.1,
            "loss": "poincare",
            "augment": "crop+flip",
            "selection_augs": 16,
            "selection_scale": None,
            "selection_ratio": [1.0, 1.0],
            "eot": 0,
            "erase_scale": [0.1, 0.4],
            "erase_ratio": [1.0, 1.0],
            "bpda": False,
            "ca_target": None,
            "seed": 0,
            "class_batch": None,
            "max_batch": 160,
            "precision": "auto",
        }
        base.update(self.defaults)
        if preset is not None:
            if preset not in self.presets:
                known = ", ".join(sorted(self.presets)) or "none"
                raise ConfigError(f"unknown preset {preset!r} for attack {self.name!r}; known: {known}")
            base.update(self.presets[preset])
        unknown = sorted(set(options) - set(base))
        if unknown:
            raise ConfigError(f"unknown option(s) for attack {self.name!r}: {', '.join(unknown)}; known: {', '.join(sorted(base))}")
        base.update({k: v for k, v in options.items() if v is not None or k in ("candidates", "class_batch", "ca_target", "selection_scale")})
        if base["candidates"] is None and isinstance(base["per_class"], int) and isinstance(base["candidates_factor"], int):
            base["candidates"] = base["per_class"] * base["candidates_factor"]
        self.preset = preset
        self.options = base
        self._validate()
        if (o := self.options)["eot"] or o["bpda"] or o["ca_target"] is not None:
            if not self.supports_adaptive:
                raise ConfigError(f"attack {self.name!r} does not support the adaptive options (eot, bpda, ca_target)")

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        o = self.options
        for key in ("per_class", "candidates_factor", "candidates", "steps", "max_batch"):
            check_positive_int(key, o[key])
        for key in ("selection_augs", "eot"):
            check_int(key, o[key], minimum=0)
        for key, upper in (("selection_scale", 1.0), ("selection_ratio", None), ("erase_scale", 1.0), ("erase_ratio", None)):
            if key == "selection_scale" and o[key] is None:
                continue
            o[key] = _check_range(key, o[key], upper)
        check_bool("bpda", o["bpda"])
        if o["ca_target"] is not None and not (isinstance(o["ca_target"], (int, float)) and 0.0 < o["ca_target"] < 1.0):
            raise ConfigError(f"ca_target must be a confidence in (0, 1) or None, got {o['ca_target']!r}")
        if not isinstance(o["seed"], int) or isinstance(o["seed"], bool) or not 0 <= o["seed"] < 2**63:
            # torch.Generator.manual_seed takes 64-bit seeds; class_seed mixes within 2**63.
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {o['seed']!r}")
        if o["candidates"] < o["per_class"]:
            raise ConfigError(f"candidates must be >= per_class ({o['per_class']}), got {o['candidates']!r}")
        if o["class_batch"] is not None and (not isinstance(o["class_batch"], int) or o["class_batch"] < 1):
            raise ConfigError(f"class_batch must be a positive integer or None, got {o['class_batch']!r}")
        check_positive_real("lr", o["lr"])
        get_identity_loss(o["loss"])
        policy(o["augment"])
        if o["precision"] not in _PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(_PRECISIONS)}, got {o['precision']!r}")
        self.validate_extra()

    def validate_extra(self) -> None:
        """Check attack-specific options (override)."""

    def config(self) -> dict[str, Any]:
        """The attack's settings as JSON-serialisable values (recorded in reports and the resume state)."""
        return {"attack": self.name, "threat_model": self.threat_model, "preset": self.preset, **self.options}

    @property
    def adaptive(self) -> bool:
        """Whether any adaptive option is on."""
        o = self.options
        return bool(o["eot"] or o["bpda"] or o["ca_target"] is not None)

    # ------------------------------------------------------------------ hooks

    def init_params(self, ctx: _Context, classes: list[int], gens: list[torch.Generator]) -> torch.Tensor:
        """Initial parameters ``(len(classes) * candidates, ...)``, class-major (override)."""
        raise NotImplementedError

    def render(self, ctx: _Context, params: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` in the target's input format from the parameters (override)."""
        raise NotImplementedError

    def identity_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The identity loss per sample ``(B,)``: the ``loss`` option, or the CA-target loss when ``ca_target`` is set."""
        if self.options["ca_target"] is not None:
            return ca_target_loss(logits, targets, p_target=float(self.options["ca_target"]), reduction="none")
        return get_identity_loss(self.options["loss"])(logits, targets, reduction="none")

    def objective(self, ctx: _Context, params: torch.Tensor, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss per sample ``(B,)``; default: the identity loss."""
        return self.identity_loss(logits, targets)

    def after_step(self, params: torch.Tensor) -> None:
        """Project the parameters after each step, in place (override; default: nothing)."""

    def total_steps(self) -> int:
        """Optimisation steps per chunk (the progress bar's unit; an attack with several phases overrides)."""
        return int(self.options["steps"])

    # ------------------------------------------------------------------ public entry point

    def run(
        self,
        target: Classifier,
        prior: GenerativePrior | None = None,
        *,
        classes: Sequence[int] | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        device: str | torch.device | None = None,
        progress: bool = False,
        shard: Any = None,
    ) -> AttackResult:
        """Attack ``target`` for ``classes`` (default: all); see the module docstring.

        Args:
            target: the attacked model with its input contract.
            prior: the generator prior (required when :attr:`uses_prior`).
            classes: class indices to reconstruct.
            out_dir: folder for per-class results (created); needed for ``resume``.
            resume: reuse the per-class results already in ``out_dir``.
            device: where to compute (default: the target's device).
            progress: draw a rich progress bar on stderr.
            shard: ``"i/N"`` or a :class:`~midefend.attacks.shard.Shard`: compute only
                shard ``i`` of ``N`` of the chunks (:mod:`~midefend.attacks.sharding`).
        """
        if not isinstance(target, Classifier):
            raise ConfigError(f"target must be a midefend Classifier (wrap your model with Classifier(...)), got {type(target).__name__}")
        if self.uses_prior and prior is None:
            raise AttackError(f"attack {self.name!r} needs a generator prior (for example 'face-gan')")
        dev = torch.device(device) if device is not None else target.mean.device
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {str(dev)!r} was asked for but CUDA is not available")
        num_classes = self._num_classes(target, dev)
        class_list = self._class_list(classes, num_classes)
        if resume and out_dir is None:
            raise ConfigError("resume=True needs out_dir (the folder of the interrupted run)")
        self.check_prior(prior)

        precision = resolve_precision(self.options["precision"], dev)
        state = self._state(target, prior, class_list, precision)
        chunks = self._chunks(class_list)
        if shard is not None:  # whole chunks of the full list, so every batch is the single-process one
            shard = Shard.parse(shard)
            chunks = shard.select(chunks)
            class_list = [c for chunk in chunks for c in chunk]
            state.update(classes=class_list, all_classes=state["classes"], shard=str(shard))
        store = _ResultStore(Path(out_dir), state) if out_dir is not None else None
        done = store.open(resume) if store is not None else {}
        todo = [chunk for chunk in chunks if not all(c in done for c in chunk)]

        target.to(dev)
        if prior is not None:
            prior.to(dev)
        # BatchNorm folded in (the caller's target and prior untouched)
        fast_target, fast_prior = target.for_inference(), inference_prior(prior)
        ctx = _Context(fast_target, fast_prior, dev, {"device_type": dev.type, "dtype": torch.bfloat16, "enabled": precision == "bf16"})
        start = time.perf_counter()
        with channels_last_context(fast_target, fast_prior), progress_bar(progress, f"{self.name} attack", len(todo) * self.total_steps()) as advance:
            for chunk in todo:
                images, conf = self._attack_chunk(ctx, chunk, advance)
                for i, c in enumerate(chunk):
                    done[c] = (images[i], conf[i])
                    if store is not None:
                        store.save_class(c, images[i], conf[i])
        seconds = time.perf_counter() - start
        return AttackResult(
            attack=self.name,
            classes=class_list,
            images=torch.stack([done[c][0] for c in class_list]) if class_list else torch.empty(0),
            target_confidence=torch.stack([done[c][1] for c in class_list]) if class_list else torch.empty(0),
            config={**self.config(), "precision_used": precision},
            seconds=seconds,
        )

    def check_prior(self, prior: GenerativePrior | None) -> None:
        """Reject a prior this attack cannot use (override)."""

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _num_classes(target: Classifier, device: torch.device) -> int:
        c, h, w = target.input_size
        with torch.inference_mode():
            return int(target.to(device)(torch.full((1, c, h, w), 0.5, device=device)).shape[1])

    @staticmethod
    def _class_list(classes: Sequence[int] | None, num_classes: int) -> list[int]:
        if classes is None:
            return list(range(num_classes))
        out = [int(c) for c in classes]
        if not out:
            raise ConfigError("classes must name at least one class, got an empty list")
        bad = [c for c in out if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(f"classes must be in 0..{num_classes - 1} for this target, got {bad[:5]}")
        if len(set(out)) != len(out):
            raise ConfigError("classes must not repeat a class")
        return out

    def _chunks(self, class_list: list[int]) -> list[list[int]]:
        # Balanced chunks whose layout depends only on the class list and the options. ``max_batch`` bounds the
        # images through the target per step, EOT's erased copies included (larger CPU batches are slower per image).
        o = self.options
        per_chunk = o["class_batch"] or max(1, o["max_batch"] // (o["candidates"] * max(1, o["eot"])))
        n_chunks = math.ceil(len(class_list) / per_chunk)
        size = math.ceil(len(class_list) / n_chunks)
        return [class_list[i : i + size] for i in range(0, len(class_list), size)]

    def _state(self, target: Classifier, prior: GenerativePrior | None, class_list: list[int], precision: str) -> dict[str, Any]:
        return {
            "format": "midefend-attack-state",
            "config": self.config(),
            "precision_used": precision,
            "classes": class_list,
            "target_sha256": _module_digest(target.model),
            "prior": prior.config() if prior is not None else None,
            "prior_sha256": _module_digest(prior) if prior is not None else None,
        }

    def _attack_chunk(self, ctx: _Context, chunk: list[int], advance: Any) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.options
        k = o["candidates"]
        scale, flip = policy(o["augment"])
        gens = [torch.Generator().manual_seed(class_seed(o["seed"], c)) for c in chunk]
        targets = torch.tensor(chunk, device=ctx.device).repeat_interleave(k)
        params = self.init_params(ctx, chunk, gens).to(ctx.device).detach().clone().requires_grad_(True)
        # All augmentation parameters up front, from each class's own stream.
        step_aug = torch.cat([draw_params(g, (o["steps"], k), scale=scale, flip=flip) for g in gens], dim=1)
        select_scale = o["selection_scale"] or scale
        select_aug = torch.cat(
            [draw_params(g, (o["selection_augs"], k), scale=select_scale, ratio=o["selection_ratio"], flip=flip) for g in gens], dim=1
        )
        params = self._optimise(ctx, params, targets, step_aug, gens, advance, lr=o["lr"])
        return self._select(ctx, params, targets, select_aug, gens)

    def _optimise(self, ctx: _Context, params: torch.Tensor, targets: torch.Tensor, step_aug: torch.Tensor, gens: list[torch.Generator], advance: Any, *, lr: float) -> torch.Tensor:
        """Adam on ``params`` (a leaf with ``requires_grad``) for ``len(step_aug)`` steps, one augmentation each;
        :meth:`after_step` projects after every step. Returns the detached result."""
        o = self.options
        optimizer = torch.optim.Adam([params], lr=lr)
        with straight_through_heads(ctx.target) if o["bpda"] else contextlib.nullcontext():
            for step in range(step_aug.shape[0]):
                with torch.autocast(**ctx.autocast):
                    loss = self.step_loss(ctx, params, targets, step_aug[step] if o["augment"] != "none" else None, gens).sum()
                if not torch.isfinite(loss):
                    raise AttackError(f"attack {self.name!r} diverged at step {step} (loss {float(loss)}); lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    self.after_step(params)
                advance(1)
        return params.detach()

    def step_loss(self, ctx: _Context, params: torch.Tensor, targets: torch.Tensor, aug: torch.Tensor | None, gens: list[torch.Generator]) -> torch.Tensor:
        """One step's objective per candidate ``(B,)``: through the step's augmentation ``aug`` (``None``: none),
        averaged over ``eot`` erasures drawn from the class generators ``gens`` when ``eot > 0``."""
        images = self.render(ctx, params)
        seen = apply_params(images, aug) if aug is not None else images
        eot = self.options["eot"]
        if not eot:
            return self.objective(ctx, params, images, ctx.target(seen), targets)
        erased = erase_copies(seen, self.options["candidates"], gens, eot, scale=self.options["erase_scale"], ratio=self.options["erase_ratio"])
        logits = ctx.target(erased).view(eot, seen.shape[0], -1)
        return torch.stack([self.objective(ctx, params, images, logits[j], targets) for j in range(eot)]).mean(0)

    @torch.inference_mode()
    def selection_scores(self, target: Classifier, images: torch.Tensor, targets: torch.Tensor, select_aug: torch.Tensor, gens: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(clean, robust)`` per candidate: the target's confidence in its class on the image, and its mean
        over the ``selection_augs`` augmentations (each also erased once when ``eot > 0``); ``robust`` is
        ``clean`` when there are no selection augmentations."""
        o = self.options
        rows = torch.arange(images.shape[0], device=images.device)
        clean = target(images).float().softmax(1)[rows, targets]
        if o["selection_augs"] == 0:
            return clean, clean.clone()
        robust = torch.zeros_like(clean)
        for i in range(o["selection_augs"]):
            view = apply_params(images, select_aug[i])
            if o["eot"]:
                view = erase_copies(view, o["candidates"], gens, 1, scale=o["erase_scale"], ratio=o["erase_ratio"])
            robust += target(view).float().softmax(1)[rows, targets]
        return clean, robust / o["selection_augs"]

    def _select(self, ctx: _Context, params: torch.Tensor, targets: torch.Tensor, select_aug: torch.Tensor, gens: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the ``per_class`` candidates with the highest mean target confidence under the selection augmentation."""
        k, keep, n = self.options["candidates"], self.options["per_class"], len(gens)
        with torch.inference_mode():
            images = self.render(ctx, params).float().clamp(0, 1)
        clean, robust = self.selection_scores(ctx.target, images, targets, select_aug, gens)
        order = robust.view(n, k).argsort(dim=1, descending=True, stable=True)[:, :keep]
        images = images.view(n, k, *images.shape[1:])
        picked = torch.stack([images[i, order[i]] for i in range(n)])
        conf = clean.view(n, k).gather(1, order)
        return picked.cpu().contiguous(), conf.cpu()

    def cost(self, num_classes: int) -> dict[str, int]:
        """What a run over ``num_classes`` classes costs, in images through the target: ``optimisation``
        (forward and backward; ``renders`` of them also through the prior, once per step), ``selection``
        and ``init`` (forward only), and ``kept`` reconstructions."""
        o = self.options
        n = num_classes * o["candidates"]
        return {
            "optimisation": n * o["steps"] * max(1, o["eot"]),
            "renders": n * o["steps"],
            "selection": n * (o["selection_augs"] + 1),
            "init": 0,
            "kept": num_classes * o["per_class"],
        }


def _check_range(name: str, value: Any, upper: float | None) -> list[float]:
    """A ``(low, high)`` pair with ``0 < low <= high`` (``<= upper`` when given), as a JSON list."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (0.0 < low <= high and math.isfinite(high)) or (upper is not None and high > upper):
        bound = f" <= {upper:g}" if upper is not None else ""
        raise ConfigError(f"{name} must satisfy 0 < low <= high{bound}, got {value!r}")
    return [low, high]


class LatentAttack(Attack):
    """An attack that optimises latents of a generator prior (PPA, GMI).

    Initialisation (``init_pool > 0``): one shared pool of ``init_pool``
    standard-normal latents (seeded by ``seed`` alone) is scored once by the
    target; each class starts from its ``candidates`` best-scoring latents
    (highest confidence in the class; where the augmentation policy flips, the
    mean confidence over the image and its mirror image, as PPA scores them).
    ``init_pool = 0``: each class draws its own random latents.
    """

    def validate_extra(self) -> None:
        pool, k = self.options.get("init_pool", 0), self.options["candidates"]
        if not isinstance(pool, int) or isinstance(pool, bool) or pool < 0:
            raise ConfigError(f"init_pool must be a non-negative integer, got {pool!r}")
        if 0 < pool < k:
            raise ConfigError(f"init_pool must be 0 (random start) or >= candidates ({k}), got {pool}")

    def init_params(self, ctx: _Context, classes: list[int], gens: list[torch.Generator]) -> torch.Tensor:
        assert ctx.prior is not None
        k, pool = self.options["candidates"], self.options["init_pool"]
        if pool == 0:
            return torch.cat([ctx.prior.sample_latents(k, generator=g) for g in gens])
        scores = self._pool_scores(ctx)
        best = scores[:, classes].topk(k, dim=0).indices.T  # (n_classes, k)
        return ctx.pool_latents[best.reshape(-1)].clone()

    @torch.inference_mode()
    def _pool_scores(self, ctx: _Context) -> torch.Tensor:
        if ctx.pool_scores is None:
            assert ctx.prior is not None
            latents = ctx.prior.sample_latents(self.options["init_pool"], generator=torch.Generator().manual_seed(self.options["seed"]))
            flip = policy(self.options["augment"])[1]
            scores = []
            for start in range(0, latents.shape[0], 250):
                images = self.render(ctx, latents[start : start + 250].to(ctx.device)).float()
                probs = ctx.target(images).float().softmax(1)
                if flip:
                    probs = (probs + ctx.target(images.flip(-1)).float().softmax(1)) / 2
                scores.append(probs.cpu())
            ctx.pool_latents, ctx.pool_scores = latents, torch.cat(scores)
        return ctx.pool_scores

    def cost(self, num_classes: int) -> dict[str, int]:
        out = super().cost(num_classes)
        out["init"] = self.options["init_pool"] * (2 if policy(self.options["augment"])[1] else 1)
        return out

    def render(self, ctx: _Context, params: torch.Tensor) -> torch.Tensor:
        assert ctx.prior is not None
        c, h, w = ctx.target.input_size
        return adapt_images(ctx.prior(params), channels=c, size=(h, w))


# ---------------------------------------------------------------------- storage


class _ResultStore:
    """Per-class results in ``out_dir`` (``class_<c>.safetensors``) and the run's identity (``attack.json``)."""

    def __init__(self, root: Path, state: dict[str, Any]) -> None:
        self.root, self.state = root, state

    def open(self, resume: bool) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        from ..io.atomic import atomic_write_text

        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".class_*.tmp.safetensors"):
            stale.unlink(missing_ok=True)  # a half-written class file of a killed run (atomic_write's temporary)
        state_path = self.root / _STATE_FILE
        done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if resume and state_path.is_file():
            try:
                previous = json.loads(state_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise AttackError(f"cannot resume: {str(state_path)!r} is unreadable ({exc})") from None
            diff = [k for k in ("config", "target_sha256", "prior_sha256") if previous.get(k) != self.state.get(k)]
            if diff:
                raise AttackError(
                    f"cannot resume in {str(self.root)!r}: its results come from a different {diff[0].replace('_sha256', '')} "
                    "(use a new output folder, or run without --resume to overwrite)"
                )
            for c in self.state["classes"]:
                loaded = self._load_class(c)
                if loaded is not None:
                    done[c] = loaded
        else:
            for old in self.root.glob("class_*.safetensors"):
                old.unlink()
        atomic_write_text(state_path, json.dumps(self.state, indent=2, sort_keys=True))
        return done

    def _path(self, c: int) -> Path:
        return self.root / f"class_{c:05d}.safetensors"

    def save_class(self, c: int, images: torch.Tensor, conf: torch.Tensor) -> None:
        from safetensors.torch import save_file

        from ..io.atomic import atomic_write

        with atomic_write(self._path(c)) as tmp:
            save_file({"images": images.contiguous(), "target_confidence": conf.contiguous()}, str(tmp))

    def _load_class(self, c: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self._path(c)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            return tensors["images"], tensors["target_confidence"]
        except (SafetensorError, OSError, KeyError):
            return None  # a damaged file: the class is recomputed


def _module_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class channels_last_context:
    """Switch target and prior to channels_last for the run, restore the default layout afterwards."""

    def __init__(self, *modules: torch.nn.Module | None) -> None:
        self.modules = [m for m in modules if m is not None]

    def __enter__(self) -> None:
        for m in self.modules:
            m.to(memory_format=torch.channels_last)

    def __exit__(self, *exc: object) -> None:
        for m in self.modules:
            m.to(memory_format=torch.contiguous_format)


def run_attack(
    attack: str | Attack,
    target: Classifier,
    prior: GenerativePrior | None = None,
    *,
    classes: Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    **options: Any,
) -> AttackResult:
    """Run a registered attack by name (``options`` go to its constructor); see :meth:`Attack.run`.

    >>> import torch, timm
    >>> from midefend.evaluation import Classifier
    >>> from midefend.attacks.priors import DCGANGenerator, GenerativePrior
    >>> net = timm.create_model("resnet18", num_classes=3, in_chans=1)
    >>> target = Classifier(net, input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))
    >>> prior = GenerativePrior(DCGANGenerator(latent_dim=8, channels=1, width=4, image_size=16))
    >>> result = run_attack("ppa", target, prior, classes=[0, 2], per_class=1, steps=2, init_pool=8)
    >>> result.images.shape
    torch.Size([2, 1, 1, 16, 16])
    """
    from .registry import get_attack

    if isinstance(attack, str):
        instance = get_attack(attack)(**options)
    elif isinstance(attack, Attack):
        if options:
            raise ConfigError("pass options to the attack's constructor, not to run_attack, when giving an Attack instance")
        instance = attack
    else:
        raise ConfigError(f"attack must be a registered name or an Attack, got {type(attack).__name__}")
    return instance.run(target, prior, classes=classes, out_dir=out_dir, resume=resume, device=device, progress=progress)


__all__ = ["Attack", "AttackResult", "LatentAttack", "class_seed", "resolve_precision", "run_attack"]
