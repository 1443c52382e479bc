"""Batch random erasing: midefend against torchvision, timm, kornia and the memory floor.

Every method erases one MIDRE box per sample (``scale=(0.1, 0.4)``, square, constant fill) on the
same batch, in one process; the table gives median milliseconds per batch (CPU: the process's
CPU time, robust to other processes on a shared machine, and the wall time for reference; CUDA:
wall time) and the ratio to the
floor: ``fill_`` on a buffer with as many elements as the erased pixels of that batch (writing
them once). ``torch.where`` over the whole batch is shown for reference (what a plain
vectorised erase costs).

    python benchmarks/erasing.py                     # CPU (and CUDA when present), prints a table
    python benchmarks/erasing.py --json out.json     # also writes the times and ratios
    python benchmarks/erasing.py --check             # exit 1 if the CPU goals are missed
    python benchmarks/erasing.py --markdown docs/erasing.md   # rewrite the table between the markers

Goals (issue "Batch erasing at the memory-bandwidth floor"), CPU, in place, 256x3x64x64 float32:
at least 10x faster than torchvision per sample and 3x faster than timm; CUDA: within 2x of the
floor with one kernel launch. Timings on a shared machine are noisy: compare ratios, not ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from midefend.defenses.erasing import IMAGENET_MEAN, RandomErasingTransform, random_erase_batch, sample_boxes

SCALE, RATIO = (0.1, 0.4), (1.0, 1.0)
SHAPES = [(256, 3, 64, 64), (128, 3, 224, 224)]
DTYPES = [torch.float32, torch.bfloat16]


def interleaved_medians(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, slow: set[str], warmup: int = 1
) -> tuple[dict[str, float], dict[str, float]]:
    """Median ``(cpu_ms, wall_ms)`` of each ``fn``; on CUDA both are synchronised wall time.

    The methods take turns, so a burst of load on a shared machine hits all of them alike
    instead of whichever happened to be running. In its turn a method runs twice and only the
    second call is timed: every method is measured with its own data warm in the caches, as
    back-to-back repeats would leave it. Methods in ``slow`` take every fourth turn only.

    On the CPU the ratios use the process's CPU time: on a loaded machine the wall clock also
    counts the time other processes held the core, which inflates long calls (a per-sample loop
    of 30 ms gets preempted, a 1.5 ms call mostly does not); CPU time is also what erasing costs
    a DataLoader worker.
    """
    cpu_clock = time.perf_counter if device.type == "cuda" else time.process_time
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    for rnd in range(-warmup, repeats):
        for name, fn in fns.items():
            if name in slow and rnd % 4:
                continue
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            start_cpu, start_wall = cpu_clock(), time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if rnd >= 0:
                cpu[name].append((cpu_clock() - start_cpu) * 1e3)
                wall[name].append((time.perf_counter() - start_wall) * 1e3)
    return (
        {name: statistics.median(t) for name, t in cpu.items()},
        {name: statistics.median(t) for name, t in wall.items()},
    )


def methods(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The contenders on batch ``x``; each erases every sample once."""
    device = x.device
    gen = torch.Generator(device=device).manual_seed(0)
    boxes = sample_boxes(x.shape[0], x.shape[2], x.shape[3], scale=SCALE, ratio=RATIO, p=1.0, generator=gen, device=device)
    erased = int((boxes.height * boxes.width).sum()) * x.shape[1]
    floor_buf = torch.empty(erased, dtype=x.dtype, device=device)
    out: dict[str, Callable[[], object]] = {
        "floor: fill_ of the erased pixels": lambda: floor_buf.fill_(0.5),
        "midefend random_erase_batch, in place": lambda: random_erase_batch(x, inplace=True, generator=gen),
        "midefend random_erase_batch, out of place": lambda: random_erase_batch(x, generator=gen),
    }
    rows = torch.arange(x.shape[2], device=device).view(1, 1, -1, 1)
    cols = torch.arange(x.shape[3], device=device).view(1, 1, 1, -1)
    top, left, h, w = (f.view(-1, 1, 1, 1) for f in boxes[:4])
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=device).view(1, -1, 1, 1)

    def where_erase():
        inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        return torch.where(inside, mean, x)

    out["torch.where over the batch (reference)"] = where_erase
    from torchvision.transforms import v2

    def per_sample(transform: Callable[[torch.Tensor], object]) -> Callable[[], None]:
        def run() -> None:
            for img in x:  # what a DataLoader does, one sample at a time
                transform(img)

        return run

    tv = v2.RandomErasing(p=1.0, scale=SCALE, ratio=RATIO, value=list(IMAGENET_MEAN), inplace=True)
    out["torchvision v2.RandomErasing, per sample"] = per_sample(tv)
    out["midefend RandomErasingTransform, per sample"] = per_sample(RandomErasingTransform(scale=SCALE, ratio=RATIO, inplace=True))
    from timm.data.random_erasing import RandomErasing as TimmErasing

    timm_re = TimmErasing(probability=1.0, min_area=SCALE[0], max_area=SCALE[1], min_aspect=RATIO[0],
                          max_aspect=RATIO[1], mode="const", device=str(device))  # fmt: skip
    out["timm RandomErasing (batch, const)"] = lambda: timm_re(x)
    try:
        import kornia.augmentation as K
    except ImportError:
        pass
    else:
        kornia_re = K.RandomErasing(scale=SCALE, ratio=RATIO, value=0.0, p=1.0).to(device)
        if x.dtype == torch.float32:  # kornia's sampler works in float32 only
            out["kornia RandomErasing (batch)"] = lambda: kornia_re(x)
    return out


def run(devices: list[str], repeats: int) -> list[dict]:
    results = []
    for device_name in devices:
        device = torch.device(device_name)
        for shape in SHAPES:
            for dtype in DTYPES:
                x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
                fns = methods(x)
                slow = {name for name in fns if "per sample" in name and device.type == "cpu"}
                times, wall = interleaved_medians(fns, device, repeats, slow)
                floor = times["floor: fill_ of the erased pixels"]
                mine = times["midefend random_erase_batch, in place"]
                results.append({
                    "device": device_name, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                    "ms": times, "wall_ms": wall,
                    "ratio_to_floor": {k: v / floor for k, v in times.items()},
                    "speedup_of_midefend_inplace": {k: v / mine for k, v in times.items()},
                })  # fmt: skip
    return results


def print_table(results: list[dict]) -> None:
    for r in results:
        clock = "wall ms" if r["device"].startswith("cuda") else "CPU ms"
        print(f"\n{r['device']}  {'x'.join(map(str, r['shape']))}  {r['dtype']}")
        print(f"| {'method':<44} | {clock:>9} | {'wall ms':>9} | {'x floor':>8} | {'midefend in place faster by':>27} |")
        print(f"|{'-' * 46}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 29}|")
        for name, ms in r["ms"].items():
            ratio, speed = r["ratio_to_floor"][name], r["speedup_of_midefend_inplace"][name]
            print(f"| {name:<44} | {ms:>9.3f} | {r['wall_ms'][name]:>9.3f} | {ratio:>8.1f} | {speed:>26.1f}x |")


def check_goals(results: list[dict]) -> list[str]:
    """The issue's CPU goals on 256x3x64x64 float32, in place; returns what was missed."""
    missed = []
    for r in results:
        if r["device"] != "cpu" or r["shape"] != [256, 3, 64, 64] or r["dtype"] != "float32":
            continue
        speed = r["speedup_of_midefend_inplace"]
        if speed["torchvision v2.RandomErasing, per sample"] < 10:
            missed.append(f"only {speed['torchvision v2.RandomErasing, per sample']:.1f}x faster than torchvision (goal 10x)")
        if speed["timm RandomErasing (batch, const)"] < 3:
            missed.append(f"only {speed['timm RandomErasing (batch, const)']:.1f}x faster than timm (goal 3x)")
    for r in results:
        if r["device"].startswith("cuda") and r["ratio_to_floor"]["midefend random_erase_batch, in place"] > 2:
            missed.append(f"CUDA {r['shape']} {r['dtype']}: {r['ratio_to_floor']['midefend random_erase_batch, in place']:.1f}x the floor (goal 2x)")
    return missed


START, END = "<!-- erasing-benchmark:start -->", "<!-- erasing-benchmark:end -->"
LABELS = {"speedup_of_midefend_inplace": "midefend in place faster by", "ratio_to_floor": "x floor"}


def markdown(results: list[dict], header: str) -> str:
    """The tables, between the markers, for a docs page: written by this script, never by hand."""
    lines = [START, "", header, ""]
    for r in results:
        clock = "wall ms" if r["device"].startswith("cuda") else "CPU ms"
        lines += [f"**{r['device']}, {'x'.join(map(str, r['shape']))} {r['dtype']}**", "",
                  f"| method | {clock} | x floor | midefend in place faster by |", "|---|---:|---:|---:|"]  # fmt: skip
        for name, ms in r["ms"].items():
            lines.append(f"| {name} | {ms:.3f} | {r['ratio_to_floor'][name]:.1f} | {r['speedup_of_midefend_inplace'][name]:.1f}x |")
        lines.append("")
    return "\n".join(lines + [END])


def replace_section(path: Path, section: str) -> None:
    """Put ``section`` between the markers of ``path`` (appended when they are absent), atomically."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared section writer beside this script
    from markdown_section import replace_section as write_between_markers

    write_between_markers(path, START, END, section.split("\n"))


def write_json(path: Path, payload: dict) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu, cuda (default: cpu, and cuda when present)")
    parser.add_argument("--repeats", type=int, default=20)
    # one thread by default: the contenders are single-threaded loops (as in a DataLoader worker),
    # and on an oversubscribed machine every parallel region waits for a descheduled thread
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--markdown", type=Path, default=None, help="rewrite the section between the markers of this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results = run(devices, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print_table(results)
    missed = check_goals(results)
    for line in missed:
        print(f"goal missed: {line}")
    if args.markdown:
        load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
        header = (f"`python benchmarks/erasing.py {' '.join(argv if argv is not None else sys.argv[1:])}` on "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: torch {torch.__version__}, "
                  f"{torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPUs, load average {load} "
                  f"(1/5/15 min) at the end. Medians of {args.repeats} interleaved repeats.")  # fmt: skip
        replace_section(args.markdown, markdown(results, header))
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results})
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
