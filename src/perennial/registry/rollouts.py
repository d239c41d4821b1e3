"""Live rollouts in the registry: the loop asks for one (a candidate that passed the offline gate, the
kind and its settings), every server following the registry runs it on live traffic, and the one
engine state they share, the decision and its evidence are written here, each change in one
transaction, so that a restarted server continues the rollout where it was and nobody loses a
decision.

A rollout moves ``requested`` -> ``running`` -> one of ``promoted``, ``rejected``, ``stopped`` (a
person or a champion change ended it) or ``failed`` (the candidate could not serve, or no server
took it). Only one rollout is open (requested or running) at a time, and a decision is written only
over an open rollout (compare and set), so two servers, or a server and the loop's deadline, never
both decide one.

>>> import tempfile
>>> from perennial.registry import Registry
>>> registry = Registry(tempfile.mkdtemp())
>>> registry.rollouts.open() is None
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perennial.registry.store import Registry

OPEN = ("requested", "running")
DECIDED = ("promoted", "rejected", "stopped", "failed")
SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    champion TEXT NOT NULL,
    candidate TEXT NOT NULL,
    settings TEXT NOT NULL,
    salt TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    "window" INTEGER,
    state TEXT,
    seq INTEGER NOT NULL DEFAULT 0,
    evidence TEXT,
    reason TEXT,
    requested_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    decided_at TEXT
);
CREATE INDEX IF NOT EXISTS rollouts_status ON rollouts (status);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RolloutRecord:
    """One rollout as the registry keeps it. ``state`` is the engine's ``state_dict`` (None until a
    server started it) and ``seq`` the last request-log feedback it has recorded."""

    id: int
    kind: str
    champion: str
    candidate: str
    settings: dict[str, Any]
    salt: str
    status: str
    requested_by: str
    window: int | None
    state: dict[str, Any] | None
    seq: int
    evidence: dict[str, Any] | None
    reason: str | None
    requested_at: str
    updated_at: str
    decided_at: str | None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN


class Rollouts:
    """The registry's rollouts table (``registry.rollouts``)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _table(self) -> bool:
        return self.registry._has_table("rollouts")  # a read-only open of an older registry may lack it

    def _row(self, where: str, params: tuple) -> RolloutRecord | None:
        if not self._table():
            return None
        row = self.registry._conn.execute(f"SELECT * FROM rollouts WHERE {where}", params).fetchone()
        return None if row is None else _record(row)

    def request(
        self,
        kind: str,
        champion: str,
        candidate: str,
        settings: dict[str, Any],
        *,
        window: int | None = None,
        by: str = "loop",
        salt: str | None = None,
    ) -> RolloutRecord:
        """Ask the servers to run ``candidate`` against ``champion`` on live traffic. Refused
        (ValueError) while another rollout is open, or unless ``champion`` is the champion now and
        ``candidate`` a version that is not; UnknownVersion for a version the registry lacks."""
        registry = self.registry
        with registry.transaction():
            record = registry.get(candidate)  # UnknownVersion names it
            registry.get(champion)
            current = registry.champion()
            if current != champion:
                raise ValueError(
                    f"cannot roll out {candidate} against {champion}: the champion is {current} now"
                )
            if record.status == "champion":
                raise ValueError(f"{candidate} is already the champion")
            if (running := self.open()) is not None:
                raise ValueError(
                    f"a {running.kind} rollout of {running.candidate} (id {running.id}) is {running.status}; "
                    "stop it first or wait for its decision"
                )
            now = _now()
            cursor = registry._conn.execute(
                "INSERT INTO rollouts (kind, champion, candidate, settings, salt, status, requested_by,"
                " \"window\", requested_at, updated_at) VALUES (?, ?, ?, ?, '', 'requested', ?, ?, ?, ?)",
                (kind, champion, candidate, json.dumps(settings), by, window, now, now),
            )
            rollout_id = int(cursor.lastrowid)
            # Every replica assigns a unit to the same arm: the salt is the rollout's, not the server's.
            salt = salt or f"rollout-{rollout_id}:{candidate}"
            registry._conn.execute("UPDATE rollouts SET salt = ? WHERE id = ?", (salt, rollout_id))
            return self.get(rollout_id)

    def get(self, rollout_id: int) -> RolloutRecord:
        record = self._row("id = ?", (int(rollout_id),))
        if record is None:
            raise KeyError(f"no rollout {rollout_id} in {self.registry.root}")
        return record

    def open(self) -> RolloutRecord | None:
        """The rollout requested or running now, if any."""
        return self._row("status IN ('requested', 'running') ORDER BY id DESC LIMIT 1", ())

    def all(self) -> list[RolloutRecord]:
        if not self._table():
            return []
        return [_record(r) for r in self.registry._conn.execute("SELECT * FROM rollouts ORDER BY id")]

    def advance(self, rollout_id: int, state: dict[str, Any], seq: int) -> bool:
        """Save the engine's state and the last feedback it recorded; False (nothing written) if the
        rollout is no longer open."""
        with self.registry.transaction():
            cursor = self.registry._conn.execute(
                "UPDATE rollouts SET status = 'running', state = ?, seq = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('requested', 'running')",
                (json.dumps(state), int(seq), _now(), int(rollout_id)),
            )
            return cursor.rowcount == 1

    def decide(
        self,
        rollout_id: int,
        status: str,
        evidence: dict[str, Any],
        reason: str,
        *,
        window: int | None = None,
        state: dict[str, Any] | None = None,
        seq: int | None = None,
    ) -> bool:
        """End an open rollout with ``status`` and its evidence, and act on it in the same transaction:
        ``promoted`` makes the candidate champion, ``rejected`` and ``failed`` reject it; ``stopped``
        leaves it a candidate. Each is also a decision in the registry's log. Returns False and
        changes nothing if the rollout was already decided (by another server, or the loop's deadline)."""
        if status not in DECIDED:
            raise ValueError(f"a rollout decision is one of {list(DECIDED)}, got {status!r}")
        registry = self.registry
        with registry.transaction():
            record = self.get(rollout_id)
            if not record.is_open:
                return False
            if status == "promoted" and registry.champion() != record.champion:
                status, reason = (
                    "stopped",
                    (
                        f"not promoted: the champion changed from {record.champion} to {registry.champion()} "
                        f"during the rollout ({reason})"
                    ),
                )
            registry._conn.execute(
                "UPDATE rollouts SET status = ?, evidence = ?, reason = ?, state = coalesce(?, state),"
                " seq = coalesce(?, seq), updated_at = ?, decided_at = ? WHERE id = ?",
                (
                    status,
                    json.dumps(evidence),
                    reason,
                    None if state is None else json.dumps(state),
                    seq,
                    _now(),
                    _now(),
                    int(rollout_id),
                ),
            )
            numbers = {"reason": reason, "rollout": record.id, "kind": record.kind, **evidence}
            candidate = record.candidate
            if status == "promoted":
                registry.promote(candidate, window=window, reason=f"{record.kind} rollout: {reason}")
                registry.record_decision(candidate, window, "promoted", numbers)
            elif status in ("rejected", "failed"):
                if registry.get(candidate).status not in ("champion", "rejected"):
                    registry.reject(candidate, window)
                registry.record_decision(candidate, window, "rejected", numbers)
            else:
                registry.record_decision(candidate, window, "rollout_stopped", numbers)
            return True


def _record(row: Any) -> RolloutRecord:
    def loads(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return RolloutRecord(
        id=int(row["id"]),
        kind=row["kind"],
        champion=row["champion"],
        candidate=row["candidate"],
        settings=json.loads(row["settings"]),
        salt=row["salt"],
        status=row["status"],
        requested_by=row["requested_by"],
        window=row["window"],
        state=loads(row["state"]),
        seq=int(row["seq"]),
        evidence=loads(row["evidence"]),
        reason=row["reason"],
        requested_at=row["requested_at"],
        updated_at=row["updated_at"],
        decided_at=row["decided_at"],
    )
