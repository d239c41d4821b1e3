"""The model registry: every candidate version's weights and state on disk, and an SQLite index of lineage,
status, champion history and gate decisions that changes atomically with the training loop's own state.

Writers take SQLite's write lock (WAL mode, a busy timeout), so the loop and ``perennial-registry
promote`` may write the same registry at once; readers (``readonly=True``: the server's status, a
dashboard) may look at any moment and never write. Every stored file has its sha256 in the index,
checked whenever the file is loaded.

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

import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load

from perennial.registry import rollouts as _rollouts
from perennial.registry.tensorfile import fsync_dir, save_tensors, save_tree, tree_from_bytes
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
# The sha256 of every file of a version, committed with its row. Registries written before it existed
# gain it with their next added version; their older versions have no rows here and load unchecked.
_FILES_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    version TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (version, name)
);
"""
# Each window's row of windows.csv, written as the loop commits the window (and again when its labels
# land), so that the checkpoint stays the same size however long the run. Registries from before it
# gain it with their first row.
_ROWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS window_rows (
    "window" INTEGER PRIMARY KEY,
    row TEXT NOT NULL
);
"""
_TABLES = ("versions", "champion_history", "decisions", "state")


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


class RegistryIndexError(ValueError):
    """``index.sqlite`` exists but is not a readable perennial registry index (empty, damaged, foreign)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"registry index {path} is unusable: {problem}")
        self.path, self.problem = path, problem


class CorruptVersion(ValueError):
    """A version whose stored files cannot be trusted: missing, failing their checksum, unreadable, or
    (its weights) holding NaN or infinite values."""

    def __init__(self, version: str, problem: str) -> None:
        super().__init__(f"version {version}: {problem}")
        self.version, self.problem = version, problem


def non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """What is wrong with the first tensor holding NaN or infinite values, or None if all are finite."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() and not tensor.is_complex():
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            nan = int(torch.isnan(tensor).sum())
            inf = int((~finite).sum()) - nan
            return f"{name} holds {nan} NaN and {inf} infinite value(s) of {tensor.numel()}"
    return None


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

    ``create=True`` is for the writer that owns the registry (the training loop): it creates a new
    registry when ``index.sqlite`` does not exist, and removes the debris of a crashed write.
    ``create=False`` opens an existing registry to read and write (``perennial-registry promote``);
    ``readonly=True`` opens one that SQLite itself will not let this connection change.
    An existing index that is empty, damaged or not a registry raises :class:`RegistryIndexError`
    and is left as it is.
    """

    def __init__(
        self,
        root: str | Path,
        create: bool = True,
        *,
        readonly: bool = False,
        busy_timeout: float | None = None,
    ) -> None:
        self.root = Path(root)
        # Seconds a write waits for another writer's lock; less for callers that must not stall (a
        # server answering a request), which try again later instead.
        self.busy_timeout = _BUSY_TIMEOUT_MS / 1000 if busy_timeout is None else float(busy_timeout)
        self.index = self.root / "index.sqlite"
        self.readonly = readonly
        self.versions_dir = self.root / "versions"
        exists = self.index.exists() or self.index.is_symlink()
        if not exists and (readonly or not create):
            raise FileNotFoundError(f"no registry at {self.root}")
        if exists and not self.index.is_file():
            raise RegistryIndexError(self.index, "it is not a regular file")
        if not exists:
            self.root.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()
        self._depth = 0
        try:
            if exists:
                # Checked before anything is written: a 0-byte or foreign file must stay as it is, not
                # be turned into a fresh empty registry that hides the loss.
                self._check_schema()
            if not readonly:
                self._conn.execute("PRAGMA journal_mode=WAL")
            if not exists:
                self._conn.executescript(_SCHEMA + _FILES_SCHEMA + _ROWS_SCHEMA)
            if not readonly:
                # "Which is the champion" is asked at every window: without an index it reads every
                # version, a cost that grows with the run.
                self._conn.execute("CREATE INDEX IF NOT EXISTS versions_status ON versions (status)")
                # Registries from before live rollouts gain the table (and an identity) on a writer's
                # open; only then does opening write (another writer may hold the lock meanwhile).
                if not self._has_table("rollouts"):
                    self._conn.executescript(_rollouts.SCHEMA)
                if self._conn.execute("SELECT 1 FROM state WHERE key = 'registry_id'").fetchone() is None:
                    self._conn.execute(
                        "INSERT OR IGNORE INTO state (key, value) VALUES ('registry_id', ?)",
                        (json.dumps(uuid.uuid4().hex),),
                    )
        except sqlite3.DatabaseError as err:
            self._conn.close()
            if _is_busy(err):
                raise
            raise RegistryIndexError(self.index, str(err)) from None
        except BaseException:
            self._conn.close()
            raise
        if not readonly:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
        if create and not readonly:
            # Only the owner cleans up: a reader must never delete, and a writer that did not create
            # the registry (a person's promote) has no business with the loop's unfinished files.
            self._discard_orphans_unless_busy()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module never opens transactions behind our back.
        if self.readonly:
            conn = sqlite3.connect(
                f"{self.index.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                timeout=self.busy_timeout,
            )
        else:
            conn = sqlite3.connect(self.index, isolation_level=None, timeout=self.busy_timeout)
        conn.row_factory = sqlite3.Row
        return conn

    def _check_schema(self) -> None:
        tables = {
            row["name"] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        missing = [t for t in _TABLES if t not in tables]
        if missing:
            if self.index.stat().st_size == 0:
                raise RegistryIndexError(self.index, "it is an empty (0-byte) file, not a registry index")
            raise RegistryIndexError(self.index, f"it has no {', '.join(missing)} table(s)")
        columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(versions)")}
        lacking = [c for c in _COLUMNS if c not in columns]
        if lacking:
            raise RegistryIndexError(self.index, f"its versions table has no {', '.join(lacking)} column(s)")

    def check(self) -> None:
        """Read every page of the index (SQLite's quick_check); a damaged one raises RegistryIndexError."""
        try:
            rows = [row[0] for row in self._conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as err:
            if _is_busy(err):
                raise
            raise RegistryIndexError(self.index, str(err)) from None
        if rows != ["ok"]:
            raise RegistryIndexError(self.index, "; ".join(rows[:3]))

    def close(self) -> None:
        self._conn.close()

    @property
    def rollouts(self) -> _rollouts.Rollouts:
        """The live rollouts the loop asked for and the servers run (``perennial.registry.rollouts``)."""
        return _rollouts.Rollouts(self)

    @property
    def identity(self) -> str | None:
        """A random id given to the registry when a writer first opened it: a server that follows a
        registry tells a registry replaced at the same path from the one it loaded its models from."""
        return self.get_state("registry_id")

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
        # Only the ids that decide it are read: the major lines' roots, or the parent's line, and its
        # highest minor is found by SQLite, so the cost does not grow with every version of a long run.
        if kind == "stateful" and parent is not None:
            major = parse_version(parent)[0]
            if self._row(parent) is None:
                return next_version_id([], kind, parent)  # the error that names the unknown parent
            query = "SELECT MAX(CAST(substr(id, ?) AS INTEGER)) FROM versions WHERE id GLOB ?"
            highest = self._conn.execute(query, (len(f"v{major}.") + 1, f"v{major}.*")).fetchone()[0]
            return f"v{major}.{(highest or 0) + 1}"
        roots = [row["id"] for row in self._conn.execute("SELECT id FROM versions WHERE id NOT GLOB '*.*'")]
        return next_version_id(roots, kind, parent)

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
            checksums = self._write_files(record.id, weights, extras)
            self._insert_row(record)
            if not self._has_files_table():  # a registry from before checksums: gains the table now
                # execute, not executescript, which would commit the open transaction first.
                self._conn.execute(_FILES_SCHEMA)
            self._conn.executemany(
                "INSERT INTO files (version, name, sha256, bytes) VALUES (?, ?, ?, ?)",
                [(record.id, name, digest, size) for name, (digest, size) in checksums.items()],
            )
            return self.get(record.id)

    def _write_files(
        self, version: str, weights: Mapping[str, torch.Tensor], extras: Mapping[str, Mapping]
    ) -> dict[str, tuple[str, int]]:
        """Write the files, rename them into place, and return each file's (sha256, size)."""
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-", dir=self.versions_dir))
        try:
            save_tensors(tmp / WEIGHTS_FILE, weights)
            for name, tree in extras.items():
                save_tree(tmp / f"{name}.safetensors", tree)
            # Hashed from disk, after writing: the checksum is of the bytes a later load will read.
            checksums = {}
            for path in sorted(tmp.iterdir()):
                data = path.read_bytes()
                checksums[path.name] = (hashlib.sha256(data).hexdigest(), len(data))
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
        return checksums

    def _has_files_table(self) -> bool:
        return self._has_table("files")

    def _has_table(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._conn.execute(query, (name,)).fetchone() is not None

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

    def newest_first(self) -> Iterator[VersionRecord]:
        """Versions in the reverse of the order they were added, read as the caller goes."""
        for row in self._conn.execute("SELECT * FROM versions ORDER BY rowid DESC").fetchall():
            yield self._record(row)

    def checksums(self, version: str) -> dict[str, str]:
        """The sha256 of each of ``version``'s files, by file name; empty for a version stored before
        the registry kept checksums."""
        if not self._has_files_table():
            return {}
        rows = self._conn.execute("SELECT name, sha256 FROM files WHERE version = ?", (version,))
        return {row["name"]: row["sha256"] for row in rows}

    def _read(self, version: str, name: str, required: bool) -> bytes | None:
        """A file's bytes, checked against its recorded sha256; CorruptVersion if missing or changed."""
        path = self.versions_dir / version / name
        expected = self.checksums(version).get(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if required or expected is not None:
                raise CorruptVersion(version, f"{name} is missing from {path.parent}") from None
            return None
        if expected is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise CorruptVersion(
                    version,
                    f"{name} fails its checksum (sha256 {actual[:16]}... on disk, {expected[:16]}... "
                    f"recorded; {len(data)} bytes): the file was damaged or changed after it was stored",
                )
        return data

    def load_weights(self, version: str) -> dict[str, torch.Tensor]:
        """The model ``state_dict`` stored with ``version``, on CPU, checked against its sha256.

        Raises :class:`CorruptVersion` for a missing, changed or unreadable file (never unpickles).
        """
        self.get(version)
        data = self._read(version, WEIGHTS_FILE, required=True)
        try:
            return load(data)
        except Exception as err:  # safetensors' own error type; a truncated file, a foreign one
            problem = f"{WEIGHTS_FILE} is not a readable safetensors file: {err}"
            raise CorruptVersion(version, problem) from None

    def load_extra(self, version: str, name: str) -> dict[str, Any] | None:
        """The extra tree ``name`` (e.g. "optimizer") stored with ``version``, or None if it has none."""
        self._check_extra_name(name)
        self.get(version)
        file = f"{name}.safetensors"
        data = self._read(version, file, required=False)
        if data is None:
            return None
        try:
            return tree_from_bytes(data, file)
        except Exception as err:
            raise CorruptVersion(version, f"{file} is not a readable perennial tree: {err}") from None

    def verify(self, version: str) -> None:
        """Check everything stored with ``version`` before it serves: every file present, matching its
        checksum and readable, and the weights finite. Raises :class:`CorruptVersion` naming the problem."""
        problem = non_finite(self.load_weights(version))
        if problem is not None:
            raise CorruptVersion(version, f"its weights are not finite: {problem}")
        names = set(self.checksums(version)) | {
            p.name for p in (self.versions_dir / version).glob("*.safetensors")
        }
        for name in sorted(names - {WEIGHTS_FILE}):
            self.load_extra(version, name.removesuffix(".safetensors"))

    def export(self, version: str, to: str | Path) -> Registry:
        """A new registry at ``to`` whose champion, ``v1``, is ``version`` of this one (its files checked
        and copied, its record and extras kept, its origin in the champion history): how a model trained
        by one run starts serving, so that a loop over the server's own log continues from it.
        ``to`` must not hold a registry already."""
        target = Path(to)
        if (target / "index.sqlite").exists():
            raise ValueError(f"{target} already holds a registry; export into a new directory")
        self.verify(version)
        record = self.get(version)
        extras = {}
        for path in sorted((self.versions_dir / version).glob("*.safetensors")):
            name = path.name.removesuffix(".safetensors")
            if name != "weights":
                extras[name] = self.load_extra(version, name)
        origin = f"{version} of {self.root.resolve()}"
        copy = VersionRecord(
            id="v1",
            parent=None,
            kind="stateless",
            trained_on_windows=[],
            n_samples=record.n_samples,
            train_seconds=record.train_seconds,
            config=record.config,
            metrics=record.metrics,
            trigger={"name": "export", "reason": origin},
        )
        exported = Registry(target)
        try:
            with exported.transaction():
                exported.add(copy, self.load_weights(version), extras)
                exported.promote("v1", reason=f"exported from {origin}")
                exported.record_decision("v1", None, "promoted", {"reason": f"exported from {origin}"})
        except BaseException:
            exported.close()
            raise
        return exported

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
        # Opening while another process writes (a promote by hand, a second loop) must neither wait
        # nor fail: skip the cleanup then; the debris stays invisible and the next open removes it.
        self._conn.execute("PRAGMA busy_timeout = 0")
        try:
            self.discard_orphans()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {round(self.busy_timeout * 1000)}")

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

    def rollback_target(self) -> str:
        """The version :meth:`rollback` would restore now (ValueError if none), so that a caller can
        check and load it before the registry changes.

        Walks the champion history backwards past versions that were themselves rolled back or rejected.
        """
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
        return target

    def rollback(
        self, reason: str = "", window: int | None = None, *, expect: tuple[str, str] | None = None
    ) -> str:
        """Demote the champion to "rolled_back" and restore the champion it replaced; return the restored id.

        ``expect=(champion, restored)``: the pair the caller checked (see :meth:`rollback_target`); if
        another writer changed either meanwhile, nothing changes and ValueError says so.
        """
        with self.transaction():
            current = self.champion()
            target = self.rollback_target()
            if expect is not None and (current, target) != tuple(expect):
                raise ValueError(
                    f"cannot roll back {expect[0]} to {expect[1]}: the registry changed meanwhile "
                    f"(champion {current}, which would roll back to {target}); look again and retry"
                )
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

    # -- the loop's window rows ---------------------------------------------------------------------

    def put_window_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write (or replace) each row of ``rows``, keyed by its ``window``."""
        if not rows:
            return
        with self.transaction():
            if not self._has_table("window_rows"):
                self._conn.execute(_ROWS_SCHEMA)
            self._conn.executemany(
                'INSERT INTO window_rows ("window", row) VALUES (?, ?)'
                ' ON CONFLICT("window") DO UPDATE SET row = excluded.row',
                [(int(r["window"]), _to_json(r)) for r in rows],
            )

    def window_rows(self, since: int = 0) -> list[dict[str, Any]]:
        """The rows of windows ``since`` on, in window order."""
        if not self._has_table("window_rows"):
            return []
        query = 'SELECT row FROM window_rows WHERE "window" >= ? ORDER BY "window"'
        return [json.loads(r["row"]) for r in self._conn.execute(query, (since,))]

    def window_row(self, window: int) -> dict[str, Any] | None:
        if not self._has_table("window_rows"):
            return None
        found = self._conn.execute('SELECT row FROM window_rows WHERE "window" = ?', (window,)).fetchone()
        return json.loads(found["row"]) if found else None

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


def _is_busy(err: sqlite3.DatabaseError) -> bool:
    # Another process holds the lock: worth a retry, not a sign of a damaged file.
    return isinstance(err, sqlite3.OperationalError) and ("locked" in str(err) or "busy" in str(err))


def _is_version_id(name: str) -> bool:
    try:
        parse_version(name)
    except ValueError:
        return False
    return True
