"""The regression gate's statistics: Fieller's bound on the ratio of mean per-row losses is where
the paired t test just rejects (found by brute force, and by hand), its p-value says the same thing,
an equal candidate is promoted at tolerance 0 no more than alpha of the time, the bootstrap agrees
on plenty of rows, and bad losses are refused by name."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from perennial.stats.paired import bootstrap_lower_bound, bootstrap_noninferiority_pvalue
from perennial.stats.ratio import (
    ratio_bootstrap_differences,
    ratio_lower_bound,
    ratio_min_detectable_drop,
    ratio_noninferiority_pvalue,
)


def _squared_errors(
    n: int, theta: float, rho: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row squared errors of two models whose residuals correlate ``rho``; the candidate's mean
    loss is ``theta`` times the champion's."""
    z = rng.standard_normal((2, n))
    champion = z[0]
    candidate = rho * z[0] + np.sqrt(1 - rho * rho) * z[1]
    return theta * candidate**2, champion**2


DATASETS = [(30, 1.0, 0.9), (100, 1.1, 0.5), (365, 0.95, 0.9), (1000, 1.0, 0.0), (12, 1.3, 0.7)]


@pytest.mark.parametrize(("n", "theta", "rho"), DATASETS)
def test_bound_is_where_the_t_test_just_rejects(n, theta, rho):
    cand, champ = _squared_errors(n, theta, rho, np.random.default_rng(n))
    bound = ratio_lower_bound(cand, champ, 0.05)

    # Brute force: the largest ratio theta0 that scipy's one-sided paired t test of
    # "cand < theta0 * champ" does not reject at 5%, on a coarse grid, then a fine one around it.
    def largest_kept(grid: np.ndarray) -> float:
        p = stats.ttest_1samp(grid[:, None] * champ - cand, 0.0, axis=1, alternative="greater").pvalue
        kept = np.flatnonzero(p >= 0.05)
        assert 0 < kept[-1] < len(grid) - 1  # rejected at the grid's top: the bound is inside
        return grid[kept[-1]]

    coarse = largest_kept(np.arange(0.2, 4.0, 1e-2))
    assert 1 - bound == pytest.approx(largest_kept(np.arange(coarse - 0.02, coarse + 0.02, 1e-5)), abs=1e-5)
    assert bound < 1 - cand.mean() / champ.mean()


@pytest.mark.parametrize(("n", "theta", "rho"), DATASETS)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_bound_and_pvalue_say_the_same(n, theta, rho, alpha):
    cand, champ = _squared_errors(n, theta, rho, np.random.default_rng(n + 1))
    bound = ratio_lower_bound(cand, champ, alpha)
    for tolerance in (-bound - 1e-6, -bound + 1e-6, 0.0, 0.05, 0.2):
        shown = ratio_noninferiority_pvalue(cand, champ, tolerance) < alpha
        assert shown == (bound > -tolerance), tolerance
    # At the bound itself the test sits exactly on alpha.
    assert ratio_noninferiority_pvalue(cand, champ, -bound) == pytest.approx(alpha, rel=1e-6)


def test_bound_by_hand():
    cand = [1.2, 1.5, 4.4, 2.5, 5.5, 2.0]
    champ = [1.0, 2.0, 4.0, 3.0, 5.0, 2.5]
    n, c, h = len(cand), statistics.fmean(cand), statistics.fmean(champ)
    s_cc, s_hh = statistics.variance(cand), statistics.variance(champ)
    s_ch = statistics.covariance(cand, champ)
    q = stats.t.ppf(0.95, n - 1)
    # (theta h - c)^2 = q^2 (theta^2 s_hh - 2 theta s_ch + s_cc) / n, the larger root.
    a = h * h - q * q * s_hh / n
    b = -2 * (h * c - q * q * s_ch / n)
    k = c * c - q * q * s_cc / n
    upper = (-b + math.sqrt(b * b - 4 * a * k)) / (2 * a)
    assert ratio_lower_bound(cand, champ) == pytest.approx(1 - upper, rel=1e-12)
    assert ratio_lower_bound(cand, champ) == pytest.approx(-0.0990, abs=1e-4)


def test_edge_cases():
    champ = np.array([1.0, 2.0, 4.0, 3.0, 5.0, 2.5])
    # The same model twice: the ratio is exactly 1, shown as nothing better (bound 0), so it passes
    # any positive tolerance and not tolerance 0.
    assert ratio_lower_bound(champ, champ) == pytest.approx(0.0, abs=1e-12)
    assert (
        ratio_noninferiority_pvalue(champ, champ, 0.01) < 0.05 <= ratio_noninferiority_pvalue(champ, champ, 0)
    )
    # A perfect candidate.
    assert ratio_lower_bound(np.zeros(6), champ) == pytest.approx(1.0)
    # A champion whose mean loss is not shown above zero bounds no ratio: -inf, and never passes.
    sparse = np.array([0, 0, 0, 0, 0, 6.0])
    assert ratio_lower_bound(0.01 * sparse, sparse) == -np.inf
    assert ratio_noninferiority_pvalue(0.01 * sparse, sparse, 0.5) >= 0.05
    assert ratio_lower_bound(np.zeros(6), np.zeros(6)) == -np.inf
    # Too few rows to estimate a spread.
    assert np.isnan(ratio_lower_bound([1.0], [1.0])) and np.isnan(ratio_lower_bound([], []))
    assert ratio_noninferiority_pvalue([1.0], [2.0], 0.1) == 1.0
    assert np.isnan(ratio_min_detectable_drop([1.0], [2.0]))
    assert len(ratio_bootstrap_differences([], [])) == 0


def _promote_rates(theta: float, tolerance: float, n: int = 300, datasets: int = 400) -> tuple[float, float]:
    """Share of seeded datasets the t bound and the bootstrap bound promote."""
    rng = np.random.default_rng(11)
    t_passes, boot_passes = 0, 0
    for seed in range(datasets):
        cand, champ = _squared_errors(n, theta, 0.9, rng)
        t_passes += ratio_lower_bound(cand, champ, 0.05) > -tolerance
        boot = ratio_bootstrap_differences(cand, champ, samples=300, seed=seed)
        boot_passes += bootstrap_noninferiority_pvalue(boot, tolerance) < 0.05
    return t_passes / datasets, boot_passes / datasets


def test_a_candidate_at_the_margin_is_promoted_at_most_alpha_of_the_time():
    # Chi-square losses of two similar models (residuals correlated 0.9), 300 rows. At tolerance 0
    # an equal candidate sits exactly on the margin: promoting it is the error alpha bounds. With
    # 400 datasets the rate's standard error is 1.1 points.
    t_rate, boot_rate = _promote_rates(theta=1.0, tolerance=0.0)
    assert 0.02 <= t_rate <= 0.08, t_rate
    assert 0.02 <= boot_rate <= 0.09, boot_rate
    # A candidate 20% better clears tolerance 0 almost always on these rows.
    assert min(_promote_rates(theta=0.8, tolerance=0.0, datasets=100)) > 0.9


def test_the_tolerance_is_relative():
    # Scaling the candidate's losses scales the ratio and its bound alike: 5% worse at tolerance
    # 5% is exactly the margin, decided as an equal candidate at tolerance 0.
    rng = np.random.default_rng(8)
    for _ in range(50):
        cand, champ = _squared_errors(100, 1.0, 0.9, rng)
        bound = ratio_lower_bound(cand, champ)
        assert 1 - ratio_lower_bound(1.05 * cand, champ) == pytest.approx(1.05 * (1 - bound), rel=1e-12)
        assert ratio_lower_bound(cand, 2 * champ) == pytest.approx(1 - (1 - bound) / 2, rel=1e-12)
        assert ratio_noninferiority_pvalue(1.05 * cand, champ, 0.05) == pytest.approx(
            ratio_noninferiority_pvalue(cand, champ, 0.0), rel=1e-9
        )


def test_min_detectable_drop_is_what_an_equal_candidate_can_show():
    rng = np.random.default_rng(5)
    n = 200
    drops, bounds = [], []
    for _ in range(600):
        cand, champ = _squared_errors(n, 1.0, 0.9, rng)
        drops.append(ratio_min_detectable_drop(cand, champ, 0.05, 0.8))
        bounds.append(ratio_lower_bound(cand, champ, 0.05))
    drop = float(np.median(drops))
    # At that tolerance an equal candidate passes about 80% of the time; at half of it, far less.
    assert np.mean(np.array(bounds) > -drop) == pytest.approx(0.8, abs=0.04)
    assert np.mean(np.array(bounds) > -drop / 2) < 0.5


def test_bootstrap_agrees_with_fieller_on_many_normal_rows():
    # Normal per-row losses (shifted well away from zero), where both methods are accurate.
    rng = np.random.default_rng(2)
    z = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=4000)
    cand, champ = 10.2 + z[:, 0], 10 + z[:, 1]
    differences = ratio_bootstrap_differences(cand, champ, samples=4000, seed=1)
    assert np.mean(differences) == pytest.approx(1 - cand.mean() / champ.mean(), abs=1e-3)
    assert bootstrap_lower_bound(differences, 0.05) == pytest.approx(ratio_lower_bound(cand, champ), abs=1e-3)
    # Heavy-tailed losses of 2000 rows: still within a few tenths of a point.
    t3 = rng.standard_t(3, size=(2000, 2)) @ np.array([[1, 0.9], [0, 0.44]])
    cand, champ = t3[:, 0] ** 2, t3[:, 1] ** 2
    boot = bootstrap_lower_bound(ratio_bootstrap_differences(cand, champ, seed=3), 0.05)
    assert boot == pytest.approx(ratio_lower_bound(cand, champ), abs=0.02)


def test_bootstrap_is_deterministic_and_the_bound_and_pvalue_agree():
    cand, champ = _squared_errors(80, 1.0, 0.8, np.random.default_rng(4))
    a, b = (ratio_bootstrap_differences(cand, champ, samples=999, seed=7) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    bound = bootstrap_lower_bound(a, 0.05)
    for tolerance in np.linspace(0, 0.5, 51):
        assert (bootstrap_noninferiority_pvalue(a, tolerance) < 0.05) == (bound > -tolerance)


def test_a_resample_without_champion_loss_counts_against_the_candidate():
    champ = np.r_[np.zeros(9), 1.0]
    differences = ratio_bootstrap_differences(0.5 * champ, champ, samples=2000, seed=0)
    # 0.9**10 of the resamples miss the one row with champion loss: about 35%.
    assert np.mean(np.isnan(differences)) == pytest.approx(0.9**10, abs=0.03)
    assert bootstrap_lower_bound(differences, 0.05) == -np.inf


@pytest.mark.parametrize(
    ("cand", "champ", "words"),
    [
        (np.ones(5), np.ones(4), ["same rows", "5", "4"]),
        (np.ones((5, 2)), np.ones((5, 2)), ["candidate_loss", "1-D", "(5, 2)"]),
        (np.r_[1.0, -0.5, 2.0], np.ones(3), ["candidate_loss", ">= 0", "-0.5"]),
        (np.ones(3), np.r_[1.0, np.nan, 2.0], ["champion_loss", "NaN", "index 1"]),
        (np.ones(3), np.r_[1.0, np.inf, 2.0], ["champion_loss", "infinite"]),
    ],
)
@pytest.mark.parametrize(
    "function",
    [
        ratio_lower_bound,
        lambda c, h: ratio_noninferiority_pvalue(c, h, 0.05),
        ratio_min_detectable_drop,
        ratio_bootstrap_differences,
    ],
)
def test_bad_losses_are_refused_by_name(cand, champ, words, function):
    with pytest.raises(ValueError) as err:
        function(cand, champ)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: ratio_lower_bound(np.ones(5), np.ones(5), alpha=0.6), ["alpha", "0.5", "0.6"]),
        (lambda: ratio_lower_bound(np.ones(5), np.ones(5), alpha=0), ["alpha", "0"]),
        (lambda: ratio_noninferiority_pvalue(np.ones(5), np.ones(5), -1.5), ["tolerance", "-1.5"]),
        (lambda: ratio_noninferiority_pvalue(np.ones(5), np.ones(5), np.nan), ["tolerance", "nan"]),
        (lambda: ratio_min_detectable_drop(np.ones(5), np.ones(5), power=1), ["power", "1"]),
        (lambda: ratio_bootstrap_differences(np.ones(5), np.ones(5), samples=0), ["samples", "0"]),
    ],
)
def test_bad_settings_are_refused_by_name(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for word in words:
        assert word in str(err.value)
