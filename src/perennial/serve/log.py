"""The server's request and feedback log: an embedded SQLite file (WAL) written by one background thread
that commits in groups, so a request is answered only once its row is on disk.

A writer that falls behind makes requests wait (the queue is bounded) but never drops a row; after
``kill -9`` the log holds every request that was acknowledged. ``analyze`` replays the logged
feedback through the same ``perennial.rollout`` classes the server used, to recompute a rollout's
statistics. Each request keeps its rows as the client sent them (``inputs``), so that with its
feedback the log is training data (:class:`perennial.data.serve_log.ServeLogStream`), read by
other processes while the server writes. In recommender mode every accepted ``/feedback`` is a row of
``interactions``; :func:`read_interactions` reads them as the next window's training data.

>>> import tempfile, os
>>> log = RequestLog(os.path.join(tempfile.mkdtemp(), "log.sqlite"))
>>> log.write_request(Served("r1", "user-1", "v1", "v1", "v1", None, [1], latency_ms=0.4))
>>> log.write_feedback("r1", [1])
>>> log.request("r1")["arm"], log.feedback_count()
('v1', 1)
>>> log.write_interaction("user-1", item=318, version="v1", rating=4.5)
>>> log.close()
>>> read_interactions(log.path)[["unit", "item", "rating", "click"]]
     unit  item  rating  click
0  user-1   318     4.5   <NA>
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BUSY_TIMEOUT_S = 30.0  # how long a connection to the log waits on a lock before it gives up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    unit TEXT NOT NULL,
    arm TEXT NOT NULL,
    version TEXT NOT NULL,
    champion TEXT NOT NULL,
    rollout INTEGER,
    predictions TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shadow (
    request_id TEXT NOT NULL,
    version TEXT NOT NULL,
    predictions TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    PRIMARY KEY (request_id, version)
);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    labels TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    champion TEXT NOT NULL,
    candidate TEXT NOT NULL,
    settings TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS interactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    unit TEXT NOT NULL,
    item INTEGER NOT NULL,
    rating REAL,
    click INTEGER,
    version TEXT NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass
class Served:
    """One answered request as the log keeps it."""

    request_id: str
    unit: str
    arm: str  # the arm that answered: the champion's or the candidate's version id
    version: str
    champion: str
    rollout: int | None  # the id of the rollout running when it was served (rollouts table)
    # Class ids (a regressor's values, as JSON floats); for /rank, the ranked class ids in display order
    predictions: list[int] | list[float]
    latency_ms: float
    at: float = field(default_factory=time.time)
    teams: list[str] | None = None  # /rank only: the version that placed each position
    # The rows as the client sent them (lists of numbers, or raw named rows), so that the log can be
    # trained on with its feedback; None for a caller that does not keep them.
    inputs: list | None = None


class _Item:
    """One write for the writer thread, and how to tell its submitter that it is committed."""

    __slots__ = ("error", "event", "future", "loop", "many", "params", "sql")

    def __init__(
        self,
        sql: str,
        params: tuple | list,
        loop: asyncio.AbstractEventLoop | None = None,
        many: bool = False,
    ) -> None:
        self.sql, self.params, self.loop, self.many = sql, params, loop, many
        self.future: asyncio.Future | None = loop.create_future() if loop is not None else None
        self.event = threading.Event() if loop is None else None
        self.error: BaseException | None = None

    def done(self, error: BaseException | None) -> None:
        self.error = error
        if self.loop is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future, error)
        else:
            self.event.set()


def _resolve(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


_STOP = object()


def _plain(value: object) -> object:
    """Numpy values in logged inputs as JSON: a caller may pass an array's rows."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"a logged input holds a {type(value).__name__}, which is not JSON")


class RequestLog:
    """Requests, shadow predictions, feedback and rollouts in one SQLite file.

    Writes go through a bounded queue to one thread, which commits whatever has queued up in one
    transaction (a group commit) and then wakes every submitter of that group. ``synchronous``
    is SQLite's: ``"NORMAL"`` survives the death of the process (``kill -9``), ``"FULL"`` also a
    power cut, at an fsync per group.
    """

    def __init__(
        self, path: str | Path, max_queue: int = 10_000, max_group: int = 512, synchronous: str = "NORMAL"
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"log synchronous must be NORMAL or FULL, got {synchronous!r}")
        if max_queue < 1 or max_group < 1:
            raise ValueError(f"log max_queue and max_group must be >= 1, got {max_queue}, {max_group}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_group = max_group
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        writer = self._connect(synchronous)
        writer.executescript(_SCHEMA)
        columns = {row["name"] for row in writer.execute("PRAGMA table_info(requests)")}
        if "teams" not in columns:  # a log written before /rank existed
            writer.execute("ALTER TABLE requests ADD COLUMN teams TEXT")
        if "inputs" not in columns:  # a log written before requests kept their rows
            writer.execute("ALTER TABLE requests ADD COLUMN inputs TEXT")
        # Readers of the log as training data (perennial.data.serve_log) ask for time ranges; they open
        # it read-only, so the writer makes the index.
        writer.execute("CREATE INDEX IF NOT EXISTS requests_at ON requests (at)")
        self._reader = self._connect(synchronous)
        self._reader_lock = threading.Lock()
        self.groups = 0  # commits made, for the metrics
        self._thread = threading.Thread(
            target=self._write_loop, args=(writer,), name="request-log", daemon=True
        )
        self._thread.start()

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        # WAL: readers in other processes (a training loop reading the log) never block the writer,
        # nor it them. The timeout is SQLite's busy timeout: a moment of contention (a checkpoint, a
        # reader's recovery) waits instead of failing a request.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        return conn

    # ---- the writer -------------------------------------------------------------------------------
    def _write_loop(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            group, stop = [first], False
            while len(group) < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
            self._commit(conn, group)
            if stop:
                break
        conn.close()

    def _commit(self, conn: sqlite3.Connection, group: list[_Item]) -> None:
        errors: list[BaseException | None] = []
        try:
            conn.execute("BEGIN")
            for item in group:
                # One bad row fails only its own submitter, not the group: a duplicate id
                # (sqlite3.Error), but also a value the driver cannot bind (a string with a lone
                # surrogate raises UnicodeEncodeError), so any Exception, not just sqlite3.Error.
                conn.execute("SAVEPOINT row")
                try:
                    if item.many:
                        conn.executemany(item.sql, item.params)
                    else:
                        conn.execute(item.sql, item.params)
                    conn.execute("RELEASE row")
                    errors.append(None)
                except Exception as err:
                    conn.execute("ROLLBACK TO row")
                    conn.execute("RELEASE row")
                    errors.append(err)
            conn.execute("COMMIT")
            self.groups += 1
        except BaseException as err:  # the commit itself failed: nobody's row is durable
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            errors = [err] * len(group)
        for item, error in zip(group, errors, strict=True):
            item.done(error)

    def _submit_sync(self, sql: str, params: tuple | list, many: bool = False) -> None:
        if not self._thread.is_alive():
            raise RuntimeError(f"the request log {self.path} is closed")
        item = _Item(sql, params, many=many)
        self._queue.put(item)  # blocks while the queue is full: back-pressure, never a drop
        item.event.wait()
        if item.error is not None:
            raise item.error

    async def _submit(self, sql: str, params: tuple) -> None:
        if not self._thread.is_alive():
            raise RuntimeError(f"the request log {self.path} is closed")
        item = _Item(sql, params, asyncio.get_running_loop())
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # wait in a thread, so the event loop keeps serving
            await asyncio.to_thread(self._queue.put, item)
        await item.future

    # ---- writes -----------------------------------------------------------------------------------
    _REQUEST_SQL = (
        "INSERT INTO requests (request_id, unit, arm, version, champion, rollout, predictions, latency_ms,"
        " at, teams, inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    @staticmethod
    def _request_params(s: Served) -> tuple:
        return (
            s.request_id,
            s.unit,
            s.arm,
            s.version,
            s.champion,
            s.rollout,
            json.dumps(s.predictions),
            s.latency_ms,
            s.at,
            None if s.teams is None else json.dumps(s.teams),
            None if s.inputs is None else json.dumps(s.inputs, separators=(",", ":"), default=_plain),
        )

    def write_request(self, served: Served) -> None:
        """Log a served request; returns once it is committed."""
        self._submit_sync(self._REQUEST_SQL, self._request_params(served))

    async def log_request(self, served: Served) -> None:
        """Log a served request from the event loop; resumes once it is committed."""
        await self._submit(self._REQUEST_SQL, self._request_params(served))

    def write_shadows(self, rows: Sequence[tuple[str, str, Sequence[int], float]]) -> None:
        """Shadow predictions, ``(request_id, version, predictions, latency_ms)`` each, in one write."""
        self._submit_sync(
            "INSERT OR REPLACE INTO shadow (request_id, version, predictions, latency_ms)"
            " VALUES (?, ?, ?, ?)",
            [(r, v, json.dumps(list(p)), ms) for r, v, p, ms in rows],
            many=True,
        )

    def write_feedback(self, request_id: str, labels: Sequence[int]) -> None:
        """Log the labels of a request (for /rank, the clicked positions); a second feedback for it
        raises ``sqlite3.IntegrityError``."""
        self._submit_sync(
            "INSERT INTO feedback (request_id, labels, at) VALUES (?, ?, ?)",
            (request_id, json.dumps(list(labels)), time.time()),
        )

    def write_interaction(
        self,
        unit: str,
        item: int,
        version: str,
        rating: float | None = None,
        click: bool | None = None,
        at: float | None = None,
    ) -> None:
        """Log one accepted recommender feedback (a ``rating`` or a ``click``) of ``unit`` on ``item``
        under ``version``, at ``at`` (wall-clock seconds, default now); returns once it is committed."""
        if (rating is None) == (click is None):
            raise ValueError("an interaction has exactly one of a rating or a click")
        self._submit_sync(
            "INSERT INTO interactions (unit, item, rating, click, version, at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                unit,
                int(item),
                None if rating is None else float(rating),
                None if click is None else int(click),
                version,
                time.time() if at is None else float(at),
            ),
        )

    # ---- reads ------------------------------------------------------------------------------------
    def request(self, request_id: str) -> dict[str, Any] | None:
        """A logged request with its shadow predictions ({version: predictions}), or None."""
        with self._reader_lock:
            row = self._reader.execute(
                "SELECT * FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            if row is None:
                return None
            shadows = self._reader.execute(
                "SELECT version, predictions FROM shadow WHERE request_id = ?", (request_id,)
            ).fetchall()
            has_feedback = self._reader.execute(
                "SELECT 1 FROM feedback WHERE request_id = ?", (request_id,)
            ).fetchone()
        out = dict(row)
        out["predictions"] = json.loads(out["predictions"])
        out["teams"] = None if out["teams"] is None else json.loads(out["teams"])
        out["inputs"] = None if out["inputs"] is None else json.loads(out["inputs"])
        out["shadow"] = {s["version"]: json.loads(s["predictions"]) for s in shadows}
        out["has_feedback"] = has_feedback is not None
        return out

    def feedback_count(self) -> int:
        with self._reader_lock:
            return int(self._reader.execute("SELECT count(*) FROM feedback").fetchone()[0])

    def close(self) -> None:
        """Commit what is queued and stop the writer."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._reader.close()


# ---- interactions, as training data -------------------------------------------------------------------
def unit_user_id(unit: str) -> int:
    """The stable int64 user id of a unit: the first 8 bytes of the BLAKE2b hash of its UTF-8 text, big
    endian, with the sign bit cleared (the same in every process and run, unlike ``hash``).

    >>> unit_user_id("user-1") == unit_user_id("user-1") >= 0
    True
    """
    digest = hashlib.blake2b(unit.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def read_interactions(path: str | Path, after_seq: int = 0) -> pd.DataFrame:
    """The interactions logged after ``after_seq``, in the order they were accepted: columns ``seq``,
    ``unit``, ``user`` (:func:`unit_user_id`), ``item``, ``rating`` (NaN for a click), ``click`` (a
    nullable boolean, NA for a rating), ``version`` (the one that served the session) and
    ``timestamp`` (wall-clock seconds). Opens the log read-only, so a running server keeps writing;
    pass the last ``seq`` read to get only what came since."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no request log there (perennial-serve writes serve.log)")
    columns = ["seq", "unit", "item", "rating", "click", "version", "at"]
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as err:
        raise ValueError(f"{path}: cannot open the request log: {err}") from None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "interactions" not in tables:
            raise ValueError(
                f"{path}: not a recommender serve log: it has no interactions table "
                f"(tables: {sorted(tables) or 'none'})"
            )
        rows = conn.execute(
            f"SELECT {', '.join(columns)} FROM interactions WHERE seq > ? ORDER BY seq", (int(after_seq),)
        ).fetchall()
    except sqlite3.DatabaseError as err:
        if "locked" in str(err) or "busy" in str(err):
            raise
        raise ValueError(f"{path}: not a readable SQLite request log: {err}") from None
    finally:
        conn.close()
    seq, units, items, ratings, clicks, versions, at = zip(*rows, strict=True) if rows else [()] * 7
    return pd.DataFrame(
        {
            "seq": np.array(seq, np.int64),
            "unit": pd.Series(units, dtype=object),
            "user": np.array([unit_user_id(u) for u in units], np.int64),
            "item": np.array(items, np.int64),
            "rating": np.array([np.nan if r is None else r for r in ratings], np.float64),
            "click": pd.array([None if c is None else bool(c) for c in clicks], dtype="boolean"),
            "version": pd.Series(versions, dtype=object),
            "timestamp": np.array(at, np.float64),
        }
    )


# ---- analysis ---------------------------------------------------------------------------------------
def analyze(path: str | Path, registry: str | Path | None = None) -> dict[str, Any]:
    """Every rollout of the registry (default: the directory holding the log), with its statistics
    recomputed from the log at ``path``: each one's labelled requests replayed, in the order their
    feedback arrived, through a fresh engine of its kind and settings (``perennial.rollout.live``, the
    one the servers ran), so the numbers match what was decided live. Also per arm: requests,
    labelled rows and accuracy, or for an arm that answered values (a regressor's, which the log
    keeps as JSON floats where a classifier's class ids are integers) the summed squared error and
    the mean squared error."""
    from perennial.registry import Registry
    from perennial.serve.rollouts import engine, feedback_after, record_rows

    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        arms = {}
        for row in conn.execute("SELECT arm, count(*) AS n FROM requests GROUP BY arm"):
            arms[row["arm"]] = {"requests": row["n"], "labelled": 0, "correct": 0}
        joined = conn.execute(
            "SELECT r.arm, r.predictions, f.labels FROM feedback f JOIN requests r"
            " ON r.request_id = f.request_id WHERE r.teams IS NULL"
        ).fetchall()
    finally:
        conn.close()
    squared_error: dict[str, float] = {}  # the arms that answered values
    for row in joined:  # clicks on a ranking are not labels of its rows
        answers = json.loads(row["predictions"])
        predictions = np.asarray(answers)
        labels = np.asarray(json.loads(row["labels"]))
        stats = arms[row["arm"]]
        stats["labelled"] += len(labels)
        if any(isinstance(p, float) for p in answers):
            errors = predictions.astype(np.float64) - labels.astype(np.float64)
            squared_error[row["arm"]] = squared_error.get(row["arm"], 0.0) + float(np.sum(errors**2))
        else:
            stats["correct"] += int((predictions == labels).sum())
    for arm, stats in arms.items():
        if arm in squared_error:
            del stats["correct"]
            stats["squared_error"] = squared_error[arm]
            stats["mse"] = squared_error[arm] / stats["labelled"]
        else:
            stats["accuracy"] = stats["correct"] / stats["labelled"] if stats["labelled"] else None
    root = Path(registry) if registry is not None else Path(path).parent
    records = []
    if (root / "index.sqlite").exists():
        with Registry(root, create=False, readonly=True) as reader:
            records = reader.rollouts.all()
    out_rollouts = []
    for record in records:
        fresh = engine(replace(record, state=None))
        seq = 0
        while rows := feedback_after(path, record.id, record.candidate, seq):
            record_rows(fresh, rows, record, None)
            seq = rows[-1]["seq"]
        out_rollouts.append(
            {
                "id": record.id,
                "kind": record.kind,
                "champion": record.champion,
                "candidate": record.candidate,
                "settings": record.settings,
                "outcome": record.status,
                "decision": fresh.decide(),
                "shares": fresh.shares(),
                **fresh.summary(),
            }
        )
    return {"arms": arms, "rollouts": out_rollouts}
