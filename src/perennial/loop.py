"""The continuous-deployment loop: for each window, serve, observe, trigger, update, gate, checkpoint.

It is glue: each step is a call into data, learn, triggers, evaluate or registry. The registry
rows of a window and the loop's own checkpoint commit in one SQLite transaction, so a run killed at
any point resumes from its last whole window with nothing lost and nothing trained twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from perennial.data.window import (
    DataError,
    Stream,
    Window,
    check_label_delay,
    holdout_split,
    label_arrivals,
    present_features,
    window_seed,
)
from perennial.evaluate.gate import GateDecision, PromotionGate, pooled
from perennial.evaluate.metrics import Evaluation, evaluate
from perennial.evaluate.screening import WindowScreen
from perennial.learn.fit import make_fabric
from perennial.learn.module import ClassifierModule
from perennial.learn.replay import ReplayBuffer
from perennial.learn.strategies import Regularizer
from perennial.learn.updater import StatelessUpdate, TrainedCandidate, Update
from perennial.registry import Registry, VersionRecord, load_tree, save_tree
from perennial.rollout.live import Rollout
from perennial.tracking import RunHistory, RunLogger
from perennial.triggers.base import Firing, Observation, Trigger

CHECKPOINT_KEY = "loop"


@dataclass(frozen=True)
class LoopSettings:
    """``warmup_windows`` train v1; each window keeps ``holdout_fraction`` of its rows unseen by
    training, for the gate and the accuracy matrix; ``initial_epochs`` trains v1 from scratch.
    ``head``: ``grow`` gives a model outputs for the classes seen so far and widens them when new
    ones arrive; ``full`` gives every model an output for each of the stream's classes from v1."""

    warmup_windows: int = 3
    holdout_fraction: float = 0.2
    initial_epochs: int = 20
    seed: int = 0
    head: str = "grow"

    def __post_init__(self) -> None:
        if self.warmup_windows < 1:
            raise ValueError(f"loop.warmup_windows must be >= 1, got {self.warmup_windows}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"loop.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.head not in ("grow", "full"):
            raise ValueError(f"loop.head must be 'grow' or 'full', got {self.head!r}")


@dataclass(frozen=True)
class Challenger:
    """Model iteration: another architecture's line. At every ``every``-th update a model that
    ``build`` makes is also retrained from scratch on all history, a new major version, and weighed
    against the champion by the same gate; if it wins, fine-tunes continue its line."""

    build: Callable[..., ClassifierModule]
    name: str = "challenger"
    every: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"challenger.every must be an update count >= 1, got {self.every!r}")

    def make(self, **schema) -> ClassifierModule:
        module = self.build(**schema) if schema else self.build()
        module.architecture = "challenger"
        return module


@dataclass(frozen=True)
class Split:
    """A window cut once, by a seeded permutation, into rows to train on and rows held out."""

    train: tuple[np.ndarray, np.ndarray]
    holdout: tuple[np.ndarray, np.ndarray]


class ContinuousDeployment:
    """Runs a stream through serve -> trigger -> update -> gate -> promote, one window at a time."""

    def __init__(
        self,
        stream: Stream,
        build: Callable[[], ClassifierModule],
        update: Update,
        trigger: Trigger,
        gate: PromotionGate,
        buffer: ReplayBuffer | None,
        registry: Registry,
        run_dir: str | Path,
        settings: LoopSettings = LoopSettings(),
        trainer: Mapping | None = None,
        config: dict | None = None,
        progress: bool = True,
        regularizers: Sequence[Regularizer] = (),
        rollout: Rollout | None = None,
        screen: WindowScreen | None = None,
        logger: RunLogger | None = None,
        challenger: Challenger | None = None,
    ) -> None:
        self.stream, self.build, self.update, self.trigger, self.gate = stream, build, update, trigger, gate
        self.buffer, self.registry, self.settings = buffer, registry, settings
        self.run_dir = Path(run_dir)
        self.trainer = dict(trainer or {})
        make_fabric(self.trainer)  # a setting that cannot run fails now, not at the first update
        self.config = config or {}
        self.progress = progress
        self.regularizers = list(regularizers)
        self.rollout = rollout
        self.screen = screen
        self.logger = logger if logger is not None else RunLogger()  # the base logs nothing
        self.challenger = challenger
        if challenger is not None and rollout is not None:
            raise ValueError(
                f"a challenger line is decided by the offline gate; rollout={rollout.kind} would leave "
                "two candidates waiting on live traffic: use rollout=none with challenger.model"
            )
        self._candidate: tuple[str, ClassifierModule | None] = ("", None)
        if any(r.needs_logits for r in self.regularizers) and buffer is None:
            names = ", ".join(r.name for r in self.regularizers if r.needs_logits)
            raise ValueError(f"strategy {names} replays stored logits and needs a buffer (strategy.buffer)")
        self.windows: list[Window] = stream.windows()
        # The feature columns the stream has, and those every row of each window carries: columns
        # only grow, at the end (present_features).
        self.width = math.prod(self.windows[0].x.shape[1:]) if self.windows else 0
        self.present = [present_features(w.x) for w in self.windows]
        self._splits: dict[int, Split] = {}
        self._reference_cache: tuple[tuple, np.ndarray] = ((), np.empty(0))
        self._trusted: tuple[np.ndarray, np.ndarray] | None = None
        self.label_delay = check_label_delay(getattr(stream, "label_delay", 0))
        # Which windows' labels land at each step; without a delay, each window's own.
        self.arrivals = label_arrivals(self.windows, settings.warmup_windows, self.label_delay)
        if self.label_delay and rollout is not None:
            raise ValueError(
                f"rollout={rollout.kind} decides from labels on the traffic it serves; with "
                f"data.label_delay={self.label_delay!r} use rollout=none"
            )
        self._served: tuple[str, ClassifierModule | None] = ("", None)  # a past champion, for late labels
        self.trusted_rows()  # a trusted-set file that cannot be used fails now, naming itself
        if len(self.windows) <= settings.warmup_windows:
            raise DataError(
                f"stream {stream.name!r} has {len(self.windows)} non-empty windows; the loop needs more "
                f"than loop.warmup_windows={settings.warmup_windows} (use smaller windows or fewer warm-ups)"
            )

    # ---- data -------------------------------------------------------------------------------
    def split(self, index: int) -> Split:
        if index not in self._splits:
            w = self.windows[index]
            train, hold = holdout_split(len(w), index, self.settings.holdout_fraction, self.settings.seed)
            self._splits[index] = Split((w.x[train], w.y[train]), (w.x[hold], w.y[hold]))
        return self._splits[index]

    def train_splits(self, upto: int, skip: Sequence[int] = ()) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Training rows of every window up to ``upto``, except ``skip`` (quarantined windows)."""
        return {i: self.split(i).train for i in range(upto + 1) if i not in set(skip)}

    def reference_rows(self, positions: Sequence[int], max_rows: int) -> np.ndarray:
        """Training rows of the windows at ``positions``, at most ``max_rows`` of them, drawn without
        replacement by a generator seeded with the run seed and the windows, so a resumed run and an
        uninterrupted one test against the same rows."""
        key = (tuple(positions), max_rows)
        if self._reference_cache[0] != key:
            parts = [self.split(i).train[0] for i in positions]
            x = np.concatenate(parts) if parts else self.windows[0].x[:0]
            if len(x) > max_rows:
                rng = np.random.default_rng([self.settings.seed, *positions])
                x = x[np.sort(rng.choice(len(x), max_rows, replace=False))]
            self._reference_cache = (key, x)
        return self._reference_cache[1]

    def trusted_rows(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The gate's trusted reference set: the warm-up windows' held-out rows, or the user's file."""
        source = getattr(self.gate, "trusted", None)
        if source is None:
            return None
        if self._trusted is None:
            if source == "warmup":
                parts = [self.split(i).holdout for i in range(self.settings.warmup_windows)]
                self._trusted = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
            else:
                self._trusted = load_trusted(source, self.stream)
        return self._trusted

    # ---- schema ------------------------------------------------------------------------------
    def columns(self, w: int) -> int | None:
        """The leading feature columns every row of window ``w`` carries, as a model's
        ``n_features``: None when that is all of the stream's."""
        return None if self.present[w] >= self.width else self.present[w]

    def schema_of(self, windows: Sequence[int]) -> dict[str, int]:
        """How far the stream's schema has grown by the newest of ``windows``: its feature columns,
        and the classes (ids below ``classes``) their labels hold."""
        return {
            "features": self.present[windows[-1]],
            "classes": max(int(self.windows[w].y.max(initial=0)) + 1 for w in windows),
        }

    def schema_change(self, state: dict) -> Firing | None:
        """A firing when labelled windows waiting for an update bring feature columns or classes
        that no earlier window had; it names them."""
        seen, reasons = dict(state["schema"]), []
        for w in state["pending"]:
            now = self.schema_of([w])
            if now["features"] > seen["features"]:
                names = getattr(self.stream, "feature_names", None) or range(now["features"])
                new = [str(c) for c in list(names)[seen["features"] : now["features"]]]
                reasons.append(f"window {w} brings new feature columns {', '.join(new)}")
            if now["classes"] > seen["classes"]:
                new = [str(c) for c in self.stream.classes[seen["classes"] : now["classes"]]]
                reasons.append(f"window {w} brings new classes {', '.join(new)}")
            seen = {k: max(seen[k], now[k]) for k in seen}
        state["schema"] = seen
        return Firing("schema", "; ".join(reasons)) if reasons else None

    def reads(self, module: ClassifierModule, present: int) -> bool:
        """Whether rows that carry ``present`` leading columns carry all those ``module`` reads."""
        return present >= (module.n_features or self.width)

    def readable(self, windows: Sequence[int], module: ClassifierModule) -> list[int]:
        """Those of ``windows`` whose rows carry every column ``module`` reads."""
        return [w for w in windows if self.reads(module, self.present[w])]

    def as_read_by(self, x: np.ndarray, module: ClassifierModule) -> np.ndarray:
        """``x`` without the columns ``module`` does not read (those that appeared after it), for the
        checks that work on the champion's inputs."""
        return x if module.n_features is None else x[:, : module.n_features]

    def on_holdouts(self, module: ClassifierModule, windows: list[int]) -> Evaluation | None:
        return pooled([evaluate(module, *self.split(i).holdout) for i in windows])

    # ---- models -----------------------------------------------------------------------------
    def load(self, version: str) -> ClassifierModule:
        schema = dict(self.registry.load_extra(version, "schema") or {})  # narrower, or a challenger
        if schema.pop("architecture", None) == "challenger":
            if self.challenger is None:
                raise ValueError(f"{version} is of a challenger line: run with the same challenger.model")
            module = self.challenger.make(**schema)
        else:
            module = self.build(**schema) if schema else self.build()
        module.load_state_dict(self.registry.load_weights(version))
        module.optimizer_state = self.registry.load_extra(version, "optimizer")
        module.strategy_state = self.registry.load_extra(version, "strategy") or {}
        return module

    def register(
        self,
        cand: TrainedCandidate,
        parent: str | None,
        window: int,
        firing: Firing,
        fresh: Evaluation | None,
    ) -> VersionRecord:
        """Store a candidate; ``fresh`` is its score on held-out rows of the data it was trained for."""
        scores = {}
        if fresh:  # the size of the held-out set lets a performance trigger test a drop against it
            scores = {k: v for k, v in fresh.scores().items() if k != "n"} | {"n_holdout": fresh.n}
        record = VersionRecord(
            id=self.registry.next_id(cand.kind, parent),
            parent=parent,
            kind=cand.kind,
            status="candidate",
            trained_on_windows=cand.trained_on_windows,
            n_samples=cand.n_samples,
            train_seconds=cand.train_seconds,
            config=self.config,
            metrics={**scores, "n_replayed": cand.n_replayed, "samples_processed": cand.samples_processed},
            trigger=firing.to_dict(),
            created_window=window,
        )
        extras = {"optimizer": cand.optimizer_state}
        if cand.module.schema:
            extras["schema"] = cand.module.schema
        if (preprocessing := getattr(self.stream, "preprocessing", None)) is not None:
            extras["preprocessing"] = preprocessing  # how raw rows become this version's inputs
        if cand.module.strategy_state:
            extras["strategy"] = cand.module.strategy_state
        if cand.kind == "stateful" and self.buffer is not None:
            extras["buffer"] = self.buffer.state_dict()
        weights = {k: v.detach().cpu() for k, v in cand.module.state_dict().items()}
        return self.registry.add(record, weights, extras)

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        state = self.registry.get_state(CHECKPOINT_KEY)
        if state is not None and not resume:
            raise RuntimeError(
                f"{self.registry.root} already holds a run; pass resume=true to continue it, "
                "or start a new run directory"
            )
        if state is None:
            state = self.start()
        else:
            self.check_same_config(state)
        champion = self.load(state["champion"])
        static = self.load(state["static"])
        self.trigger.load_state_dict(state["trigger"])
        if self.screen is not None:
            self.screen.load_state_dict(state["screen"])
        if state.get("rollout"):
            self._require_rollout(state["rollout"]["candidate"])
            self.rollout.load_state_dict(state["rollout"], self.rollout_salt(state["rollout"]["candidate"]))
        if self.buffer is not None and state["buffer_file"]:
            self.buffer.load_state_dict(load_tree(self.run_dir / "checkpoint" / state["buffer_file"]))

        # The logger catches up with what the run has committed; it is closed however the run ends.
        self.logger.start(RunHistory.of(self.run_dir, self.registry, state))
        with self.logger, self.progress_bar() as bar:
            task = bar.add_task(
                "windows", total=len(self.windows), completed=state["next_window"], champion=state["champion"]
            )
            for t in range(state["next_window"], len(self.windows)):
                champion = self.step(t, state, champion, static)
                # Only once the step has committed, and a window only once its labels are in (at
                # once without a delay): its scores are what loggers are for.
                for row in labelled_rows(state["rows"], self.arrivals.get(t, [])):
                    self.logger.log_window(row)
                self.prune_checkpoints(state)
                bar.update(task, advance=1, champion=state["champion"])
        return state

    def start(self) -> dict:
        """Train v1 on the warm-up windows, make it champion, and write the first checkpoint."""
        warm = list(range(self.settings.warmup_windows))
        initial = StatelessUpdate(
            epochs=self.settings.initial_epochs,
            batch_size=self.update.batch_size,
            lr=self.update.lr,
            weight_decay=self.update.weight_decay,
            class_weight=self.update.class_weight,
        )
        seed = window_seed(self.settings.seed, warm[-1])
        splits = self.train_splits(warm[-1])
        cand = initial.run(
            self.build,
            None,
            splits,
            warm,
            None,
            seed,
            self.trainer,
            self.regularizers,
            n_features=self.columns(warm[-1]),
            grow_head=self.settings.head == "grow",
        )
        for i in warm:
            self.feed_buffer(i, cand.module)
        if self.screen is not None:  # the warm-up windows, as v1 sees them, are the first reference
            for i in warm:
                x, y = self.split(i).train
                probabilities = cand.module.predict_logits(x).softmax(1).numpy()
                self.screen.accept(self.as_read_by(x, cand.module), y, probabilities)
        state = {
            "next_window": warm[-1] + 1,
            "champion": "",
            "static": "",
            "pending": [],
            "rows": [],
            "rollout": None,
            "quarantined": [],
            "schema": self.schema_of(warm),
            "compute": {"train_seconds": cand.train_seconds, "samples_processed": cand.samples_processed},
            "config": self.config,
        }
        with self.registry.transaction():
            first = Firing("initial", "first model, trained on the warm-up windows")
            v1 = self.register(cand, None, warm[-1], first, self.on_holdouts(cand.module, warm))
            self.registry.promote(v1.id, window=warm[-1], reason="first model")
            self.registry.record_decision(v1.id, warm[-1], "promoted", {"reason": "first model"})
            state |= {"champion": v1.id, "static": v1.id}
            self.checkpoint(state, warm[-1])
        return state

    def step(
        self, t: int, state: dict, champion: ClassifierModule, static: ClassifierModule
    ) -> ClassifierModule:
        # 1. The champion serves window t. Its accuracy, and everything that needs labels, waits for
        # them: with data.label_delay they land windows later (at once without a delay).
        if not self.reads(champion, self.present[t]):
            raise DataError(
                f"window {t} ({self.windows[t].label}) lacks feature columns that champion "
                f"{state['champion']} reads: columns may appear mid-stream (after the others), not vanish"
            )
        row = self.window_row(t, state)
        # 2. Labels arrive; the triggers observe the windows they label, and may fire.
        observed = self.land_labels(t, row, state, champion, static)
        rolling = bool(state.get("rollout"))
        # New columns or classes in the labelled data fire an update of their own (once a live
        # rollout, which holds updates back, is decided: a quarantined window does not decide it).
        schema = None if rolling else self.schema_change(state)
        firing = schema or (self.trigger.fires() if observed else None)
        test = firing.to_dict() if firing else (self.trigger.last_test() if observed else {})
        row |= {
            "trigger": firing.name if firing else "",
            "trigger_reason": firing.reason if firing else "",
            "trigger_statistic": _finite(test.get("statistic")),
            "trigger_p_value": _finite(test.get("p_value")),
        }
        if rolling:
            # The candidate meets this window's traffic (labels at once: rollouts refuse a delay);
            # its outcome commits with the window, and updates wait until it is decided.
            evidence = not row["screen"].startswith("quarantined")
            with self.registry.transaction():
                champion = self.rollout_window(t, self.windows[t], state, champion, row, evidence)
                state["rows"].append(row)
                self.checkpoint(state, t)
            return champion
        if firing is None:
            with self.registry.transaction():
                state["rows"].append(row)
                self.checkpoint(state, t)
            return champion

        # 3. An update makes a candidate from the labelled windows since the last one.
        pending = list(state["pending"])
        update = self.update.choose(self.registry.versions())  # a hybrid picks per update
        newest = self.columns(pending[-1])
        if firing.name == "schema" and newest != champion.n_features:
            # Fine-tuning cannot give a model new inputs: a new major version is trained from scratch.
            update = update.retrain()
        stateful = update.kind == "stateful"
        cand = update.run(
            self.build,
            champion if stateful else None,
            self.train_splits(pending[-1], _quarantined(state)),
            pending,
            self.buffer,
            window_seed(self.settings.seed, t),
            self.trainer,
            self.regularizers,
            n_features=champion.n_features if stateful else newest,
            grow_head=self.settings.head == "grow",
        )
        for i in pending:
            self.feed_buffer(i, cand.module)
        # 4. The gate compares candidate and champion on fresh held-out rows and on earlier windows.
        decision, fresh = self.judge(cand.module, champion, pending, _quarantined(state))
        rival = self.challenge(t, state, pending, newest, cand if decision.promote else None, champion)
        self.trigger.reset()
        state["pending"] = []
        for trained in (cand, rival[0] if rival else None):
            if trained is not None:
                state["compute"]["train_seconds"] += trained.train_seconds
                state["compute"]["samples_processed"] += trained.samples_processed
        with self.registry.transaction():
            record = self.register(cand, state["champion"] if stateful else None, t, firing, fresh)
            self.logger.log_version(record)
            label = decision.label
            if decision.promote and self.rollout is not None:
                # Passed offline; live traffic decides, from the next window on.
                label = "rollout"
                self.rollout.begin(state["champion"], record.id, self.rollout_salt(record.id))
                state["rollout"] = self.rollout.state_dict()
                self._candidate = (record.id, cand.module)
            elif decision.promote:
                self.registry.promote(record.id, window=t, reason=decision.reason)
            else:
                self.registry.reject(record.id, window=t)
            numbers = {"reason": decision.reason, **decision.numbers}
            self.registry.record_decision(record.id, t, label, numbers)
            self.logger.log_decision(record.id, t, label, numbers)
            row |= {
                "candidate": record.id,
                "decision": label,
                "fresh_diff": decision.numbers.get("fresh_diff"),
                "fresh_lower_bound": decision.numbers.get("fresh_lower_bound"),
                "p_value": decision.numbers.get("p_value"),
                "gate_min_detectable_drop": decision.numbers.get("min_detectable_drop"),
            }
            if label == "promoted":
                state["champion"] = record.id
                champion = cand.module
            if rival is not None:
                champion = self.decide_challenger(t, state, *rival, row, champion)
            state["rows"].append(row)
            self.checkpoint(state, t)
        return champion

    def challenge(
        self,
        t: int,
        state: dict,
        pending: list[int],
        newest: int | None,
        promoted: TrainedCandidate | None,
        champion: ClassifierModule,
    ) -> tuple[TrainedCandidate, GateDecision, Evaluation] | None:
        """When due, the challenger architecture retrained on all history, and the gate's decision
        against the champion this window leaves (the fresh candidate, if it is promoted offline)."""
        if self.challenger is None or self.rollout is not None:
            return None
        # The champion line's versions so far: v1 and the earlier candidates, so n at the n-th update.
        updates = sum(1 for v in self.registry.versions() if v.trigger and v.trigger["name"] != "challenger")
        if updates % self.challenger.every:
            return None
        rival = self.update.retrain().run(
            self.challenger.make,
            None,
            self.train_splits(pending[-1], _quarantined(state)),
            pending,
            None,
            window_seed(self.settings.seed, t),
            self.trainer,
            self.regularizers,
            n_features=newest,
            grow_head=self.settings.head == "grow",
        )
        opponent = promoted.module if promoted is not None else champion
        decision, fresh = self.judge(rival.module, opponent, pending, _quarantined(state))
        diff = decision.numbers.get("fresh_diff")
        if decision.promote and not (diff is not None and diff > 0):
            # Passing the gate means "not worse"; a line of another architecture replaces the
            # champion's only when it is better on the fresh rows.
            shown = "n/a" if diff is None else f"{diff:+.3f}"
            reason = f"passes the gate but does not beat the champion on fresh rows (diff {shown})"
            decision = GateDecision(False, reason, decision.numbers)
        return rival, decision, fresh

    def decide_challenger(
        self,
        t: int,
        state: dict,
        rival: TrainedCandidate,
        decision: GateDecision,
        fresh: Evaluation,
        row: dict,
        champion: ClassifierModule,
    ) -> ClassifierModule:
        """Register the challenger's version and promote or reject it; inside the window's transaction."""
        reason = f"model iteration: {self.challenger.name} retrained on all history"
        firing = Firing("challenger", reason, extra={"model": self.challenger.name})
        record = self.register(rival, None, t, firing, fresh)
        self.logger.log_version(record)
        if decision.promote:
            self.registry.promote(record.id, window=t, reason=f"challenger: {decision.reason}")
            state["champion"] = record.id
        else:
            self.registry.reject(record.id, window=t)
        numbers = {"reason": decision.reason, **decision.numbers}
        self.registry.record_decision(record.id, t, decision.label, numbers)
        self.logger.log_decision(record.id, t, decision.label, numbers)
        row |= {"challenger": record.id, "challenger_decision": decision.label}
        return rival.module if decision.promote else champion

    def land_labels(
        self, t: int, row: dict, state: dict, champion: ClassifierModule, static: ClassifierModule
    ) -> bool:
        """The labels that land at step ``t`` (window ``t``'s own without a delay) score the windows
        they belong to and go to the triggers; returns whether the triggers observed any. A screened
        window whose labels look poisoned is set aside: no trigger, update, buffer or gate sees it."""
        observed = False
        for w in self.arrivals.get(t, []):
            labelled = row if w == t else next(r for r in reversed(state["rows"]) if r["window"] == w)
            served, probabilities = self.label(labelled, w, champion, state["champion"], static)
            x, y = self.as_read_by(self.windows[w].x, champion), self.windows[w].y
            screened = self.screen.screen(x, y, probabilities) if self.screen is not None else None
            if screened is not None and screened.quarantine:
                labelled["screen"] = f"quarantined: {screened.reason}"
                evidence = {"window": w, "flagged": screened.flagged, "reason": screened.reason}
                state["quarantined"] = [*state.get("quarantined", []), _json_safe(evidence | screened.checks)]
                continue
            if screened is not None:
                self.screen.accept(x, y, probabilities)
                if screened.flagged:
                    labelled["screen"] = f"accepted: {screened.reason}"
            champion_record = self.registry.get(state["champion"])
            self.trigger.update(
                Observation(
                    replace(self.windows[w], x=x),
                    served.scores(),
                    champion_record.n_samples,
                    position=w,
                    champion=champion,
                    champion_metrics=champion_record.metrics,
                    champion_windows=tuple(champion_record.trained_on_windows),
                    probabilities=probabilities,
                    reference=lambda positions, rows: self.as_read_by(
                        self.reference_rows(positions, rows), champion
                    ),
                )
            )
            observed = True
            state["pending"].append(w)
        return observed

    def xy(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        return self.windows[w].x, self.windows[w].y

    def label(
        self, row: dict, w: int, champion: ClassifierModule, champion_id: str, static: ClassifierModule
    ) -> tuple[Evaluation, np.ndarray]:
        """Window ``w``'s labels are in: score the model that served it (named in its row) and the
        never-updated v1 on them, into the row; returns the served scores and the current champion's
        class probabilities on the window."""
        server = champion
        if row["champion"] != champion_id:  # labels that land late find another champion serving
            if self._served[0] != row["champion"]:
                self._served = (row["champion"], self.load(row["champion"]))
            server = self._served[1]
        x, y = self.xy(w)
        served, static_eval = evaluate(server, x, y), evaluate(static, x, y)
        row |= {
            "served_accuracy": served.accuracy,
            "static_accuracy": static_eval.accuracy,
            "served_balanced_accuracy": _finite(served.value("balanced_accuracy")),
            "served_f1": served.f1,
            "served_loss": served.loss,
        }
        # The champion's probabilities: those of the scoring above when it served the window itself.
        probabilities = served.probs if server is champion else champion.predict_logits(x).softmax(1).numpy()
        return served, probabilities

    def window_row(self, t: int, state: dict) -> dict:
        """Window ``t``'s row of windows.csv, with every column at its empty value; the scores stay
        empty until its labels arrive."""
        window = self.windows[t]
        return {
            "window": t,
            "start": str(window.start),
            "end": str(window.end),
            "n": len(window),
            "served_accuracy": None,
            "static_accuracy": None,
            "served_balanced_accuracy": None,
            "served_f1": None,
            "served_loss": None,
            "champion": state["champion"],
            "trigger": "",
            "trigger_reason": "",
            "trigger_statistic": None,
            "trigger_p_value": None,
            "candidate": "",
            "decision": "",
            "fresh_diff": float("nan"),
            "fresh_lower_bound": float("nan"),
            "p_value": float("nan"),
            "gate_min_detectable_drop": float("nan"),
            "rollout": "",
            "rollout_candidate": "",
            "rollout_decision": "",
            "rollout_p_value": None,
            "screen": "",
            "challenger": "",
            "challenger_decision": "",
        }

    # ---- online evaluation ------------------------------------------------------------------
    def rollout_salt(self, candidate: str) -> str:
        """Each rollout shuffles units by its own salt: the run seed and the candidate."""
        return f"{self.settings.seed}:{candidate}"

    def _require_rollout(self, candidate: str) -> None:
        if self.rollout is None:
            raise ValueError(
                f"this run has {candidate} in a live rollout; resume it with the same rollout= setting"
            )

    def rollout_window(
        self,
        t: int,
        window: Window,
        state: dict,
        champion: ClassifierModule,
        row: dict,
        evidence: bool = True,
    ) -> ClassifierModule:
        """Serve window ``t`` through the rollout, feed back its labels, and promote or reject the
        candidate once the rollout decides. Runs inside the window's registry transaction. Without
        ``evidence`` (labels the screen quarantined) the window is served but the rollout is held:
        its decision ``held``, its state unchanged."""
        candidate_id = state["rollout"]["candidate"]
        self._require_rollout(candidate_id)
        if self._candidate[0] != candidate_id:
            self._candidate = (candidate_id, self.load(candidate_id))
        candidate = self._candidate[1]
        latency = {}
        for arm, model in ((state["champion"], champion), (candidate_id, candidate)):
            start = time.perf_counter()
            latency[arm] = (model.predict_logits(window.x).float().numpy(), time.perf_counter() - start)
        (ours, _), (theirs, _) = latency.values()
        self.rollout.timing({arm: seconds / max(len(window), 1) for arm, (_, seconds) in latency.items()})
        arms = self.rollout.serve([f"{window.index}:{u}" for u in window.time], ours, theirs)
        answered = self.rollout.answer(arms, ours, theirs)
        if not evidence:
            # Poisoned-looking labels would steer the live test as they would an update: the
            # window neither feeds it nor counts towards rollout.max_windows.
            row |= {
                "served_accuracy": float(np.mean(answered == window.y)),
                "rollout": self.rollout.kind,
                "rollout_candidate": candidate_id,
                "rollout_decision": "held",
                "rollout_p_value": _json_safe(self.rollout.summary()).get("p_value"),
            }
            return champion
        self.rollout.feedback(arms, ours, theirs, window.y)  # labels arrive only after serving
        outcome = self.rollout.end_window()
        summary = _json_safe(self.rollout.summary())
        row |= {
            "served_accuracy": float(np.mean(answered == window.y)),
            "rollout": self.rollout.kind,
            "rollout_candidate": candidate_id,
            "rollout_decision": outcome,
            "rollout_p_value": summary.get("p_value"),
        }
        if outcome == "continue":
            state["rollout"] = self.rollout.state_dict()
            return champion
        reason = f"{self.rollout.kind} rollout over {self.rollout.windows} window(s): {outcome}"
        if outcome == "promote":
            self.registry.promote(candidate_id, window=t, reason=reason)
            state["champion"] = candidate_id
        else:
            self.registry.reject(candidate_id, window=t)
        label, numbers = "promoted" if outcome == "promote" else "rejected", {"reason": reason, **summary}
        self.registry.record_decision(candidate_id, t, label, numbers)
        self.logger.log_decision(candidate_id, t, label, numbers)
        state["rollout"] = None
        self._candidate = ("", None)
        return candidate if outcome == "promote" else champion

    def judge(
        self,
        candidate: ClassifierModule,
        champion: ClassifierModule,
        pending: list[int],
        quarantined: Sequence[int] = (),
    ) -> tuple[GateDecision, Evaluation]:
        """The gate's decision, and the candidate's score on the fresh rows."""
        fresh = self.split(pending[-1]).holdout
        earlier = [w for w in range(pending[0]) if w not in set(quarantined)]
        past = self.gate.past(self.readable(earlier, candidate))  # older windows may lack new columns
        fresh_candidate = evaluate(candidate, *fresh)
        trusted = self.trusted_rows()
        if trusted is not None and not self.reads(candidate, present_features(trusted[0])):
            trusted = None  # rows from before the newest columns cannot test a model that reads them
        decision = self.gate.decide(
            fresh_candidate,
            evaluate(champion, *fresh),
            self.on_holdouts(candidate, past),
            self.on_holdouts(champion, past),
            evaluate(candidate, *trusted) if trusted else None,
            evaluate(champion, *trusted) if trusted else None,
        )
        return decision, fresh_candidate

    def feed_buffer(self, index: int, trained: ClassifierModule) -> None:
        """Offer a window's training rows to the buffer, with the logits of the model that just
        learned them when a strategy replays logits (DER++)."""
        if self.buffer is None:
            return
        x, y = self.split(index).train
        logits = None
        if any(r.needs_logits for r in self.regularizers):
            logits = trained.predict_logits(x).numpy()
        self.buffer.update(x, y, window=index, logits=logits)

    # ---- checkpoints ------------------------------------------------------------------------
    def checkpoint(self, state: dict, t: int) -> None:
        """Record progress up to window ``t``; called inside the window's registry transaction."""
        state["next_window"] = t + 1
        state["trigger"] = self.trigger.state_dict()
        if self.screen is not None:
            state["screen"] = self.screen.state_dict()
        state["buffer_file"] = ""
        if self.buffer is not None:
            # Written before the transaction commits; a crash leaves an unreferenced file, never a
            # referenced file that is missing.
            name = f"buffer-{t:05d}.safetensors"
            (self.run_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
            save_tree(self.run_dir / "checkpoint" / name, self.buffer.state_dict())
            state["buffer_file"] = name
        self.registry.set_state(CHECKPOINT_KEY, state)

    def prune_checkpoints(self, state: dict) -> None:
        """Delete buffer files older than the committed one; only after the commit, never inside it."""
        for old in (self.run_dir / "checkpoint").glob("buffer-*.safetensors"):
            if old.name < state["buffer_file"]:
                old.unlink(missing_ok=True)

    def check_same_config(self, state: dict) -> None:
        saved, now = _flatten(state.get("config", {})), _flatten(self.config)
        changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        if changed:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
            raise ValueError(f"cannot resume with a different config ({detail}); start a new run instead")

    def progress_bar(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("champion {task.fields[champion]}"),
            TimeRemainingColumn(),
            disable=not self.progress,
        )

    # ---- results ----------------------------------------------------------------------------
    def accuracy_matrix(self) -> pd.DataFrame:
        """Accuracy of every version (rows, in creation order) on every window's held-out rows."""
        rows = {}
        for record in self.registry.versions():
            module = self.load(record.id)
            readable = set(self.readable(range(len(self.windows)), module))
            rows[record.id] = [
                evaluate(module, *self.split(j).holdout).accuracy if j in readable else float("nan")
                for j in range(len(self.windows))
            ]
        return pd.DataFrame.from_dict(rows, orient="index", columns=range(len(self.windows)))


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _json_safe(tree):
    """NaN as None, all the way down, so a rollout's statistics read back from JSON unchanged."""
    if isinstance(tree, dict):
        return {k: _json_safe(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_json_safe(v) for v in tree]
    if isinstance(tree, float) and math.isnan(tree):
        return None
    return tree


def load_trusted(path: str | Path, stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """A trusted reference set from a ``.npz`` file with arrays ``x`` (rows shaped like the stream's
    features) and ``y`` (class ids); read without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"gate.trusted file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name in ("x", "y")}
    except (ValueError, OSError) as err:
        raise DataError(f"gate.trusted file {path} is not a readable .npz without pickles: {err}") from None
    if set(arrays) != {"x", "y"}:
        raise DataError(f"gate.trusted file {path} needs arrays 'x' and 'y'; it has {sorted(arrays)}")
    x, y = arrays["x"].astype(np.float32), arrays["y"]
    shape = tuple(stream.feature_shape)
    if x.shape[1:] != shape or len(x) != len(y) or not len(y):
        raise DataError(
            f"gate.trusted file {path}: x has shape {x.shape} and y {y.shape}; "
            f"expected (n, {', '.join(map(str, shape))}) and (n,) with n > 0"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(stream.classes):
        raise DataError(f"gate.trusted file {path}: y must be class ids in 0..{len(stream.classes) - 1}")
    if not np.isfinite(x).all():
        raise DataError(f"gate.trusted file {path}: x holds NaN or infinite values")
    return x, y.astype(np.int64)


def labelled_rows(rows: Sequence[dict], windows: Sequence[int]) -> list[dict]:
    """The rows of ``windows``, in window order."""
    wanted = set(windows)
    return sorted((r for r in rows if r["window"] in wanted), key=lambda r: r["window"])


def _quarantined(state: dict) -> list[int]:
    """Windows the screen set aside (a run from before screening has none)."""
    return [q["window"] for q in state.get("quarantined", [])]


def _finite(value: float | None) -> float | None:
    """A trigger's statistic for the window's row; None (an empty cell) when it computed none, so rows
    compare equal after a checkpoint's JSON round trip, which NaN never does."""
    return None if value is None or math.isnan(value) else float(value)
