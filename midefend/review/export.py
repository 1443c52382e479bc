"""A review as one self-contained HTML file, and the import of the answers it downloads.

``midefend review RUN --export page.html`` writes the page with its script,
style and every image inlined (``data:`` URIs): it can be mailed to a reviewer
and opened offline. It holds the same trials as ``RUN/review/human[-NAME].json``
(which the export creates when missing) and, like the served page, no class
index: candidates are slots, trials opaque ids. The reviewer's answers stay in
the page (and the browser's local storage) until they press "Download answers";
``midefend review RUN --import answers.json`` adds that file to the run.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io.atomic import atomic_write_text
from .server import static_text
from .session import ReviewSession
from .store import ReviewFile, save_review

__all__ = ["ANSWERS_FORMAT", "export_html", "import_answers", "review_key"]

ANSWERS_FORMAT = "midefend-review-answers"


def review_key(review: ReviewFile) -> str:
    """A short name of the trial list (the first trial id and the count): answers must come back to the same list."""
    return f"{review.trials[0].id}-{len(review.trials)}" if review.trials else "empty"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def export_html(session: ReviewSession, path: str | Path) -> Path:
    """Write the review page with everything inlined to ``path`` (atomically)."""
    trials: list[dict[str, Any]] = []
    for number in range(len(session.review.trials)):
        payload = session.trial_payload(number)
        trials.append({
            "id": payload["id"],
            "reconstruction": _data_uri(session.image(payload["reconstruction"][4:]) or b""),
            "candidates": [{"slot": c["slot"], "images": [_data_uri(session.image(u[4:]) or b"") for u in c["images"]]} for c in payload["candidates"]],
        })  # fmt: skip
    data = {"review": review_key(session.review), "k": session.review.k, "trials": trials}
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = static_text("index.html")
    page = page.replace('<link rel="stylesheet" href="app.css">', "<style>\n" + static_text("app.css") + "</style>")
    script = static_text("app.js").replace("</", "<\\/")
    page = page.replace('<script src="app.js"></script>', f"<script>window.MIDEFEND_REVIEW = {blob};</script>\n<script>\n{script}</script>")
    return atomic_write_text(path, page)


def import_answers(review: ReviewFile, answers_path: str | Path) -> int:
    """Add the answers downloaded from an exported page to ``review`` and save it; returns how many were added.

    Raises:
        DataError: the file is not readable answers, or belongs to another trial list.
    """
    p = Path(answers_path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"answers {str(p)!r} are not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") != ANSWERS_FORMAT or not isinstance(data.get("answers"), dict):
        raise DataError(f"{str(p)!r} is not a file of answers downloaded from an exported review page")
    if data.get("review") != review_key(review):
        raise DataError(f"answers {str(p)!r} belong to another trial list ({data.get('review')!r}, this review is {review_key(review)!r}); import with the --reviewer the page was exported for")
    for trial_id, slot in data["answers"].items():
        if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int)):
            raise DataError(f"answers {str(p)!r}: the answer to trial {trial_id!r} is {slot!r}, not a slot number or null")
        review.answer(str(trial_id), slot)
    save_review(review)
    return len(data["answers"])
