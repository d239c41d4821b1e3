"""The global half: window-by-window versions with lineage in the registry, replay from a reservoir, and
a gate that rejects (and records) a candidate worse than the champion on the fresh window."""

import numpy as np
import pandas as pd
import pytest

import perennial.recommend.continual as continual
from perennial.learn.rankers import MatrixFactorizationRanker
from perennial.recommend import ContinualRecommender, RatingsReservoir, Recommender
from perennial.registry import Registry
from tests.recommend.planted import planted_ratings


def windows(n: int) -> list[pd.DataFrame]:
    """Windows of new users of the planted problem (each window brings 60 users)."""
    return [planted_ratings(60, seed=10 + k, first_user=1000 * k) for k in range(n)]


def updater(tmp_path, **kw) -> ContinualRecommender:
    return ContinualRecommender(
        Registry(tmp_path / "registry"), **{"dim": 8, "epochs": 30, "lr": 0.02, "seed": 0, **kw}
    )


def test_versions_line_up_with_lineage_and_gate_numbers(tmp_path):
    up = updater(tmp_path)
    outcomes = [up.update(w, window=k) for k, w in enumerate(windows(3))]
    assert [(o.version, o.parent) for o in outcomes] == [("v1", None), ("v1.1", "v1"), ("v1.2", "v1.1")]
    assert [o.decision for o in outcomes] == ["promoted"] * 3
    assert outcomes[1].replay_ratings == outcomes[1].train_ratings  # replay_ratio 1: as many replayed
    registry = up.registry
    assert registry.champion() == "v1.2"
    decision = registry.decisions("v1.2")[0]
    assert decision["decision"] == "promoted" and decision["numbers"]["gate_users"] > 0
    # Each version holds its served snapshot and what continuing it needs, all as safetensors.
    served = Recommender.from_registry(registry, "v1.2")
    assert served.version == "v1.2" and len(served) == len(up.champion_model)
    ranker = MatrixFactorizationRanker(dim=8)
    ranker.load_state_dict(registry.load_extra("v1.2", "trainer"))
    assert ranker.updates == up.champion.updates
    assert registry.load_extra("v1.2", "replay")["seen"] > 0


def test_a_worse_candidate_is_rejected_and_recorded(tmp_path, monkeypatch):
    up = updater(tmp_path, tolerance=0.01)
    data = windows(3)
    up.update(data[0], window=0)
    champion = up.champion_model

    def gate(ranker, model, held, history, like, k):  # the candidate falls 0.1 short of the champion
        return (0.5 if model is champion else 0.4), 7

    monkeypatch.setattr(continual, "gate_hit_rate", gate)
    outcome = up.update(data[1], window=1)
    assert (outcome.version, outcome.decision) == ("v1.1", "rejected")
    assert (outcome.candidate_hr, outcome.champion_hr) == (0.4, 0.5)
    assert up.champion_model is champion and up.registry.champion() == "v1"
    assert up.registry.get("v1.1").status == "rejected"
    recorded = up.registry.decisions("v1.1")[0]
    assert recorded["decision"] == "rejected" and recorded["numbers"]["candidate_hr"] == 0.4
    monkeypatch.undo()
    # The rejected window's ratings are not lost: the next candidate (again from v1) learns them too.
    retry = up.update(data[2], window=2)
    assert (retry.version, retry.parent, retry.decision) == ("v1.2", "v1", "promoted")
    assert up.registry.get("v1.2").trained_on_windows == [1, 2]
    assert retry.train_ratings > outcome.train_ratings


def test_reservoir_keeps_a_bounded_uniform_sample_and_resumes_exactly():
    frame = pd.DataFrame({"user": np.arange(10_000), "item": np.arange(10_000), "rating": np.ones(10_000)})
    reservoir = RatingsReservoir(capacity=1000, seed=3)
    for part in np.array_split(np.arange(10_000), 7):
        reservoir.update(frame.iloc[part])
    assert len(reservoir) == 1000 and reservoir.seen == 10_000
    # Uniform over everything seen: each tenth of the stream holds about a tenth of the sample.
    counts = np.bincount(reservoir.users // 1000, minlength=10)
    assert counts.min() > 60 and counts.max() < 140
    copy = RatingsReservoir()
    copy.load_state_dict(reservoir.state_dict())
    more = frame.iloc[:500].assign(user=lambda f: f["user"] + 20_000)
    reservoir.update(more)
    copy.update(more)
    assert np.array_equal(copy.users, reservoir.users)
    assert copy.sample(50, salt=1).equals(reservoir.sample(50, salt=1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"replay_ratio": -1.0}, "replay_ratio"), ({"held_share": 1.0}, "held_share"), ({"dim": 0}, "dim")],
)
def test_bad_settings_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        updater(tmp_path, **kwargs)
