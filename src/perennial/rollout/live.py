"""One rollout engine per kind (shadow, A/B, canary, interleave), used both by the loop's replay of a
window's traffic and by ``perennial-serve`` on live requests.

An engine routes units to arms (``route`` for one request, ``assign`` for many), records the labelled
outcomes of served requests (``record``: each row's arm, the class it was served, its label and, for a
shadow, the candidate's own answer) and decides: ``"promote"``, ``"reject"`` or ``"continue"``
(``decide``). Its whole state is plain JSON (``state_dict``), so a live rollout lives in the registry
(``perennial.registry.rollouts``) and continues where it was after a server restart, on any replica.

The loop drives an engine window by window: every model scores the window's rows (one row of class
scores per request), ``serve`` picks the answering arm, ``feedback`` records the labels once they
arrive, and ``end_window`` decides, applying ``on_timeout`` after ``max_windows`` windows.

With the setting ``task="regression"`` the models answer values (outputs of shape ``(requests, 1)``),
``record`` takes the values served and the numeric labels, and each labelled request's outcome is
its squared error, lower being better: the A/B test's two-sided mixture SPRT and the canary's
one-sided guard compare the arms' mean squared errors, the shadow's test the paired per-request
difference of squared errors, and a summary's ``effect`` is the candidate's mean squared error
minus the champion's. The mixture SPRT needs no bound on the outcome (a normal mixture over the
difference of two means, its variance plugged in); Welch's t test and CUPED in
``perennial.stats.tests`` would fit the values too, but are fixed-horizon tests, wrong for a test
looked at after every request. Interleaving ranks classes and refuses regression. The plug-in
variance assumes squared errors of finite variance: with normal errors, equal models were told apart
in 3% of 200 simulated A/B tests and 1.5% of canaries (tests/rollout/test_regression_rollouts.py);
with errors as heavy-tailed as Student's t with 3 degrees of freedom (squared errors of infinite
variance), 6% of 400 canaries rolled back an equal candidate.

>>> engine = make_rollout("ab", {"share": 0.5})
>>> engine.begin("v1", "v2", salt="doc")
>>> sorted(engine.shares().items())
[('v1', 0.5), ('v2', 0.5)]
>>> engine.route("user-1") == engine.route("user-1")  # sticky
True
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from perennial.rollout.ab import ABTest
from perennial.rollout.canary import CanaryRollout
from perennial.rollout.interleaving import Interleaving, credit, probabilistic, team_draft
from perennial.rollout.shadow import ShadowDeployment
from perennial.stats.sequential import MixtureSPRT

OUTCOMES = ("promote", "reject", "continue")
# Balanced interleaving is left out: with overlapping lists it credits one model more often under
# random clicks (docs/benchmarks.md), which a rollout would take for a preference.
INTERLEAVERS = {"team_draft": team_draft, "probabilistic": probabilistic}
WHERE = ("replay", "server")  # rollout.on: the loop's replay of each window, or live traffic
TASKS = ("classification", "regression")  # what the models answer: a class, or a value


class Rollout(ABC):
    """One candidate against the champion on traffic; ``begin`` starts a fresh one.

    ``settings`` holds the constructor's arguments as plain JSON: ``make_rollout(kind, settings)``
    builds the same engine again (a server from a rollout request in the registry). The task
    (``for_task``) is in it only for regression, so a classification rollout's settings, and the
    run config that describes its constructor's arguments, are what they always were."""

    kind: ClassVar[str]

    def __init__(self, max_windows: int = 5, on_timeout: str = "reject", on: str = "replay") -> None:
        if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
            raise ValueError(f"rollout.max_windows must be an integer >= 1, got {max_windows!r}")
        if on_timeout not in ("promote", "reject"):
            raise ValueError(f"rollout.on_timeout must be 'promote' or 'reject', got {on_timeout!r}")
        if on not in WHERE:
            raise ValueError(f"rollout.on must be one of {list(WHERE)}, got {on!r}")
        self.max_windows, self.on_timeout, self.on = max_windows, on_timeout, on
        self.settings: dict[str, Any] = {"max_windows": max_windows, "on_timeout": on_timeout}
        self.control = self.candidate = ""
        self.windows = 0
        self.latency: dict[str, float] = {}
        self.task = "classification"

    def for_task(self, task: str) -> Rollout:
        """Compare models of ``task`` (``classification`` or ``regression``): what they answer and
        what each labelled request's outcome is. Set before ``begin`` (the loop sets its stream's)."""
        if task not in TASKS:
            raise ValueError(f"rollout.task must be one of {list(TASKS)}, got {task!r}")
        self.task = task
        if task == "regression":
            self.settings["task"] = task
        else:
            self.settings.pop("task", None)
        return self

    @property
    def metric(self) -> str:
        """What each labelled request's outcome is: ``accuracy`` (1 right, 0 wrong) or
        ``squared_error`` (a regressor's, lower is better)."""
        return "squared_error" if self.task == "regression" else "accuracy"

    def begin(self, control: str, candidate: str, salt: str) -> None:
        if control == candidate:
            raise ValueError(f"the candidate {candidate} is already the champion")
        self.control, self.candidate, self.windows = control, candidate, 0
        self._begin(salt)

    @abstractmethod
    def _begin(self, salt: str) -> None: ...

    # ---- traffic ----------------------------------------------------------------------------------
    def route(self, unit: str | int) -> str:
        """The arm that answers one request of ``unit``."""
        return str(self.assign([unit])[0])

    def assign(self, units: Sequence) -> np.ndarray:
        """The arm answering each unit's requests (the champion unless the kind splits traffic)."""
        return np.full(len(units), self.control, dtype=object)

    def shares(self) -> dict[str, float]:
        """Each arm's share of the answered traffic now."""
        return {self.control: 1.0, self.candidate: 0.0}

    @property
    def shadows(self) -> list[str]:
        """Versions that also predict every request, off the record."""
        return []

    # ---- outcomes ---------------------------------------------------------------------------------
    def record(
        self,
        arms: Sequence[str],
        served: Sequence[int] | Sequence[float],
        labels: Sequence[int] | Sequence[float],
        shadow: Sequence[int | float | None] | None = None,
    ) -> None:
        """Labelled requests: each row's arm, the class (a regressor's value) it was served, its
        label, and (shadow) the candidate's answer, None where it was lost."""
        served, labels = np.asarray(served), np.asarray(labels)
        if self.task == "regression":
            served = _finite(served, "served values")
            labels = _finite(labels, "labels")
        self._record(
            np.asarray(arms, dtype=object),
            served,
            labels,
            None if shadow is None else list(shadow),
        )

    def outcomes(self, served: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each labelled request's outcome (``metric``): 1.0 where the class served was the label,
        else 0.0; for a regressor the squared error of the value served."""
        if self.task == "regression":
            return (served.astype(np.float64) - labels.astype(np.float64)) ** 2
        return (served == labels).astype(float)

    @abstractmethod
    def _record(
        self, arms: np.ndarray, served: np.ndarray, labels: np.ndarray, shadow: list | None
    ) -> None: ...

    @abstractmethod
    def decide(self) -> str:
        """``"promote"``, ``"reject"`` or ``"continue"``, from what has been recorded."""

    @abstractmethod
    def summary(self) -> dict:
        """JSON-able statistics for the registry, windows.csv and ``/status``."""

    # ---- the loop's window by window drive --------------------------------------------------------
    def serve(self, units: Sequence, champion: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """The arm that answers each request, given each model's class scores ``(requests, classes)``
        (a regressor's values, ``(requests, 1)``)."""
        return self.assign(units)

    def answer(self, arms: np.ndarray, champion: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """What is served for each request: the top class (a regressor's value) of the model whose
        arm answers it."""
        return np.where(arms == self.candidate, self.answers(candidate), self.answers(champion))

    def answers(self, outputs: np.ndarray) -> np.ndarray:
        """One model's answer to each request from its outputs: its top class, or its value."""
        return outputs[:, 0] if self.task == "regression" else outputs.argmax(1)

    def timing(self, seconds_per_request: Mapping[str, float]) -> None:
        """Each model's latency on this window's requests, for the rollouts that report it."""
        self.latency = dict(seconds_per_request)

    def feedback(self, arms: np.ndarray, champion: np.ndarray, candidate: np.ndarray, y: np.ndarray) -> None:
        """The window's labels are in: record how each model (outputs as in ``serve``) did."""
        shadow = self.answers(candidate).tolist() if self.shadows else None
        self.record(arms, self.answer(arms, champion, candidate), y, shadow)

    def end_window(self) -> str:
        """Counts the window and returns the outcome, applying ``on_timeout`` at the last window."""
        self.windows += 1
        outcome = self.decide()
        if outcome == "continue" and self.windows >= self.max_windows:
            return self.on_timeout
        return outcome

    # ---- checkpoints ------------------------------------------------------------------------------
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
    """The champion answers every request; the candidate predicts them too, off the record, and a
    paired sequential test on the same requests decides."""

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
        own = {"criterion": criterion, "margin": margin, "alpha": alpha, "min_requests": min_requests}
        ShadowDeployment("a", ["b"], **own)  # a bad setting fails at construction
        self._own = own
        self.settings |= own

    def _begin(self, salt: str) -> None:
        self.live = ShadowDeployment(self.control, [self.candidate], task=self.task, **self._own)

    @property
    def shadows(self) -> list[str]:
        return [self.candidate]

    def _record(self, arms, served, labels, shadow):
        if shadow is None:
            return
        paired = np.array([s is not None for s in shadow], dtype=bool)  # a lost shadow answer: no pair
        if not paired.any():
            return
        theirs = np.array([s for s in shadow if s is not None])
        predictions = {self.control: served[paired], self.candidate: theirs}
        self.live.record(predictions, self.latency, labels=labels[paired])

    def decide(self) -> str:
        return self.live.decision(self.candidate)

    def summary(self) -> dict:
        arms = self.live.summary()
        s = arms[self.candidate]
        if self.task == "regression":
            return json_safe(
                {
                    "kind": self.kind,
                    "metric": self.metric,
                    "p_value": s["p_value"],
                    "effect": s["effect"],  # the candidate's mean squared error minus the champion's
                    "share": 0.0,
                    "labelled": self.live.labelled,
                    "mse": s["mse"],
                    "champion_mse": arms[self.control]["mse"],
                    "rms_difference": s["rms_difference"],
                    "latency_ms": s["latency_ms"],
                }
            )
        return json_safe(
            {
                "kind": self.kind,
                "p_value": s["p_value"],
                "effect": s["effect"],
                "share": 0.0,
                "labelled": self.live.labelled,
                "accuracy": s["accuracy"],
                "agreement": s["agreement"],
                "latency_ms": s["latency_ms"],
            }
        )

    def _state(self) -> dict:
        live = self.live
        if self.task == "regression":
            counts = [live.requests, live.labelled, live.differences, live.squared_error, live.latency_sum]
        else:
            counts = [live.requests, live.labelled, live.agreements, live.correct, live.latency_sum]
        return {"test": live.tests[self.candidate].state_dict(), "counts": counts}

    def _load(self, state: dict) -> None:
        live = self.live
        live.tests[self.candidate].load_state_dict(state["test"])
        requests, labelled, answers, outcomes, latency = state["counts"]
        live.requests, live.labelled, live.latency_sum = requests, labelled, latency
        if self.task == "regression":
            live.differences, live.squared_error = answers, outcomes
        else:
            live.agreements, live.correct = answers, outcomes


class AB(Rollout):
    """The candidate answers ``share`` of the units (sticky by unit id); a sequential test on the
    served answers' accuracy (a regressor's squared error) decides.

    >>> ab = AB(share=0.5).for_task("regression")
    >>> ab.begin("v1", "v2", salt="doc")
    >>> rng = np.random.default_rng(0)
    >>> while ab.decide() == "continue":
    ...     arms = ab.assign(rng.integers(0, 10**9, 200))
    ...     y = rng.normal(50, 10, 200)
    ...     served = y + rng.normal(0, np.where(arms == "v2", 1.0, 1.2))  # v2 errs less
    ...     ab.record(arms, served, y)
    >>> ab.decide(), ab.summary()["effect"] < 0  # its mean squared error is lower
    ('promote', True)
    """

    kind = "ab"

    def __init__(self, share: float = 0.5, alpha: float = 0.05, **kw) -> None:
        super().__init__(**kw)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise ValueError(f"rollout.share must be in (0, 1), got {share!r}")
        MixtureSPRT(alpha)  # a bad alpha fails at construction
        self.share, self.alpha = float(share), alpha
        self.settings |= {"share": self.share, "alpha": alpha}

    def _begin(self, salt: str) -> None:
        self.live = ABTest(
            self.control,
            {self.candidate: self.share},
            salt=salt,
            alpha=self.alpha,
            higher_is_better=self.task != "regression",
        )

    def assign(self, units):
        return self.live.assign(units)

    def shares(self) -> dict[str, float]:
        return self.live.router.shares()

    def _record(self, arms, served, labels, shadow):
        self.live.record(arms, self.outcomes(served, labels))

    def decide(self) -> str:
        decision = self.live.decision()
        return {"continue": "continue", self.candidate: "promote"}.get(decision, "reject")

    def summary(self) -> dict:
        r = self.live.results()[self.candidate]
        metric = {"metric": self.metric} if self.task == "regression" else {}
        return json_safe(
            {
                "kind": self.kind,
                **metric,
                "p_value": r["p_holm"],
                "effect": r["effect"],
                "share": self.share,
                "n": r["n"],
            }
        )

    def _state(self) -> dict:
        return self.live.state_dict()

    def _load(self, state: dict) -> None:
        self.live.load_state_dict(state)


class Canary(Rollout):
    """The candidate's share grows step by step while a one-sided sequential test guards accuracy
    (a regressor's squared error); the first significant harm rolls it back (everyone on the
    champion at once)."""

    kind = "canary"

    def __init__(
        self,
        steps: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
        min_samples: int = 100,
        alpha: float = 0.05,
        holdout: float = 0.05,
        max_windows: int = 8,
        on_timeout: str = "promote",
        **kw,
    ) -> None:
        # No significant harm by the deadline: promote, as it passed the offline gate already.
        super().__init__(max_windows, on_timeout, **kw)
        own = {
            "steps": [float(s) for s in steps],
            "min_samples": min_samples,
            "alpha": alpha,
            "holdout": holdout,
        }
        CanaryRollout("a", "b", **own)  # a bad setting fails at construction
        self._own = own
        self.settings |= own

    def _begin(self, salt: str) -> None:
        guards = {self.metric: "lower" if self.task == "regression" else "higher"}
        self.live = CanaryRollout(self.control, self.candidate, salt=salt, guards=guards, **self._own)

    def assign(self, units):
        return self.live.assign(units)

    def shares(self) -> dict[str, float]:
        if self.live.status == "rolled_back":
            return {self.control: 1.0, self.candidate: 0.0}
        return self.live.router.shares()

    def _record(self, arms, served, labels, shadow):
        self.live.record(arms, {self.metric: self.outcomes(served, labels)})

    def decide(self) -> str:
        return {"completed": "promote", "rolled_back": "reject"}.get(self.live.status, "continue")

    def summary(self) -> dict:
        test = self.live.tests[self.metric]
        metric = {"metric": self.metric} if self.task == "regression" else {}
        return json_safe(
            {
                "kind": self.kind,
                **metric,
                "p_value": test.p_value,
                "effect": test.effect if test.n else None,
                "share": self.live.shares[self.live.step],
                "step": self.live.step,
                "status": self.live.status,
                "canary_units": self.live.canary_units,
                "units": self.live.units,
                "timeline": self.live.timeline,
            }
        )

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
    every window; significantly positive promotes, significantly negative rejects. On a server,
    ``/rank`` shows the lists (``interleave``) and ``/feedback`` clicks are credited (``clicks``);
    ``/predict`` traffic is answered by the champion meanwhile.

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
        self.interleaver = INTERLEAVERS[method]
        self._test_settings = {"alpha": alpha, "min_per_arm": min_impressions}
        MixtureSPRT(**self._test_settings)  # a bad setting fails at construction
        self.settings |= {
            "length": length,
            "method": method,
            "alpha": alpha,
            "min_impressions": min_impressions,
        }
        self._shown: list = []

    def for_task(self, task: str) -> Rollout:
        if task == "regression":
            raise ValueError(
                "rollout=interleave ranks classes, and a regressor answers a value: use rollout=shadow, "
                "ab or canary for a regression task"
            )
        return super().for_task(task)

    def _begin(self, salt: str) -> None:
        self.salt = salt
        self.test = MixtureSPRT(**self._test_settings)
        self.wins = {"a": 0, "b": 0, "tie": 0}

    # ---- live: one impression per /rank request -------------------------------------------------
    def interleave(self, key: str, ours: Sequence, theirs: Sequence) -> Interleaving:
        """The shown list for one request, seeded by the rollout and ``key`` (the request id), so that
        the log replays exactly. On a server the log keeps each position's team, and clicks are
        credited by the team-draft rule: a probabilistic rollout runs in the loop's replay only."""
        if self.method != "team_draft":
            raise ValueError(
                f"rollout.method={self.method!r} credits through the two rankings' probabilities, which "
                "the request log does not keep; run method=team_draft on a server"
            )
        rng = np.random.default_rng(zlib.crc32(f"{self.salt}:{key}".encode()))
        return team_draft(ours, theirs, rng, length=len(ours))

    def clicks(self, teams: Sequence[Sequence[str]], positions: Sequence[Sequence[int]]) -> None:
        """Clicked positions of impressions whose positions were placed by ``teams`` (versions)."""
        scores = []
        for placed, clicked in zip(teams, positions, strict=True):
            sides = tuple("a" if t == self.control else "b" for t in placed)
            shown = Interleaving("team_draft", tuple(range(len(placed))), ((), ()), teams=sides)
            scores.append(self._credit(shown, clicked))
        self._update(scores)

    # ---- replay: a window of requests, labels as clicks -----------------------------------------
    def serve(self, units, champion, candidate):
        k = min(self.length, champion.shape[1])
        ours = np.argsort(-champion, axis=1, kind="stable")[:, :k].tolist()
        theirs = np.argsort(-candidate, axis=1, kind="stable")[:, :k].tolist()
        # Seeded by the rollout and the window, so a resumed run shows the same lists.
        rng = np.random.default_rng(zlib.crc32(f"{self.salt}:{self.windows}".encode()))
        self._shown = [self.interleaver(a, b, rng, length=k) for a, b in zip(ours, theirs, strict=True)]
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
            scores.append(self._credit(shown, clicked))
        self._update(scores)

    def _record(self, arms, served, labels, shadow):
        pass  # labels of /predict requests say nothing about the rankings

    def _credit(self, shown: Interleaving, clicked: Sequence[int]) -> float:
        outcome = credit(shown, clicked)
        self.wins[outcome.winner] += 1
        return outcome.score

    def _update(self, scores: list[float]) -> None:
        # The control arm fixed at 0 makes each pair's variance that of the credit itself, which the
        # mixture SPRT then tests for a mean of zero (the two teams' credits are not independent).
        if scores:
            self.test.update(np.zeros(len(scores)), np.asarray(scores, dtype=float))

    def decide(self) -> str:
        if self.test.decision == "continue":
            return "continue"
        return "promote" if self.test.effect > 0 else "reject"

    def summary(self) -> dict:
        return json_safe(
            {
                "kind": self.kind,
                "p_value": self.test.p_value,
                "effect": self.test.effect if self.test.n else None,  # P(candidate wins) - P(champion wins)
                "share": 0.5,  # every request shows both; the candidate's class heads about half of them
                "method": self.method,
                "impressions": self.test.n,
                "wins_champion": self.wins["a"],
                "wins_candidate": self.wins["b"],
                "ties": self.wins["tie"],
            }
        )

    def _state(self) -> dict:
        return {"test": self.test.state_dict(), "wins": dict(self.wins)}

    def _load(self, state: dict) -> None:
        self.test.load_state_dict(state["test"])
        self.wins = {k: int(v) for k, v in state["wins"].items()}


ROLLOUTS: dict[str, type[Rollout]] = {"shadow": Shadow, "ab": AB, "canary": Canary, "interleave": Interleave}


def make_rollout(kind: str, settings: Mapping[str, Any] | None = None) -> Rollout:
    """An engine of ``kind`` (shadow, ab, canary or interleave) from its JSON ``settings``, ``task``
    among them (``Rollout.for_task``; classification when absent); an unknown kind or setting is a
    ValueError naming it.

    >>> make_rollout("canary", {"task": "regression", "min_samples": 50}).metric
    'squared_error'
    """
    if kind not in ROLLOUTS:
        raise ValueError(f"unknown rollout kind {kind!r}; expected one of {', '.join(ROLLOUTS)}")
    settings = dict(settings or {})
    arguments = {k: v for k, v in settings.items() if k != "task"}
    try:
        engine = ROLLOUTS[kind](**arguments)
    except TypeError as err:  # an unknown setting
        raise ValueError(f"bad {kind} rollout settings {settings}: {err}") from None
    return engine.for_task(settings.get("task", "classification"))


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    """A regression rollout's values as float64, refused unless finite: one NaN outcome would poison
    the tests' running moments for good."""
    out = np.asarray(values, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} must be finite numbers, got {out[~np.isfinite(out)][0]!r}")
    return out


def json_safe(tree: Any) -> Any:
    """NaN and infinities as None, tuples as lists, numpy scalars as Python's: JSON that reads back
    equal and that any client can read."""
    if isinstance(tree, Mapping):
        return {str(k): json_safe(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [json_safe(v) for v in tree]
    if isinstance(tree, np.generic):
        tree = tree.item()
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree
