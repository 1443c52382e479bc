"""The training loop behind every midefend target and evaluation model.

:func:`train_classifier` runs the stages of a defense recipe
(:mod:`midefend.training.stages`) on an in-memory
:class:`~midefend.data.ClassificationData`. One optimisation step is::

    x  = augment(images[batch])              # [0, 1], random affine warp per sample
    x  = random_erase_batch(x, ...)          # MIDRE stages only, still in [0, 1]
    xn = (x - mean) / std                    # the normalisation stored in checkpoints
    loss = CE(model(xn), y)  or  CA(model(xn), y) = mean(a * p_y**b * log p_y)

Normalisation lives here, not in the model: the model sees ``(x - mean) / std``
with ``x`` in ``[0, 1]``, and ``mean``/``std`` travel in the checkpoint so the
attack and evaluation code apply the same transform (``Checkpoint.normalize``).

Same ``seed`` -> same weights: the shuffling, augmentation and erasing draw
from generators seeded with ``seed``, and the global RNG (dropout, the head
surgery) is seeded inside a forked RNG state, so the caller's RNG is untouched.
(On CUDA, cuDNN may still pick non-deterministic kernels unless
``torch.use_deterministic_algorithms(True)`` is set.)

>>> import torch
>>> from midefend.data import ClassificationData
>>> x = torch.rand(40, 1, 8, 8); y = (x.mean((1, 2, 3)) > 0.5).long()
>>> data = ClassificationData(x, y, ["dark", "bright"], name="toy")
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
>>> result = train_classifier(net, data, epochs=3, lr=0.05, batch_size=8, progress=False)
>>> [row["epoch"] for row in result.history]
[1, 2, 3]
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.datasets import ClassificationData
from .._validate import check_choice, check_device, check_int, check_positive_real
from ..defenses.head_regime import regime_record
from ..defenses.heads import ACTIVATIONS
from ..errors import ConfigError, DataError
from ..distributed import detect_world, local_device, process_group
from .augment import BatchAugment, get_augment
from .distributed import DataParallelPlan, plan_data_parallel, sync_head_norms, unsync_head_norms
from .progress import TrainingProgress
from .resume import load_state, run_fingerprint, save_state
from .recipes import criterion_attached, get_defense, set_epoch
from .settings import TrainSettings
from .stages import Stage

OPTIMIZERS = ("adamw", "sgd")
#: CALoR head initialisations: SVD warm start, SVD with ``up`` refitted by least squares, fresh.
HEAD_INITS = ("svd", "svd-lstsq", "random")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns.

    Attributes:
        model: the trained model (the same object that was passed in), in eval mode.
        history: one dict per epoch: ``stage``, ``epoch`` (counted over all stages),
            ``loss``, ``train_accuracy`` and ``confidence`` (mean ``p_y`` of the
            training batches, augmented), ``lr``, ``seconds``, and ``test_accuracy``
            on epochs where the test set was evaluated.
        test_accuracy: final top-1 accuracy on ``test`` (``None`` without a test set).
        train_accuracy, train_confidence: final accuracy and mean ``p_y`` on the
            un-augmented training set, in eval mode.
        defense: the defense configuration, as recorded in checkpoints.
        config: every training argument (JSON values), as recorded in checkpoints.
        mean, std: the input normalisation the model was trained with.
        seconds: wall time of the whole run.
        hardening: the report of ``harden()`` for CALoR recipes, else ``None``.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    test_accuracy: float | None
    train_accuracy: float
    train_confidence: float
    defense: dict[str, Any]
    config: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    seconds: float
    hardening: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for ``x`` of shape ``(B, C, H, W)``."""
    shape = (1, len(mean), 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ClassificationData,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Top-1 ``accuracy``, mean softmax confidence in the true class ``confidence`` (``p_y``)
    and mean cross-entropy ``loss`` of ``model`` on ``data``, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    if len(data) == 0:
        raise DataError(f"cannot evaluate on an empty data set ({data.name!r})")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    correct, confidence, loss = 0.0, 0.0, 0.0
    for start in range(0, len(data), batch_size):
        x = normalize(data.images[start : start + batch_size].to(device), mean, std)
        y = data.labels[start : start + batch_size].to(device)
        logits = model(x).float()
        log_p = logits.log_softmax(dim=1)
        correct += (logits.argmax(dim=1) == y).sum().item()
        confidence += log_p.gather(1, y[:, None]).exp().sum().item()
        loss += F.nll_loss(log_p, y, reduction="sum").item()
    model.train(was_training)
    n = len(data)
    return {"accuracy": correct / n, "confidence": confidence / n, "loss": loss / n}


def check_seed(name: str, value: object) -> int:
    """A seed torch accepts: an integer in ``[0, 2**64 - 1]`` (ConfigError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ConfigError(f"{name} must be an integer in [0, 2**64 - 1], got {value!r}")
    return value


def train_classifier(
    model: nn.Module,
    train: ClassificationData,
    test: ClassificationData | None = None,
    settings: TrainSettings | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Train ``model`` on ``train`` with a defense recipe; returns a :class:`TrainResult`.

    The settings come as a :class:`~midefend.training.settings.TrainSettings`
    (``settings``), as keyword arguments (the names below, with these
    defaults), or both (the keywords override the settings).

    Args:
        model: any classifier ``(B, C, H, W) -> (B, num_classes)``; trained in place.
            For ``calor`` recipes it should already be trained (or set
            ``pretrain_epochs``): see :mod:`midefend.training.stages`.
        train, test: in-memory data sets; ``test`` is evaluated every
            ``eval_every`` epochs, at the end of each stage, and at the end.
        defense: a registered defense (:func:`~midefend.training.recipes.list_defenses`):
            ``"nodef"``, ``"midre"``, ``"calor"``, ``"midre+calor"``, ``"nls"``, ``"mid"``,
            ``"bido"`` or ``"tl"``; its knobs are settings too (``smoothing``, ``beta``,
            ``hsic_x``/``hsic_y``, ``freeze``; see :class:`~midefend.training.settings.TrainSettings`).
        epochs: epochs of the main stage (``train``; ``head`` for CALoR).
        lr: peak learning rate; ``optimizer`` ``"adamw"`` (weight decay 0.05 by
            default) or ``"sgd"`` (momentum 0.9, Nesterov, weight decay 5e-4).
        schedule: per step, ``"cosine"`` (to 0), ``"step"`` (x0.1 at 75% and
            90% of the stage, CALoR's 75/90 of 100 epochs) or ``"constant"``.
        erase_max: MIDRE's ``a_h``: erased area ratio ``~ U[0.1, erase_max]``.
        rank: CALoR's head rank (default :func:`default_rank` of the class count).
        pretrain_epochs, head_lr_mult, calor_lr, ca_epochs, ca_lr, ca_a, ca_b: CALoR's
            stages and confidence-adaptation loss ``a * p_y**b * log p_y``.
        head_activation, head_init, linear_range: CALoR's head: its activation (``"tanh"``;
            ``"identity"``, ``"relu"``, ``"sigmoid"`` for the paper's Table 5) and its start:
            ``"svd-lstsq"`` (default) warm-starts ``down`` by SVD with pre-activation RMS
            ``linear_range`` (2: saturating) and refits ``up`` by least squares to the trained
            logits; ``"svd"`` keeps ``up``'s SVD scaling (with ``linear_range=0.1``: a faithful
            linear copy of the trained head, not CALoR's mechanism); ``"random"``: a fresh head
            (see docs/calor.md). The heads' regime on the training images at the warm
            start and at the end goes to ``result.extra`` (``head_regime_start``, ``head_regime``).
        ca_params: what the CA fine-tune trains: ``"head"`` (the low-rank head; the
            backbone is frozen in eval mode) or ``"all"`` (the authors' whole model).
        ca_optimizer: ``"default"``: the CA stage uses ``optimizer`` and ``schedule`` at ``ca_lr``
            (1e-4) on ``ca_params`` (``"head"``); ``"authors"``: the CALoR authors' stage 2, SGD
            momentum 0.9 without Nesterov or weight decay, ``MultiStepLR`` x0.1 after epochs 3
            and 4, ``ca_lr`` 2e-5 and ``ca_params`` ``"all"`` unless given (docs/calor.md).
        augment: preset name (``"none"``, ``"flip"``, ``"light"``, ``"strong"``,
            ``"digits"``) or a :class:`BatchAugment`.
        mean, std: input normalisation (default 0.5 per channel, as MIDRE's code).
        seed: seeds shuffling, augmentation, erasing, dropout and the head surgery.
        device: where to train; ``amp`` (default: on CUDA) autocasts to bfloat16
            (float16 with loss scaling where bfloat16 is unsupported).
        channels_last: train in channels-last memory format (faster convolutions
            on CPUs and GPUs); the returned model is back in the default format.
        progress: show a rich progress bar with loss, accuracy and confidence.
        resume: a file for the training state, written after every epoch; if it
            exists, training continues after its last epoch with the same result
            as an uninterrupted run (see :mod:`midefend.training.resume`).

    Under ``torchrun`` (more than one process) the loop trains data-parallel with
    DDP; ``batch_size`` stays the global batch (:mod:`midefend.training.distributed`).

    >>> # result = train_classifier(model, train, test, defense="midre", erase_max=0.8)
    """
    s = TrainSettings.build(settings, **kwargs)
    recipe = get_defense(s.defense)
    optimizer, schedule, batch_size, eval_every = s.optimizer, s.schedule, s.batch_size, s.eval_every
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("schedule", schedule, SCHEDULES)
    check_int("batch_size", batch_size, minimum=2)
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0:
        raise ConfigError(f"eval_every must be an integer >= 0 (0: only at the end of each stage), got {eval_every!r}")
    if len(train) < 2:
        raise DataError(f"training set {train.name!r} has {len(train)} images; need at least 2")
    stages = recipe.stages(s)
    augment, mean, std, seed, amp, rank = s.augment, s.mean, s.std, s.seed, s.amp, s.rank
    channels_last, progress, resume = s.channels_last, s.progress, s.resume
    base_augment = get_augment(augment)
    channels = train.channels
    mean = tuple(float(v) for v in (mean if mean is not None else (0.5,) * channels))
    std = tuple(float(v) for v in (std if std is not None else (0.5,) * channels))
    if len(mean) != channels or len(std) != channels or any(v <= 0 for v in std):
        raise ConfigError(f"mean and std need {channels} values (std > 0) for {channels}-channel images, got {mean}, {std}")
    weight_decay = s.weight_decay if s.weight_decay is not None else (0.05 if optimizer == "adamw" else 5e-4)
    world = detect_world()
    device = check_device(local_device(s.device, world))  # torchrun: cuda -> cuda:LOCAL_RANK
    plan = plan_data_parallel(world, batch_size)
    check_seed("seed", seed)
    if amp is None:
        amp = device.type == "cuda"
    if recipe.low_rank_head and rank is None:
        rank = default_rank(train.num_classes)
        s = s.replace(rank=rank)
    if any(stage.harden_before for stage in stages) and not _head_modules(model):
        from ..defenses.surgery import check_harden_rank

        check_harden_rank(model, rank)  # before any pre-training, not after it
    check_choice("head_init", s.head_init, HEAD_INITS)
    check_choice("head_activation", s.head_activation, tuple(ACTIVATIONS))
    check_positive_real("linear_range", s.linear_range)
    head = {"activation": s.head_activation, "init": s.head_init, "linear_range": s.linear_range}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        recipe.prepare(model, s, train.num_classes)  # e.g. MID's bottleneck head, seeded like the run
    config = {
        "defense": s.defense, "knobs": {k: getattr(s, k) for k in recipe.knobs}, "epochs": s.epochs, "lr": s.lr,
        "optimizer": optimizer, "schedule": schedule,
        "batch_size": batch_size, "weight_decay": weight_decay, "augment": _augment_name(augment),
        "seed": seed, "amp": bool(amp), "stages": [dataclasses.asdict(st) for st in stages],
        **({"head": head} if recipe.low_rank_head else {}),
        "world_size": world.size if world is not None else 1,
    }  # fmt: skip
    defense_record = recipe.record(s, stages, model)

    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    hardening = None
    extra: dict[str, Any] = {}  # the heads' regime at the warm start and at the end (CALoR)
    model.to(device)
    images, labels = train.images.to(device), train.labels.to(device)
    fingerprint = run_fingerprint(config, train, model) if resume is not None else ""
    main = world is None or world.is_main
    with process_group(device), _forked_rng(device, seed), TrainingProgress(enabled=progress and main) as bar, \
            contextlib.ExitStack() as stage_scope:  # fmt: skip
        data_gen = torch.Generator().manual_seed(seed)
        erase_gen = torch.Generator(device=device).manual_seed(plan.erase_seed(seed) if plan else seed + 1)
        if plan is not None:
            torch.manual_seed(plan.rng_seed(seed))  # dropout: a stream per rank
        saved = load_state(resume, fingerprint) if resume is not None else None
        if saved is not None:
            history = list(saved["history"])
            data_gen.set_state(saved["data_gen"])
            erase_gen.set_state(saved["erase_gen"].to(erase_gen.get_state().device))
            if plan is not None:
                plan.restore_streams(saved, erase_gen)
        for stage_index, stage in enumerate(stages):
            if saved is not None and stage_index < saved["stage"]:
                continue  # finished before the interruption; its weights come with the saved state
            if saved is not None and saved["hardened"] and not _head_modules(model):
                hardening = _harden_once(model, rank, None, head)  # the structure only; weights are loaded below
            elif stage.harden_before:
                calibration = normalize(images[torch.randperm(len(train), generator=data_gen)[:512]], mean, std)
                hardening = _harden_once(model, rank, calibration, head)
                extra["head_regime_start"] = regime_record(model, calibration)
            model.to(device)
            if plan is not None:
                sync_head_norms(model, device)  # before the optimiser takes the parameters
            if channels_last:
                model.to(memory_format=torch.channels_last)
            stage_scope.close()  # the previous stage's frozen layers and loss hooks end here
            stage_scope.enter_context(recipe.stage_scope(model, stage, s))
            loss_fn = recipe.criterion(stage, s, train.num_classes)
            stage_scope.enter_context(criterion_attached(loss_fn, model))
            optim, sched = _stage_optimizer(
                stage, optimizer, schedule, _param_groups(model, stage), weight_decay, len(train), batch_size,
                steps=plan.steps_per_epoch(len(train)) if plan else None,
            )  # fmt: skip
            scaler = torch.amp.GradScaler(device.type, enabled=bool(amp) and _amp_dtype(device) == torch.float16)
            first_epoch = 1
            if saved is not None and stage_index == saved["stage"]:
                model.load_state_dict(saved["model"])
                optim.load_state_dict(saved["optimizer"])
                sched.load_state_dict(saved["scheduler"])
                scaler.load_state_dict(saved["scaler"])
                first_epoch = saved["epoch"] + 1
            saved = None
            step = _Step(
                model=model, optim=optim, sched=sched, scaler=scaler,
                loss_fn=loss_fn,
                augment=get_augment(stage.augment) if stage.augment else base_augment,
                erase=stage.erase, mean=mean, std=std, channels_last=channels_last,
                amp=bool(amp), device=device, data_gen=data_gen, erase_gen=erase_gen,
                train_only=_head_modules(model) if stage.head_only else None, plan=plan,
            )  # fmt: skip
            with _only_heads_trainable(model, stage.head_only):  # head-only CA: no backbone gradients at all
                if plan is not None:
                    step.model = plan.wrap(model, device)  # inside: DDP syncs only what requires grad
                bar.start_stage(stage.name, stage.epochs, done=first_epoch - 1)
                for stage_epoch in range(first_epoch, stage.epochs + 1):
                    set_epoch(loss_fn, stage_epoch - 1, stage.epochs)
                    tick = time.perf_counter()
                    row = {"stage": stage.name, "epoch": len(history) + 1}
                    row |= step.epoch(images, labels, batch_size, where=f"stage {stage.name!r} epoch {stage_epoch}")
                    if test is not None and (stage_epoch == stage.epochs or (eval_every and stage_epoch % eval_every == 0)):
                        row["test_accuracy"] = evaluate(model, test, mean=mean, std=std, device=device)["accuracy"]
                    row["seconds"] = time.perf_counter() - tick
                    history.append(row)
                    bar.update(row)
                    streams = plan.rank_streams(erase_gen) if plan is not None and resume is not None else None
                    if resume is not None and main:
                        save_state(
                            resume, fingerprint=fingerprint, stage=stage_index, epoch=stage_epoch,
                            hardened=bool(_head_modules(model)), history=history,
                            model=model.state_dict(), optimizer=optim.state_dict(), scheduler=sched.state_dict(),
                            scaler=scaler.state_dict(), data_gen=data_gen.get_state(), erase_gen=erase_gen.get_state(),
                            **({"rank_streams": streams} if streams is not None else {}),
                        )  # fmt: skip
        stage_scope.close()
        unsync_head_norms(model)  # the returned model is the single-process one
        model.to(memory_format=torch.contiguous_format)
        model.zero_grad(set_to_none=True)  # the returned model carries no stale gradients
        model.eval()
        final_train = evaluate(model, train, mean=mean, std=std, device=device)
        if not math.isfinite(final_train["confidence"]):
            # the last step can blow the weights up behind a finite loss: say so here, not at save time
            where = f"stage {stages[-1].name!r} epoch {stages[-1].epochs}"
            raise ConfigError(f"training diverged in {where} (the trained model's outputs are not finite); lower lr")
        test_accuracy = evaluate(model, test, mean=mean, std=std, device=device)["accuracy"] if test is not None else None
        if _head_modules(model):
            extra["head_regime"] = regime_record(model, normalize(images, mean, std), warn=f"{s.defense} training")
    return TrainResult(
        model=model,
        history=history,
        test_accuracy=test_accuracy,
        train_accuracy=final_train["accuracy"],
        train_confidence=final_train["confidence"],
        defense=defense_record,
        config=config,
        mean=mean,
        std=std,
        seconds=time.perf_counter() - started,
        hardening=hardening,
        extra=extra,
    )


@dataclass
class _Step:
    """One stage's optimisation step, and an epoch of them (the formula in the module docstring)."""

    model: nn.Module
    optim: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    augment: BatchAugment
    erase: tuple[float, float] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool
    amp: bool
    device: torch.device
    data_gen: torch.Generator
    erase_gen: torch.Generator
    train_only: list[nn.Module] | None = None  # head-only stages: the rest stays in eval mode
    plan: DataParallelPlan | None = None  # torchrun: this rank's slice of each global batch

    def epoch(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, where: str) -> dict[str, float]:
        """One pass over shuffled batches; returns mean ``loss``, ``train_accuracy``, ``confidence`` and final ``lr``."""
        self.model.train(self.train_only is None)
        for module in self.train_only or ():
            module.train()
        totals = torch.zeros(4, dtype=torch.float64)  # loss sum, correct, p_y sum, count
        batches = self.plan.global_batches(len(labels), self.data_gen) if self.plan else _batches(len(labels), batch_size, self.data_gen)
        for index in batches:
            if self.plan is not None:
                x = self.plan.augment(self.augment, images, index, self.data_gen)
                index = self.plan.local(index)
            else:
                x = self.augment(images[index], generator=self.data_gen)
            if self.erase is not None:
                x = _erase(x, self.erase, self.erase_gen)
            x = normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = labels[index]
            with torch.autocast(self.device.type, dtype=_amp_dtype(self.device), enabled=self.amp):
                logits = self.model(x)
            logits = logits.float()
            loss = self.loss_fn(logits, y)
            if not torch.isfinite(loss if self.plan is None else self.plan.all_sum(loss.detach())):  # all ranks stop together
                lr = self.optim.param_groups[0]["lr"]
                raise ConfigError(f"training diverged in {where} (loss {loss.item()}); lower lr (now {lr:g})")
            self.optim.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
            self.sched.step()
            with torch.no_grad():
                p_y = logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)
                correct = (logits.argmax(1) == y).sum()
                batch = torch.stack([loss.detach() * len(y), correct.double(), p_y.sum().double(), torch.tensor(len(y))])
                totals += batch.double().cpu()
        if self.plan is not None:
            totals = self.plan.all_sum(totals.to(self.device)).cpu()
        count = totals[3].item()
        return {
            "loss": totals[0].item() / count,
            "train_accuracy": totals[1].item() / count,
            "confidence": totals[2].item() / count,
            "lr": self.optim.param_groups[0]["lr"],
        }


def default_rank(num_classes: int) -> int:
    """CALoR's head rank when none is given: ``clamp(2 * C // 5, 2, 30)``.

    30 is the authors' rank at 64x64 with 1000 identities; midefend's ORL probe
    kept 92.5% accuracy at rank 16 with 40 classes and lost 10 points at 8,
    hence 40% of the class count for small data sets.

    >>> default_rank(40), default_rank(1000), default_rank(5)
    (16, 30, 2)
    """
    return max(2, min(30, (2 * num_classes) // 5))


# -- helpers -----------------------------------------------------------------------------


def _augment_name(augment: str | BatchAugment | None) -> Any:
    return augment.__dict__ if isinstance(augment, BatchAugment) else augment


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def _forked_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the global RNG for the run without disturbing the caller's RNG state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


def _amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _steps_per_epoch(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches; a last batch of one sample is dropped (BatchNorm cannot train on it)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if len(index) >= 2:
            yield index


def _erase(x: torch.Tensor, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    from ..defenses.erasing import random_erase_batch

    # MIDRE's boxes: one square per image (ratio 1), area ratio ~ U[scale], filled
    # with the ImageNet mean; x is still in [0, 1] here.
    return random_erase_batch(x, p=1.0, scale=scale, ratio=(1.0, 1.0), value="mean", generator=generator)


@contextlib.contextmanager
def _only_heads_trainable(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Turn off ``requires_grad`` outside the low-rank heads for a head-only stage, and back on after it.

    The optimiser holds only the heads' parameters; without this the backward pass would still compute
    (and leave behind, accumulated) gradients for the whole backbone.
    """
    if not enabled:
        yield
        return
    head_ids = {id(p) for m in _head_modules(model) for p in m.parameters()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _head_modules(model: nn.Module) -> list[nn.Module]:
    from ..defenses.heads import LowRankTanhHead

    return [m for m in model.modules() if isinstance(m, LowRankTanhHead)]


def _harden_once(model: nn.Module, rank: int | None, calibration: torch.Tensor | None, head: dict[str, Any]) -> Any:
    """``harden(model, rank)`` unless the model already carries a low-rank head.

    The SVD warm start sees the head's inputs on ``calibration`` (normalised
    training images), so the new head's BatchNorm starts from real feature
    statistics and its tanh in the linear regime: the hardened model starts
    close to the trained one instead of from scratch. ``calibration=None``
    builds the structure only (resuming: the weights are loaded next), with
    the global RNG left as it was so the resumed run stays exact. ``head``:
    ``activation``, ``linear_range`` (the warm start's pre-activation RMS) and
    ``init`` (``"svd"``; ``"svd-lstsq"``: ``up`` refitted by least squares; ``"random"``:
    a fresh head, the CALoR authors' way).
    """
    if _head_modules(model):
        return getattr(model, "midefend_hardening", None)
    from ..defenses.surgery import harden

    if calibration is None:
        with torch.random.fork_rng(devices=[]):
            return harden(model, rank=rank, activation=head["activation"], init="random")
    if head["init"] == "random":
        return harden(model, rank=rank, activation=head["activation"], init="random")
    was_training = model.training
    model.eval()  # calibrate on inference-mode features (BatchNorm running statistics)
    report = harden(
        model, rank=rank, activation=head["activation"], init="svd", calibration=calibration,
        linear_range=head["linear_range"], refit_up=head["init"] == "svd-lstsq",
    )  # fmt: skip
    model.train(was_training)
    return report


def _param_groups(model: nn.Module, stage: Stage) -> list[dict[str, Any]]:
    """All trainable parameters (the head's only in head-only stages); the low-rank head's at ``head_lr_mult`` x the stage's lr."""
    if stage.head_only:
        return [{"params": [p for m in _head_modules(model) for p in m.parameters() if p.requires_grad], "lr": stage.lr}]
    params = [p for p in model.parameters() if p.requires_grad]
    if stage.head_lr_mult == 1.0:
        return [{"params": params, "lr": stage.lr}]
    head_ids = {id(p) for m in _head_modules(model) for p in m.parameters()}
    base = [p for p in params if id(p) not in head_ids]
    head = [p for p in params if id(p) in head_ids]
    return [{"params": base, "lr": stage.lr}, {"params": head, "lr": stage.lr * stage.head_lr_mult}]


def _stage_optimizer(
    stage: Stage, optimizer: str, schedule: str, groups: list[dict[str, Any]], weight_decay: float, n: int, batch_size: int,
    steps: int | None = None,
) -> tuple[torch.optim.Optimizer, Any]:
    """The stage's fresh optimiser and its per-step schedule (the run's, or the stage's own ``"authors-sgd"``);
    ``steps`` per epoch (default: those of ``n`` images in batches of ``batch_size``; data-parallel: full global batches)."""
    steps = steps if steps is not None else _steps_per_epoch(n, batch_size)
    if stage.optimizer == "authors-sgd":
        # The CALoR authors' stage 2: plain SGD with momentum, MultiStepLR over epochs (stepped per batch here).
        optim = torch.optim.SGD(groups, lr=stage.lr, momentum=0.9, nesterov=False, weight_decay=0.0)
        return optim, torch.optim.lr_scheduler.MultiStepLR(optim, [m * steps for m in stage.milestones], gamma=0.1)
    optim = _make_optimizer(optimizer, groups, stage.lr, weight_decay)
    return optim, _make_schedule(schedule, optim, stage.epochs, steps)


def _make_optimizer(kind: str, groups: list[dict[str, Any]], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def _make_schedule(kind: str, optim: torch.optim.Optimizer, epochs: int, steps_per_epoch: int):
    total = max(1, epochs * steps_per_epoch)
    if kind == "cosine":

        def factor(step: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    elif kind == "step":
        milestones = (int(0.75 * epochs) * steps_per_epoch, int(0.9 * epochs) * steps_per_epoch)

        def factor(step: int) -> float:
            return 0.1 ** sum(step >= m for m in milestones)

    else:

        def factor(step: int) -> float:
            return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optim, factor)


__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainResult", "default_rank", "evaluate", "normalize", "train_classifier"]
