"""Time the "verify your own model" path of docs/verify-your-model.md on this machine.

Runs, as a user would from a shell:

1. ``examples/harden_your_training_loop.py --quick``: a timm resnet18 trained with
   torchvision's ImageFolder on ORL (5 identities, one epoch per stage), hardened,
   saved with its class names, preprocessing and split;
2. ``midefend verify`` of that checkpoint (used as its own evaluation model here:
   this measures the wall time of the path, not a privacy result) with a small
   attack (miface, 2 classes x 2 images, 20 steps).

and writes the wall times, load average and thread count between the markers of
docs/verify-your-model.md and README.md.

    python benchmarks/verify_your_model.py          # needs $MIDEFEND_ORL_DIR
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_section import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- verify-your-model:begin -->", "<!-- verify-your-model:end -->"


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    if not os.environ.get("MIDEFEND_ORL_DIR"):
        sys.exit("set MIDEFEND_ORL_DIR to the ORL faces folder")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = Path(tempfile.mkdtemp())
    model = out / "hardened.safetensors"
    load_before = os.getloadavg()[0]
    t_train = timed([sys.executable, "examples/harden_your_training_loop.py", "--quick", "--out", str(model)], env)
    t_verify = timed(
        [sys.executable, "-m", "midefend", "verify", str(model), "--eval-model", str(model), "--attack", "miface",
         "--classes", "0-1", "--per-class", "2", "--steps", "20", "--quiet", "--out", str(out / "run")],
        env,
    )  # fmt: skip
    load_after = os.getloadavg()[0]
    lines = [
        START,
        f"Measured by `benchmarks/verify_your_model.py` on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPU cores, "
        f"torch threads {torch.get_num_threads()}, load average {load_before:.1f} before / {load_after:.1f} after (a shared machine).",
        "",
        "| step | wall time (s) |",
        "|---|---|",
        f"| train + harden + save (`examples/harden_your_training_loop.py --quick`) | {t_train:.0f} |",
        f"| `midefend verify` smoke run (miface, 2 classes x 2 images, 20 steps) | {t_verify:.0f} |",
        END,
    ]
    for path in (ROOT / "docs" / "verify-your-model.md", ROOT / "README.md"):
        replace_section(path, START, END, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
