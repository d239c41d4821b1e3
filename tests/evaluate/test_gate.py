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


TESTS = ["mcnemar", "bootstrap"]


@pytest.mark.parametrize("test", TESTS)
def test_rejects_a_clearly_worse_candidate(test):
    cand, champ = _pair(200, champion_right=180, lost=40)
    decision = PromotionGate(test=test).decide(cand, champ)
    assert not decision.promote and decision.label == "rejected"
    assert "worse on fresh data" in decision.reason
    assert decision.numbers["fresh_diff"] == pytest.approx(-0.2)
    assert decision.numbers["p_value"] < 0.001 and decision.numbers["test"] == test


@pytest.mark.parametrize("test", TESTS)
@pytest.mark.parametrize(("lost", "gained"), [(0, 0), (10, 10), (0, 15), (5, 20)])
def test_promotes_an_equal_or_better_candidate(test, lost, gained):
    cand, champ = _pair(200, champion_right=150, lost=lost, gained=gained)
    decision = PromotionGate(test=test).decide(cand, champ)
    assert decision.promote and decision.label == "promoted"
    assert decision.numbers["p_value"] > 0.5


@pytest.mark.parametrize("test", TESTS)
def test_promotes_a_slightly_worse_candidate_within_tolerance(test):
    # 1.5 points worse on 2000 examples: a real but tolerated drop (tolerance 0.02).
    cand, champ = _pair(2000, champion_right=1700, lost=30)
    decision = PromotionGate(tolerance=0.02, test=test).decide(cand, champ)
    assert decision.promote, decision.reason


def test_promotes_a_drop_beyond_tolerance_that_is_not_significant():
    cand, champ = _pair(50, champion_right=40, lost=4, gained=1)  # 6 points worse, but only 5 disagreements
    decision = PromotionGate(tolerance=0.02, test="mcnemar").decide(cand, champ)
    assert decision.numbers["fresh_diff"] < -0.02
    assert decision.numbers["p_value"] > 0.05
    assert decision.promote


def test_a_significant_drop_within_tolerance_is_not_a_rejection():
    cand, champ = _pair(10_000, champion_right=9000, lost=100)  # 1 point worse, p ~ 1e-30
    decision = PromotionGate(tolerance=0.02, test="mcnemar").decide(cand, champ)
    assert decision.numbers["p_value"] < 1e-10
    assert decision.promote


def test_zero_tolerance_rejects_any_significant_drop():
    cand, champ = _pair(10_000, champion_right=9000, lost=100)
    assert not PromotionGate(tolerance=0.0).decide(cand, champ).promote


@pytest.mark.parametrize("test", TESTS)
def test_rejects_forgetting_beyond_tolerance(test):
    fresh = _fresh(100, 80)
    decision = PromotionGate(forgetting_tolerance=0.05, test=test).decide(
        fresh, fresh, past_candidate=_fresh(300, 240), past_champion=_fresh(300, 270)
    )
    assert not decision.promote
    assert "forget" in decision.reason
    assert decision.numbers["past_drop"] == pytest.approx(0.1)
    assert decision.numbers["n_past"] == 300


def test_tolerates_forgetting_within_tolerance():
    fresh = _fresh(100, 80)
    decision = PromotionGate(forgetting_tolerance=0.05).decide(
        fresh, fresh, past_candidate=_fresh(300, 258), past_champion=_fresh(300, 270)
    )
    assert decision.promote
    assert decision.numbers["past_drop"] == pytest.approx(0.04)


def test_worse_on_fresh_data_is_reported_before_forgetting():
    cand, champ = _pair(200, champion_right=180, lost=40)
    decision = PromotionGate().decide(cand, champ, _fresh(100, 10), _fresh(100, 90))
    assert not decision.promote and "worse on fresh data" in decision.reason


@pytest.mark.parametrize("past", [None, _fresh(0, 0)])
def test_no_past_data_means_no_forgetting_check(past):
    fresh = _fresh(100, 80)
    decision = PromotionGate().decide(fresh, fresh, past, _fresh(100, 100) if past is not None else None)
    assert decision.promote and "past_drop" not in decision.numbers


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"test": "t"}, ["'t'", "mcnemar", "bootstrap"]),
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
