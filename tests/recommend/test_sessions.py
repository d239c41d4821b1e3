"""Live sessions: feedback reaches the unit's next ranking and no other unit's; sessions expire after
their time-to-live, the store stays within its bound by evicting the least recently used, and a flood
of feedback from one unit is refused without touching anyone else's session."""

import numpy as np
import pytest

from perennial.recommend import (
    BadFeedback,
    LiveRecommender,
    RateLimited,
    Recommender,
    SessionExpired,
    SessionStore,
    UnknownSession,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def live(clock: Clock | None = None, **store) -> LiveRecommender:
    model = Recommender.synthetic(n_items=200, dim=6, seed=0)
    return LiveRecommender(model, SessionStore(clock=clock or Clock(), **store))


def test_feedback_changes_the_next_ranking_of_that_unit_only():
    rec = live()
    first_a, first_b = rec.rank("a", 10)["items"], rec.rank("b", 10)["items"]
    assert first_a == first_b  # two cold units: both get the population's ranking
    liked = rec.rank("a", 50)["items"][-5:]  # items the prior ranks low
    for item in liked:
        rec.feedback("a", item, rating=5.0)
    after_a = rec.rank("a", 10)
    assert after_a["items"] != first_a and after_a["interactions"] == 5
    assert not set(liked) & set(after_a["items"])  # never recommends what the session already rated
    assert rec.rank("b", 10) == {**rec.rank("b", 10), "items": first_b, "interactions": 0}


def test_sessions_expire_after_their_time_to_live():
    clock = Clock()
    rec = live(clock, ttl_s=60)
    rec.rank("a", 5)
    rec.feedback("a", 1, rating=4.0)
    clock.now = 59.0
    rec.feedback("a", 2, rating=4.0)  # activity renews the time-to-live
    clock.now = 59.0 + 61.0
    with pytest.raises(SessionExpired, match=r"expired: idle for 61 s, over its time-to-live of 60 s"):
        rec.feedback("a", 3, rating=4.0)
    answer = rec.rank("a", 5)  # a new session, from the prior again
    assert answer["session"] == "started" and answer["interactions"] == 0
    assert rec.store.stats()["expired"] == 1


def test_the_store_evicts_the_least_recently_used_beyond_its_bound():
    rec = live(max_sessions=3)
    for unit in ("a", "b", "c"):
        rec.rank(unit, 5)
    rec.feedback("a", 7, rating=5.0)  # a is now the most recently used; b the least
    rec.rank("d", 5)
    assert len(rec.store) == 3 and "b" not in rec.store
    with pytest.raises(UnknownSession, match="unit 'b' has no session"):
        rec.feedback("b", 7, rating=5.0)
    assert rec.rank("a", 5)["interactions"] == 1
    assert rec.store.stats()["evicted"] == 1


def test_a_flood_from_one_unit_is_rate_limited_and_others_are_untouched():
    clock = Clock()
    rec = live(clock, rate=2.0, burst=5)
    rec.rank("flood", 5)
    rec.rank("calm", 5)
    for item in range(5):
        rec.feedback("flood", item, rating=4.0)
    vector = rec.store.get("flood").w.copy()
    with pytest.raises(RateLimited, match=r"too much feedback from unit 'flood'.*retry in 0\.50 s"):
        rec.feedback("flood", 10, rating=4.0)
    assert len(rec.store.get("flood")) == 5 and np.array_equal(rec.store.get("flood").w, vector)
    assert rec.feedback("calm", 10, rating=4.0)["interactions"] == 1
    clock.now = 0.5  # one token back
    assert rec.feedback("flood", 10, rating=4.0)["interactions"] == 6


def test_bad_feedback_is_refused_and_changes_nothing():
    rec = live()
    rec.rank("a", 5)
    rec.feedback("a", 1, rating=4.0)
    with pytest.raises(
        BadFeedback, match=r"item 999 is not in the catalogue of version synthetic \(200 items\)"
    ):
        rec.feedback("a", 999, rating=4.0)
    with pytest.raises(BadFeedback, match=r"rating 7 is outside version synthetic's range 0.5..5"):
        rec.feedback("a", 2, rating=7.0)
    with pytest.raises(BadFeedback, match="exactly one of 'rating' or 'click'"):
        rec.feedback("a", 2, rating=4.0, click=True)
    assert rec.store.get("a").items.tolist() == [1]
    with pytest.raises(UnknownSession):
        rec.feedback("nobody", 1, rating=4.0)


def test_clicks_and_repeated_items():
    rec = live()
    rec.rank("a", 5)
    rec.feedback("a", 3, click=True)
    rec.feedback("a", 4, click=False)
    rec.feedback("a", 3, rating=1.0)  # rating an item again replaces the earlier interaction
    session = rec.store.get("a")
    assert session.items.tolist() == [4, 3] and session.ratings.tolist() == [0.5, 1.0]


def test_sweep_drops_only_expired_sessions():
    clock = Clock()
    store = SessionStore(ttl_s=10, clock=clock)
    store.open("old")
    clock.now = 8.0
    store.open("new")
    clock.now = 15.0
    assert store.sweep() == 1 and "new" in store and "old" not in store


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_sessions": 0}, "max_sessions must be"),
        ({"ttl_s": float("nan")}, "ttl_s must be"),
        ({"rate": -1.0}, "rate must be"),
        ({"burst": 0.5}, "burst must be"),
    ],
)
def test_bad_store_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SessionStore(**kwargs)
