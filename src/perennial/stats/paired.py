"""Paired non-inferiority for the offline gate: how much worse than the champion could the candidate
be, given both were scored on the same rows? Lower confidence bounds of the difference, the
matching p-values, and the smallest drop a set of rows can tell apart from no change.

The difference is ``Δ = metric(candidate) - metric(champion)``. For accuracy only the discordant
rows carry information: ``gained`` rows the candidate gets right and the champion wrong, ``lost``
rows the reverse, so ``Δ = (gained - lost) / n``.

A regressor's per-row losses compare as a ratio: ``perennial.stats.ratio``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

from perennial.stats._checks import check_alpha

# Bisection steps for the score bound: 2**-50 of the unit interval, far below any reported digit.
_BISECTION_STEPS = 50
# Probability below which (gained, lost) outcomes are left out of the power sum.
_TAIL = 1e-8


def discordant_counts(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> tuple[int, int, int]:
    """``(gained, lost, n)`` from per-row outcomes of the two models on the same rows.

    >>> discordant_counts(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 1, 1], bool))
    (1, 2, 5)
    """
    cand, champ = np.asarray(candidate_correct, bool), np.asarray(champion_correct, bool)
    if cand.shape != champ.shape or cand.ndim != 1:
        raise ValueError(
            f"candidate and champion outcomes must be 1-D and of one length, got shapes "
            f"{cand.shape} and {champ.shape}"
        )
    return int(np.sum(cand & ~champ)), int(np.sum(champ & ~cand)), len(cand)


def score_statistic(delta0: float | np.ndarray, gained, lost, n) -> np.ndarray:
    """Tango's (1998) score statistic for ``H0: Δ = delta0`` on paired proportions: large and
    positive when the observed difference lies well above ``delta0``.

    The variance is taken at the maximum-likelihood cell probabilities constrained to ``Δ = delta0``,
    which is what keeps the interval honest when few rows disagree. At ``delta0 = 0`` it is the
    (uncorrected) McNemar statistic ``(gained - lost) / sqrt(gained + lost)``.

    >>> float(score_statistic(0.0, 30, 10, 800)) == 20 / 40**0.5
    True
    """
    d = np.asarray(delta0, dtype=np.float64)
    g, lo, n = (np.asarray(v, dtype=np.float64) for v in (gained, lost, n))
    # Constrained MLE of P(lost) under P(gained) - P(lost) = d: the root of 2n p^2 + B p + C = 0.
    a = 2 * n
    b = -g - lo + (2 * n - g + lo) * d
    c = -lo * d * (1 - d)
    root = np.sqrt(np.maximum(b * b - 4 * a * c, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        # Two algebraically equal forms; each avoids the cancellation the other suffers.
        p_lost = np.where(b > 0, -2 * c / (b + root), (-b + root) / (2 * a))
        p_lost = np.nan_to_num(p_lost, nan=0.0)
        variance = n * (2 * p_lost + d * (1 - d))
        numerator = g - lo - n * d
        scaled = numerator / np.sqrt(np.maximum(variance, 1e-300))
        t = np.where(variance > 0, scaled, np.sign(numerator) * np.inf)
    return np.where((variance <= 0) & (numerator == 0), 0.0, t)


def score_lower_bound(gained, lost, n, alpha: float = 0.05) -> np.ndarray | float:
    """One-sided ``1 - alpha`` lower confidence bound of ``Δ`` from Tango's score test: the
    smallest ``delta0`` the test at level ``alpha`` does not reject in favour of ``Δ > delta0``.
    Vectorised over arrays of counts.

    >>> round(float(score_lower_bound(0, 0, 73)), 4)  # two models that never disagree, 73 rows
    -0.0357
    >>> round(float(score_lower_bound(40, 40, 800)), 4)  # equal, 10% of 800 rows discordant
    -0.0186
    """
    check_alpha(alpha)
    z = stats.norm.isf(alpha)
    g, lo, n = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (gained, lost, n)))
    estimate = (g - lo) / np.where(n > 0, n, np.nan)
    # T decreases in delta0 on (-1, estimate], from +inf to 0: bisect for T = z.
    low, high = np.full(g.shape, -1.0), np.nan_to_num(estimate, nan=-1.0)
    for _ in range(_BISECTION_STEPS):
        mid = (low + high) / 2
        above = score_statistic(mid, g, lo, n) > z
        low, high = np.where(above, mid, low), np.where(above, high, mid)
    bound = np.where(lo >= n, -1.0, (low + high) / 2)
    bound = np.where(n > 0, bound, np.nan)
    return float(bound) if bound.ndim == 0 else bound


def noninferiority_pvalue(gained, lost, n, margin: float) -> np.ndarray | float:
    """Score-test p-value for ``H0: Δ <= -margin`` (the candidate is worse by the margin or more)
    against ``Δ > -margin``. It is below ``alpha`` exactly when :func:`score_lower_bound` is above
    ``-margin``.

    >>> round(float(noninferiority_pvalue(40, 40, 800, 0.02)), 3)
    0.039
    """
    p = stats.norm.sf(score_statistic(-margin, gained, lost, n))
    return float(p) if np.ndim(p) == 0 else p


def min_detectable_drop(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest accuracy drop that ``n`` paired rows tell apart from no change: the smallest
    margin at which a candidate *exactly as accurate as the champion*, disagreeing with it on a
    share ``discordance`` of rows, has its score lower bound above ``-margin`` (and so passes the
    gate) with probability ``power``. Exact: the sum runs over every (gained, lost) outcome.

    A tolerance below it rejects most equal candidates; a drop of this size is promoted at most
    ``alpha`` of the time. More rows or a wider tolerance are the only cures.

    >>> round(min_detectable_drop(800, 0.10), 3)
    0.028
    >>> round(min_detectable_drop(73, 0.15), 3)
    0.117
    """
    check_alpha(alpha)
    check_alpha(power, "power")
    if n <= 0:
        return float("nan")
    if not 0 <= discordance <= 1:
        raise ValueError(f"discordance must be in [0, 1], got {discordance!r}")
    # Discordant rows m ~ Binomial(n, discordance); given m, lost ~ Binomial(m, 1/2) when equal.
    m = np.arange(stats.binom.ppf(_TAIL, n, discordance), stats.binom.isf(_TAIL, n, discordance) + 1)
    first = stats.binom.ppf(_TAIL, m, 0.5).astype(int)
    count = stats.binom.isf(_TAIL, m, 0.5).astype(int) + 1 - first
    total = np.repeat(m.astype(int), count)
    # lost runs from first[i] to first[i] + count[i] - 1 within each block of equal total
    lost = np.repeat(first - np.cumsum(count) + count, count) + np.arange(count.sum())
    weight = np.repeat(stats.binom.pmf(m, n, discordance), count) * stats.binom.pmf(lost, total, 0.5)
    needed = -np.asarray(score_lower_bound(total - lost, lost, n, alpha))
    order = np.argsort(needed, kind="stable")
    reached = np.cumsum(weight[order]) / weight.sum()
    return float(needed[order][np.searchsorted(reached, power)])


def normal_min_detectable_drop(standard_error: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """:func:`min_detectable_drop` for a difference with a roughly normal estimate of known
    ``standard_error`` (a bootstrap's spread): ``(z[1 - alpha] + z[power]) * standard_error``.

    >>> round(normal_min_detectable_drop(0.01), 4)
    0.0249
    """
    check_alpha(alpha)
    check_alpha(power, "power")
    return float((stats.norm.isf(alpha) + stats.norm.ppf(power)) * standard_error)


def paired_bootstrap_differences(
    difference: Callable[[np.ndarray], float], n: int, samples: int = 2000, seed: int = 0
) -> np.ndarray:
    """``difference(rows)`` on ``samples`` resamples of ``n`` rows drawn with replacement. Rows
    are resampled in pairs (one index for both models), so the correlation between them is kept.

    >>> diff = np.r_[np.zeros(90), -np.ones(10)]
    >>> d = paired_bootstrap_differences(lambda rows: diff[rows].mean(), 100, samples=500)
    >>> round(float(np.mean(d)), 2)
    -0.1
    """
    if samples < 1:
        raise ValueError(f"bootstrap samples must be >= 1, got {samples}")
    if n <= 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    return np.array([difference(rows) for rows in rng.integers(0, n, size=(samples, n))], dtype=np.float64)


def accuracy_bootstrap_differences(
    candidate_correct: np.ndarray, champion_correct: np.ndarray, samples: int = 2000, seed: int = 0
) -> np.ndarray:
    """:func:`paired_bootstrap_differences` of the accuracy difference, vectorised."""
    diff = np.asarray(candidate_correct, float) - np.asarray(champion_correct, float)
    if samples < 1:
        raise ValueError(f"bootstrap samples must be >= 1, got {samples}")
    if len(diff) == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    return diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(1)


def bootstrap_lower_bound(differences: np.ndarray, alpha: float = 0.05) -> float:
    """The ``alpha`` percentile of bootstrap differences: a one-sided ``1 - alpha`` lower bound.
    A resample where the metric is undefined (NaN: one class only) counts as the worst case, so
    it can only hold a candidate back.

    >>> bootstrap_lower_bound(np.arange(100) / 100, 0.05)
    0.04
    """
    check_alpha(alpha)
    d = np.nan_to_num(np.asarray(differences, np.float64), nan=-np.inf)
    if len(d) == 0:
        return float("nan")
    # "inverted_cdf" makes the bound and bootstrap_noninferiority_pvalue agree exactly.
    return float(np.quantile(d, alpha, method="inverted_cdf"))


def bootstrap_noninferiority_pvalue(differences: np.ndarray, margin: float) -> float:
    """Share of bootstrap differences at or below ``-margin``: below ``alpha`` exactly when
    :func:`bootstrap_lower_bound` is above ``-margin``. NaN resamples count at or below it.

    >>> bootstrap_noninferiority_pvalue(np.arange(100) / 100, -0.04)
    0.05
    """
    d = np.nan_to_num(np.asarray(differences, np.float64), nan=-np.inf)
    return float(np.mean(d <= -margin)) if len(d) else 1.0


def mean_lower_bound(differences: np.ndarray, alpha: float = 0.05) -> float | np.ndarray:
    """A one-sided ``1 - alpha`` lower bound of the mean of paired per-unit ``differences``, for a metric
    averaged over units (each user's NDCG under the candidate minus under the champion): Student's t
    with Hall's (1992) correction for left skewness. Per-user differences of a harmful candidate lean
    left (a few users lose a lot, most lose nothing), which makes the plain t bound too high: at the
    margin it promoted 8 to 10% of the time at alpha 5% (docs/benchmarks.md, "Session gate"). The
    correction is applied to left skew only, so it can only hold a candidate back: on symmetric
    differences the sample skewness is noise, and correcting for a positive one made the test liberal
    (7 to 10% in simulation). Hall's cubic transformation of the studentised mean is monotone, so the
    bound and :func:`mean_noninferiority_pvalue` agree exactly. Rows of a 2-D array are separate
    samples. NaN with fewer than 2 units; with no spread at all, the mean itself.

    >>> round(float(mean_lower_bound(np.array([0.1, 0.3, 0.2, 0.0, 0.4]))), 4)  # symmetric: plain t
    0.0493
    """
    check_alpha(alpha)
    d = _differences(differences)
    n = d.shape[-1]
    if n < 2:
        return _shaped(d, np.nan)
    mean, sd, gamma = _moments(d)
    # Solve T(w) = t / sqrt(n) for w: T(w) = ((1 + g w / 3)^3 - 1) / g + g / (6 n).
    x = stats.t.isf(alpha, n - 1) / np.sqrt(n) - gamma / (6 * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(np.abs(gamma) > 1e-12, 3 * (np.cbrt(1 + gamma * x) - 1) / gamma, x)
    bound = np.where(sd > 0, mean - w * sd, mean)
    return float(bound) if bound.ndim == 0 else bound


def mean_noninferiority_pvalue(differences: np.ndarray, margin: float) -> float | np.ndarray:
    """One-sided p-value of ``H0: mean difference <= -margin``, Student's t with Hall's skewness
    correction (:func:`mean_lower_bound`): below ``alpha`` exactly when the bound is above ``-margin``.
    Rows of a 2-D array are separate samples. 1.0 with fewer than 2 units.

    >>> round(float(mean_noninferiority_pvalue(np.array([0.1, 0.3, 0.2, 0.0, 0.4]), margin=0.0)), 4)
    0.0237
    >>> skewed = np.array([0.02] * 9 + [-0.15])  # one user lost a lot
    >>> round(float(mean_noninferiority_pvalue(skewed, margin=0.01)), 3), round(float(stats.ttest_1samp(
    ...     skewed, -0.01, alternative="greater").pvalue), 3)  # corrected, plain
    (0.31, 0.232)
    """
    d = _differences(differences)
    n = d.shape[-1]
    if n < 2:
        return _shaped(d, 1.0)
    mean, sd, gamma = _moments(d)
    gap = mean + margin
    with np.errstate(divide="ignore", invalid="ignore"):
        w = gap / sd
        hall = w + gamma * w**2 / 3 + gamma**2 * w**3 / 27 + gamma / (6 * n)
        p = np.where(sd > 0, stats.t.sf(np.sqrt(n) * hall, n - 1), np.where(gap > 0, 0.0, 1.0))
    return float(p) if p.ndim == 0 else p


def _moments(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample standard deviation and left skewness (third central moment over sd cubed, or 0
    when it is positive) of each row."""
    mean = d.mean(-1)
    sd = d.std(-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(sd > 0, ((d - mean[..., None]) ** 3).mean(-1) / sd**3, 0.0)
    return mean, sd, np.minimum(gamma, 0.0)


def _shaped(d: np.ndarray, value: float) -> float | np.ndarray:
    return value if d.ndim == 1 else np.full(d.shape[:-1], value)


def _differences(differences: np.ndarray) -> np.ndarray:
    d = np.asarray(differences, np.float64)
    if d.ndim not in (1, 2):
        raise ValueError(f"paired differences must be 1-D (or 2-D: one sample a row), got shape {d.shape}")
    if not np.isfinite(d).all():
        bad = d[~np.isfinite(d)][0]
        raise ValueError(f"paired differences must be finite numbers, got {bad!r}")
    return d
