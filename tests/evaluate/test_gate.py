"""The promotion gate: a clearly worse or forgetful candidate is rejected, noise and small drops are not."""

import numpy as np
import pytest

from perennial.evaluate import Evaluation, GateDecision, PromotionGate
from perennial.evaluate.gate import pooled


def _eval(correct: np.ndarray, loss: float = 0.5, f1: float | None = None) -> Evaluation:
    correct = np.asarray(correct, bool)
    accuracy = float(correct.mean()) if len(correct) else float("nan")
    return Evaluation(accuracy, loss, accuracy if f1 is None else f1, len(correct), correct)


def _pair(n: int, champion_right: int, lost: int, gained: int = 0) -> tuple[Evaluation, Evaluation]:
    """(candidate, champion) on ``n`` shared examples: the candidate loses ``lost`` of the champion's
    correct answers and gains ``gained`` of its mistakes."""
    champ = np.arange(n) < champion_right
    cand = champ.copy()
    cand[:lost] = False
    cand[champion_right : champion_right + gained] = True
    return _eval(cand), _eval(champ)


def _fresh(n: int, right: int) -> Evaluation:
    return _eval(np.arange(n) < right)


TESTS = ["score", "bootstrap"]


@pytest.mark.parametrize("test", TESTS)
def test_rejects_a_clearly_worse_candidate(test):
    cand, champ = _pair(200, champion_right=180, lost=40)
    decision = PromotionGate(test=test, tolerance=0.02).decide(cand, champ)
    assert not decision.promote and decision.label == "rejected"
    assert "not shown within 0.02" in decision.reason and "fresh data" in decision.reason
    numbers = decision.numbers
    assert numbers["fresh_diff"] == pytest.approx(-0.2) and numbers["fresh_lower_bound"] < -0.2
    assert numbers["p_value"] > 0.99 and numbers["test"] == test


@pytest.mark.parametrize("test", TESTS)
@pytest.mark.parametrize(("lost", "gained"), [(0, 0), (50, 50), (0, 75), (25, 100)])
def test_promotes_an_equal_or_better_candidate_when_the_rows_can_show_it(test, lost, gained):
    # 2000 rows, at most 6% of them discordant: enough to tell a 2-point drop from none.
    cand, champ = _pair(2000, champion_right=1500, lost=lost, gained=gained)
    decision = PromotionGate(test=test, tolerance=0.02).decide(cand, champ)
    assert decision.promote and decision.label == "promoted", decision.reason
    assert decision.numbers["fresh_lower_bound"] > -0.02 and decision.numbers["p_value"] < 0.05
    assert decision.numbers["min_detectable_drop"] < 0.02


@pytest.mark.parametrize("test", TESTS)
def test_an_equal_candidate_on_too_few_rows_is_not_promoted_and_the_reason_says_so(test):
    # 73 fresh rows (a 365-day window's held-out 20%), 10 of them discordant, no net change:
    # the rows cannot rule out a 2-point drop, and the decision names how much they can.
    cand, champ = _pair(73, champion_right=55, lost=5, gained=5)
    decision = PromotionGate(test=test, tolerance=0.02).decide(cand, champ)
    assert decision.numbers["fresh_diff"] == 0
    assert not decision.promote
    assert decision.numbers["min_detectable_drop"] > 0.05
    assert "73 rows can tell apart drops of" in decision.reason
    # A tolerance above what the rows can tell apart lets the same candidate through.
    wide = PromotionGate(test=test, tolerance=decision.numbers["min_detectable_drop"]).decide(cand, champ)
    assert wide.promote, wide.reason


@pytest.mark.parametrize("test", TESTS)
def test_a_real_drop_within_tolerance_is_promoted_when_shown_within_it(test):
    # 1 point worse on 10,000 rows: clearly a drop (McNemar p ~ 1e-23), but clearly within 2 points.
    cand, champ = _pair(10_000, champion_right=9000, lost=100)
    decision = PromotionGate(tolerance=0.02, test=test).decide(cand, champ)
    assert decision.promote and -0.02 < decision.numbers["fresh_lower_bound"] < -0.01


def test_a_drop_beyond_tolerance_on_few_disagreements_is_rejected():
    # 6 points worse, but only 5 disagreements: the old rule promoted it for want of significance;
    # non-inferiority asks the rows to show it is within tolerance, and they cannot.
    cand, champ = _pair(50, champion_right=40, lost=4, gained=1)
    decision = PromotionGate(tolerance=0.02).decide(cand, champ)
    assert decision.numbers["fresh_diff"] < -0.02
    assert not decision.promote


@pytest.mark.parametrize("test", TESTS)
def test_an_observed_drop_at_the_tolerance_is_never_promoted(test):
    # The lower bound sits below the estimate, so an estimate at -tolerance cannot pass.
    cand, champ = _pair(10_000, champion_right=9000, lost=200)
    decision = PromotionGate(tolerance=0.02, test=test).decide(cand, champ)
    assert decision.numbers["fresh_diff"] == pytest.approx(-0.02)
    assert not decision.promote and decision.numbers["p_value"] >= 0.05


def test_candidates_at_the_margin_are_promoted_at_most_alpha_of_the_time():
    # True drop exactly the tolerance, 400 rows, 10% discordant: the error alpha bounds.
    rng = np.random.default_rng(11)
    gate = PromotionGate(tolerance=0.02, alpha=0.05)
    promoted = 0
    trials = 300
    for table in rng.multinomial(400, [0.04, 0.06, 0.9], size=trials):
        gained, lost = table[:2]
        cand, champ = _pair(400, champion_right=300, lost=lost, gained=gained)
        promoted += gate.decide(cand, champ).promote
    assert promoted / trials <= 0.05 + 0.03  # binomial noise on 300 trials: sd 1.3 points


def test_zero_tolerance_promotes_only_a_candidate_shown_better():
    cand, champ = _pair(10_000, champion_right=9000, lost=100)
    assert not PromotionGate(tolerance=0.0).decide(cand, champ).promote
    same = _pair(10_000, champion_right=9000, lost=50, gained=50)
    assert not PromotionGate(tolerance=0.0).decide(*same).promote
    better = _pair(10_000, champion_right=9000, lost=50, gained=150)
    assert PromotionGate(tolerance=0.0).decide(*better).promote


@pytest.mark.parametrize("test", TESTS)
def test_no_fresh_rows_show_nothing(test):
    empty = _eval(np.zeros(0, bool))
    decision = PromotionGate(test=test).decide(empty, empty)
    assert not decision.promote and np.isnan(decision.numbers["fresh_lower_bound"])
    # tolerance 1 is the pass-everything gate the benchmarks and tests use
    assert PromotionGate(test=test, tolerance=1.0).decide(empty, empty).promote


@pytest.mark.parametrize("test", TESTS)
def test_rejects_forgetting_beyond_tolerance(test):
    fresh = _fresh(400, 320)  # identical models: 400 rows show them within 2 points
    decision = PromotionGate(tolerance=0.02, forgetting_tolerance=0.05, test=test).decide(
        fresh, fresh, past_candidate=_fresh(300, 240), past_champion=_fresh(300, 270)
    )
    assert not decision.promote
    assert "forget" in decision.reason
    assert decision.numbers["past_drop"] == pytest.approx(0.1)
    assert decision.numbers["n_past"] == 300


def test_tolerates_forgetting_within_tolerance():
    fresh = _fresh(400, 320)  # identical models: 400 rows show them within 2 points
    decision = PromotionGate(tolerance=0.02, forgetting_tolerance=0.05).decide(
        fresh, fresh, past_candidate=_fresh(300, 258), past_champion=_fresh(300, 270)
    )
    assert decision.promote
    assert decision.numbers["past_drop"] == pytest.approx(0.04)


def test_worse_on_fresh_data_is_reported_before_forgetting():
    cand, champ = _pair(200, champion_right=180, lost=40)
    decision = PromotionGate(tolerance=0.02).decide(cand, champ, _fresh(100, 10), _fresh(100, 90))
    assert not decision.promote and "not shown within" in decision.reason


@pytest.mark.parametrize("past", [None, _fresh(0, 0)])
def test_no_past_data_means_no_forgetting_check(past):
    fresh = _fresh(400, 320)  # identical models: 400 rows show them within 2 points
    trusted_or_none = _fresh(100, 100) if past is not None else None
    decision = PromotionGate(tolerance=0.02).decide(fresh, fresh, past, trusted_or_none)
    assert decision.promote and "past_drop" not in decision.numbers


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"test": "wilcoxon"}, ["'wilcoxon'", "score", "t", "bootstrap"]),
        ({"test": "mcnemar"}, ["'mcnemar'", "gate.test=score", "non-inferiority"]),
        ({"tolerance": -0.1}, ["tolerance", "-0.1"]),
        ({"tolerance": 2}, ["tolerance", "2"]),
        ({"bootstrap_samples": 0}, ["bootstrap_samples", "0"]),
        ({"alpha": 2}, ["alpha", "2"]),
        ({"alpha": 0}, ["alpha", "0"]),
        ({"past_windows": -1}, ["past_windows", "-1"]),
    ],
)
def test_bad_config_is_refused_naming_the_value(kwargs, names):
    with pytest.raises(ValueError) as err:
        PromotionGate(**kwargs)
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("past_windows", "windows", "expected"),
    [
        (None, [0, 1, 2, 3], [0, 1, 2, 3]),
        (2, [0, 1, 2, 3], [2, 3]),
        (0, [0, 1, 2, 3], []),
        (5, [0, 1, 2], [0, 1, 2]),  # fewer earlier windows than asked for: all of them
        (5, [], []),
    ],
)
def test_past_picks_the_most_recent_earlier_windows(past_windows, windows, expected):
    assert PromotionGate(past_windows=past_windows).past(windows) == expected


def test_decision_label():
    assert GateDecision(True, "ok").label == "promoted"
    assert GateDecision(False, "no").label == "rejected"


def test_pooled_weights_by_size():
    small = _eval(np.arange(100) < 90, loss=0.2, f1=0.8)
    large = _eval(np.arange(300) < 150, loss=1.0, f1=0.4)
    p = pooled([small, large])
    assert p.n == 400
    assert p.accuracy == pytest.approx(240 / 400)
    assert p.loss == pytest.approx((0.2 * 100 + 1.0 * 300) / 400)
    assert p.f1 == pytest.approx((0.8 * 100 + 0.4 * 300) / 400)
    np.testing.assert_array_equal(p.correct, np.r_[small.correct, large.correct])


def test_pooled_skips_empty_sets():
    empty = _eval(np.zeros(0, bool))
    assert pooled([]) is None and pooled([empty]) is None
    p = pooled([empty, _eval(np.arange(10) < 7)])
    assert p.n == 10 and p.accuracy == pytest.approx(0.7) and not np.isnan(p.loss)
