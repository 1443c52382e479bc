"""``midefend tune``: choose a defense's strength within an accuracy budget, on held-out training images.

    midefend tune --data orl --defense calor --param rank --values 4,8,12,16 --max-acc-drop 5 --out tune-calor
    midefend tune --data orl --defense midre --param erase-max --values 0.4,0.6,0.8 --epochs 30 --out tune-midre

Trains NoDef and the defense at each value on part of the TRAINING split,
scores each on the held-out rest (accuracy, and the attack accuracy judged by an
evaluation model trained on the fit part), and chooses the strongest protection
within ``--max-acc-drop`` points of NoDef. Writes ``OUT/tune.json`` and
``OUT/tradeoff.png``. Exit code 1 when no value is within the budget (the record
is still written). See :mod:`midefend.evaluation.tune`.

The scorer (``--scorer``): ``portfolio`` (default) attacks every model with
``verify``'s portfolio -- every attack the threat model allows, adaptive
variants from the model's defense -- and keeps the strongest, at a reduced
budget: fast presets, ``--attack-per-class`` 1, the first 10 classes
(``--attack-classes``). Cost, estimated from a full ``verify`` on ORL (not
measured for tune): half a minute to two minutes per model on the CPU, several
times ``--scorer miface`` (MI-Face alone: the cheap, weak scorer of earlier
versions), growing with classes x per-class; training the models usually costs
more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import BUILTIN_DEFENSES, app, check_defense, console, handle_errors


@app.command("tune")
@handle_errors
def tune_command(
    data: Annotated[str, typer.Option("--data", help="'orl', 'digits', or a folder; only its training split is used.")],
    defense: Annotated[str, typer.Option("--defense", help=f"One of {', '.join(sorted(BUILTIN_DEFENSES))} (or a defense your --arch-module registers).")],
    param: Annotated[
        str, typer.Option("--param", help="The knob: rank, erase-max, beta, smoothing, hsic-x, hsic-y, freeze, ...")
    ],
    values: Annotated[str, typer.Option("--values", help="Comma-separated values to try, e.g. 4,8,12,16.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for tune.json and tradeoff.png (created).", file_okay=False)],
    max_acc_drop: Annotated[float, typer.Option("--max-acc-drop", help="Accuracy budget in points below NoDef.")] = 5.0,
    holdout: Annotated[float, typer.Option("--holdout", help="Fraction of each class's training images held out.")] = 0.3,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs (default per data set).")] = None,
    scorer: Annotated[
        str, typer.Option("--scorer", help="portfolio (strongest attack of verify's portfolio, reduced budget) or miface.")
    ] = "portfolio",
    attack_steps: Annotated[
        Optional[int],
        typer.Option("--attack-steps", help="Steps of every scoring attack (default: each attack's own; MI-Face 100)."),
    ] = None,
    attack_classes: Annotated[
        Optional[str],
        typer.Option("--attack-classes", help="portfolio: classes to attack, 'all' or e.g. 0-19 (default: the first 10)."),
    ] = None,
    attack_per_class: Annotated[int, typer.Option("--attack-per-class", help="portfolio: reconstructions per class.")] = 1,
    attack_fast: Annotated[
        bool, typer.Option("--attack-fast/--no-attack-fast", help="portfolio: the attacks' fast presets.")
    ] = True,
    prior: Annotated[
        str,
        typer.Option(
            "--prior", help="portfolio: the generator prior ('face-gan' or a prior file); 'none': prior-free attacks only."
        ),
    ] = "face-gan",
    eval_epochs: Annotated[int, typer.Option("--eval-epochs", help="Epochs of the judging evaluation model.")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, training and attack.")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Choose the strongest setting of one defense knob within an accuracy budget."""
    check_defense(defense)
    from ..data.resolve import load_dataset
    from ..errors import ConfigError
    from ..evaluation.tune import MIFaceScorer, PortfolioScorer, param_name, parse_values, tune
    from ..training.settings import TrainSettings
    from ..training.targets import recipe_for

    from ..training.recipes import get_defense

    param_name(param)
    tried = parse_values(values)
    if scorer == "miface":
        the_scorer: object = MIFaceScorer(steps=100 if attack_steps is None else attack_steps, eval_epochs=eval_epochs, seed=seed)
    elif scorer == "portfolio":
        the_scorer = PortfolioScorer(
            prior=None if prior == "none" else prior, classes=attack_classes, per_class=attack_per_class, steps=attack_steps,
            fast=attack_fast, eval_epochs=eval_epochs, seed=seed,
        )  # fmt: skip
    else:
        raise ConfigError(f"--scorer must be portfolio or miface, got {scorer!r}")
    train, _test = load_dataset(data, seed=0)  # the test part is never passed on
    per_data = recipe_for(data)
    settings = TrainSettings(
        epochs=per_data["epochs"] if epochs is None else epochs, lr=per_data["lr"], batch_size=per_data["batch_size"],
        augment=per_data["augment"], seed=seed, device=device, calor_lr=1e-4 if get_defense(defense).fine_tunes else None,
    )  # fmt: skip
    result = tune(
        train, defense=defense, param=param, values=tried, max_acc_drop=max_acc_drop, settings=settings, holdout=holdout,
        seed=seed, scorer=the_scorer, out_dir=out,
        log=(lambda message: None) if quiet else (lambda message: console.print(message, highlight=False)),
    )  # fmt: skip
    if result.chosen is None:
        console.print(
            f"no value of {param} keeps {defense} within {max_acc_drop:g} points of NoDef; record in {out}", highlight=False
        )
        raise typer.Exit(code=1)
    console.print(
        f"chosen {param}={result.chosen.value}: held-out accuracy {result.chosen.accuracy:.1%} "
        f"(NoDef {result.nodef.accuracy:.1%}), attack accuracy {result.chosen.attack_accuracy:.1%} "
        f"(NoDef {result.nodef.attack_accuracy:.1%}) -> {out}",
        highlight=False,
        soft_wrap=True,
    )
