"""The loop's online stage: a candidate that passed the offline gate meets live traffic before it
serves everyone, and the rollout's decision promotes or rejects it.

Two places for that traffic, one engine per kind (``perennial.rollout.live``): ``rollout.on=replay``
replays each following window's rows through the engine, which checkpoints with the window;
``rollout.on=server`` writes a rollout request to the registry, which every server following it runs
on live traffic (``perennial.serve.rollouts``), and the loop reads the decision there at each window.
Updates wait while a rollout runs (the loop holds them while ``state.rollout`` is set).

The engine compares models of the task they were built for (``Rollout.for_task``): the stage sets
it from the candidate it hands over, or on resume from the pipeline stored with the candidate the
checkpoint names. A regressor's rollout compares squared errors, and its window rows carry the
``served_mse``, ``served_mae`` and ``served_r2`` of the values served (either arm's), where a
classifier's carry ``served_accuracy``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np

from perennial.data.window import Window
from perennial.evaluate.metrics import RegressionEvaluation
from perennial.learn.module import ClassifierModule
from perennial.loop.state import LoopState
from perennial.registry import Registry
from perennial.rollout.live import Rollout, json_safe
from perennial.tracking.base import RunLogger

# Requests per slice of a replayed window whose labels are recorded at once (see RolloutStage.feed).
FEEDBACK_SLICE = 50
# The loop's check of a newly promoted champion (loop.rollback): watch(state, version, replaced, t).
Watch = Callable[[LoopState, str, str, int], None]


class RolloutStage:
    """Hands gate-passed candidates to live traffic and applies the decisions, for one run."""

    def __init__(
        self,
        engine: Rollout,
        registry: Registry,
        load: Callable[[str], ClassifierModule],
        logger: RunLogger,
        seed: int,
    ) -> None:
        self.engine, self.registry, self.load, self.logger, self.seed = engine, registry, load, logger, seed
        # The candidate in the rollout and its module, kept between windows (loaded again on resume).
        self.candidate: tuple[str, ClassifierModule | None] = ("", None)

    def resume(self, state: LoopState) -> None:
        """Continue the rollout a resumed run's checkpoint holds, if any."""
        if state.rollout:
            candidate_id = state.rollout["candidate"]
            self.require(candidate_id, state.rollout.get("on", "replay"))
            # The candidate's task, as when it was handed over (the engine's settings and tests
            # depend on it): from the pipeline stored with it, without loading its weights.
            self.engine.for_task(self.stored_task(candidate_id))
            if state.rollout.get("on") != "server":
                self.engine.load_state_dict(state.rollout, self.salt(state.rollout["candidate"]))

    def step(
        self,
        t: int,
        window: Window,
        state: LoopState,
        champion: ClassifierModule,
        row: dict,
        watch: Watch,
        evidence: bool = True,
    ) -> ClassifierModule:
        """Window ``t`` while a rollout runs: replayed through it, or its live decision awaited."""
        if state.rollout.get("on") == "server":
            return self.await_decision(t, state, champion, row, watch)
        return self.replay(t, window, state, champion, row, watch, evidence)

    def stored_task(self, version: str) -> str:
        """The task of ``version`` as its stored input pipeline says (classification without one)."""
        pipeline = self.registry.load_extra(version, "pipeline") or {}
        return pipeline.get("task", "classification")

    def salt(self, candidate: str) -> str:
        """Each rollout shuffles units by its own salt: the run seed and the candidate."""
        return f"{self.seed}:{candidate}"

    def require(self, candidate: str, on: str = "replay") -> None:
        if self.engine is None or self.engine.on != on:
            raise ValueError(
                f"this run has {candidate} in a live rollout (rollout.on={on}); resume it with the same "
                "rollout= setting"
            )

    def hand_over(
        self,
        state: LoopState,
        candidate_id: str,
        candidate: ClassifierModule,
        t: int,
        defer: Callable[[Callable[[], object]], object] | None = None,
    ) -> None:
        """A candidate that passed the offline gate meets live traffic: the loop's replay of the next
        windows (rollout.on=replay), or every server following the registry (rollout.on=server), which
        the registry asks to run it. ``state`` says so at once (updates wait from this window on);
        the registry's request is written inside window ``t``'s transaction: now, or through
        ``defer`` (the loop's list of writes that commit with the window)."""
        self.engine.for_task(task_of(candidate))
        if self.engine.on == "server":
            state.rollout = {"on": "server", "id": None, "candidate": candidate_id, "windows": 0}
            write = partial(self.request, state, t)
            if defer is None:
                write()
            else:
                defer(write)
        else:
            self.engine.begin(state.champion, candidate_id, self.salt(candidate_id))
            state.rollout = self.engine.state_dict()
        self.candidate = (candidate_id, candidate)

    def request(self, state: LoopState, t: int) -> None:
        """Ask the servers to run the waiting candidate. While another rollout is open on them (a
        person's ``POST /rollout``), the candidate queues: the request is tried again each window."""
        try:
            record = self.registry.rollouts.request(
                self.engine.kind,
                state.champion,
                state.rollout["candidate"],
                dict(self.engine.settings),
                window=t,
                by="loop",
            )
        except ValueError as err:
            state.rollout["queued"] = str(err)
            return
        state.rollout["id"] = record.id
        state.rollout.pop("queued", None)

    def await_decision(
        self, t: int, state: LoopState, champion: ClassifierModule, row: dict, watch: Watch
    ) -> ClassifierModule:
        """The servers run the candidate on live traffic (rollout.on=server); at each window the loop
        reads where the rollout stands in the registry. Once decided (by a server), the loop goes on
        from its decision. After ``rollout.max_windows`` windows undecided, the loop decides it:
        ``rollout.on_timeout`` if a server ran it, failed if none ever started it (no live traffic saw
        the candidate, so it is never promoted on the offline gate alone). Runs inside the window's
        transaction; a server deciding at the same moment wins or loses cleanly (compare and set)."""
        from perennial.serve.rollouts import engine  # the server's reading of a rollout record

        rollouts = self.registry.rollouts
        candidate_id = state.rollout["candidate"]
        if state.rollout["id"] is None:
            self.request(state, t)
        if state.rollout["id"] is None:  # still queued behind another rollout
            state.rollout["windows"] += 1
            row |= {
                "rollout": self.engine.kind,
                "rollout_candidate": candidate_id,
                "rollout_decision": "queued",
            }
            if state.rollout["windows"] < self.engine.max_windows:
                return champion
            waited = f"rollout.max_windows={self.engine.max_windows}"
            reason = f"never rolled out in {waited} windows: {state.rollout['queued']}"
            self.registry.reject(candidate_id, window=t)
            self.registry.record_decision(candidate_id, t, "rejected", {"reason": reason})
            self.logger.log_decision(candidate_id, t, "rejected", {"reason": reason})
            row["rollout_decision"] = "failed"
            state.rollout, self.candidate = None, ("", None)
            return champion
        record = rollouts.get(state.rollout["id"])
        if record.is_open:
            state.rollout["windows"] += 1
            if state.rollout["windows"] >= self.engine.max_windows:
                summary = engine(record).summary() if record.state is not None else {}
                if record.status == "requested":
                    status = "failed"
                    reason = (
                        f"no server started it within rollout.max_windows={self.engine.max_windows} windows"
                    )
                else:
                    status = "promoted" if self.engine.on_timeout == "promote" else "rejected"
                    reason = f"undecided after {state.rollout['windows']} window(s): rollout.on_timeout"
                rollouts.decide(record.id, status, summary, reason, window=t)
                record = rollouts.get(record.id)
        evidence = record.evidence or (engine(record).summary() if record.state is not None else {})
        decision = {"promoted": "promote", "rejected": "reject"}.get(record.status, record.status)
        row |= {
            "rollout": record.kind,
            "rollout_candidate": candidate_id,
            "rollout_decision": "continue" if record.is_open else decision,
            "rollout_p_value": json_safe(evidence.get("p_value")),
        }
        if record.is_open:
            return champion
        numbers = {"reason": record.reason, "rollout": record.id, **evidence}
        label = {"promoted": "promoted", "stopped": "rollout_stopped"}.get(record.status, "rejected")
        self.logger.log_decision(candidate_id, t, label, numbers)
        state.rollout = None
        if record.status != "promoted":
            self.candidate = ("", None)
            return champion
        if self.candidate[0] != candidate_id:
            self.candidate = (candidate_id, self.load(candidate_id))
        module = self.candidate[1]
        self.candidate = ("", None)
        watch(state, candidate_id, state.champion, t)
        state.champion = candidate_id
        return module

    def feed(self, window: Window, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        """Serve the window's requests through the engine and record their labels, in time order and
        in slices of ``FEEDBACK_SLICE`` requests, as a server's feedback arrives: a canary advances
        its step, and any test decides, within the window, as on live traffic, not once a window.
        Once it decides, the rest of the window is answered by the model the decision keeps.
        Returns the class (a regressor's value) served for each request. An interleaving is fed the
        window at once (its lists are seeded per window)."""
        n = len(window)
        size = n if self.engine.kind == "interleave" else FEEDBACK_SLICE
        units = [f"{window.index}:{u}" for u in window.time]
        answered = []
        for start in range(0, n, max(size, 1)):
            part = slice(start, start + size)
            arms = self.engine.serve(units[part], ours[part], theirs[part])
            answered.append(self.engine.answer(arms, ours[part], theirs[part]))
            self.engine.feedback(arms, ours[part], theirs[part], window.y[part])  # labels after serving
            if (decision := self.engine.decide()) != "continue":
                rest = theirs if decision == "promote" else ours
                answered.append(self.engine.answers(rest[start + size :]))
                break
        if not answered:
            return np.empty(0, dtype=np.float64 if self.engine.task == "regression" else np.int64)
        return np.concatenate(answered)

    def served_scores(self, answered: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
        """The window row's scores of what the rollout served (either arm's answers): accuracy, or a
        regressor's mean squared and absolute errors and R² (None where undefined)."""
        if self.engine.task != "regression":
            return {"served_accuracy": float(np.mean(answered == y))}
        scores = RegressionEvaluation.of(y, answered)
        r2 = scores.r2 if np.isfinite(scores.r2) else None
        return {"served_mse": scores.mse, "served_mae": scores.mae, "served_r2": r2}

    def replay(
        self,
        t: int,
        window: Window,
        state: LoopState,
        champion: ClassifierModule,
        row: dict,
        watch: Watch,
        evidence: bool = True,
    ) -> ClassifierModule:
        """Serve window ``t`` through the rollout, feed back its labels, and promote or reject the
        candidate once the rollout decides. Runs inside the window's registry transaction. Without
        ``evidence`` (labels the screen quarantined) the window is served but the rollout is held:
        its decision ``held``, its state unchanged."""
        candidate_id = state.rollout["candidate"]
        self.require(candidate_id)
        if self.candidate[0] != candidate_id:
            self.candidate = (candidate_id, self.load(candidate_id))
        candidate = self.candidate[1]
        latency = {}
        for arm, model in ((state.champion, champion), (candidate_id, candidate)):
            start = time.perf_counter()
            latency[arm] = (model.predict_logits(window.x).float().numpy(), time.perf_counter() - start)
        (ours, _), (theirs, _) = latency.values()
        self.engine.timing({arm: seconds / max(len(window), 1) for arm, (_, seconds) in latency.items()})
        if not evidence:
            arms = self.engine.serve([f"{window.index}:{u}" for u in window.time], ours, theirs)
            answered = self.engine.answer(arms, ours, theirs)
            # Poisoned-looking labels would steer the live test as they would an update: the
            # window neither feeds it nor counts towards rollout.max_windows.
            row |= {
                **self.served_scores(answered, window.y),
                "rollout": self.engine.kind,
                "rollout_candidate": candidate_id,
                "rollout_decision": "held",
                "rollout_p_value": json_safe(self.engine.summary()).get("p_value"),
            }
            return champion
        answered = self.feed(window, ours, theirs)
        outcome = self.engine.end_window()
        summary = json_safe(self.engine.summary())
        row |= {
            **self.served_scores(answered, window.y),
            "rollout": self.engine.kind,
            "rollout_candidate": candidate_id,
            "rollout_decision": outcome,
            "rollout_p_value": summary.get("p_value"),
        }
        if outcome == "continue":
            state.rollout = self.engine.state_dict()
            return champion
        reason = f"{self.engine.kind} rollout over {self.engine.windows} window(s): {outcome}"
        if outcome == "promote":
            self.registry.promote(candidate_id, window=t, reason=reason)
            watch(state, candidate_id, state.champion, t)
            state.champion = candidate_id
        else:
            self.registry.reject(candidate_id, window=t)
        label, numbers = "promoted" if outcome == "promote" else "rejected", {"reason": reason, **summary}
        self.registry.record_decision(candidate_id, t, label, numbers)
        self.logger.log_decision(candidate_id, t, label, numbers)
        state.rollout = None
        self.candidate = ("", None)
        return candidate if outcome == "promote" else champion


def task_of(module: ClassifierModule | None) -> str:
    """What ``module`` answers: ``classification`` (classes) or ``regression`` (a value)."""
    return getattr(module, "task", "classification")
