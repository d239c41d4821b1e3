"""The request log: group commits, back-pressure that never drops, and analysis with the rollout classes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import numpy as np
import pytest

from perennial.rollout import ABTest
from perennial.serve.log import RequestLog, Served, analyze
from perennial.serve.models import make_rollout


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
    settings = {"share": 0.5, "salt": "s", "alpha": 0.05}
    log = RequestLog(tmp_path / "log.sqlite")
    rollout = log.start_rollout("ab", "v1", "v2", settings)
    live = make_rollout("ab", "v1", "v2", settings)
    reference = ABTest("v1", {"v2": 0.5}, salt="s")
    rng = np.random.default_rng(0)
    for i in range(600):
        arm = live.route(f"u{i}")
        label = int(rng.integers(0, 2))
        right = rng.random() < (0.9 if arm == "v2" else 0.7)
        prediction = label if right else 1 - label
        log.write_request(served(i, arm, rollout, [prediction]))
        log.write_feedback(f"r{i}", [label])
        live.feedback(arm, [prediction], [label])
        reference.record([arm], [float(right)])
    log.end_rollout(rollout, "promote")
    log.close()
    report = analyze(tmp_path / "log.sqlite")
    ab = report["rollouts"][0]
    assert ab["outcome"] == "promote" and ab["decision"] == "promote"
    assert ab["p_value"] == pytest.approx(reference.results()["v2"]["p_holm"])
    assert ab["p_value"] == pytest.approx(live.summary()["p_value"])
    assert report["arms"]["v2"]["accuracy"] > report["arms"]["v1"]["accuracy"]
