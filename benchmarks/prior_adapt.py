"""Does adapting the face prior to ORL's domain help? Reach and PPA's identity score, face-gan against the adapted prior.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/prior_adapt.py --out-dir /tmp/prior-adapt-bench

The field's public/private *identity* split inside ORL: identities 20–39 (``s21``–``s40``) are public, all 10
photos each (200 images, ORL's face box, 64×64 grey); identities 0–19 are private.

1. **adapt**: ``midefend prior adapt``'s function (:func:`midefend.attacks.prior_adapt.adapt_prior`) fine-tunes
   ``face-gan`` on the public photos (``--steps`` at ``--batch-size``; resumable in ``--out-dir``).
2. **reach** (:func:`midefend.evaluation.reach.prior_reach`, latent space): the private identities' held-out
   photos (3 each, split seed 0: the targets' split; 60 photos) projected into each prior by pixel MSE alone,
   judged by FaceNet and dlib (:func:`~midefend.evaluation.recognisers.load_recogniser` +
   :class:`~midefend.evaluation.identity.NearestIdentityEvaluator`) against the 7 training photos of each private
   identity (chance 5 %).
3. **attack**: PPA on ``/work/targets/orl-nodef.safetensors`` (trained on all 40 identities, so the "public"
   people were in its training set too: a limit of these shared targets) for classes 0–19, with each prior,
   cut to ``--per-class`` kept of 4× candidates, ``--attack-steps``, ``--init-pool``, ``--selection-augs``;
   FaceNet's and dlib's top-1 against the same gallery, both agreeing (the consensus), and the target's own top-1.

Writes ``results/prior_adapt.json``, the section between the ``prior-adapt`` markers of ``RESULTS.md`` (command,
machine, load average, wall times) and ``docs/prior-adapt-grid.png`` (per row: a public photo, 4 ``face-gan``
samples, 4 adapted samples, as the grey target sees them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from markdown_section import replace_section  # noqa: E402

START, END = "<!-- prior-adapt:start -->", "<!-- prior-adapt:end -->"
PRIVATE, PUBLIC = range(0, 20), range(20, 40)


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def split(data: Any, ids: range) -> tuple[torch.Tensor, torch.Tensor]:
    keep = (data.labels >= ids.start) & (data.labels < ids.stop)
    return data.images[keep], data.labels[keep] - ids.start


def build_judges(gallery: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from midefend.errors import ConfigError
    from midefend.evaluation.identity import NearestIdentityEvaluator
    from midefend.evaluation.recognisers import load_recogniser

    judges = {}
    for name in ("facenet", "dlib"):
        try:
            judges[name] = NearestIdentityEvaluator(load_recogniser(name), gallery, labels, num_classes=len(PRIVATE), name=name)
        except ConfigError as exc:
            print(f"judge {name} not available: {exc}", flush=True)
    return judges


def step_adapt(args: argparse.Namespace, public: torch.Tensor, results: dict[str, Any]) -> Path:
    from midefend.attacks.prior_adapt import adapt_prior
    from midefend.attacks.priors import load_face_prior

    out = Path(args.out_dir) / f"face-gan-orl-public-{args.steps}.safetensors"
    if out.is_file() and "adapt" in results:
        return out
    t0, load0 = time.perf_counter(), load_average()
    adapt_prior(load_face_prior(), public, out, steps=args.steps, batch_size=args.batch_size, checkpoint_every=25, resume=True, progress=args.progress)
    results["adapt"] = {"steps": args.steps, "batch_size": args.batch_size, "public_images": int(public.shape[0]), "wall_s": round(time.perf_counter() - t0, 1),
                        "load_before": load0, "load_after": load_average(), "path": str(out)}
    print(results["adapt"], flush=True)
    return out


def step_reach(args: argparse.Namespace, priors: dict[str, Any], photos: torch.Tensor, labels: torch.Tensor, judges: dict[str, Any], results: dict[str, Any]) -> None:
    from midefend.attacks.priors import inference_prior
    from midefend.evaluation.reach import prior_reach

    rows = {}
    for name, prior in priors.items():
        t0, load0 = time.perf_counter(), load_average()
        report = prior_reach(inference_prior(prior), photos, labels, judges, levels=[], num_classes=len(PRIVATE), pool=args.pool)
        data = report.to_json()
        rows[name] = {"latent": data["spaces"][0], "real": data["real"], "settings": data["settings"], "wall_s": round(time.perf_counter() - t0, 1),
                      "load_before": load0, "load_after": load_average()}
        print(name, rows[name], flush=True)
    results["reach"] = {"photos": int(photos.shape[0]), "identities": len(PRIVATE), "rows": rows}


def step_attack(args: argparse.Namespace, priors: dict[str, Any], judges: dict[str, Any], results: dict[str, Any]) -> None:
    from midefend.attacks import run_attack
    from midefend.evaluation.classifier import Classifier
    from midefend.evaluation.metrics import topk_hits
    from midefend.io.checkpoints import load_checkpoint

    ckpt = load_checkpoint(args.target)
    target = Classifier.from_checkpoint(ckpt, name=Path(args.target).stem)
    rows = {}
    for name, prior in priors.items():
        t0, load0 = time.perf_counter(), load_average()
        result = run_attack("ppa", target, prior, classes=list(PRIVATE), per_class=args.per_class, steps=args.attack_steps, init_pool=args.init_pool,
                            selection_augs=args.selection_augs)
        images, labels = result.flat()
        row: dict[str, Any] = {"wall_s": round(time.perf_counter() - t0, 1), "load_before": load0, "load_after": load_average()}
        hits = []
        for judge_name, judge in judges.items():
            hit = topk_hits(judge.predict(images), labels, 1)
            hits.append(hit)
            row[judge_name] = float(hit.float().mean())
        row["consensus"] = float(torch.stack(hits).all(0).float().mean()) if hits else None
        with torch.inference_mode():
            row["target_top1"] = float(topk_hits(target.predict(images), labels, 1).float().mean())
        row["target_conf"] = float(result.target_confidence.mean())
        rows[name] = row
        print(name, row, flush=True)
    results["attack"] = {"target": Path(args.target).name, "classes": "0-19", "per_class": args.per_class, "steps": args.attack_steps, "init_pool": args.init_pool,
                         "selection_augs": args.selection_augs, "rows": rows}


def save_samples(path: Path, public: torch.Tensor, priors: dict[str, Any], rows: int = 8, per_prior: int = 4) -> None:
    from midefend.evaluation.reports import save_grid
    from midefend.models.images import adapt_images

    z = torch.randn(rows * per_prior, 100, generator=torch.Generator().manual_seed(0))
    columns = []
    with torch.no_grad():
        for prior in priors.values():
            columns.append(adapt_images(prior(z), channels=1, size=64).clamp(0, 1).view(rows, per_prior, 1, 64, 64))
    picked = public[torch.arange(0, public.shape[0], public.shape[0] // rows)[:rows]]
    save_grid(path, picked, torch.cat(columns, dim=1))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown(results: dict[str, Any], command: str) -> list[str]:
    runs = results.get("runs") or []
    commands = "\n".join(r["command"] for r in runs) or command
    lines = [START, "## Adapting the face prior to ORL's domain (`benchmarks/prior_adapt.py`)", "", f"```bash\n{commands}\n```", "",
             f"{results['machine']}. " + "; ".join(f"`--only {r['only']}`: started {r['started']} (load average 1/5/15 min {r['load_start']}), finished {r['finished']} "
                                                   f"(load {r['load_end']}), wall {r['wall_min']:.1f} min" for r in runs)
             + ". Numbers: `results/prior_adapt.json`; samples: `docs/prior-adapt-grid.png` "
             "(per row: a public photo, 4 `face-gan` samples, the same 4 latents through the adapted prior).", "",
             "Identity split inside ORL: identities 20–39 public (all 10 photos each, 200 images), 0–19 private."]
    a = results.get("adapt")
    if a:
        lines += ["", f"**Adaptation**: `face-gan` fine-tuned on the {a['public_images']} public photos for {a['steps']} GAN steps at batch {a['batch_size']} "
                  f"(DiffAugment translation + flip, fresh DCGAN discriminator; cut to fit 2 shared CPU cores, a full fine-tune would run thousands of steps): "
                  f"{a['wall_s']} s (load {a['load_before']} → {a['load_after']})."]
    reach = results.get("reach")
    if reach:
        judges = list(next(iter(reach["rows"].values()))["latent"]["judges"])
        first = next(iter(reach["rows"].values()))
        s = first["settings"]
        lines += ["", f"**Reach** on the private identities: {reach['photos']} held-out photos ({reach['identities']} people) projected into the prior's latent "
                  f"space by pixel MSE alone (best {s['starts']} of {s['pool']} random latents, {s['steps']} Adam steps), nearest identity among the private "
                  f"people's training photos (chance {100 / reach['identities']:.0f} %); real photos: "
                  + ", ".join(f"{j} {_pct(first['real'][j]['top1'])} %" for j in judges) + ".", "",
                  "| prior | pixel MSE | " + " | ".join(f"{j} top-1 / top-5 (%)" for j in judges) + " | wall (s) | load before → after |",
                  "|---|---|" + "---|" * len(judges) + "---|---|"]
        for name, r in reach["rows"].items():
            cells = " | ".join(f"{_pct(r['latent']['judges'][j]['top1'])} / {_pct(r['latent']['judges'][j]['top5'])}" for j in judges)
            lines.append(f"| {name} | {r['latent']['mse']:.4f} | {cells} | {r['wall_s']} | {r['load_before']} → {r['load_after']} |")
    attack = results.get("attack")
    if attack:
        rows = attack["rows"]
        judges = [k for k in ("facenet", "dlib") if k in next(iter(rows.values()))]
        lines += ["", f"**PPA's identity score** on `{attack['target']}` (trained on all 40 identities: the public people were in its training set, a limit of "
                  f"the shared targets), classes {attack['classes']}, {attack['per_class']} kept of {4 * attack['per_class']} per class, {attack['steps']} steps, "
                  f"pool {attack['init_pool']}, {attack['selection_augs']} selection draws (cut from PPA's defaults); one run, no ± (chance 5 %).", "",
                  "| prior | " + " | ".join(f"{j} top-1 (%)" for j in judges) + " | both judges (%) | target's own top-1 (%) | target conf | wall (s) | load before → after |",
                  "|---|" + "---|" * len(judges) + "---|---|---|---|---|"]
        for name, r in rows.items():
            lines.append(f"| {name} | " + " | ".join(_pct(r[j]) for j in judges) + f" | {_pct(r['consensus'])} | {_pct(r['target_top1'])} | {r['target_conf']:.3f} | "
                         f"{r['wall_s']} | {r['load_before']} → {r['load_after']} |")
    if results.get("verdict"):
        lines += ["", results["verdict"]]
    lines += ["", END]
    return lines


def verdict(results: dict[str, Any]) -> str | None:
    reach = results.get("reach")
    if not reach or len(reach["rows"]) < 2:
        return None
    (base_name, base), (new_name, new) = list(reach["rows"].items())[:2]
    judges = list(base["latent"]["judges"])
    deltas = {j: new["latent"]["judges"][j]["top1"] - base["latent"]["judges"][j]["top1"] for j in judges}
    n = reach["photos"]
    moved = ", ".join(f"{j} {round(n * base['latent']['judges'][j]['top1'])} → {round(n * new['latent']['judges'][j]['top1'])} of {n} photos" for j in judges)
    p = max(base["latent"]["judges"][j]["top1"] for j in judges)
    noise = 100 * (p * (1 - p) / n) ** 0.5  # one binomial standard error at the larger share
    if all(d > 0 for d in deltas.values()):
        word = "helped: every judge places more projections on the right person"
    elif all(d <= 0 for d in deltas.values()):
        word = "did not help: no judge places more projections on the right person"
    else:
        word = "is mixed: the judges disagree"
    small = all(abs(d) * 100 <= 2 * noise for d in deltas.values())
    caveat = f"; every change is within two binomial standard errors (±{noise:.1f} points each at n = {n}), so this run shows no reliable effect" if small else ""
    text = f"**Verdict**: at this budget, adaptation {word} (reach top-1 {moved}; pixel MSE {base['latent']['mse']:.4f} → {new['latent']['mse']:.4f}){caveat}."
    attack = results.get("attack")
    if attack and len(attack["rows"]) >= 2:
        (_, a0), (_, a1) = list(attack["rows"].items())[:2]
        text += f" PPA's consensus identity score: {_pct(a0['consensus'])} % with face-gan, {_pct(a1['consensus'])} % with the adapted prior."
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="/tmp/prior-adapt-bench")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "prior_adapt.json")
    parser.add_argument("--md", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--grid", type=Path, default=HERE.parent / "docs" / "prior-adapt-grid.png")
    parser.add_argument("--only", default="adapt,reach,attack")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pool", type=int, default=400)
    parser.add_argument("--target", default="/work/targets/orl-nodef.safetensors")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--attack-steps", type=int, default=50)
    parser.add_argument("--init-pool", type=int, default=500)
    parser.add_argument("--selection-augs", type=int, default=20)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    from midefend.attacks.priors import load_face_prior, load_prior
    from midefend.data.orl import load_orl

    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    start = time.perf_counter()
    results.update(started=time.strftime("%Y-%m-%d %H:%M"), load_start=load_average(),
                   machine=f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    train, test = load_orl(os.environ["MIDEFEND_ORL_DIR"])
    public = torch.cat([split(train, PUBLIC)[0], split(test, PUBLIC)[0]])
    gallery, gallery_labels = split(train, PRIVATE)
    photos, labels = split(test, PRIVATE)
    steps = args.only.split(",")
    adapted_path = step_adapt(args, public, results) if "adapt" in steps else Path(results["adapt"]["path"])
    priors = {"face-gan": load_face_prior(), f"adapted ({results['adapt']['steps']} steps)": load_prior(adapted_path)}
    save_samples(args.grid, public, priors)
    if "reach" in steps or "attack" in steps:
        judges = build_judges(gallery, gallery_labels)
    if "reach" in steps:
        step_reach(args, priors, photos, labels, judges, results)
    if "attack" in steps:
        step_attack(args, priors, judges, results)
    results["verdict"] = verdict(results)
    results.update(finished=time.strftime("%Y-%m-%d %H:%M"), load_end=load_average(), wall_min=(time.perf_counter() - start) / 60)
    command = "MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/prior_adapt.py " + shlex.join(sys.argv[1:])
    if steps != [""]:  # a run that measured something (``--only ""`` only redraws the grid and the section)
        runs = [r for r in results.get("runs", []) if r["only"] != args.only]
        runs.append({"only": args.only, "command": command, **{k: results[k] for k in ("started", "load_start", "finished", "load_end", "wall_min")}})
        results["runs"] = runs
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    replace_section(args.md, START, END, markdown(results, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
