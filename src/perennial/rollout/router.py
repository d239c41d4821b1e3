"""Sticky, deterministic traffic assignment: which arm (champion or a candidate) serves a unit."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

import numpy as np


def unit_position(salt: str, unit: str | int) -> float:
    """Where a unit falls in [0, 1): a hash of the experiment's salt and the unit id, so the same unit
    lands in the same place every time, and each experiment shuffles units independently.

    >>> unit_position("exp-1", "user-42") == unit_position("exp-1", "user-42")
    True
    >>> unit_position("exp-1", "user-42") == unit_position("exp-2", "user-42")
    False
    """
    digest = hashlib.blake2b(f"{salt}\x1f{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Router:
    """Assigns units (users, sessions, requests) to arms by a salted hash, with a weight per arm.

    The control arm (the champion) holds whatever the candidates do not. Each candidate owns a
    fixed slice of [0, 1) as wide as its ``capacity`` (the most traffic it may ever get; by default
    its first weight, or all of it for a single candidate) and serves the first ``weight`` of that
    slice; the rest of the slice belongs to control. So:

    - raising a candidate's weight (a canary's next step) moves units from control to that
      candidate only, never between candidates, and a unit that moved never moves back;
    - weights may only grow; ``remove`` ends a candidate (a rollback, or the end of a test) and its
      units return to control, the one way back.

    >>> r = Router({"v1": 0.95, "v1.1": 0.05}, control="v1", salt="canary-7")
    >>> before = {u: r.route(u) for u in range(1000)}
    >>> r.set_weights({"v1.1": 0.25})
    >>> after = {u: r.route(u) for u in range(1000)}
    >>> all(after[u] == "v1.1" for u in before if before[u] == "v1.1")  # canary units stay
    True
    >>> r.shares()
    {'v1': 0.75, 'v1.1': 0.25}
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        control: str,
        salt: str,
        capacity: Mapping[str, float] | None = None,
    ) -> None:
        if control not in weights:
            raise ValueError(f"control arm {control!r} is not among the arms {sorted(weights)}")
        self.control, self.salt = control, str(salt)
        self.candidates = [a for a in weights if a != control]
        _check_weights(weights)
        if capacity is None:
            single = len(self.candidates) == 1
            capacity = {a: 1.0 if single else float(weights[a]) for a in self.candidates}
        unknown = sorted(set(capacity) - set(self.candidates))
        if unknown:
            raise ValueError(f"capacity names unknown arm(s) {unknown}; candidates: {self.candidates}")
        self.capacity = {a: float(capacity.get(a, weights[a])) for a in self.candidates}
        if sum(self.capacity.values()) > 1 + 1e-9:
            raise ValueError(f"candidate capacities {self.capacity} sum to more than 1")
        self.weights = {a: float(weights[a]) for a in self.candidates}
        self._check_capacity(self.weights)

    # ---- assignment -----------------------------------------------------------------------
    def route(self, unit: str | int) -> str:
        position, start = unit_position(self.salt, unit), 0.0
        for arm in self.candidates:
            if start <= position < start + self.weights[arm]:
                return arm
            start += self.capacity[arm]
        return self.control

    def route_many(self, units: Iterable[str | int]) -> np.ndarray:
        return np.array([self.route(u) for u in units], dtype=object)

    def shares(self) -> dict[str, float]:
        """Each arm's share of traffic, control included."""
        return {self.control: 1 - sum(self.weights.values()), **self.weights}

    # ---- changes --------------------------------------------------------------------------
    def set_weights(self, weights: Mapping[str, float]) -> None:
        """New weights for some candidates; each may only grow, up to its capacity."""
        unknown = sorted(set(weights) - set(self.candidates))
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; candidates: {self.candidates}")
        new = {**self.weights, **{a: float(w) for a, w in weights.items()}}
        _check_weights({self.control: max(0.0, 1 - sum(new.values())), **new})
        shrinking = {a: (self.weights[a], new[a]) for a in weights if new[a] < self.weights[a]}
        if shrinking:
            raise ValueError(
                f"weights may only grow (units never return to an arm they left): {shrinking}; "
                "end a candidate with remove()"
            )
        self._check_capacity(new)
        self.weights = new

    def remove(self, arm: str) -> None:
        """End a candidate: its units return to control."""
        if arm not in self.weights:
            raise ValueError(f"unknown arm {arm!r}; candidates: {list(self.weights)}")
        self.weights[arm] = 0.0

    def _check_capacity(self, weights: Mapping[str, float]) -> None:
        over = {a: (w, self.capacity[a]) for a, w in weights.items() if w > self.capacity[a] + 1e-12}
        if over:
            raise ValueError(f"weight above the arm's capacity (weight, capacity): {over}")

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "control": self.control,
            "salt": self.salt,
            "candidates": self.candidates,
            "capacity": self.capacity,
            "weights": self.weights,
        }

    def load_state_dict(self, state: dict) -> None:
        self.control, self.salt = state["control"], state["salt"]
        self.candidates = list(state["candidates"])
        self.capacity, self.weights = dict(state["capacity"]), dict(state["weights"])


def _check_weights(weights: Mapping[str, float]) -> None:
    bad = {a: w for a, w in weights.items() if not (isinstance(w, int | float) and 0 <= w <= 1)}
    if bad:
        raise ValueError(f"arm weights must be numbers in [0, 1], got {bad}")
    total = sum(weights.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"arm weights must sum to 1, got {total:g} ({dict(weights)})")
