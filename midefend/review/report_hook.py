"""Where the human verdict meets the reports: ``report.json``/``report.md`` and ``compare``.

- :func:`attach_human` is what ``verify``'s report writer calls: it adds the
  ``"human"`` key when ``RUN_DIR/review/human*.json`` holds answers.
- :func:`refresh_report` rewrites an existing run's ``report.json`` and
  ``report.md`` with the current human verdict (``midefend review`` calls it,
  so the report carries the verdict without re-running ``verify``).
- :func:`human_cell` is the one-cell summary ``compare`` shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .verdict import human_verdict

__all__ = ["attach_human", "human_cell", "refresh_report"]


def attach_human(run_dir: str | Path, report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with ``"human"`` set to the run's human verdict (unchanged when nobody reviewed)."""
    verdict = human_verdict(run_dir)
    if verdict is not None:
        report["human"] = verdict
    return report


def refresh_report(run_dir: str | Path) -> bool:
    """Rewrite ``report.json`` and ``report.md`` of ``run_dir`` with the human verdict; ``False`` when there is none."""
    from ..evaluation.reports import load_report, render_markdown
    from ..io.atomic import atomic_write_text

    run = Path(run_dir)
    verdict = human_verdict(run)
    if verdict is None:
        return False
    report = load_report(run)
    report["human"] = verdict
    atomic_write_text(run / "report.md", render_markdown(report))
    atomic_write_text(run / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    return True


def human_cell(verdict: dict[str, Any] | None) -> str:
    """``"62.5 % (95 % CI 40.6–80.0, n=16, chance 25.0 %)"`` for the strongest reviewed attack; ``"–"`` for none."""
    if not verdict or not verdict.get("attacks"):
        return "–"
    name, row = next(iter(verdict["attacks"].items()))
    low, high = row["ci95"]
    return f"{name}: {100 * row['accuracy']:.1f} % (95 % CI {100 * low:.1f}–{100 * high:.1f}, n={row['n']}, chance {100 * row['chance']:.1f} %)"
