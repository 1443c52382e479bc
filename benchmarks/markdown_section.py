"""Replace one marked section of a Markdown file (the benchmark scripts write their numbers there)."""

from __future__ import annotations

import os
from pathlib import Path


def replace_section(md_path: Path, start: str, end: str, lines: list[str]) -> None:
    """Put ``lines`` (the markers included) between ``start`` and ``end`` of ``md_path``; append when absent. Atomic."""
    body = "\n".join(lines)
    text = md_path.read_text() if md_path.is_file() else "# midefend benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    tmp = md_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, md_path)
