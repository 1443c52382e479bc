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

Trainer and scorer are arguments, so tests can inject known trade-offs. The
default scorer, :class:`PortfolioScorer`, scores each model by the strongest
attack of ``verify``'s portfolio (adaptive variants included) at a reduced
budget (fast presets, one reconstruction for each of the first 10 classes);
:class:`MIFaceScorer` (MI-Face alone: pixel space, no prior) is cheaper and
weaker. Both judge with an independent evaluation model (``midefend/vgg_small``)
trained once on the fit part. A reduced attack ranks settings, it does not
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
#: ``scorer(model, fit, heldout) -> {"accuracy": ..., "attack_accuracy": ..., ...}`` (fractions in [0, 1]);
#: any other keys land in the row's ``extra`` (JSON values).
Scorer = Callable[[Any, ClassificationData, ClassificationData], dict[str, Any]]


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
            :class:`PortfolioScorer` (the strongest attack of verify's portfolio, reduced budget).
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
    scorer = scorer if scorer is not None else PortfolioScorer()

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
    ax.axvline(
        100 * result.nodef.accuracy - result.max_acc_drop,
        linestyle="--",
        color="grey",
        label=f"budget -{result.max_acc_drop:g} pts",
    )
    if result.chosen is not None:
        ax.scatter(
            [100 * result.chosen.accuracy],
            [100 * result.chosen.attack_accuracy],
            s=160,
            facecolors="none",
            edgecolors="red",
            label="chosen",
        )
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


class _HeldOutJudge:
    """What both scorers share: held-out accuracy, the target as a :class:`Classifier`, and an evaluation
    model trained once on the fit part (never on held-out or test images) that judges reconstructions."""

    def __init__(self, *, eval_epochs: int = 30, eval_arch: str = "midefend/vgg_small", seed: int = 0) -> None:
        self.eval_epochs, self.eval_arch, self.seed = eval_epochs, eval_arch, seed
        self._evaluator: Any = None

    def _target(self, result: Any, fit: ClassificationData, heldout: ClassificationData) -> tuple[Any, float]:
        from ..models.classifier import Classifier
        from ..training.loop import evaluate

        model, mean, std = result.model, result.mean, result.std
        accuracy = evaluate(model, heldout, mean=mean, std=std)["accuracy"]
        return Classifier(model, input_size=tuple(fit.images.shape[1:]), mean=mean, std=std, name="target"), accuracy

    def _attack_accuracy(self, recon: Any, fit: ClassificationData) -> float:
        """Share of the reconstructions the evaluation model assigns to the class they were made for."""
        predicted = self._judge(fit).predict(recon.images.flatten(0, 1) if recon.images.ndim == 5 else recon.images).argmax(1)
        classes = torch.as_tensor(recon.classes).repeat_interleave(len(predicted) // len(recon.classes))
        return float((predicted == classes).float().mean())

    @staticmethod
    def _release(result: Any) -> None:
        for p in result.model.parameters():
            p.requires_grad_(True)  # Classifier froze the model for the attack; give it back trainable

    def _judge(self, fit: ClassificationData) -> Any:
        if self._evaluator is None:
            from ..architectures import build_model
            from ..models.classifier import Classifier
            from ..training.loop import train_classifier

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + 1)
                net = build_model(self.eval_arch, num_classes=fit.num_classes, in_chans=fit.channels)
            trained = train_classifier(net, fit, None, epochs=self.eval_epochs, progress=False, seed=self.seed + 1)
            self._evaluator = Classifier(
                trained.model, input_size=tuple(fit.images.shape[1:]), mean=trained.mean, std=trained.std, name="evaluator"
            )
        return self._evaluator


class MIFaceScorer(_HeldOutJudge):
    """Held-out accuracy and MI-Face attack accuracy judged by an evaluation model trained on the fit part (once).

    Cheap and weak (pixel space, no prior, one reconstruction per class): ``midefend tune --scorer miface``.
    """

    def __init__(self, *, steps: int = 100, eval_epochs: int = 30, eval_arch: str = "midefend/vgg_small", seed: int = 0) -> None:
        super().__init__(eval_epochs=eval_epochs, eval_arch=eval_arch, seed=seed)
        self.steps = steps

    def __call__(self, result: Any, fit: ClassificationData, heldout: ClassificationData) -> dict[str, float]:
        from ..attacks.miface import MIFaceAttack

        target, accuracy = self._target(result, fit, heldout)
        recon = MIFaceAttack(per_class=1, steps=self.steps, seed=self.seed).run(target)
        attack_accuracy = self._attack_accuracy(recon, fit)
        self._release(result)
        return {"accuracy": accuracy, "attack_accuracy": attack_accuracy}


class PortfolioScorer(_HeldOutJudge):
    """Held-out accuracy and the attack accuracy of the STRONGEST attack of ``verify``'s portfolio, at a reduced budget.

    The portfolio is planned exactly as ``verify`` plans it (:func:`~midefend.evaluation.portfolio.plan_portfolio`):
    every registered attack the threat model allows and the prior supports, plus the adaptive
    variant the model's defense record calls for (EOT against erasing, BPDA + the CA-optimum loss
    against a low-rank tanh head), so a setting cannot look strong only against an attack that does
    not know it. The budget is cut so that scoring stays within minutes per model: the attacks'
    ``fast`` presets, ``per_class`` reconstructions (default 1) of the first ``classes`` (default:
    the first 10 classes; ``"all"`` or a spec such as ``"0-19"``), and ``steps`` (default: each
    attack's own). Judged by the evaluation model trained on the fit part; the row's ``extra``
    names the strongest attack and holds each attack's accuracy.

    Cost: about five attacks (six with an adaptive variant) instead of one. An estimate from a full
    ``verify`` of an ORL target on the CPU (about 3 s per reconstruction for the whole portfolio)
    puts the default budget (10 reconstructions, fast presets) near half a minute to two minutes
    per model, several times MI-Face's -- not measured here; it grows linearly with ``classes`` x
    ``per_class``. PLG also trains a small conditional GAN once per model (its fast preset: 80 steps).
    """

    def __init__(
        self,
        *,
        prior: Any = "face-gan",
        classes: str | Sequence[int] | None = None,
        per_class: int = 1,
        steps: int | None = None,
        fast: bool = True,
        threat_model: str = "white-box",
        adaptive: str = "auto",
        eval_epochs: int = 30,
        eval_arch: str = "midefend/vgg_small",
        seed: int = 0,
    ) -> None:
        from .portfolio import allowed_threat_models

        super().__init__(eval_epochs=eval_epochs, eval_arch=eval_arch, seed=seed)
        allowed_threat_models(threat_model)  # a bad threat model fails before any training
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ConfigError(f"steps must be a positive integer or None, got {steps!r}")
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ConfigError(f"per_class must be a positive integer, got {per_class!r}")
        self.prior_spec, self.classes, self.per_class, self.steps = prior, classes, per_class, steps
        self.fast, self.threat_model, self.adaptive = fast, threat_model, adaptive
        self._prior: Any = None

    def _class_list(self, num_classes: int) -> list[int] | None:
        from .verify import parse_classes

        if self.classes is None:
            return list(range(min(10, num_classes)))
        return parse_classes(self.classes, num_classes)

    def _load_prior(self) -> Any:
        if self._prior is None and self.prior_spec is not None:
            from ..attacks import load_prior
            from ..attacks.priors import GenerativePrior

            self._prior = self.prior_spec if isinstance(self.prior_spec, GenerativePrior) else load_prior(self.prior_spec)
        return self._prior

    def __call__(self, result: Any, fit: ClassificationData, heldout: ClassificationData) -> dict[str, Any]:
        from .portfolio import plan_portfolio

        target, accuracy = self._target(result, fit, heldout)
        prior = self._load_prior()
        options = {"per_class": self.per_class, "seed": self.seed} | ({"steps": self.steps} if self.steps is not None else {})
        planned, _skipped = plan_portfolio(
            threat_model=self.threat_model,
            defense=result.defense,
            prior=prior,
            adaptive=self.adaptive,
            fast=self.fast,
            options=options,
        )
        classes = self._class_list(fit.num_classes)
        by_attack: dict[str, float] = {}
        try:
            for plan in planned:
                instance = plan.build()
                recon = instance.run(target, prior if type(instance).uses_prior else None, classes=classes)
                by_attack[plan.label] = self._attack_accuracy(recon, fit)
        finally:
            self._release(result)
        strongest = max(by_attack, key=lambda label: by_attack[label])  # first planned wins a tie
        return {
            "accuracy": accuracy,
            "attack_accuracy": by_attack[strongest],
            "strongest_attack": strongest,
            "attack_accuracy_by_attack": by_attack,
        }


__all__ = [
    "DefaultTrainer",
    "MIFaceScorer",
    "PortfolioScorer",
    "Row",
    "Scorer",
    "Trainer",
    "TuneResult",
    "choose",
    "param_name",
    "parse_values",
    "tune",
    "write_tune",
]
