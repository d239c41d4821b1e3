"""The loop with a live rollout after the offline gate: the candidate meets the next windows'
traffic, the rollout's outcome decides promotion, and everything is recorded and resumable."""

from __future__ import annotations

from perennial.evaluate import PromotionGate
from perennial.learn import StatefulUpdate
from perennial.report.run import summarize
from perennial.rollout.live import AB, Canary, Interleave, Shadow
from perennial.triggers import TimeTrigger
from tests.conftest import kill_mid_window, make_loop, small_stream

# The offline gate passes everything, at the window each candidate is trained.
ALWAYS = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout")


def stream():
    return small_stream(n_samples=6000, window=500, drift_points=[3000])  # 12 windows, drift at 6


def _poison_windows(loop, monkeypatch, indices):
    """These windows arrive with every training label flipped: a candidate the offline gate (here
    set to pass anything) lets through, so only the live rollout can stop it."""
    original = loop.data.split

    def poisoned(i):
        split = original(i)
        if i in indices:
            x, y = split.train
            return type(split)((x, 1 - y), split.holdout)
        return split

    monkeypatch.setattr(loop.data, "split", poisoned)


def test_a_good_canary_is_promoted_after_walking_its_steps(tmp_path):
    canary = Canary(steps=[0.25, 1.0], min_samples=60, max_windows=4)
    loop = make_loop(tmp_path, stream=stream(), trigger=TimeTrigger(every=3), gate=ALWAYS, rollout=canary)
    state = loop.run()
    rows = state["rows"]
    first = next(r for r in rows if r["decision"])
    assert first["decision"] == "rollout"  # passed offline; not yet promoted
    assert loop.registry.get(first["candidate"]).status in ("champion", "retired", "rejected")
    live = [r for r in rows if r["rollout_candidate"] == first["candidate"]]
    assert live and live[0]["window"] == first["window"] + 1  # the next window's traffic
    assert live[-1]["rollout_decision"] in ("promote", "reject")
    decided = {
        r["rollout_candidate"]: r["rollout_decision"]
        for r in rows
        if r["rollout_decision"] in ("promote", "reject")
    }
    assert "promote" in decided.values()
    promoted = next(c for c, d in decided.items() if d == "promote")
    record = loop.registry.decisions(promoted)
    assert [d["decision"] for d in record] == ["rollout", "promoted"]
    assert (
        record[-1]["numbers"]["kind"] == "canary"
        and record[-1]["numbers"]["timeline"][-1]["event"] == "complete"
    )
    summary = summarize(state, loop.registry, loop.accuracy_matrix(), loop.stream)
    assert summary["rollouts"] and summary["promoted"] >= 1


def _poisoned_run(tmp_path, monkeypatch, rollout):
    """A run whose update at window 3 trains, without replay, on windows 1-3 with every label flipped."""
    update = StatefulUpdate(epochs=20, replay_fraction=0.0)
    loop = make_loop(
        tmp_path,
        stream=stream(),
        update=update,
        buffer=None,
        trigger=TimeTrigger(every=3),
        gate=ALWAYS,
        rollout=rollout,
    )
    _poison_windows(loop, monkeypatch, {1, 2, 3})
    return loop, loop.run()


def test_a_poisoned_candidate_passes_the_offline_gate_and_is_rolled_back_live(tmp_path, monkeypatch):
    loop, state = _poisoned_run(tmp_path, monkeypatch, Canary(steps=[0.05, 0.5, 1.0], min_samples=100))
    poisoned = next(r for r in state["rows"] if r["window"] == 3)["candidate"]  # trained on windows 1-3
    live = [r for r in state["rows"] if r["rollout_candidate"] == poisoned]
    assert live[-1]["rollout_decision"] == "reject"
    assert loop.registry.get(poisoned).status == "rejected"
    timeline = loop.registry.decisions(poisoned)[-1]["numbers"]["timeline"]
    assert timeline[-1]["event"] == "rollback"
    assert timeline[-1]["canary_units"] < 0.05 * timeline[-1]["units"]  # few users ever saw it
    # the windows it was live in were served almost entirely by the champion (here still v1)
    assert all(r["served_accuracy"] > r["static_accuracy"] - 0.05 for r in live)


def test_interleaving_rejects_a_poisoned_candidate_and_records_its_wins(tmp_path, monkeypatch):
    loop, state = _poisoned_run(tmp_path, monkeypatch, Interleave(min_impressions=100))
    poisoned = next(r for r in state["rows"] if r["window"] == 3)["candidate"]
    live = [r for r in state["rows"] if r["rollout_candidate"] == poisoned]
    assert [r["rollout"] for r in live] == ["interleave"] * len(live)
    assert live[-1]["rollout_decision"] == "reject"
    assert loop.registry.get(poisoned).status == "rejected"
    numbers = loop.registry.decisions(poisoned)[-1]["numbers"]
    assert numbers["kind"] == "interleave" and numbers["wins_champion"] > numbers["wins_candidate"]


def test_shadow_serves_only_the_champion_and_ab_splits_traffic(tmp_path):
    for name, rollout in (
        ("shadow", Shadow(min_requests=200, max_windows=2)),
        ("ab", AB(share=0.5, max_windows=2)),
    ):
        loop = make_loop(
            tmp_path / name, stream=stream(), trigger=TimeTrigger(every=4), gate=ALWAYS, rollout=rollout
        )
        state = loop.run()
        live = [r for r in state["rows"] if r["rollout"] == name]
        assert live, name
        assert all(r["rollout_decision"] in ("promote", "reject", "continue") for r in live)
        assert all(r["rollout_p_value"] is not None for r in live)


def test_a_run_killed_mid_rollout_resumes_to_the_same_decisions(tmp_path):
    def loop(path):
        canary = Canary(steps=[0.25, 1.0], min_samples=60, max_windows=4)
        return make_loop(path, stream=stream(), trigger=TimeTrigger(every=3), gate=ALWAYS, rollout=canary)

    whole = loop(tmp_path / "whole").run()
    kill_mid_window(loop(tmp_path / "crashed"), window=6)
    resumed = loop(tmp_path / "crashed").run(resume=True)
    keys = ("window", "candidate", "decision", "rollout_candidate", "rollout_decision", "served_accuracy")
    assert [[r[k] for k in keys] for r in resumed["rows"]] == [[r[k] for k in keys] for r in whole["rows"]]


def test_shadow_records_latency_and_agreement_in_the_registry(tmp_path):
    loop = make_loop(
        tmp_path,
        stream=stream(),
        trigger=TimeTrigger(every=4),
        gate=ALWAYS,
        rollout=Shadow(min_requests=200, max_windows=1),
    )
    state = loop.run()
    decided = next(r for r in state["rows"] if r["rollout_decision"] in ("promote", "reject"))
    numbers = loop.registry.decisions(decided["rollout_candidate"])[-1]["numbers"]
    assert numbers["kind"] == "shadow" and numbers["latency_ms"] > 0 and 0 <= numbers["agreement"] <= 1


def test_with_the_temporal_gate_no_update_starts_in_the_window_that_hands_over(tmp_path):
    # gate.fresh=next (the default): a candidate is judged at the window after its training data, and
    # passing there hands it to the rollout. That window must start no update of its own: a
    # candidate trained then would fine-tune the champion about to be replaced, and its windows
    # would be learned by nobody who serves.
    next_window = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="next")
    for on in ("replay", "server"):
        canary = Canary(steps=[0.5, 1.0], min_samples=60, max_windows=2, on=on)
        loop = make_loop(
            tmp_path / on, stream=stream(), trigger=TimeTrigger(every=1), gate=next_window, rollout=canary
        )
        rows = loop.run()["rows"]
        handed = [r for r in rows if r["decision"] == "rollout"]
        assert handed, on
        assert all(r["trained"] == "" for r in handed), (on, [(r["window"], r["trained"]) for r in handed])
