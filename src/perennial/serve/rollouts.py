"""The server's side of a live rollout: the engine (``perennial.rollout.live``, the one the loop's replay
uses) is rebuilt from the registry, advanced with the labelled requests of the request log that it has
not recorded yet, and written back with the last feedback it recorded, all in one registry
transaction. Any replica can advance it: the registry's write lock orders them, and each advance
reads the feedback after the one the last advance recorded, so no feedback is counted twice or
never, whichever replica took it, and a server killed at any moment loses nothing (the log holds the
feedback, the registry the state).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perennial.registry import Registry
from perennial.registry.rollouts import RolloutRecord
from perennial.rollout.live import Rollout, make_rollout

BATCH = 5_000  # feedback rows read per query; an advance reads until none is left

# The settings of a rollout that only the loop uses (its deadline in windows, replay or server):
# a server decides by the statistics alone; the loop applies the deadline.
LOOP_ONLY = ("on",)


def engine(record: RolloutRecord) -> Rollout:
    """The rollout's engine as the registry has it: its kind and settings, begun with its champion,
    candidate and salt, and its recorded state (if a server has started it)."""
    settings = {k: v for k, v in record.settings.items() if k not in LOOP_ONLY}
    live = make_rollout(record.kind, settings)
    if record.state is not None:
        live.load_state_dict(record.state, record.salt)
    else:
        live.begin(record.champion, record.candidate, record.salt)
    return live


@dataclass(frozen=True)
class Advance:
    """What one advance did: the record afterwards, its engine, how many feedback rows it recorded,
    and the outcome (``continue`` while it runs)."""

    record: RolloutRecord
    engine: Rollout
    recorded: int
    outcome: str


def advance(
    registry: Registry, log_path: str | Path, rollout_id: int, wait_shadow: Callable | None = None
) -> Advance:
    """Record the rollout's new feedback from the log at ``log_path`` and decide; one transaction.

    A decision (``promote`` or ``reject``) is written with its evidence through
    ``registry.rollouts.decide``, which promotes or rejects the candidate in the same transaction."""
    with registry.transaction():
        record = registry.rollouts.get(rollout_id)
        live = engine(record)
        if not record.is_open:
            return Advance(record, live, 0, _outcome(record.status))
        seq, recorded = record.seq, 0
        while rows := feedback_after(log_path, rollout_id, record.candidate, seq):
            record_rows(live, rows, record, wait_shadow)
            seq, recorded = rows[-1]["seq"], recorded + len(rows)
        outcome = live.decide()
        state = live.state_dict()
        if outcome == "continue":
            if recorded or record.status == "requested":
                registry.rollouts.advance(rollout_id, state, seq)
        else:
            summary = live.summary()
            reason = f"{record.kind} decided on live traffic: {outcome} (p={summary.get('p_value')})"
            status = "promoted" if outcome == "promote" else "rejected"
            registry.rollouts.decide(rollout_id, status, summary, reason, state=state, seq=seq)
        after = registry.rollouts.get(rollout_id)
        # What the registry made of it: a promotion over a champion changed meanwhile is "stopped".
        return Advance(after, live, recorded, outcome if after.is_open else _outcome(after.status))


def _outcome(status: str) -> str:
    return {"promoted": "promote", "rejected": "reject"}.get(status, status)


def record_rows(live: Rollout, rows: list[dict], record: RolloutRecord, wait_shadow: Callable | None) -> None:
    """Feed ``live`` the labelled requests ``rows`` (``feedback_after``): labels of /predict requests
    as outcomes, clicks on /rank impressions as an interleaving's credit."""
    predicted = [r for r in rows if r["teams"] is None]
    ranked = [r for r in rows if r["teams"] is not None]
    if predicted:
        arms, served, labels, shadow = [], [], [], []
        for r in predicted:
            theirs = r["shadow"]
            if live.shadows and theirs is None and wait_shadow is not None:
                theirs = wait_shadow(r["request_id"])  # its shadow answer may still be on its way
            n = len(r["labels"])
            arms += [r["arm"]] * n
            served += r["predictions"]
            labels += r["labels"]
            shadow += theirs if theirs is not None and len(theirs) == n else [None] * n
        live.record(arms, served, labels, shadow if live.shadows else None)
    if ranked and record.kind == "interleave":
        live.clicks([r["teams"] for r in ranked], [r["labels"] for r in ranked])


def feedback_after(log_path: str | Path, rollout_id: int, candidate: str, seq: int) -> list[dict]:
    """The labelled requests of rollout ``rollout_id`` whose feedback came after ``seq``, in the order
    it came, with the candidate's shadow answer where it has one (read-only, a connection of its own:
    the server's log writer goes on)."""
    uri = f"{Path(log_path).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT f.seq, f.labels, r.request_id, r.arm, r.predictions, r.teams, s.predictions AS shadow"
            " FROM feedback f JOIN requests r ON r.request_id = f.request_id"
            " LEFT JOIN shadow s ON s.request_id = r.request_id AND s.version = ?"
            " WHERE r.rollout = ? AND f.seq > ? ORDER BY f.seq LIMIT ?",
            (candidate, int(rollout_id), int(seq), BATCH),
        ).fetchall()
    finally:
        conn.close()
    return [
        {
            "seq": int(r["seq"]),
            "request_id": r["request_id"],
            "arm": r["arm"],
            "predictions": json.loads(r["predictions"]),
            "labels": json.loads(r["labels"]),
            "teams": None if r["teams"] is None else json.loads(r["teams"]),
            "shadow": None if r["shadow"] is None else json.loads(r["shadow"]),
        }
        for r in rows
    ]
