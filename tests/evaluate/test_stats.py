"""The paired tests agree with statsmodels / scipy and answer "is the candidate worse?" one-sidedly."""

import numpy as np
import pytest
from scipy import stats

from perennial.evaluate import mcnemar_worse_pvalue, paired_bootstrap_worse_pvalue

mcnemar = pytest.importorskip("statsmodels.stats.contingency_tables").mcnemar


def _pairs(both: int, b: int, c: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example outcomes (candidate, champion) with ``b`` champion-only and ``c`` candidate-only wins."""
    cand = np.r_[np.ones(both), np.zeros(b), np.ones(c), np.zeros(neither)].astype(bool)
    champ = np.r_[np.ones(both), np.ones(b), np.zeros(c), np.zeros(neither)].astype(bool)
    perm = np.random.default_rng(b * 100 + c).permutation(len(cand))
    return cand[perm], champ[perm]


TABLES = [(50, 10, 0, 5), (80, 12, 3, 5), (40, 7, 7, 6), (30, 3, 9, 1), (100, 30, 18, 2), (5, 1, 0, 0)]


@pytest.mark.parametrize(("both", "b", "c", "neither"), TABLES)
def test_mcnemar_matches_scipy_binomtest(both, b, c, neither):
    p = mcnemar_worse_pvalue(*_pairs(both, b, c, neither))
    assert p == pytest.approx(stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue, rel=1e-9)


@pytest.mark.parametrize(("both", "b", "c", "neither"), [t for t in TABLES if t[1] > t[2]])
def test_mcnemar_is_half_the_statsmodels_two_sided_exact_test(both, b, c, neither):
    two_sided = mcnemar([[both, b], [c, neither]], exact=True).pvalue
    # With b > c the two-sided exact p-value is 2 * P(B <= c) = 2 * P(B >= b): twice the one-sided one.
    assert mcnemar_worse_pvalue(*_pairs(both, b, c, neither)) == pytest.approx(two_sided / 2, rel=1e-9)


def test_mcnemar_one_sided_in_the_right_direction():
    worse = mcnemar_worse_pvalue(*_pairs(50, 15, 2, 3))
    better = mcnemar_worse_pvalue(*_pairs(50, 2, 15, 3))
    assert worse < 0.01 and better > 0.99


def test_mcnemar_with_no_disagreement_is_one():
    same = np.r_[np.ones(30), np.zeros(10)].astype(bool)
    assert mcnemar_worse_pvalue(same, same) == 1.0


def test_bootstrap_small_when_candidate_clearly_worse():
    cand, champ = _pairs(120, 40, 5, 35)
    assert paired_bootstrap_worse_pvalue(cand, champ, margin=0.0, n=2000, seed=0) < 0.01
    # The smallest p-value a bootstrap of n resamples can give.
    assert paired_bootstrap_worse_pvalue(cand, champ, n=999, seed=0) == pytest.approx(1 / 1000)


def test_bootstrap_large_when_equal_or_better():
    same = np.r_[np.ones(80), np.zeros(20)].astype(bool)
    assert paired_bootstrap_worse_pvalue(same, same, margin=0.0) == 1.0
    cand, champ = _pairs(60, 8, 8, 24)
    assert paired_bootstrap_worse_pvalue(cand, champ, margin=0.0) > 0.3
    assert paired_bootstrap_worse_pvalue(*_pairs(60, 2, 12, 26)) > 0.9


def test_bootstrap_margin_forgives_a_small_drop():
    cand, champ = _pairs(900, 40, 10, 50)  # 3 points worse on 1000 examples
    assert paired_bootstrap_worse_pvalue(cand, champ, margin=0.0) < 0.01
    assert paired_bootstrap_worse_pvalue(cand, champ, margin=0.06) > 0.5


def test_bootstrap_is_deterministic_per_seed_and_handles_empty():
    cand, champ = _pairs(40, 6, 3, 1)
    a, b = (paired_bootstrap_worse_pvalue(cand, champ, seed=4) for _ in range(2))
    assert a == b
    assert paired_bootstrap_worse_pvalue(np.zeros(0, bool), np.zeros(0, bool)) == 1.0
