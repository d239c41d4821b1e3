"""The ratio of two mean per-row losses on the same rows (a regressor's MSE against another's):
Fieller's confidence bounds, the paired t tests behind them, the smallest worsening a set of rows
can show, and the paired bootstrap.

The regression gate works on the relative difference ``Δ = 1 - mean(candidate loss) / mean(champion
loss)``, positive when the candidate is better: a candidate passes when the lower bound of ``Δ`` is
above ``-tolerance``. Rollback and the guard compare a served line with v1 over many windows, and
that comparison must survive a restart: the sums (``LossMoments``) are six numbers per window that
add up and save as JSON, and the bounds come from them alone.

Fieller's method is exact for a ratio of means when the per-row combination ``θ·b - a`` is normal:
it inverts the paired t test of ``mean(a) = θ·mean(b)`` instead of linearising the ratio (the delta
method), so it stays honest when the denominator is noisy; it is unbounded when ``mean(b)`` itself
is not shown above 0.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

import numpy as np
from scipy import stats

from perennial.stats._checks import check_alpha, check_sample

# Bootstrap index arrays are drawn this many entries at a time, so a large fresh set stays in memory.
_BOOTSTRAP_CHUNK = 1 << 22


@dataclass(frozen=True)
class LossMoments:
    """Sums over paired rows of two models' losses ``a`` (ours) and ``b`` (theirs): ``n``, ``Σa``,
    ``Σb``, ``Σa²``, ``Σb²``, ``Σab``.

    >>> m = LossMoments.of(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 2.0]))
    >>> m.ratio, (m + m).n
    (1.5, 6)
    """

    n: int
    sa: float
    sb: float
    saa: float
    sbb: float
    sab: float

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> LossMoments:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(
                f"paired losses must be 1-D and of one length, got shapes {a.shape} and {b.shape}"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError("paired losses must be finite")
        return cls(len(a), float(a.sum()), float(b.sum()), float(a @ a), float(b @ b), float(a @ b))

    @classmethod
    def from_list(cls, values: list) -> LossMoments:
        n, *sums = values
        return cls(int(n), *(float(v) for v in sums))

    def to_list(self) -> list:
        return list(astuple(self))

    def __add__(self, other: LossMoments) -> LossMoments:
        return LossMoments(*(x + y for x, y in zip(astuple(self), astuple(other), strict=True)))

    @property
    def mean_a(self) -> float:
        return self.sa / self.n if self.n else math.nan

    @property
    def mean_b(self) -> float:
        return self.sb / self.n if self.n else math.nan

    @property
    def ratio(self) -> float:
        """``mean(a) / mean(b)``: above 1 when ours loses more."""
        return self.sa / self.sb if self.sb > 0 else math.nan

    def _covariances(self) -> tuple[float, float, float]:
        """Sample variances of ``a`` and ``b`` and their covariance (denominator ``n - 1``)."""
        n = self.n
        va = (self.saa - self.sa**2 / n) / (n - 1)
        vb = (self.sbb - self.sb**2 / n) / (n - 1)
        cab = (self.sab - self.sa * self.sb / n) / (n - 1)
        return max(va, 0.0), max(vb, 0.0), cab


def fieller_bounds(m: LossMoments, alpha: float = 0.05) -> tuple[float, float]:
    """One-sided ``1 - alpha`` lower and upper confidence bounds of ``θ = mean(a) / mean(b)``
    (each alone holds with probability ``1 - alpha``). ``(-inf, inf)`` when ``mean(b)`` is not
    shown above 0; NaN with fewer than 2 rows.

    >>> rng = np.random.default_rng(0)
    >>> b = rng.chisquare(1, 2000); a = 1.1 * b + 0.1 * rng.chisquare(1, 2000)
    >>> low, high = fieller_bounds(LossMoments.of(a, b))
    >>> bool(low < LossMoments.of(a, b).ratio < high), round(low, 2), round(high, 2)
    (True, 1.2, 1.22)
    """
    if m.n < 2:
        return math.nan, math.nan
    va, vb, cab = m._covariances()
    t2 = stats.t.ppf(1 - alpha, m.n - 1) ** 2 / m.n
    ma, mb = m.mean_a, m.mean_b
    # (ma - θ mb)^2 = t² var(a - θ b) / n, a quadratic A θ² - 2 B θ + C = 0.
    a_ = mb * mb - t2 * vb
    b_ = ma * mb - t2 * cab
    c_ = ma * ma - t2 * va
    if a_ <= 0:
        return -math.inf, math.inf
    # With a_ > 0 the point estimate lies between the roots, so they are real. Two algebraically
    # equal forms of each root; each avoids the cancellation the other suffers.
    root = math.sqrt(max(b_ * b_ - a_ * c_, 0.0))
    low = (b_ - root) / a_ if b_ <= 0 else c_ / (b_ + root)
    high = (b_ + root) / a_ if b_ >= 0 else c_ / (b_ - root)
    return float(low), float(high)


def ratio_pvalue(m: LossMoments, margin: float) -> float:
    """One-sided p-value of ``H0: mean(a) >= margin · mean(b)``: small when ours is shown to lose
    less than ``margin`` times theirs. Below ``alpha`` exactly when :func:`fieller_bounds`' upper
    bound is below ``margin``: it is the larger of the paired t test on the rows' ``margin·b - a``
    and the t test of "``mean(b)`` is above zero", the second condition under which the bound is
    finite (requiring both keeps the level: an intersection-union test). Fewer than 2 rows: 1."""
    if m.n < 2:
        return 1.0
    va, vb, cab = m._covariances()
    ratio_test = _t(margin * m.mean_b - m.mean_a, margin * margin * vb - 2 * margin * cab + va, m.n)
    above_zero = _t(m.mean_b, vb, m.n)
    return float(stats.t.sf(min(ratio_test, above_zero), m.n - 1))


def _t(mean: float, variance: float, n: int) -> float:
    """The one-sample t statistic of ``mean > 0``; no spread gives 0, +inf or -inf by the sign."""
    if variance > 0:
        return mean / math.sqrt(variance / n)
    return 0.0 if mean == 0 else math.copysign(math.inf, mean)


# ---- from per-row losses: the regression gate -----------------------------------------------------


def _losses(candidate_loss: np.ndarray, champion_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two per-row loss arrays as floats, refused unless 1-D, of one length, finite and >= 0."""
    cand = check_sample(candidate_loss, "candidate_loss", min_size=0)
    champ = check_sample(champion_loss, "champion_loss", min_size=0)
    if len(cand) != len(champ):
        raise ValueError(
            f"candidate_loss and champion_loss must score the same rows, got lengths {len(cand)} and "
            f"{len(champ)}"
        )
    for name, loss in (("candidate_loss", cand), ("champion_loss", champ)):
        if (loss < 0).any():
            raise ValueError(
                f"{name} must be per-row losses >= 0 (squared or absolute errors), got "
                f"{int((loss < 0).sum())} negative values (first {loss[np.argmax(loss < 0)]!r})"
            )
    return cand, champ


def ratio_lower_bound(candidate_loss: np.ndarray, champion_loss: np.ndarray, alpha: float = 0.05) -> float:
    """One-sided ``1 - alpha`` lower confidence bound of the relative difference
    ``Δ = 1 - θ``, ``θ = mean(candidate_loss) / mean(champion_loss)``, by Fieller's method on the
    paired rows: ``1 - U``, where ``U`` is the largest ratio ``θ0`` that the one-sided paired t test
    of ``H0: mean(θ0 · champion - candidate) <= 0`` at level ``alpha`` does not reject.

    Why Fieller: for each ``θ0`` the per-row combination ``d_i = θ0 · champion_i - candidate_i``
    has mean zero exactly when ``θ = θ0``, so if the ``d_i`` are normal the t test is exact and so is
    the bound, with no delta-method linearisation of the ratio (which treats the denominator as
    known and is optimistic exactly when the champion's mean loss is poorly determined). ``U``
    solves ``(θ0·h - c)^2 = q^2 · var(θ0·champion - candidate) / n``, a quadratic in ``θ0``
    (``h``, ``c`` the mean losses, ``q`` the ``1 - alpha`` quantile of t with ``n - 1`` degrees of
    freedom). When the rows do not show the champion's mean loss above zero (``h`` within
    ``q`` standard errors of 0), the confidence set of ``θ`` is unbounded above and the bound is
    ``-inf``: no relative tolerance can be shown. Fewer than two rows: NaN.

    >>> champion = np.array([1.0, 2.0, 4.0, 3.0, 5.0, 2.5])
    >>> round(ratio_lower_bound(0.9 * champion, champion), 6)  # a candidate 10% better on every row
    0.1
    >>> candidate = np.array([1.2, 1.5, 4.4, 2.5, 5.5, 2.0])
    >>> estimate = 1 - candidate.mean() / champion.mean()  # the candidate looks 2% better
    >>> round(float(estimate), 4), round(ratio_lower_bound(candidate, champion), 4)
    (0.0229, -0.099)
    >>> ratio_lower_bound(candidate, np.array([0.0, 0.0, 0.0, 0.0, 0.0, 6.0]))  # champion not shown > 0
    -inf
    """
    check_alpha(alpha)
    if alpha >= 0.5:
        raise ValueError(f"alpha must be below 0.5 for a one-sided lower bound, got {alpha!r}")
    cand, champ = _losses(candidate_loss, champion_loss)
    if len(cand) < 2:
        return float("nan")
    _, upper = fieller_bounds(LossMoments.of(cand, champ), alpha)
    return float(1 - upper)


def ratio_noninferiority_pvalue(
    candidate_loss: np.ndarray, champion_loss: np.ndarray, tolerance: float
) -> float:
    """Paired t-test p-value for ``H0: θ >= 1 + tolerance`` (the candidate's mean loss is at least
    ``1 + tolerance`` times the champion's) against ``θ < 1 + tolerance``, from
    ``d_i = (1 + tolerance) · champion_i - candidate_i``. Below ``alpha`` exactly when
    :func:`ratio_lower_bound` is above ``-tolerance``: it is the larger of that test's p-value and
    the p-value of "the champion's mean loss is above zero", the second condition under which
    Fieller's bound is finite (requiring both keeps the level: an intersection-union test).
    Fewer than two rows: 1 (nothing shown).

    >>> champion = np.array([1.0, 2.0, 4.0, 3.0, 5.0, 2.5])
    >>> candidate = np.array([1.2, 1.5, 4.4, 2.5, 5.5, 2.0])
    >>> round(ratio_noninferiority_pvalue(candidate, champion, 0.1), 4)  # the bound, -0.099, is above -0.1
    0.0489
    >>> round(ratio_noninferiority_pvalue(candidate, champion, 0.05), 4)
    0.1514
    """
    if not (np.isfinite(tolerance) and tolerance > -1):
        raise ValueError(f"tolerance must be a finite number > -1 (a relative margin), got {tolerance!r}")
    cand, champ = _losses(candidate_loss, champion_loss)
    return ratio_pvalue(LossMoments.of(cand, champ), 1 + tolerance)


def ratio_min_detectable_drop(
    candidate_loss: np.ndarray, champion_loss: np.ndarray, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest relative worsening these rows tell apart from no change: the smallest tolerance
    ``m`` at which a candidate *as good as the champion* (``θ = 1``) passes :func:`ratio_lower_bound`
    with probability ``power``. Infinite when the rows do not show the champion's mean loss above
    zero (no tolerance passes); NaN with fewer than two rows.

    Normal approximation: an equal candidate passes at margin ``m`` when the t statistic of
    ``d_i = (1 + m) · champion_i - candidate_i`` exceeds the critical value ``q``. Its mean is
    ``m · mean(champion)``, so the statistic is about normal with mean
    ``m · mean(champion) · sqrt(n) / sd(d)`` and sd 1, and passes with probability ``power`` when
    ``m · mean(champion) · sqrt(n) = (q + z[power]) · sd(d)``: a quadratic in ``m``, since ``sd(d)``
    grows with the margin when the champion's losses vary. For small margins that is about
    ``(q + z[power]) · sd(champion - candidate) / (sqrt(n) · mean(champion))``: ``q + z[power]``
    standard errors of the estimate of ``Δ``. An equal candidate is not at hand, so the spread comes
    from the observed candidate rescaled to the champion's mean loss.

    >>> champion = np.array([1.0, 2.0, 4.0, 3.0, 5.0, 2.5])
    >>> candidate = np.array([1.2, 1.5, 4.4, 2.5, 5.5, 2.0])
    >>> round(ratio_min_detectable_drop(candidate, champion), 4)
    0.1726
    """
    check_alpha(alpha)
    check_alpha(power, "power")
    cand, champ = _losses(candidate_loss, champion_loss)
    n = len(cand)
    if n < 2:
        return float("nan")
    h = champ.mean()
    equal = cand * (h / cand.mean()) if cand.mean() > 0 else cand
    (s_dd, g), (_, s_hh) = np.cov(champ - equal, champ, ddof=1)
    w2 = (stats.t.isf(alpha, n - 1) + stats.norm.ppf(power)) ** 2
    # a m^2 - 2 b m - k = 0, from m^2 n h^2 = w2 var(D + m champion), var expanded in m.
    a, b, k = n * h * h - w2 * s_hh, w2 * g, w2 * s_dd
    if not a > 0:
        return float("inf")  # even an infinite margin is not reached with this power
    return float((b + np.sqrt(max(b * b + a * k, 0.0))) / a)


def ratio_bootstrap_differences(
    candidate_loss: np.ndarray, champion_loss: np.ndarray, samples: int = 2000, seed: int = 0
) -> np.ndarray:
    """:func:`paired_bootstrap_differences` of ``Δ = 1 - mean(candidate) / mean(champion)``,
    vectorised; :func:`bootstrap_lower_bound` and :func:`bootstrap_noninferiority_pvalue` then give
    the gate's bound and p-value with ``margin=tolerance``. A resample whose champion losses are
    all zero has no ratio: NaN, which those count as the worst case.

    >>> champion = np.array([1.0, 2.0, 4.0, 3.0, 5.0, 2.5])
    >>> d = ratio_bootstrap_differences(0.9 * champion, champion, samples=200)
    >>> bool(np.allclose(d, 0.1))
    True
    """
    if samples < 1:
        raise ValueError(f"bootstrap samples must be >= 1, got {samples}")
    cand, champ = _losses(candidate_loss, champion_loss)
    n = len(cand)
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    cand_sums, champ_sums = np.empty(samples), np.empty(samples)
    step = max(1, _BOOTSTRAP_CHUNK // n)
    for start in range(0, samples, step):
        # One index per row for both models: the pairing (and so the correlation) is kept.
        rows = rng.integers(0, n, size=(min(step, samples - start), n))
        cand_sums[start : start + len(rows)] = cand[rows].sum(axis=1)
        champ_sums[start : start + len(rows)] = champ[rows].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 - cand_sums / champ_sums
