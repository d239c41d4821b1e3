"""The server's request log as a data source (a closed loop): logged rows joined with their /feedback
labels, cut into windows of wall-clock time once their labels' deadline has passed, read while the
server keeps writing, and encoded as the champion's pipeline encoded them when they were served."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from perennial.cli.common import CONF_DIR
from perennial.data import DataError, ServeLogStream
from perennial.data.pipeline import InputPipeline
from perennial.registry import Registry, VersionRecord
from perennial.serve.log import RequestLog, Served

from ..serve.stored import raw_rows, table_registry

PIPELINE = InputPipeline((2,), ("no", "yes"), ("a", "b"))
NOW = time.time()
T = math.floor(NOW / 60) * 60 - 3600  # an hour ago, on a minute: period 0 of the windows below
LATER = NOW + 3 * 3600  # when every window so far is complete, past a deadline of 2h


def done(period: int) -> float:
    """The time at which periods up to ``period`` are complete, with the deadline of 2h (and 2s)."""
    return T + (period + 1) * 60 + 2 * 3600 + 2


class Clock:
    """The time a stream sees, set by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def numeric_registry(root: Path, pipeline: InputPipeline | None = PIPELINE, promote: bool = True) -> Path:
    """A registry whose champion v1 takes two numbers a, b and answers "no" or "yes"."""
    extras = {"pipeline": pipeline.to_dict()} if pipeline is not None else {}
    with Registry(root) as registry:
        registry.add(VersionRecord("v1", None, "stateless"), {"w": torch.zeros(1)}, extras)
        if promote:
            registry.promote("v1", reason="test")
    return root


@pytest.fixture
def served(tmp_path):
    """A numeric registry and its server's request log, open for writing as a running server's is."""
    root = numeric_registry(tmp_path / "registry")
    log = RequestLog(root / "serve-log.sqlite")
    yield root, log
    log.close()


def request(
    log: RequestLog, rid: str, at: float, rows: list | None, labels: list[int] | None = None, **kw
) -> None:
    predictions = [0] * (len(rows) if rows is not None else 1)
    log.write_request(Served(rid, "u", "v1", "v1", "v1", None, predictions, 0.1, at=at, inputs=rows, **kw))
    if labels is not None:
        log.write_feedback(rid, labels)


def stream_of(log: RequestLog, clock: float, **kw) -> ServeLogStream:
    settings = {"window": "60s", "label_deadline": "2h", "settle": "2s"} | kw
    return ServeLogStream(log.path, clock=Clock(clock), **settings)


def same(a, b) -> bool:
    return (
        a.index == b.index
        and (a.start, a.end) == (b.start, b.end)
        and np.array_equal(a.x, b.x)
        and np.array_equal(a.y, b.y)
        and np.array_equal(a.time, b.time)
    )


def test_windows_are_spans_of_wall_clock_time_holding_the_labelled_rows(served):
    _, log = served
    request(log, "r1", T + 5, [[1.0, 2.0]], [1])
    request(log, "r2", T + 10, [[3.0, 4.0], [5.0, 6.0]], [0, 1])  # a batch: its labels align with its rows
    request(log, "r3", T + 70, [[7.0, 8.0]], [0])
    request(log, "r4", T + 200, [[9.0, 0.5]], [1])  # the period T+120..T+180 has no request
    stream = stream_of(log, LATER)

    windows = stream.poll()

    assert [w.index for w in windows] == [0, 1, 2]  # consecutive over the windows with rows
    assert [w.start for w in windows] == [pd.Timestamp(T + s, unit="s") for s in (0, 60, 180)]
    assert windows[0].end == pd.Timestamp(T + 60, unit="s")
    assert windows[0].x.dtype == np.float32 and windows[0].x.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert windows[0].y.dtype == np.int64 and windows[0].y.tolist() == [1, 0, 1]
    assert windows[0].time.tolist() == pd.to_datetime([T + 5, T + 10, T + 10], unit="s").to_numpy().tolist()
    assert [w.y.tolist() for w in windows[1:]] == [[0], [1]]
    empty = [i for i in stream.issues if i.kind == "empty_window"]
    assert "1 period(s)" in empty[0].message and str(log.path) in empty[0].message
    assert len(empty) == 2  # and the periods since the last request, as the server sat idle
    report = stream.input_report()
    assert {k: report[k] for k in ("requests", "rows", "labelled_rows", "windows")} == {
        "requests": 4,
        "rows": 5,
        "labelled_rows": 5,
        "windows": 3,
    }
    assert stream.poll() == []  # nothing new
    assert all(same(stream.window_at(w.index), w) for w in windows)


def test_a_window_is_complete_only_once_its_deadline_and_settle_have_passed(served):
    _, log = served
    at = time.time()  # write_feedback stamps the feedback now: in time
    start = math.floor(at / 60) * 60
    request(log, "r1", at, [[1.0, 2.0]], [1])
    stream = stream_of(log, start + 60 + 30 + 2 - 0.001, label_deadline="30s", settle="2s")
    assert stream.poll() == []  # a label may still come (30s), and be committed a moment later (2s)
    stream.clock.now = start + 60 + 30 + 2
    assert [len(w) for w in stream.poll()] == [1]


def test_rows_labelled_late_or_never_are_counted_not_trained_on(served):
    _, log = served
    now = time.time()  # write_feedback stamps the feedback now
    request(log, "ok", now - 10, [[1.0, 1.0], [2.0, 2.0]], [1, 0])  # labelled 10s after: in time
    request(log, "late", now - 100, [[3.0, 3.0]], [1])  # labelled 100s after: past the 30s deadline
    request(log, "never", now - 50, [[4.0, 4.0], [5.0, 5.0]])
    stream = stream_of(log, now + 3600, window="1h", label_deadline="30s", start=now - 1000)

    [window] = stream.poll()

    assert window.x.tolist() == [[1, 1], [2, 2]]
    report = stream.input_report()
    assert (report["rows"], report["labelled_rows"], report["late_feedback"], report["unlabelled_rows"]) == (
        5,
        2,
        1,
        2,
    )
    # A label that comes back after its window was handed out is late, never added: the window stays.
    log.write_feedback("never", [0, 1])
    assert stream.poll() == []
    report = stream.input_report()
    assert (report["late_feedback"], report["unlabelled_rows"]) == (3, 0)
    assert same(stream.window_at(0), window)


def test_raw_named_rows_are_encoded_by_the_champions_pipeline(tmp_path):
    root, csv, table, _ = table_registry(tmp_path)
    rows = raw_rows(csv, table)[:12]
    first = table.windows()[0]  # the same rows, encoded by the loop that trained the champion
    log = RequestLog(root / "serve-log.sqlite")
    for i in range(0, 12, 3):
        request(log, f"r{i}", T + i, rows[i : i + 3], first.y[i : i + 3].tolist())
    bad = {**rows[0], "price": "cheap"}  # text in a numeric column: set aside, the rest of its batch kept
    request(log, "bad", T + 20, [bad, rows[1]], [0, 1])
    request(log, "unknown", T + 21, [rows[2]], [7])  # not a class id of the champion's
    stream = ServeLogStream(log.path, clock=Clock(LATER), label_deadline="2h")

    [window] = stream.poll()

    assert np.allclose(window.x[:12], first.x[:12]) and window.y[:12].tolist() == first.y[:12].tolist()
    assert len(window) == 13 and np.allclose(window.x[12], first.x[1])
    assert stream.feature_names == table.feature_names and stream.classes == table.classes
    quarantine = stream.quarantine
    assert quarantine["_source"].tolist() == ["bad", "unknown"] and quarantine["_row"].tolist() == [0, 0]
    assert "column 'price'" in quarantine["reason"][0] and "label 7" in quarantine["reason"][1]
    assert stream.input_report()["bad_rows"] == stream.quarantined_rows == 2
    assert [i.kind for i in stream.issues if i.kind == "bad_row"] == ["bad_row"]  # one per window
    log.close()


def test_the_streams_pipeline_is_the_champions_so_versions_trained_on_it_serve_the_same(tmp_path, served):
    _, log = served
    assert InputPipeline.of_stream(ServeLogStream(log.path)) == PIPELINE
    (tmp_path / "table").mkdir()
    table_root, *_ = table_registry(tmp_path / "table")
    stored = Registry(table_root, create=False, readonly=True).load_extra("v1", "pipeline")
    stream = ServeLogStream(table_root / "serve-log.sqlite")  # no log yet: a source still to grow
    assert InputPipeline.of_stream(stream) == InputPipeline.from_dict(stored)
    assert stream.preprocessing == stored["encoding"] and stream.poll() == []


def test_a_resumed_stream_polls_what_an_uninterrupted_one_polls(served):
    _, log = served
    for i in range(6):
        request(log, f"a{i}", T + 30 * i, [[float(i), 1.0]], [i % 2])
    request(log, "never", T + 31, [[9.0, 9.0]])
    uninterrupted = stream_of(log, done(0) - 1)  # nothing complete yet
    first = stream_of(log, done(0) - 1)
    assert uninterrupted.poll() == first.poll() == []
    uninterrupted.clock.now = first.clock.now = done(2)
    assert [len(w) for w in uninterrupted.poll()] == [len(w) for w in first.poll()] == [2, 2, 2]
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON, through a checkpoint

    for i in range(6, 10):
        request(log, f"a{i}", T + 30 * i, [[float(i), 0.0]], [1])
    log.write_feedback("never", [1])  # late: counted alike in both
    resumed = ServeLogStream(log.path, clock=Clock(LATER), label_deadline="2h", settle="2s")
    resumed.load_state_dict(state)
    uninterrupted.clock.now = LATER
    assert resumed.polled == 3 and same(resumed.window_at(1), uninterrupted.window_at(1))
    new, expected = resumed.poll(), uninterrupted.poll()
    assert [w.index for w in new] == [3, 4] and all(same(a, b) for a, b in zip(new, expected, strict=True))
    assert resumed.input_report() == uninterrupted.input_report()
    assert resumed.state_dict() == uninterrupted.state_dict()


def test_a_growing_log_gives_only_the_new_windows_and_a_window_once_given_never_changes(served):
    _, log = served
    request(log, "r1", T + 5, [[1.0, 1.0]], [1])
    stream = stream_of(log, done(0))
    [window] = stream.poll()
    request(log, "r2", T + 65, [[2.0, 2.0]], [0])
    request(log, "r3", T + 6, [[3.0, 3.0]], [0])  # committed after its window was handed out
    request(log, "r4", T + 66, [[4.0, 4.0]])  # no label yet when its window is handed out
    stream.clock.now = done(1)
    [new] = stream.poll()
    assert new.index == 1 and new.y.tolist() == [0] and new.start == pd.Timestamp(T + 60, unit="s")
    assert same(stream.window_at(0), window)  # r3 is not added: the loop has trained on window 0
    assert stream.input_report()["late_requests"] == 1
    # Feedback within the deadline but committed after its window was handed out (past settle): late.
    log.write_feedback("r4", [1])
    stream.clock.now = done(2)
    assert stream.poll() == [] and same(stream.window_at(1), new)
    report = stream.input_report()
    assert (report["late_feedback"], report["unlabelled_rows"]) == (1, 0)


def test_rank_requests_and_requests_logged_without_rows_are_counted_and_skipped(served):
    _, log = served
    log.write_request(Served("rank", "u", "v1", "v1", "v1", None, [1, 0], 0.1, at=T + 1, teams=["v1", "v1"]))
    log.write_feedback("rank", [0])  # a click on position 0, not a label
    request(log, "old", T + 2, None, [1])  # logged before the server kept its rows
    request(log, "r", T + 3, [[1.0, 1.0]], [1])
    stream = stream_of(log, LATER)
    [window] = stream.poll()
    report = stream.input_report()
    assert len(window) == 1
    assert (report["requests"], report["rank_requests"], report["no_inputs"]) == (3, 1, 1)


def test_a_log_without_labelled_rows_yet_gives_no_window(served, tmp_path):
    root, log = served
    missing = ServeLogStream(root / "not-yet.sqlite", clock=Clock(LATER))
    assert missing.poll() == [] and missing.growing  # the loop waits for data
    assert stream_of(log, LATER).poll() == []  # the log exists, no request yet
    request(log, "r", T + 3, [[1.0, 1.0]])
    stream = stream_of(log, LATER)
    assert stream.poll() == [] and stream.input_report()["unlabelled_rows"] == 1


def test_bad_paths_and_registries_are_errors_that_name_them(tmp_path):
    root = numeric_registry(tmp_path / "registry")
    text = root / "notes.sqlite"
    text.write_text("not a database, " * 100)
    with pytest.raises(DataError, match=f"{text}: not a readable SQLite request log"):
        ServeLogStream(text).poll()
    other = root / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (a)")
    with pytest.raises(DataError, match=f"{other}: not a perennial-serve request log: it has no requests"):
        ServeLogStream(other).poll()
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'}: no registry there"):
        ServeLogStream(tmp_path / "nowhere" / "serve-log.sqlite")
    unpromoted = numeric_registry(tmp_path / "unpromoted", promote=False)
    with pytest.raises(DataError, match=f"{unpromoted}: the registry has no champion yet"):
        ServeLogStream(unpromoted / "serve-log.sqlite")
    legacy = numeric_registry(tmp_path / "legacy", pipeline=None)
    with pytest.raises(DataError, match=f"{legacy}: champion v1 was stored without its input pipeline"):
        ServeLogStream(legacy / "serve-log.sqlite")
    with pytest.raises(ValueError, match="window must be a positive duration"):
        ServeLogStream(root / "serve-log.sqlite", window="0s")
    with pytest.raises(ValueError, match="leave label_delay at 0"):
        ServeLogStream(root / "serve-log.sqlite", label_delay=2)


def test_the_config_needs_the_log_and_builds_the_stream(served):
    root, log = served
    config = OmegaConf.load(Path(CONF_DIR) / "data" / "serve_log.yaml")
    with pytest.raises(MissingMandatoryValue):
        instantiate(config)
    stream = instantiate(config, path=str(log.path))
    assert isinstance(stream, ServeLogStream) and stream.registry == root and stream.label_delay == 0
