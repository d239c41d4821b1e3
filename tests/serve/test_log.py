"""The request log: group commits, back-pressure that never drops, and analysis with the rollout classes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import numpy as np
import pytest
import torch

from perennial.registry import Registry, VersionRecord
from perennial.rollout import ABTest
from perennial.rollout.live import make_rollout
from perennial.serve.log import RequestLog, Served, analyze


def served(i: int, arm: str = "v1", rollout: int | None = None, predictions=(1,)) -> Served:
    return Served(f"r{i}", f"u{i}", arm, arm, "v1", rollout, list(predictions), 0.1)


def test_concurrent_writers_share_commits_and_every_row_lands(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite")
    threads = [
        threading.Thread(target=lambda k=k: [log.write_request(served(k * 1000 + i)) for i in range(100)])
        for k in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    groups = log.groups
    log.close()
    with sqlite3.connect(tmp_path / "log.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 800
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert groups < 800  # waiting writers were committed together


def test_a_full_queue_makes_writers_wait_and_drops_nothing(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite", max_queue=1, max_group=1)

    async def many():
        await asyncio.gather(*(log.log_request(served(i)) for i in range(300)))

    asyncio.run(many())
    log.close()
    with sqlite3.connect(tmp_path / "log.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 300


def test_a_bad_row_fails_only_its_own_writer(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite")
    log.write_request(served(1))
    with pytest.raises(sqlite3.IntegrityError):
        log.write_request(served(1))
    log.write_feedback("r1", [1])
    with pytest.raises(sqlite3.IntegrityError):
        log.write_feedback("r1", [0])
    assert log.request("r1")["has_feedback"] and log.request("r2") is None
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.write_request(served(2))


def test_a_row_the_driver_cannot_bind_fails_only_its_writer_not_its_group(tmp_path):
    """A string with a lone surrogate raises UnicodeEncodeError (not sqlite3.Error) when bound: it
    must fail its own submitter only, never roll back the rows committed in the same group."""
    path = tmp_path / "log.sqlite"
    log = RequestLog(path)
    blocker = sqlite3.connect(path, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # the writer's first group waits on this lock ...
    first = threading.Thread(target=log.write_request, args=(served(0),))
    first.start()
    while log._queue.qsize():  # ... once it has taken that group's only row
        time.sleep(0.001)
    outcomes: dict[int, BaseException | None] = {}

    def write(i: int, unit: str) -> None:
        try:
            log.write_request(Served(f"r{i}", unit, "v1", "v1", "v1", None, [1], 0.1))
            outcomes[i] = None
        except Exception as err:
            outcomes[i] = err

    writers = [
        threading.Thread(target=write, args=(i, "\ud800" if i == 5 else f"u{i}")) for i in range(1, 11)
    ]
    for t in writers:
        t.start()
    while log._queue.qsize() < 10:  # all ten queue up behind the blocked group: they form the next one
        time.sleep(0.001)
    blocker.rollback()
    blocker.close()
    for t in [first, *writers]:
        t.join()
    log.close()
    assert isinstance(outcomes.pop(5), UnicodeEncodeError)
    assert all(error is None for error in outcomes.values()), outcomes
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 10


def test_analyze_recomputes_an_ab_test_with_the_same_class(tmp_path):
    registry = Registry(tmp_path)
    for version in ("v1", "v2"):
        registry.add(VersionRecord(version, None, "stateless"), {"w": torch.zeros(1)})
    registry.promote("v1")
    record = registry.rollouts.request("ab", "v1", "v2", {"share": 0.5, "alpha": 0.05}, salt="s")
    log = RequestLog(tmp_path / "serve-log.sqlite")
    live = make_rollout("ab", record.settings)
    live.begin("v1", "v2", salt="s")
    reference = ABTest("v1", {"v2": 0.5}, salt="s")
    rng = np.random.default_rng(0)
    for i in range(600):
        arm = live.route(f"u{i}")
        label = int(rng.integers(0, 2))
        right = rng.random() < (0.9 if arm == "v2" else 0.7)
        prediction = label if right else 1 - label
        log.write_request(served(i, arm, record.id, [prediction]))
        log.write_feedback(f"r{i}", [label])
        live.record([arm], [prediction], [label])
        reference.record([arm], [float(right)])
    log.close()
    report = analyze(tmp_path / "serve-log.sqlite")  # the registry beside the log
    ab = report["rollouts"][0]
    assert ab["outcome"] == "requested" and ab["decision"] == "promote"
    assert ab["p_value"] == pytest.approx(reference.results()["v2"]["p_holm"])
    assert ab["p_value"] == pytest.approx(live.summary()["p_value"])
    assert report["arms"]["v2"]["accuracy"] > report["arms"]["v1"]["accuracy"]


def test_a_request_keeps_its_rows_as_sent_for_training_on_them_later(tmp_path):
    log = RequestLog(tmp_path / "log.sqlite")
    named = [{"temp": 12.5, "carrier": "UA"}, {"temp": None, "carrier": "LH"}]
    log.write_request(Served("named", "u", "v1", "v1", "v1", None, [1, 0], 0.1, inputs=named))
    numeric = np.array([[1.5, 2.0]], dtype=np.float32)  # a caller's array rows are JSON too
    log.write_request(Served("numeric", "u", "v1", "v1", "v1", None, [1], 0.1, inputs=list(numeric)))
    log.write_request(Served("bare", "u", "v1", "v1", "v1", None, [1], 0.1))
    assert log.request("named")["inputs"] == named and log.request("numeric")["inputs"] == [[1.5, 2.0]]
    assert log.request("bare")["inputs"] is None
    log.close()
    with sqlite3.connect(tmp_path / "log.sqlite") as conn:
        stored = conn.execute("SELECT inputs FROM requests WHERE request_id = 'named'").fetchone()[0]
    assert stored == '[{"temp":12.5,"carrier":"UA"},{"temp":null,"carrier":"LH"}]'  # compact


def test_an_old_log_gains_the_inputs_column_and_the_time_index(tmp_path):
    path = tmp_path / "log.sqlite"
    with sqlite3.connect(path) as conn:  # as a server wrote it before requests kept their rows
        conn.execute(
            "CREATE TABLE requests (request_id TEXT PRIMARY KEY, unit TEXT NOT NULL, arm TEXT NOT NULL,"
            " version TEXT NOT NULL, champion TEXT NOT NULL, rollout INTEGER, predictions TEXT NOT NULL,"
            " latency_ms REAL NOT NULL, at REAL NOT NULL, teams TEXT)"
        )
        conn.execute(
            "INSERT INTO requests VALUES ('old', 'u', 'v1', 'v1', 'v1', NULL, '[1]', 0.1, 1.0, NULL)"
        )
    log = RequestLog(path)
    log.write_request(Served("new", "u", "v1", "v1", "v1", None, [1], 0.1, inputs=[[1.0]]))
    assert log.request("old")["inputs"] is None and log.request("new")["inputs"] == [[1.0]]
    log.close()
    with sqlite3.connect(path) as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(requests)")}
    assert "requests_at" in indexes


def test_a_read_only_reader_sees_committed_rows_while_the_server_keeps_writing(tmp_path):
    path = tmp_path / "log.sqlite"
    log = RequestLog(path)
    log.write_request(served(0))
    reader = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
    log.write_request(served(1))  # the writer is not blocked by the open read transaction
    assert reader.execute("SELECT count(*) FROM requests").fetchone()[0] == 1  # the reader's snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM requests").fetchone()[0] == 2
    reader.close()
    log.close()
