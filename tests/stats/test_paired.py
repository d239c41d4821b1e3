"""The gate's paired statistics: Tango's score bound agrees with McNemar and with the constrained
likelihood it is built on, covers the true difference as often as it claims, and the bootstrap
bound and p-value say the same thing."""

import numpy as np
import pytest
from scipy import optimize, stats

from perennial.stats.paired import (
    accuracy_bootstrap_differences,
    bootstrap_lower_bound,
    bootstrap_noninferiority_pvalue,
    discordant_counts,
    min_detectable_drop,
    noninferiority_pvalue,
    score_lower_bound,
    score_statistic,
)

mcnemar = pytest.importorskip("statsmodels.stats.contingency_tables").mcnemar

TABLES = [(40, 40, 800), (30, 50, 800), (5, 12, 73), (0, 3, 73), (12, 2, 73), (0, 0, 73), (90, 60, 400)]


@pytest.mark.parametrize(("gained", "lost", "n"), [t for t in TABLES if t[0] + t[1] > 0])
def test_score_statistic_at_zero_is_mcnemar(gained, lost, n):
    ref = mcnemar([[n - gained - lost, gained], [lost, 0]], exact=False, correction=False).statistic
    assert float(score_statistic(0.0, gained, lost, n)) ** 2 == pytest.approx(ref, rel=1e-12)


def _constrained_statistic(delta0: float, gained: int, lost: int, n: int) -> float:
    """The score statistic with its constrained MLE found numerically instead of in closed form."""
    low = max(0.0, -delta0) + 1e-12
    high = (1 - delta0) / 2 - 1e-12

    def negative_loglik(p: float) -> float:
        q = p + delta0  # P(gained) under the constraint
        return -(gained * np.log(q) + lost * np.log(p) + (n - gained - lost) * np.log(1 - p - q))

    p = optimize.minimize_scalar(negative_loglik, bounds=(low, high), method="bounded",
                                 options={"xatol": 1e-12}).x
    return (gained - lost - n * delta0) / np.sqrt(n * (2 * p + delta0 * (1 - delta0)))


@pytest.mark.parametrize(("gained", "lost", "n"), [t for t in TABLES if min(t[:2]) > 0])
@pytest.mark.parametrize("delta0", [-0.1, -0.02, 0.01])
def test_score_statistic_uses_the_constrained_likelihood(gained, lost, n, delta0):
    closed = float(score_statistic(delta0, gained, lost, n))
    assert closed == pytest.approx(_constrained_statistic(delta0, gained, lost, n), rel=1e-5)


@pytest.mark.parametrize(("gained", "lost", "n"), TABLES)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_lower_bound_and_pvalue_say_the_same(gained, lost, n, alpha):
    bound = score_lower_bound(gained, lost, n, alpha)
    assert bound <= (gained - lost) / n
    assert float(score_statistic(bound, gained, lost, n)) == pytest.approx(stats.norm.isf(alpha), abs=1e-6)
    for margin in (-bound - 0.005, -bound + 0.005):
        shown = noninferiority_pvalue(gained, lost, n, margin) < alpha
        assert shown == (bound > -margin)


def test_lower_bound_is_vectorised_and_handles_the_edges():
    many = score_lower_bound(np.array([40, 0, 0]), np.array([40, 73, 0]), np.array([800, 73, 73]))
    assert many[0] == pytest.approx(score_lower_bound(40, 40, 800))
    assert many[1] == -1.0  # the candidate lost every row
    # No disagreement on 73 rows still leaves room for a drop: z^2 / (n + z^2), not zero.
    z2 = stats.norm.isf(0.05) ** 2
    assert many[2] == pytest.approx(-z2 / (73 + z2), abs=1e-9)
    assert np.isnan(score_lower_bound(0, 0, 0))


@pytest.mark.parametrize(
    ("n", "p_gained", "p_lost"), [(73, 0.05, 0.07), (200, 0.04, 0.06), (800, 0.05, 0.05)]
)
def test_lower_bound_covers_the_true_difference(n, p_gained, p_lost):
    # 95% one-sided bounds: the truth lies above the bound in about 95% of 4000 seeded tables.
    rng = np.random.default_rng(7)
    tables = rng.multinomial(n, [p_gained, p_lost, 1 - p_gained - p_lost], size=4000)
    bounds = score_lower_bound(tables[:, 0], tables[:, 1], n, 0.05)
    coverage = np.mean(bounds <= p_gained - p_lost)
    assert 0.93 <= coverage <= 0.98, coverage


def test_min_detectable_drop_is_what_an_equal_candidate_can_show():
    n, discordance = 400, 0.1
    drop = min_detectable_drop(n, discordance)
    # At that margin an equal candidate passes about 80% of the time; at half of it, far less.
    rng = np.random.default_rng(3)
    tables = rng.multinomial(n, [discordance / 2, discordance / 2, 1 - discordance], size=4000)
    bounds = score_lower_bound(tables[:, 0], tables[:, 1], n, 0.05)
    assert np.mean(bounds >= -drop) == pytest.approx(0.8, abs=0.03)
    assert np.mean(bounds > -drop / 2) < 0.5
    # More rows, or fewer disagreements, tell apart smaller drops.
    assert min_detectable_drop(4 * n, discordance) < drop / 1.8
    assert min_detectable_drop(n, discordance / 4) < drop


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"discordance": 1.5}, ["discordance", "1.5"]),
    ({"alpha": 0}, ["alpha", "0"]),
    ({"power": 1}, ["power", "1"]),
])
def test_min_detectable_drop_refuses_bad_values(kwargs, names):
    with pytest.raises(ValueError) as err:
        min_detectable_drop(**({"n": 100, "discordance": 0.1} | kwargs))
    for name in names:
        assert name in str(err.value)


def _pairs(gained: int, lost: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    cand = np.r_[np.ones(gained), np.zeros(lost), np.ones(n - gained - lost)].astype(bool)
    champ = np.r_[np.zeros(gained), np.ones(lost), np.ones(n - gained - lost)].astype(bool)
    return cand, champ


def test_discordant_counts():
    assert discordant_counts(*_pairs(7, 3, 50)) == (7, 3, 50)
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        discordant_counts(np.ones(3, bool), np.ones(4, bool))


@pytest.mark.parametrize(("gained", "lost", "n"), [(40, 40, 800), (5, 12, 73), (30, 10, 300)])
def test_bootstrap_bound_is_close_to_the_score_bound_with_many_disagreements(gained, lost, n):
    differences = accuracy_bootstrap_differences(*_pairs(gained, lost, n), samples=4000, seed=1)
    assert bootstrap_lower_bound(differences) == pytest.approx(score_lower_bound(gained, lost, n), abs=0.01)


def test_bootstrap_bound_and_pvalue_say_the_same():
    differences = accuracy_bootstrap_differences(*_pairs(5, 12, 73), samples=999, seed=0)
    bound = bootstrap_lower_bound(differences, 0.05)
    for margin in np.linspace(0, 0.3, 61):
        assert (bootstrap_noninferiority_pvalue(differences, margin) < 0.05) == (bound > -margin)


def test_undefined_bootstrap_resamples_count_against_the_candidate():
    differences = np.r_[np.full(90, 0.1), np.full(10, np.nan)]
    assert bootstrap_lower_bound(differences, 0.05) == -np.inf
    assert bootstrap_noninferiority_pvalue(differences, 0.02) == pytest.approx(0.1)


def test_bootstrap_is_deterministic_per_seed_and_empty_sets_show_nothing():
    cand, champ = _pairs(6, 3, 40)
    a, b = (accuracy_bootstrap_differences(cand, champ, seed=4) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    empty = accuracy_bootstrap_differences(np.zeros(0, bool), np.zeros(0, bool))
    assert np.isnan(bootstrap_lower_bound(empty)) and bootstrap_noninferiority_pvalue(empty, 0.02) == 1.0
