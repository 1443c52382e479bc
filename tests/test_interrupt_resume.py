"""``midefend verify`` killed mid-run (SIGINT, SIGKILL), then rerun with ``--resume``.

The contract (``midefend.attacks.base``): every class's result is written to
``OUT/attack/class_<c>.safetensors`` (atomically) as soon as its chunk
finishes, and ``--resume`` recomputes only the chunks with a missing class,
from each class's own seeded random stream. So an interrupted run, resumed,
must end with exactly the report of an uninterrupted run with the same seed,
and must not touch the classes that were already done.

The run to interrupt is a real ``python -m midefend verify`` subprocess on a
tiny target (6 classes; one class per chunk: ``--candidates 96`` fills the
attack's 160-image batch; 40 MI-Face steps, a few tenths of a second per
class). The test waits until the first class file appears and then sends the
signal, so the kill lands between the first and the last class.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from midefend.attacks.miface import MIFaceAttack

from reliability_fixtures import one_thread  # noqa: F401  (autouse fixture)
from reliability_fixtures import invoke, make_workspace

CLASSES = 6
ATTACK = ["--attack", "miface", "--steps", "40", "--per-class", "1", "--candidates", "96", "--seed", "3", "-q"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    return make_workspace(tmp_path_factory.mktemp("resume"), classes=CLASSES)


def verify_args(ws: dict[str, Path], out: Path, *extra: str) -> list[object]:
    return ["verify", ws["target"], "--eval-model", ws["eval"], "--out", out, *ATTACK, *extra]


@pytest.fixture(scope="module")
def reference(ws) -> Path:
    """The uninterrupted run."""
    out = ws["data"].parent / "reference"
    result = invoke(*verify_args(ws, out))
    assert result.exit_code == 0, result.output
    return out


def class_files(out: Path) -> dict[int, Path]:
    return {int(p.stem.split("_")[1]): p for p in sorted((out / "attack").glob("class_*.safetensors"))}


def comparable_report(out: Path) -> dict:
    """``report.json`` without ``timing`` and the attack rows' ``seconds`` (wall-clock seconds differ from run to run)."""
    report = json.loads((out / "report.json").read_text())
    report.pop("timing")
    for row in report["attacks"]:
        row.pop("seconds")
    report["files"] = {k: Path(v).name for k, v in report["files"].items()}
    return report


def comparable_markdown(out: Path) -> list[str]:
    return [line for line in (out / "report.md").read_text().splitlines() if "wall time" not in line]


def interrupt(ws: dict[str, Path], out: Path, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Start ``midefend verify`` in a subprocess; send ``sig`` once the first class result exists."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same kernels as this process
    command = [sys.executable, "-m", "midefend", *map(str, verify_args(ws, out))]
    # A child inherits an ignored SIGINT (some library in this test process may have set SIG_IGN);
    # start it as a foreground command starts, with the default Ctrl-C behaviour.
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    try:
        while not class_files(out) if (out / "attack").is_dir() else True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"verify ended or stalled before its first class: {proc.communicate()}")
            time.sleep(0.005)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_resume_after_kill(ws, reference, tmp_path, monkeypatch, sig):
    out = tmp_path / "run"
    killed = interrupt(ws, out, sig)
    if sig == signal.SIGINT:
        # handle_errors: a Ctrl-C ends as one line and the shell's 128 + SIGINT exit code.
        assert killed.returncode == 130, killed
        assert killed.stderr.strip().splitlines()[-1] == "interrupted", killed.stderr
        assert "Traceback" not in killed.stderr
    else:
        assert killed.returncode == -signal.SIGKILL

    done = class_files(out)
    assert 1 <= len(done) < CLASSES, f"the kill did not land mid-run: {sorted(done)} of {CLASSES} classes done"
    assert not (out / "report.json").exists()
    stamps = {c: (p.stat().st_ino, p.stat().st_mtime_ns) for c, p in done.items()}

    # Record which classes the resumed run computes.
    computed: list[int] = []
    original = MIFaceAttack._attack_chunk

    def spy(self, ctx, chunk, advance):
        computed.extend(chunk)
        return original(self, ctx, chunk, advance)

    monkeypatch.setattr(MIFaceAttack, "_attack_chunk", spy)
    # what a SIGKILL during a class write leaves behind (atomic_write's temporary name)
    (out / "attack" / ".class_00000.safetensors.k1ll3d.tmp.safetensors").write_bytes(b"half a file")
    resumed = invoke(*verify_args(ws, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output

    assert sorted(computed) == sorted(set(range(CLASSES)) - set(done))
    for c, path in class_files(out).items():
        if c in done:  # not rewritten: same file (atomic_write would give a new inode), same time
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamps[c]
        ours, theirs = load_file(str(path)), load_file(str(reference / "attack" / path.name))
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), (c, key)
    assert comparable_report(out) == comparable_report(reference)
    assert comparable_markdown(out) == comparable_markdown(reference)
    assert (out / "grid.png").read_bytes() == (reference / "grid.png").read_bytes()
    # atomic_write removes its temporary on KeyboardInterrupt; a resumed run removes a killed run's
    assert [p.name for p in (out / "attack").iterdir() if p.name.startswith(".")] == []


def test_resume_after_the_disk_filled_up(ws, reference, tmp_path, monkeypatch):
    """The disk fills up while the third class is written: one line, the first two classes kept, --resume completes."""
    import errno

    import safetensors.torch

    real = safetensors.torch.save_file
    written: list[str] = []

    def save_file(tensors, filename, metadata=None):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, filename, metadata=metadata)
        written.append(filename)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(safetensors.torch, "save_file", save_file)
        result = invoke(*verify_args(ws, out))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: [Errno 28] No space left on device: '{out / 'attack' / 'class_00002.safetensors'}'"
    assert sorted(class_files(out)) == [0, 1]
    assert not [p.name for p in (out / "attack").iterdir() if p.name.startswith(".")]
    assert invoke(*verify_args(ws, out, "--resume")).exit_code == 0
    assert comparable_report(out) == comparable_report(reference)


def test_resume_after_a_damaged_class_file(ws, reference, tmp_path):
    """A class file cut short (a disk that filled up outside midefend) is recomputed, not trusted."""
    out = tmp_path / "run"
    assert invoke(*verify_args(ws, out)).exit_code == 0
    damaged = class_files(out)[2]
    damaged.write_bytes(damaged.read_bytes()[:40])
    assert invoke(*verify_args(ws, out, "--resume")).exit_code == 0
    assert torch.equal(load_file(str(damaged))["images"], load_file(str(reference / "attack" / damaged.name))["images"])
    assert comparable_report(out) == comparable_report(reference)


def test_resume_without_previous_run_is_a_full_run(ws, reference, tmp_path):
    out = tmp_path / "fresh"
    assert invoke(*verify_args(ws, out, "--resume")).exit_code == 0
    assert comparable_report(out) == comparable_report(reference)
