"""Rollouts as the loop drives them: after the offline gate passes a candidate, it meets the next
windows' traffic in shadow, in an A/B test or as a canary, and the outcome decides promotion.

Each window's rows are the requests: every model predicts them, the rollout picks which answer is
served, and once the labels arrive (the feedback) it records per-request correctness and decides:
``"promote"``, ``"reject"`` or ``"continue"``. A rollout still undecided after ``max_windows``
windows ends with ``on_timeout``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from perennial.rollout.ab import ABTest
from perennial.rollout.canary import CanaryRollout
from perennial.rollout.shadow import ShadowDeployment

OUTCOMES = ("promote", "reject", "continue")


class Rollout(ABC):
    """One candidate against the champion on live traffic; ``begin`` starts a fresh one."""

    kind: ClassVar[str]

    def __init__(self, max_windows: int = 5, on_timeout: str = "reject") -> None:
        if max_windows < 1:
            raise ValueError(f"rollout.max_windows must be >= 1, got {max_windows}")
        if on_timeout not in ("promote", "reject"):
            raise ValueError(f"rollout.on_timeout must be 'promote' or 'reject', got {on_timeout!r}")
        self.max_windows, self.on_timeout = max_windows, on_timeout
        self.windows = 0
        self.latency: dict[str, float] = {}

    def begin(self, control: str, candidate: str, salt: str) -> None:
        self.control, self.candidate, self.windows = control, candidate, 0
        self._begin(salt)

    @abstractmethod
    def _begin(self, salt: str) -> None: ...

    @abstractmethod
    def serve(self, units: Sequence, champion: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """The arm that answers each request."""

    def timing(self, seconds_per_request: Mapping[str, float]) -> None:
        """Each model's latency on this window's requests, for the rollouts that report it."""
        self.latency = dict(seconds_per_request)

    @abstractmethod
    def feedback(self, arms: np.ndarray, champion: np.ndarray, candidate: np.ndarray, y: np.ndarray) -> None:
        """The labels are in: record how each model did on the requests it saw."""

    @abstractmethod
    def _decide(self) -> str: ...

    @abstractmethod
    def summary(self) -> dict:
        """JSON-able statistics for the registry and windows.csv."""

    def end_window(self) -> str:
        """Counts the window and returns the outcome, applying ``on_timeout`` at the last window."""
        self.windows += 1
        outcome = self._decide()
        if outcome == "continue" and self.windows >= self.max_windows:
            return self.on_timeout
        return outcome

    @abstractmethod
    def _state(self) -> dict: ...

    @abstractmethod
    def _load(self, state: dict) -> None: ...

    def state_dict(self) -> dict:
        where = {"control": self.control, "candidate": self.candidate, "windows": self.windows}
        return {**where, **self._state()}

    def load_state_dict(self, state: dict, salt: str) -> None:
        self.begin(state["control"], state["candidate"], salt)
        self.windows = state["windows"]
        self._load(state)


class Shadow(Rollout):
    """The champion answers every request; the candidate predicts them too, off the record."""

    kind = "shadow"

    def __init__(
        self,
        criterion: str = "not_worse",
        margin: float = 0.01,
        alpha: float = 0.05,
        min_requests: int = 500,
        **kw,
    ) -> None:
        super().__init__(**kw)
        self.settings = {"criterion": criterion, "margin": margin, "alpha": alpha}
        self.settings["min_requests"] = min_requests
        ShadowDeployment("a", ["b"], **self.settings)  # a bad setting fails at construction

    def _begin(self, salt: str) -> None:
        self.live = ShadowDeployment(self.control, [self.candidate], **self.settings)

    def serve(self, units, champion, candidate):
        return np.full(len(champion), self.control, dtype=object)

    def feedback(self, arms, champion, candidate, y):
        predictions = {self.control: champion, self.candidate: candidate}
        self.live.record(predictions, self.latency, labels=y)

    def _decide(self) -> str:
        return self.live.decision(self.candidate)

    def summary(self) -> dict:
        s = self.live.summary()[self.candidate]
        return {"kind": self.kind, "p_value": s["p_value"], "effect": s["effect"], "share": 0.0, **_finite(s)}

    def _state(self) -> dict:
        live = self.live
        return {
            "test": live.tests[self.candidate].state_dict(),
            "counts": [live.requests, live.labelled, live.agreements, live.correct, live.latency_sum],
        }

    def _load(self, state: dict) -> None:
        live = self.live
        live.tests[self.candidate].load_state_dict(state["test"])
        live.requests, live.labelled, live.agreements, live.correct, live.latency_sum = state["counts"]


class AB(Rollout):
    """The candidate answers ``share`` of the units (sticky by unit id); a sequential test decides."""

    kind = "ab"

    def __init__(self, share: float = 0.5, alpha: float = 0.05, **kw) -> None:
        super().__init__(**kw)
        if not 0 < share < 1:
            raise ValueError(f"rollout.share must be in (0, 1), got {share}")
        self.share, self.alpha = share, alpha

    def _begin(self, salt: str) -> None:
        self.live = ABTest(self.control, {self.candidate: self.share}, salt=salt, alpha=self.alpha)

    def serve(self, units, champion, candidate):
        return self.live.assign(units)

    def feedback(self, arms, champion, candidate, y):
        served = np.where(arms == self.candidate, candidate, champion)
        self.live.record(arms, (served == y).astype(float))

    def _decide(self) -> str:
        decision = self.live.decision()
        return {"continue": "continue", self.candidate: "promote"}.get(decision, "reject")

    def summary(self) -> dict:
        r = self.live.results()[self.candidate]
        return {"kind": self.kind, "p_value": r["p_holm"], "effect": r["effect"], "share": self.share}

    def _state(self) -> dict:
        return self.live.state_dict()

    def _load(self, state: dict) -> None:
        self.live.load_state_dict(state)


class Canary(Rollout):
    """The candidate's share grows step by step while a one-sided sequential test guards accuracy;
    the first significant drop rolls it back."""

    kind = "canary"

    def __init__(
        self,
        steps: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
        min_samples: int = 100,
        alpha: float = 0.05,
        max_windows: int = 8,
        on_timeout: str = "promote",
    ) -> None:
        # No significant harm by the deadline: promote, as it passed the offline gate already.
        super().__init__(max_windows, on_timeout)
        self.settings = {"steps": list(steps), "min_samples": min_samples, "alpha": alpha}
        CanaryRollout("a", "b", **self.settings)  # a bad setting fails at construction

    def _begin(self, salt: str) -> None:
        self.live = CanaryRollout(self.control, self.candidate, salt=salt, **self.settings)

    def serve(self, units, champion, candidate):
        return self.live.assign(units)

    def feedback(self, arms, champion, candidate, y):
        served = np.where(arms == self.candidate, candidate, champion)
        self.live.record(arms, {"accuracy": (served == y).astype(float)})

    def _decide(self) -> str:
        return {"completed": "promote", "rolled_back": "reject"}.get(self.live.status, "continue")

    def summary(self) -> dict:
        test = self.live.tests["accuracy"]
        return {
            "kind": self.kind,
            "p_value": test.p_value,
            "effect": test.effect if test.n else None,
            "share": self.live.shares[self.live.step],
            "status": self.live.status,
            "canary_units": self.live.canary_units,
            "units": self.live.units,
            "timeline": self.live.timeline,
        }

    def _state(self) -> dict:
        return self.live.state_dict()

    def _load(self, state: dict) -> None:
        self.live.load_state_dict(state)


def _finite(summary: dict) -> dict:
    """The shadow's accuracy, agreement and latency, with NaN as None so it reads back from JSON equal."""
    keys = ("accuracy", "agreement", "latency_ms")
    return {k: None if summary[k] != summary[k] else summary[k] for k in keys}
