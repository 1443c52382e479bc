"""``verify``: attack a checkpoint, judge the reconstructions, write the reports — one call.

This is what ``midefend verify`` runs::

    target  = load_checkpoint(CKPT)            # the model to check
    eval    = load_checkpoint(EVAL)            # independent evaluation model
    train, test = load_dataset(data, ...)      # the target's private split
    for attack in plan_portfolio(...):         # every allowed attack + adaptive variants
        result  = run_attack(attack, target, prior, classes=..., out_dir=OUT/attacks/NAME)
        metrics = evaluate_attack(result, eval, train, target=target, test=test)
    write_report(OUT, ...)                     # report.json, report.md, grid.png (strongest), grid-NAME.png

The headline (``metrics``, ``strongest_attack``) is the attack with the highest
attack accuracy @1 of the independent evaluator; every attack keeps its row.

``data`` defaults to the data set recorded in the target checkpoint (``extra["data"]``,
written by :func:`midefend.training.train_target`), with the same split, so the
KNN distance and FID compare against exactly the images the target trained on.

>>> parse_classes("0-3,7", 10)
[0, 1, 2, 3, 7]
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch

from .._version import __version__
from ..errors import ConfigError
from .class_order import evaluator_in_target_order
from .classifier import Classifier
from .evaluators import build_evaluators, judge
from .feasibility import check_classes_present, planned_notes
from .private_data import load_private_data, recorded_data
from .reports import write_report


def parse_classes(spec: str | Sequence[int] | None, num_classes: int) -> list[int] | None:
    """``"all"``/``None`` -> ``None`` (all classes); ``"0-9"``, ``"1,4,7"``, ``"0-3,7"`` -> sorted indices."""
    if spec is None or spec == "all":
        return None
    if not isinstance(spec, str):
        return [int(c) for c in spec]
    out: set[int] = set()
    try:
        for part in spec.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first > last:
                raise ValueError
            out.update(range(first, last + 1))
    except ValueError:
        raise ConfigError(f"classes must be 'all', a range like '0-9' or a list like '1,4,7', got {spec!r}") from None
    bad = sorted(c for c in out if c >= num_classes)
    if bad:
        raise ConfigError(f"classes must be in 0..{num_classes - 1}, got {bad[0]} in {spec!r}")
    return sorted(out)


def _load(path: Any, device: str) -> Any:
    """A loaded checkpoint as is, or a path loaded with :func:`~midefend.io.checkpoints.load_checkpoint`."""
    from ..io.checkpoints import load_checkpoint

    if hasattr(path, "model") and hasattr(path, "input_size"):
        return path
    return load_checkpoint(path, device=device)


def _describe(ckpt: Any, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "path": str(ckpt.path) if getattr(ckpt, "path", None) else None,
        "arch": ckpt.arch,
        "defense": (ckpt.defense or {}).get("name") if isinstance(ckpt.defense, dict) else ckpt.defense,
        "defense_config": ckpt.defense,
        "num_classes": ckpt.num_classes,
        "input_size": list(ckpt.input_size),
        "test_accuracy_recorded": (ckpt.extra or {}).get("test_accuracy"),
    }


def attack_dir(out_dir: Path, label: str, *, run: int, portfolio: bool, repeats: int) -> Path:
    """Where one attack run keeps its per-class results (``resume`` reads them back).

    A single attack run once (``--attack NAME``) keeps the historical layout ``OUT/attack``; a
    portfolio or repeated runs use ``OUT/attacks/<label>`` and ``.../run<i>`` below it.
    """
    if not portfolio and repeats == 1:
        return out_dir / "attack"
    base = out_dir / "attacks" / label
    return base if repeats == 1 else base / f"run{run}"


def prepare_verify(
    checkpoint: Any,
    *,
    eval_model: Any = None,
    data: str | Path | None = None,
    prior: Any = "face-gan",
    attack: str | None = None,
    threat_model: str = "white-box",
    adaptive: str = "auto",
    fast: bool = False,
    classes: str | Sequence[int] | None = None,
    device: str = "cpu",
    split_seed: int | None = None,
    attack_options: dict[str, Any] | None = None,
    train_data: str | Path | None = None,
    test_data: str | Path | None = None,
    contract: dict[str, Any] | None = None,
    faces: bool | None = None,
) -> SimpleNamespace:
    """Load everything a verify run needs and plan its attacks (no attack runs here).

    Returns a namespace with ``target_ckpt``, ``eval_ckpt``, ``target``, ``evaluator``,
    ``train``, ``test``, ``classes`` (``None``: all), ``prior``, ``planned`` and ``skipped``
    (see :func:`~midefend.evaluation.portfolio.plan_portfolio`).
    """
    from ..attacks import get_attack, list_attacks, load_prior
    from ..attacks.priors import GenerativePrior
    from .portfolio import allowed_threat_models, plan_portfolio

    allowed = allowed_threat_models(threat_model)  # a bad threat model or attack name fails before anything is loaded
    if attack is not None:
        get_attack(attack)
    if isinstance(checkpoint, torch.nn.Module):
        from .in_memory import in_memory_checkpoint

        checkpoint = in_memory_checkpoint(checkpoint, device=device, **{"input_size": None, "mean": None, "std": None, **(contract or {})})
    target_ckpt = _load(checkpoint, device)
    target_name = Path(target_ckpt.path).stem if getattr(target_ckpt, "path", None) else "target"
    train, test = load_private_data(target_ckpt, data, split_seed=split_seed, train_data=train_data, test_data=test_data)
    judges = build_evaluators(eval_model, target_ckpt=target_ckpt, train=train, device=device, load=_load, faces=faces)  # a checkpoint and/or face recognisers
    eval_ckpt, evaluator, eval_order = judges.trained_ckpt, judges.primary, None
    if eval_ckpt is not None:
        evaluator, eval_order = evaluator_in_target_order(eval_ckpt, train.classes, train.classes)
        judges.trained = evaluator
    parsed_classes = parse_classes(classes, target_ckpt.num_classes)
    check_classes_present(train, parsed_classes, target_ckpt.num_classes)
    names = [attack] if attack is not None else [n for n in list_attacks() if get_attack(n).threat_model in allowed]
    the_prior = None
    if prior is not None and any(get_attack(n).uses_prior for n in names):
        the_prior = prior if isinstance(prior, GenerativePrior) else load_prior(prior, device=device)
    planned, skipped = plan_portfolio(
        threat_model=threat_model, defense=target_ckpt.defense if isinstance(target_ckpt.defense, dict) else {"name": target_ckpt.defense},
        prior=the_prior, adaptive=adaptive, attack=attack, fast=fast, options=attack_options,
    )
    return SimpleNamespace(
        target_ckpt=target_ckpt, eval_ckpt=eval_ckpt, judges=judges, target_name=target_name,
        target=Classifier.from_checkpoint(target_ckpt, name=target_name), evaluator=evaluator, eval_class_order=eval_order,
        train=train, test=test, classes=parsed_classes, prior=the_prior,
        not_computed=planned_notes(train, parsed_classes, target_ckpt.num_classes, int((attack_options or {}).get("per_class", 4))),
        planned=planned, skipped=skipped,
    )


def estimate_verify(checkpoint: Any, *, repeats: int = 1, log: Any = None, **kwargs: Any) -> dict[str, Any]:
    """The cost of ``verify(checkpoint, repeats=repeats, **kwargs)`` without running it (``--dry-run``):
    :func:`~midefend.evaluation.cost.estimate_run` of the prepared run."""
    from .cost import estimate_run

    kwargs.pop("out_dir", None)
    reach = kwargs.pop("reach", True)
    kwargs.pop("budget", None)  # the dry run prices the whole portfolio; --budget plans from it
    if log is not None:
        log("dry run: loading the target, its data and the prior ...")
    run = prepare_verify(checkpoint, **kwargs)
    return estimate_run(run, device=kwargs.get("device", "cpu"), repeats=repeats, reach=reach, log=log)


def verify(
    checkpoint: Any,
    *,
    eval_model: Any = None,
    data: str | Path | None = None,
    prior: Any = "face-gan",
    attack: str | None = None,
    threat_model: str = "white-box",
    adaptive: str = "auto",
    fast: bool = False,
    repeats: int = 1,
    classes: str | Sequence[int] | None = None,
    out_dir: str | Path = "runs/verify",
    resume: bool = False,
    device: str = "cpu",
    progress: bool = False,
    split_seed: int | None = None,
    attack_options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    train_data: str | Path | None = None,
    test_data: str | Path | None = None,
    input_size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: dict[str, Any] | None = None,
    shard: str | None = None,
    merge: bool = False,
    faces: bool | None = None,
    reach: bool = True,
    budget: float | str | None = None,
) -> dict[str, Any]:
    """Attack ``checkpoint`` with a portfolio of attacks; write ``report.json``, ``report.md`` and grids to ``out_dir``.

    Args:
        eval_model: the judges: an evaluation-model checkpoint and/or face recognisers
            (``"facenet"``, ``"dlib"``); default on face data: every installed face recogniser
            (see :mod:`~midefend.evaluation.evaluators`).
        faces: the data shows faces (``None``: detected, ORL is); decides the default judges.
        checkpoint, eval_model: paths of midefend checkpoints (or loaded ``Checkpoint`` objects);
            ``checkpoint`` may also be a model object (``nn.Module``, transformers models
            included) with its input contract ``input_size``, ``mean``, ``std`` and
            optionally ``class_names`` and ``preprocess`` (as ``save_checkpoint`` takes them).
        data: ``"orl"``, ``"digits"`` or a folder; default: the target's recorded data.
        train_data, test_data: the owner's training and held-out class folders, used
            as given instead of ``data`` (see :mod:`midefend.evaluation.private_data`).
        prior: ``"face-gan"``, a prior file from :func:`~midefend.attacks.train_prior`,
            or a :class:`~midefend.attacks.GenerativePrior` (attacks without a prior ignore it).
        attack: run only this registered attack (and its adaptive variant); default
            ``None``: the portfolio (:mod:`~midefend.evaluation.portfolio`).
        threat_model: ``"white-box"`` (default), ``"black-box"`` or ``"label-only"``.
        adaptive: ``"auto"`` (adaptive variants chosen from the defense the checkpoint
            records), ``"on"`` (forced) or ``"off"``.
        fast: each attack's ``"fast"`` preset (PPA: no candidate selection; a smoke test).
        repeats: runs per attack with seeds ``seed, seed+1, ...``; with more than one,
            "±" is the std over runs (as the papers print it).
        classes: ``"all"``, ``"0-9"``, ``"1,4,7"`` or a list of indices.
        out_dir: output folder; per-class attack results go below it (:func:`attack_dir`).
        resume: reuse the per-class results of an interrupted run in ``out_dir``.
        attack_options: shared attack options (``per_class``, ``steps``, ``loss``, ``seed`` ...).
        log: called with one line per finished attack.
        shard, merge: ``shard="i/N"`` attacks shard ``i`` of ``N`` of every attack run's
            classes and writes no report; ``merge=True`` attacks nothing and writes the
            report from all shards' results; under torchrun each rank attacks its shard
            and rank 0 writes the report (:mod:`midefend.attacks.sharding`, docs/distributed.md).
        budget: fit the run into this wall time (``"30m"``, seconds): a seeded sample of the classes and
            the attacks that fit, PPA and the adaptive variants always kept (:mod:`~midefend.evaluation.budget`);
            ``report["budget"]`` says what was cut and the headline's 95 % interval over the unsampled classes.
        reach: before the attacks, measure the prior's reach on held-out photos
            (:mod:`~midefend.evaluation.reach`; ``report["reach"]``, a warning when it is low).

    Returns:
        the report dict (as written to ``report.json``): the headline ``metrics`` and
        ``attack`` are those of ``strongest_attack``; ``attacks`` holds one row per attack.
        A shard alone returns ``{"format": "midefend-verify-shard", ...}`` instead.
    """
    from ..attacks.sharding import run_sharded
    from ..distributed import detect_world, local_device
    from .aggregate import combine_runs, strongest
    from .reports import verdict_line

    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError(f"repeats must be a positive integer, got {repeats!r}")
    start = time.perf_counter()
    from .._validate import check_device

    device = str(local_device(check_device(device), detect_world()))  # under torchrun: one GPU per rank
    run = prepare_verify(
        checkpoint, eval_model=eval_model, data=data, prior=prior, attack=attack, threat_model=threat_model, adaptive=adaptive,
        fast=fast, classes=classes, device=device, split_seed=split_seed, attack_options=attack_options,
        train_data=train_data, test_data=test_data, faces=faces,
        contract={"input_size": input_size, "mean": mean, "std": std, "classes": class_names, "preprocess": preprocess},
    )
    out = Path(out_dir)
    if log is not None:
        if eval_model is None:
            log("judges: " + ", ".join(f"{j.name} ({j.description})" for j in run.judges.faces) + " — the independent face recognisers, the default on face data")
        for metric, reason in run.not_computed.items():
            log(f"note: {metric.upper()} will not be computed ({reason})")
    run.evaluator.to(device)  # in place: the judges hold this module
    for face in run.judges.faces:
        face.evaluator.to(device)
    target = run.target.to(device)
    base_seed = int((attack_options or {}).get("seed", 0))
    plan_of_budget = _fit_budget(run, budget, device=device, reach=reach, seed=base_seed, log=log) if budget is not None else None
    reach_json, reach_note = None, None
    if reach and shard is None and run.prior is not None:  # judged without any attack: what the prior can draw at all
        from .reach import reach_for_verify

        reach_json, reach_note = reach_for_verify(run, out_dir=out)
        if log is not None:
            log(f"prior reach: {reach_json['summary']}" + (f" — {reach_note}" if reach_note else ""))
    rows: list[dict[str, Any]] = []
    grids: dict[str, torch.Tensor] = {}
    shards: list[dict[str, Any]] = []
    for plan in run.planned:
        results, metrics = [], []
        for r in range(repeats):
            instance = plan.build(seed=base_seed + r)
            folder = attack_dir(out, plan.label, run=r, portfolio=attack is None or len(run.planned) > 1, repeats=repeats)
            uses_prior = type(instance).uses_prior
            part = run_sharded(
                instance, target, run.prior if uses_prior else None, classes=run.classes, out_dir=folder, resume=resume, device=device,
                progress=progress, shard=shard, merge=merge,
            )
            if not part.complete:  # this process attacked one shard: no metrics here
                shards.append({"folder": str(folder / part.shard.dirname), "classes": part.result.classes})
                continue
            result = part.result
            results.append(result)
            metrics.append(judge(result, run.judges, run.train, target=target, test=run.test))
        if not results:
            continue
        queries = [res.config.get("queries") for res in results]
        row = {
            "name": plan.label,
            "attack": plan.attack,
            "adaptive": plan.adaptive,
            "threat_model": plan.threat_model,
            "preset": plan.preset,
            "metrics": combine_runs(metrics),
            "seconds": round(sum(res.seconds for res in results) / repeats, 2),
            "queries": int(sum(queries) / repeats) if all(isinstance(q, int) for q in queries) else None,
            "seeds": [base_seed + r for r in range(repeats)],
            "runs": [
                {"seed": base_seed + r, **{k: m[k] for k in ("attack_acc_top1", "attack_acc_top5", "target_acc_top1")}} for r, m in enumerate(metrics)
            ],
            "config": results[0].config,
        }
        rows.append(row)
        grids[plan.label] = _at_size(results[0].images, tuple(run.train.images.shape[1:]))
        if log is not None:
            m = row["metrics"]
            ident = m["identity"]
            log(f"{plan.label}: {ident['headline_source']} {100 * ident['headline']:.1f}% (chance {100 * ident['chance_top1']:.1f}%), "
                f"evaluator acc@1 {100 * m['attack_acc_top1']:.1f}%, target's own acc on its reconstructions "
                f"{100 * (m.get('target_acc_top1') or 0):.1f}%, {row['seconds']:.0f} s")
    if shards:
        return {"format": "midefend-verify-shard", "shard": shard or f"{part.shard}", "runs": shards, "merged_by": "--merge" if shard else "rank 0"}
    best = strongest(rows)
    classes_done = list(run.classes) if run.classes is not None else list(range(run.target_ckpt.num_classes))
    firsts = torch.stack([run.train.images[(run.train.labels == c).nonzero()[0, 0]] for c in classes_done])
    report = {
        "midefend_version": __version__,
        "target": _describe(run.target_ckpt, run.target_name),
        "eval_model": _describe(run.eval_ckpt, Path(run.eval_ckpt.path).stem if getattr(run.eval_ckpt, "path", None) else "eval")
        if run.eval_ckpt is not None
        else None,
        "judges": run.judges.describe(),
        "prior": run.prior.config() if run.prior is not None else None,
        "data": {
            "spec": str(data) if data is not None else recorded_data(run.target_ckpt).get("spec"), "n_train": len(run.train), "n_test": len(run.test),
            "split": run.train.info["split_source"], "class_order": run.train.info["class_order"], "eval_class_order": run.eval_class_order,
        },
        "notes": [*(f"{k.upper()} not computed: {v}" for k, v in run.not_computed.items()), f"target classes: {run.train.info['class_order']}", f"evaluation model classes: {run.eval_class_order}", f"split: {run.train.info['split_source']}"],
        "threat_model": threat_model,
        "adaptive_mode": adaptive,
        "repeats": repeats,
        "strongest_attack": best["name"],
        "attack": best["config"],
        "metrics": best["metrics"],
        "attacks": rows,
        "skipped_attacks": run.skipped,
        "timing": {"attack_seconds": round(sum(r["seconds"] * repeats for r in rows), 2), "total_seconds": round(time.perf_counter() - start, 2), "device": str(device)},
    }
    if plan_of_budget is not None:
        report["budget"] = _budget_record(plan_of_budget, best["metrics"].get("identity") or {})
        report["notes"].append(plan_of_budget.describe())
    report["verdict"] = verdict_line(report)
    if reach_json is not None:
        report["timing"]["reach_seconds"] = reach_json.pop("seconds", None)  # a wall time: with the others, not in the measurement
        report["reach"] = reach_json
        if reach_note:
            report["notes"].append(f"prior reach: {reach_note}")
            report["verdict"] += f" Warning: {reach_note}."
    for row in rows:
        row["grid"] = f"grid-{row['name']}.png"
    from ..review.report_hook import attach_human

    attach_human(out, report)  # a person's verdict from an earlier `midefend review` of this folder, when there is one
    paths = write_report(out, report, private=firsts, reconstructions=grids[best["name"]], attack_grids=grids)
    report["files"] = {k: str(v) for k, v in paths.items()}
    return report


def _fit_budget(run: Any, budget: float | str, *, device: str, reach: bool, seed: int, log: Callable[[str], None] | None) -> Any:
    """Narrow a prepared run to the classes and attacks that fit ``budget`` (see :mod:`~midefend.evaluation.budget`)."""
    from .budget import parse_budget, plan_budget
    from .cost import estimate_run

    seconds = parse_budget(budget)
    if log is not None:
        log(f"planning the budget of {seconds / 60:.0f} min: timing the attacks on this machine ...")
    estimate = estimate_run(run, device=device, reach=reach)
    pool = list(run.classes) if run.classes is not None else list(range(run.target_ckpt.num_classes))
    plan = plan_budget(estimate, budget_seconds=seconds, class_pool=pool, seed=seed)
    run.classes = plan.classes
    run.skipped = [*run.skipped, *({"attack": d["attack"], "reason": f"left out by --budget: {d['reason']}"} for d in plan.dropped)]
    run.planned = [p for p in run.planned if p.label in plan.attacks]
    if log is not None:
        log(plan.describe())
    return plan


def _budget_record(plan: Any, identity: dict[str, Any]) -> dict[str, Any]:
    """``report["budget"]``: the plan, and the headline's 95 % interval as an estimate over all the classes."""
    from .budget import headline_interval, per_class_headline

    record = plan.to_json()
    scores = per_class_headline(identity)
    if scores:
        record["headline_interval"] = list(headline_interval(scores, population=plan.total_classes))
    return record


def _at_size(reconstructions: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``(N, K, C, H, W)`` reconstructions at the private images' ``(C, H, W)`` for the grids (a 64x64 prior, a 112x92 target)."""
    from ..models.images import adapt_images

    if tuple(reconstructions.shape[2:]) == shape:
        return reconstructions
    n, k = reconstructions.shape[:2]
    flat = adapt_images(reconstructions.flatten(0, 1).float(), channels=shape[0], size=shape[1:])
    return flat.view(n, k, *shape)


__all__ = ["attack_dir", "estimate_verify", "load_private_data", "parse_classes", "prepare_verify", "verify"]
