"""Rollouts as the loop drives them: after the offline gate passes a candidate, it meets the next
windows' traffic in shadow, in an A/B test, as a canary or interleaved, and the outcome decides
promotion.

Each window's rows are the requests: every model scores them (one row of class scores per
request), the rollout picks which answer is served, and once the labels arrive (the feedback) it
records how each model did and decides: ``"promote"``, ``"reject"`` or ``"continue"``. A rollout
still undecided after ``max_windows`` windows ends with ``on_timeout``.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from perennial.rollout.ab import ABTest
from perennial.rollout.canary import CanaryRollout
from perennial.rollout.interleaving import credit, probabilistic, team_draft
from perennial.rollout.shadow import ShadowDeployment
from perennial.stats.sequential import MixtureSPRT

OUTCOMES = ("promote", "reject", "continue")
# Balanced interleaving is left out: with overlapping lists it credits one model more often under
# random clicks (docs/benchmarks.md), which a rollout would take for a preference.
INTERLEAVERS = {"team_draft": team_draft, "probabilistic": probabilistic}


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
        """The arm that answers each request, given each model's class scores ``(requests, classes)``."""

    def answer(self, arms: np.ndarray, champion: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """The class served for each request: the top class of the model whose arm answers it."""
        return np.where(arms == self.candidate, candidate.argmax(1), champion.argmax(1))

    def timing(self, seconds_per_request: Mapping[str, float]) -> None:
        """Each model's latency on this window's requests, for the rollouts that report it."""
        self.latency = dict(seconds_per_request)

    @abstractmethod
    def feedback(self, arms: np.ndarray, champion: np.ndarray, candidate: np.ndarray, y: np.ndarray) -> None:
        """The labels are in: record how each model (class scores as in ``serve``) did on the
        requests it saw."""

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
        predictions = {self.control: champion.argmax(1), self.candidate: candidate.argmax(1)}
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
        self.live.record(arms, (self.answer(arms, champion, candidate) == y).astype(float))

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
        holdout: float = 0.05,
    ) -> None:
        # No significant harm by the deadline: promote, as it passed the offline gate already.
        super().__init__(max_windows, on_timeout)
        self.settings = {"steps": list(steps), "min_samples": min_samples, "alpha": alpha, "holdout": holdout}
        CanaryRollout("a", "b", **self.settings)  # a bad setting fails at construction

    def _begin(self, salt: str) -> None:
        self.live = CanaryRollout(self.control, self.candidate, salt=salt, **self.settings)

    def serve(self, units, champion, candidate):
        return self.live.assign(units)

    def feedback(self, arms, champion, candidate, y):
        self.live.record(arms, {"accuracy": (self.answer(arms, champion, candidate) == y).astype(float)})

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


class Interleave(Rollout):
    """Classifiers as rankers of labels: each request shows an interleaved list of both models' top
    classes (suggested tags, categories, next items), and its label, once it arrives, is the click,
    credited to the model that placed it. Every request compares the two models, so far fewer
    requests decide than in an A/B split where each sees one (Chapelle et al., TOIS 2012).

    The top of the shown list is the served answer. The per-request credit (+1 candidate wins, -1
    champion wins, 0 tie) is tested for a mean of zero with the mixture SPRT, safe to check after
    every window; significantly positive promotes, significantly negative rejects.

    >>> live = Interleave(length=2, min_impressions=50)
    >>> live.begin("v1", "v2", salt="doc")
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 400)
    >>> better = np.eye(3)[y] + rng.random((400, 3))       # usually ranks the label first
    >>> worse = rng.random((400, 3))                        # guesses
    >>> arms = live.serve(range(400), worse, better)
    >>> live.feedback(arms, worse, better, y)
    >>> live.end_window(), live.summary()["wins_candidate"] > live.summary()["wins_champion"]
    ('promote', True)
    """

    kind = "interleave"

    def __init__(
        self,
        length: int = 3,
        method: str = "team_draft",
        alpha: float = 0.05,
        min_impressions: int = 100,
        **kw,
    ) -> None:
        super().__init__(**kw)
        if isinstance(length, bool) or not isinstance(length, int) or length < 2:
            # One position shows one model's answer per request: an A/B test, not an interleaving.
            raise ValueError(f"rollout.length must be an integer >= 2, got {length!r}")
        if method == "balanced":
            raise ValueError(
                "rollout.method='balanced' is biased: with overlapping lists it credits one model more "
                f"often when users prefer neither; use one of {list(INTERLEAVERS)}"
            )
        if method not in INTERLEAVERS:
            raise ValueError(f"rollout.method must be one of {list(INTERLEAVERS)}, got {method!r}")
        if isinstance(min_impressions, bool) or not isinstance(min_impressions, int) or min_impressions < 2:
            raise ValueError(f"rollout.min_impressions must be an integer >= 2, got {min_impressions!r}")
        self.length, self.method = length, method
        self.interleave = INTERLEAVERS[method]
        self.settings = {"alpha": alpha, "min_per_arm": min_impressions}
        MixtureSPRT(**self.settings)  # a bad setting fails at construction
        self._shown: list = []

    def _begin(self, salt: str) -> None:
        self.salt = salt
        self.test = MixtureSPRT(**self.settings)
        self.wins = {"a": 0, "b": 0, "tie": 0}

    def serve(self, units, champion, candidate):
        k = min(self.length, champion.shape[1])
        ours = np.argsort(-champion, axis=1, kind="stable")[:, :k].tolist()
        theirs = np.argsort(-candidate, axis=1, kind="stable")[:, :k].tolist()
        # Seeded by the rollout and the window, so a resumed run shows the same lists.
        rng = np.random.default_rng(zlib.crc32(f"{self.salt}:{self.windows}".encode()))
        self._shown = [self.interleave(a, b, rng, length=k) for a, b in zip(ours, theirs, strict=True)]
        # The arm answering a request is the model whose class heads its list.
        first = [
            s.teams[0] if s.teams else ("a" if s.shown[0] == a[0] else "b")
            for s, a in zip(self._shown, ours, strict=True)
        ]
        return np.array([self.control if t == "a" else self.candidate for t in first], dtype=object)

    def answer(self, arms, champion, candidate):
        return np.array([s.shown[0] for s in self._shown])

    def feedback(self, arms, champion, candidate, y):
        if len(y) != len(self._shown):
            raise ValueError(f"feedback for {len(y)} requests, but {len(self._shown)} were served")
        scores = []
        for shown, label in zip(self._shown, np.asarray(y).tolist(), strict=True):
            clicked = [shown.shown.index(label)] if label in shown.shown else []
            outcome = credit(shown, clicked)
            self.wins[outcome.winner] += 1
            scores.append(outcome.score)
        # The control arm fixed at 0 makes each pair's variance that of the credit itself, which the
        # mixture SPRT then tests for a mean of zero (the two teams' credits are not independent).
        self.test.update(np.zeros(len(scores)), np.asarray(scores, dtype=float))

    def _decide(self) -> str:
        if self.test.decision == "continue":
            return "continue"
        return "promote" if self.test.effect > 0 else "reject"

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "p_value": self.test.p_value,
            "effect": self.test.effect if self.test.n else None,  # P(candidate wins) - P(champion wins)
            "share": 0.5,  # every request shows both; the candidate's class heads about half of them
            "method": self.method,
            "wins_champion": self.wins["a"],
            "wins_candidate": self.wins["b"],
            "ties": self.wins["tie"],
        }

    def _state(self) -> dict:
        return {"test": self.test.state_dict(), "wins": dict(self.wins)}

    def _load(self, state: dict) -> None:
        self.test.load_state_dict(state["test"])
        self.wins = {k: int(v) for k, v in state["wins"].items()}


def _finite(summary: dict) -> dict:
    """The shadow's accuracy, agreement and latency, with NaN as None so it reads back from JSON equal."""
    keys = ("accuracy", "agreement", "latency_ms")
    return {k: None if summary[k] != summary[k] else summary[k] for k in keys}
