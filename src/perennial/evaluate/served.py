"""Served evidence: was one model significantly worse than another on rows both of them predicted?
The rule behind the loop's rollback (a new champion against the version it replaced) and its guard
(the served line against v1 never updated)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from perennial.evaluate.metrics import Evaluation, RegressionEvaluation
from perennial.stats.paired import discordant_counts, noninferiority_pvalue, score_lower_bound
from perennial.stats.ratio import LossMoments, fieller_bounds, ratio_pvalue


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
    theirs: float = math.nan  # their accuracy on the rows, when known

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
        return {k: v for k, v in asdict(self).items() if k not in ("alpha", "theirs")} | {"worse": self.worse}

    def levels(self) -> dict:
        """Both sides' accuracy, as the served line (ours) against v1 never updated (theirs)."""
        return {"served_accuracy": self.theirs + self.diff, "static_accuracy": self.theirs}


@dataclass(frozen=True)
class ServedLossComparison:
    """A regressor's counterpart: ``Δ = 1 - loss(ours) / loss(theirs)`` (MSE) on the same rows,
    relative as the regression gate's is; ``ours`` is significantly worse when Fieller's one-sided
    ``1 - alpha`` upper bound of ``Δ`` lies below 0, which is when ``p_value`` (paired t test of
    ``H0: loss(ours) <= loss(theirs)``) is below ``alpha``.

    >>> rng = np.random.default_rng(0)
    >>> theirs = rng.chisquare(1, 500); ours = 1.3 * theirs
    >>> worse = ServedLossComparison.of(LossMoments.of(ours, theirs), alpha=0.05)
    >>> worse.worse, round(worse.diff, 3)
    (True, -0.3)
    """

    moments: LossMoments
    alpha: float
    diff: float
    upper_bound: float
    p_value: float

    @property
    def n(self) -> int:
        return self.moments.n

    @property
    def worse(self) -> bool:
        return bool(self.upper_bound < 0)

    @classmethod
    def of(cls, moments: LossMoments, alpha: float) -> ServedLossComparison:
        if moments.n < 2:
            return cls(moments, alpha, math.nan, math.nan, 1.0)
        low, _ = fieller_bounds(moments, alpha)
        # H0 "ours loses no more": the p-value that ours loses less than 1x theirs, mirrored.
        p = ratio_pvalue(
            LossMoments(moments.n, moments.sb, moments.sa, moments.sbb, moments.saa, moments.sab), 1.0
        )
        return cls(moments, alpha, 1 - moments.ratio, 1 - low, p)

    def numbers(self) -> dict:
        return {
            "diff": self.diff,
            "upper_bound": self.upper_bound,
            "p_value": self.p_value,
            "n": self.n,
            "worse": self.worse,
        }

    def levels(self) -> dict:
        return {"served_mse": self.moments.mean_a, "static_mse": self.moments.mean_b}


def paired_sums(ours: Evaluation | RegressionEvaluation, theirs: Evaluation | RegressionEvaluation) -> list:
    """What two models did on the same rows, as plain numbers that add up over windows: for
    classifiers ``[gained, lost, n, theirs correct]``, for regressors the :class:`LossMoments` of
    their squared errors."""
    if ours.task == "regression":
        return LossMoments.of(ours.losses("mse"), theirs.losses("mse")).to_list()
    gained, lost, n = discordant_counts(ours.correct, theirs.correct)
    return [gained, lost, n, int(np.sum(theirs.correct))]


def pooled_served(sums: list[list], task: str, alpha: float) -> ServedComparison | ServedLossComparison:
    """The comparison over several windows' :func:`paired_sums`."""
    if task == "regression":
        moments = LossMoments(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        for one in sums:
            moments = moments + LossMoments.from_list(one)
        return ServedLossComparison.of(moments, alpha)
    gained, lost, n, theirs = (sum(one[i] for one in sums) for i in range(4))
    comparison = ServedComparison.of_counts(gained, lost, n, alpha)
    return ServedComparison(**{**asdict(comparison), "theirs": theirs / n if n else math.nan})


def compare_served(
    ours: Evaluation | RegressionEvaluation, theirs: Evaluation | RegressionEvaluation, alpha: float
) -> ServedComparison | ServedLossComparison:
    """Was ``ours`` significantly worse than ``theirs`` on the rows both predicted?"""
    return pooled_served([paired_sums(ours, theirs)], ours.task, alpha)
