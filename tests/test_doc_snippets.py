"""The README's and the docs' Python snippets run (so the documentation cannot drift from the code).

Every fenced ``python`` block runs in a fresh namespace, in a temporary folder. A block that cannot run
offline or in a few seconds (it needs a trained checkpoint, a data set, a GPU, or stands for the reader's
own model) is marked right above its fence with ``<!-- snippet: skip (reason) -->`` and reported as
skipped with that reason; a block without the marker must run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
SKIP = re.compile(r"<!-- snippet: skip \((?P<reason>[^)]+)\) -->\s*$")


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


def test_snippets_are_found():
    ids = [p.id for p in SNIPPETS]
    assert any(i.startswith("README.md:") for i in ids) and any(i.startswith("docs/erasing.md:") for i in ids)


def test_skip_marker_is_recognised_and_needs_a_reason():
    assert SKIP.search("<!-- snippet: skip (needs a GPU) -->").group("reason") == "needs a GPU"
    assert SKIP.search("<!-- snippet: skip -->") is None


@pytest.mark.parametrize("code", SNIPPETS)
def test_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
