"""The model registry: every candidate version's weights and state on disk, and an SQLite index of lineage,
status, champion history and gate decisions that changes atomically with the training loop's own state.

One process writes a registry at a time; readers (the CLI, a dashboard) may look at any moment.

>>> import tempfile, torch
>>> reg = Registry(tempfile.mkdtemp())
>>> v1 = reg.add(VersionRecord(reg.next_id("stateless", None), None, "stateless"), {"w": torch.ones(2)})
>>> reg.promote(v1.id, window=0)
>>> v2 = reg.add(VersionRecord(reg.next_id("stateful", "v1"), "v1", "stateful"), {"w": torch.zeros(2)})
>>> reg.promote(v2.id, window=1)
'v1'
>>> reg.rollback("worse on live traffic")
'v1'
>>> print(reg.lineage_tree())
v1  stateless  champion  windows -  n=0
v1.1  stateful  rolled_back  windows -  n=0
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from perennial.registry.tensorfile import fsync_dir, load_tree, save_tensors, save_tree
from perennial.registry.versions import KINDS, next_version_id, parse_version, version_key

STATUSES = ("candidate", "champion", "rejected", "retired", "rolled_back")
WEIGHTS_FILE = "weights.safetensors"
_TMP_PREFIX = ".tmp-"
_BUSY_TIMEOUT_MS = 10_000
_EXTRA_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY,
    parent TEXT,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    trained_on_windows TEXT NOT NULL,
    n_samples INTEGER NOT NULL,
    train_seconds REAL NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    trigger TEXT,
    created_window INTEGER,
    status_window INTEGER
);
CREATE TABLE IF NOT EXISTS champion_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    previous TEXT,
    "window" INTEGER,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    "window" INTEGER,
    decision TEXT NOT NULL,
    numbers TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class VersionRecord:
    """One model version as the index knows it; its tensors live in ``versions/<id>/``."""

    id: str
    parent: str | None
    kind: str
    status: str = "candidate"
    created_at: str = field(default_factory=_now)
    trained_on_windows: list[int] = field(default_factory=list)
    n_samples: int = 0
    train_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] | None = None  # what caused it, e.g. {"name": "volume", "reason": "..."}
    created_window: int | None = None
    status_window: int | None = None  # the window of its last status change; None when changed by hand


_JSON_FIELDS = ("trained_on_windows", "config", "metrics", "trigger")
_COLUMNS = tuple(f.name for f in fields(VersionRecord))


class UnknownVersion(KeyError):
    """A version id that the registry's index does not hold."""

    def __init__(self, version: str, known: list[str]) -> None:
        super().__init__(version)
        self.version = version
        self.known = known

    def __str__(self) -> str:
        # KeyError's own str() would print just the repr of the id.
        return f"unknown version {self.version!r}; known versions: {', '.join(self.known) or 'none'}"


def _to_json(value: Any) -> str:
    return json.dumps(value, default=_jsonable)


def _jsonable(value: Any) -> Any:
    # Configs arrive as OmegaConf containers and metrics as 0-d tensors or numpy scalars.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence | Set):
        return list(value)
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in the registry index: not JSON-able")


class Registry:
    """Versions on disk under ``root/versions/<id>/`` and their index in ``root/index.sqlite``.

    Writes outside :meth:`transaction` each commit on their own; inside one they commit together.
    """

    def __init__(self, root: str | Path, create: bool = True) -> None:
        self.root = Path(root)
        index = self.root / "index.sqlite"
        if not create and not index.is_file():
            raise FileNotFoundError(f"no registry at {self.root}")
        self.versions_dir = self.root / "versions"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the sqlite3 module never opens transactions behind our back.
        self._conn = sqlite3.connect(index, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._depth = 0
        self._discard_orphans_unless_busy()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All index writes inside commit together, or none if the block raises; nested calls join the outer.

        Version directories written by :meth:`add` inside a rolled-back transaction stay on disk
        without an index row; they are invisible and are removed on the next open.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        # IMMEDIATE takes the write lock up front, so a read-then-write inside cannot be raced.
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    # -- versions -----------------------------------------------------------------------------------

    def ids(self) -> list[str]:
        """All version ids in the index, in version order."""
        return sorted((row["id"] for row in self._conn.execute("SELECT id FROM versions")), key=version_key)

    def next_id(self, kind: str, parent: str | None) -> str:
        """The id the next version of ``kind`` (fine-tuned from ``parent`` if stateful) should take."""
        return next_version_id(self.ids(), kind, parent)

    def add(
        self,
        record: VersionRecord,
        weights: Mapping[str, torch.Tensor],
        extras: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> VersionRecord:
        """Store a new version: ``weights`` (a model ``state_dict``) and named extra trees (e.g. "optimizer").

        The files appear under ``versions/<id>`` in one rename before the index row is written,
        so the version is visible only once both exist.
        """
        parse_version(record.id)
        if record.kind not in KINDS:
            raise ValueError(
                f"unknown kind {record.kind!r} for {record.id}: expected one of {', '.join(KINDS)}"
            )
        if record.status not in STATUSES or record.status == "champion":
            allowed = ", ".join(s for s in STATUSES if s != "champion")
            raise ValueError(
                f"cannot add {record.id} as {record.status!r}: expected one of {allowed} (then promote)"
            )
        if record.kind == "stateful" and record.parent is None:
            raise ValueError(f"stateful version {record.id} needs a parent")
        extras = dict(extras or {})
        for name in extras:
            self._check_extra_name(name)
        with self.transaction():
            if self._row(record.id) is not None:
                raise ValueError(f"version {record.id} already exists; ids are never reused (see next_id)")
            if record.parent is not None and self._row(record.parent) is None:
                raise UnknownVersion(record.parent, self.ids())
            self._write_files(record.id, weights, extras)
            self._insert_row(record)
            return self.get(record.id)

    def _write_files(
        self, version: str, weights: Mapping[str, torch.Tensor], extras: Mapping[str, Mapping]
    ) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-", dir=self.versions_dir))
        try:
            save_tensors(tmp / WEIGHTS_FILE, weights)
            for name, tree in extras.items():
                save_tree(tmp / f"{name}.safetensors", tree)
            fsync_dir(tmp)
            target = self.versions_dir / version
            if target.exists():
                # No index row (checked by the caller): debris of a crash between rename and insert.
                shutil.rmtree(target)
            os.rename(tmp, target)
            fsync_dir(self.versions_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _insert_row(self, record: VersionRecord) -> None:
        values = asdict(record)
        for name in _JSON_FIELDS:
            values[name] = _to_json(values[name])
        # sqlite3 cannot bind numpy scalars, which counts and window indices often are.
        values["n_samples"] = int(record.n_samples)
        values["train_seconds"] = float(record.train_seconds)
        values["created_window"] = _window(record.created_window)
        values["status_window"] = _window(record.status_window)
        columns = ", ".join(_COLUMNS)
        placeholders = ", ".join(f":{c}" for c in _COLUMNS)
        self._conn.execute(f"INSERT INTO versions ({columns}) VALUES ({placeholders})", values)

    def _row(self, version: str) -> sqlite3.Row | None:
        return self._conn.execute("SELECT * FROM versions WHERE id = ?", (version,)).fetchone()

    @staticmethod
    def _record(row: sqlite3.Row) -> VersionRecord:
        values = {name: row[name] for name in _COLUMNS}
        for name in _JSON_FIELDS:
            values[name] = json.loads(values[name]) if values[name] is not None else None
        return VersionRecord(**values)

    def get(self, version: str) -> VersionRecord:
        row = self._row(version)
        if row is None:
            raise UnknownVersion(version, self.ids())
        return self._record(row)

    def __contains__(self, version: object) -> bool:
        return isinstance(version, str) and self._row(version) is not None

    def versions(self) -> list[VersionRecord]:
        """All versions in the index, in version order (v1, v1.1, v1.2, v2, ...)."""
        records = [self._record(row) for row in self._conn.execute("SELECT * FROM versions")]
        return sorted(records, key=lambda r: version_key(r.id))

    def load_weights(self, version: str) -> dict[str, torch.Tensor]:
        """The model ``state_dict`` stored with ``version``, on CPU."""
        self.get(version)
        return load_file(str(self.versions_dir / version / WEIGHTS_FILE))

    def load_extra(self, version: str, name: str) -> dict[str, Any] | None:
        """The extra tree ``name`` (e.g. "optimizer") stored with ``version``, or None if it has none."""
        self._check_extra_name(name)
        self.get(version)
        path = self.versions_dir / version / f"{name}.safetensors"
        return load_tree(path) if path.is_file() else None

    @staticmethod
    def _check_extra_name(name: str) -> None:
        if not _EXTRA_NAME_RE.fullmatch(name) or name == "weights":
            raise ValueError(f"bad extra name {name!r}: use letters, digits, '_' or '-', and not 'weights'")

    def discard_orphans(self) -> list[str]:
        """Remove version directories that have no index row (debris of a crash); return their names.

        Runs under the write lock: a writer in another process holds it from before it writes a
        version's files until its row commits, so nothing it is still adding looks like debris.
        """
        with self.transaction():
            known = set(self.ids())
            removed = []
            for path in sorted(self.versions_dir.iterdir()):
                if not path.is_dir():
                    continue
                if path.name.startswith(_TMP_PREFIX) or (
                    _is_version_id(path.name) and path.name not in known
                ):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
            return removed

    def _discard_orphans_unless_busy(self) -> None:
        # A reader (the CLI) opening while the loop writes must neither wait nor fail: skip the
        # cleanup then; the debris stays invisible and the writer's next open removes it.
        self._conn.execute("PRAGMA busy_timeout = 0")
        try:
            self.discard_orphans()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")

    # -- champion -----------------------------------------------------------------------------------

    def champion(self) -> str | None:
        """The id of the version that serves now, or None before the first promotion."""
        row = self._conn.execute("SELECT id FROM versions WHERE status = 'champion'").fetchone()
        return row["id"] if row else None

    def promote(
        self, version: str, window: int | None = None, reason: str = "", *, override: bool = False
    ) -> str | None:
        """Make ``version`` the champion and retire the previous one, whose id is returned (None if none).

        A rejected or rolled-back version is promoted only with ``override=True`` (a human's call, recorded
        as action "override" in the champion history). Promoting the current champion changes nothing.
        """
        with self.transaction():
            record = self.get(version)
            if record.status == "champion":
                return None
            overriding = record.status in ("rejected", "rolled_back")
            if overriding and not override:
                raise ValueError(f"{version} is {record.status}; promoting it anyway needs override=True")
            previous = self.champion()
            if previous is not None:
                self._set_status(previous, "retired", window)
            self._set_status(version, "champion", window)
            self._append_history(version, previous, window, reason, "override" if overriding else "promote")
            return previous

    def reject(self, version: str, window: int | None = None) -> None:
        """Mark a candidate as rejected by the gate; its id stays taken."""
        with self.transaction():
            if self.get(version).status == "champion":
                raise ValueError(f"{version} is the champion; roll back or promote another version instead")
            self._set_status(version, "rejected", window)

    def rollback(self, reason: str = "", window: int | None = None) -> str:
        """Demote the champion to "rolled_back" and restore the champion it replaced; return the restored id.

        Walks the champion history backwards past versions that were themselves rolled back or rejected.
        """
        with self.transaction():
            current = self.champion()
            if current is None:
                raise ValueError("cannot roll back: there is no champion")
            statuses = {r.id: r.status for r in self.versions()}
            past = [
                row["version"]
                for row in self._conn.execute("SELECT version FROM champion_history ORDER BY seq DESC")
            ]
            target = next((v for v in past if v != current and statuses.get(v) == "retired"), None)
            if target is None:
                raise ValueError(f"cannot roll back {current}: no earlier champion to return to")
            self._set_status(current, "rolled_back", window)
            self._set_status(target, "champion", window)
            self._append_history(target, current, window, reason, "rollback")
            return target

    def champion_history(self, version: str | None = None) -> list[dict[str, Any]]:
        """Champion changes, oldest first; with ``version``, only those it took part in."""
        rows = self._conn.execute(
            'SELECT seq, version, previous, "window", reason, at, action FROM champion_history ORDER BY seq'
        )
        history = [dict(row) for row in rows]
        return [h for h in history if version in (None, h["version"], h["previous"])]

    def _set_status(self, version: str, status: str, window: int | None = None) -> None:
        self._conn.execute(
            "UPDATE versions SET status = ?, status_window = ? WHERE id = ?",
            (status, _window(window), version),
        )

    def _append_history(
        self, version: str, previous: str | None, window: int | None, reason: str, action: str
    ) -> None:
        self._conn.execute(
            'INSERT INTO champion_history (version, previous, "window", reason, at, action)'
            " VALUES (?, ?, ?, ?, ?, ?)",
            (version, previous, _window(window), reason, _now(), action),
        )

    # -- decisions and loop state ---------------------------------------------------------------------

    def record_decision(
        self, version: str, window: int | None, decision: str, numbers: Mapping[str, Any]
    ) -> None:
        """Log what the gate decided about ``version`` at ``window`` and the numbers it decided on."""
        with self.transaction():
            self.get(version)
            self._conn.execute(
                'INSERT INTO decisions (version, "window", decision, numbers, at) VALUES (?, ?, ?, ?, ?)',
                (version, _window(window), decision, _to_json(dict(numbers)), _now()),
            )

    def decisions(self, version: str | None = None) -> list[dict[str, Any]]:
        """Logged gate decisions, oldest first; with ``version``, only those about it."""
        query = 'SELECT seq, version, "window", decision, numbers, at FROM decisions'
        rows = self._conn.execute(
            f"{query} ORDER BY seq" if version is None else f"{query} WHERE version = ? ORDER BY seq",
            () if version is None else (version,),
        )
        return [{**dict(row), "numbers": json.loads(row["numbers"])} for row in rows]

    def set_state(self, key: str, value: Any) -> None:
        """Keep a JSON-able value (e.g. the loop's resume point) in the index, to commit with the versions."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, _to_json(value)),
            )

    def get_state(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    # -- display ------------------------------------------------------------------------------------

    def lineage_tree(self) -> str:
        """The lineage as a text tree, children under their parent, one line per version."""
        records = self.versions()
        ids = {r.id for r in records}
        children: dict[str | None, list[VersionRecord]] = {}
        for r in records:
            # A parent missing from the index (should not happen) would hide the subtree; show it as a root.
            children.setdefault(r.parent if r.parent in ids else None, []).append(r)
        lines: list[str] = []

        def walk(record: VersionRecord, prefix: str, connector: str, child_prefix: str) -> None:
            lines.append(prefix + connector + describe(record))
            kids = children.get(record.id, [])
            if len(kids) == 1:
                # An only child continues its parent's column, so a run of 50 fine-tunes reads as a
                # list instead of a staircase; indentation marks where the lineage branches.
                walk(kids[0], prefix + child_prefix, "", "")
                return
            for i, kid in enumerate(kids):
                last = i == len(kids) - 1
                walk(kid, prefix + child_prefix, "└── " if last else "├── ", "    " if last else "│   ")

        for root in children.get(None, []):
            walk(root, "", "", "")
        return "\n".join(lines)


def describe(record: VersionRecord) -> str:
    """One line about a version: "v1.2  stateful  champion  windows 3-5  n=1,234  acc=0.812"."""
    parts = [
        record.id,
        record.kind,
        record.status,
        f"windows {_window_ranges(record.trained_on_windows)}",
        f"n={record.n_samples:,}",
    ]
    accuracy = record.metrics.get("accuracy")
    if isinstance(accuracy, int | float) and not isinstance(accuracy, bool):
        parts.append(f"acc={accuracy:.3f}")
    trigger = record.trigger or {}
    if trigger.get("name") == "challenger":  # the root of a line of another architecture
        parts.append(f"challenger model={trigger.get('extra', {}).get('model', '?')}")
    elif trigger.get("name") == "schema":
        parts.append(f"schema change: {trigger.get('reason', '')}")
    return "  ".join(parts)


def _window_ranges(windows: list[int]) -> str:
    # [3, 4, 5, 8] -> "3-5,8": a version usually trains on a run of consecutive windows.
    if not windows:
        return "-"
    ordered = sorted(set(windows))
    runs: list[list[int]] = [[ordered[0], ordered[0]]]
    for w in ordered[1:]:
        if w == runs[-1][1] + 1:
            runs[-1][1] = w
        else:
            runs.append([w, w])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def _window(window: int | None) -> int | None:
    return None if window is None else int(window)


def _is_version_id(name: str) -> bool:
    try:
        parse_version(name)
    except ValueError:
        return False
    return True
