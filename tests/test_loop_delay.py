"""Late labels: predictions are served at once, labels land ``data.label_delay`` windows (or a
duration) later, and nothing (accuracy, triggers, updates, the gate) uses them before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perennial.data.window import DataError, Window, check_label_delay, label_arrivals
from perennial.evaluate import PromotionGate, evaluate
from perennial.rollout.live import Canary
from tests.conftest import kill_mid_window, make_loop, small_stream


def delayed(delay):
    stream = small_stream(n_samples=4000, window=500)  # 8 windows
    stream.label_delay = delay
    return stream


def test_labels_are_used_only_after_their_delay(tmp_path):
    # The holdout gate decides at the window a candidate is trained: what this test times.
    loop = make_loop(tmp_path, stream=delayed(2), gate=PromotionGate(fresh="holdout"))
    state = loop.run()
    rows = {r["window"]: r for r in state["rows"]}
    for version in loop.registry.versions()[1:]:  # v1 trained on the warm-up, labelled from the start
        assert max(version.trained_on_windows) + 2 <= version.created_window
    assert rows[1]["decision"] == rows[2]["decision"] == ""  # the first labels land at window 3
    assert rows[3]["decision"] != "" and loop.registry.versions()[1].trained_on_windows[-1] == 1
    # the last two windows' labels are still due when the stream ends
    assert rows[6]["served_accuracy"] is None and rows[7]["served_accuracy"] is None
    # a landed label scores the model that served its window, not the champion when it landed
    for w in (1, 4, 5):
        served_by = loop.load(rows[w]["champion"])
        window = loop.data[w]
        assert rows[w]["served_accuracy"] == pytest.approx(evaluate(served_by, window.x, window.y).accuracy)


def test_a_delayed_run_resumes_to_the_same_rows(tmp_path):
    whole = make_loop(tmp_path / "whole", stream=delayed(1)).run()
    kill_mid_window(make_loop(tmp_path / "crashed", stream=delayed(1)), window=4)
    resumed = make_loop(tmp_path / "crashed", stream=delayed(1)).run(resume=True)
    keys = ("window", "champion", "candidate", "decision", "served_accuracy")
    assert [[r[k] for k in keys] for r in resumed["rows"]] == [[r[k] for k in keys] for r in whole["rows"]]


def _windows(ends):
    week = pd.Timedelta("6D")
    one = (np.zeros((1, 1)), np.zeros(1, int), np.zeros(1))
    return [Window(i, pd.Timestamp(e) - week, pd.Timestamp(e), *one) for i, e in enumerate(ends)]


def test_a_duration_lands_labels_at_the_first_window_that_ends_that_much_later():
    weekly = _windows(pd.date_range("2024-01-07", periods=8, freq="7D"))
    assert label_arrivals(weekly, 1, "14D") == {3: [1], 4: [2], 5: [3], 6: [4], 7: [5]}
    assert label_arrivals(weekly, 1, 0) == {w: [w] for w in range(1, 8)}
    assert label_arrivals(weekly, 1, "10D") == label_arrivals(weekly, 1, 2)  # rounded up to a window end


@pytest.mark.parametrize("bad", [-1, "soon", True, None, "-3D"])
def test_bad_delays_are_named(bad):
    with pytest.raises(DataError, match=r"data\.label_delay must be a window count >= 0 or a duration"):
        check_label_delay(bad)


def test_a_duration_needs_timestamps_and_a_rollout_needs_labels_at_once(tmp_path):
    loop = make_loop(tmp_path / "a", stream=delayed("30D"))
    with pytest.raises(DataError, match="windows end at row positions"):
        loop.run()
    assert loop.registry.versions() == []  # refused before v1 is trained
    with pytest.raises(ValueError, match=r"rollout=canary decides from labels .* use rollout=none"):
        make_loop(tmp_path / "b", stream=delayed(1), rollout=Canary())
