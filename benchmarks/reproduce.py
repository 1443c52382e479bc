"""Reproduce the papers' headline result offline: MIDRE and CALoR against model inversion, 3 seeds.

For ORL (private faces, face-GAN prior) and digits 0-4 (digits prior trained on the public 5-9):

1. one shared independent evaluation model (``midefend/vgg_small``) and the prior;
2. CALoR's rank, chosen on held-out data: NoDef trained on part of the training split, then the
   smallest rank of ``ranks`` whose CALoR model is within ``rank_tolerance`` of NoDef's held-out
   accuracy (the CALoR rank tables trade accuracy against leakage the same way);
3. per seed: NoDef, MIDRE (each ``a_h`` in ``erase_max``), CALoR (from that seed's NoDef) and
   MIDRE+CALoR (from that seed's MIDRE 0.4), all ``midefend/resnet_small`` from scratch;
4. every model attacked by PPA with every identity loss in ``losses``; a model counts with its
   strongest attack (highest acc@1);
5. the other ranks of the sweep (seed 0, Poincaré loss) for the trade-off curve.

Writes ``results.json`` and per-run records under ``--out-dir``, the checked-in summary
``benchmarks/results/reproduce.json``, the section between the ``reproduce`` markers of
``benchmarks/RESULTS.md``, ``benchmarks/results/tradeoff.png`` and one reconstruction grid per
data set. Settings come from ``benchmarks/config.json``; ``--quick`` uses its ``quick`` block
(digits only, a few steps: checks the pipeline in about a minute). Interrupted runs continue
with ``--resume`` (finished trainings and attacks are reused when their settings match).

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/reproduce.py --resume
    python benchmarks/reproduce.py --quick --out-dir /tmp/repro --results-dir /tmp/repro/results --results-md /tmp/repro/RESULTS.md
    python benchmarks/check.py
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reproduce_report import aggregate, plot_tradeoff, reconstruction_grid, write_markdown  # noqa: E402


def load_config(path: Path, quick: bool) -> dict[str, Any]:
    """The config, with the ``quick`` block merged over it (data sets it names only)."""
    config = json.loads(path.read_text())
    quick_block = config.pop("quick", {})
    if not quick:
        return config
    merged = copy.deepcopy(config)
    for key, value in quick_block.items():
        if key != "datasets":
            merged[key] = value
    merged["datasets"] = {name: {**config["datasets"][name], **over} for name, over in quick_block["datasets"].items()}
    return merged


class Records:
    """One JSON file per finished unit of work; reused by ``--resume`` when its settings match."""

    def __init__(self, root: Path, resume: bool) -> None:
        self.root, self.resume = root / "records", resume
        self.root.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}  # computed in this run
        self.reused: dict[str, float] = {}  # taken from an earlier run's records (its seconds)

    def get(self, key: str, settings: dict[str, Any], work: Callable[[], dict[str, Any]], *, needs: Path | None = None) -> dict[str, Any]:
        path = self.root / f"{key}.json"
        if self.resume and path.is_file() and (needs is None or needs.is_file()):
            record = json.loads(path.read_text())
            if record.get("settings") == settings:
                print(f"  reuse {key}", flush=True)
                self.reused[key] = float(record["result"].get("seconds", 0.0))
                return record["result"]
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
        self.seconds[key] = seconds
        result["seconds"] = round(seconds, 1)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settings": settings, "result": result}, indent=1))
        os.replace(tmp, path)  # a record exists only once its work is complete
        return result


def train_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    # every recipe setting is spelled out, so a record made under other library defaults is not reused
    keys = ("calor_epochs", "ca_epochs", "ca_lr", "ca_params")
    return {**{k: cfg[k] for k in keys if k in cfg}, "progress": False}


def model_specs(cfg: dict[str, Any], rank: int) -> list[tuple[str, dict[str, Any], str | None]]:
    """``(name, train_target kwargs, init model name)`` of the defended grid, in training order."""
    specs: list[tuple[str, dict[str, Any], str | None]] = [("nodef", {"defense": "nodef"}, None)]
    for a_h in cfg["erase_max"]:
        specs.append((f"midre-{a_h}", {"defense": "midre", "erase_max": a_h}, None))
    specs.append(("calor", {"defense": "calor", "rank": rank}, "nodef"))
    first = f"midre-{cfg['erase_max'][0]}"
    specs.append(("midre+calor", {"defense": "midre+calor", "rank": rank, "erase_max": cfg["erase_max"][0]}, first))
    return specs


def train_one(data: Any, ckpt: Path, kwargs: dict[str, Any]) -> dict[str, Any]:
    from midefend.training.targets import train_target

    result = train_target(data, out=ckpt, **kwargs)
    return {"accuracy": result.test_accuracy, "train_confidence": result.train_confidence, "checkpoint": str(ckpt)}


def rank_sweep(name: str, cfg: dict[str, Any], records: Records, out: Path) -> dict[str, Any]:
    """Held-out accuracy of NoDef and of CALoR at every rank (seed 0); picks the rank."""
    from midefend.data.resolve import load_dataset

    train, _ = load_dataset(name, seed=0)
    if "sweep_holdout_per_class" in cfg:
        per_class = int(train.labels.bincount().min()) - cfg["sweep_holdout_per_class"]
        fit, held = train.split(train_per_class=per_class, seed=0)
    else:
        fit, held = train.split(test_fraction=cfg["sweep_holdout_fraction"], seed=0)
    base = {"epochs": cfg["epochs"], "seed": 0, **train_kwargs(cfg)}
    holdout = {k: cfg[k] for k in ("sweep_holdout_per_class", "sweep_holdout_fraction") if k in cfg}
    nodef_ckpt = out / "sweep-nodef.safetensors"
    nodef = records.get(f"{name}-sweep-nodef", {**base, **holdout}, lambda: train_one((fit, held), nodef_ckpt, {**base, "defense": "nodef"}), needs=nodef_ckpt)
    rows = {}
    for rank in cfg["ranks"]:
        settings = {**base, **holdout, "rank": rank}
        ckpt = out / f"sweep-calor-r{rank}.safetensors"
        kwargs = {**base, "defense": "calor", "rank": rank, "init": nodef_ckpt}
        rows[str(rank)] = records.get(f"{name}-sweep-calor-r{rank}", settings, lambda k=kwargs, c=ckpt: train_one((fit, held), c, k))
    floor = nodef["accuracy"] - cfg["rank_tolerance"]
    good = [int(r) for r, row in rows.items() if row["accuracy"] >= floor]
    chosen = min(good) if good else max(int(r) for r, row in rows.items() if row["accuracy"] == max(x["accuracy"] for x in rows.values()))
    print(f"  {name} rank sweep: NoDef held-out {nodef['accuracy']:.1%}; "
          + ", ".join(f"r{r} {row['accuracy']:.1%}" for r, row in rows.items()) + f" -> rank {chosen}", flush=True)  # fmt: skip
    return {"held_out": len(held), "fit": len(fit), "nodef_accuracy": nodef["accuracy"], "ranks": rows, "chosen": chosen, "tolerance": cfg["rank_tolerance"]}


def ensure_prior(name: str, cfg: dict[str, Any], records: Records, out: Path) -> str:
    prior = cfg["prior"]
    if isinstance(prior, str):
        return prior
    from midefend.attacks import train_prior
    from midefend.data.resolve import load_dataset

    path = out / "prior.safetensors"

    def work() -> dict[str, Any]:
        pub_train, pub_test = load_dataset(f"{name}-public")
        train_prior(torch.cat([pub_train.images, pub_test.images]), path, epochs=prior["epochs"], width=prior["width"], seed=0, progress=False)
        return {"path": str(path)}

    return records.get(f"{name}-prior", prior, work, needs=path)["path"]


def attack_one(ckpt: Path, eval_ckpt: Path, prior: str, out: Path, options: dict[str, Any], classes: str | None) -> dict[str, Any]:
    from midefend.evaluation.verify import verify

    report = verify(ckpt, eval_model=eval_ckpt, prior=prior, attack="ppa", out_dir=out, classes=classes, attack_options=options)
    m = report["metrics"]
    keep = ("accuracy", "attack_acc_top1", "attack_acc_top1_std", "attack_acc_top5", "knn_distance", "fid", "target_acc_top1", "target_confidence_mean")
    return {**{k: m[k] for k in keep}, "grid": report["files"].get("grid")}


def run_dataset(name: str, cfg: dict[str, Any], config: dict[str, Any], records: Records, out: Path) -> dict[str, Any]:
    from midefend.training.targets import train_evaluation_model

    out.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] evaluation model, prior, rank sweep", flush=True)
    eval_ckpt = out / "eval.safetensors"
    eval_settings = {"epochs": cfg["eval_epochs"], "seed": 100}

    def train_eval() -> dict[str, Any]:
        result = train_evaluation_model(name, out=eval_ckpt, progress=False, **eval_settings)
        return {"accuracy": result.test_accuracy}

    evaluator = records.get(f"{name}-eval", eval_settings, train_eval, needs=eval_ckpt)
    prior = ensure_prior(name, cfg, records, out)
    sweep = rank_sweep(name, cfg, records, out)
    rank = sweep["chosen"]
    attack_base = {**cfg["attack"]}
    classes = cfg.get("classes")
    judge = {"eval": eval_settings, "prior": cfg["prior"]}  # part of every attack record's settings

    def trained(key: str, ckpt: Path, settings: dict[str, Any]) -> dict[str, Any]:
        return records.get(key, settings, lambda: train_one(name, ckpt, settings), needs=ckpt)

    def attacked(key: str, ckpt: Path, settings: dict[str, Any], loss: str, seed: int) -> dict[str, Any]:
        options = {**attack_base, "loss": loss, "seed": seed}
        work = lambda: attack_one(ckpt, eval_ckpt, prior, out / "attacks" / key, options, classes)  # noqa: E731
        return records.get(key, {"model": settings, "attack": options, "classes": classes, **judge}, work)

    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in config["seeds"]:
        print(f"[{name}] seed {seed}", flush=True)
        for model, kwargs, init in model_specs(cfg, rank):
            ckpt = out / f"{model}-s{seed}.safetensors"
            settings = {"epochs": cfg["epochs"], "seed": seed, **train_kwargs(cfg), **kwargs}
            if init is not None:
                settings["init"] = str(out / f"{init}-s{seed}.safetensors")
            result = trained(f"{name}-{model}-s{seed}", ckpt, settings)
            attacks = {loss: attacked(f"{name}-{model}-s{seed}-{loss}", ckpt, settings, loss, seed) for loss in config["losses"]}
            strongest = max(attacks, key=lambda loss: attacks[loss]["attack_acc_top1"])
            runs.setdefault(model, []).append({"seed": seed, "accuracy": result["accuracy"], "train_confidence": result["train_confidence"],
                                               "attacks": attacks, "strongest": strongest})  # fmt: skip
            print(f"  {model:12s} acc {result['accuracy']:.1%}  attack acc@1 "
                  + "  ".join(f"{loss} {a['attack_acc_top1']:.1%}" for loss, a in attacks.items()), flush=True)  # fmt: skip
    curve = []
    curve_loss = config["losses"][0]
    nodef0 = out / f"nodef-s{config['seeds'][0]}.safetensors"
    for r in cfg["ranks"]:
        if r == rank:
            continue
        ckpt = out / f"curve-calor-r{r}.safetensors"
        settings = {"epochs": cfg["epochs"], "seed": config["seeds"][0], **train_kwargs(cfg), "defense": "calor", "rank": r, "init": str(nodef0)}
        result = trained(f"{name}-curve-calor-r{r}", ckpt, settings)
        attack = attacked(f"{name}-curve-calor-r{r}-{curve_loss}", ckpt, settings, curve_loss, config["seeds"][0])
        curve.append({"rank": r, "accuracy": result["accuracy"], "attack_acc_top1": attack["attack_acc_top1"], "loss": curve_loss})
        print(f"  curve rank {r}: acc {result['accuracy']:.1%}, attack acc@1 {attack['attack_acc_top1']:.1%}", flush=True)
    return {"eval_accuracy": evaluator["accuracy"], "prior": prior, "rank_sweep": sweep, "rank": rank, "runs": runs, "curve": curve,
            "attack": attack_base, "classes": classes or "all"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.json")
    parser.add_argument("--quick", action="store_true", help="the config's quick block: digits, a few steps")
    parser.add_argument("--data", default=None, help="comma-separated data sets (default: all in the config)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "out" / "reproduce")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results", help="checked-in summary, plot and grids")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md", help="file whose reproduce section is replaced")
    parser.add_argument("--resume", action="store_true", help="reuse finished trainings and attacks with the same settings")
    parser.add_argument("--report-only", action="store_true", help="rewrite the summary, Markdown and pictures from OUT_DIR/results.json")
    args = parser.parse_args(argv)
    if args.report_only:
        return write_outputs(json.loads((args.out_dir / "results.json").read_text()), args)
    config = load_config(args.config, args.quick)
    names = args.data.split(",") if args.data else list(config["datasets"])
    unknown = [n for n in names if n not in config["datasets"]]
    if unknown:
        parser.error(f"unknown data set {unknown[0]!r}; the config has {', '.join(config['datasets'])}")
    if "orl" in names and not os.environ.get("MIDEFEND_ORL_DIR"):
        parser.error("ORL needs MIDEFEND_ORL_DIR (e.g. ../shared/data/orl_faces)")
    torch.set_num_threads(config["threads"])
    records = Records(args.out_dir, args.resume)
    start, cpu0 = time.perf_counter(), time.process_time()
    datasets = {}
    for name in names:
        t0 = time.perf_counter()
        datasets[name] = run_dataset(name, config["datasets"][name], config, records, args.out_dir / name)
        datasets[name]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    summary = {
        "command": "python benchmarks/reproduce.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {config['threads']} threads",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "seconds_by_step": {k: round(v, 1) for k, v in records.seconds.items()},
        "reused_seconds_by_step": {k: round(v, 1) for k, v in records.reused.items()},
        "config": config,
    }
    return write_outputs({**summary, "raw": datasets}, args)


def write_outputs(results: dict[str, Any], args: argparse.Namespace) -> int:
    """The checked-in summary, the trade-off plot, the grids and the RESULTS.md section, from one run's results."""
    raw = results.pop("raw")
    summary = {**results, "datasets": {name: aggregate(block) for name, block in raw.items()}}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps({**summary, "raw": raw}, indent=1))  # check.py reads it too
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "reproduce.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_tradeoff(summary, args.results_dir / "tradeoff.png")
    for name, block in raw.items():
        reconstruction_grid(name, block, args.results_dir / f"grid-{name}.png", private=False)
        reconstruction_grid(name, block, args.out_dir / name / "grid-with-private.png", private=True)
    write_markdown(summary, args.results_md, args.results_dir)
    print(f"done in {summary['wall_seconds'] / 60:.1f} min; wrote {args.results_dir} and the reproduce section of {args.results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
