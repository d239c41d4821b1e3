"""The loop against poisoned windows: the screen quarantines a window of flipped labels before
anything trains on it, the trusted reference set rejects a candidate trained on poison that looks
fine on its own (equally poisoned) window, and a resumed run screens as an uninterrupted one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perennial.data.window import DataError
from perennial.evaluate import PromotionGate, WindowScreen
from perennial.learn import StatefulUpdate
from perennial.report.run import summarize
from tests.conftest import kill_mid_window, make_loop, small_stream


def stream():
    return small_stream(kind="none", n_samples=5000, window=500)  # 10 windows, no drift


def loop_with(path, **kw):
    """Trained long enough for a confident champion: the screen judges labels where it is sure."""
    return make_loop(path, stream=stream(), update=StatefulUpdate(epochs=10), initial_epochs=40, **kw)


def _poison(loop, window: int, share: float, seed: int = 0) -> None:
    """Flip ``share`` of one window's labels, training and held-out rows alike, as an attacker
    who supplies that window's labels would."""
    windows = loop.stream.windows()  # the stream's own list, which the loop reads
    w = windows[window]
    flip = np.random.default_rng(seed).random(len(w)) < share
    windows[window] = dataclasses.replace(w, y=np.where(flip, 1 - w.y, w.y))


def test_a_poisoned_window_is_quarantined_and_never_trained_on(tmp_path):
    loop = loop_with(tmp_path, screen=WindowScreen())
    _poison(loop, 5, 0.4)
    state = loop.run()
    rows = {r["window"]: r for r in state["rows"]}
    assert rows[5]["screen"].startswith("quarantined:") and rows[5]["candidate"] == ""
    assert [q["window"] for q in state["quarantined"]] == [5]
    assert "disagreement" in state["quarantined"][0]["flagged"]
    assert all(rows[w]["screen"] == "" for w in rows if w != 5)  # no false alarm on clean windows
    assert all(5 not in v.trained_on_windows for v in loop.registry.versions())
    summary = summarize(state, loop.registry, loop.accuracy_matrix(), loop.stream)
    assert [q["window"] for q in summary["quarantined_windows"]] == [5]


def test_without_the_screen_the_trusted_set_rejects_the_poisoned_candidate(tmp_path):
    # The holdout gate: its fresh rows come from the poisoned window itself, so only the trusted
    # set can tell.
    gate = PromotionGate(trusted="warmup", trusted_tolerance=0.05, fresh="holdout")
    loop = loop_with(tmp_path, gate=gate)
    _poison(loop, 5, 1.0)  # every label inverted: the fresh rows agree with the poison
    state = loop.run()
    row = next(r for r in state["rows"] if r["window"] == 5)
    assert row["decision"] == "rejected"
    reason = loop.registry.decisions(row["candidate"])[-1]["numbers"]["reason"]
    assert "worse on the trusted set" in reason
    assert loop.registry.get(loop.registry.champion()).trained_on_windows != [5]


def test_a_run_with_a_screen_resumes_to_the_same_rows(tmp_path):
    def loop(path):
        built = loop_with(path, screen=WindowScreen())
        _poison(built, 4, 0.4)
        return built

    whole = loop(tmp_path / "whole").run()
    kill_mid_window(loop(tmp_path / "crashed"), window=7)
    resumed = loop(tmp_path / "crashed").run(resume=True)
    keys = ("window", "candidate", "decision", "screen", "served_accuracy")
    assert [[r[k] for k in keys] for r in resumed["rows"]] == [[r[k] for k in keys] for r in whole["rows"]]
    assert resumed["quarantined"] == whole["quarantined"]


def test_a_trusted_set_file_is_checked_when_the_loop_is_built(tmp_path):
    bad = tmp_path / "trusted.npz"
    np.savez(bad, x=np.zeros((5, 3), np.float32), y=np.zeros(5, np.int64))  # the stream has 6 features
    with pytest.raises(DataError, match=r"x has shape \(5, 3\).*expected \(n, 6\)"):
        make_loop(tmp_path / "a", stream=stream(), gate=PromotionGate(trusted=str(bad)))
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataError, match=r"nope\.npz does not exist"):
        make_loop(tmp_path / "b", stream=stream(), gate=PromotionGate(trusted=str(missing)))
    with pytest.raises(ValueError, match=r"gate\.trusted must be null, 'warmup' or a \.npz"):
        PromotionGate(trusted="yesterday")
