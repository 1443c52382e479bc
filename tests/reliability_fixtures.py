"""Tiny data, checkpoints and CLI helpers for the reliability tests (bad input, resume, determinism).

Everything here is small enough for a test to build in well under a second on
one core: a folder of 16x16 grey PNGs (4 classes x 5 images), a narrow
``midefend/resnet_small`` target and a narrow ``midefend/vgg_small`` evaluation
model whose checkpoints record that folder as their data (``extra["data"]``,
the same record :func:`midefend.training.train_target` writes), so
``midefend verify TARGET --eval-model EVAL`` finds the data by itself.

The CLI helpers check the error policy of every command: exit code 1 (2 for a
usage error), exactly one line ``error: <message>`` on stderr, nothing on
stdout, no traceback, and no file left behind in the folder the command
writes to.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from midefend.architectures import build_model
from midefend.cli import app
from midefend.io.checkpoints import save_checkpoint

#: Image side the tiny checkpoints expect, and the tiny architectures.
SIZE = 16
TARGET_ARCH, TARGET_KW = "midefend/resnet_small", {"in_chans": 1, "widths": [8, 16], "depths": [1, 1]}
EVAL_ARCH, EVAL_KW = "midefend/vgg_small", {"in_chans": 1, "widths": [8, 16], "hidden": 16, "drop_rate": 0.0}

runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two OpenMP threads on a busy 2-core machine spin (40x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_image_folder(root: Path, *, classes: int = 4, per_class: int = 5, mode: str = "L", seed: int = 0) -> Path:
    """``root/c<k>/<i>.png``: 20x20 images whose brightness depends on the class (plus noise)."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for k in range(classes):
        folder = root / f"c{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.random((20, 20, channels)) * 60 + 40 * k
            array = pixels.astype(np.uint8).squeeze(-1) if channels == 1 else pixels.astype(np.uint8)
            Image.fromarray(array, mode).save(folder / f"{i}.png")
    return root


def make_checkpoint(path: Path, data: Path, *, arch: str, arch_kwargs: dict, num_classes: int = 4, seed: int = 0) -> Path:
    """A randomly initialised model (BatchNorm statistics from one batch) saved with ``data`` recorded."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=num_classes, **arch_kwargs)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, SIZE, SIZE))
    record = {"spec": str(data), "split": {"test_fraction": 0.2, "seed": 0}}
    return save_checkpoint(
        model.eval(), path, arch=arch, arch_kwargs=arch_kwargs, num_classes=num_classes,
        input_size=(1, SIZE, SIZE), mean=(0.5,), std=(0.5,), defense={"name": "nodef"}, extra={"data": record},
    )  # fmt: skip


def make_workspace(root: Path, *, classes: int = 4) -> dict[str, Path]:
    """Data folder, target and evaluation checkpoints under ``root`` (names: data, target, eval)."""
    data = make_image_folder(root / "data", classes=classes)
    target = make_checkpoint(root / "target.safetensors", data, arch=TARGET_ARCH, arch_kwargs=TARGET_KW, num_classes=classes)
    evaluator = make_checkpoint(
        root / "eval.safetensors", data, arch=EVAL_ARCH, arch_kwargs=EVAL_KW, num_classes=classes, seed=1
    )
    return {"data": data, "target": target, "eval": evaluator}


# ---------------------------------------------------------------------------------------------
# safetensors surgery: rewrite a valid file's header


def split_safetensors(path: Path) -> tuple[dict, bytes]:
    """``(header dict, tensor bytes)`` of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join_safetensors(path: Path, header: dict, data: bytes) -> Path:
    """Write ``header`` and ``data`` as a safetensors file (no validation: the point is to break it)."""
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def with_metadata(src: Path, dst: Path, change) -> Path:
    """Copy ``src`` to ``dst`` after ``change(meta_dict)`` edits its midefend metadata in place."""
    header, data = split_safetensors(src)
    meta = json.loads(header["__metadata__"]["midefend"])
    change(meta)
    header["__metadata__"]["midefend"] = json.dumps(meta)
    return join_safetensors(dst, header, data)


# ---------------------------------------------------------------------------------------------
# CLI


def invoke(*args: object):
    """Run ``midefend ARGS`` in-process (typer's CliRunner)."""
    return runner.invoke(app, [str(a) for a in args])


def files_under(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``folder`` (hidden temporary files included)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def assert_cli_error(result, message: str, *, code: int = 1) -> None:
    """Exit ``code``, one stderr line ``error: <message>`` (``message`` is a regex matched in full), no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout.strip() == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(f"error: {message}", lines[0]), lines[0]
    assert "Traceback" not in result.output


__all__ = [
    "EVAL_ARCH",
    "EVAL_KW",
    "SIZE",
    "TARGET_ARCH",
    "TARGET_KW",
    "assert_cli_error",
    "files_under",
    "invoke",
    "one_thread",
    "join_safetensors",
    "make_checkpoint",
    "make_image_folder",
    "make_workspace",
    "split_safetensors",
    "with_metadata",
]
