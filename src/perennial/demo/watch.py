"""What the closed loop is doing, read from outside it: the registry (versions, the loop's windows,
the live rollouts and their decisions, the champion) and the server's ``/status``, turned into
events the demo prints and each version's track through the canary.

>>> import tempfile, torch
>>> from perennial.registry import Registry, VersionRecord
>>> root = tempfile.mkdtemp()
>>> with Registry(root) as registry:
...     _ = registry.add(VersionRecord("v1", None, "stateless"), {"w": torch.ones(1)})
...     registry.promote("v1", reason="first model")
>>> watcher = RegistryWatcher(root, now=lambda: 1.0)
>>> [event.text for event in watcher.poll()]
['v1 stored (status champion)', 'champion: v1']
>>> watcher.poll()
[]
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from perennial.registry import Registry, RegistryIndexError

# A rollout's registry status as the demo says it: the canary's guard rejecting a candidate is a
# rollback of the traffic it had been given.
OUTCOME_WORDS = {"promoted": "promoted", "rejected": "rolled back", "stopped": "stopped", "failed": "failed"}


@dataclass
class Event:
    """One thing that happened, ``at`` seconds after the demo's clock started."""

    at: float
    kind: str  # stored, gate, canary, step, decided, champion, window, server
    text: str
    version: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class VersionTrack:
    """One version's way through the closed loop, times in seconds of the demo's clock (None: not seen)."""

    id: str
    stored_at: float | None = None
    gate: str | None = None  # the loop's first decision about it (e.g. "rollout", "rejected")
    canary_at: float | None = None  # when its rollout was requested (or first seen running)
    rollout: int | None = None  # the registry's rollout id
    steps: list[tuple[float, float]] = field(default_factory=list)  # (at, the canary's share)
    decided_at: float | None = None
    outcome: str | None = None  # promoted, rolled back, stopped, failed
    reason: str | None = None
    evidence: dict[str, Any] | None = None
    status: str | None = None  # its status in the registry now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RegistryWatcher:
    """Polls the registry at ``root`` (read-only) and, with ``status_url``, the server's ``/status``;
    each ``poll`` returns what changed since the last one as events, and keeps every version's
    :class:`VersionTrack`. A registry or server that cannot be read is a note, not an error: the demo
    goes on and says so."""

    def __init__(
        self, root: str | Path, status_url: str | None = None, now: Callable[[], float] = lambda: 0.0
    ) -> None:
        self.root, self.status_url, self.now = Path(root), status_url, now
        self.tracks: dict[str, VersionTrack] = {}
        self.champion: str | None = None
        self.windows: list[dict[str, Any]] = []  # the loop's rows of windows.csv, as it commits them
        self.status: dict[str, Any] | None = None  # the server's last /status
        self.note: str | None = None  # why the last poll could not read something
        self._decisions = 0  # decisions already seen (their seq grows)
        self._rollouts: dict[int, str] = {}  # id -> status seen
        self._shares: tuple[str, float] | None = None
        self._server_champion: str | None = None
        self._client = httpx.Client(timeout=2.0) if status_url else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def track(self, version: str) -> VersionTrack:
        return self.tracks.setdefault(version, VersionTrack(version))

    def canaries(self) -> list[VersionTrack]:
        """The versions that entered the canary, in order."""
        entered = [t for t in self.tracks.values() if t.canary_at is not None]
        return sorted(entered, key=lambda t: t.canary_at)

    # ---- polling ----------------------------------------------------------------------------------
    def poll(self) -> list[Event]:
        at, events, notes = self.now(), [], []
        try:
            with Registry(self.root, create=False, readonly=True) as registry:
                rollouts = registry.rollouts.all() if hasattr(registry, "rollouts") else []
                events += self._versions(registry, at)
                events += self._decisions_since(registry, at, {r.candidate for r in rollouts})
                events += self._rollouts_since(rollouts, at)
                events += self._windows_since(registry, at)
                events += self._champion(registry, at)
        except (sqlite3.Error, FileNotFoundError, RegistryIndexError) as err:
            notes.append(f"registry unreadable: {type(err).__name__}: {err}")
        if self._client is not None:
            try:
                response = self._client.get(self.status_url)
                response.raise_for_status()
                self.status = response.json()
                events += self._server(self.status, at)
            except (httpx.HTTPError, ValueError) as err:
                notes.append(f"server status unreadable: {type(err).__name__}")
        self.note = "; ".join(notes) or None
        return events

    def _versions(self, registry: Registry, at: float) -> list[Event]:
        events = []
        for record in registry.versions():
            known = record.id in self.tracks
            track = self.track(record.id)
            if not known:
                track.stored_at = at
                events.append(Event(at, "stored", f"{record.id} stored (status {record.status})", record.id))
            elif track.status != record.status and record.status == "rolled_back":
                events.append(
                    Event(
                        at, "decided", f"{record.id} rolled back (its first window served worse)", record.id
                    )
                )
            track.status = record.status
        return events

    def _decisions_since(self, registry: Registry, at: float, rolled_out: set[str]) -> list[Event]:
        events = []
        for decision in registry.decisions():
            if decision["seq"] <= self._decisions:
                continue
            self._decisions = decision["seq"]
            track = self.track(decision["version"])
            label, reason = decision["decision"], str(decision["numbers"].get("reason", ""))
            window = "" if decision["window"] is None else f" at window {decision['window']}"
            if track.gate is None:
                track.gate = label
                if label == "promoted" and (reason == "first model" or reason.startswith("exported")):
                    continue  # how v1 came to be, not news
                events.append(
                    Event(
                        at,
                        "gate",
                        f"{track.id}: offline gate{window}: {label} ({reason})",
                        track.id,
                        {"decision": label},
                    )
                )
            elif label == "adopted":
                events.append(
                    Event(
                        at,
                        "decision",
                        f"the loop adopts {track.id}, the registry's champion, as "
                        "its v1 (the never-updated baseline)",
                        track.id,
                        {"decision": label},
                    )
                )
            elif track.id not in rolled_out:  # a live rollout's decision is told from its record
                events.append(
                    Event(
                        at,
                        "decision",
                        f"{track.id}{window}: {label} ({reason})",
                        track.id,
                        {"decision": label},
                    )
                )
        return events

    def _rollouts_since(self, rollouts: list, at: float) -> list[Event]:
        """Rollouts requested of the servers through the registry (``perennial.registry.rollouts``)."""
        events = []
        for rollout in rollouts:
            seen = self._rollouts.get(rollout.id)
            if seen == rollout.status:
                continue
            self._rollouts[rollout.id] = rollout.status
            track = self.track(rollout.candidate)
            if seen is None:
                track.canary_at = at
                track.rollout = rollout.id
                steps = rollout.settings.get("steps")
                plan = f" (steps {' '.join(f'{s:.0%}' for s in steps)})" if steps else ""
                events.append(
                    Event(
                        at,
                        "canary",
                        f"{rollout.candidate} enters the {rollout.kind} against {rollout.champion}{plan}",
                        rollout.candidate,
                    )
                )
            if rollout.status in OUTCOME_WORDS:
                track.decided_at, track.outcome = at, OUTCOME_WORDS[rollout.status]
                track.reason, track.evidence = rollout.reason, rollout.evidence
                events.append(
                    Event(
                        at,
                        "decided",
                        f"{rollout.candidate} {track.outcome} by the {rollout.kind}: {rollout.reason}",
                        rollout.candidate,
                        {"outcome": track.outcome},
                    )
                )
        return events

    def _windows_since(self, registry: Registry, at: float) -> list[Event]:
        rows = registry.window_rows(since=len(self.windows))
        self.windows.extend(rows)
        events = []
        for row in rows:
            served, static = row.get("served_accuracy"), row.get("static_accuracy")
            scores = ""
            if isinstance(served, float) and isinstance(static, float):
                scores = f": served {served:.3f}, v1 {static:.3f}"
            events.append(
                Event(
                    at,
                    "window",
                    f"loop committed window {row.get('window')}{scores}",
                    row.get("champion"),
                    {"row": row},
                )
            )
        return events

    def _champion(self, registry: Registry, at: float) -> list[Event]:
        champion = registry.champion()
        if champion == self.champion:
            return []
        previous, self.champion = self.champion, champion
        text = f"champion: {champion}" if previous is None else f"champion: {previous} -> {champion}"
        return [Event(at, "champion", text, champion)]

    def _server(self, status: dict[str, Any], at: float) -> list[Event]:
        events = []
        rollout = status.get("rollout") or None
        if rollout and rollout.get("candidate"):
            candidate = rollout["candidate"]
            track = self.track(candidate)
            if track.canary_at is None:  # a server that runs a rollout the registry does not list
                track.canary_at = at
                events.append(
                    Event(
                        at, "canary", f"{candidate} enters the {rollout.get('kind')} on the server", candidate
                    )
                )
            share = float((status.get("shares") or {}).get(candidate, 0.0))
            if self._shares != (candidate, share):
                self._shares = (candidate, share)
                track.steps.append((at, share))
                events.append(
                    Event(
                        at,
                        "step",
                        f"{candidate} gets {share:.0%} of the traffic",
                        candidate,
                        {"share": share},
                    )
                )
        else:
            self._shares = None
        champion = status.get("champion")
        if champion != self._server_champion:
            if self._server_champion is not None:
                events.append(Event(at, "server", f"the server now serves {champion}", champion))
            self._server_champion = champion
        return events
