"""The rollout statistics: fixed-horizon tests agree with statsmodels and scipy; peeking at a naive
z-test inflates false positives while the mixture SPRT keeps them at alpha, still finds real
effects, and resumes exactly; CUPED cuts variance without moving the effect; bad inputs are named."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from perennial.stats.power import power_proportions, sample_size_means, sample_size_proportions
from perennial.stats.sequential import MixtureSPRT
from perennial.stats.tests import (
    benjamini_hochberg,
    cuped,
    holm,
    mann_whitney,
    two_proportion_ztest,
    welch_ttest,
)

ALTERNATIVES = ["two-sided", "larger", "smaller"]
SCIPY_ALTERNATIVE = {"two-sided": "two-sided", "larger": "greater", "smaller": "less"}


# --- fixed-horizon tests against the references ------------------------------------------------


@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize("counts", [(100, 1000, 130, 1000), (48, 520, 31, 480), (7, 90, 7, 90)])
def test_two_proportion_ztest_matches_statsmodels(counts, alternative):
    s_a, n_a, s_b, n_b = counts
    result = two_proportion_ztest(s_a, n_a, s_b, n_b, alternative=alternative, alpha=0.1)
    z, p = proportions_ztest([s_b, s_a], [n_b, n_a], alternative=alternative)  # treatment first
    assert result.statistic == pytest.approx(z, rel=1e-12, abs=1e-12)
    assert result.p_value == pytest.approx(p, rel=1e-12)
    assert result.effect == pytest.approx(s_b / n_b - s_a / n_a)
    assert result.n == (n_a, n_b) and result.alternative == alternative
    # The two-sided Wald interval at 2 alpha gives the one-sided bound at alpha.
    low, high = confint_proportions_2indep(s_b, n_b, s_a, n_a, method="wald", compare="diff", alpha=0.2)
    expected = {"two-sided": confint_proportions_2indep(s_b, n_b, s_a, n_a, method="wald", alpha=0.1)}
    expected |= {"larger": (low, math.inf), "smaller": (-math.inf, high)}
    assert (result.ci_low, result.ci_high) == pytest.approx(expected[alternative], rel=1e-12)


def test_two_proportion_ztest_with_no_variance_has_no_evidence():
    result = two_proportion_ztest(0, 50, 0, 80)
    assert (result.statistic, result.p_value, result.effect) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_welch_ttest_matches_scipy_and_statsmodels(alternative):
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 2, 40), rng.normal(11, 5, 25)
    result = welch_ttest(a, b, alternative=alternative, alpha=0.1)
    reference = stats.ttest_ind(b, a, equal_var=False, alternative=SCIPY_ALTERNATIVE[alternative])
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert result.effect == pytest.approx(b.mean() - a.mean())
    assert (result.ci_low, result.ci_high) == pytest.approx(
        tuple(reference.confidence_interval(0.9)), rel=1e-10
    )
    compare = CompareMeans(DescrStatsW(b), DescrStatsW(a))
    interval = compare.tconfint_diff(alpha=0.1, alternative=alternative, usevar="unequal")
    assert (result.ci_low, result.ci_high) == pytest.approx(interval, rel=1e-10)


def test_welch_ttest_on_constant_arms():
    assert welch_ttest([1.0, 1.0], [1.0, 1.0, 1.0]).p_value == 1.0
    shifted = welch_ttest([1.0, 1.0], [2.0, 2.0])
    assert shifted.p_value == 0.0 and (shifted.ci_low, shifted.ci_high) == (1.0, 1.0)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_mann_whitney_matches_scipy(alternative):
    rng = np.random.default_rng(4)
    a, b = rng.lognormal(0, 1, 60), rng.lognormal(0.4, 1, 45).round(1)  # rounding makes ties
    result = mann_whitney(a, b, alternative=alternative)
    reference = stats.mannwhitneyu(b, a, alternative=SCIPY_ALTERNATIVE[alternative])
    assert (result.statistic, result.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    # Common-language effect size: how often a treatment value beats a control value, ties half.
    wins = (b[:, None] > a[None, :]).mean() + 0.5 * (b[:, None] == a[None, :]).mean()
    assert result.effect == pytest.approx(wins)
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)


@pytest.mark.parametrize(
    "p_values",
    [
        [0.01, 0.04, 0.03, 0.2, 0.001],
        [0.05, 0.05, 0.01, 0.9],
        [0.3],
        list(np.random.default_rng(5).random(20)),
    ],
)
def test_corrections_match_statsmodels_multipletests(p_values):
    assert holm(p_values) == pytest.approx(multipletests(p_values, method="holm")[1], rel=1e-12)
    assert benjamini_hochberg(p_values) == pytest.approx(
        multipletests(p_values, method="fdr_bh")[1], rel=1e-12
    )


def test_corrections_of_no_candidates_are_empty():
    assert holm([]) == [] and benjamini_hochberg([]) == []


@pytest.mark.parametrize(
    ("p_control", "effect", "alpha", "power", "ratio", "alternative"),
    [
        (0.10, 0.02, 0.05, 0.8, 1.0, "two-sided"),
        (0.10, -0.01, 0.05, 0.8, 1.0, "smaller"),
        (0.03, 0.005, 0.01, 0.9, 1.0, "larger"),
        (0.40, -0.05, 0.05, 0.8, 0.25, "two-sided"),
        (0.05, 0.01, 0.1, 0.95, 3.0, "larger"),
    ],
)
def test_sample_sizes_and_power_match_normal_ind_power(p_control, effect, alpha, power, ratio, alternative):
    h = proportion_effectsize(p_control + effect, p_control)
    solved = NormalIndPower().solve_power(h, alpha=alpha, power=power, ratio=ratio, alternative=alternative)
    n = sample_size_proportions(p_control, effect, alpha, power, ratio, alternative)
    assert n == math.ceil(solved) and isinstance(n, int)
    achieved = power_proportions(p_control, effect, n, alpha, ratio, alternative)
    reference = NormalIndPower().power(h, nobs1=n, alpha=alpha, ratio=ratio, alternative=alternative)
    assert achieved == pytest.approx(reference, rel=1e-12) and achieved >= power
    d = effect / 0.37
    solved = NormalIndPower().solve_power(d, alpha=alpha, power=power, ratio=ratio, alternative=alternative)
    assert sample_size_means(0.37, effect, alpha, power, ratio, alternative) == math.ceil(solved)


def test_sample_size_follows_the_textbook_rule():
    # n = 2 s² (z_{0.975} + z_{0.8})² / d², about 16 s² / d², per arm.
    assert sample_size_means(sd=2.0, min_effect=0.5) == math.ceil(2 * 4 * (1.959964 + 0.841621) ** 2 / 0.25)
    assert power_proportions(0.1, 0.0, 1000) == pytest.approx(0.05)


# --- CUPED -------------------------------------------------------------------------------------


def test_cuped_cuts_variance_and_keeps_the_effect():
    rng = np.random.default_rng(6)
    effect, raw, adjusted = 0.3, [], []
    for _ in range(200):
        before = rng.normal(10, 3, 1000)  # the metric in the weeks before the experiment
        treated = rng.random(1000) < 0.5
        after = 0.8 * before + rng.normal(0, 1, 1000) + effect * treated
        y, theta = cuped(after, before)  # theta from all arms together
        assert theta == pytest.approx(0.8, abs=0.05)
        raw.append(after[treated].mean() - after[~treated].mean())
        adjusted.append(y[treated].mean() - y[~treated].mean())
    raw, adjusted = np.array(raw), np.array(adjusted)
    assert adjusted.var() < 0.2 * raw.var()  # corr(y, x)² ≈ 0.85 of the variance is explained
    assert adjusted.mean() == pytest.approx(effect, abs=3 * adjusted.std() / math.sqrt(200))
    assert raw.mean() == pytest.approx(effect, abs=3 * raw.std() / math.sqrt(200))


def test_cuped_with_a_useless_covariate_changes_nothing():
    y = np.array([1.0, 2.0, 4.0])
    adjusted, theta = cuped(y, [5.0, 5.0, 5.0])
    assert theta == 0.0 and adjusted.tolist() == y.tolist()


# --- mixture SPRT: error rates under continuous monitoring -------------------------------------


def naive_peeking_rejects(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Per experiment: did a pooled two-proportion z-test reject at any look? ``a``, ``b`` are
    (experiments, looks, per_look) 0/1 arrays."""
    s_a, s_b = a.sum(2).cumsum(1), b.sum(2).cumsum(1)
    n = a.shape[2] * np.arange(1, a.shape[1] + 1)
    pooled = (s_a + s_b) / (2 * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (s_b - s_a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    return (np.abs(np.nan_to_num(z)) > stats.norm.isf(alpha / 2)).any(1)


def monitor(a: np.ndarray, b: np.ndarray, true_difference: float, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Runs one MixtureSPRT per experiment, looking after every batch and stopping at a rejection.
    Returns whether each rejected and whether its confidence sequence held the true difference
    at every look."""
    rejected, covered = [], []
    for a_exp, b_exp in zip(a, b, strict=True):
        test, held = MixtureSPRT(**kwargs), True
        for a_look, b_look in zip(a_exp, b_exp, strict=True):
            test.update(a_look, b_look)
            low, high = test.confidence_sequence()
            held &= low <= true_difference <= high
            assert (test.decision == "continue") == (low <= 0 <= high)  # the test and its CS agree
            if test.decision != "continue":
                break
        rejected.append(test.decision != "continue")
        covered.append(held)
    return np.array(rejected), np.array(covered)


@pytest.fixture(scope="module")
def aa_experiments():
    """300 A/A experiments, 10% conversions in both arms, 100 looks of 100 new users per arm."""
    rng = np.random.default_rng(2024)
    shape = (300, 100, 100)
    return rng.random(shape) < 0.10, rng.random(shape) < 0.10


def test_peeking_at_a_fixed_horizon_test_inflates_false_positives(aa_experiments):
    rate = naive_peeking_rejects(*aa_experiments).mean()
    assert rate > 0.20  # 37% in Armitage et al.'s table for 100 looks, against the nominal 5%


def test_mixture_sprt_keeps_false_positives_at_alpha_under_continuous_monitoring(aa_experiments):
    rejected, covered = monitor(*aa_experiments, true_difference=0.0)
    # 300 runs: the Monte-Carlo standard error at 5% is 1.3%, so 0.07 leaves 1.5 of them.
    assert rejected.mean() <= 0.07
    assert covered.mean() >= 0.95


def test_mixture_sprt_finds_a_real_lift_and_covers_it():
    n = sample_size_proportions(0.10, 0.02)  # fixed-horizon 80% power: 3835 per arm
    looks = math.ceil(n / 100)
    rng = np.random.default_rng(7)
    a, b = rng.random((300, looks, 100)) < 0.10, rng.random((300, looks, 100)) < 0.12
    rejected, covered = monitor(a, b, true_difference=0.02)
    # The price of peeking safely: below the fixed horizon's 80% at the same n (56% measured).
    assert rejected.mean() >= 0.5
    assert covered.mean() >= 0.95
    fixed = np.array(
        [two_proportion_ztest(x.sum(), x.size, y.sum(), y.size).p_value for x, y in zip(a, b, strict=True)]
    )
    assert 0.75 <= (fixed < 0.05).mean() <= 0.85  # the fixed horizon's own power, as planned


# --- mixture SPRT: one-sided guard -------------------------------------------------------------


def run_until_decided(test: MixtureSPRT, rng, p_a: float, p_b: float, looks: int = 60) -> MixtureSPRT:
    for _ in range(looks):
        test.update(rng.random(200) < p_a, rng.random(200) < p_b)
        if test.decision != "continue":
            break
    return test


def test_worse_mode_flags_a_degraded_treatment_and_never_an_improved_one():
    rng = np.random.default_rng(8)
    degraded = [run_until_decided(MixtureSPRT(alternative="worse"), rng, 0.10, 0.07) for _ in range(20)]
    improved = [run_until_decided(MixtureSPRT(alternative="worse"), rng, 0.10, 0.14) for _ in range(20)]
    assert sum(t.decision == "worse" for t in degraded) >= 18
    assert all(t.decision == "continue" for t in improved)
    assert all(t.confidence_sequence()[1] < 0 and t.confidence_sequence()[0] == -math.inf for t in degraded)
    better = [run_until_decided(MixtureSPRT(alternative="better"), rng, 0.10, 0.14) for _ in range(5)]
    assert all(t.decision == "better" for t in better)


def test_worse_mode_for_a_lower_is_better_metric():
    rng = np.random.default_rng(9)
    slower = MixtureSPRT(alternative="worse", higher_is_better=False)
    faster = MixtureSPRT(alternative="worse", higher_is_better=False)
    for _ in range(40):
        slower.update(rng.exponential(100, 300), rng.exponential(115, 300))
        faster.update(rng.exponential(100, 300), rng.exponential(85, 300))
    assert slower.decision == "worse" and slower.confidence_sequence()[0] > 0
    assert faster.decision == "continue" and faster.p_value > 0.05
    assert faster.confidence_sequence()[0] < 0  # a faster treatment is never bounded above zero


@pytest.mark.parametrize(
    ("alternative", "higher_is_better"), [("worse", True), ("better", False), ("two-sided", True)]
)
def test_confidence_bound_is_where_the_shifted_test_flips(alternative, higher_is_better):
    # A bound of the sequence is the smallest shift of the treatment that the same test rejects.
    rng = np.random.default_rng(14)
    a, b = rng.normal(0, 1, 3000), rng.normal(0, 1, 3000)
    test = MixtureSPRT(alternative=alternative, higher_is_better=higher_is_better)
    test.update(a, b)
    high = test.confidence_sequence()[1]
    assert math.isfinite(high) and test.decision == "continue"
    for shift, decided in ((high - 1e-9, False), (high + 1e-9, True)):
        shifted = MixtureSPRT(alternative=alternative, higher_is_better=higher_is_better)
        shifted.update(a, b - shift)
        assert (shifted.decision != "continue") == decided


def test_one_sided_is_more_powerful_in_its_direction():
    rng = np.random.default_rng(10)
    a, b = rng.random(20_000) < 0.10, rng.random(20_000) < 0.085
    two_sided, worse = MixtureSPRT(), MixtureSPRT(alternative="worse")
    two_sided.update(a, b)
    worse.update(a, b)
    assert worse.p_value < two_sided.p_value


# --- mixture SPRT: mechanics -------------------------------------------------------------------


def test_mixture_sprt_follows_the_reference_formula():
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, 800), rng.normal(0.15, 1, 800)
    test = MixtureSPRT(tau=0.2, sigma=1.0, min_per_arm=2)
    test.update(a, b)
    n = np.arange(1, 801)
    d = np.cumsum(b - a) / n
    s2, t2 = 1.0, 0.04
    likelihood = np.sqrt(2 * s2 / (2 * s2 + n * t2)) * np.exp(n**2 * t2 * d**2 / (4 * s2 * (2 * s2 + n * t2)))
    assert test.p_value == pytest.approx(min(1.0, (1 / likelihood[1:]).min()), rel=1e-9)
    assert test.effect == pytest.approx(d[-1]) and test.n == 800


def test_every_value_counts_without_waiting_for_a_partner():
    test = MixtureSPRT()
    test.update([1.0, 2.0, 3.0], [10.0])
    assert test.counts == (3, 1) and test.n == 1 and test.effect == pytest.approx(10.0 - 2.0)
    test.update([], [20.0, 30.0, 40.0])
    assert test.counts == (3, 4) and test.effect == pytest.approx(25.0 - 2.0)


def _aa_false_decisions(shares, start, end, experiments=200, looks=40, per_look=3000, seed=0):
    """Share of A/A experiments (control and one candidate, equal rates drifting from ``start`` to
    ``end`` over the looks) in which the candidate's test rejects."""
    rng = np.random.default_rng(seed)
    rates = np.linspace(start, end, looks)
    rejected = 0
    for _ in range(experiments):
        test = MixtureSPRT()
        for rate in rates:
            n_a, n_b = rng.multinomial(per_look, shares)[:2]
            test.update(rng.random(n_a) < rate, rng.random(n_b) < rate)
        rejected += test.decision != "continue"
    return rejected / experiments


def test_unequal_shares_with_a_drifting_rate_keep_false_decisions_at_alpha():
    # 80/10/10 traffic, rate 10% -> 15%: pairing in arrival order compared the candidate's values
    # with control values from far earlier looks and rejected in nearly every A/A experiment.
    assert _aa_false_decisions((0.8, 0.1, 0.1), 0.10, 0.15) <= 0.08


def test_a_small_arm_of_rare_conversions_keeps_false_decisions_at_alpha():
    # 90/10 traffic, a 3% rate: the small arm holds a handful of successes, and its own variance
    # p(1 - p) comes out low exactly when its rate does. Each arm's own variance (s_a²/n_a + s_b²/n_b)
    # rejected in 10-15% of these A/A experiments (seeds 0-4), mostly with the small arm lower;
    # the pooled variance, 2-3%.
    assert _aa_false_decisions((0.9, 0.1), 0.03, 0.03, experiments=400, looks=10, per_look=2000) <= 0.05


def test_periods_keep_a_change_of_share_from_looking_like_an_effect():
    rng = np.random.default_rng(3)
    pooled, by_period = MixtureSPRT(), MixtureSPRT()
    # The candidate goes from 10% to 90% of the traffic just as the rate doubles for both arms.
    for period, (share, rate) in enumerate([(0.1, 0.10), (0.9, 0.20)]):
        on_b = rng.random(20_000) < share
        outcome = rng.random(20_000) < rate
        pooled.update(outcome[~on_b], outcome[on_b])
        by_period.update(outcome[~on_b], outcome[on_b], period=period)
    assert pooled.decision == "reject" and pooled.effect > 0.05
    assert by_period.decision == "continue" and abs(by_period.effect) < 0.01


def test_a_period_with_one_arm_only_says_nothing():
    test = MixtureSPRT(alternative="worse")
    test.update(np.ones(500), np.zeros(500) + np.arange(500) % 2, period="all-candidate")
    test_before = test.state_dict()
    test.update([], np.zeros(1000), period="no-control")
    assert test.n == 500 and test.p_value == test_before["p_value"]


def test_state_does_not_grow_with_the_stream():
    test = MixtureSPRT()
    rng = np.random.default_rng(4)
    sizes = []
    for _ in range(30):
        test.update(rng.random(800) < 0.1, rng.random(100) < 0.1)
        sizes.append(len(json.dumps(test.state_dict())))
    assert max(sizes) < 500  # a fixed number of floats, not the values themselves


def test_a_state_saved_by_the_paired_version_resumes():
    old = {
        "config": {
            "alpha": 0.05,
            "tau": None,
            "sigma": None,
            "alternative": "two-sided",
            "higher_is_better": True,
            "prior_effect": 0.1,
            "min_pairs": 100,
        },
        "n": 4,
        "mean_a": 0.5,
        "m2_a": 1.0,
        "mean_b": 0.25,
        "m2_b": 0.75,
        "p_value": 0.7,
        "low": None,
        "high": None,
        "pending_a": [1.0, 0.0],
        "pending_b": [],
        "dropped": 0,
    }
    test = MixtureSPRT()
    test.load_state_dict(old)
    assert test.counts == (6, 4) and test.p_value == 0.7
    assert test.effect == pytest.approx(0.25 - 0.5)  # the waiting values join the control's mean of 0.5


def test_the_first_pairs_never_reject():
    test = MixtureSPRT()  # min_pairs=100
    test.update(np.zeros(99) + np.arange(99) % 2, np.ones(99) * 5 + np.arange(99) % 2)
    assert test.decision == "continue" and test.p_value == 1.0
    assert test.confidence_sequence() == (-math.inf, math.inf)
    test.update([0.0], [6.0])
    assert test.decision == "reject"


def test_cutting_the_stream_differently_gives_the_same_answer():
    rng = np.random.default_rng(12)
    a, b = rng.random(5000) < 0.10, rng.random(5000) < 0.115
    whole, pieces = MixtureSPRT(), MixtureSPRT()
    whole.update(a, b)
    cuts = np.sort(rng.choice(5000, 40, replace=False))
    for a_part, b_part in zip(np.split(a, cuts), np.split(b, cuts), strict=True):
        pieces.update(a_part, b_part)
    assert pieces.n == whole.n
    assert pieces.p_value == pytest.approx(whole.p_value, rel=1e-9)
    assert pieces.confidence_sequence() == pytest.approx(whole.confidence_sequence(), rel=1e-9)


@pytest.mark.parametrize("kwargs", [{}, {"alternative": "worse", "higher_is_better": False}, {"sigma": 0.3}])
def test_state_dict_round_trip_mid_stream_decides_identically(kwargs):
    rng = np.random.default_rng(13)
    batches = [
        (rng.random(rng.integers(50, 150)) < 0.1, rng.random(rng.integers(50, 150)) < 0.13) for _ in range(60)
    ]
    uninterrupted = MixtureSPRT(**kwargs)
    for a, b in batches[:25]:
        uninterrupted.update(a, b)
    resumed = MixtureSPRT(**kwargs)
    resumed.load_state_dict(json.loads(json.dumps(uninterrupted.state_dict(), allow_nan=False)))
    assert resumed.state_dict() == uninterrupted.state_dict()
    for a, b in batches[25:]:
        uninterrupted.update(a, b)
        resumed.update(a, b)
        assert (resumed.p_value, resumed.decision, resumed.effect, resumed.n) == (
            uninterrupted.p_value,
            uninterrupted.decision,
            uninterrupted.effect,
            uninterrupted.n,
        )
        assert resumed.confidence_sequence() == uninterrupted.confidence_sequence()
    assert resumed.counts == uninterrupted.counts


def test_state_from_a_differently_configured_test_is_refused():
    state = MixtureSPRT(alternative="worse").state_dict()
    with pytest.raises(ValueError, match="configured"):
        MixtureSPRT().load_state_dict(state)


def test_reset_forgets_everything():
    test = MixtureSPRT()
    test.update(np.ones(300), np.zeros(300) + np.arange(300) % 2)
    test.reset()
    assert test.state_dict() == MixtureSPRT().state_dict() and math.isnan(test.effect)


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: two_proportion_ztest(10, 100, 12, 100, alpha=0.0), r"alpha must be in \(0, 1\), got 0.0"),
        (lambda: two_proportion_ztest(10, 100, 12, 100, alpha=1.5), "alpha must be in"),
        (lambda: two_proportion_ztest(-1, 100, 12, 100), "successes_a must be >= 0, got -1"),
        (lambda: two_proportion_ztest(10, 100, 12, -5), "n_b must be >= 0, got -5"),
        (lambda: two_proportion_ztest(10, 100, 120, 100), "successes_b must be <= n_b = 100, got 120"),
        (lambda: two_proportion_ztest(10, 0, 1, 10), "n_a must be >= 1"),
        (lambda: two_proportion_ztest(10, 100, 12, 100, alternative="greater"), "alternative must be one of"),
        (lambda: welch_ttest([], [1.0, 2.0]), "a needs at least 2 values, got 0"),
        (lambda: welch_ttest([1.0, 2.0], [1.0]), "b needs at least 2 values, got 1"),
        (lambda: welch_ttest([1.0, math.nan], [1.0, 2.0]), "a has 1 NaN"),
        (lambda: mann_whitney([1.0], []), "b needs at least 1 values, got 0"),
        (lambda: holm([0.1, math.nan]), r"p_values must be in \[0, 1\], got nan"),
        (lambda: benjamini_hochberg([0.1, 1.2]), "p_values must be in"),
        (lambda: sample_size_proportions(0.1, 0.0), "min_effect must be a finite non-zero number, got 0.0"),
        (lambda: sample_size_proportions(0.1, 0.02, power=1.0), r"power must be in \(0, 1\), got 1.0"),
        (lambda: sample_size_proportions(0.1, 0.02, power=0.0), "power must be in"),
        (lambda: sample_size_proportions(0.1, -0.02, alternative="larger"), "min_effect must be > 0"),
        (lambda: sample_size_proportions(1.2, 0.02), r"p_control must be in \(0, 1\), got 1.2"),
        (lambda: sample_size_proportions(0.99, 0.02), r"p_control \+ effect must be a rate in \[0, 1\]"),
        (lambda: sample_size_means(0.0, 0.1), "sd must be a finite number > 0, got 0.0"),
        (lambda: sample_size_means(1.0, 0.1, ratio=0), "ratio must be"),
        (lambda: power_proportions(0.1, 0.02, 0), "n_per_arm must be"),
        (lambda: cuped([1.0, 2.0, 3.0], [1.0, 2.0]), "same length.*got 3 and 2"),
        (lambda: cuped([1.0, math.inf], [1.0, 2.0]), "y has 1 NaN or infinite"),
        (lambda: MixtureSPRT(alpha=1.0), "alpha must be in"),
        (lambda: MixtureSPRT(tau=-1.0), "tau must be a finite number > 0, got -1.0"),
        (lambda: MixtureSPRT(sigma=0.0), "sigma must be"),
        (
            lambda: MixtureSPRT(alternative="less"),
            r"alternative must be one of \['two-sided', 'worse', 'better'\]",
        ),
        (lambda: MixtureSPRT(min_per_arm=1), "min_per_arm must be an integer >= 2, got 1"),
        (lambda: MixtureSPRT().update([1.0], [1.0], period=1.5), "period must be an int, a str or None"),
        (lambda: MixtureSPRT().update([1.0, math.nan], [1.0]), "a_values has 1 NaN"),
        (lambda: MixtureSPRT().update([[1.0]], [1.0]), "a_values must be 1-D"),
    ],
)
def test_bad_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
