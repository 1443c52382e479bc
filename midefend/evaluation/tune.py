"""``midefend tune``: the strongest setting of one defense knob within an accuracy budget.

For one defense and one knob (``rank``, ``erase_max``, ``beta``, ``smoothing``, ...)
and a list of values:

1. split the **training** data into a fit part and a held-out part (every class
   the same way, seeded); the test set is never read, so choosing a setting
   cannot peek at the data the final model is judged on;
2. train NoDef and the defense at each value on the fit part (the *trainer*);
3. score each model (the *scorer*): accuracy on the held-out part and the
   accuracy of an attack against it;
4. keep the values whose held-out accuracy is at most ``max_acc_drop`` points
   below NoDef's, and choose the one with the lowest attack accuracy (ties: the
   more accurate one);
5. write ``tune.json`` (every row and the choice) and ``tradeoff.png``
   (accuracy against attack accuracy), atomically.

Trainer and scorer are arguments, so a stronger attack (the verification
portfolio) can replace the default scorer, and tests can inject known
trade-offs. The default scorer is cheap: MI-Face (pixel-space, no generator
prior, :mod:`midefend.attacks.miface`) with one reconstruction per class, judged
by an independent evaluation model (``midefend/vgg_small``) trained once on the
fit part. MI-Face is a weak attack; its numbers rank settings, they do not
certify them -- verify the chosen model with ``midefend verify``.

>>> rows = [Row(None, 0.95, 0.60), Row(4, 0.93, 0.20), Row(8, 0.94, 0.30), Row(2, 0.80, 0.05)]
>>> choose(rows[0], rows[1:], max_acc_drop=5.0).value
4
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.datasets import ClassificationData
from ..errors import ConfigError
from ..io.atomic import atomic_write, atomic_write_text
from ..training.recipes import get_defense
from ..training.settings import TrainSettings, field_names

#: ``trainer(settings, fit, heldout) -> model`` (anything the scorer understands).
Trainer = Callable[[TrainSettings, ClassificationData, ClassificationData], Any]
#: ``scorer(model, fit, heldout) -> {"accuracy": ..., "attack_accuracy": ..., ...}`` (fractions in [0, 1]).
Scorer = Callable[[Any, ClassificationData, ClassificationData], dict[str, float]]


@dataclass
class Row:
    """One trained model: the knob's ``value`` (``None`` for NoDef) and its scores."""

    value: Any
    accuracy: float
    attack_accuracy: float
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TuneResult:
    """What :func:`tune` found; ``chosen`` is ``None`` when no value is within the budget."""

    defense: str
    param: str
    max_acc_drop: float
    nodef: Row
    rows: list[Row]
    chosen: Row | None
    split: dict[str, Any]
    files: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["chosen_value"] = None if self.chosen is None else self.chosen.value
        return out


def choose(nodef: Row, rows: Sequence[Row], *, max_acc_drop: float) -> Row | None:
    """The row with the lowest attack accuracy among those within ``max_acc_drop`` points of NoDef's accuracy."""
    floor = nodef.accuracy - max_acc_drop / 100.0 - 1e-12
    allowed = [row for row in rows if row.accuracy >= floor]
    if not allowed:
        return None
    return min(allowed, key=lambda row: (row.attack_accuracy, -row.accuracy))


def param_name(param: str) -> str:
    """``"erase-max"`` -> ``"erase_max"``; refuses names that are not training settings."""
    name = param.replace("-", "_")
    if name not in field_names() or name in ("defense", "device", "progress", "resume"):
        raise ConfigError(f"--param {param!r} is not a training setting; e.g. rank, erase-max, beta, smoothing, hsic-x, freeze")
    return name


def parse_values(text: str) -> list[Any]:
    """``"4,8,12"`` -> ``[4, 8, 12]``; ``"0.4, 0.8"`` -> ``[0.4, 0.8]`` (ints stay ints)."""
    values: list[Any] = []
    for item in text.split(","):
        item = item.strip()
        try:
            values.append(int(item))
        except ValueError:
            try:
                values.append(float(item))
            except ValueError:
                raise ConfigError(f"--values must be numbers separated by commas, got {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"--values must list distinct numbers, got {text!r}")
    return values


def tune(
    train: ClassificationData,
    *,
    defense: str,
    param: str,
    values: Sequence[Any],
    max_acc_drop: float = 5.0,
    settings: TrainSettings | None = None,
    holdout: float = 0.3,
    seed: int = 0,
    trainer: Trainer | None = None,
    scorer: Scorer | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> TuneResult:
    """Train NoDef and ``defense`` with ``param`` at each of ``values`` on the training data; choose (module docstring).

    Args:
        train: the TRAINING data only (``holdout`` of each class is held out for scoring).
        defense, param, values: a registered defense, a :class:`TrainSettings` field
            (``"erase-max"`` spelling accepted) and the values to try.
        max_acc_drop: the accuracy budget in points (5.0 = five percentage points).
        settings: the base training settings (epochs, lr, ...) for every model.
        trainer, scorer: see :data:`Trainer` and :data:`Scorer`; default: train from
            scratch with :func:`~midefend.training.train_classifier` (recipes that fine-tune,
            CALoR and TL, start from the NoDef model of this run) and
            :class:`MIFaceScorer`.
        out_dir: write ``tune.json`` and ``tradeoff.png`` here (created).
    """
    get_defense(defense)
    name = param_name(param)
    if not values:
        raise ConfigError("values must list at least one setting to try")
    if isinstance(max_acc_drop, bool) or not isinstance(max_acc_drop, (int, float)) or not 0 <= max_acc_drop <= 100:
        raise ConfigError(f"max_acc_drop must be a number of points in [0, 100], got {max_acc_drop!r}")
    base = TrainSettings.build(settings, progress=False)
    for value in values:  # every value must make a valid recipe before hours of training start
        get_defense(defense).stages(base.replace(defense=defense, **{name: value}))
    fit, heldout = train.split(test_fraction=holdout, seed=seed)
    trainer = trainer if trainer is not None else DefaultTrainer()
    scorer = scorer if scorer is not None else MIFaceScorer()

    def run(value: Any, s: TrainSettings) -> Row:
        tick = time.perf_counter()
        model = trainer(s, fit, heldout)
        scores = dict(scorer(model, fit, heldout))
        row = Row(value, float(scores.pop("accuracy")), float(scores.pop("attack_accuracy")), time.perf_counter() - tick, scores)
        log(f"{s.defense} {name}={value}: held-out accuracy {row.accuracy:.1%}, attack accuracy {row.attack_accuracy:.1%}")
        return row

    nodef = run(None, base.replace(defense="nodef"))
    rows = [run(value, base.replace(defense=defense, **{name: value})) for value in values]
    chosen = choose(nodef, rows, max_acc_drop=max_acc_drop)
    split = {"holdout": holdout, "seed": seed, "n_fit": len(fit), "n_heldout": len(heldout), "test_set_used": False}
    result = TuneResult(defense, name, float(max_acc_drop), nodef, rows, chosen, split)
    if out_dir is not None:
        result.files = write_tune(result, out_dir)
    return result


def write_tune(result: TuneResult, out_dir: str | Path) -> dict[str, str | None]:
    """``tune.json`` and ``tradeoff.png`` in ``out_dir`` (created), each written atomically."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | None] = {"json": str(folder / "tune.json"), "plot": str(folder / "tradeoff.png")}
    try:
        _plot(result, folder / "tradeoff.png")
    except ImportError:
        files["plot"] = None  # matplotlib is an optional extra (midefend[bench])
    result.files = files
    atomic_write_text(folder / "tune.json", json.dumps(result.to_json(), indent=2, default=str) + "\n")
    return files


def _plot(result: TuneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([100 * r.accuracy for r in result.rows], [100 * r.attack_accuracy for r in result.rows], label=result.defense)
    for r in result.rows:
        ax.annotate(f"{r.value}", (100 * r.accuracy, 100 * r.attack_accuracy), textcoords="offset points", xytext=(4, 4))
    ax.scatter([100 * result.nodef.accuracy], [100 * result.nodef.attack_accuracy], marker="s", color="black", label="nodef")
    ax.axvline(100 * result.nodef.accuracy - result.max_acc_drop, linestyle="--", color="grey", label=f"budget -{result.max_acc_drop:g} pts")
    if result.chosen is not None:
        ax.scatter([100 * result.chosen.accuracy], [100 * result.chosen.attack_accuracy], s=160, facecolors="none", edgecolors="red", label="chosen")
    ax.set_xlabel("held-out accuracy (%)")
    ax.set_ylabel("attack accuracy (%)")
    ax.set_title(f"{result.defense}: {result.param}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


class DefaultTrainer:
    """Train from scratch on the fit part; recipes that fine-tune start from this run's NoDef model."""

    def __init__(self, arch: str = "midefend/resnet_small", arch_kwargs: dict[str, Any] | None = None) -> None:
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs or {})
        self._nodef: torch.nn.Module | None = None

    def __call__(self, s: TrainSettings, fit: ClassificationData, heldout: ClassificationData) -> Any:
        import copy

        from ..architectures import build_model
        from ..training.loop import train_classifier

        recipe = get_defense(s.defense)
        if recipe.fine_tunes and self._nodef is not None:
            model = copy.deepcopy(self._nodef)
            s = s.replace(pretrain_epochs=0)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s.seed)
                model = build_model(self.arch, num_classes=fit.num_classes, in_chans=fit.channels, **self.arch_kwargs)
            if recipe.fine_tunes:
                s = s.replace(pretrain_epochs=s.epochs)
        result = train_classifier(model, fit, None, s)
        if s.defense == "nodef":
            self._nodef = copy.deepcopy(result.model)
        return result


class MIFaceScorer:
    """Held-out accuracy and MI-Face attack accuracy judged by an evaluation model trained on the fit part (once)."""

    def __init__(self, *, steps: int = 100, eval_epochs: int = 30, eval_arch: str = "midefend/vgg_small", seed: int = 0) -> None:
        self.steps, self.eval_epochs, self.eval_arch, self.seed = steps, eval_epochs, eval_arch, seed
        self._evaluator: Any = None

    def __call__(self, result: Any, fit: ClassificationData, heldout: ClassificationData) -> dict[str, float]:
        from ..attacks.miface import MIFaceAttack
        from ..training.loop import evaluate
        from ..models.classifier import Classifier

        model, mean, std = result.model, result.mean, result.std
        accuracy = evaluate(model, heldout, mean=mean, std=std)["accuracy"]
        target = Classifier(model, input_size=tuple(fit.images.shape[1:]), mean=mean, std=std, name="target")
        attack = MIFaceAttack(per_class=1, steps=self.steps, seed=self.seed)
        recon = attack.run(target)
        judge = self._judge(fit)
        predicted = judge.predict(recon.images.flatten(0, 1) if recon.images.ndim == 5 else recon.images).argmax(1)
        classes = torch.as_tensor(recon.classes).repeat_interleave(len(predicted) // len(recon.classes))
        for p in model.parameters():
            p.requires_grad_(True)  # Classifier froze the model for the attack; give it back trainable
        return {"accuracy": accuracy, "attack_accuracy": float((predicted == classes).float().mean())}

    def _judge(self, fit: ClassificationData) -> Any:
        if self._evaluator is None:
            from ..architectures import build_model
            from ..training.loop import train_classifier
            from ..models.classifier import Classifier

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + 1)
                net = build_model(self.eval_arch, num_classes=fit.num_classes, in_chans=fit.channels)
            trained = train_classifier(net, fit, None, epochs=self.eval_epochs, progress=False, seed=self.seed + 1)
            self._evaluator = Classifier(trained.model, input_size=tuple(fit.images.shape[1:]), mean=trained.mean, std=trained.std, name="evaluator")
        return self._evaluator


__all__ = ["DefaultTrainer", "MIFaceScorer", "Row", "Scorer", "Trainer", "TuneResult", "choose", "param_name", "parse_values", "tune", "write_tune"]
