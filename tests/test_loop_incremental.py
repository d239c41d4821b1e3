"""The loop on data that keeps arriving: windows pushed or polled a few at a time, by one process or
by a new process each night, give the run one pass over all of them gives; the checkpoint stays the
same size however long the run; follow mode keeps polling until it is stopped."""

from __future__ import annotations

import fcntl
import json
import threading

import numpy as np
import pytest

from perennial.data import WindowFeed
from perennial.evaluate import PromotionGate
from perennial.loop import CHECKPOINT_KEY
from perennial.registry import Registry
from perennial.tracking import RunLogger
from perennial.triggers import TimeTrigger
from tests.conftest import make_loop, small_stream
from tests.test_loop import comparable


def feed_like(stream) -> WindowFeed:
    return WindowFeed(stream.name, stream.feature_shape, stream.classes)


def same_run(a: Registry, b: Registry) -> None:
    (v_a, d_a, w_a), (v_b, d_b, w_b) = comparable(a), comparable(b)
    assert v_a == v_b and d_a == d_b
    for version, tensors in w_a.items():
        assert all(np.array_equal(tensors[k].numpy(), w_b[version][k].numpy()) for k in tensors)
    assert a.window_rows() == b.window_rows()


def test_windows_landing_one_night_at_a_time_give_the_run_over_all_of_them(tmp_path):
    stream = small_stream(n_samples=4000)  # 8 windows
    whole = make_loop(tmp_path / "whole", stream=stream)
    whole.run()

    windows = stream.windows()
    for night in range(1, len(windows) + 1):
        # A new process each night, as cron would start it: a fresh feed holding what has landed.
        feed = feed_like(stream)
        loop = make_loop(tmp_path / "nightly", stream=feed)
        result = loop.process(windows[:night])
        assert result["started"] and result["next_window"] == night  # v1 from the first night
        loop.registry.close()
    same_run(whole.registry, Registry(tmp_path / "nightly" / "registry"))


def test_a_run_with_too_few_windows_yet_waits_and_stores_nothing(tmp_path):
    stream = small_stream()
    loop = make_loop(tmp_path, stream=feed_like(stream), warmup_windows=2)
    result = loop.process(stream.windows()[:1])
    assert not result["started"] and result["windows"] == 1
    assert loop.registry.versions() == [] and loop.registry.get_state(CHECKPOINT_KEY) is None


def test_pushed_windows_must_continue_the_numbering(tmp_path):
    stream = small_stream()
    loop = make_loop(tmp_path, stream=feed_like(stream))
    with pytest.raises(ValueError, match="window 3 pushed where window 0 was due"):
        loop.process(stream.windows()[3:])


def test_the_checkpoint_does_not_grow_with_the_run(tmp_path):
    stream = small_stream(n_samples=6000, window=100, drift_points=[3000])  # 60 windows
    windows = stream.windows()
    loop = make_loop(tmp_path, stream=feed_like(stream), trigger=TimeTrigger(every=5))
    loop.process(windows[:20])
    early = len(json.dumps(loop.registry.get_state(CHECKPOINT_KEY)))
    loop.process(windows)
    late = len(json.dumps(loop.registry.get_state(CHECKPOINT_KEY)))
    assert loop.registry.get_state(CHECKPOINT_KEY)["next_window"] == 60
    assert len(loop.registry.window_rows()) == 59  # every served window has its row ...
    assert late <= early * 1.1  # ... in the registry, not in the checkpoint


class StopAt(RunLogger):
    """Stops the loop once window ``at`` has committed, as SIGTERM would."""

    def __init__(self, at: int) -> None:
        self.at, self.loop = at, None

    def log_window(self, row) -> None:
        if row["window"] == self.at:
            self.loop.stop.set()


def test_stop_finishes_the_window_in_hand_and_the_next_run_continues(tmp_path):
    stream = small_stream(n_samples=4000)
    whole = make_loop(tmp_path / "whole", stream=stream)
    whole.run()

    stopped = make_loop(tmp_path / "stopped", stream=stream)
    stopped.logger = StopAt(3)
    stopped.logger.loop = stopped
    result = stopped.run()
    assert result["next_window"] == 4  # window 3 committed, nothing after it
    stopped.registry.close()

    again = make_loop(tmp_path / "stopped", stream=small_stream(n_samples=4000))
    again.run(resume=True)
    same_run(whole.registry, again.registry)


def test_follow_processes_windows_as_they_land_until_stopped(tmp_path):
    stream = small_stream(n_samples=4000)
    windows = stream.windows()
    feed = feed_like(stream)
    loop = make_loop(tmp_path, stream=feed)
    committed = []

    def land() -> None:
        """Windows land one at a time, each once the loop has caught up; then the job is stopped."""
        wait = threading.Event()
        for window in windows:
            while loop.state is not None and loop.state.next_window < window.index and not wait.wait(0.01):
                pass
            feed.push(window)
        while loop.state is None or loop.state.next_window < len(windows):
            wait.wait(0.01)
        loop.stop.set()

    lander = threading.Thread(target=land, daemon=True)
    lander.start()
    result = loop.follow(0.01, on_commit=committed.append)  # the registry stays in this thread
    lander.join(timeout=5)
    assert result["next_window"] == len(windows)
    assert [r["window"] for r in loop.registry.window_rows()] == list(range(1, len(windows)))
    assert committed and committed[-1]["next_window"] == len(windows)  # the outputs were refreshed


def test_a_checkpoint_from_before_the_rows_table_moves_its_rows_there(tmp_path):
    stream = small_stream()
    loop = make_loop(tmp_path, stream=stream)
    loop.run()
    rows = loop.registry.window_rows()
    saved = loop.registry.get_state(CHECKPOINT_KEY)
    # The old shape: every row in the checkpoint, no source state, no window_rows table.
    old = {k: v for k, v in saved.items() if k not in ("unlabelled", "source")} | {"rows": rows}
    loop.registry.set_state(CHECKPOINT_KEY, old)
    loop.registry._conn.execute("DROP TABLE window_rows")
    loop.registry.close()

    resumed = make_loop(tmp_path, stream=small_stream())
    result = resumed.run(resume=True)
    assert result["rows"] == rows
    assert "rows" not in resumed.registry.get_state(CHECKPOINT_KEY)


def test_process_needs_a_feed(tmp_path):
    loop = make_loop(tmp_path)
    with pytest.raises(TypeError, match="WindowFeed"):
        loop.process([])


def test_a_hand_promotion_between_runs_is_what_the_next_run_serves(tmp_path):
    stream = small_stream(n_samples=4000)
    windows = stream.windows()
    always = PromotionGate(fresh="holdout", tolerance=1.0, forgetting_tolerance=1.0)
    first = make_loop(tmp_path, stream=feed_like(stream), gate=always)
    first.process(windows[:4])
    assert first.registry.champion() == "v1.3"
    first.registry.promote("v1.1", reason="a person's call")  # as perennial-registry promote does
    first.registry.close()

    again = make_loop(tmp_path, stream=feed_like(stream), gate=always)
    result = again.process(windows[:5])
    served = next(r for r in result["rows"] if r["window"] == 4)
    assert served["champion"] == "v1.1"  # the registry's champion, which the server serves
    assert again.registry.get(served["trained"]).parent == "v1.1"  # and the line goes on from it


def test_two_processes_cannot_run_one_directory_at_once(tmp_path):
    loop = make_loop(tmp_path)
    (tmp_path / ".lock").touch()
    with open(tmp_path / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's run in progress
        with pytest.raises(RuntimeError, match="being run by another process"):
            loop.run()
    assert loop.registry.versions() == []
    loop.run()  # once it has finished, the run goes ahead
