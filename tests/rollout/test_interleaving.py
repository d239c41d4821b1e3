"""Interleaving: the shown lists are fair mixes of the two rankings, clicks credit the right ranker,
equal rankers tie, a better ranker wins decisively, and bad impressions are refused by name."""

import json

import numpy as np
import pytest
from scipy import stats

from perennial.rollout.clicks import CascadeClickModel
from perennial.rollout.interleaving import (
    InterleavingTally,
    Outcome,
    balanced,
    credit,
    probabilistic,
    sign_test,
    team_draft,
)


def _random_pair(rng: np.random.Generator, n: int = 12, pool: int = 16) -> tuple[list[int], list[int]]:
    """Two rankings over overlapping subsets of ``pool`` items."""
    return rng.permutation(pool)[:n].tolist(), rng.permutation(pool)[:n].tolist()


def test_team_draft_takes_turns_and_shows_each_item_once():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b = _random_pair(rng)
        mixed = team_draft(a, b, rng, length=10)
        assert len(mixed.shown) == 10
        assert len(set(mixed.shown)) == len(mixed.shown)
        assert mixed.shown[0] in (a[0], b[0])
        assert set(mixed.shown) <= set(a) | set(b)
        size_a, size_b = mixed.teams.count("a"), mixed.teams.count("b")
        assert abs(size_a - size_b) <= 1
        # each team's items appear in the order that team's ranker ranks them
        for team, ranking in (("a", a), ("b", b)):
            picked = [item for item, t in zip(mixed.shown, mixed.teams, strict=True) if t == team]
            assert picked == sorted(picked, key=ranking.index)


def test_team_draft_fills_from_the_longer_ranking_when_the_shorter_runs_out():
    mixed = team_draft([1], [2, 3, 4, 5], np.random.default_rng(0))
    assert sorted(mixed.shown) == [1, 2, 3, 4, 5]
    assert mixed.teams.count("a") == 1


def test_team_draft_click_credits_the_team_that_placed_the_item():
    rng = np.random.default_rng(3)
    for _ in range(50):
        mixed = team_draft([1, 2, 3, 4], [4, 3, 2, 1], rng)
        position = mixed.shown.index(4)
        expected = mixed.teams[position]
        outcome = credit(mixed, [position])
        assert outcome.winner == expected
        assert (outcome.clicks_a, outcome.clicks_b) == ((1, 0) if expected == "a" else (0, 1))
    assert credit(mixed, []).winner == "tie"


@pytest.mark.parametrize("interleave", [team_draft, balanced, probabilistic])
def test_identical_rankings_are_a_tie_in_expectation(interleave):
    rng = np.random.default_rng(1)
    user = CascadeClickModel.preset("informational", seed=2)
    tally, scores = InterleavingTally(), []
    for _ in range(2000):
        ranking = rng.permutation(20)[:10].tolist()
        relevance = rng.integers(0, 3, size=10)
        mixed = interleave(ranking, list(ranking), rng, length=10)
        outcome = credit(mixed, user.clicks(relevance))
        tally.update(outcome)
        scores.append(outcome.score)
    result = tally.compute()
    assert result.p_value > 0.01
    assert abs(result.delta) < 0.05
    if interleave is balanced:  # both rankers place every item equally: nothing to credit
        assert tally.ties == 2000
    if interleave is probabilistic:  # the coin still drew teams, but the marginalised score is 0
        assert not any(scores)


@pytest.mark.parametrize("interleave", [team_draft, balanced, probabilistic])
def test_the_ranker_that_puts_clicked_items_on_top_wins(interleave):
    rng = np.random.default_rng(4)
    user = CascadeClickModel.preset("navigational", seed=5)
    tally = InterleavingTally()
    for _ in range(300):
        relevance = dict(enumerate(rng.integers(0, 3, size=15).tolist()))
        a = rng.permutation(15).tolist()  # knows nothing
        b = sorted(relevance, key=lambda item: -relevance[item] + 0.1 * rng.random())  # knows the user
        mixed = interleave(a, b, rng, length=10)
        tally.update(credit(mixed, user.clicks([relevance[item] for item in mixed.shown])))
    result = tally.compute()
    assert tally.wins_b > 2 * tally.wins_a
    assert result.p_value < 1e-6
    assert result.preferred == "b" and result.delta > 0.25


def test_balanced_interleaving_and_its_credit_on_a_hand_computed_example():
    a, b = ["a", "b", "c", "d"], ["b", "e", "a", "f"]
    firsts = {}
    for seed in range(20):
        mixed = balanced(a, b, np.random.default_rng(seed))
        firsts[mixed.shown[0]] = mixed
    # A first: a, b, (b again: skipped), e, c, (a again: skipped), d, f
    assert firsts["a"].shown == ("a", "b", "e", "c", "d", "f")
    # B first: b, a, e, (b again), (a again), c, f, d
    assert firsts["b"].shown == ("b", "a", "e", "c", "f", "d")

    mixed = firsts["a"]
    assert mixed.rankings == (tuple(a), tuple(b))
    # lowest click e: rank 2 in B, absent from A, so k = 2; A's top 2 {a, b}, B's top 2 {b, e}
    assert credit(mixed, [2]) == Outcome("b", 0, 1, 1.0)
    # lowest click c: rank 3 in A, so k = 3; A's top 3 holds a and c, B's top 3 holds a only
    assert credit(mixed, [0, 3]) == Outcome("a", 2, 1, -1.0)
    # a click on b, ranked 1st by B and 2nd by A: k = 1, and only B's top 1 holds it
    assert credit(mixed, [1]) == Outcome("b", 0, 1, 1.0)
    # clicks on a and b: k = 1 again (b is B's first), A's top 1 {a}, B's top 1 {b}
    assert credit(mixed, [0, 1]) == Outcome("tie", 1, 1, 0.0)
    assert credit(mixed, []).winner == "tie"


def _random_click_share_b(interleave, clicks, impressions=3000, seed=0):
    """B's share of the decided impressions, and the mean score, when B is A without its top item
    plus a new one at the bottom (5 of 6 items shared) and users prefer neither: they click one
    shown position at random (``clicks="one"``) or each position p with probability 0.6 / (p + 1)
    (``"position"``), whatever it shows."""
    rng = np.random.default_rng(seed)
    wins, scores = {"a": 0, "b": 0, "tie": 0}, []
    for _ in range(impressions):
        items = rng.permutation(7).tolist()
        a, b = items[:6], [*items[1:6], items[6]]
        mixed = interleave(a, b, rng, length=6)
        if clicks == "one":
            clicked = [int(rng.integers(len(mixed)))]
        else:
            clicked = np.flatnonzero(rng.random(len(mixed)) < 0.6 / np.arange(1, len(mixed) + 1)).tolist()
        outcome = credit(mixed, clicked)
        wins[outcome.winner] += 1
        scores.append(outcome.score)
    return wins["b"] / (wins["a"] + wins["b"]), float(np.mean(scores))


@pytest.mark.parametrize("clicks", ["one", "position"])
@pytest.mark.parametrize("interleave", [team_draft, probabilistic])
def test_random_clicks_favour_neither_ranker(interleave, clicks):
    # The sign of probabilistic interleaving's marginalised score gave B 61% of the decided
    # impressions with one random click; the drawn teams give each half, and the score's mean is 0.
    share_b, mean_score = _random_click_share_b(interleave, clicks)
    assert abs(share_b - 0.5) < 0.04 and abs(mean_score) < 0.04


def test_balanced_interleaving_is_biased_by_overlapping_lists():
    # Why the live rollouts refuse it: users who prefer neither ranker still "prefer" B.
    share_b, _ = _random_click_share_b(balanced, "position")
    assert share_b > 0.65


def test_probabilistic_interleaving_marginalises_over_who_placed_each_item():
    mixed = probabilistic([1, 2, 3], [3, 2, 1], np.random.default_rng(0), tau=3.0)
    assert sorted(mixed.shown) == [1, 2, 3]
    assert all(0.0 <= p <= 1.0 for p in mixed.prob_a)
    top = mixed.shown.index(1)  # ranked 1st by A and last by B: A most likely placed it
    outcome = credit(mixed, [top])
    assert outcome.winner == mixed.teams[top]  # the team the coin drew wins, not the likelier one
    assert outcome.score == pytest.approx(1 - 2 * mixed.prob_a[top])
    assert outcome.clicks_a == pytest.approx(mixed.prob_a[top])


@pytest.mark.parametrize("wins_a,wins_b,ties", [(0, 0, 5), (10, 10, 3), (3, 17, 0), (120, 80, 40), (1, 0, 0)])
def test_sign_test_is_the_exact_binomial_test_on_decided_impressions(wins_a, wins_b, ties):
    result = sign_test(wins_a, wins_b, ties)
    decided = wins_a + wins_b
    expected = stats.binomtest(wins_b, decided, 0.5).pvalue if decided else 1.0
    assert result.p_value == pytest.approx(expected, rel=1e-12)
    total = decided + ties
    assert result.delta == pytest.approx((wins_b - wins_a) / total)
    if decided:
        assert result.share_b == pytest.approx(wins_b / decided)
    assert result.preferred == (None if result.p_value >= 0.05 else ("b" if wins_b > wins_a else "a"))


def test_tally_state_round_trips_through_json():
    tally = InterleavingTally()
    for winner in ["a", "b", "b", "tie"]:
        tally.update(Outcome(winner, 0, 0, 0.0))
    restored = InterleavingTally()
    restored.load_state_dict(json.loads(json.dumps(tally.state_dict())))
    assert restored.compute() == tally.compute()
    assert len(restored) == 4


@pytest.mark.parametrize("interleave", [team_draft, balanced, probabilistic])
def test_bad_impressions_are_refused_naming_the_bad_value(interleave):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="ranking a is empty"):
        interleave([], [1, 2], rng)
    with pytest.raises(ValueError, match="ranking b holds item 3 twice"):
        interleave([1, 2, 3], [3, 4, 3], rng)
    with pytest.raises(ValueError, match="length must be a whole number >= 1, got 0"):
        interleave([1, 2], [2, 1], rng, length=0)
    with pytest.raises(TypeError, match="numpy Generator"):
        interleave([1, 2], [2, 1], 42)
    mixed = interleave([1, 2, 3], [3, 2, 1], rng)
    with pytest.raises(ValueError, match=r"clicked position 3 is outside the shown list \(positions 0..2\)"):
        credit(mixed, [0, 3])
    with pytest.raises(ValueError, match="clicked position -1"):
        credit(mixed, [-1])


def test_sign_test_refuses_negative_counts():
    with pytest.raises(ValueError, match="wins_b must be a whole number >= 0, got -1"):
        sign_test(3, -1)
