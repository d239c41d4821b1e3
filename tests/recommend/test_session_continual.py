"""The session model as a continual model: each window a registry version behind a paired test on held-out
sessions, a broken update rejected with the champion kept, and a stopped updater resuming from its registry
exactly where it was."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from perennial.recommend.session_continual import SessionUpdater, session_ndcg
from perennial.recommend.session_model import SessionLearner
from perennial.recommend.session_snapshot import SessionSnapshot
from perennial.registry import Registry

N_ITEMS, LENGTH = 40, 10
LEARNER = {"dim": 16, "max_len": 8, "lr": 0.01, "epochs": 30, "finetune_epochs": 10, "replay_ratio": 1.0}
SETTINGS = {"learner": LEARNER, "like": None, "horizon": 1, "min_users": 10, "held_share": 0.3, "seed": 0}


def chains(n_users: int, window: int, step: int = 1) -> pd.DataFrame:
    """Each user walks ``LENGTH`` steps of ``step`` along a cycle of items from a random start: what comes
    next is the item ``step`` further. Users are new each window; time runs on across windows."""
    rng = np.random.default_rng(window)
    rows = []
    for u in range(n_users):
        start = rng.integers(N_ITEMS)
        for t in range(LENGTH):
            rows.append((window * 10_000 + u, int((start + step * t) % N_ITEMS), window * 1_000 + t))
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def updater(tmp_path, **kw) -> SessionUpdater:
    return SessionUpdater(Registry(tmp_path / "registry"), **{**SETTINGS, **kw})


def test_a_changed_world_is_learned_and_promoted_on_held_out_sessions(tmp_path):
    up = updater(tmp_path)
    first = up.update(chains(120, window=0), window=0)
    assert (first.version, first.decision, first.parent) == ("v1", "promoted", None)
    # The world turns: sessions now walk backwards. The champion's next-item guesses are now wrong.
    outcome = up.update(chains(120, window=1, step=-1), window=1)
    assert (outcome.version, outcome.parent, outcome.decision) == ("v1.1", "v1", "promoted")
    assert outcome.gate_users >= 10
    assert outcome.candidate_ndcg > outcome.champion_ndcg + 0.3
    assert outcome.lower_bound > -up.tolerance
    registry = up.registry
    assert registry.champion() == "v1.1"
    record = registry.get("v1.1")
    assert record.kind == "stateful" and record.trained_on_windows == [1]
    assert record.config["recommender"]["ranker"] == "session"
    assert registry.decisions("v1.1")[0]["decision"] == "promoted"
    # The server's view of the champion, from the registry alone, ranks as the updater's.
    served = SessionSnapshot.from_registry(registry, "v1.1")
    session = [5, 4, 3]
    assert served.recommend(served.session_vector(np.array(session), np.ones(3)), 3, exclude=session) == (
        up.champion_snapshot.recommend(
            up.champion_snapshot.session_vector(np.array(session), np.ones(3)), 3, exclude=session
        )
    )
    assert served.recommend(None, 3) == up.champion_snapshot.recommend(None, 3)


def test_a_broken_update_is_rejected_and_the_champion_keeps_serving(tmp_path, monkeypatch):
    up = updater(tmp_path)
    up.update(chains(120, window=0), window=0)
    fit = SessionLearner.update

    def broken(self, interactions, window):  # an update whose weights come out scrambled
        outcome = fit(self, interactions, window)
        with torch.no_grad():
            self.model.embedding.copy_(torch.randn_like(self.model.embedding))
        return outcome

    monkeypatch.setattr(SessionLearner, "update", broken)
    outcome = up.update(chains(120, window=1), window=1)
    assert outcome.decision == "rejected"
    assert outcome.candidate_ndcg < outcome.champion_ndcg
    assert up.registry.champion() == "v1"
    assert up.registry.get("v1.1").status == "rejected"
    # What the rejected candidate learned waits for the next, fine-tuned again from the champion.
    assert up.pending_windows == [1] and len(up.pending) == 120 * LENGTH
    monkeypatch.setattr(SessionLearner, "update", fit)
    after = up.update(chains(120, window=2), window=2)
    assert after.parent == "v1" and after.train_interactions >= 120 * LENGTH + 80 * LENGTH


def test_too_few_held_out_users_is_a_rejection_not_a_guess(tmp_path):
    up = updater(tmp_path)
    up.update(chains(120, window=0), window=0)
    outcome = up.update(chains(12, window=1), window=1)  # about 4 held-out users
    assert outcome.decision == "rejected" and outcome.gate_users < 10
    assert "fewer than min_users=10" in outcome.reason
    assert math.isnan(outcome.lower_bound)


def test_a_stopped_updater_resumes_from_its_registry_as_if_never_stopped(tmp_path):
    worlds = [chains(120, 0), chains(120, 1, step=-1), chains(120, 2, step=-1)]
    straight = updater(tmp_path / "a")
    for w, frame in enumerate(worlds):
        expected = straight.update(frame, window=w)
    stopped = updater(tmp_path / "b")
    for w, frame in enumerate(worlds[:2]):
        stopped.update(frame, window=w)
    stopped.registry.close()
    resumed = SessionUpdater.resume(Registry(tmp_path / "b" / "registry"), **SETTINGS)
    assert resumed.last_window == 1
    with pytest.raises(ValueError, match="not after the last window learned"):
        resumed.update(worlds[1], window=1)
    with pytest.raises(ValueError, match="trained with dim=16, not dim=8"):
        SessionUpdater.resume(resumed.registry, **{**SETTINGS, "learner": {**LEARNER, "dim": 8}})
    got = resumed.update(worlds[2], window=2)
    assert (got.version, got.parent, got.decision) == (expected.version, expected.parent, expected.decision)
    assert got.candidate_ndcg == pytest.approx(expected.candidate_ndcg, abs=1e-6)
    a = straight.registry.load_weights(expected.version)
    b = resumed.registry.load_weights(got.version)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_session_ndcg_scores_each_user_as_a_fresh_served_session(tmp_path):
    up = updater(tmp_path)
    up.update(chains(120, window=0), window=0)
    held = chains(30, window=5)
    scores = session_ndcg(up.champion_snapshot, held, like=None, k=1, horizon=1)
    assert scores.shape == (30,)
    assert scores.mean() > 0.9  # learned chains: the next item is first
    # Items the model never saw are not read and cannot be hit: a user of unknown items scores 0.
    unknown = held.assign(item=held["item"] + 1_000)
    assert session_ndcg(up.champion_snapshot, unknown, like=None, k=1, horizon=1).max() == 0.0


def test_bad_input_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="held_share"):
        updater(tmp_path, held_share=1.5)
    with pytest.raises(ValueError, match="tolerance"):
        updater(tmp_path, tolerance=-0.1)
    with pytest.raises(ValueError, match="dim"):
        updater(tmp_path, learner={"dim": 0})
    up = updater(tmp_path)
    with pytest.raises(ValueError, match="timestamp"):
        up.update(chains(5, 0).drop(columns="timestamp"), window=0)
    with pytest.raises(ValueError, match="rating"):
        updater(tmp_path / "liked", like=4.0).update(chains(5, 0), window=0)
    with pytest.raises(ValueError, match="no interactions"):
        up.update(chains(5, 0).iloc[:0], window=0)
    with pytest.raises(TypeError, match="item ids must be whole numbers"):
        up.update(chains(5, 0).assign(item="x"), window=0)


def test_resume_refuses_a_registry_it_did_not_write(tmp_path):
    from perennial.recommend import ContinualRecommender

    registry = Registry(tmp_path / "mf")
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame(
        {
            "user": rng.integers(0, 30, 400),
            "item": rng.integers(0, 40, 400),
            "rating": rng.choice([1.0, 5.0], 400),
        }
    ).drop_duplicates(["user", "item"])
    ContinualRecommender(registry, dim=4, epochs=1).update(ratings, window=0)
    with pytest.raises(ValueError, match="not written by the session model's updater"):
        SessionUpdater.resume(registry, **SETTINGS)
    assert SessionUpdater.resume(Registry(tmp_path / "empty"), **SETTINGS).last_window is None


def test_empty_sessions_are_ranked_by_whichever_of_popularity_and_the_model_served_held_out_users_better(
    tmp_path,
):
    """Every session opens on item 20, but item 5 is the most popular overall (a few heavy users): the
    model's start-of-session ranking knows how sessions open; popularity does not."""

    def world(window: int) -> pd.DataFrame:
        walks = chains(120, window)
        walks["item"] = (walks.groupby("user").cumcount() + 20) % N_ITEMS  # 20, 21, ... for everyone
        heavy = pd.DataFrame(
            {
                "user": np.repeat(window * 10_000 + 5_000 + np.arange(10), 30),
                "item": 5,
                "timestamp": window * 1_000 + np.tile(np.arange(30), 10),
            }
        )
        return pd.concat([walks, heavy], ignore_index=True)

    up = updater(tmp_path)
    assert up.update(world(0), window=0).empty_session == "popularity"  # nothing held out to judge by
    assert up.champion_snapshot.recommend(None, 1) == [5]
    outcome = up.update(world(1), window=1)
    assert outcome.empty_session == "start"
    served = SessionSnapshot.from_registry(up.registry, outcome.version)
    assert served.empty == "start" and served.recommend(None, 1) == [20]
