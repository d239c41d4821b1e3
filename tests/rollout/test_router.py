"""Sticky assignment: the same unit always gets the same arm; a canary's ramp only moves units
from control to the canary; bad weights and unknown arms are named."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from perennial.rollout.router import Router

UNITS = [f"user-{i}" for i in range(20_000)]


def test_assignment_is_sticky_and_follows_the_weights():
    router = Router({"v2": 0.5, "v3": 0.3, "v4": 0.2}, control="v2", salt="ab-1")
    first = router.route_many(UNITS)
    assert (router.route_many(UNITS) == first).all()
    again = Router({"v2": 0.5, "v3": 0.3, "v4": 0.2}, control="v2", salt="ab-1")  # a new process
    assert (again.route_many(UNITS) == first).all()
    shares = {arm: float(np.mean(first == arm)) for arm in ("v2", "v3", "v4")}
    assert shares == pytest.approx({"v2": 0.5, "v3": 0.3, "v4": 0.2}, abs=0.015)


def test_each_experiment_shuffles_units_independently():
    a = Router({"c": 0.5, "t": 0.5}, control="c", salt="exp-a").route_many(UNITS)
    b = Router({"c": 0.5, "t": 0.5}, control="c", salt="exp-b").route_many(UNITS)
    assert 0.45 < np.mean(a == b) < 0.55  # independent: agree half the time, not always


def test_canary_ramp_only_moves_units_from_control_and_never_back():
    router = Router({"v1": 0.99, "v1.1": 0.01}, control="v1", salt="canary")
    history = [router.route_many(UNITS)]
    for share in (0.05, 0.25, 0.5, 1.0):
        router.set_weights({"v1.1": share})
        history.append(router.route_many(UNITS))
        assert np.mean(history[-1] == "v1.1") == pytest.approx(share, abs=0.01)
    for before, after in itertools.pairwise(history):
        moved = before != after
        assert (before[moved] == "v1").all() and (after[moved] == "v1.1").all()


def test_raising_one_candidate_never_moves_units_between_candidates():
    router = Router({"v1": 0.9, "a": 0.05, "b": 0.05}, control="v1", salt="n", capacity={"a": 0.5, "b": 0.5})
    before = router.route_many(UNITS)
    router.set_weights({"a": 0.4})
    after = router.route_many(UNITS)
    assert (after[before == "b"] == "b").all()  # b kept every unit
    assert (after[before == "a"] == "a").all()
    assert set(before[(before != after)]) == {"v1"}


def test_removing_a_candidate_returns_its_units_to_control():
    router = Router({"v1": 0.8, "v1.1": 0.2}, control="v1", salt="x")
    router.remove("v1.1")
    assert set(router.route_many(UNITS[:2000])) == {"v1"}
    assert router.shares() == {"v1": 1.0, "v1.1": 0.0}


def test_state_round_trips_through_json():
    router = Router({"v1": 0.9, "v1.1": 0.1}, control="v1", salt="s")
    router.set_weights({"v1.1": 0.3})
    restored = Router({"v1": 1.0, "other": 0.0}, control="v1", salt="different")
    restored.load_state_dict(json.loads(json.dumps(router.state_dict())))
    assert (restored.route_many(UNITS[:3000]) == router.route_many(UNITS[:3000])).all()


@pytest.mark.parametrize(
    "weights, control, match",
    [
        ({"a": 0.5, "b": 0.6}, "a", "must sum to 1, got 1.1"),
        ({"a": 1.2, "b": -0.2}, "a", r"numbers in \[0, 1\], got \{'a': 1.2, 'b': -0.2\}"),
        ({"a": 0.5, "b": 0.5}, "c", "control arm 'c' is not among the arms"),
    ],
)
def test_bad_weights_are_named(weights, control, match):
    with pytest.raises(ValueError, match=match):
        Router(weights, control=control, salt="s")


def test_unknown_arms_and_shrinking_weights_are_refused():
    router = Router({"v1": 0.9, "v1.1": 0.1}, control="v1", salt="s")
    with pytest.raises(ValueError, match=r"unknown arm\(s\) \['v9'\]; candidates: \['v1.1'\]"):
        router.set_weights({"v9": 0.2})
    with pytest.raises(ValueError, match="weights may only grow"):
        router.set_weights({"v1.1": 0.05})
    with pytest.raises(ValueError, match="unknown arm 'v9'"):
        router.remove("v9")
