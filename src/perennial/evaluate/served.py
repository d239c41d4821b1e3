"""Served evidence: was one model significantly worse than another on rows both of them predicted?
The rule behind the loop's rollback (a new champion against the version it replaced) and its guard
(the served line against v1 never updated)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from perennial.stats.paired import discordant_counts, noninferiority_pvalue, score_lower_bound


@dataclass(frozen=True)
class ServedComparison:
    """``Δ = accuracy(ours) - accuracy(theirs)`` on the same ``n`` rows; ``ours`` is significantly
    worse when the one-sided ``1 - alpha`` upper confidence bound of ``Δ`` (Tango's score interval)
    lies below 0, which is when ``p_value`` (of ``H0: Δ >= 0``) is below ``alpha``.

    >>> worse = ServedComparison.of_counts(gained=10, lost=40, n=500, alpha=0.05)
    >>> worse.worse, round(worse.diff, 3), worse.upper_bound < 0
    (True, -0.06, True)
    >>> ServedComparison.of_counts(gained=20, lost=30, n=500, alpha=0.05).worse
    False
    """

    gained: int  # rows ours gets right and theirs wrong
    lost: int  # rows theirs gets right and ours wrong
    n: int
    alpha: float
    diff: float
    upper_bound: float
    p_value: float

    @property
    def worse(self) -> bool:
        return bool(self.upper_bound < 0)

    @classmethod
    def of_counts(cls, gained: int, lost: int, n: int, alpha: float) -> ServedComparison:
        if n <= 0:
            nan = float("nan")
            return cls(gained, lost, n, alpha, nan, nan, 1.0)
        # The upper bound of Δ is minus the lower bound of -Δ, whose gained and lost rows swap.
        upper = -float(score_lower_bound(lost, gained, n, alpha))
        p = float(noninferiority_pvalue(lost, gained, n, 0.0))
        return cls(int(gained), int(lost), int(n), alpha, (gained - lost) / n, upper, p)

    @classmethod
    def of(cls, ours_correct: np.ndarray, theirs_correct: np.ndarray, alpha: float) -> ServedComparison:
        return cls.of_counts(*discordant_counts(ours_correct, theirs_correct), alpha)

    def numbers(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "alpha"} | {"worse": self.worse}
