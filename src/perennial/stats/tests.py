"""Fixed-horizon two-sample tests (z, Welch, Mann-Whitney), multiple-testing corrections across
candidates (Holm, Benjamini-Hochberg) and CUPED variance reduction, for analysing a rollout once.

Throughout, arm ``a`` is the control (the champion) and arm ``b`` the treatment (a candidate):
effects are treatment minus control, and ``alternative="larger"`` means "the treatment is larger".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import stats

from perennial.stats._checks import check_alpha, check_choice, check_sample
from perennial.stats.corrections import adjust_pvalues

ALTERNATIVES = ("two-sided", "larger", "smaller")


@dataclass(frozen=True)
class TestResult:
    """The outcome of one fixed-horizon test.

    ``effect`` is treatment minus control (difference in proportions or in means; for
    ``mann_whitney`` the common-language effect size, see there). ``ci_low``/``ci_high`` bound the
    effect with confidence ``1 - alpha``; for a one-sided alternative the interval is one-sided too
    (``larger``: ``(low, inf)``, ``smaller``: ``(-inf, high)``), the side the test rejects on. ``n`` is
    the sample size of each arm, control first.
    """

    __test__ = False  # not a pytest test class, despite the name

    test: str
    statistic: float
    p_value: float
    effect: float
    ci_low: float
    ci_high: float
    n: tuple[int, ...]
    alternative: str


def _check_counts(successes: int, n: int, arm: str) -> tuple[int, int]:
    for name, value in ((f"successes_{arm}", successes), (f"n_{arm}", n)):
        if isinstance(value, bool) or not float(value).is_integer():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if n == 0:
        raise ValueError(f"n_{arm} must be >= 1, got 0")
    if successes > n:
        raise ValueError(f"successes_{arm} must be <= n_{arm} = {n}, got {successes}")
    return int(successes), int(n)


class _Distribution(Protocol):
    """A frozen scipy distribution: the normal, or Student's t with its degrees of freedom."""

    def sf(self, x: float) -> float: ...
    def cdf(self, x: float) -> float: ...
    def isf(self, q: float) -> float: ...


def _p_value(statistic: float, alternative: str, dist: _Distribution) -> float:
    if alternative == "larger":
        return float(dist.sf(statistic))
    if alternative == "smaller":
        return float(dist.cdf(statistic))
    return float(min(1.0, 2 * dist.sf(abs(statistic))))


def _interval(
    effect: float, se: float, alpha: float, alternative: str, dist: _Distribution
) -> tuple[float, float]:
    """``effect`` plus or minus the critical value of ``dist`` times ``se``; one-sided when the
    alternative is."""
    if alternative == "two-sided":
        half = float(dist.isf(alpha / 2)) * se
        return effect - half, effect + half
    half = float(dist.isf(alpha)) * se
    return (effect - half, math.inf) if alternative == "larger" else (-math.inf, effect + half)


# --- fixed-horizon tests ----------------------------------------------------------------------


def two_proportion_ztest(
    successes_a: int,
    n_a: int,
    successes_b: int,
    n_b: int,
    alternative: str = "two-sided",
    alpha: float = 0.05,
) -> TestResult:
    """Two-sample z-test for conversion rates (control ``a``, treatment ``b``).

    The statistic uses the pooled variance under the null, as statsmodels' ``proportions_ztest``
    computes it; the confidence interval for ``p_b - p_a`` uses the unpooled (Wald) standard
    error, as ``confint_proportions_2indep(method="wald")`` does. When both arms are all failures
    or all successes there is no variance and no evidence: statistic 0, p-value 1.

    >>> r = two_proportion_ztest(100, 1000, 130, 1000)
    >>> round(r.effect, 3), round(r.statistic, 2), round(r.p_value, 4)
    (0.03, 2.1, 0.0355)
    >>> round(r.ci_low, 4), round(r.ci_high, 4)
    (0.0021, 0.0579)
    """
    successes_a, n_a = _check_counts(successes_a, n_a, "a")
    successes_b, n_b = _check_counts(successes_b, n_b, "b")
    check_choice(alternative, "alternative", ALTERNATIVES)
    alpha = check_alpha(alpha)
    p_a, p_b = successes_a / n_a, successes_b / n_b
    effect = p_b - p_a
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    statistic = effect / se_null if se_null > 0 else 0.0
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    low, high = _interval(effect, se, alpha, alternative, stats.norm)
    return TestResult(
        "two_proportion_z",
        statistic,
        _p_value(statistic, alternative, stats.norm),
        effect,
        low,
        high,
        (n_a, n_b),
        alternative,
    )


def welch_ttest(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    alternative: str = "two-sided",
    alpha: float = 0.05,
) -> TestResult:
    """Welch's t-test for the difference of means ``mean(b) - mean(a)``, not assuming equal
    variances: the p-value of ``scipy.stats.ttest_ind(b, a, equal_var=False)`` and the
    Welch–Satterthwaite confidence interval (statsmodels' ``CompareMeans.tconfint_diff`` with
    ``usevar="unequal"``). Each arm needs 2 values. When both arms are constant the standard error
    is 0: the statistic is 0 (equal means, p = 1) or ±inf (p = 0) and the interval is the point.

    >>> r = welch_ttest([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0, 6.0])
    >>> round(r.effect, 2), round(r.statistic, 3), round(r.p_value, 3), r.n
    (1.5, 1.567, 0.161, (4, 5))
    """
    a, b = check_sample(a, "a", 2), check_sample(b, "b", 2)
    check_choice(alternative, "alternative", ALTERNATIVES)
    alpha = check_alpha(alpha)
    n_a, n_b = len(a), len(b)
    effect = float(b.mean() - a.mean())
    var_a, var_b = a.var(ddof=1) / n_a, b.var(ddof=1) / n_b
    se = math.sqrt(var_a + var_b)
    if se > 0:
        df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
        statistic = effect / se
    else:
        df = n_a + n_b - 2.0
        statistic = 0.0 if effect == 0 else math.copysign(math.inf, effect)
    dist = stats.t(df)
    low, high = _interval(effect, se, alpha, alternative, dist)
    return TestResult(
        "welch_t",
        statistic,
        _p_value(statistic, alternative, dist),
        effect,
        low,
        high,
        (n_a, n_b),
        alternative,
    )


def mann_whitney(
    a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float], alternative: str = "two-sided"
) -> TestResult:
    """Mann–Whitney U test (Wilcoxon rank-sum), ``scipy.stats.mannwhitneyu(b, a)`` with its default
    method (exact for small samples without ties, else the normal approximation with tie and
    continuity corrections): for heavy-tailed metrics such as latency or revenue.

    ``statistic`` is the treatment's U. ``effect`` is the common-language effect size
    ``U_b / (n_a n_b) = P(B > A) + P(B = A) / 2``, the chance a random treatment value beats a
    random control value, so 0.5 (not 0) means no difference; it costs nothing beyond U, while the
    Hodges–Lehmann shift needs all ``n_a n_b`` pairwise differences. The interval is nan.

    >>> r = mann_whitney([1.0, 2.0, 3.0, 4.0], [3.5, 5.0, 6.0, 7.0], alternative="larger")
    >>> r.statistic, r.effect, round(r.p_value, 4)
    (15.0, 0.9375, 0.0286)
    """
    a, b = check_sample(a, "a"), check_sample(b, "b")
    check_choice(alternative, "alternative", ALTERNATIVES)
    scipy_alternative = {"two-sided": "two-sided", "larger": "greater", "smaller": "less"}[alternative]
    result = stats.mannwhitneyu(b, a, alternative=scipy_alternative)
    statistic = float(result.statistic)
    return TestResult(
        "mann_whitney",
        statistic,
        float(result.pvalue),
        statistic / (len(a) * len(b)),
        math.nan,
        math.nan,
        (len(a), len(b)),
        alternative,
    )


# --- several candidates at once ---------------------------------------------------------------


def _p_values(p_values: Sequence[float]) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64).ravel()
    bad = ~((p >= 0) & (p <= 1))  # also catches NaN
    if bad.any():
        raise ValueError(
            f"p_values must be in [0, 1], got {float(p[np.argmax(bad)])} at index {np.argmax(bad)}"
        )
    return p


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: reject candidate i at family-wise
    error rate alpha when its adjusted p is at most alpha. Equals statsmodels'
    ``multipletests(p, method="holm")``.

    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    return adjust_pvalues(_p_values(p_values), "holm").tolist()


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input order: the candidates with
    adjusted p at most q have a false discovery rate of at most q. Equals statsmodels'
    ``multipletests(p, method="fdr_bh")``.

    >>> [round(p, 3) for p in benjamini_hochberg([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    """
    return adjust_pvalues(_p_values(p_values), "fdr_bh").tolist()

# --- variance reduction -----------------------------------------------------------------------


def cuped(y: np.ndarray | Sequence[float], x: np.ndarray | Sequence[float]) -> tuple[np.ndarray, float]:
    """CUPED (Deng, Xu, Kohavi & Walker 2013): the metric ``y`` with the part predicted by a
    pre-experiment covariate ``x`` (the same metric before the test, say) removed,
    ``y - theta (x - mean(x))`` with ``theta = cov(y, x) / var(x)``.

    Pass the units of *all* arms together and split the result by arm afterwards. ``theta`` is then
    one number for every arm, and because ``x`` was measured before assignment its mean is the same
    in every arm in expectation, so the difference of adjusted means stays an unbiased estimate of
    the effect; fitting ``theta`` per arm would let each arm's outcome pick its own adjustment and
    bias the difference. The variance of the adjusted metric is ``var(y) (1 - corr(y, x)²)``.
    A constant ``x`` carries no information: ``theta`` is 0 and ``y`` comes back unchanged.

    >>> y_adjusted, theta = cuped([2.0, 4.0, 6.0, 9.0], [1.0, 2.0, 3.0, 4.0])
    >>> round(theta, 2), y_adjusted.round(2).tolist()
    (2.3, [5.45, 5.15, 4.85, 5.55])
    """
    y, x = check_sample(y, "y", 2), check_sample(x, "x", 2)
    if len(y) != len(x):
        raise ValueError(
            f"y and x must have the same length (one covariate per unit), got {len(y)} and {len(x)}"
        )
    x_centred = x - x.mean()
    var_x = float(np.dot(x_centred, x_centred))
    theta = float(np.dot(y - y.mean(), x_centred) / var_x) if var_x > 0 else 0.0
    return y - theta * x_centred, theta
