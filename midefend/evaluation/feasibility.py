"""Check before the attack what a verify run can measure, so no metric fails after the work.

A smoke-size run (one class, one reconstruction) is a legitimate request; FID
then has no covariance to compare. Instead of a crash after minutes of attack,
such a metric is reported as *not computed*, with the reason, and classes the
private data cannot judge are refused before anything runs.

>>> fid_not_computable(1, 7)
'FID needs at least 2 reconstructions and 2 private images, got 1 and 7'
>>> fid_not_computable(8, 28) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import DataError


def fid_not_computable(n_reconstructions: int, n_private: int) -> str | None:
    """Why FID cannot be computed for these counts (a covariance needs two samples), or ``None``."""
    if n_reconstructions < 2 or n_private < 2:
        return f"FID needs at least 2 reconstructions and 2 private images, got {n_reconstructions} and {n_private}"
    return None


def check_classes_present(train: Any, classes: Sequence[int] | None, num_classes: int) -> None:
    """Every attacked class needs private training images (the grid, the KNN distance and FID use them)."""
    wanted = list(classes) if classes is not None else list(range(num_classes))
    present = set(train.labels.tolist())
    missing = [c for c in wanted if c not in present]
    if missing:
        names = [train.classes[c] if c < len(train.classes) else str(c) for c in missing[:3]]
        raise DataError(
            f"the private training data has no image of {len(missing)} attacked class(es) ({', '.join(names)}"
            f"{' ...' if len(missing) > 3 else ''}); attack other --classes or pass the full training data"
        )


def planned_notes(train: Any, classes: Sequence[int] | None, num_classes: int, per_class: int) -> dict[str, str]:
    """Metrics that will not be computed for this run's sizes: ``{metric: reason}`` (empty when all can be)."""
    wanted = set(classes) if classes is not None else set(range(num_classes))
    n_private = sum(1 for label in train.labels.tolist() if label in wanted)
    reason = fid_not_computable(len(wanted) * per_class, n_private)
    return {"fid": reason} if reason else {}


__all__ = ["check_classes_present", "fid_not_computable", "planned_notes"]
