"""The README's and the docs' snippets run (so the documentation cannot drift from the code).

Every fenced ``python`` block runs in a fresh namespace, in a temporary folder. Every command block
(``bash``, ``sh``, ``console``) runs verbatim in bash, in a temporary folder laid out as the README
promises: the clone (its files linked) with ``../shared/data/orl_faces`` beside it. A block that cannot run
offline or in a few seconds (it needs a trained checkpoint, a GPU, several machines, installs packages, or
stands for the reader's own model or data) is marked right above its fence with
``<!-- snippet: skip (reason) -->`` and reported as skipped with that reason; a block that runs but takes
minutes is marked ``<!-- snippet: slow (reason) -->`` and runs with ``pytest -m slow``. A block without a
marker must run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
COMMANDS = re.compile(r"^(?P<indent>[ \t]*)```(?:bash|sh|console|shell)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
SKIP = re.compile(r"<!-- snippet: skip \((?P<reason>[^)]+)\) -->\s*$")
SLOW = re.compile(r"<!-- snippet: slow \((?P<reason>[^)]+)\) -->\s*$")


def snippets() -> list:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            skip = SKIP.search(before)
            indent = len(match.group("indent"))
            body = "\n".join(row[indent:] for row in match.group("body").splitlines())
            marks = [pytest.mark.skip(reason=f"marked in the page: {skip.group('reason')}")] if skip else []
            found.append(pytest.param(body, id=f"{page.relative_to(ROOT)}:{line}", marks=marks))
    return found


SNIPPETS = snippets()


def command_blocks() -> list:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in COMMANDS.finditer(text):
            line = text[: match.start()].count("\n") + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            indent = len(match.group("indent"))
            body = "\n".join(row[indent:] for row in match.group("body").splitlines())
            marks = []
            if SKIP.search(before):
                marks = [pytest.mark.skip(reason=f"marked in the page: {SKIP.search(before).group('reason')}")]
            elif SLOW.search(before):
                marks = [pytest.mark.slow]
            found.append(pytest.param(body, id=f"{page.relative_to(ROOT)}:{line}", marks=marks))
    return found


COMMAND_BLOCKS = command_blocks()


def _clone_beside_shared(tmp_path: Path) -> Path:
    """``tmp/midefend`` (the clone's files, linked) and ``tmp/shared/data/orl_faces`` beside it, as the README lays out."""
    import os

    clone = tmp_path / "midefend"
    clone.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {".git", ".venv", "runs"}:
            (clone / entry.name).symlink_to(entry)
    orl = os.environ.get("MIDEFEND_ORL_DIR") or str(ROOT.parent / "shared" / "data" / "orl_faces")
    if Path(orl).is_dir():
        (tmp_path / "shared" / "data").mkdir(parents=True)
        (tmp_path / "shared" / "data" / "orl_faces").symlink_to(Path(orl).resolve())
    return clone


def test_snippets_are_found():
    ids = [p.id for p in SNIPPETS]
    assert any(i.startswith("README.md:") for i in ids) and any(i.startswith("docs/erasing.md:") for i in ids)


def test_skip_marker_is_recognised_and_needs_a_reason():
    assert SKIP.search("<!-- snippet: skip (needs a GPU) -->").group("reason") == "needs a GPU"
    assert SKIP.search("<!-- snippet: skip -->") is None
    assert SLOW.search("<!-- snippet: slow (trains a model) -->").group("reason") == "trains a model"
    assert SLOW.search("<!-- snippet: slow -->") is None


def test_command_blocks_are_found_and_each_runs_or_says_why_not():
    ids = [p.id for p in COMMAND_BLOCKS]
    assert any(i.startswith("README.md:") for i in ids) and any(i.startswith("docs/verify-your-model.md:") for i in ids)


@pytest.mark.parametrize("commands", COMMAND_BLOCKS)
def test_command_block_runs_verbatim(commands, tmp_path):
    import os
    import subprocess
    import sys

    clone = _clone_beside_shared(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}
    env.pop("MIDEFEND_ORL_DIR", None)  # found beside the clone, as the README promises
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{commands}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("code", SNIPPETS)
def test_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
