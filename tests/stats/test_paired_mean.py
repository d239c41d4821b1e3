"""The session gate's bound: Student's t on paired per-user differences, checked against scipy and by
its coverage on the skewed, zero-heavy differences per-user NDCG gives."""

import numpy as np
import pytest
from scipy import stats

from perennial.stats.paired import mean_lower_bound, mean_noninferiority_pvalue


def test_without_left_skew_the_bound_is_scipys_one_sided_t_interval_and_the_pvalue_agrees_with_it():
    half = np.random.default_rng(0).normal(0.0, 0.05, 20)
    right = np.r_[half, -half] + 0.01  # no skew
    right = np.r_[right, 0.3]  # a user who gained a lot: right skew, which is not corrected
    for d in (np.r_[half, -half] + 0.01, right):
        low, _ = stats.t.interval(0.90, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        assert mean_lower_bound(d, alpha=0.05) == pytest.approx(low)
        for margin in (0.0, 0.005, 0.02):
            p = mean_noninferiority_pvalue(d, margin)
            assert p == pytest.approx(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
            assert (p < 0.05) == (mean_lower_bound(d, 0.05) > -margin)


def test_left_skew_lowers_the_bound_and_bound_and_pvalue_still_agree():
    d = np.r_[np.full(30, 0.02), -0.25, -0.3]  # most users gained a little, two lost a lot
    low, _ = stats.t.interval(0.90, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    bound = mean_lower_bound(d, alpha=0.05)
    assert bound < low
    for margin in np.linspace(-bound - 0.01, -bound + 0.01, 9):
        assert (mean_noninferiority_pvalue(d, margin) < 0.05) == (bound > -margin)
    assert mean_noninferiority_pvalue(d, -bound) == pytest.approx(0.05)
    rows = np.stack([d, d[::-1] * 0.5])  # 2-D: one sample a row
    assert mean_noninferiority_pvalue(rows, 0.01) == pytest.approx(
        [mean_noninferiority_pvalue(rows[0], 0.01), mean_noninferiority_pvalue(rows[1], 0.01)]
    )


def test_a_candidate_worse_by_the_margin_passes_at_most_about_alpha_on_zero_heavy_differences():
    # Per-user NDCG differences: most users score 0 under both models, a few gain or lose a lot.
    rng = np.random.default_rng(1)
    pool = np.where(rng.random(5000) < 0.7, 0.0, rng.normal(0.0, 0.15, 5000))
    pool = pool - pool.mean() - 0.01  # the truth: worse by exactly the margin
    passed = [mean_noninferiority_pvalue(rng.choice(pool, 100), margin=0.01) < 0.05 for _ in range(2000)]
    assert np.mean(passed) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 2000)  # measured 0.061


def test_degenerate_and_bad_input():
    assert np.isnan(mean_lower_bound(np.array([0.1])))
    assert mean_noninferiority_pvalue(np.array([0.1]), 0.0) == 1.0
    assert mean_noninferiority_pvalue(np.zeros(10), margin=0.01) == 0.0  # no spread: the mean itself
    assert mean_noninferiority_pvalue(np.zeros(10), margin=0.0) == 1.0
    with pytest.raises(ValueError, match="finite"):
        mean_lower_bound(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="alpha"):
        mean_lower_bound(np.array([0.1, 0.2]), alpha=1.5)
