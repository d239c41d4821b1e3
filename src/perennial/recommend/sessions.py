"""Live sessions of the in-session half of the recommender: per unit, what it rated in this session and
its fitted user vector, kept in memory with a time-to-live, a bound on how many live at once (the least
recently used is evicted) and a token bucket that rate-limits each unit's feedback.

>>> clock = iter(range(100)).__next__  # a fake clock: one second per call
>>> store = SessionStore(max_sessions=2, ttl_s=50, clock=clock)
>>> session, started = store.open("alice")
>>> started, len(session)
(True, 0)
>>> session.record(7, 4.5, max_interactions=100)
>>> store.get("alice").items.tolist()
[7]
>>> for unit in ("bob", "carol"):  # a third session evicts the least recently used, alice
...     _ = store.open(unit)
>>> store.get("alice")
Traceback (most recent call last):
...
perennial.recommend.sessions.UnknownSession: unit 'alice' has no session (none started, or evicted ...
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class SessionError(Exception):
    """A session request refused; subclasses say why."""


class UnknownSession(SessionError, KeyError):
    def __init__(self, unit: str) -> None:
        super().__init__(unit)
        self.unit = unit

    def __str__(self) -> str:
        return (
            f"unit {self.unit!r} has no session (none started, or evicted to keep the store bounded); "
            "POST /rank starts one"
        )


class SessionExpired(SessionError):
    def __init__(self, unit: str, idle_s: float, ttl_s: float) -> None:
        super().__init__(
            f"the session of unit {unit!r} expired: idle for {idle_s:.0f} s, over its time-to-live of "
            f"{ttl_s:g} s; POST /rank starts a new one"
        )
        self.unit = unit


class RateLimited(SessionError):
    def __init__(self, unit: str, retry_after_s: float, rate: float) -> None:
        super().__init__(
            f"too much feedback from unit {unit!r}: over {rate:g} per second; retry in {retry_after_s:.2f} s"
        )
        self.unit, self.retry_after_s = unit, retry_after_s


class Session:
    """One unit's session: the items it interacted with and their ratings (oldest first), the user vector
    fitted to them and the version it was fitted under, and its rate-limit bucket.

    Items are kept as ids, not catalogue rows, so a session refits under a new version of the model.
    """

    __slots__ = ("_items", "_ratings", "last_seen", "refilled", "tokens", "version", "w")

    def __init__(self, now: float, burst: float) -> None:
        self._items = array("q")
        self._ratings = array("f")
        self.w: np.ndarray | None = None  # None: the prior mean (no interactions yet)
        self.version: str | None = None
        self.last_seen = now
        self.tokens, self.refilled = float(burst), now

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> np.ndarray:
        return np.frombuffer(self._items, np.int64).copy() if self._items else np.empty(0, np.int64)

    @property
    def ratings(self) -> np.ndarray:
        return np.frombuffer(self._ratings, np.float32).astype(np.float64) if self._ratings else np.empty(0)

    def record(self, item: int, rating: float, max_interactions: int) -> None:
        """Add one interaction; rating an item again replaces the earlier rating. Past
        ``max_interactions`` the oldest interaction is forgotten."""
        item = int(item)
        if item in self._items:
            at = self._items.index(item)
            del self._items[at]
            del self._ratings[at]
        self._items.append(item)
        self._ratings.append(float(rating))
        if len(self._items) > max_interactions:
            del self._items[0]
            del self._ratings[0]


class SessionStore:
    """Sessions by unit, in least-recently-used order, at most ``max_sessions`` of them.

    A session idle for more than ``ttl_s`` seconds is expired: ``get`` refuses it (and drops it),
    ``open`` replaces it with a fresh one, and an LRU eviction takes expired ones first (they are
    the least recently used). Each session's feedback passes a token bucket of ``burst`` tokens
    refilled at ``rate`` per second. ``lock`` serialises every change; callers that read a
    session and act on it hold it.
    """

    def __init__(
        self,
        max_sessions: int = 100_000,
        ttl_s: float = 1800.0,
        rate: float = 5.0,
        burst: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be a whole number >= 1, got {max_sessions!r}")
        for name, value in (("ttl_s", ttl_s), ("rate", rate)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (isinstance(burst, int | float) and math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")
        self.max_sessions, self.ttl_s = max_sessions, float(ttl_s)
        self.rate, self.burst = float(rate), float(burst)
        self.clock = clock
        self.lock = threading.RLock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.started = self.evicted = self.expired = self.limited = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, unit: object) -> bool:
        return unit in self._sessions

    def open(self, unit: str) -> tuple[Session, bool]:
        """The unit's live session, or a new one (``True``) if it has none or it expired."""
        with self.lock:
            now = self.clock()
            session = self._sessions.get(unit)
            if session is not None and now - session.last_seen > self.ttl_s:
                del self._sessions[unit]
                self.expired += 1
                session = None
            if session is not None:
                session.last_seen = now
                self._sessions.move_to_end(unit)
                return session, False
            while len(self._sessions) >= self.max_sessions:
                _, oldest = self._sessions.popitem(last=False)
                if now - oldest.last_seen > self.ttl_s:
                    self.expired += 1
                else:
                    self.evicted += 1
            session = self._sessions[unit] = Session(now, self.burst)
            self.started += 1
            return session, True

    def get(self, unit: str) -> Session:
        """The unit's live session; :class:`UnknownSession` or :class:`SessionExpired` otherwise."""
        with self.lock:
            session = self._sessions.get(unit)
            if session is None:
                raise UnknownSession(unit)
            idle = self.clock() - session.last_seen
            if idle > self.ttl_s:
                del self._sessions[unit]
                self.expired += 1
                raise SessionExpired(unit, idle, self.ttl_s)
            return session

    def admit(self, unit: str, session: Session) -> None:
        """Take a token from the session's bucket, or raise :class:`RateLimited` (changing nothing)."""
        with self.lock:
            now = self.clock()
            session.tokens = min(self.burst, session.tokens + (now - session.refilled) * self.rate)
            session.refilled = now
            if session.tokens < 1.0:
                self.limited += 1
                raise RateLimited(unit, (1.0 - session.tokens) / self.rate, self.rate)
            session.tokens -= 1.0

    def touch(self, unit: str, session: Session) -> None:
        """Mark the session used now (it moves to the most recently used end)."""
        with self.lock:
            session.last_seen = self.clock()
            if unit in self._sessions:
                self._sessions.move_to_end(unit)

    def sweep(self) -> int:
        """Drop every expired session now; how many were dropped. LRU order is last-use order, so
        the expired ones are at the front."""
        with self.lock:
            now, dropped = self.clock(), 0
            while self._sessions:
                unit, oldest = next(iter(self._sessions.items()))
                if now - oldest.last_seen <= self.ttl_s:
                    break
                del self._sessions[unit]
                dropped += 1
            self.expired += dropped
            return dropped

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {
                "live": len(self._sessions),
                "started": self.started,
                "evicted": self.evicted,
                "expired": self.expired,
                "rate_limited": self.limited,
            }
