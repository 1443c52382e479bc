"""Prove the GPU path in one command (under 8 minutes on one GPU): tests, erase speed, training overhead, verify.

    python benchmarks/gpu_check.py                 # on the GPU machine; writes the JSON and the RESULTS section
    python benchmarks/gpu_check.py --dry-run       # the whole plan on the CPU at toy sizes, in seconds

Steps (each timed; one that fails or runs out of its time is recorded and the rest still run):

1. ``cuda_tests``: ``pytest -m cuda`` (the Triton kernel, CUDA dispatch, one launch per batch);
2. ``erase``: ``random_erase_batch`` (Triton, one launch) against its torch backend, timm's batch
   mode on the GPU and the memory floor (``fill_`` of as many elements as the erased pixels, and a
   ``copy_`` of them) at several sizes; goal: within 2x of the ``fill_`` floor;
3. ``train_step``: a real training step of a timm ResNet-50 at 224 px (channels_last, bf16 autocast,
   SGD), without a defense and with each (MIDRE batch erasing in the step; the CALoR head with the
   CA loss; both); overhead in %, goal <= 2 %;
4. ``verify``: the default ``midefend verify`` of an ORL target and of a timm resnet18 at 112 px on
   ORL's 40 classes (both trained here first, the time printed apart), each in its own process;
5. ``torchrun``: a 2-rank ``torchrun`` train + verify against one process, where two GPUs exist
   (skipped otherwise, and the JSON says so).

``--dry-run`` runs the same functions on the CPU with toy sizes (digits data, tiny models, a
2-step attack, ``pytest --collect-only``) so the script cannot rot; ``tests/test_gpu_check.py``
runs it. Writes ``--json`` (default ``benchmarks/results/gpu_check.json``) and the section between
the ``gpu-check`` markers of ``--results`` (default ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from markdown_section import replace_section  # noqa: E402

START, END = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
STEPS = ("cuda_tests", "erase", "train_step", "verify", "torchrun")
FLOOR_GOAL, OVERHEAD_GOAL_PCT = 2.0, 2.0


@dataclass(frozen=True)
class Plan:
    """Sizes and time limits of every step; :func:`plan` gives the real one and the dry run's."""

    device: str
    erase_shapes: list[tuple[int, int, int, int]]
    erase_repeats: int
    train_arch: str
    train_batch: int
    train_size: int
    train_classes: int
    train_repeats: int
    calor_rank: int
    verify_data: str
    verify_targets: dict[str, dict[str, Any]]
    eval_options: dict[str, Any]
    verify_args: list[str]
    target_epochs: int | None
    tests: list[str]
    collect_only: bool
    limits_s: dict[str, float] = field(default_factory=dict)


def plan(dry_run: bool) -> Plan:
    if dry_run:
        toy = {"arch": "midefend/resnet_small", "arch_options": {"widths": [8, 16], "depths": [1, 1]}}
        toy_eval = {"arch": "midefend/vgg_small", "arch_options": {"widths": [8, 16], "hidden": 32, "drop_rate": 0.0}}
        return Plan(
            device="cpu", erase_shapes=[(8, 3, 16, 16)], erase_repeats=2, train_arch="resnet10t", train_batch=2, train_size=32,
            train_classes=4, train_repeats=1, calor_rank=2, verify_data="digits",
            verify_targets={"orl": toy, "resnet18-112": toy}, eval_options=toy_eval,
            verify_args=["--attack", "miface", "--classes", "0", "--per-class", "1", "--steps", "1"], target_epochs=1,
            tests=["tests/test_erasing_triton.py"], collect_only=True,
            limits_s={name: 60.0 for name in STEPS},
        )  # fmt: skip
    return Plan(
        device="cuda", erase_shapes=[(256, 3, 64, 64), (128, 3, 224, 224), (256, 3, 224, 224)], erase_repeats=30,
        train_arch="resnet50", train_batch=64, train_size=224, train_classes=1000, train_repeats=20, calor_rank=50,
        verify_data="orl",
        verify_targets={"orl": {}, "resnet18-112": {"arch": "timm/resnet18", "size": 112, "channels": 3}}, eval_options={},
        verify_args=[], target_epochs=None, tests=["tests"], collect_only=False,
        limits_s={"cuda_tests": 120.0, "erase": 45.0, "train_step": 60.0, "verify": 180.0, "torchrun": 60.0},
    )  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_medians(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median synchronised wall ms of each ``fn``, taking turns after one warm-up turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for turn in range(-1, repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if turn >= 0:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


# --- step 1: the CUDA tests -------------------------------------------------------------------------


def step_cuda_tests(p: Plan) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *p.tests]
    if p.collect_only:
        cmd.append("--collect-only")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=p.limits_s["cuda_tests"])
    tail = done.stdout.strip().splitlines()[-1:] or [done.stderr.strip()[-300:]]
    result = {"command": " ".join(cmd[2:]), "returncode": done.returncode, "summary": tail[0]}
    # collect-only: exit 0 with tests selected; a real run: 0 = all passed (5 = nothing selected)
    result["ok"] = done.returncode == 0
    return result


# --- step 2: erasing against the floor ----------------------------------------------------------------


def step_erase(p: Plan) -> dict[str, Any]:
    from timm.data.random_erasing import RandomErasing as TimmErasing

    from midefend.defenses.erasing import random_erase_batch, sample_boxes

    device = torch.device(p.device)
    rows = []
    for shape in p.erase_shapes:
        x = torch.rand(shape, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        boxes = sample_boxes(shape[0], shape[2], shape[3], scale=(0.1, 0.4), ratio=(1.0, 1.0), p=1.0, generator=gen, device=device)
        erased = int((boxes.height * boxes.width).sum()) * shape[1]
        buf, src = torch.empty(erased, device=device), torch.rand(erased, device=device)
        timm_re = TimmErasing(probability=1.0, min_area=0.1, max_area=0.4, mode="const", device=str(device))
        fns = {
            "floor: fill_ of the erased pixels": lambda buf=buf: buf.fill_(0.5),
            "floor: copy_ of the erased pixels": lambda buf=buf, src=src: buf.copy_(src),
            "midefend random_erase_batch (auto: Triton on CUDA)": lambda x=x, gen=gen: random_erase_batch(x, inplace=True, generator=gen),
            "midefend random_erase_batch (torch backend)": lambda x=x, gen=gen: random_erase_batch(x, inplace=True, generator=gen, backend="torch"),
            "timm RandomErasing (batch, const)": lambda x=x, t=timm_re: t(x),
            "x.fill_ (the whole batch)": lambda x=x: x.fill_(0.5),
        }  # fmt: skip
        ms = timed_medians(fns, device, p.erase_repeats)
        floor = ms["floor: fill_ of the erased pixels"]
        ours = ms["midefend random_erase_batch (auto: Triton on CUDA)"]
        rows.append({"shape": list(shape), "ms": ms, "x_floor": {k: v / floor for k, v in ms.items()},
                     "meets_goal": ours <= FLOOR_GOAL * floor})  # fmt: skip
    return {"rows": rows, "ok": True, "goal": f"midefend <= {FLOOR_GOAL}x the fill_ floor", "all_meet_goal": all(r["meets_goal"] for r in rows)}


# --- step 3: a real training step with and without each defense ----------------------------------------


def _train_step_fn(p: Plan, defense: str) -> Callable[[], None]:
    import timm

    from midefend import ConfidenceAdaptationLoss, harden, random_erase_batch

    device = torch.device(p.device)
    torch.manual_seed(0)
    model = timm.create_model(p.train_arch, num_classes=p.train_classes).to(device).to(memory_format=torch.channels_last)
    if "calor" in defense:
        harden(model, rank=p.calor_rank)
        model.to(device)
    loss_fn = ConfidenceAdaptationLoss() if "calor" in defense else torch.nn.CrossEntropyLoss()
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(p.train_batch, 3, p.train_size, p.train_size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, p.train_classes, (p.train_batch,), device=device)
    amp = torch.bfloat16

    def step() -> None:
        batch = random_erase_batch(x, scale=(0.1, 0.4)) if "midre" in defense else x
        with torch.autocast(device.type, dtype=amp):
            loss = loss_fn(model(batch), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


def step_train(p: Plan) -> dict[str, Any]:
    device = torch.device(p.device)
    defenses = ("none", "midre", "calor", "midre+calor")
    fns = {d: _train_step_fn(p, d) for d in defenses}
    ms = timed_medians(fns, device, p.train_repeats)
    overhead = {d: 100.0 * (ms[d] / ms["none"] - 1.0) for d in defenses if d != "none"}
    return {"arch": p.train_arch, "batch": p.train_batch, "size": p.train_size, "ms": ms, "overhead_pct": overhead,
            "goal": f"overhead <= {OVERHEAD_GOAL_PCT} %", "ok": True,
            "all_meet_goal": all(v <= OVERHEAD_GOAL_PCT for v in overhead.values())}  # fmt: skip


# --- step 4: default verify of two targets ------------------------------------------------------------


def _build_targets(p: Plan, folder: Path) -> tuple[dict[str, Path], Path, dict[str, float]]:
    from midefend.training.targets import train_evaluation_model, train_target

    seconds, paths = {}, {}
    extra = {} if p.target_epochs is None else {"epochs": p.target_epochs, "calor_epochs": 1, "ca_epochs": 1}
    for name, options in p.verify_targets.items():
        tick = time.perf_counter()
        paths[name] = folder / f"{name}.safetensors"
        train_target(p.verify_data, defense="nodef", device=p.device, out=paths[name], **options, **extra)
        seconds[f"train {name}"] = time.perf_counter() - tick
    tick = time.perf_counter()
    eval_path = folder / "eval.safetensors"
    train_evaluation_model(p.verify_data, seed=1, device=p.device, out=eval_path, **p.eval_options, **extra)
    seconds["train eval model"] = time.perf_counter() - tick
    return paths, eval_path, seconds


def verify_command(target: Path, eval_model: Path, out: Path, p: Plan) -> list[str]:
    return ["verify", str(target), "--eval-model", str(eval_model), "--data", p.verify_data, "--device", p.device,
            "--out", str(out), "--quiet", *p.verify_args]  # fmt: skip


def step_verify(p: Plan, folder: Path) -> dict[str, Any]:
    paths, eval_path, train_seconds = _build_targets(p, folder)
    runs = {}
    for name, target in paths.items():
        args = verify_command(target, eval_path, folder / f"verify-{name}", p)
        tick = time.perf_counter()
        if p.collect_only:  # the dry run: in this process (no second start-up of torch)
            from midefend.cli import app

            try:
                app(args, standalone_mode=False)
                code = 0
            except SystemExit as stop:
                code = int(stop.code or 0)
        else:
            env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            limit = p.limits_s["verify"]
            code = subprocess.run([sys.executable, "-m", "midefend", *args], env=env, timeout=limit, capture_output=True).returncode
        report = folder / f"verify-{name}" / "report.json"
        runs[name] = {"seconds": time.perf_counter() - tick, "returncode": code, "report": report.is_file(),
                      "command": "midefend " + " ".join(args)}  # fmt: skip
    ok = all(r["returncode"] == 0 and r["report"] for r in runs.values())
    return {"train_seconds": train_seconds, "runs": runs, "ok": ok}


# --- step 5: torchrun on two GPUs -----------------------------------------------------------------------


def step_torchrun(p: Plan, folder: Path) -> dict[str, Any]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if p.device != "cuda" or gpus < 2:
        return {"skipped": f"needs 2 GPUs, this machine has {gpus}", "ok": True,
                "command": "python benchmarks/distributed.py --targets-dir DIR (2 ranks, NCCL, against 1 process)"}  # fmt: skip
    targets = folder / "targets"
    targets.mkdir(exist_ok=True)
    from midefend.training.targets import train_evaluation_model, train_target

    train_target("orl", defense="nodef", device="cuda", out=targets / "orl-nodef.safetensors")
    train_evaluation_model("orl", seed=1, device="cuda", out=targets / "orl-eval.safetensors")
    cmd = [sys.executable, str(HERE / "distributed.py"), "--targets-dir", str(targets), "--out-dir", str(folder / "distributed")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=p.limits_s["torchrun"])
    return {"command": " ".join(cmd[1:]), "returncode": done.returncode, "tail": done.stdout[-1500:], "ok": done.returncode == 0}


# --- driver -----------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    if torch.cuda.is_available():
        info |= {"gpu": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def run(p: Plan, folder: Path, only: list[str] | None = None) -> dict[str, Any]:
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "cuda_tests": lambda: step_cuda_tests(p),
        "erase": lambda: step_erase(p),
        "train_step": lambda: step_train(p),
        "verify": lambda: step_verify(p, folder),
        "torchrun": lambda: step_torchrun(p, folder),
    }
    result: dict[str, Any] = {"environment": environment(), "plan": asdict(p), "steps": {}}
    for name, fn in steps.items():
        if only and name not in only:
            result["steps"][name] = {"status": "not selected", "ok": True}
            continue
        tick = time.perf_counter()
        try:
            out = fn()
            status = "skipped" if "skipped" in out else ("ok" if out.get("ok") else "failed")
        except subprocess.TimeoutExpired as stop:
            out, status = {"error": f"ran past its {stop.timeout:.0f} s"}, "timeout"
        except Exception as exc:  # one broken step must not hide the others' numbers
            out, status = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}, "failed"
        out["seconds"], out["status"] = round(time.perf_counter() - tick, 2), status
        print(f"[gpu_check] {name}: {status} in {out['seconds']:.1f} s", flush=True)
        result["steps"][name] = out
    result["total_seconds"] = round(sum(s.get("seconds", 0.0) for s in result["steps"].values()), 1)
    return result


def markdown(result: dict[str, Any], command: str) -> list[str]:
    env, steps = result["environment"], result["steps"]
    where = env.get("gpu", "CPU only") + (f", CUDA {env['cuda']}" if env.get("cuda") else "")
    lines = [START, "", f"`{command}` on {env['date']}: {where}, torch {env['torch']}, triton {env['triton']}, "
             f"{env['cpus']} CPUs, load average {' / '.join(f'{v:.1f}' for v in env['loadavg'])}; "
             f"{result['total_seconds']:.0f} s in all. Written by the script."
             + (" **Dry run: toy sizes on the CPU; the numbers only show that every step runs.**" if result.get("dry_run") else ""), "",
             "| step | status | seconds |", "|---|---|---:|"]  # fmt: skip
    lines += [f"| {name} | {s['status']} | {s.get('seconds', 0):.1f} |" for name, s in steps.items()]
    erase = steps.get("erase", {})
    if erase.get("rows"):
        lines += ["", f"**Erasing, median ms per batch (x the fill_ floor)**; goal: {erase['goal']}", ""]
        names = list(erase["rows"][0]["ms"])
        lines += ["| method | " + " | ".join("x".join(map(str, r["shape"])) for r in erase["rows"]) + " |",
                  "|---|" + "---:|" * len(erase["rows"])]  # fmt: skip
        for n in names:
            lines.append(f"| {n} | " + " | ".join(f"{r['ms'][n]:.3f} ({r['x_floor'][n]:.1f}x)" for r in erase["rows"]) + " |")
    train = steps.get("train_step", {})
    if train.get("ms"):
        lines += ["", f"**Training step, timm {train['arch']} at {train['size']} px, batch {train['batch']}**; goal: {train['goal']}", "",
                  "| defense | ms per step | overhead |", "|---|---:|---:|"]  # fmt: skip
        for d, ms in train["ms"].items():
            over = "" if d == "none" else f"{train['overhead_pct'][d]:+.1f} %"
            lines.append(f"| {d} | {ms:.1f} | {over} |")
    verify = steps.get("verify", {})
    if verify.get("runs"):
        lines += ["", "**Default verify** (targets trained first: " + ", ".join(f"{k} {v:.0f} s" for k, v in verify["train_seconds"].items()) + ")", "",
                  "| target | seconds | exit code |", "|---|---:|---:|"]  # fmt: skip
        lines += [f"| {name} | {r['seconds']:.1f} | {r['returncode']} |" for name, r in verify["runs"].items()]
    if "skipped" in steps.get("torchrun", {}):
        lines += ["", f"torchrun: skipped ({steps['torchrun']['skipped']})."]
    return lines + ["", END]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the whole plan on the CPU at toy sizes")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "gpu_check.json")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="Markdown file with the gpu-check markers")
    parser.add_argument("--only", action="append", choices=STEPS, help="run only these steps (repeatable)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on the CPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        if args.dry_run:
            os.environ.setdefault("MIDEFEND_CACHE", str(Path(tmp) / "cache"))
        result = run(plan(args.dry_run), Path(tmp), args.only)
        result["dry_run"] = args.dry_run
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.json.with_suffix(".tmp")
    tmp_json.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp_json, args.json)
    command = "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    replace_section(args.results, START, END, markdown(result, command.strip()))
    failed = [n for n, s in result["steps"].items() if s["status"] in ("failed", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
