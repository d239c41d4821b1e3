"""The loop with performance and drift triggers: fewer updates than every window, each firing's
statistic and p-value kept in windows.csv and the registry, and a resumable checkpoint."""

from __future__ import annotations

import math

from perennial.drift import ADWIN, UnivariateDrift
from perennial.evaluate import PromotionGate
from perennial.report.run import summarize, write_outputs
from perennial.triggers import AnyOf, DriftTrigger, PerformanceTrigger, TimeTrigger
from tests.conftest import kill_mid_window, make_loop, small_stream

ALWAYS = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout")


def stream():
    # 12 windows of 400 rows; the concept (and the input mean) changes at row 2,400: window 6
    return small_stream(n_samples=4800, window=400, drift_points=[2400])


def test_drift_trigger_updates_at_the_drift_and_records_its_test(tmp_path):
    trigger = DriftTrigger(UnivariateDrift(alpha=0.01))
    loop = make_loop(tmp_path, stream=stream(), trigger=trigger, gate=ALWAYS)
    state = loop.run()
    rows = {r["window"]: r for r in state["rows"]}
    updated = [t for t, r in rows.items() if r["candidate"]]
    assert updated and updated[0] == 6  # nothing before the drift; the drift window itself fires
    assert len(updated) < len(rows) / 2  # far fewer updates than retraining every window
    assert all(r["trigger_p_value"] is not None for r in rows.values())  # every window tested
    assert rows[6]["trigger_p_value"] < 0.01 and rows[6]["trigger"] == "drift"
    assert all(rows[t]["trigger_p_value"] >= 0.01 for t in range(1, 6))
    record = loop.registry.get(rows[6]["candidate"])
    assert record.trigger["name"] == "drift" and record.trigger["p_value"] < 0.01
    assert "univariate on inputs" in record.trigger["reason"]
    matrix = loop.accuracy_matrix()
    write_outputs(tmp_path, summarize(state, loop.registry, matrix, loop.stream), state, matrix, loop.stream)
    header = (tmp_path / "windows.csv").read_text().splitlines()[0].split(",")
    assert {"trigger_statistic", "trigger_p_value"} <= set(header)


def test_performance_trigger_fires_when_the_concept_changes(tmp_path):
    trigger = PerformanceTrigger(alpha=0.01, min_drop=0.02)
    loop = make_loop(tmp_path, stream=stream(), trigger=trigger, gate=ALWAYS)
    state = loop.run()
    fired = [r["window"] for r in state["rows"] if r["trigger"] == "performance"]
    assert fired and fired[0] == 6
    first = next(r for r in state["rows"] if r["window"] == 6)
    assert first["served_accuracy"] < 0.8 and first["trigger_p_value"] < 0.01
    # the champion's validation level (and its size) is what the test compares against
    assert loop.registry.get("v1").metrics["n_holdout"] > 0


def _errors_or_a_year():
    return AnyOf([DriftTrigger(ADWIN(), compare="errors"), TimeTrigger(every=4)], cooldown=1)


def test_a_run_with_a_stateful_trigger_resumes_to_the_same_decisions(tmp_path):
    whole = make_loop(tmp_path / "whole", stream=stream(), trigger=_errors_or_a_year(), gate=ALWAYS)
    whole_state = whole.run()
    kill_mid_window(
        make_loop(tmp_path / "crashed", stream=stream(), trigger=_errors_or_a_year(), gate=ALWAYS), window=6
    )
    resumed = make_loop(tmp_path / "crashed", stream=stream(), trigger=_errors_or_a_year(), gate=ALWAYS)
    resumed_state = resumed.run(resume=True)
    assert [r["candidate"] for r in resumed_state["rows"]] == [r["candidate"] for r in whole_state["rows"]]
    for a, b in zip(whole_state["rows"], resumed_state["rows"], strict=True):
        assert a["trigger_reason"] == b["trigger_reason"]
        assert (a["trigger_statistic"] is None) == (b["trigger_statistic"] is None)
        if a["trigger_statistic"] is not None:
            assert math.isclose(a["trigger_statistic"], b["trigger_statistic"])
