"""dlib's face judge on ORL: leave-one-out nearest identity, aligned chips vs centre crops, and the fallbacks.

    MIDEFEND_ORL_DIR=../shared/data/orl_faces python benchmarks/dlib_judge.py

Through the public API (``load_recogniser("dlib")``, ``load_dlibface(align=False)``) on all 400 ORL faces,
in two framings: the whole 92×112 frames, and the 64×64 face-box crops midefend's ORL targets train on
(``load_orl``'s crop: the private gallery ``verify`` judges against). For each: LOO accuracy with aligned
chips, the images that fell back to the centre crop, and LOO with centre crops only. Writes
``benchmarks/results/dlib_judge.json`` (atomically) and the table in docs/judges.md between its markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from markdown_section import replace_section  # noqa: E402

START, END = "<!-- dlib-judge:start -->", "<!-- dlib-judge:end -->"


def orl_frames(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All 400 ORL faces as whole 92×112 grey frames in [0, 1], identities s1 -> 0 ... s40 -> 39."""
    from PIL import Image

    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    images, labels = [], []
    for label, folder in enumerate(folders):
        for file in sorted(folder.glob("*.pgm"), key=lambda p: int(p.stem)):
            images.append(torch.from_numpy(np.asarray(Image.open(file), dtype=np.float32) / 255.0))
            labels.append(label)
    return torch.stack(images)[:, None], torch.tensor(labels)


def face_box_crops(frames: torch.Tensor, size: int = 64) -> torch.Tensor:
    """The frames cut to ``ORL_FACE_BOX`` and resized to ``size`` (the framing of midefend's ORL targets)."""
    from midefend.data.orl import ORL_FACE_BOX

    left, top, right, bottom = ORL_FACE_BOX
    return F.interpolate(frames[:, :, top:bottom, left:right], size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def measure(judge: Any, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from midefend.evaluation.identity import leave_one_out_accuracy

    wall, cpu = time.perf_counter(), time.process_time()
    embeddings = judge.embed(images)
    aligned = judge.aligned(images)
    return {
        "loo": round(leave_one_out_accuracy(embeddings, labels), 4),
        "fallbacks": int((~aligned).sum()),
        "images": int(images.shape[0]),
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
    }


def render(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    lines = [
        START,
        "| ORL images (all 400, 40 people) | aligned chips: LOO | fallbacks (no face found) | centre crops only: LOO |",
        "|---|---|---|---|",
    ]
    for key, label in (("frames", "whole 92×112 frames"), ("crops64", "64×64 face-box crops (the targets' framing)")):
        a, c = results[key]["aligned"], results[key]["centre"]
        lines.append(f"| {label} | {a['loo']:.4f} | {a['fallbacks']} / {a['images']} | {c['loo']:.4f} |")
    lines += [
        "",
        f"Leave-one-out nearest identity (l2 between 128-d embeddings, `leave_one_out_accuracy`); chance 9/399 = 0.0226. "
        f"Aligned embedding of 400 frames: {results['frames']['aligned']['wall_s']} s wall, {results['frames']['aligned']['cpu_s']} s CPU "
        f"(dlib {results['dlib']}, {m['cpu']}, load average {m['loadavg'][0]} on {m['cores']} cores). "
        "Written by `benchmarks/dlib_judge.py`.",
        END,
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orl", type=Path, default=Path(os.environ.get("MIDEFEND_ORL_DIR", HERE.parent.parent / "shared" / "data" / "orl_faces")))
    parser.add_argument("--json", type=Path, default=HERE / "results" / "dlib_judge.json")
    parser.add_argument("--doc", type=Path, default=HERE.parent / "docs" / "judges.md")
    args = parser.parse_args(argv)

    import dlib

    from midefend.dlibface import load_dlibface
    from midefend.evaluation import load_recogniser
    from midefend.io.atomic import atomic_write_text

    frames, labels = orl_frames(args.orl)
    results: dict[str, Any] = {"dlib": dlib.__version__}
    for key, images in (("frames", frames), ("crops64", face_box_crops(frames))):
        results[key] = {"aligned": measure(load_recogniser("dlib"), images, labels), "centre": measure(load_dlibface(align=False), images, labels)}
        print(key, results[key], flush=True)
    results["machine"] = {"loadavg": [round(v, 2) for v in os.getloadavg()], "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")
    replace_section(args.doc, START, END, render(results))
    print(f"wrote {args.json} and {args.doc}")


if __name__ == "__main__":
    main()
