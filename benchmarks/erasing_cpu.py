"""Erasing on the CPU where users feel it: per image (the DataLoader path) and per batch, at 1, 2 and
4 torch threads, with and without a background process loading the cores (issue 33).

Contenders, on the same tensors in one process, taking turns (a burst of load hits all alike):

- per image: torchvision ``v2.RandomErasing``, timm ``RandomErasing`` (one image), midefend
  ``RandomErasingTransform`` out of place (the default, as torchvision's) and in place (as timm,
  which has no other mode; the "÷ timm" column compares these two);
  uint8 and float32, 3x224x224 and 1x64x64, square (``ratio=(1, 1)``) and free (``(0.3, 3.3)``);
- per batch: torchvision sample by sample, timm's batch mode (``device="cpu"``, ``mode="const"``),
  midefend ``random_erase_batch(inplace=True)`` (timm's batch mode is in place too).

Times are medians of wall-clock turns (what a training step waits for; under load the CPU time
would hide the waiting). The load is ``--load-procs`` busy-loop processes (default: CPUs - 1, at
least 1), started before the loaded half and killed after it (they also stop by themselves after
``--load-seconds``).

    python benchmarks/erasing_cpu.py                            # prints the tables
    python benchmarks/erasing_cpu.py --markdown docs/erasing.md --json benchmarks/results/erasing_cpu.json
    python benchmarks/erasing_cpu.py --check                    # exit 1 if midefend is slower anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from midefend.defenses.erasing import IMAGENET_MEAN, RandomErasingTransform, random_erase_batch

SCALE = (0.1, 0.4)
RATIOS = {"square": (1.0, 1.0), "free": (0.3, 3.3)}
IMAGES = [((3, 224, 224), torch.uint8), ((3, 224, 224), torch.float32), ((1, 64, 64), torch.uint8), ((1, 64, 64), torch.float32)]
BATCHES = [(256, 3, 64, 64), (64, 3, 224, 224)]
THREADS = (1, 2, 4)
IMAGES_PER_TURN = 32
START, END = "<!-- erasing-cpu-benchmark:start -->", "<!-- erasing-cpu-benchmark:end -->"
BUSY = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


def medians(fns: dict[str, Callable[[], object]], repeats: int, slow: frozenset[str] = frozenset()) -> dict[str, float]:
    """Median wall ms of each ``fn``, in turns after one warm-up turn; ``slow`` ones every 4th turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for turn in range(-1, repeats):
        for name, fn in fns.items():
            if name in slow and turn % 4:
                continue
            start = time.perf_counter()
            fn()
            if turn >= 0:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def fill_for(channels: int, dtype: torch.dtype) -> list[float]:
    """The ImageNet-mean fill midefend writes, for torchvision's ``value=``."""
    pixel = IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,)
    return [float(round(v * 255)) for v in pixel] if dtype == torch.uint8 else list(pixel)


def timm_erasing(ratio: tuple[float, float]):
    from timm.data.random_erasing import RandomErasing

    return RandomErasing(probability=1.0, min_area=SCALE[0], max_area=SCALE[1], min_aspect=ratio[0],
                         max_aspect=ratio[1], mode="const", device="cpu")  # fmt: skip


def image_contenders(shape: tuple[int, ...], dtype: torch.dtype, ratio: tuple[float, float]) -> dict[str, Callable[[], object]]:
    from torchvision.transforms import v2

    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) * (255 if dtype == torch.uint8 else 1)).to(dtype)
    tv = v2.RandomErasing(p=1.0, scale=SCALE, ratio=ratio, value=fill_for(shape[0], dtype))
    timm_re = timm_erasing(ratio)
    ours = RandomErasingTransform(scale=SCALE, ratio=ratio)
    ours_inplace = RandomErasingTransform(scale=SCALE, ratio=ratio, inplace=True)

    def turn(transform: Callable[[torch.Tensor], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(IMAGES_PER_TURN):
                transform(x)

        return run

    return {"torchvision": turn(tv), "timm": turn(timm_re), "midefend": turn(ours), "midefend in place": turn(ours_inplace)}


def batch_contenders(shape: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    from torchvision.transforms import v2

    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    tv = v2.RandomErasing(p=1.0, scale=SCALE, ratio=RATIOS["square"], value=fill_for(shape[1], x.dtype), inplace=True)
    timm_re = timm_erasing(RATIOS["square"])

    def per_sample() -> None:
        for img in x:
            tv(img)

    return {"torchvision": per_sample, "timm": lambda: timm_re(x), "midefend": lambda: random_erase_batch(x, inplace=True, generator=gen)}


def measure(repeats: int) -> list[dict]:
    """One row per (kind, case, threads) at the current load."""
    rows = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        for shape, dtype in IMAGES:
            for aspect, ratio in RATIOS.items():
                ms = medians(image_contenders(shape, dtype, ratio), repeats)
                per_image = {k: v * 1e3 / IMAGES_PER_TURN for k, v in ms.items()}  # microseconds
                case = f"{'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')} {aspect}"
                rows.append({"kind": "image", "case": case, "threads": threads, "us": per_image})
        for shape in BATCHES:
            ms = medians(batch_contenders(shape), repeats, slow=frozenset({"torchvision"}))
            rows.append({"kind": "batch", "case": f"{'x'.join(map(str, shape))} float32 square", "threads": threads, "ms": ms})
    for row in rows:
        t = row.get("us") or row["ms"]
        row["midefend_over"] = {k: t["midefend"] / v for k, v in t.items() if not k.startswith("midefend")}
        if "midefend in place" in t:  # against timm, which erases in place
            row["midefend_over"]["timm"] = t["midefend in place"] / t["timm"]
    return rows


def start_load(procs: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)]) for _ in range(procs)]


def stop_load(load: list[subprocess.Popen]) -> None:
    for proc in load:
        proc.kill()
    for proc in load:
        proc.wait()


def run(repeats: int, load_procs: int, load_seconds: float) -> dict:
    threads_before = torch.get_num_threads()
    result = {"torch": torch.__version__, "cpus": os.cpu_count(), "load_procs": load_procs, "repeats": repeats,
              "loadavg_before": os.getloadavg(), "rows": []}  # fmt: skip
    try:
        for row in measure(repeats):
            result["rows"].append({**row, "load": False})
        load = start_load(load_procs, load_seconds)
        try:
            time.sleep(0.5)  # let the busy loops get going
            for row in measure(repeats):
                result["rows"].append({**row, "load": True})
            result["loadavg_loaded"] = os.getloadavg()
        finally:
            stop_load(load)
    finally:
        torch.set_num_threads(threads_before)
    return result


def slower(result: dict) -> list[str]:
    """Where midefend is slower than a contender it must beat: torchvision per image, timm per batch."""
    missed = []
    for row in result["rows"]:
        rival = "torchvision" if row["kind"] == "image" else "timm"
        ratio = row["midefend_over"][rival]
        if ratio > 1.0:
            missed.append(f"{row['kind']} {row['case']}, {row['threads']} threads{', loaded' if row['load'] else ''}: "
                          f"{ratio:.2f}x {rival}")  # fmt: skip
    return missed


def tables(result: dict) -> list[str]:
    lines = []
    for kind, unit, title in (("image", "us", "Per image (DataLoader path), microseconds per image"),
                              ("batch", "ms", "Per batch, milliseconds per batch (in place)")):  # fmt: skip
        lines += [f"**{title}**", "", f"| threads | background load | input | torchvision {unit} | timm {unit} | midefend {unit} "
                  f"| midefend in place {unit} | midefend ÷ torchvision | midefend ÷ timm |",
                  "|---:|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in (r for r in result["rows"] if r["kind"] == kind):
            t, over = row[unit], row["midefend_over"]
            inplace = f"{t['midefend in place']:.1f}" if "midefend in place" in t else "(is in place)"
            lines.append(f"| {row['threads']} | {'yes' if row['load'] else 'no'} | {row['case']} | {t['torchvision']:.1f} | "
                         f"{t['timm']:.1f} | {t['midefend']:.1f} | {inplace} | {over['torchvision']:.2f} | {over['timm']:.2f} |")  # fmt: skip
        lines.append("")
    return lines


def markdown(result: dict, command: str) -> list[str]:
    """The section between the markers: written by this script, never by hand."""
    before = " / ".join(f"{v:.1f}" for v in result["loadavg_before"])
    loaded = " / ".join(f"{v:.1f}" for v in result.get("loadavg_loaded", (float("nan"),) * 3))
    header = (f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: torch {result['torch']}, "
              f"{result['cpus']} CPUs; load average (1/5/15 min) {before} before, {loaded} at the end of the loaded "
              f"half ({result['load_procs']} busy-loop process(es)). Medians of {result['repeats']} interleaved "
              "wall-clock turns; a ratio below 1 means midefend is faster.")  # fmt: skip
    missed = slower(result)
    verdict = "midefend is at least as fast everywhere it must be." if not missed else "Slower: " + "; ".join(missed) + "."
    return [START, "", header, "", verdict, "", *tables(result), END]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--load-procs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--load-seconds", type=float, default=300.0, help="the busy loops stop by themselves after this")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="rewrite the section between the markers of this file")
    parser.add_argument("--check", action="store_true", help="exit 1 where midefend is slower")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.load_procs, args.load_seconds)
    print("\n".join(tables(result)))
    missed = slower(result)
    for line in missed:
        print(f"slower: {line}")
    if args.markdown:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from markdown_section import replace_section

        command = "python benchmarks/erasing_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
        replace_section(args.markdown, START, END, markdown(result, command.strip()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.json)
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
