"""The face prior's reach on ORL, per search space and judge, and IF-GMI's radius curve on a NoDef target.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/reach.py --out-dir /tmp/reach-bench

1. **reach**: one held-out ORL photo per identity (40; split seed 0, the targets' split) projected into
   ``face-gan`` by pixel MSE alone (:func:`midefend.evaluation.reach.project_latent` /
   :func:`~midefend.evaluation.reach.project_features`; no judge in the objective), judged by FaceNet and,
   where ``import dlib`` works, dlib's face-recognition ResNet (5-point landmarks on the whole frame +
   ``get_face_chip``), nearest identity against the 7 training photos per person. Spaces: the latent, and
   each feature level at each ``--radii`` (relative l1; ``none``: unbounded). Also the wall time of
   ``verify``'s default reach step (latent only).
2. **ifgmi**: a NoDef ORL target (``midefend/resnet_small``, ``--epochs``; cut from 60 to fit) attacked
   by IF-GMI at each radius (radius 0 = its latent search alone), cut to ``--classes`` classes,
   ``--per-class``, ``--steps`` latent steps, ``--layer-steps`` per level: FaceNet's and dlib's top-1,
   and the target's own top-1 on the reconstructions.

Writes ``results/reach.json``, the section between the ``reach`` markers of ``RESULTS.md`` (command,
machine, load average, wall times) and ``docs/reach-grid.png`` (*real | latent | features*).
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
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from markdown_section import replace_section  # noqa: E402

START, END = "<!-- reach:start -->", "<!-- reach:end -->"


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


class DlibEmbedder(nn.Module):
    """dlib's 128-d face descriptor for images in ``[0, 1]``: 150×150 RGB, 5 landmarks on the whole frame, face chip."""

    def __init__(self) -> None:
        super().__init__()
        import dlib
        import face_recognition_models as models

        self.dlib = dlib
        self.shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # the evaluator asks for a device

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        from midefend.models.images import adapt_images

        rgb = adapt_images(images.float().cpu(), channels=3, size=150).clamp(0, 1)
        arrays = (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        out = []
        for a in arrays:
            shape = self.shape(a, self.dlib.rectangle(0, 0, 149, 149))
            chip = self.dlib.get_face_chip(a, shape, size=150)
            out.append(torch.tensor(list(self.net.compute_face_descriptor(chip))))
        return torch.nn.functional.normalize(torch.stack(out), dim=1)


def build_judges(train: Any) -> dict[str, Any]:
    from midefend.evaluation.identity import NearestIdentityEvaluator
    from midefend.facenet import load_facenet

    judges = {"facenet": NearestIdentityEvaluator(load_facenet(), train.images, train.labels, num_classes=40, name="facenet")}
    try:
        judges["dlib"] = NearestIdentityEvaluator(DlibEmbedder(), train.images, train.labels, num_classes=40, name="dlib")
    except ImportError:
        pass
    return judges


def cmd_reach(args: argparse.Namespace, train: Any, test: Any, judges: dict[str, Any], results: dict[str, Any]) -> None:
    from midefend.attacks.priors import inference_prior, load_face_prior
    from midefend.evaluation.reach import DEFAULTS, _judge, _mse, held_out_photos, project_features, project_latent
    from midefend.evaluation.reports import save_grid
    from midefend.models.images import adapt_images

    prior = inference_prior(load_face_prior())
    photos, labels = held_out_photos(test, None)
    d = DEFAULTS
    rows: list[dict[str, Any]] = []
    real = {name: vars(_judge(j, photos, labels, True)) for name, j in judges.items()}
    t0, load0 = time.perf_counter(), load_average()
    latents = project_latent(prior, photos, pool=d["pool"], starts=d["starts"], steps=d["steps"], lr=d["lr"], seed=d["seed"])
    with torch.no_grad():
        latent_images = adapt_images(prior(latents), channels=1, size=64).clamp(0, 1)
    latent_wall = round(time.perf_counter() - t0, 1)
    t1 = time.perf_counter()
    verdict = {name: vars(_judge(j, latent_images, labels, True)) for name, j in judges.items()}
    judge_wall = round(time.perf_counter() - t1, 1)
    rows.append({"space": "latent", "radius": None, "mse": float(_mse(latent_images, photos).mean()), "moved": None, "judges": verdict, "wall_s": latent_wall})
    results["verify_reach_step"] = {"latent_wall_s": latent_wall, "judge_wall_s": judge_wall, "load_before": load0, "load_after": load_average()}
    grid_columns = [latent_images]
    for level in args.levels:
        for radius in args.radii:
            t0 = time.perf_counter()
            images, moved = project_features(prior, photos, latents, level, steps=d["feature_steps"], lr=d["feature_lr"], radius=radius)
            verdict = {name: vars(_judge(j, images, labels, True)) for name, j in judges.items()}
            rows.append({"space": f"features@{level}", "radius": radius, "mse": float(_mse(images, photos).mean()), "moved": moved, "judges": verdict,
                         "wall_s": round(time.perf_counter() - t0, 1)})
            if radius == d["radius"]:
                grid_columns.append(images)
            print(rows[-1], flush=True)
    results["reach"] = {"photos": len(labels), "real": real, "rows": rows, "settings": dict(d), "chance": 1 / 40}
    picked = torch.arange(0, len(labels), max(1, len(labels) // args.grid_rows))[: args.grid_rows]
    grid = torch.stack(grid_columns, dim=1)[picked]
    save_grid(args.grid, photos[picked], grid)


def train_nodef(args: argparse.Namespace) -> Path:
    from midefend.training.targets import train_target

    path = Path(args.out_dir) / f"orl-nodef-{args.epochs}ep.safetensors"
    if not path.is_file():
        t0 = time.perf_counter()
        train_target("orl", defense="nodef", epochs=args.epochs, out=path)
        print(f"trained {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def cmd_ifgmi(args: argparse.Namespace, judges: dict[str, Any], results: dict[str, Any]) -> None:
    from midefend.attacks import load_face_prior, run_attack
    from midefend.evaluation.classifier import Classifier
    from midefend.evaluation.metrics import topk_hits
    from midefend.io.checkpoints import load_checkpoint

    ckpt = load_checkpoint(args.target if args.target else train_nodef(args))
    target = Classifier.from_checkpoint(ckpt, name="orl-nodef")
    if args.eval:  # the evaluation model trained on the private data: the papers' metric, not an independent judge
        judges = {**judges, "eval": Classifier.from_checkpoint(load_checkpoint(args.eval), name="eval")}
    prior = load_face_prior()
    classes = list(range(args.classes))
    rows = []
    for radius in args.attack_radii:
        levels = [] if radius == 0 else args.attack_levels
        t0, load0 = time.perf_counter(), load_average()
        result = run_attack("ifgmi", target, prior, classes=classes, per_class=args.per_class, candidates_factor=2, steps=args.steps, init_pool=args.init_pool,
                            selection_augs=args.selection_augs, layer_steps=args.layer_steps, levels=levels, radius=radius)
        images, labels = result.flat()
        row: dict[str, Any] = {"radius": radius, "levels": levels, "wall_s": round(time.perf_counter() - t0, 1), "load_before": load0, "load_after": load_average()}
        hits = {}
        for name, j in judges.items():
            hits[name] = topk_hits(j.predict(images), labels, 1)
            row[name] = float(hits[name].float().mean())
        independent = [n for n in ("facenet", "dlib") if n in hits]
        row["consensus"] = float(torch.stack([hits[n] for n in independent]).all(0).float().mean()) if independent else None
        with torch.inference_mode():
            row["target_top1"] = float(topk_hits(target.predict(images), labels, 1).float().mean())
        row["target_conf"] = float(result.target_confidence.mean())
        rows.append(row)
        print(row, flush=True)
    trained = f"{Path(args.target).stem} (test acc {ckpt.extra.get('test_accuracy')})" if args.target else f"orl-nodef ({args.epochs} epochs, test acc {ckpt.extra.get('test_accuracy')})"
    results["ifgmi"] = {"target": trained, "eval": bool(args.eval), "classes": args.classes, "per_class": args.per_class,
                        "steps": args.steps, "layer_steps": args.layer_steps, "init_pool": args.init_pool, "selection_augs": args.selection_augs,
                        "levels": args.attack_levels, "rows": rows}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown(results: dict[str, Any], command: str) -> list[str]:
    lines = [START, "## The prior's reach and IF-GMI (`benchmarks/reach.py`)", "", f"```bash\n{command}\n```", "",
             f"{results['machine']}; started {results['started']} (load average 1/5/15 min {results['load_start']}), "
             f"finished {results['finished']} (load {results['load_end']}); wall {results['wall_min']:.1f} min. Numbers: `results/reach.json`.", ""]
    reach = results.get("reach")
    if reach:
        judges = list(reach["real"])
        s = reach["settings"]
        lines += [f"**Reach of `face-gan` on ORL** — {reach['photos']} held-out photos (one per identity), projected by pixel MSE alone "
                  f"(latent: best {s['starts']} of {s['pool']} random latents, {s['steps']} Adam steps at lr {s['lr']}; features: {s['feature_steps']} Adam steps "
                  f"at lr {s['feature_lr']} from the latent projection's own features, within the relative l1 ball of the radius). "
                  f"Nearest identity among the 40 people's training photos (chance 2.5 %); the real photos: "
                  + ", ".join(f"{j} {_pct(reach['real'][j]['top1'])} %" for j in judges) + ".", "",
                  "| space | radius (l1, relative) | features moved | pixel MSE | " + " | ".join(f"{j} top-1 / top-5 (%)" for j in judges) + " | wall (s) |",
                  "|---|---|---|---|" + "---|" * len(judges) + "---|"]
        for r in reach["rows"]:
            radius = "–" if r["space"] == "latent" else ("none" if r["radius"] is None else f"{r['radius']:g}")
            moved = "–" if r["moved"] is None else f"{100 * r['moved']:.0f} %"
            cells = " | ".join(f"{_pct(r['judges'][j]['top1'])} / {_pct(r['judges'][j]['top5'])}" for j in judges)
            lines.append(f"| {r['space']} | {radius} | {moved} | {r['mse']:.4f} | {cells} | {r['wall_s']} |")
        v = results.get("verify_reach_step", {})
        lines += ["", f"`verify`'s default reach step (latent only, 40 photos): projection {v.get('latent_wall_s')} s + FaceNet/dlib judging {v.get('judge_wall_s')} s "
                  f"(load {v.get('load_before')} → {v.get('load_after')}); the grid is `docs/reach-grid.png`.", ""]
    ifgmi = results.get("ifgmi")
    if ifgmi:
        judges = [k for k in ("facenet", "dlib", "consensus", "eval") if ifgmi["rows"][0].get(k) is not None]
        lines += [f"**IF-GMI's radius curve** on {ifgmi['target']} — cut to classes 0–{ifgmi['classes'] - 1}, {ifgmi['per_class']} kept of "
                  f"{2 * ifgmi['per_class']} per class, {ifgmi['steps']} latent steps, {ifgmi['layer_steps']} steps per level (levels {ifgmi['levels']}), "
                  f"pool {ifgmi['init_pool']}, {ifgmi['selection_augs']} selection draws. Radius 0: the latent search alone. "
                  + ("consensus: both independent recognisers place the reconstruction nearest its person; eval: the evaluation model trained on the private data (not independent)."
                     if ifgmi.get("eval") else "No evaluation model was used for this run."), "",
                  "| radius | " + " | ".join(f"{j} top-1 (%)" for j in judges) + " | target's own top-1 (%) | target conf | wall (s) | load before → after |",
                  "|---|" + "---|" * len(judges) + "---|---|---|---|"]
        for r in ifgmi["rows"]:
            radius = "none" if r["radius"] is None else f"{r['radius']:g}"
            lines.append(f"| {radius} | " + " | ".join(_pct(r[j]) for j in judges) + f" | {_pct(r['target_top1'])} | {r['target_conf']:.3f} | {r['wall_s']} | {r['load_before']} → {r['load_after']} |")
        lines.append("")
    lines.append(END)
    return lines


def _radius(text: str) -> float | None:
    return None if text == "none" else float(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="/tmp/reach-bench")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "reach.json")
    parser.add_argument("--md", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--grid", type=Path, default=HERE.parent / "docs" / "reach-grid.png")
    parser.add_argument("--grid-rows", type=int, default=10)
    parser.add_argument("--only", default="reach,ifgmi")
    parser.add_argument("--levels", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1])
    parser.add_argument("--radii", type=lambda s: [_radius(v) for v in s.split(",")], default=[0.1, 0.3, None])
    parser.add_argument("--attack-radii", type=lambda s: [_radius(v) for v in s.split(",")], default=[0.0, 0.1, 0.3, None])
    parser.add_argument("--attack-levels", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--target", type=Path, default=None, help="ifgmi: attack this trained target instead of training a cut NoDef one")
    parser.add_argument("--eval", type=Path, default=None, help="ifgmi: judge by this evaluation model too")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--layer-steps", type=int, default=25)
    parser.add_argument("--init-pool", type=int, default=500)
    parser.add_argument("--selection-augs", type=int, default=20)
    args = parser.parse_args()
    from midefend.data.orl import load_orl

    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    start = time.perf_counter()
    results.update(started=time.strftime("%Y-%m-%d %H:%M"), load_start=load_average(),
                   machine=f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    train, test = load_orl(os.environ["MIDEFEND_ORL_DIR"])
    judges = build_judges(train)
    steps = args.only.split(",")
    if "reach" in steps:
        cmd_reach(args, train, test, judges, results)
    if "ifgmi" in steps:
        cmd_ifgmi(args, judges, results)
    results.update(finished=time.strftime("%Y-%m-%d %H:%M"), load_end=load_average(), wall_min=(time.perf_counter() - start) / 60)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    command = "MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/reach.py " + shlex.join(sys.argv[1:])
    replace_section(args.md, START, END, markdown(results, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
