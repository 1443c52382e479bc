"""The binomial confidence interval of a human accuracy (Wilson score interval, 95 % by default).

A reviewer answers ``n`` forced-choice trials and gets ``k`` right; with ``K``
candidates the chance level is ``1/K``. The Wilson score interval for the
proportion ``p̂ = k/n`` at the normal quantile ``z`` (1.959964 for 95 %) is

    centre ± half = (p̂ + z²/2n ± z·sqrt(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n)

It stays inside [0, 1], is sensible at ``k = 0`` and ``k = n`` (where the
normal "Wald" interval collapses to a point), and its coverage is close to the
nominal 95 % even for the 20-60 trials of a ten-minute review. It is what
``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` returns.

>>> lo, hi = wilson_interval(7, 10)
>>> round(lo, 4), round(hi, 4)
(0.3968, 0.8922)
>>> wilson_interval(0, 0)
(0.0, 1.0)
"""

from __future__ import annotations

import math

__all__ = ["Z95", "wilson_interval"]

#: The 97.5 % quantile of the standard normal distribution (two-sided 95 %).
Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, *, z: float = Z95) -> tuple[float, float]:
    """``(low, high)``: the Wilson score interval of ``successes / trials``; ``(0, 1)`` for no trials."""
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denom = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
