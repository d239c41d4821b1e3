"""End-to-end behaviour of the continuous-deployment loop on small real and synthetic streams."""

from __future__ import annotations

import numpy as np
import pytest

from perennial.data import DataError, DigitsStream
from perennial.evaluate import PromotionGate
from perennial.learn import HybridUpdate, ReservoirBuffer, StatefulUpdate, StatelessUpdate
from perennial.registry import Registry, load_tree
from perennial.report.run import summarize
from perennial.triggers import TimeTrigger
from tests.conftest import kill_mid_window, make_loop


def lineage(registry: Registry) -> list[tuple]:
    return [(v.id, v.parent, v.kind) for v in registry.versions()]


def test_stateful_versions_are_minor_versions_of_their_champion(loop_factory):
    # The holdout gate promotes each at once, so the last one trained is the champion.
    loop = loop_factory(gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout"))
    state = loop.run()
    assert lineage(loop.registry) == [
        ("v1", None, "stateless"),
        ("v1.1", "v1", "stateful"),
        ("v1.2", "v1.1", "stateful"),
        ("v1.3", "v1.2", "stateful"),
        ("v1.4", "v1.3", "stateful"),
        ("v1.5", "v1.4", "stateful"),
    ]
    assert loop.registry.champion() == "v1.5" == state["champion"]
    assert [v.trained_on_windows for v in loop.registry.versions()][1:] == [[1], [2], [3], [4], [5]]
    # a stateful version keeps what a later fine-tune needs: its replay buffer and optimizer state
    assert loop.registry.load_extra("v1.2", "buffer")["y"].numel() > 0
    assert "state" in loop.registry.load_extra("v1.2", "optimizer")


def test_stateless_versions_are_new_major_versions_trained_on_history(loop_factory):
    loop = loop_factory(
        update=StatelessUpdate(epochs=3, history=2),
        buffer=None,
        gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0),
    )
    loop.run()
    assert lineage(loop.registry) == [("v1", None, "stateless")] + [
        (f"v{i}", None, "stateless") for i in range(2, 7)
    ]
    assert loop.registry.get("v4").trained_on_windows == [2, 3]


def test_time_trigger_batches_windows_into_one_update(loop_factory):
    loop = loop_factory(
        trigger=TimeTrigger(every=2), gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0)
    )
    state = loop.run()
    assert [v.trained_on_windows for v in loop.registry.versions()] == [[0], [1, 2], [3, 4]]
    assert [r["trigger"] for r in state["rows"]] == ["", "time", "", "time", ""]


def test_served_accuracy_beats_a_never_updated_model_after_drift(loop_factory):
    state = loop_factory().run()
    after_drift = [r for r in state["rows"] if r["window"] >= 4]
    served = np.mean([r["served_accuracy"] for r in after_drift])
    static = np.mean([r["static_accuracy"] for r in after_drift])
    assert served > static + 0.1


def test_gate_rejects_a_candidate_trained_on_flipped_labels(loop_factory, monkeypatch):
    # Plain fine-tuning, so nothing dilutes the poison: the gate alone must stop it.
    # The holdout gate, whose fresh rows come from the window after the drift: the temporal gate's
    # next window is past the concept change, where flipped labels happen to fit.
    loop = loop_factory(
        update=StatefulUpdate(epochs=20, replay_fraction=0.0),
        buffer=None,
        gate=PromotionGate(fresh="holdout"),
    )
    original = loop.data.split

    def poisoned(index):
        split = original(index)
        if index == 2:  # window 2 arrives with every label flipped
            x, y = split.train
            return type(split)((x, 1 - y), split.holdout)
        return split

    monkeypatch.setattr(loop.data, "split", poisoned)
    state = loop.run()
    # The candidate trained on window 2, wherever the gate judged it (the next window, by default).
    poisoned_version = next(r for r in state["rows"] if r["window"] == 2)["trained"]
    row = next(r for r in state["rows"] if r["candidate"] == poisoned_version)
    assert row["decision"] == "rejected"
    assert loop.registry.get(row["candidate"]).status == "rejected"
    decision = loop.registry.decisions(row["candidate"])[0]
    numbers = decision["numbers"]
    assert numbers["fresh_diff"] < -0.2 and numbers["fresh_lower_bound"] < numbers["fresh_diff"]
    assert numbers["p_value"] > 0.05  # no evidence at all that it is within tolerance


def test_replay_forgets_less_than_naive_fine_tuning_on_class_incremental_digits(tmp_path):
    forgetting = {}
    for name, buffer in (("replay", "reservoir"), ("naive", None)):
        stream = DigitsStream(scenario="class_incremental")
        update = StatefulUpdate(epochs=8, replay_fraction=0.5 if buffer else 0.0)
        loop = make_loop(
            tmp_path / name,
            stream=stream,
            update=update,
            buffer=buffer,
            gate=PromotionGate(tolerance=1.0, forgetting_tolerance=1.0),
            initial_epochs=10,
        )
        state = loop.run()
        summary = summarize(state, loop.registry, loop.accuracy_matrix(), stream)
        forgetting[name] = summary["forgetting"]
    assert forgetting["naive"] > 0.5  # fine-tuning on two new digits wipes out the old ones
    assert forgetting["replay"] < 0.7 * forgetting["naive"]


def test_the_gate_blocks_catastrophic_forgetting(tmp_path):
    stream = DigitsStream(scenario="class_incremental")
    loop = make_loop(
        tmp_path,
        stream=stream,
        gate=PromotionGate(tolerance=1.0),  # the fresh check passes all: only forgetting can reject
        update=StatefulUpdate(epochs=8, replay_fraction=0.0),
        buffer=None,
        initial_epochs=10,
    )
    loop.run()
    decisions = [d for d in loop.registry.decisions() if d["version"] != "v1"]
    rejected = [d for d in decisions if d["decision"] == "rejected"]
    assert len(rejected) >= 2
    assert all("forgets earlier windows" in d["numbers"]["reason"] for d in rejected)
    # whatever was promoted kept the earlier digits within the gate's tolerance
    assert all(d["numbers"]["past_drop"] <= 0.05 for d in decisions if d["decision"] == "promoted")


def test_privacy_mode_stores_no_incoming_examples(tmp_path):
    loop = make_loop(tmp_path, buffer=ReservoirBuffer(capacity=0))
    loop.run()
    buffer_files = [p for p in tmp_path.rglob("*.safetensors") if p.name.startswith("buffer")]
    assert buffer_files  # the checkpoints and versions do record a buffer ...
    for path in buffer_files:  # ... and it holds no example
        state = load_tree(path)
        assert state["y"].numel() == 0 and state["x"].numel() == 0


def comparable(registry: Registry) -> tuple:
    versions = [
        (v.id, v.parent, v.kind, v.status, v.trained_on_windows, v.n_samples, v.metrics, v.trigger)
        for v in registry.versions()
    ]
    decisions = [(d["version"], d["window"], d["decision"], d["numbers"]) for d in registry.decisions()]
    weights = {v.id: registry.load_weights(v.id) for v in registry.versions()}
    return versions, decisions, weights


def test_a_run_killed_mid_window_resumes_to_the_same_registry_and_summary(tmp_path):
    whole = make_loop(tmp_path / "whole")
    whole_state = whole.run()

    kill_mid_window(make_loop(tmp_path / "crashed"), window=3)

    resumed = make_loop(tmp_path / "crashed")  # a new process: fresh objects over the same directory
    assert resumed.registry.get_state("loop")["next_window"] == 3
    resumed_state = resumed.run(resume=True)

    v_whole, d_whole, w_whole = comparable(whole.registry)
    v_res, d_res, w_res = comparable(resumed.registry)
    assert v_whole == v_res and d_whole == d_res
    for version, tensors in w_whole.items():
        assert all(np.array_equal(tensors[k].numpy(), w_res[version][k].numpy()) for k in tensors)
    assert [r["window"] for r in resumed_state["rows"]] == [1, 2, 3, 4, 5]  # none lost, none twice
    assert whole_state["rows"] == resumed_state["rows"]
    assert whole_state["compute"]["samples_processed"] == resumed_state["compute"]["samples_processed"]
    s_whole = summarize(whole_state, whole.registry, whole.accuracy_matrix(), whole.stream)
    s_res = summarize(resumed_state, resumed.registry, resumed.accuracy_matrix(), resumed.stream)
    for s in (s_whole, s_res):
        s["compute"].pop("train_seconds")
    assert s_whole == s_res


def test_a_second_run_into_the_same_registry_needs_resume(loop_factory, tmp_path):
    loop_factory().run()
    with pytest.raises(RuntimeError, match="resume=true"):
        make_loop(tmp_path).run()


def test_resume_with_a_changed_config_is_refused(tmp_path):
    make_loop(tmp_path).run()
    loop = make_loop(tmp_path)
    loop.config = {"test": False}
    with pytest.raises(ValueError, match="different config"):
        loop.run(resume=True)


def test_a_stream_too_short_for_the_warm_up_is_a_clear_error(tmp_path):
    loop = make_loop(tmp_path, warmup_windows=6)
    with pytest.raises(DataError, match="warmup_windows=6"):
        loop.run()
    assert loop.registry.versions() == []  # nothing trained, nothing stored


def test_the_hybrid_schedule_fine_tunes_and_retrains_every_third_update(tmp_path):
    always = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0)
    loop = make_loop(tmp_path, update=HybridUpdate(epochs=2, retrain_every=3), gate=always)
    loop.run()
    records = loop.registry.versions()
    assert [v.id for v in records] == ["v1", "v1.1", "v1.2", "v2", "v2.1", "v2.2"]
    assert [v.kind for v in records] == ["stateless", "stateful", "stateful"] * 2
    assert [v.parent for v in records] == [None, "v1", "v1.1", None, "v2", "v2.1"]
    v2 = loop.registry.get("v2")
    assert v2.trained_on_windows == [0, 1, 2, 3]  # a retrain sees all history, not only the new window
    with pytest.raises(ValueError, match=r"update\.retrain_every must be an integer >= 2, got 1"):
        HybridUpdate(retrain_every=1)
