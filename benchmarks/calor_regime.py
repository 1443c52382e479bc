"""CALoR's head regime on ORL: which recipe ends with a saturated tanh AND a confident model.

Every candidate starts from the same trained NoDef backbone (``--nodef``), hardens it (rank 16)
and runs a CALoR recipe through :func:`midefend.training.train_target`. For each it records

* test accuracy and the mean ``p_y`` on the (un-augmented) training images, eval mode;
* the low-rank head's regime on the training images (:mod:`midefend.defenses.head_regime`):
  tanh pre-activation RMS, fraction of saturated units (``|z| > 2``), mean ``tanh'``;
* the attacker's input gradient: mean over the test images of ``||d L / d x||_2``, ``L`` the
  Poincaré identity loss toward the true class, ``x`` in pixel space ``[0, 1]``;
* the attack accuracy of PPA (the strongest attack in this branch) with a small budget, judged
  by the independent evaluation model (``--eval``), and the target's own accuracy on the
  reconstructions (low: the optimisation failed).

The second table is the CALoR paper's Table 5 in kind: identity, tanh, sigmoid and ReLU heads
under the default recipe. Each finished run is a JSON record under ``--out-dir`` (reused by
``--resume`` when its settings match). Writes the section between the ``calor-regime`` markers
of ``benchmarks/RESULTS.md``.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces nice -n 5 python benchmarks/calor_regime.py \\
        --nodef /work/targets/orl-nodef.safetensors --eval /work/targets/orl-eval.safetensors --resume
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from markdown_section import replace_section  # noqa: E402

def recipe(**overrides: Any) -> dict[str, Any]:
    """Every CALoR setting a candidate may change, spelled out (library defaults move; records must not).

    The base is midefend's recipe before the regime was measured: a linear SVD warm start, 10 head
    epochs of cross-entropy at 1e-4 (whole model), 5 CA epochs of the head at 1e-4.
    """
    base = {"head_init": "svd", "linear_range": 0.1, "calor_epochs": 10, "calor_lr": 1e-4, "head_lr_mult": 1.0,
            "ca_epochs": 5, "ca_lr": 1e-4, "ca_params": "head"}  # fmt: skip
    return base | overrides


#: name -> (what it is, train_target keyword arguments on top of the data, rank and backbone)
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "svd-linear": ("SVD warm start in tanh's linear regime (linear_range 0.1), CE 10 ep at 1e-4, CA head 5 ep at 1e-4 (the old default)", recipe()),
    "svd-range-1": ("as svd-linear, linear_range 1", recipe(linear_range=1.0)),
    "svd-range-2": ("as svd-linear, linear_range 2", recipe(linear_range=2.0)),
    "svd-range-3": ("as svd-linear, linear_range 3", recipe(linear_range=3.0)),
    "svd-range-2-head10x": ("linear_range 2, head at 10x lr (1e-3) in the CE stage", recipe(linear_range=2.0, head_lr_mult=10.0)),
    "svd-range-1-head10x": ("linear_range 1, head at 10x lr (1e-3) in the CE stage", recipe(linear_range=1.0, head_lr_mult=10.0)),
    "svd-range-3-head10x": ("linear_range 3, head at 10x lr (1e-3) in the CE stage", recipe(linear_range=3.0, head_lr_mult=10.0)),
    "lstsq-range-2": ("linear_range 2, up refitted by least squares to the NoDef logits (head_init svd-lstsq)",
                      recipe(linear_range=2.0, head_init="svd-lstsq")),
    "lstsq-range-2-lr1e-3": ("as lstsq-range-2, CE stage at 1e-3 (whole model): **the new default**",
                             recipe(linear_range=2.0, head_init="svd-lstsq", calor_lr=1e-3)),
    "lstsq-range-3-lr1e-3": ("as lstsq-range-2-lr1e-3, linear_range 3", recipe(linear_range=3.0, head_init="svd-lstsq", calor_lr=1e-3)),
    "svd-range-2-ca-all": ("linear_range 2, CA on all parameters (the authors)", recipe(linear_range=2.0, ca_params="all")),
    "fresh-head": ("a fresh random head, whole model CE 30 ep at 1e-3 (the authors' way, from the trained backbone)",
                   recipe(head_init="random", calor_epochs=30, calor_lr=1e-3)),
}
#: The candidate that is midefend's default recipe (Table 5 runs under it).
DEFAULT_CANDIDATE = "lstsq-range-2-lr1e-3"
ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu")
MARKERS = ("<!-- calor-regime:start -->", "<!-- calor-regime:end -->")


def input_gradient_norm(ckpt: Any, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over images of ``||d poincare(model(normalize(x)), y) / d x||_2`` (eval mode, pixel space)."""
    from midefend.attacks.losses import get_identity_loss

    loss_fn = get_identity_loss("poincare")
    x = images.clone().requires_grad_(True)
    ckpt.model.eval()
    loss = loss_fn(ckpt.model(ckpt.normalize(x)), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad.flatten(1).norm(dim=1).mean().item()


def measure(ckpt_path: Path, eval_path: Path | None, attack: dict[str, Any], classes: str, out: Path) -> dict[str, Any]:
    """Accuracy, p_y, regime, input gradient and PPA's attack accuracy of one checkpoint."""
    from midefend.evaluation.regime import checkpoint_regime
    from midefend.evaluation.verify import load_private_data
    from midefend.io.checkpoints import load_checkpoint
    from midefend.training.loop import evaluate

    ckpt = load_checkpoint(ckpt_path)
    train, test = load_private_data(ckpt)
    row: dict[str, Any] = {
        "test_accuracy": evaluate(ckpt.model, test, mean=ckpt.mean, std=ckpt.std)["accuracy"],
        "train_p_y": evaluate(ckpt.model, train, mean=ckpt.mean, std=ckpt.std)["confidence"],
        "input_grad": input_gradient_norm(ckpt, test.images, test.labels),
    }
    try:
        row["regime"] = next(iter(checkpoint_regime(ckpt_path)["heads"].values()))
    except Exception:  # NoDef has no low-rank head
        row["regime"] = None
    if eval_path is not None:
        from midefend.evaluation.verify import verify

        report = verify(ckpt_path, eval_model=eval_path, prior="face-gan", attack="ppa", out_dir=out, classes=classes, attack_options=attack)
        m = report["metrics"]  # the strongest of PPA and, against a low-rank head, its adaptive (BPDA) variant
        row |= {"attack_acc_top1": m["attack_acc_top1"], "attack_acc_top5": m["attack_acc_top5"], "target_acc_top1": m["target_acc_top1"],
                "strongest": report["strongest_attack"], "attacks": {a["name"]: a["metrics"]["attack_acc_top1"] for a in report["attacks"]}}  # fmt: skip
    return row


def train_candidate(nodef: Path, kwargs: dict[str, Any], ckpt: Path) -> dict[str, Any]:
    from midefend.training.targets import train_target

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the linear-regime warning is what this table measures
        result = train_target("orl", defense="calor", init=nodef, out=ckpt, progress=False, **kwargs)
    start = result.extra.get("head_regime_start")
    return {"regime_start": next(iter(start.values())) if start else None, "train_seconds": round(result.seconds, 1)}


def run(name: str, settings: dict[str, Any], work, out: Path, resume: bool) -> dict[str, Any]:
    path = out / f"{name}.json"
    if resume and path.is_file():
        record = json.loads(path.read_text())
        if record["settings"] == settings:
            print(f"  reuse {name}", flush=True)
            return record["result"]
    started, load = time.perf_counter(), os.getloadavg()[0]
    result = work()
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_average"] = [round(load, 1), round(os.getloadavg()[0], 1)]  # at start and end of this record's work
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": settings, "result": result}, indent=1))
    os.replace(tmp, path)
    return result


def fmt_row(name: str, what: str, r: dict[str, Any]) -> str:
    reg = r.get("regime") or {}
    start = r.get("regime_start") or {}
    att = f"{r['attack_acc_top1']:.1%} ({r.get('strongest', 'ppa')}) | {r['target_acc_top1']:.1%}" if "attack_acc_top1" in r else "– | –"
    regime = f"{reg['pre_rms']:.2f} | {reg['saturated']:.0%} | {reg['mean_slope']:.2f}" if reg else "– | – | –"
    start_text = f"{start['mean_slope']:.2f}" if start else "–"
    return f"| {name} | {what} | {r['test_accuracy']:.1%} | {r['train_p_y']:.3f} | {start_text} | {regime} | {r['input_grad']:.3f} | {att} |"


HEADER = (
    "| run | recipe | test acc | train p_y | slope at start | pre-act RMS | saturated | mean slope | input grad | attack acc@1 (strongest) | target acc on recon |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodef", type=Path, required=True, help="trained ORL NoDef checkpoint (the backbone)")
    parser.add_argument("--eval", type=Path, default=None, help="ORL evaluation model (without it: no attack)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--activations", default=",".join(ACTIVATIONS), help="Table 5 rows ('' to skip)")
    parser.add_argument("--table5-recipe", default=DEFAULT_CANDIDATE, help="candidate whose recipe Table 5 uses")
    parser.add_argument("--classes", default="0-9", help="attacked classes")
    parser.add_argument("--attacked", default=None, help="comma-separated runs to attack (default: all; the others keep their unattacked records)")
    parser.add_argument("--attack", default='{"per_class": 2, "candidates": 4, "steps": 50, "init_pool": 200, "loss": "poincare", "seed": 0}')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=HERE / "out" / "calor_regime")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--note", default="", help="a sentence added under the header (e.g. the load while reused records were made)")
    args = parser.parse_args(argv)
    if not os.environ.get("MIDEFEND_ORL_DIR"):
        parser.error("ORL needs MIDEFEND_ORL_DIR (e.g. ../shared/data/orl_faces)")
    torch.set_num_threads(args.threads)
    attack = json.loads(args.attack)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    load_start, started = os.getloadavg()[0], time.perf_counter()
    attacked = None if args.attacked is None else set(args.attacked.split(","))

    def judge(name: str) -> dict[str, Any]:
        if eval_for(name) is None:  # not attacked: the attack settings do not matter
            return {"eval": "None", "nodef": str(args.nodef)}
        return {"eval": str(args.eval), "attack": attack, "classes": args.classes, "nodef": str(args.nodef)}

    def eval_for(name: str) -> Path | None:
        return args.eval if attacked is None or name in attacked else None

    def candidate(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        ckpt = args.out_dir / f"{name}.safetensors"

        # Training and measuring are separate records: a later run with the evaluation model reuses the training.
        train_settings = {"nodef": str(args.nodef), "train": kwargs}
        trained = run(f"{name}-train", train_settings, lambda: train_candidate(args.nodef, kwargs, ckpt), args.out_dir, args.resume)
        work = lambda: measure(ckpt, eval_for(name), attack, args.classes, args.out_dir / "attacks" / name)  # noqa: E731
        result = {**trained, **run(name, {**judge(name), **train_settings}, work, args.out_dir, args.resume)}
        print(f"  {name}: {json.dumps({k: v for k, v in result.items() if k != 'regime_start'})}", flush=True)
        return result

    nodef = run("nodef", judge("nodef"), lambda: measure(args.nodef, eval_for("nodef"), attack, args.classes, args.out_dir / "attacks" / "nodef"), args.out_dir, args.resume)
    rows = {name: candidate(name, CANDIDATES[name][1]) for name in args.candidates.split(",") if name}
    base = CANDIDATES[args.table5_recipe][1]
    table5 = {}
    for act in filter(None, args.activations.split(",")):
        if act == "tanh":  # the recipe's own run (same settings, same record)
            table5[act] = candidate(args.table5_recipe, base)
        else:
            table5[act] = candidate(f"act-{act}-{args.table5_recipe}", {**base, "head_activation": act})
    load_end = os.getloadavg()[0]

    lines = [
        MARKERS[0],
        "## CALoR's head regime on ORL (`benchmarks/calor_regime.py`)",
        "",
        "Written by the script. Command: `MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/calor_regime.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s); "
        f"{time.strftime('%Y-%m-%d %H:%M')}; wall {(time.perf_counter() - started) / 60:.1f} min this invocation "
        f"(records reused with --resume keep their own times); load average {load_start:.1f} at start, {load_end:.1f} at end "
        "(a shared machine: wall times are inflated).",
        "",
        "Every run starts from the same NoDef backbone (`midefend/resnet_small`, 60 epochs), rank 16, CA `a=1, b=8` "
        "(optimum p_y = exp(-1/8) = 0.882); one seed. Regime columns are on the 280 training images in eval mode "
        "(pre-activation RMS of z, fraction of |z| > 2, mean tanh'(z)); 'slope at start' is the mean slope right after the "
        "warm start (the activation's own slope for other activations). Input grad: mean ||d Poincaré loss / d x|| over the 120 test images (pixel space). "
        + (f"PPA: {json.dumps(attack)} on classes {args.classes} ({_count(args.classes)} identities), judged by the "
         "evaluation model; a small budget, so compare rows, not absolute numbers with the reproduction."
         + " The attack columns show the strongest of PPA and its adaptive variant against low-rank heads (BPDA through tanh,"
         " CA-optimum loss); rows without numbers were not attacked (time)."
         if args.eval is not None else "PPA: **not run** in this invocation (no `--eval` evaluation model), so the attack columns are empty."),
        *([args.note] if args.note else []),
        "",
        "### Candidates",
        "",
        HEADER,
        fmt_row("nodef", "no defense (reference)", nodef),
        *(fmt_row(name, CANDIDATES[name][0], r) for name, r in rows.items()),
        "",
    ]
    if table5:
        lines += [
            "### The paper's Table 5 in kind: the head's activation",
            "",
            f"Same recipe for all ({args.table5_recipe}), only `head_activation` changes; "
            "'mean slope' is the activation's own derivative (1 for identity, the fraction z > 0 for ReLU, at most 0.25 for sigmoid).",
            "",
            HEADER,
            *(fmt_row(f"act-{act}", act, r) for act, r in table5.items()),
            "",
        ]
    lines.append(MARKERS[1])
    replace_section(args.results_md, *MARKERS, lines)
    print(f"wrote the calor-regime section of {args.results_md}")
    return 0


def _count(classes: str) -> int:
    from midefend.evaluation.verify import parse_classes

    return len(parse_classes(classes, 40))


if __name__ == "__main__":
    raise SystemExit(main())
