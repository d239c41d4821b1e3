"""Classifiers compared by interleaving their ranked classes: the label is the click. A model that
ranks labels higher is promoted, an identical one is rarely judged either way, a resumed rollout
decides as an uninterrupted one, and bad settings are named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perennial.rollout.live import Interleave


def _scores(y: np.ndarray, accuracy: float, rng: np.random.Generator, classes: int = 4) -> np.ndarray:
    """Class scores whose top class is the label with probability ``accuracy``."""
    scores = rng.random((len(y), classes))
    right = rng.random(len(y)) < accuracy
    scores[np.arange(len(y)), y] += np.where(right, 1.0, -1.0)
    return scores


def _windows(live: Interleave, accuracy: tuple[float, float], seed: int, windows: int = 5, size: int = 200):
    rng = np.random.default_rng(seed)
    outcome = "continue"
    for _ in range(windows):
        y = rng.integers(0, 4, size)
        champion, candidate = _scores(y, accuracy[0], rng), _scores(y, accuracy[1], rng)
        arms = live.serve(range(size), champion, candidate)
        live.feedback(arms, champion, candidate, y)
        outcome = live.end_window()
        if outcome != "continue":
            break
    return outcome


def test_the_model_that_ranks_labels_higher_is_promoted_and_the_worse_one_rejected():
    better, worse = Interleave(max_windows=10), Interleave(max_windows=10)
    better.begin("v1", "v2", salt="s")
    worse.begin("v1", "v3", salt="s")
    assert _windows(better, (0.6, 0.8), seed=0, windows=10) == "promote"
    assert _windows(worse, (0.8, 0.6), seed=0, windows=10) == "reject"
    summary = better.summary()
    assert summary["wins_candidate"] > summary["wins_champion"] and summary["p_value"] <= 0.05


def test_identical_models_are_rarely_judged_either_way_over_many_looks():
    judged = 0
    for seed in range(60):
        live = Interleave(max_windows=5, on_timeout="reject")
        live.begin("v1", "v2", salt=f"aa{seed}")
        _windows(live, (0.7, 0.7), seed=seed)
        judged += live.test.decision != "continue"
    assert judged <= 6  # alpha = 5% of 60 experiments is 3; a peeking fixed-horizon test is far above


def test_the_served_class_heads_the_shown_list_and_comes_from_the_arm_that_placed_it():
    live = Interleave(length=3)
    live.begin("v1", "v2", salt="s")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 100)
    champion, candidate = _scores(y, 0.5, rng), _scores(y, 0.5, rng)
    arms = live.serve(range(100), champion, candidate)
    served = live.answer(arms, champion, candidate)
    expected = np.where(arms == "v2", candidate.argmax(1), champion.argmax(1))
    assert (served == expected).all()
    assert 20 < (arms == "v2").sum() < 80  # a coin decides who picks first


def test_a_rollout_restored_mid_way_decides_as_an_uninterrupted_one():
    whole = Interleave(max_windows=10)
    whole.begin("v1", "v2", salt="s")
    restored = Interleave(max_windows=10)
    restored.begin("v1", "v2", salt="s")
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    for look in range(6):
        outcomes = []
        for live, rng in ((whole, rng_a), (restored, rng_b)):
            y = rng.integers(0, 4, 150)
            champion, candidate = _scores(y, 0.62, rng), _scores(y, 0.7, rng)
            live.feedback(live.serve(range(150), champion, candidate), champion, candidate, y)
            outcomes.append(live.end_window())
        assert outcomes[0] == outcomes[1]
        if look == 2:  # through JSON, as the loop's state file carries it
            state = json.loads(json.dumps(restored.state_dict()))
            restored = Interleave(max_windows=10)
            restored.load_state_dict(state, salt="s")
    assert whole.summary() == restored.summary()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"length": 1}, "rollout.length must be an integer >= 2, got 1"),
        ({"method": "zipper"}, r"rollout.method must be one of \['team_draft', 'probabilistic'\], got"),
        ({"method": "balanced"}, "rollout.method='balanced' is biased"),
        ({"min_impressions": 0}, "rollout.min_impressions must be an integer >= 2, got 0"),
        ({"max_windows": 0}, "max_windows"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Interleave(**kwargs)


def test_feedback_for_a_different_number_of_requests_is_refused():
    live = Interleave()
    live.begin("v1", "v2", salt="s")
    scores = np.random.default_rng(0).random((10, 3))
    arms = live.serve(range(10), scores, scores)
    with pytest.raises(ValueError, match="feedback for 9 requests, but 10 were served"):
        live.feedback(arms, scores, scores, np.zeros(9, int))
