"""Windows from a directory where a table's partitions keep landing (a CSV or Parquet file a day),
read incrementally: each poll looks only at new files, and only the windows in use are in memory.
Labels may land in files of their own, later than the rows they label (``labels`` and ``key``).

>>> stream = PartitionedTable("landing/", time_column="when", target="churned", window="1D")  # doctest: +SKIP
>>> windows = stream.poll()  # the days that became complete since the last poll  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import csv
import glob
import hashlib
import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, overload
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from perennial.data.encoding import NumericColumn, TableEncoding
from perennial.data.table import (
    SEPARATORS,
    RowOrigin,
    TableChecks,
    TableStream,
    empty_periods,
    parse_window,
    sorted_values,
)
from perennial.data.window import DataError, DataIssue, Stream, Window, has_label

FORMAT = "perennial.partitioned-table/2"
# The state before files were numbered: still read, so that a run checkpointed then resumes.
FORMAT_1 = "perennial.partitioned-table/1"
# Names that writers use for files not meant to be read: hidden files, Spark's _SUCCESS markers, and
# files still being written (write a partition as ".part.tmp" or "_part", rename it when complete).
IGNORED_PREFIXES = (".", "_")
GLOB_CHARACTERS = set("*?[")
# Windows read while polling are handed back as they are up to this many bytes; later ones are read
# again from the files when the caller reaches them, so a backlog of years is never in memory at once.
KEEP_BYTES = 64 * 2**20
SCAN_BATCH_ROWS = 1 << 16
OUTSIDE = "outside"  # late rows in periods that passed without a window (empty) or before the first
UNLABELLED = -1  # the class id of a row whose label has not landed; NaN for a regression target
ROWS_NAMED = 10  # rows an issue lists by number; it counts the rest
INTEGER = re.compile(r"-?[0-9]{1,18}")


@dataclass
class FileRecord:
    """A partition as it was read: its size and mtime, its rows and time range, and the rows of it that
    landed after their window had been read (``late``: window index, or ``"outside"``, to rows). The
    time range is forgotten (None) once every period it reaches has been handed out or skipped: only
    windows to come need it, and 18,000 daily files would otherwise carry it in every checkpoint."""

    size: int
    mtime_ns: int
    rows: int
    first: str | None  # earliest time, ISO; None when no row has a time, or once the file is behind
    last: str | None
    missing_time: int = 0
    late: dict[str, int] = field(default_factory=dict)


@dataclass
class LabelFileRecord:
    """A label file as read (labels apart from the inputs): its size, mtime and rows; the rows whose
    label waits for its window (row numbers), the labels that landed after their window's labels had
    (``late``: window index to count), and the rows without a usable label (``bad``: no key, no
    label, or a label outside ``classes``)."""

    size: int
    mtime_ns: int
    rows: int
    waiting: list[int] = field(default_factory=list)
    late: dict[str, int] = field(default_factory=dict)
    bad: int = 0


@dataclass
class WindowRecord:
    """A window handed out: its period (from the origin), its rows after the quarantine, how many rows
    of each file fell in its span when it was read, and a digest of its ``x``, ``y`` and ``time``.

    Once its labels landed (labels apart from the inputs): the label files that gave them, each with
    the rows of it read then (``labels``), the rows labelled, a digest of ``y``, the range of its keys
    (to find the window a late label belongs to without reading every window), and its rows whose key
    is not unique (``unkeyed``: a label cannot tell which row it is for, so they have none)."""

    period: int
    rows: int
    files: dict[str, int]
    digest: str
    labels: dict[str, int] | None = None
    labelled: int = 0
    labels_digest: str | None = None
    keys: list[str] | None = None  # [smallest, largest] in key order
    unkeyed: list[int] = field(default_factory=list)

    def to_dict(self, number: dict[str, int], label_number: dict[str, int]) -> dict:
        state: dict[str, Any] = {"period": self.period, "rows": self.rows}
        state["files"] = _runs({number[name]: rows for name, rows in self.files.items()})
        state["digest"] = self.digest
        if self.labels is not None:
            state["labels"] = _runs({label_number[name]: rows for name, rows in self.labels.items()})
            state |= {"labelled": self.labelled, "labels_digest": self.labels_digest, "keys": self.keys}
            if self.unkeyed:
                state["unkeyed"] = _spans(self.unkeyed)
        return state

    @classmethod
    def from_dict(cls, state: dict, names: list[str], label_names: list[str]) -> WindowRecord:
        record = cls(state["period"], state["rows"], {}, state["digest"])
        record.files = {names[i]: rows for i, rows in _unruns(state["files"]).items()}
        if state.get("labels") is not None:
            record.labels = {label_names[i]: rows for i, rows in _unruns(state["labels"]).items()}
            record.labelled, record.labels_digest = state["labelled"], state["labels_digest"]
            record.keys, record.unkeyed = state["keys"], _unspans(state.get("unkeyed", []))
        return record


@dataclass
class Ledger:
    """What a :class:`PartitionedTable` has read and handed out; its ``state_dict`` is this as JSON.

    In the JSON, files are numbered in the order first seen and listed once, as columns; a window
    names its files by number, in runs (``[first, last, rows]``: files ``first..last`` gave ``rows``
    rows each), so a window of 365 daily files takes a few bytes, not 365 names."""

    origin: str | None = None  # start of period 0, ISO; fixed when the encoding is fitted
    newest: str | None = None  # the newest time seen in any file
    next_period: int = 0  # the first period not yet handed out or skipped
    last_period: int | None = None  # the period of the last window, to report the empty ones after it
    fit: dict | None = None  # {"encoding", "classes", "features"}, fitted on the first window
    files: dict[str, FileRecord] = field(default_factory=dict)  # in the order first seen
    set_aside: dict[str, dict] = field(default_factory=dict)  # file -> size, mtime_ns, reason
    missing: list[str] = field(default_factory=list)  # known files no longer there
    windows: list[WindowRecord] = field(default_factory=list)
    issues: list[dict] = field(default_factory=list)  # about files and periods; bad rows are counted
    quarantined_rows: int = 0
    label_files: dict[str, LabelFileRecord] = field(default_factory=dict)  # in the order first seen
    label_set_aside: dict[str, dict] = field(default_factory=dict)
    label_missing: list[str] = field(default_factory=list)

    def copy(self) -> Ledger:
        """A copy for a poll or a landing to change, committed only if nothing failed: every record
        and what it holds copied (a new mutable field must be copied here too), some ten times faster
        than ``copy.deepcopy`` on tens of thousands of files."""
        return replace(
            self,
            fit=copy.deepcopy(self.fit),
            files={n: replace(r, late=dict(r.late)) for n, r in self.files.items()},
            set_aside={n: dict(s) for n, s in self.set_aside.items()},
            missing=list(self.missing),
            windows=[
                replace(
                    w,
                    files=dict(w.files),
                    labels=None if w.labels is None else dict(w.labels),
                    keys=None if w.keys is None else list(w.keys),
                    unkeyed=list(w.unkeyed),
                )
                for w in self.windows
            ],
            issues=copy.deepcopy(self.issues),
            label_files={
                n: replace(r, waiting=list(r.waiting), late=dict(r.late)) for n, r in self.label_files.items()
            },
            label_set_aside={n: dict(s) for n, s in self.label_set_aside.items()},
            label_missing=list(self.label_missing),
        )

    def to_dict(self) -> dict:
        number = {name: i for i, name in enumerate(self.files)}
        label_number = {name: i for i, name in enumerate(self.label_files)}
        return {
            "format": FORMAT,
            "polled": len(self.windows),
            "origin": self.origin,
            "newest": self.newest,
            "next_period": self.next_period,
            "last_period": self.last_period,
            "fit": self.fit,
            "files": _file_table(self.files),
            "set_aside": self.set_aside,
            "missing": sorted(number[name] for name in self.missing),
            "windows": [w.to_dict(number, label_number) for w in self.windows],
            "issues": self.issues,
            "quarantined_rows": self.quarantined_rows,
            "label_files": _label_table(self.label_files),
            "label_set_aside": self.label_set_aside,
            "label_missing": sorted(label_number[name] for name in self.label_missing),
        }

    @classmethod
    def from_dict(cls, state: dict) -> Ledger:
        if state.get("format") == FORMAT_1:
            ledger = cls._from_first_format(state)
        elif state.get("format") == FORMAT:
            names, label_names = state["files"]["name"], state["label_files"]["name"]
            ledger = cls(
                origin=state["origin"],
                newest=state["newest"],
                next_period=state["next_period"],
                last_period=state["last_period"],
                fit=state["fit"],
                files=_file_records(state["files"]),
                set_aside=state["set_aside"],
                missing=[names[i] for i in state["missing"]],
                windows=[WindowRecord.from_dict(w, names, label_names) for w in state["windows"]],
                issues=state["issues"],
                quarantined_rows=state["quarantined_rows"],
                label_files=_label_records(state["label_files"]),
                label_set_aside=state["label_set_aside"],
                label_missing=[label_names[i] for i in state["label_missing"]],
            )
        else:
            raise ValueError(
                f"not a partitioned-table state: format {state.get('format')!r}, expected {FORMAT!r}"
            )
        if len(ledger.windows) != state.get("polled", len(ledger.windows)):
            raise ValueError(
                f"state lists {len(ledger.windows)} windows but says {state['polled']} were polled"
            )
        return ledger

    @classmethod
    def _from_first_format(cls, state: dict) -> Ledger:
        fields = {k: v for k, v in state.items() if k not in ("format", "polled")}
        ledger = cls(**fields)
        ledger.files = {k: FileRecord(**v) for k, v in ledger.files.items()}
        ledger.windows = [WindowRecord(**w) for w in ledger.windows]
        return ledger


def _file_table(files: dict[str, FileRecord]) -> dict:
    """File records as columns, in the order first seen; what most files lack (a time range once
    they are behind, rows without a time, late rows) only where a file has it, by number."""
    records = list(files.values())
    table: dict[str, Any] = {"name": list(files)}
    for column in ("size", "mtime_ns", "rows"):
        table[column] = [getattr(r, column) for r in records]
    for column in ("first", "last", "missing_time", "late"):
        table[column] = {str(i): getattr(r, column) for i, r in enumerate(records) if getattr(r, column)}
    return table


def _file_records(table: dict) -> dict[str, FileRecord]:
    def sparse(column: str, i: int, empty: Any) -> Any:
        return table[column].get(str(i), empty)

    return {
        name: FileRecord(
            table["size"][i],
            table["mtime_ns"][i],
            table["rows"][i],
            sparse("first", i, None),
            sparse("last", i, None),
            sparse("missing_time", i, 0),
            sparse("late", i, {}),
        )
        for i, name in enumerate(table["name"])
    }


def _label_table(files: dict[str, LabelFileRecord]) -> dict:
    records = list(files.values())
    table: dict[str, Any] = {"name": list(files)}
    for column in ("size", "mtime_ns", "rows"):
        table[column] = [getattr(r, column) for r in records]
    table["waiting"] = {str(i): _spans(r.waiting) for i, r in enumerate(records) if r.waiting}
    for column in ("late", "bad"):
        table[column] = {str(i): getattr(r, column) for i, r in enumerate(records) if getattr(r, column)}
    return table


def _label_records(table: dict) -> dict[str, LabelFileRecord]:
    return {
        name: LabelFileRecord(
            table["size"][i],
            table["mtime_ns"][i],
            table["rows"][i],
            _unspans(table["waiting"].get(str(i), [])),
            table["late"].get(str(i), {}),
            table["bad"].get(str(i), 0),
        )
        for i, name in enumerate(table["name"])
    }


def _runs(counts: dict[int, int]) -> list[list[int]]:
    """``{number: count}`` as runs ``[first, last, count]`` of consecutive numbers with one count.

    >>> _runs({3: 1, 4: 1, 5: 1, 9: 2, 10: 1})
    [[3, 5, 1], [9, 9, 2], [10, 10, 1]]
    """
    runs: list[list[int]] = []
    for number in sorted(counts):
        if runs and runs[-1][1] == number - 1 and runs[-1][2] == counts[number]:
            runs[-1][1] = number
        else:
            runs.append([number, number, counts[number]])
    return runs


def _unruns(runs: list[list[int]]) -> dict[int, int]:
    return {number: count for first, last, count in runs for number in range(first, last + 1)}


def _spans(numbers: Sequence[int]) -> list[list[int]]:
    """Sorted numbers as spans ``[first, last]`` of consecutive ones.

    >>> _spans([0, 1, 2, 5, 7, 8])
    [[0, 2], [5, 5], [7, 8]]
    """
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and spans[-1][1] == number - 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return spans


def _unspans(spans: list[list[int]]) -> list[int]:
    return [number for first, last in spans for number in range(first, last + 1)]


@dataclass
class _Pending:
    """Bad rows found by a poll, recorded only if the poll succeeds."""

    quarantine: list[pd.DataFrame] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)


@dataclass
class _Read:
    """The rows of one window read from its files: raw columns, times, where each row came from."""

    frame: pd.DataFrame
    times: np.ndarray
    origin: RowOrigin
    counts: dict[str, int]


@dataclass
class _Labels:
    """The rows of one label file: each row's key (text, None if missing), class id (-1 when the row
    has no usable label; for a regression target its value, NaN when unusable) and, for those, why not."""

    keys: np.ndarray
    y: np.ndarray
    reasons: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.y)


# A label waiting for its window: the label file, the row, the class id (or regression value).
Waiting = dict[str, tuple[str, int, int | float]]


@dataclass
class PartitionedTable(Stream):
    """A directory (or a glob) of CSV, TSV or Parquet partitions of one table, read window by window as
    files land. Rows are checked and encoded exactly as :class:`TableStream` does (the same
    :class:`TableChecks`), with the encoding and the classes fitted on the first window only. The
    features are ``features``, or the columns of the first window's first file; a column added to
    later files is not read. Rows are numbered as data rows of their file (blank lines are skipped).

    ``window`` is a duration: consecutive periods from the earliest time of the first window read. A
    window is handed out by :meth:`poll` once its end is at or before the watermark, the newest time
    seen less ``allowed_lateness``; empty periods are skipped and reported. Its rows are those of the
    files known then, with a time in its span, in time order (ties: by file path, then row). Rows that
    land later for a window already handed out (or for a period skipped) are *late*: not added, but
    counted in :meth:`input_report` and reported in ``issues`` (one ``late_rows`` issue per file).
    Row-count windows are refused: which rows make the 500th would change as late rows land.

    Files are found recursively; hive folders (``date=2024-01-01/part-0.parquet``) give a column
    ``date`` to a file that lacks it, when that column is the time, the target or a declared feature.
    Names starting with ``.`` or ``_`` are ignored (write a partition under such a name, then rename).

    ``task="regression"``: the target holds numbers, ``y`` float32 values, ``classes`` is empty (and
    declaring some an error); a target that is not a number is a DataError naming file, row and value,
    and a missing or infinite one sets its row aside. Below, "class id -1" reads "NaN" for it.

    Labels that land apart from the inputs (``labels``: a directory, glob or file of CSV/Parquet label
    files with the columns ``key`` and ``target``; ``key`` is also a column of the partitions, naming
    one row): the partitions have no target, ``classes`` must be declared (unless ``task`` is
    regression), and every row of a polled window has class id -1. :meth:`land_labels` (the loop calls
    it when a window's labels are due) reads the label files that landed since, gives the window the
    labels of its rows' keys (-1 where none landed) and records which label files (and how many of
    their rows) gave them, with a digest:
    :meth:`window_at` reads exactly that window again from then on, in a new process too. A label
    whose key is in no window labelled so far waits for its window (it may be in one not complete yet;
    ``input_report`` counts ``labels_waiting``, never as an error: a key may belong to a window to
    come). A label landing after its window's labels is *late*: counted (``late_labels``,
    ``late_labels_by_window``), never applied. A key that names two rows (within a window, or in two
    windows) leaves those rows unlabelled, reported as ``duplicate_key``.

    What happens to bad input (``issues`` and ``input_report`` list every case, nothing is dropped
    silently). Errors are :class:`DataError` naming the file, raised before the source changes at all,
    so a loop that checkpoints after each window loses nothing and goes on once the file is fixed:

    - errors: a file that cannot be read (corrupt Parquet, malformed CSV, not UTF-8), one without the
      time, target or a feature column, one whose numeric feature now holds text (its type changed),
      unparseable times, and more than half a window's rows bad; :meth:`window_at` on a window whose
      file is gone or whose rows changed since it was handed out (each window keeps a digest). With
      ``labels``: a partition with the target column (one source of labels) or without the key, a
      label file unreadable or without the key or the target, one that lost rows, and a key labelled
      twice (both files named).
    - set aside and reported: files of another type (``notes.txt``); each is looked at again if it
      changes. Rows with a bad value, no time or no target (no key, with ``labels``), or a label outside
      ``classes`` (a growing source cannot renumber its classes), go to ``quarantine`` with a reason
      naming file and row. A label file's rows without a key or a label, or with one outside
      ``classes``, label nothing: counted (``bad_labels``) and reported by file and row.
    - reported: a known file that disappears (windows it backs can no longer be read again), a file
      that changes (its new rows in past windows are late; append-only files re-read identically), and
      late rows, including whole files older than the windows already handed out.

    The fitted encoding, classes and features, every file seen (size, mtime, rows) and every window
    handed out (period, files, digest) are in :meth:`state_dict`, so a new process re-reads each window
    identically and continues where the last one stopped. ``feature_shape`` and ``classes`` are known
    once the first window is complete: building the source reads the time column of the files present
    and fits the encoding on the first window, if it is complete.
    """

    path: str | Path
    time_column: str
    target: str
    window: str = "7D"
    _: KW_ONLY
    features: Sequence[str] | None = None
    categorical: Sequence[str] | None = None
    classes: list | None = None  # declared, or the sorted labels of the first window
    on_bad_rows: str = "quarantine"
    min_frequency: int = 1
    max_categories: int = 1000
    allowed_lateness: str = "0s"
    labels: str | Path | None = None  # label files apart from the partitions (None: the target column)
    key: str | None = None  # with labels: the column of both that names a row
    task: str = "classification"  # or "regression"; overrides Stream.task so the user may set it
    growing: ClassVar[bool] = True  # too few windows today means "wait for more", not an error
    feature_names: list[str] = field(init=False, default_factory=list)
    encoding: TableEncoding | None = field(init=False, repr=False, default=None)
    _ledger: Ledger = field(init=False, repr=False, default_factory=Ledger)
    _row_issues: list[DataIssue] = field(init=False, repr=False, default_factory=list)
    # Labels apart, in this process only (rebuilt from the ledger and the files): the labels waiting
    # for their window by key, and each labelled window's keys (key -> the label file that labelled it).
    _waiting: Waiting | None = field(init=False, repr=False, default=None)
    _landed_keys: dict[int, dict[str, str | None]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        period = parse_window(self.window)
        if isinstance(period, int):
            raise ValueError(
                f"window={self.window!r}: partitions are cut into periods of time (e.g. '1D', '7D'); a "
                f"window of a row count would change as late rows land. For row-count windows read one "
                f"file with TableStream"
            )
        self._period = period
        try:
            self._lateness = pd.Timedelta(str(self.allowed_lateness))
        except ValueError:
            self._lateness = pd.Timedelta(-1)
        if self._lateness < pd.Timedelta(0):
            raise ValueError(
                f"allowed_lateness must be a duration >= 0 like '0s' or '6h'; got {self.allowed_lateness!r}"
            )
        self._checks = TableChecks.of(self)
        self._checks.check_classes(self.classes)
        self._declared_classes = list(self.classes) if self.classes is not None else None
        self._apart = self.labels is not None
        self._check_label_options()
        self._root, self._pattern = _root_and_pattern(self.path)
        self._label_root, self._label_pattern = (
            _label_root_and_pattern(self.labels) if self.labels is not None else (None, None)
        )
        self._skip = _label_folder(self.labels, self._root)
        self.name = self._root.name or str(self._root)
        # Know the input width as soon as the data allow: fit the encoding on the first window if it is
        # complete, without handing it out (the first poll does).
        self._advance(emit=False)

    def _check_label_options(self) -> None:
        if not self._apart:
            if self.key is not None:
                raise ValueError(
                    f"key={self.key!r} joins labels that land apart from the partitions: give labels (a "
                    f"directory or glob of label files) too, or leave key out"
                )
            return
        if self.key is None:
            raise ValueError(
                f"labels={str(self.labels)!r}: give key, the column of both the partitions and the label "
                f"files that names a row"
            )
        if self._declared_classes is None and not self._checks.regression:
            raise ValueError(
                f"labels={str(self.labels)!r} land after the rows they label, so the first window cannot "
                f"define the class ids: declare classes (e.g. classes=[0, 1])"
            )
        if self.key in (self.time_column, self.target):
            raise ValueError(f"key={self.key!r} names a row: it cannot be the time column or the target")
        if self.key in (self.features or []) or self.key in (self.categorical or []):
            raise ValueError(
                f"key={self.key!r} names a row: it cannot be a feature; leave it out of features"
            )

    # -- the interface the loop reads ---------------------------------------------------------------

    def poll(self) -> Sequence[Window]:
        """The windows that became complete since the last poll, in order. Raises DataError, changing
        nothing, when a file is unreadable or wrong; the same poll succeeds once it is fixed. With
        ``labels``, their rows have class id -1 until :meth:`land_labels`."""
        return self._advance(emit=True)

    def window_at(self, index: int) -> Window:
        """Window ``index`` read again from the files that backed it when it was handed out: the same
        rows, so exactly the same ``x``, ``y`` and ``time`` (checked against its digest). With
        ``labels``: the labels :meth:`land_labels` gave it (-1 for every row before)."""
        self._check_polled(index)
        return self._labelled(self._ledger, index)[0]

    @property
    def records_landings(self) -> bool:
        return self._apart

    def land_labels(self, index: int) -> Window:
        """Window ``index`` with the labels that have landed for it: with ``labels``, reads the label
        files that landed since the last call, gives the window's rows the labels of their keys (class
        id -1 where none landed) and records them, so :meth:`window_at` reads the same from now on. A
        window whose labels landed keeps them: a second call reads it again. Raises DataError, changing
        nothing, when a label file is unreadable or wrong (as :meth:`poll`)."""
        self._check_polled(index)
        if not self._apart or self._ledger.windows[index].labels is not None:
            return self.window_at(index)
        ledger = self._ledger.copy()
        waiting = self._scan_labels(ledger)
        window, keys, _ = self._labelled(ledger, index)
        record = ledger.windows[index]
        unkeyed = self._unkeyed(ledger, index, keys)
        y = self._unlabelled(len(window))
        sources = np.full(len(window), None, object)  # the label file that labelled each row
        used: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if (found := waiting.pop(key, None)) is None:
                continue
            name, row, label = found
            used.setdefault(name, []).append(row)  # taken, even by a row it cannot label
            if i not in unkeyed:
                y[i], sources[i] = label, name
        for name, rows in used.items():
            label_file, taken = ledger.label_files[name], set(rows)
            label_file.waiting = [r for r in label_file.waiting if r not in taken]
        record.labels = {name: ledger.label_files[name].rows for name in sorted(used)}
        record.labelled, record.labels_digest = int(has_label(y).sum()), _digest_labels(y)
        record.unkeyed = sorted(unkeyed)
        if len(keys):
            ordered = sorted(keys, key=_key_order)
            record.keys = [ordered[0], ordered[-1]]
        self._commit(ledger, _Pending())
        self._waiting = waiting
        self._landed_keys[index] = dict(zip(keys, sources, strict=True))
        return replace(window, y=y)

    def windows(self) -> list[Window]:
        """Every window so far, after polling everything that landed (for tests and replays: this holds
        them all in memory; the loop polls and reads windows one at a time)."""
        self.poll()
        return [self.window_at(k) for k in range(self.polled)]

    def __iter__(self) -> Iterator[Window]:
        self.poll()
        return (self.window_at(k) for k in range(self.polled))

    def __len__(self) -> int:
        self.poll()
        return self.polled

    def state_dict(self) -> dict:
        """Everything a new process needs to continue: files seen, windows handed out, the fit (JSON)."""
        return self._ledger.to_dict()

    def load_state_dict(self, state: dict) -> None:
        ledger = Ledger.from_dict(copy.deepcopy(state))
        saved = (ledger.fit or {}).get("task", "classification")  # states from before tasks classify
        if ledger.fit is not None and saved != self.task:
            raise ValueError(
                f"data.task={self.task!r}, but the state of {self._root} was saved with task {saved!r}: "
                f"a source cannot change its task mid-stream; keep data.task={saved!r}, or start a new run"
            )
        self.quarantine, self._row_issues = pd.DataFrame(), []  # rows of this process only
        self._waiting, self._landed_keys = None, {}
        self._commit(ledger, _Pending())

    def input_report(self) -> dict:
        """Plain-JSON counts for summary.json: files, late rows, files set aside or gone; with
        ``labels``, also label files, labels waiting, late and bad ones."""
        ledger = self._ledger
        by_window: dict[str, int] = {}
        for record in ledger.files.values():
            for window, count in record.late.items():
                by_window[window] = by_window.get(window, 0) + count
        outside = by_window.pop(OUTSIDE, 0)
        report = {
            "files": len(ledger.files) - len(ledger.missing),
            "rows": sum(r.rows for r in ledger.files.values()),
            "watermark": self._watermark(ledger).isoformat() if ledger.newest else None,
            "late_rows": sum(by_window.values()) + outside,
            "late_rows_by_window": dict(sorted(by_window.items(), key=lambda item: int(item[0]))),
            "late_rows_outside_windows": outside,
            "quarantined_rows": ledger.quarantined_rows,
            "set_aside_files": [
                {"file": name, "reason": s["reason"]} for name, s in sorted(ledger.set_aside.items())
            ],
            "missing_files": sorted(ledger.missing),
        }
        return report | self._label_report(ledger) if self._apart else report

    def _label_report(self, ledger: Ledger) -> dict:
        late: dict[str, int] = {}
        for record in ledger.label_files.values():
            for window, count in record.late.items():
                late[window] = late.get(window, 0) + count
        landed = [w for w in ledger.windows if w.labels is not None]
        return {
            "label_files": len(ledger.label_files) - len(ledger.label_missing),
            "labels": sum(r.rows for r in ledger.label_files.values()),
            "windows_labelled": len(landed),
            "labelled_rows": sum(w.labelled for w in landed),
            "unlabelled_rows": sum(w.rows - w.labelled for w in landed),
            "labels_waiting": sum(len(r.waiting) for r in ledger.label_files.values()),
            "late_labels": sum(late.values()),
            "late_labels_by_window": dict(sorted(late.items(), key=lambda item: int(item[0]))),
            "bad_labels": sum(r.bad for r in ledger.label_files.values()),
            "label_files_set_aside": [
                {"file": name, "reason": s["reason"]} for name, s in sorted(ledger.label_set_aside.items())
            ],
            "missing_label_files": sorted(ledger.label_missing),
        }

    @property
    def quarantined_rows(self) -> int:
        """Rows set aside since the first poll, in this process and the ones before it."""
        return self._ledger.quarantined_rows

    @property
    def preprocessing(self) -> dict | None:
        """The fitted encoding as plain JSON; None until the first window is complete."""
        return self.encoding.to_dict() if self.encoding is not None else None

    def _unlabelled(self, n_rows: int) -> np.ndarray:
        """The ``y`` of rows whose label has not landed: class id -1, or NaN for a regression target."""
        if self._checks.regression:
            return np.full(n_rows, np.nan, np.float32)
        return np.full(n_rows, UNLABELLED, np.int64)

    def _check_polled(self, index: int) -> None:
        if not 0 <= index < self.polled:
            raise IndexError(f"window {index} has not been polled yet ({self.polled} so far)")

    # -- polling --------------------------------------------------------------------------------------

    def _advance(self, emit: bool) -> Sequence[Window]:
        """One poll on a copy of the ledger, committed only if nothing failed: look at new and changed
        files, fit the encoding once the first window is complete, and (``emit``) hand out the windows
        that are complete."""
        ledger, pending = self._ledger.copy(), _Pending()
        self._scan(ledger, pending)
        kept: dict[int, Window] = {}
        first = len(ledger.windows)
        if ledger.origin is None:
            self._fit(ledger)
        if emit and ledger.fit is not None:
            budget = KEEP_BYTES
            for window in self._complete_windows(ledger, pending):
                size = window.x.nbytes + window.y.nbytes + window.time.nbytes
                if size <= budget:
                    kept[window.index], budget = window, budget - size
        self._settle(ledger)
        self._commit(ledger, pending)
        return PolledWindows(self, first, len(ledger.windows) - first, kept)

    def _commit(self, ledger: Ledger, pending: _Pending) -> None:
        ledger.quarantined_rows += sum(len(q) for q in pending.quarantine)
        self._ledger = ledger
        self.polled = len(ledger.windows)
        if ledger.fit is not None:
            self.encoding = TableEncoding.from_dict(ledger.fit["encoding"])
            self.classes = list(ledger.fit["classes"])
            self.feature_names = self.encoding.feature_names
            self.feature_shape = (self.encoding.width,)
        else:
            self.encoding, self.feature_names, self.feature_shape = None, [], ()
            self.classes = [] if self._checks.regression else self._declared_classes
        frames = [q for q in (self.quarantine, *pending.quarantine) if len(q)]
        self.quarantine = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        self._row_issues += pending.issues
        self._refresh_issues()

    def _refresh_issues(self) -> None:
        self.issues = [DataIssue(**issue) for issue in self._ledger.issues] + self._row_issues

    def _settle(self, ledger: Ledger) -> None:
        """Forget the time range of files wholly before the next period: no window to come reads them
        (a row they gain is late, found by reading the file again), and the state stays small."""
        if ledger.origin is None or ledger.fit is None:
            return
        start, _ = self._span(ledger, ledger.next_period)
        for record in ledger.files.values():
            if record.last is not None and _time(record.last) < start:
                record.first = record.last = None

    def _scan(self, ledger: Ledger, pending: _Pending) -> None:
        """Record new and changed files (their time column only), set aside files of other types, and
        report known files that are gone."""
        found, other = _discover(self._root, self._pattern, skip=self._skip)
        for name in sorted(set(ledger.files) - set(found) - set(ledger.missing)):
            ledger.missing.append(name)
            backs = [k for k, w in enumerate(ledger.windows) if name in w.files]
            also = f"; windows {backs} were read from it and can no longer be read again" if backs else ""
            _report(ledger, "missing_file", name, f"{name}: no longer there{also}")
        _set_aside(ledger, ledger.set_aside, other, "")
        for name, (size, mtime_ns) in sorted(found.items()):
            record = ledger.files.get(name)
            if record is not None and (record.size, record.mtime_ns) == (size, mtime_ns):
                if name in ledger.missing:
                    ledger.missing.remove(name)  # back as it was
                continue
            fresh = self._scan_file(ledger, name, size, mtime_ns, pending)
            if record is not None:
                if name in ledger.missing:
                    ledger.missing.remove(name)
                _report(
                    ledger,
                    "changed_file",
                    name,
                    f"{name}: changed since it was read ({record.size} -> {size} bytes, {record.rows} -> "
                    f"{fresh.rows} rows); rows it gained in windows already handed out are late",
                )
            ledger.files[name] = fresh
            if fresh.last is not None and (ledger.newest is None or _time(fresh.last) > _time(ledger.newest)):
                ledger.newest = fresh.last
            self._report_late(ledger, name)

    def _scan_file(
        self, ledger: Ledger, name: str, size: int, mtime_ns: int, pending: _Pending
    ) -> FileRecord:
        """Read the time column of one file: its rows, time range, rows without a time (quarantined) and
        rows in periods already handed out or skipped (late)."""
        path = self._root / name
        features = ledger.fit["features"] if ledger.fit else list(self.features or [])
        self._check_input_columns(self._available(name), str(path), features)
        rows, missing, first, last = 0, [], None, None
        decided = self._decided(ledger)
        counts: dict[str, int] = {}
        for batch in self._batches(name, [self.time_column]):
            origin = RowOrigin.of_file(path, batch.num_rows, first=rows)
            times, absent = self._times(batch.column(0), origin)
            present = times[~absent]
            missing += (rows + np.flatnonzero(absent)).tolist()
            rows += batch.num_rows
            if not len(present):
                continue
            low, high = present.min(), present.max()
            first = low if first is None else min(first, low)
            last = high if last is None else max(last, high)
            if decided is not None:
                self._count_decided(ledger, decided, present, counts)
        if missing:
            self._quarantine_untimed(name, np.array(missing), rows, pending)
        record = FileRecord(size, mtime_ns, rows, _iso(first), _iso(last), len(missing))
        record.late = {
            key: late
            for key, count in counts.items()
            if (late := count - (0 if key == OUTSIDE else ledger.windows[int(key)].files.get(name, 0))) > 0
        }
        return record

    def _check_input_columns(self, available: Sequence[str], source: str, features: Sequence[str]) -> None:
        """DataError naming the first column a partition lacks; with ``labels``, the key is needed and
        the target refused (the label files hold it)."""
        if self._apart:
            if self.target in available:
                raise DataError(
                    f"{source}: has the target column {self.target!r}, but labels come from the label files "
                    f"{self.labels}: one source of labels; drop the column from the partitions, or leave "
                    f"labels out to read it"
                )
            if self.key not in available:
                raise DataError(
                    f"{source}: column {self.key!r} (key) not found; the file has columns {list(available)}"
                )
            available = [*available, self.target]  # the target comes from the label files
        self._checks.check_columns(available, source, features)

    def _quarantine_untimed(self, name: str, rows: np.ndarray, n_rows: int, pending: _Pending) -> None:
        """Rows without a time belong to no window: set aside when the file is first read."""
        path = self._root / name
        needed = [self.time_column, self.target, *([self.key] if self._apart else []), *(self.features or [])]
        table = self._read_table(name, [c for c in dict.fromkeys(needed) if c in self._available(name)])
        frame = table.to_pandas()
        mask = np.zeros(n_rows, bool)
        mask[rows] = True
        origin = RowOrigin.of_file(path, n_rows)
        _, quarantine, issues = self._checks.bad_rows(
            frame, [(mask, "missing time", self.time_column)], origin, str(path)
        )
        pending.quarantine.append(quarantine)
        pending.issues += issues

    def _fit(self, ledger: Ledger) -> None:
        """Once the first period is complete: fix the origin at the earliest time and fit the classes
        and the encoding on that window's rows."""
        firsts = [r.first for n, r in ledger.files.items() if r.first is not None and n not in ledger.missing]
        if not firsts:
            return
        ledger.origin = min(firsts, key=_time)
        start, end = self._span(ledger, 0)
        if end > self._watermark(ledger):
            ledger.origin = None
            return
        names = self._overlapping(ledger, start, end)
        # the first file's columns; a folder value only where a role names it (not every key=value
        # folder is a feature)
        columns = [c for c in self._columns(names[0]) if not c.startswith("__index_level_")]
        named = (self.time_column, self.target, self.key, *(self.features or []))
        columns += [k for k in _hive_values(names[0]) if k in named and k not in columns]
        source = str(self._root / names[0])
        if self._apart:  # the key names rows, the target comes with the labels: neither is a feature
            self._check_input_columns(columns, source, [])
            columns = [*(c for c in columns if c != self.key), self.target]
        features, categorical = self._checks.feature_columns(columns, source)
        read = self._read_span(features, start, end, dict.fromkeys(names))
        origin = read.origin
        checks = self._checks
        numeric, numeric_cols, text_cols = checks.feature_kinds(read.frame, features, categorical, origin)
        if self._apart:
            classes = list(self._declared_classes or [])
            bad_checks = self._row_checks(read.frame, np.zeros(len(read.frame), bool), numeric, numeric_cols)
        elif checks.regression:
            classes = []
            targets, missing_target = checks.targets(read.frame[self.target], origin)
            bad_checks = self._row_checks(read.frame, missing_target, numeric, numeric_cols, targets)
        else:
            labels, missing_target = checks.labels(read.frame[self.target], origin)
            classes = self._declared_classes or sorted_values(labels[~missing_target])
            _, unknown = checks.class_ids(labels, missing_target, classes, origin, unknown="quarantine")
            bad_checks = self._row_checks(read.frame, missing_target, numeric, numeric_cols)
            bad_checks.append((unknown, _unknown_reasons(labels, unknown, classes), self.target))
        bad, _, _ = checks.bad_rows(read.frame, bad_checks, origin, self._scope(0, start, end), window=0)
        keep = np.flatnonzero(~bad)
        rows = read.frame.iloc[keep].reset_index(drop=True)
        encoding = checks.fit_encoding(rows, numeric[keep], numeric_cols, text_cols, np.zeros(len(keep), int))
        ledger.fit = {
            "encoding": encoding.to_dict(),
            "classes": classes,
            "features": features,
            "task": self.task,
        }

    def _row_checks(
        self,
        frame: pd.DataFrame,
        missing_target: np.ndarray,
        numeric: np.ndarray,
        numeric_cols: list[str],
        targets: np.ndarray | None = None,
    ) -> list[tuple[np.ndarray, Any, str | None]]:
        """The checks of every row (TableChecks', ``targets`` a regression target's values), and with
        ``labels`` a key: a row without one could never be labelled."""
        none = np.zeros(len(frame), bool)
        checks: list[tuple[np.ndarray, Any, str | None]] = list(
            self._checks.row_checks(none, missing_target, np.isfinite(numeric), numeric_cols, targets)
        )
        if self._apart:
            checks.append((frame[self.key].isna().to_numpy(), "missing key", self.key))
        return checks

    def _complete_windows(self, ledger: Ledger, pending: _Pending) -> Iterator[Window]:
        """Hand out every complete period with rows, from ``next_period`` on, recording each."""
        watermark = self._watermark(ledger)
        origin, step = np.datetime64(ledger.origin, "ns"), self._period.to_timedelta64()
        files = sorted(
            (np.datetime64(r.first, "ns"), np.datetime64(r.last, "ns"), n)
            for n, r in ledger.files.items()
            if r.first is not None and n not in ledger.missing
        )
        # the first period that is not complete: it ends after the watermark
        limit = int((watermark.to_datetime64() - origin) // step)
        period, upcoming, active = ledger.next_period, 0, set()
        while period < limit:
            start, end = self._span(ledger, period)
            while upcoming < len(files) and files[upcoming][0] < end.to_datetime64():
                active.add(files[upcoming])
                upcoming += 1
            active = {f for f in active if f[1] >= start.to_datetime64()}
            if not active:  # no file reaches this period: go to the next file's first one
                later = int((files[upcoming][0] - origin) // step) if upcoming < len(files) else limit
                period = min(max(period + 1, later), limit)
                continue
            read = self._read_span(ledger.fit["features"], start, end, dict.fromkeys(f[2] for f in active))
            index = len(ledger.windows)
            window, quarantine, issues, _ = self._build(ledger, read, index, start, end)
            pending.quarantine.append(quarantine)
            pending.issues += issues
            if len(window):
                if ledger.last_period is not None and period - ledger.last_period > 1:
                    source = str(self._root)
                    issue = empty_periods(
                        source,
                        ledger.last_period,
                        period,
                        origin,
                        self._period,
                        self.window,
                        self.time_column,
                    )
                    ledger.issues.append(asdict(issue))
                ledger.windows.append(WindowRecord(period, len(window), read.counts, _digest(window)))
                ledger.last_period = period
                yield window
            period += 1
        ledger.next_period = max(ledger.next_period, period)

    # -- labels apart from the inputs -----------------------------------------------------------------

    def _scan_labels(self, ledger: Ledger) -> Waiting:
        """Record new label files and rows (``ledger``, a copy), and return the labels waiting for their
        window then, by key: those waiting before plus the new ones whose key is in no window labelled
        so far. A new label whose window's labels already landed is late: counted, not applied."""
        assert self._label_root is not None
        found, other = _discover(self._label_root, self._label_pattern)
        rebuild = self._waiting is None  # a new process, or files gone, back or changed
        for name in sorted(set(ledger.label_files) - set(found) - set(ledger.label_missing)):
            ledger.label_missing.append(name)
            rebuild = True
            self._forget_keys(ledger, name)
            _report(
                ledger,
                "missing_label_file",
                name,
                f"{name}: label file no longer there; windows labelled from it can no longer be read again, "
                f"and its {len(ledger.label_files[name].waiting)} waiting labels wait until it is back",
            )
        _set_aside(ledger, ledger.label_set_aside, other, "label ")
        fresh: list[tuple[str, _Labels, int]] = []
        for name, (size, mtime_ns) in sorted(found.items()):
            record = ledger.label_files.get(name)
            if name in ledger.label_missing:
                ledger.label_missing.remove(name)
                rebuild = True
            if record is not None and (record.size, record.mtime_ns) == (size, mtime_ns):
                continue
            read = self._read_labels(name)
            if record is None:
                ledger.label_files[name] = LabelFileRecord(size, mtime_ns, read.rows)
                fresh.append((name, read, 0))
                continue
            if read.rows < record.rows:
                raise DataError(
                    f"{self._label_root / name}: label file had {record.rows} rows and has {read.rows} now: "
                    f"a label file may grow (rows appended) but not lose rows; restore it"
                )
            # rows appended (one label file that grows): the new ones are new labels; rows edited
            # in it show when a window labelled from it is read again (its digest)
            fresh.append((name, read, record.rows))
            record.size, record.mtime_ns, record.rows = size, mtime_ns, read.rows
            rebuild = True  # rows waiting in it are read again, as a new process would
            self._forget_keys(ledger, name)
        waiting = self._waiting_index(ledger) if rebuild else dict(self._waiting or {})
        for name, read, first in fresh:
            self._classify(ledger, name, read, first, waiting)
        return waiting

    def _forget_keys(self, ledger: Ledger, name: str) -> None:
        """Read the windows labelled from label file ``name`` again when their keys are needed, as a
        new process would: the file is gone or changed."""
        for index, record in enumerate(ledger.windows):
            if record.labels is not None and name in record.labels:
                self._landed_keys.pop(index, None)

    def _classify(self, ledger: Ledger, name: str, read: _Labels, first: int, waiting: Waiting) -> None:
        """Rows ``first..`` of a label file: bad ones counted and reported; the others wait for their
        window, or are late when their window's labels landed without them. A key labelled twice (a
        label waiting or given already, in this file or another) is a DataError naming both."""
        record, path = ledger.label_files[name], self._label_root / name
        bad = first + np.flatnonzero(~has_label(read.y[first:]))
        if len(bad):
            record.bad += len(bad)
            named = ", ".join(f"row {r} ({read.reasons[r]})" for r in bad[:ROWS_NAMED])
            more = f" and {len(bad) - ROWS_NAMED} more" if len(bad) > ROWS_NAMED else ""
            _report(
                ledger,
                "bad_labels",
                name,
                f"{name}: {len(bad)} rows label nothing: {named}{more}; the rows they name stay unlabelled",
            )
        rows = first + np.flatnonzero(has_label(read.y[first:]))
        keys = read.keys[rows]
        landed = self._landed(ledger, list(keys))
        late: dict[str, int] = {}
        for row, key in zip(rows.tolist(), keys, strict=True):
            if key in landed and landed[key][1] is None:  # its window's labels landed without it
                window = str(landed[key][0])
                late[window] = late.get(window, 0) + 1
                continue
            if key in landed:  # given to its row already
                earlier = f"{self._label_root / str(landed[key][1])} (window {landed[key][0]})"
            elif key in waiting:
                earlier = f"{self._label_root / waiting[key][0]} row {waiting[key][1]}"
            else:
                waiting[key] = (name, row, read.y[row].item())
                record.waiting.append(row)
                continue
            raise DataError(
                f"{path}: key {key!r} at row {row} is labelled already, in {earlier}: a key names one row "
                f"and takes one label; remove one of them"
            )
        for window, count in late.items():
            record.late[window] = record.late.get(window, 0) + count
        if late:
            windows = sorted(int(w) for w in late)
            _report(
                ledger,
                "late_labels",
                name,
                f"{name}: {sum(late.values())} labels landed after the labels of their window had (windows "
                f"{windows}); counted, not applied",
            ).update(window=windows[0])

    def _waiting_index(self, ledger: Ledger) -> Waiting:
        """The labels waiting for their window, read from the label files that hold them (not those
        gone): what a new process starts from."""
        waiting: Waiting = {}
        for name, record in ledger.label_files.items():
            if not record.waiting or name in ledger.label_missing:
                continue
            read = self._read_labels(name)
            for row in record.waiting:
                key = read.keys[row]
                if not has_label(read.y[row]):
                    continue  # edited since into a bad label: it waits for nothing now
                if key in waiting:
                    raise DataError(
                        f"{self._label_root / name}: key {key!r} at row {row} is labelled already, in "
                        f"{self._label_root / waiting[key][0]} row {waiting[key][1]}: a key names one row "
                        f"and takes one label; remove one of them"
                    )
                waiting[key] = (name, row, read.y[row].item())
        return waiting

    def _landed(self, ledger: Ledger, keys: list[str]) -> dict[str, tuple[int, str | None]]:
        """Those of ``keys`` that name a row of a window whose labels landed: key -> (window, the label
        file that labelled the row, or None). Only windows whose key range holds one of them are read."""
        if not keys:
            return {}
        ordered = sorted(set(keys), key=_key_order)
        orders = [_key_order(k) for k in ordered]
        found: dict[str, tuple[int, str | None]] = {}
        for index, record in enumerate(ledger.windows):
            if record.labels is None or record.keys is None:
                continue
            low = bisect_left(orders, _key_order(record.keys[0]))
            high = bisect_right(orders, _key_order(record.keys[1]))
            if low == high:
                continue
            labelled = self._window_keys(ledger, index)
            for key in ordered[low:high]:
                if key in labelled and key not in found:
                    found[key] = (index, labelled[key])
        return found

    def _window_keys(self, ledger: Ledger, index: int) -> dict[str, str | None]:
        """A labelled window's keys, each with the label file that labelled its row (None: no label)."""
        if index not in self._landed_keys:
            _, keys, sources = self._labelled(ledger, index)
            self._landed_keys[index] = dict(zip(keys, sources, strict=True))
        return self._landed_keys[index]

    def _unkeyed(self, ledger: Ledger, index: int, keys: np.ndarray) -> set[int]:
        """Rows of window ``index`` whose key names another row too (in it, or in a window labelled
        before): no label can tell which of them it is for. Reported, once, as ``duplicate_key``."""
        twice = pd.Series(keys, dtype=object).duplicated(keep=False).to_numpy()
        landed = self._landed(ledger, list(keys))
        before = np.array([key in landed for key in keys], bool)
        rows = np.flatnonzero(twice | before)
        if len(rows):
            examples = ", ".join(
                repr(keys[r]) + (f" (window {landed[keys[r]][0]})" if keys[r] in landed else "")
                for r in rows[:ROWS_NAMED]
            )
            _report(
                ledger,
                "duplicate_key",
                str(self._root),
                f"window {index}: {len(rows)} rows have a key another row has too ({examples}): a label "
                f"cannot tell which row it is for, so they stay unlabelled",
            ).update(column=self.key, window=index)
        return set(rows.tolist())

    def _read_labels(self, name: str) -> _Labels:
        """One label file's rows: keys as text, class ids (-1 and a reason where unusable; for a
        regression target its values, NaN where unusable)."""
        assert self._label_root is not None
        path = self._label_root / name
        columns = _header(path)
        for column, role in ((self.key, "key"), (self.target, "target")):
            if column not in columns:
                raise DataError(
                    f"{path}: label file without the column {column!r} ({role}); it has columns {columns}"
                )
        table = _read_file(path, [self.key, self.target], text=[self.key])
        keys = _key_text(table.column(self.key))
        origin = RowOrigin.of_file(path, table.num_rows)
        raw = table.column(self.target).to_pandas()
        if self._checks.regression:
            y, missing = self._checks.targets(raw, origin)
            reasons = np.where(~missing & ~np.isfinite(y), "infinite label", "").astype(object)
        else:
            labels, missing = self._checks.labels(raw, origin)
            classes = list(self._declared_classes or [])
            y, outside = self._checks.class_ids(labels, missing, classes, origin, unknown="quarantine")
            reasons = np.full(len(y), "", dtype=object)
            reasons[outside] = _unknown_reasons(labels, outside, classes)[outside]
        reasons[missing] = "no label"
        no_key = np.array([k is None for k in keys], bool)
        reasons[no_key] = "no key"
        y = y.astype(np.float32 if self._checks.regression else np.int64)
        y[(reasons != "")] = np.nan if self._checks.regression else UNLABELLED
        return _Labels(keys, y, reasons)

    # -- reading a window ---------------------------------------------------------------------------

    def _labelled(self, ledger: Ledger, index: int) -> tuple[Window, np.ndarray, np.ndarray]:
        """Window ``index`` read again, with the labels that landed for it (checked against their
        digest), its rows' keys and the label file that labelled each row (None: none). Without
        ``labels``, the keys and files are empty."""
        record = ledger.windows[index]
        window, keys = self._reread(ledger, index)
        sources = np.full(len(window), None, object)
        if record.labels is None:
            return window, keys if keys is not None else np.empty(0, object), sources
        assert keys is not None and self._label_root is not None
        y = self._unlabelled(len(window))
        unkeyed = np.zeros(len(window), bool)
        unkeyed[record.unkeyed] = True
        position = pd.Index(keys[~unkeyed])  # unique: rows sharing a key are unkeyed
        rows_of = np.flatnonzero(~unkeyed)
        for name, n_rows in sorted(record.labels.items()):
            path = self._label_root / name
            if not path.is_file():
                raise DataError(
                    f"{path}: the labels of window {index} were read from this label file, which is no "
                    f"longer there; restore it to read the window again"
                )
            read = self._read_labels(name)
            if read.rows < n_rows:
                raise DataError(
                    f"{path}: the labels of window {index} were read from the first {n_rows} rows of this "
                    f"label file, which has {read.rows} now; restore it to read the window again"
                )
            usable = np.flatnonzero(has_label(read.y[:n_rows]))
            at = position.get_indexer(read.keys[usable])
            hit = at >= 0
            y[rows_of[at[hit]]] = read.y[usable[hit]]
            sources[rows_of[at[hit]]] = name
        if _digest_labels(y) != record.labels_digest:
            changed = [n for n in record.labels if self._label_changed(ledger, n)] or list(record.labels)
            raise DataError(
                f"{self._label_root / changed[0]}: the labels of window {index} read differently from when "
                f"they landed: the label file changed since (rows edited or removed); restore it to read "
                f"the window again"
            )
        return replace(window, y=y), keys, sources

    def _reread(self, ledger: Ledger, index: int) -> tuple[Window, np.ndarray | None]:
        """Window ``index`` as it was handed out (checked against its digest), and its rows' keys."""
        record = ledger.windows[index]
        start, end = self._span(ledger, record.period)
        for name in record.files:
            if not (self._root / name).is_file():
                raise DataError(
                    f"{self._root / name}: window {index} ({start}..{end}) was read from this file, which is "
                    f"no longer there; restore it to read the window again"
                )
        read = self._read_span(ledger.fit["features"], start, end, dict(record.files))
        window, _, _, keys = self._build(ledger, read, index, start, end)
        if _digest(window) != record.digest:
            changed = [name for name in record.files if self._changed(name)] or list(record.files)
            raise DataError(
                f"{self._root / changed[0]}: window {index} ({start}..{end}) reads differently from when it "
                f"was handed out: the file changed since (rows in the window edited or removed); restore it "
                f"to read the window again"
            )
        return window, keys

    def _read_span(self, features: list[str], start: pd.Timestamp, end: pd.Timestamp, files: dict) -> _Read:
        """The rows with a time in ``[start, end)`` of ``files`` (name -> at most this many rows, in file
        order, or None for all), in time order; ties keep file path order, then row order."""
        role = self.key if self._apart else self.target
        columns = list(dict.fromkeys([self.time_column, role, *features]))
        names = sorted(files)
        paths = tuple(str(self._root / n) for n in names)
        tables, times, file_of, row_of, counts = [], [], [np.empty(0, int)], [np.empty(0, int)], {}
        for i, name in enumerate(names):
            table = self._read_table(name, columns)
            t, missing = self._times(
                table.column(self.time_column), RowOrigin.of_file(paths[i], table.num_rows)
            )
            inside = np.flatnonzero(~missing & (t >= start.to_datetime64()) & (t < end.to_datetime64()))
            if files[name] is not None:
                inside = inside[: files[name]]
            if len(inside):
                counts[name] = len(inside)
                tables.append(table.take(pa.array(inside, pa.int64())))
                times.append(t[inside])
                file_of.append(np.full(len(inside), i))
                row_of.append(inside)
        frame = _frame(tables, columns)
        all_times = np.concatenate(times) if times else np.empty(0, "datetime64[ns]")
        order = np.argsort(all_times, kind="stable")
        origin = RowOrigin(paths, np.concatenate(file_of)[order], np.concatenate(row_of)[order])
        return _Read(frame.iloc[order].reset_index(drop=True), all_times[order], origin, counts)

    def _build(
        self, ledger: Ledger, read: _Read, index: int, start: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[Window, pd.DataFrame, list[DataIssue], np.ndarray | None]:
        """Check and encode a window's rows with the fitted encoding; returns the window, the rows set
        aside (with their issues) and, with ``labels``, the keys of the window's rows."""
        assert ledger.fit is not None
        checks, origin, frame = self._checks, read.origin, read.frame
        encoding = TableEncoding.from_dict(ledger.fit["encoding"])
        classes = ledger.fit["classes"]
        numeric_cols = [c.name for c in encoding.columns if isinstance(c, NumericColumn)]
        numeric = checks.numeric_values(frame, numeric_cols, origin)
        if self._apart:
            y = self._unlabelled(len(frame))
            bad_checks = self._row_checks(frame, np.zeros(len(frame), bool), numeric, numeric_cols)
        elif checks.regression:
            y, missing_target = checks.targets(frame[self.target], origin)
            bad_checks = self._row_checks(frame, missing_target, numeric, numeric_cols, y)
        else:
            labels, missing_target = checks.labels(frame[self.target], origin)
            y, unknown = checks.class_ids(labels, missing_target, classes, origin, unknown="quarantine")
            bad_checks = self._row_checks(frame, missing_target, numeric, numeric_cols)
            bad_checks.append((unknown, _unknown_reasons(labels, unknown, classes), self.target))
        bad, quarantine, issues = checks.bad_rows(
            frame, bad_checks, origin, self._scope(index, start, end), index
        )
        keep = np.flatnonzero(~bad)
        rows = frame.iloc[keep].reset_index(drop=True)
        for j, column in enumerate(numeric_cols):  # numbers written as text, parsed once
            rows[column] = numeric[keep, j]
        x = encoding.transform(rows)
        keys = rows[self.key].to_numpy(object) if self._apart else None
        return Window(index, start, end, x, y[keep], read.times[keep]), quarantine, issues, keys

    def _read_table(self, name: str, columns: list[str]) -> pa.Table:
        """The ``columns`` of one file (hive folder values filling those it lacks), as read by pyarrow:
        only those columns, and for CSV the time column as text, parsed like TableStream parses it (and
        the key, as text, which it always is)."""
        path = self._root / name
        present = self._columns(name)
        roles = (self.time_column, self.target, self.key)
        available = [*present, *_hive_values(name)]
        self._check_input_columns(available, str(path), [c for c in columns if c not in roles])
        in_file = [c for c in columns if c in present]
        key = [self.key] if self._apart else []
        table = self._with_hive(name, _read_file(path, in_file, text=[self.time_column, *key]), columns)
        if self._apart and self.key in table.column_names:
            where = table.column_names.index(self.key)
            table = table.set_column(
                where, self.key, pa.array(_key_text(table.column(self.key)), pa.string())
            )
        return table

    def _batches(self, name: str, columns: list[str]) -> Iterator[pa.Table]:
        """``columns`` of one file in batches, so reading its time column holds one batch at a time."""
        path = self._root / name
        present = self._columns(name)
        # a column only in the folder name still needs the file's row count: read its first column
        in_file = [c for c in columns if c in present] or present[:1]
        try:
            if SEPARATORS[path.suffix.lower()] is None:
                batches = pq.ParquetFile(path).iter_batches(batch_size=SCAN_BATCH_ROWS, columns=in_file)
            else:
                batches = pa_csv.open_csv(path, **_csv_options(path, in_file, text=in_file))
            for batch in batches:
                yield self._with_hive(name, pa.Table.from_batches([batch]), columns)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: cannot read the file as {path.suffix[1:]}: {err}") from err

    def _with_hive(self, name: str, table: pa.Table, columns: list[str]) -> pa.Table:
        hive = _hive_values(name)
        for column in columns:
            if column not in table.column_names and column in hive:
                table = table.append_column(column, pa.array([hive[column]] * table.num_rows, pa.string()))
        return table.select([c for c in columns if c in table.column_names])

    def _columns(self, name: str) -> list[str]:
        """The column names of one file (its header, or its Parquet schema), cheaply."""
        return _header(self._root / name)

    def _available(self, name: str) -> list[str]:
        return [*self._columns(name), *_hive_values(name)]

    def _times(self, raw: pa.ChunkedArray, origin: RowOrigin) -> tuple[np.ndarray, np.ndarray]:
        """Times of one file as datetime64[ns] (one unit for every file, so they compare and hash
        alike), and the missing ones. ISO text, dates and timestamps are converted by pyarrow (a file
        a day makes the per-call cost of pandas count); anything else is parsed as TableStream parses
        it, which also names the row that cannot be parsed."""
        kind = raw.type
        if (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_timestamp(kind)
            or (pa.types.is_date(kind))
        ):
            try:
                times = pc.cast(raw, pa.timestamp("ns"))  # a zone-aware time: its UTC wall time
                values = times.to_numpy(zero_copy_only=False).astype("datetime64[ns]")
                return values, np.asarray(times.is_null(), dtype=bool)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # other formats, zone offsets in text, out of range: pandas says what is wrong
        times, missing = self._checks.parse_time(raw.to_pandas(), self._period, origin)
        try:
            return pd.Series(times).astype("datetime64[ns]").to_numpy(), missing
        except (OverflowError, ValueError) as err:
            raise DataError(
                f"{origin.name}: column {self.time_column!r}: a time outside 1677..2262: {err}"
            ) from err

    # -- periods ---------------------------------------------------------------------------------------

    def _span(self, ledger: Ledger, period: int) -> tuple[pd.Timestamp, pd.Timestamp]:
        start = pd.Timestamp(ledger.origin) + period * self._period
        return start, start + self._period

    def _watermark(self, ledger: Ledger) -> pd.Timestamp:
        return pd.Timestamp(ledger.newest) - self._lateness

    def _decided(self, ledger: Ledger) -> dict[int, int] | None:
        """Period -> window index of the periods already handed out; None before the first window."""
        if ledger.origin is None or ledger.fit is None:
            return None
        return {w.period: k for k, w in enumerate(ledger.windows)}

    def _count_decided(
        self, ledger: Ledger, decided: dict[int, int], times: np.ndarray, counts: dict
    ) -> None:
        """Count ``times`` falling in periods already handed out (by window) or skipped (``outside``)."""
        origin, step = np.datetime64(ledger.origin, "ns"), self._period.to_timedelta64()
        periods = (times - origin) // step
        past = periods[periods < ledger.next_period]
        for p, count in zip(*np.unique(past, return_counts=True), strict=True):
            key = str(decided[int(p)]) if int(p) in decided else OUTSIDE
            counts[key] = counts.get(key, 0) + int(count)

    def _overlapping(self, ledger: Ledger, start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
        return sorted(
            n
            for n, r in ledger.files.items()
            if r.first is not None
            and n not in ledger.missing
            and _time(r.first) < end
            and _time(r.last) >= start
        )

    def _report_late(self, ledger: Ledger, name: str) -> None:
        """One late_rows issue per file, replaced when the file changes."""
        ledger.issues = [i for i in ledger.issues if not (i["kind"] == "late_rows" and i["source"] == name)]
        late = ledger.files[name].late
        if not late:
            return
        windows = sorted(int(k) for k in late if k != OUTSIDE)
        where = [f"windows {windows}"] if windows else []
        where += [f"{late[OUTSIDE]} in periods skipped or before the first window"] if OUTSIDE in late else []
        issue = DataIssue(
            "late_rows",
            name,
            f"{name}: {sum(late.values())} rows landed after their window was handed out "
            f"({'; '.join(where)}); counted, not added",
            column=self.time_column,
            window=windows[0] if windows else None,
        )
        ledger.issues.append(asdict(issue))

    def _scope(self, index: int, start: pd.Timestamp, end: pd.Timestamp) -> str:
        return f"{self._root}: window {index} ({start}..{end})"

    def _changed(self, name: str) -> bool:
        record = self._ledger.files[name]
        try:
            stat = os.stat(self._root / name)
        except OSError:
            return True
        return (stat.st_size, stat.st_mtime_ns) != (record.size, record.mtime_ns)

    def _label_changed(self, ledger: Ledger, name: str) -> bool:
        record = ledger.label_files[name]
        try:
            stat = os.stat(self._label_root / name)
        except OSError:
            return True
        return (stat.st_size, stat.st_mtime_ns) != (record.size, record.mtime_ns)


class PolledWindows(Sequence[Window]):
    """The windows one poll handed out. Those read while polling are kept up to ``KEEP_BYTES``; the
    others are read again from the files when reached, so iterating a backlog holds one at a time."""

    def __init__(self, source: PartitionedTable, first: int, count: int, kept: dict[int, Window]) -> None:
        self._source, self._first, self._count, self._kept = source, first, count, kept

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> Window: ...

    @overload
    def __getitem__(self, i: slice) -> list[Window]: ...

    def __getitem__(self, i: int | slice) -> Window | list[Window]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"window {i} of {self._count} polled")
        index = self._first + i
        return self._kept[index] if index in self._kept else self._source.window_at(index)

    def __repr__(self) -> str:
        return (
            f"PolledWindows({self._first}..{self._first + self._count - 1})"
            if self._count
            else "PolledWindows()"
        )


def open_table(
    path: str | Path, time_column: str, target: str, window: str | int = "7D", **options: Any
) -> Stream:
    """A user's table as a stream: :class:`TableStream` for one file, :class:`PartitionedTable` for a
    directory of partitions or a glob (``"landing/*.parquet"``). ``allowed_lateness``, ``labels`` and
    ``key`` apply to partitions only; a single file is a finished history, its labels in it.

    >>> open_table("sales.csv", "when", "label")  # doctest: +SKIP
    TableStream(...)
    """
    text = os.path.expanduser(str(path))
    if GLOB_CHARACTERS & set(text) or Path(text).is_dir():
        return PartitionedTable(text, time_column, target, window, **options)
    lateness = options.pop("allowed_lateness", "0s")
    if pd.Timedelta(str(lateness)) != pd.Timedelta(0):
        raise ValueError(
            f"allowed_lateness={lateness!r} applies to a directory of partitions; {text} is one file, a "
            f"finished history: leave allowed_lateness at 0s"
        )
    for option in ("labels", "key"):
        if (value := options.pop(option, None)) is not None:
            raise ValueError(
                f"{option}={str(value)!r} applies to a directory of partitions whose labels land apart; "
                f"{text} is one file, a finished history with its labels in column {target!r}: leave "
                f"{option} out"
            )
    return TableStream(text, time_column, target, window, **options)


def _root_and_pattern(path: str | Path) -> tuple[Path, str | None]:
    """The directory to read, and the glob pattern when ``path`` is one (its root: the folders before
    the first wildcard)."""
    text = os.path.expanduser(str(path))
    if not GLOB_CHARACTERS & set(text):
        root = Path(text)
        if root.is_file():
            raise ValueError(f"{root} is one file: read it with TableStream (or open_table)")
        if not root.is_dir():
            raise DataError(f"{root}: no such directory")
        return root, None
    parts = Path(text).parts
    fixed = next(i for i, part in enumerate(parts) if GLOB_CHARACTERS & set(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    if not root.is_dir():
        raise DataError(f"{text}: the folder {root} before the first wildcard does not exist")
    return root, text


def _label_root_and_pattern(path: str | Path) -> tuple[Path, str | None]:
    """As :func:`_root_and_pattern`, and one label file (that grows by appended rows) too."""
    text = os.path.expanduser(str(path))
    if not GLOB_CHARACTERS & set(text) and Path(text).is_file():
        return Path(text).parent, glob.escape(text)
    return _root_and_pattern(text)


def _label_folder(labels: str | Path | None, root: Path) -> Path | None:
    """The label folder (or file) when the partitions' folder holds it: its files are labels, not
    partitions, so the partitions' scan leaves them out. Refused when it is the partitions' folder
    itself, unless globs tell the two apart."""
    text = os.path.expanduser(str(labels)) if labels is not None else ""
    if not text:
        return None
    is_glob = bool(GLOB_CHARACTERS & set(text))
    folder = _root_and_pattern(text)[0] if is_glob else Path(text)
    if os.path.abspath(folder) == os.path.abspath(root):
        if is_glob:
            return None
        raise ValueError(
            f"labels={text!r} is the folder of the partitions: put the label files in a folder of their "
            f"own, or give path and labels as globs that tell them apart"
        )
    return folder if Path(os.path.abspath(folder)).is_relative_to(os.path.abspath(root)) else None


def _discover(
    root: Path, pattern: str | None, skip: Path | None = None
) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """Files under ``root`` (or matching the glob ``pattern``), but not ``skip`` or under it:
    ``(tables, others)``, each name -> size, mtime. Names starting with ``.`` or ``_``, files or
    folders, are ignored."""
    tables: dict[str, tuple[int, int]] = {}
    others: dict[str, tuple[int, int]] = {}
    avoid = os.path.abspath(skip) if skip is not None else None
    for path, name in _walk(root, avoid) if pattern is None else _matches(root, pattern, avoid):
        try:
            stat = os.stat(path)
        except OSError:  # removed while we looked
            continue
        if not os.path.isfile(path):
            continue
        kind = tables if os.path.splitext(name)[1].lower() in SEPARATORS else others
        kind[name] = (stat.st_size, stat.st_mtime_ns)
    return tables, others


def _walk(root: Path, avoid: str | None, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(path, name)`` of every entry under ``root`` not ignored, recursively (not into linked
    folders, as ``Path.rglob``); a folder per scandir, which at tens of thousands of files a poll is
    several times faster than pathlib."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(IGNORED_PREFIXES) or (avoid and os.path.abspath(entry.path) == avoid):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), avoid, f"{prefix}{entry.name}/")
        else:
            yield entry.path, f"{prefix}{entry.name}"


def _matches(root: Path, pattern: str, avoid: str | None) -> Iterator[tuple[str, str]]:
    for path in glob.iglob(pattern, recursive=True):
        name = Path(os.path.relpath(path, root)).as_posix()
        if any(part.startswith(IGNORED_PREFIXES) for part in name.split("/")):
            continue
        if avoid and (os.path.abspath(path) + os.sep).startswith(avoid + os.sep):
            continue
        yield path, name


def _set_aside(ledger: Ledger, store: dict[str, dict], other: dict[str, tuple[int, int]], what: str) -> None:
    """Record files of another type in ``store``, reporting each when new or changed."""
    for name in set(store) - set(other):  # gone: it was never read, nothing to report
        del store[name]
    for name, (size, mtime_ns) in sorted(other.items()):
        before = store.get(name)
        if before is None or (before["size"], before["mtime_ns"]) != (size, mtime_ns):
            suffix = Path(name).suffix or "(no suffix)"
            reason = f"unsupported file type {suffix!r}; accepted: {', '.join(SEPARATORS)}"
            store[name] = {"size": size, "mtime_ns": mtime_ns, "reason": reason}
            _report(ledger, "set_aside", name, f"{name}: {what}set aside, not read: {reason}")


def _header(path: Path) -> list[str]:
    """The column names of one file (its header, or its Parquet schema), cheaply."""
    try:
        if SEPARATORS[path.suffix.lower()] is None:
            return list(pq.read_schema(path).names)
        with open(path, newline="", encoding="utf-8-sig") as text:
            header = next(csv.reader(text, delimiter=SEPARATORS[path.suffix.lower()]), None)
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the file as {path.suffix[1:]}: {err}") from err
    if not header:
        raise DataError(f"{path}: the file is empty (no header line); still being written?")
    return header


def _read_file(path: Path, columns: list[str], text: list[str]) -> pa.Table:
    """``columns`` of one file, whole, so that pyarrow infers each column's type from all its rows;
    for CSV the ``text`` ones as text."""
    try:
        if SEPARATORS[path.suffix.lower()] is None:
            return pq.ParquetFile(path).read(columns=columns)
        return pa_csv.read_csv(path, **_csv_options(path, columns, text=text))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot read the file as {path.suffix[1:]}: {err}") from err


def _csv_options(path: Path, columns: list[str], text: list[str]) -> dict[str, Any]:
    """Read ``columns`` only; ``text`` ones as text (times are parsed as TableStream parses them; a
    file read in batches cannot infer a type from rows it has not reached)."""
    types = {c: pa.string() for c in text if c in columns}
    return {
        "parse_options": pa_csv.ParseOptions(delimiter=SEPARATORS[path.suffix.lower()]),
        # empty text is missing, as pandas reads it
        "convert_options": pa_csv.ConvertOptions(
            include_columns=columns, column_types=types, strings_can_be_null=True
        ),
    }


def _key_text(column: pa.ChunkedArray) -> np.ndarray:
    """Keys as text (None where missing), so a key read from CSV matches one from Parquet: 17, 17.0
    and "17" are the same key."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return np.array(column.to_pylist(), dtype=object)


def _key_order(key: str) -> tuple[int, int, str]:
    """The order of keys in a window's key range: whole numbers (ids) as numbers, other keys as text.

    >>> sorted(["10", "9", "b", "a"], key=_key_order)
    ['9', '10', 'a', 'b']
    """
    return (0, int(key), "") if INTEGER.fullmatch(key) else (1, 0, key)


def _hive_values(name: str) -> dict[str, str]:
    """``key=value`` folders of a file's path (hive partitioning): ``date=2024-01-01/part-0.parquet``."""
    pairs = (part.split("=", 1) for part in name.split("/")[:-1] if "=" in part)
    return {unquote(key): unquote(value) for key, value in pairs}


def _report(ledger: Ledger, kind: str, source: str, message: str) -> dict:
    issue = asdict(DataIssue(kind, source, message))
    ledger.issues.append(issue)
    return issue


def _unknown_reasons(labels: pd.Series, unknown: np.ndarray, classes: list) -> np.ndarray:
    """The quarantine reason of each row whose label is not one of ``classes``, naming the label."""
    reasons = np.full(len(labels), "", dtype=object)
    for i in np.flatnonzero(unknown):
        reasons[i] = f"label {_plain(labels.iloc[i])!r} is not one of the classes {classes}"
    return reasons


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _digest(window: Window) -> str:
    """A fingerprint of what a window holds, to tell a re-read window from a changed one."""
    digest = hashlib.sha256()
    for array in (window.x, window.y, window.time.astype("datetime64[ns]").view(np.int64)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _digest_labels(y: np.ndarray) -> str:
    """A fingerprint of the labels a window was given, to tell a re-read from a changed label file."""
    kind = np.float32 if y.dtype.kind == "f" else np.int64  # class ids as they always were hashed
    return hashlib.sha256(np.ascontiguousarray(y, kind).tobytes()).hexdigest()


def _frame(tables: list[pa.Table], columns: list[str]) -> pd.DataFrame:
    """Files' rows as one frame: joined by pyarrow (one conversion), or by pandas when their types
    cannot be joined (a column numeric in one file and text in another), as TableStream would see it."""
    if not tables:
        return pd.DataFrame(columns=columns)
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def _time(iso: str | None) -> pd.Timestamp:
    return pd.Timestamp(iso)


def _iso(value: np.datetime64 | None) -> str | None:
    return None if value is None else pd.Timestamp(value).isoformat()
