"""The server's request log as training data (a closed loop): the rows ``perennial-serve`` answered,
joined with the labels ``/feedback`` sent for them, as windows of wall-clock time that the loop polls
while the server keeps writing.

A window ``[t0, t1)`` holds the rows of the ``/predict`` requests served in it whose label came back
within ``label_deadline`` of the request. It is handed out once that deadline has passed for its
last request, and ``settle`` more (feedback stamped just before the deadline, committed a moment
later); from then on its content is final. Rows are encoded by the input pipeline of the registry's
champion, the encoding the server used to answer them.

>>> import os, tempfile, time, torch
>>> from perennial.data.pipeline import InputPipeline
>>> from perennial.registry import Registry, VersionRecord
>>> from perennial.serve.log import RequestLog, Served
>>> root = tempfile.mkdtemp()
>>> with Registry(root) as registry:  # a champion taking two numbers, answering "no" or "yes"
...     _ = registry.add(
...         VersionRecord("v1", None, "stateless"),
...         {"w": torch.zeros(1)},
...         {"pipeline": InputPipeline((2,), ("no", "yes")).to_dict()},
...     )
...     _ = registry.promote("v1")
>>> log = RequestLog(os.path.join(root, "serve-log.sqlite"))
>>> now = time.time()
>>> for i, label in enumerate([1, 0, None]):  # the third request's label never comes back
...     rows = [[0.5, float(i)]]
...     log.write_request(Served(f"r{i}", "u", "v1", "v1", "v1", None, [1], 0.1, at=now, inputs=rows))
...     if label is not None:
...         log.write_feedback(f"r{i}", [label])
>>> stream = ServeLogStream(log.path, window="60s", label_deadline="30s", clock=lambda: now)
>>> stream.poll()  # the window is still open: its labels may come back for 30s more
[]
>>> stream.clock = lambda: now + 60 + 30 + 2  # past the window's end, the deadline and settle
>>> [(w.index, w.y.tolist()) for w in stream.poll()]
[(0, [1, 0])]
>>> {k: stream.input_report()[k] for k in ("requests", "labelled_rows", "unlabelled_rows")}
{'requests': 3, 'labelled_rows': 2, 'unlabelled_rows': 1}
>>> log.close()
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from perennial.data.encoding import RowError
from perennial.data.pipeline import InputPipeline
from perennial.data.window import DataError, DataIssue, Stream, Window, check_label_delay

FORMAT = "perennial.serve-log/1"
# A poll hands out windows up to this many bytes and leaves the rest to the next poll (the loop polls
# until none come), so catching up on a long backlog never holds it all in memory.
KEEP_BYTES = 64 * 2**20
BUSY_TIMEOUT_S = 30.0
COUNTS = (
    "requests",  # logged requests in the periods decided so far, of every kind
    "rows",  # rows of the /predict requests among them that kept their inputs
    "labelled_rows",  # rows in windows: labelled by the deadline, encoded by the pipeline
    "unlabelled_rows",  # rows whose label never came back (so far)
    "late_feedback",  # rows whose label came back after the deadline, or after their window was read
    "bad_rows",  # labelled rows the pipeline refused, or whose label is not a class id: in quarantine
    "rank_requests",  # /rank requests: their feedback is clicks on a ranking, not labels of rows
    "no_inputs",  # /predict requests logged without their rows (a log written before rows were kept)
    "late_requests",  # requests committed after their window was read: never in a window
)


@dataclass
class _Ledger:
    """What a :class:`ServeLogStream` has read and handed out; its ``state_dict`` is this as JSON.

    ``windows`` lists each window handed out as ``[period, rows]``. ``decisions`` says which snapshot
    of the log decided each period: ``[first_period, request_mark, feedback_mark]`` covers the periods
    from ``first_period`` to the next entry's, read from the requests with a rowid up to
    ``request_mark`` and the feedback with a seq up to ``feedback_mark`` (both only grow as the server
    writes), so that reading a window again gives the same rows whatever was committed since."""

    start: float | None = None  # unix seconds where period 0 starts; fixed at the first request
    next_period: int = 0  # the first period not yet handed out or skipped
    windows: list[list[int]] = field(default_factory=list)
    decisions: list[list] = field(default_factory=list)
    request_mark: int = 0  # the snapshot of the last poll, to find what was committed since
    feedback_mark: int = 0
    empty: list[list[int]] = field(default_factory=list)  # spans [first, last] of periods skipped
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    pipeline: dict | None = None  # the input pipeline every window is encoded with

    def copy(self) -> _Ledger:
        return _Ledger.from_dict(json.loads(json.dumps(self.to_dict())))

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "polled": len(self.windows),
            "start": self.start,
            "next_period": self.next_period,
            "windows": self.windows,
            "decisions": self.decisions,
            "request_mark": self.request_mark,
            "feedback_mark": self.feedback_mark,
            "empty": self.empty,
            "counts": self.counts,
            "pipeline": self.pipeline,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> _Ledger:
        if state.get("format") != FORMAT:
            raise ValueError(
                f"not a serve-log stream state: format {state.get('format')!r}, expected {FORMAT!r}"
            )
        ledger = cls(
            start=state["start"],
            next_period=int(state["next_period"]),
            windows=[[int(p), int(n)] for p, n in state["windows"]],
            decisions=[[int(p), int(r), int(f)] for p, r, f in state["decisions"]],
            request_mark=int(state["request_mark"]),
            feedback_mark=int(state["feedback_mark"]),
            empty=[[int(a), int(b)] for a, b in state["empty"]],
            counts=dict.fromkeys(COUNTS, 0) | {k: int(v) for k, v in state["counts"].items()},
            pipeline=state["pipeline"],
        )
        if len(ledger.windows) != state.get("polled", len(ledger.windows)):
            raise ValueError(
                f"state lists {len(ledger.windows)} windows but says {state['polled']} were polled"
            )
        return ledger

    def marks(self, period: int) -> tuple[int, int]:
        """The snapshot (request mark, feedback mark) that decided ``period``."""
        i = bisect_right(self.decisions, period, key=lambda decision: decision[0]) - 1
        if i < 0:
            raise ValueError(f"period {period} was never decided")
        return self.decisions[i][1], self.decisions[i][2]

    def skip(self, first: int, last: int) -> None:
        """Periods ``first..last`` had no labelled row."""
        if self.empty and self.empty[-1][1] == first - 1:
            self.empty[-1][1] = last
        else:
            self.empty.append([first, last])


@dataclass
class _Read:
    """One period read from the log: its window's rows, what its requests count, its bad rows."""

    x: np.ndarray
    y: np.ndarray
    time: np.ndarray
    counts: dict[str, int]
    quarantine: pd.DataFrame


class ServeLogStream(Stream):
    """The rows ``perennial-serve`` logged at ``path`` and the labels ``/feedback`` gave them, as windows
    of ``window`` (a duration: ``"60s"``, ``"1h"``, ``"1D"``) counted from ``start`` (default: the first
    request's time, floored to a multiple of ``window`` since the unix epoch).

    A row is in its window when its request's feedback came within ``label_deadline`` of the request;
    a window is complete, and handed out, once ``label_deadline`` and ``settle`` have passed since it
    ended. Rows without a label by then are counted (``unlabelled_rows``, or ``late_feedback`` once it
    comes), never trained on; ``/rank`` requests and requests logged without their rows are counted
    and skipped. A period without a labelled row is skipped and reported (``issues``); window indices
    count the windows handed out. Labelled rows the champion's pipeline refuses, or whose label is not
    a class id, go to ``quarantine`` with a reason (``_source`` is the request id, ``_row`` the row in
    it). A log that does not exist yet, or holds no request yet, gives no window yet.

    ``registry`` (default: the folder of ``path``, where the server keeps its log) is the registry
    the server serves from: its champion's stored input pipeline says how rows become inputs, and
    gives ``feature_shape``, ``classes`` and ``feature_names``. It is kept in the state, so that a run
    encodes every window as it began. ``clock`` (default ``time.time``) says what time it is.
    """

    growing: ClassVar[bool] = True

    def __init__(
        self,
        path: str | Path,
        registry: str | Path | None = None,
        window: str = "60s",
        label_deadline: str = "30s",
        settle: str = "2s",
        start: str | float | None = None,
        clock: Callable[[], float] | None = None,
        *,
        label_delay: int | str = 0,
    ) -> None:
        self.path = Path(path).expanduser()
        self.registry = Path(registry).expanduser() if registry is not None else self.path.parent
        self.window, self.label_deadline, self.settle = window, label_deadline, settle
        self._length = _seconds("window", window, positive=True)
        self._deadline = _seconds("label_deadline", label_deadline)
        self._settle = _seconds("settle", settle)
        self._start = _unix_seconds(start)
        self.clock = clock if clock is not None else time.time
        delay = check_label_delay(label_delay)
        if delay != 0 and not (isinstance(delay, str) and pd.Timedelta(delay) == pd.Timedelta(0)):
            raise ValueError(
                f"data.label_delay={label_delay!r}: a serve log's labels are joined by label_deadline "
                "(the time /feedback has to label a request); leave label_delay at 0"
            )
        self.label_delay = 0
        self.name = self.path.name
        self.issues, self.quarantine, self.polled = [], pd.DataFrame(), 0
        self._columns: set[str] = set()  # the requests table's columns, as the last snapshot found them
        self._row_issues: list[DataIssue] = []  # bad rows found in this process
        self._use(_Ledger(pipeline=champion_pipeline(self.registry, self.path).to_dict()))

    # ---- the interface the loop reads ---------------------------------------------------------------
    def poll(self) -> list[Window]:
        """The windows that became complete since the last poll, in order (up to ``KEEP_BYTES`` of them:
        poll again for more). Raises DataError, changing nothing, when the log cannot be read."""
        ledger, quarantine, issues = self._ledger.copy(), [], []
        out: list[Window] = []
        with self._snapshot() as conn:
            if conn is None:
                return []
            if ledger.start is None:
                first = conn.execute("SELECT min(at) FROM requests").fetchone()[0]
                if first is None and self._start is None:
                    return []
                ledger.start = (
                    self._start
                    if self._start is not None
                    else math.floor(first / self._length) * self._length
                )
            request_mark = conn.execute("SELECT coalesce(max(rowid), 0) FROM requests").fetchone()[0]
            feedback_mark = conn.execute("SELECT coalesce(max(seq), 0) FROM feedback").fetchone()[0]
            self._count_late(conn, ledger, request_mark, feedback_mark)
            complete = self._complete(ledger.start)
            first_decided = ledger.next_period
            budget = KEEP_BYTES
            while ledger.next_period < complete and budget > 0:
                period = self._next_busy(conn, ledger, complete, request_mark)
                if period > ledger.next_period:
                    ledger.skip(ledger.next_period, period - 1)
                ledger.next_period = period
                if period >= complete:
                    break
                read = self._read(conn, ledger.start, period, request_mark, feedback_mark)
                for key, n in read.counts.items():
                    ledger.counts[key] += n
                ledger.next_period = period + 1
                index = len(ledger.windows)
                if len(read.quarantine):
                    quarantine.append(read.quarantine)
                    issues.append(self._bad_rows_issue(read.quarantine, index if len(read.y) else None))
                if not len(read.y):
                    ledger.skip(period, period)
                    continue
                ledger.windows.append([period, len(read.y)])
                window = self._window(index, ledger.start, period, read)
                out.append(window)
                budget -= window.x.nbytes + window.y.nbytes + window.time.nbytes
            if ledger.next_period > first_decided:
                ledger.decisions.append([first_decided, request_mark, feedback_mark])
            ledger.request_mark, ledger.feedback_mark = request_mark, feedback_mark
        frames = [q for q in (self.quarantine, *quarantine) if len(q)]
        self.quarantine = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        self._row_issues += issues
        self._use(ledger)
        return out

    def window_at(self, index: int) -> Window:
        """Window ``index`` read again from the log: the same rows, as the snapshot that decided it
        held them, whatever the server has written since."""
        if not 0 <= index < self.polled:
            raise IndexError(f"window {index} has not been polled yet ({self.polled} so far)")
        ledger = self._ledger
        period, rows = ledger.windows[index]
        request_mark, feedback_mark = ledger.marks(period)
        with self._snapshot() as conn:
            if conn is None:
                raise DataError(f"{self.path}: the request log is gone; window {index} cannot be read again")
            read = self._read(conn, ledger.start, period, request_mark, feedback_mark)
        if len(read.y) != rows:
            raise DataError(
                f"{self.path}: window {index} now reads {len(read.y)} rows where it had {rows}: the log "
                "was replaced or changed since the window was handed out"
            )
        return self._window(index, ledger.start, period, read)

    def windows(self) -> list[Window]:
        """Every window complete so far (for tests and replays: this holds them all in memory; the loop
        polls and reads windows one at a time)."""
        while self.poll():
            pass
        return [self.window_at(i) for i in range(self.polled)]

    def __iter__(self) -> Iterator[Window]:
        return iter(self.windows())

    def __len__(self) -> int:
        while self.poll():
            pass
        return self.polled

    def state_dict(self) -> dict:
        """Where period 0 starts, the windows handed out and the snapshots that decided them, the counts
        and the input pipeline: plain JSON, so that a new process reads the same windows and goes on."""
        return self._ledger.to_dict()

    def load_state_dict(self, state: dict) -> None:
        self.quarantine, self._row_issues = pd.DataFrame(), []  # rows of this process only
        self._use(_Ledger.from_dict(json.loads(json.dumps(state))))

    def input_report(self) -> dict:
        """Plain-JSON counts for summary.json (see ``COUNTS``), the windows handed out and the periods
        skipped for want of a labelled row."""
        ledger = self._ledger
        return dict(ledger.counts) | {
            "windows": len(ledger.windows),
            "empty_periods": sum(b - a + 1 for a, b in ledger.empty),
            "start": None if ledger.start is None else _timestamp(ledger.start).isoformat(),
        }

    @property
    def quarantined_rows(self) -> int:
        """Rows set aside since the first poll, in this process and the ones before it."""
        return self._ledger.counts["bad_rows"]

    @property
    def preprocessing(self) -> dict | None:
        """The champion's fitted table encoding as plain JSON, or None for numeric inputs."""
        encoding = self.pipeline.encoding
        return None if encoding is None else encoding.to_dict()

    # ---- reading the log ----------------------------------------------------------------------------
    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection of its own, in one read transaction (one snapshot of the log), closed
        at once so the server's checkpoints go on; None while the log does not exist yet."""
        if not self.path.exists() or (self.path.is_file() and self.path.stat().st_size == 0):
            yield None  # not written yet (a 0-byte file: the server is creating it)
            return
        if not self.path.is_file():
            raise DataError(f"{self.path}: not a file; data.path names the server's request log (SQLite)")
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_S,
            )
        except sqlite3.Error as err:
            raise DataError(f"{self.path}: cannot open the request log: {err}") from None
        try:
            conn.execute("BEGIN")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in ("requests", "feedback") if t not in tables]
            if missing:
                raise DataError(
                    f"{self.path}: not a perennial-serve request log: it has no {' or '.join(missing)} "
                    f"table (tables: {sorted(tables) or 'none'})"
                )
            self._columns = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
            yield conn
        except sqlite3.DatabaseError as err:
            if "locked" in str(err) or "busy" in str(err):
                raise
            raise DataError(f"{self.path}: not a readable SQLite request log: {err}") from None
        finally:
            conn.close()

    def _complete(self, start: float) -> int:
        """How many periods from ``start`` are complete now: ended, their deadline and settle passed."""
        now, wait = float(self.clock()), self._deadline + self._settle
        n = max(0, math.floor((now - wait - start) / self._length))
        while start + (n + 1) * self._length + wait <= now:  # floating point: check both ways
            n += 1
        while n > 0 and start + n * self._length + wait > now:
            n -= 1
        return n

    def _bounds(self, start: float, period: int) -> tuple[float, float]:
        return start + period * self._length, start + (period + 1) * self._length

    def _next_busy(self, conn: sqlite3.Connection, ledger: _Ledger, complete: int, request_mark: int) -> int:
        """The first period from ``ledger.next_period`` on with a request, or ``complete`` if none before:
        an idle night of one-minute windows is skipped in one query, not 600."""
        t0 = self._bounds(ledger.start, ledger.next_period)[0]
        end = self._bounds(ledger.start, complete)[0]
        at = conn.execute(
            "SELECT min(at) FROM requests WHERE at >= ? AND at < ? AND rowid <= ?", (t0, end, request_mark)
        ).fetchone()[0]
        if at is None:
            return complete
        period = max(ledger.next_period, math.floor((at - ledger.start) / self._length))
        while self._bounds(ledger.start, period)[0] > at:
            period -= 1
        while self._bounds(ledger.start, period)[1] <= at:
            period += 1
        return max(period, ledger.next_period)

    def _read(
        self, conn: sqlite3.Connection, start: float, period: int, request_mark: int, feedback_mark: int
    ) -> _Read:
        t0, t1 = self._bounds(start, period)
        inputs = "r.inputs" if "inputs" in self._columns else "NULL"
        teams = "r.teams" if "teams" in self._columns else "NULL"
        requests = conn.execute(
            f"SELECT r.request_id, r.version, r.at, {inputs}, {teams}, f.labels, f.at"
            " FROM requests r LEFT JOIN feedback f ON f.request_id = r.request_id AND f.seq <= ?"
            " WHERE r.at >= ? AND r.at < ? AND r.rowid <= ? ORDER BY r.at, r.rowid",
            (feedback_mark, t0, t1, request_mark),
        ).fetchall()
        counts = dict.fromkeys(COUNTS, 0)
        taken: list[tuple[str, str, float, int, Any, Any]] = []  # request, version, at, row, input, label
        bad: list[dict] = []
        for request_id, version, at, logged, ranked, labels, feedback_at in requests:
            counts["requests"] += 1
            if ranked is not None:
                counts["rank_requests"] += 1
                continue
            if logged is None:
                counts["no_inputs"] += 1
                continue
            rows = _json(logged)
            rows = rows if isinstance(rows, list) else [rows]
            counts["rows"] += len(rows)
            if labels is None:
                counts["unlabelled_rows"] += len(rows)
                continue
            if feedback_at > at + self._deadline:
                counts["late_feedback"] += len(rows)
                continue
            labels = _json(labels)
            if not isinstance(labels, list) or len(labels) != len(rows):
                given = len(labels) if isinstance(labels, list) else "no list of"
                for k, row in enumerate(rows):
                    reason = f"its feedback has {given} label(s) for the request's {len(rows)} row(s)"
                    bad.append(_bad(request_id, k, version, at, row, None, reason))
                continue
            for k, (row, label) in enumerate(zip(rows, labels, strict=True)):
                taken.append((request_id, version, at, k, row, label))
        x, keep = self._encode([t[4] for t in taken], [t[5] for t in taken])
        for t, reason in zip(taken, keep, strict=True):
            if reason is not None:
                bad.append(_bad(t[0], t[3], t[1], t[2], t[4], t[5], reason))
        good = [t for t, reason in zip(taken, keep, strict=True) if reason is None]
        counts["labelled_rows"], counts["bad_rows"] = len(good), len(bad)
        return _Read(
            x=x,
            y=np.array([t[5] for t in good], dtype=np.float32 if self.task == "regression" else np.int64),
            time=pd.to_datetime(np.array([t[2] for t in good], dtype=np.float64), unit="s").to_numpy(),
            counts=counts,
            quarantine=pd.DataFrame(bad) if bad else pd.DataFrame(),
        )

    def _encode(self, rows: list, labels: list) -> tuple[np.ndarray, list[str | None]]:
        """``rows`` as inputs (the good ones, in order), and per row None or why it was refused. Named
        rows and numeric ones each go through the pipeline in one batch, row by row only when a batch
        holds a bad one."""
        reasons = [_label_problem(label, len(self.classes), self.task) for label in labels]
        kinds = {"named": [], "numeric": []}
        for i, row in enumerate(rows):
            if reasons[i] is not None:
                continue
            if isinstance(row, Mapping):
                kinds["named"].append(i)
            elif isinstance(row, list):
                kinds["numeric"].append(i)
            else:
                reasons[i] = f"a logged row is a list of numbers or an object of raw columns, not {row!r:.40}"
        encoded: dict[int, np.ndarray] = {}
        for kind, positions in kinds.items():
            encode = self.pipeline.encode_rows if kind == "named" else self.pipeline.check_array
            if not positions:
                continue
            try:
                x = encode([rows[i] for i in positions])
                encoded.update(zip(positions, x, strict=True))
                continue
            except (DataError, ValueError, TypeError):
                pass
            for i in positions:  # a batch with a bad row: find it, keep the others
                try:
                    encoded[i] = encode([rows[i]])[0]
                except (DataError, ValueError, TypeError) as err:
                    reasons[i] = _reason(err)
        good = [encoded[i] for i in range(len(rows)) if reasons[i] is None]
        shape = (len(good), *self.feature_shape)
        x = np.stack(good).astype(np.float32).reshape(shape) if good else np.empty(shape, np.float32)
        return x, reasons

    def _count_late(
        self, conn: sqlite3.Connection, ledger: _Ledger, request_mark: int, feedback_mark: int
    ) -> None:
        """Count what was committed, since the last poll, for periods already decided: feedback (its
        rows move from unlabelled to late) and requests (late requests, never in a window)."""
        if ledger.start is None or ledger.next_period == 0:
            return
        start, decided_end = ledger.start, self._bounds(ledger.start, ledger.next_period)[0]
        inputs = "r.inputs" if "inputs" in self._columns else "NULL"
        teams = "r.teams" if "teams" in self._columns else "NULL"
        feedback = conn.execute(
            f"SELECT r.rowid, r.at, {inputs}, {teams} FROM feedback f"
            " JOIN requests r ON r.request_id = f.request_id"
            " WHERE f.seq > ? AND f.seq <= ? AND r.at >= ? AND r.at < ?",
            (ledger.feedback_mark, feedback_mark, start, decided_end),
        ).fetchall()
        for rowid, at, logged, ranked in feedback:
            period = math.floor((at - start) / self._length)
            period = min(max(period, 0), ledger.next_period - 1)
            if ranked is not None or logged is None or rowid > ledger.marks(period)[0]:
                continue  # not rows, or a late request: its rows were never counted unlabelled
            rows = _json(logged)
            n = len(rows) if isinstance(rows, list) else 1
            ledger.counts["unlabelled_rows"] -= n
            ledger.counts["late_feedback"] += n
        late = conn.execute(
            "SELECT count(*) FROM requests WHERE rowid > ? AND rowid <= ? AND at >= ? AND at < ?",
            (ledger.request_mark, request_mark, start, decided_end),
        ).fetchone()[0]
        ledger.counts["late_requests"] += late

    # ---- the stream's view ---------------------------------------------------------------------------
    def _use(self, ledger: _Ledger) -> None:
        self._ledger = ledger
        self.polled = len(ledger.windows)
        self.pipeline = InputPipeline.from_dict(ledger.pipeline)
        self.feature_shape = self.pipeline.feature_shape
        self.classes = list(self.pipeline.classes)
        self.task = self.pipeline.task
        self.feature_names = list(self.pipeline.feature_names or [])
        self._refresh_issues()

    def _refresh_issues(self) -> None:
        """The empty periods, one issue per run of them (an idle night is one), then the bad rows."""
        ledger = self._ledger
        empty = []
        for first, last in ledger.empty:
            t0 = _timestamp(self._bounds(ledger.start, first)[0])
            t1 = _timestamp(self._bounds(ledger.start, last)[1])
            message = (
                f"{self.path}: no labelled row from {t0} to {t1} ({last - first + 1} period(s) of "
                f"{self.window!r}); skipped"
            )
            empty.append(DataIssue("empty_window", str(self.path), message, column="at"))
        self.issues = empty + self._row_issues

    def _window(self, index: int, start: float, period: int, read: _Read) -> Window:
        t0, t1 = self._bounds(start, period)
        return Window(index, _timestamp(t0), _timestamp(t1), read.x, read.y, read.time)

    def _bad_rows_issue(self, bad: pd.DataFrame, index: int | None) -> DataIssue:
        first = bad.iloc[0]
        where = f"window {index}" if index is not None else "a period skipped"
        return DataIssue(
            "bad_row",
            str(self.path),
            f"{self.path}: {len(bad)} logged row(s) of {where} set aside; the first, row {first['_row']} of "
            f"request {first['_source']!r}: {first['reason']}",
            row=int(first["_row"]),
            window=index,
        )


def champion_pipeline(registry: str | Path, log: str | Path) -> InputPipeline:
    """The input pipeline stored with the champion of ``registry`` (the registry whose server wrote the
    request log ``log``), or a DataError naming the registry and what is missing."""
    # Imported here: the registry brings torch, which reading other sources does not need.
    from perennial.registry import Registry
    from perennial.registry.store import CorruptVersion, RegistryIndexError

    root = Path(registry)
    why = f"data.registry names the registry the server of {log} serves from (default: the log's folder)"
    try:
        with Registry(root, create=False, readonly=True) as reg:
            champion = reg.champion()
            if champion is None:
                raise DataError(
                    f"{root}: the registry has no champion yet, whose input pipeline would say how the "
                    f"rows logged in {log} become inputs; promote a version first"
                )
            stored = reg.load_extra(champion, "pipeline")
    except FileNotFoundError:
        raise DataError(f"{root}: no registry there (no index.sqlite); {why}") from None
    except (RegistryIndexError, CorruptVersion, sqlite3.DatabaseError) as err:
        raise DataError(f"{root}: cannot read the registry: {err}; {why}") from None
    if stored is None:
        raise DataError(
            f"{root}: champion {champion} was stored without its input pipeline (the 'pipeline' extra of "
            f"versions trained before versions carried one), so the rows logged in {log} cannot be "
            "encoded as it encoded them; promote a version trained since"
        )
    try:
        pipeline = InputPipeline.from_dict(stored)
    except ValueError as err:
        raise DataError(f"{root}: champion {champion}'s stored pipeline is unusable: {err}") from None
    if not pipeline.classes and pipeline.task != "regression":
        raise DataError(f"{root}: champion {champion}'s stored pipeline names no classes")
    return pipeline


def _seconds(name: str, value: object, positive: bool = False) -> float:
    """A duration setting (``"30s"``, ``"1D"``) in seconds, or a ValueError naming it."""
    try:
        seconds = pd.Timedelta(str(value)).total_seconds()
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        kind = "a positive duration" if positive else "a duration >= 0"
        raise ValueError(f"{name} must be {kind} like '60s', '1h' or '1D'; got {value!r}")
    return seconds


def _unix_seconds(value: str | float | None) -> float | None:
    """``start`` as unix seconds: a number of them, or a timestamp ("2024-05-01 09:00", UTC if naive)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        stamp = pd.Timestamp(str(value))
    except ValueError:
        raise ValueError(
            f"start must be a timestamp like '2024-05-01 09:00' or unix seconds; got {value!r}"
        ) from None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.value / 1e9


def _timestamp(seconds: float) -> pd.Timestamp:
    """Unix seconds as a (naive, UTC) pandas Timestamp, as windows start and end."""
    return pd.Timestamp(seconds, unit="s")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _label_problem(label: object, n_classes: int, task: str = "classification") -> str | None:
    if task == "regression":
        number = not isinstance(label, bool) and isinstance(label, int | float)
        if not number or not math.isfinite(label) or abs(label) > np.finfo(np.float32).max:
            return f"label {label!r} is not a finite number (the champion is a regressor)"
        return None
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < n_classes:
        return f"label {label!r} is not a class id of the champion (0..{n_classes - 1})"
    return None


def _reason(err: Exception) -> str:
    """Why the pipeline refused one row, without the ``row 0`` of a batch of one."""
    if isinstance(err, RowError):
        return err.problem if err.column is None else f"column {err.column!r}: {err.problem}"
    return re.sub(r"^row 0\b", "the row", str(err))


def _bad(request_id: str, row: int, version: str, at: float, raw: object, label: object, reason: str) -> dict:
    """One quarantined row: where it was logged (``_source`` the request, ``_row`` its row), as sent."""
    return {
        "_source": request_id,
        "_row": row,
        "at": _timestamp(at),
        "version": version,
        "input": json.dumps(raw, separators=(",", ":")),
        "label": label,
        "reason": reason,
    }
