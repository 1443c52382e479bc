"""``midefend review``: a person judges the reconstructions of a verify run in a browser.

The pieces, one job each:

- :mod:`~midefend.review.trials`: the seeded, class-balanced forced-choice trials;
- :mod:`~midefend.review.store`: ``RUN_DIR/review/human[-NAME].json``, written atomically per answer;
- :mod:`~midefend.review.stats`: the Wilson 95 % interval;
- :mod:`~midefend.review.verdict`: the human verdict and the judges' agreement (JSON only, no torch);
- :mod:`~midefend.review.images`: the run's reconstructions and the candidates' private images (torch);
- :mod:`~midefend.review.session`: a review's trials with their images, as the page sees them;
- :mod:`~midefend.review.server`: the local HTTP server (127.0.0.1 only);
- :mod:`~midefend.review.export`: the self-contained HTML page and the import of its answers.

Only the torch-free parts are imported here, so ``human_verdict`` is cheap to call.
"""

from __future__ import annotations

from .stats import wilson_interval as wilson_interval
from .store import load_review as load_review
from .store import review_path as review_path
from .trials import Trial as Trial
from .trials import draw_trials as draw_trials
from .verdict import human_verdict as human_verdict

__all__ = ["Trial", "draw_trials", "human_verdict", "load_review", "review_path", "wilson_interval"]
