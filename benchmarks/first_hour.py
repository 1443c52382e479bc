"""Time README command 1 (set up + ``midefend demo``) on a fresh clone, as a newcomer runs it.

    python benchmarks/first_hour.py                      # clone this checkout into a temporary folder, run, write
    python benchmarks/first_hour.py --no-write           # measure only

1. ``git clone`` this repository's committed HEAD into ``TMP/midefend`` (a fresh clone: no virtual environment,
   no build, nothing cached by midefend);
2. take README command 1 *verbatim* from the README's first command block and run it there with ``bash``, in an
   environment without this process's virtual environment or ``PYTHONPATH``;
3. sample the load average every 5 s while it runs (the machine may be shared: the numbers say so);
4. write the wall time, the install and demo shares and the load into the README (between the
   ``first-hour`` markers), and the demo's full output into ``docs/demo.md`` (between the ``demo-output``
   markers), both atomically.

The demo's own log stamps its stages (``[   12 s] ...``); its last stamp is the demo's time, the rest of the
wall time is the installs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_section import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README_START, README_END = "<!-- first-hour:start -->", "<!-- first-hour:end -->"
DEMO_START, DEMO_END = "<!-- demo-output:start -->", "<!-- demo-output:end -->"


def readme_command_1(readme: Path) -> str:
    """The line after ``# 1.`` in the README's first ``bash`` block, verbatim."""
    block = re.search(r"```bash\n(.*?)```", readme.read_text(), re.S)
    if block is None:
        raise SystemExit("README.md has no bash block")
    lines = block.group(1).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# 1."):
            return lines[i + 1]
    raise SystemExit("README.md's first bash block has no '# 1.' command")


class LoadSampler(threading.Thread):
    def __init__(self, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self._stop_event = every, [os.getloadavg()[0]], threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join()
        return self.samples


def run(workdir: Path, command: str, log: Path) -> dict:
    clone = workdir / "midefend"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "MIDEFEND_ORL_DIR", "PYTHONHOME"}}
    venv_bin = os.environ.get("VIRTUAL_ENV")
    if venv_bin:  # the caller's venv off PATH: the command must make its own
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv_bin))
    env["COLUMNS"] = "120"
    before = os.getloadavg()
    sampler = LoadSampler()
    sampler.start()
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, stdout=handle, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    samples = sampler.stop()
    output = log.read_text()
    stamps = [int(s) for s in re.findall(r"^\[\s*(\d+) s\]", output, re.M)]
    demo = stamps[-1] if stamps else None
    return {"returncode": done.returncode, "wall_s": wall, "demo_s": demo, "load_before": before, "load_max": max(samples),
            "load_mean": sum(samples) / len(samples), "output": output, "command": command}  # fmt: skip


def demo_output(output: str) -> str:
    """The demo's part of the log: from its first stamped line to the end."""
    lines = output.splitlines()
    first = next((i for i, line in enumerate(lines) if re.match(r"^\[\s*\d+ s\]", line)), 0)
    return "\n".join(lines[first:]).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="Measure only; do not touch README.md and docs/demo.md.")
    parser.add_argument("--note", default="", help="A sentence about the machine (e.g. who else ran on it).")
    args = parser.parse_args(argv)
    command = readme_command_1(ROOT / "README.md")
    with tempfile.TemporaryDirectory(prefix="midefend-first-hour-") as tmp:
        result = run(Path(tmp), command, Path(tmp) / "command1.log")
    print(result["output"][-4000:])
    minutes = result["wall_s"] / 60
    load = f"load average {result['load_before'][0]:.1f} before, {result['load_mean']:.1f} on average and {result['load_max']:.1f} at most while it ran"
    shares = ""
    if result["demo_s"] is not None:
        shares = f" (installs and start-up {result['wall_s'] - result['demo_s']:.0f} s, then the demo's stages {result['demo_s']:.0f} s)"
    status = "" if result["returncode"] == 0 else f" — it FAILED with exit code {result['returncode']}"
    sentence = (f"Measured by `benchmarks/first_hour.py` on a fresh clone ({time.strftime('%Y-%m-%d')}, 2-core CPU machine): "
                f"command 1 took **{minutes:.1f} min**{shares}; {load}{status}.{(' ' + args.note) if args.note else ''}")  # fmt: skip
    print(sentence)
    if not args.no_write:
        replace_section(ROOT / "README.md", README_START, README_END, [README_START, sentence, README_END])
        body = ["```text", f"$ {result['command'].split('&&')[-1].strip()}", demo_output(result["output"]), "```"]
        replace_section(ROOT / "docs" / "demo.md", DEMO_START, DEMO_END, [DEMO_START, *body, DEMO_END])
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
