"""The continuous-deployment loop: for each window, serve, observe, trigger, update, gate, checkpoint.

It is glue: each step is a call into data, learn, triggers, evaluate or registry. The registry
rows of a window and the loop's own checkpoint commit in one SQLite transaction, so a run killed at
any point resumes from its last whole window with nothing lost and nothing trained twice.

Windows come from the source as they become complete: ``run`` processes every window complete now
and returns (the nightly shape: the same command continues tomorrow), ``follow`` keeps polling,
and ``process`` takes windows pushed by the caller's own scheduler.
"""

from __future__ import annotations

import fcntl
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from perennial.data.pipeline import InputPipeline
from perennial.data.window import (
    DataError,
    Stream,
    Window,
    WindowFeed,
    check_label_delay,
    present_features,
    window_seed,
)
from perennial.evaluate.gate import GateDecision, PromotionGate, pooled
from perennial.evaluate.metrics import SCORE_COLUMNS, Evaluation, evaluate, score_columns
from perennial.evaluate.screening import WindowScreen
from perennial.evaluate.served import ServedComparison, compare_served, paired_sums, pooled_served
from perennial.learn.fit import make_fabric
from perennial.learn.module import ClassifierModule
from perennial.learn.replay import ClassBalancedBuffer, ReplayBuffer
from perennial.learn.strategies import Regularizer
from perennial.learn.updater import StatelessUpdate, TrainedCandidate, Update
from perennial.loop.result import RunResult
from perennial.loop.rollouts import RolloutStage
from perennial.loop.settings import Challenger, LoopSettings
from perennial.loop.state import CHECKPOINT_KEY, SOURCE_KEY, LoopState
from perennial.loop.windows import WindowData, load_trusted
from perennial.registry import CorruptVersion, Registry, VersionRecord, load_tree, save_tree
from perennial.rollout.live import Rollout, json_safe
from perennial.tracking import RunHistory, RunLogger
from perennial.triggers.base import Firing, Observation, Trigger

DEFAULT_SETTINGS = LoopSettings()
MATRIX_GROUP = 16  # versions whose modules are in memory at once while the accuracy matrix is made


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
        settings: LoopSettings = DEFAULT_SETTINGS,
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
        self.fresh = getattr(gate, "fresh", "holdout")  # which rows judge a candidate (PromotionGate)
        self.trainer = dict(trainer or {})
        make_fabric(self.trainer)  # a setting that cannot run fails now, not at the first update
        self.config = config or {}
        self.progress = progress
        self.regularizers = list(regularizers)
        self.rollout = rollout
        self.screen = screen
        self.logger = logger if logger is not None else RunLogger()  # the base logs nothing
        # A candidate the gate passes meets live traffic first (replayed, or on the servers).
        self.stage = (
            RolloutStage(rollout, registry, self.load, self.logger, settings.seed)
            if rollout is not None
            else None
        )
        self.challenger = challenger
        if challenger is not None and rollout is not None:
            raise ValueError(
                f"a challenger line is decided by the offline gate; rollout={rollout.kind} would leave "
                "two candidates waiting on live traffic: use rollout=none with challenger.model"
            )
        if challenger is not None and self.fresh == "next":
            raise ValueError(
                "a challenger line is weighed against the champion on the window both were trained "
                "for; run challenger.model with gate.fresh=holdout"
            )
        if any(r.needs_logits for r in self.regularizers) and buffer is None:
            names = ", ".join(r.name for r in self.regularizers if r.needs_logits)
            raise ValueError(f"strategy {names} replays stored logits and needs a buffer (strategy.buffer)")
        self.label_delay = check_label_delay(getattr(stream, "label_delay", 0))
        if self.label_delay and rollout is not None:
            raise ValueError(
                f"rollout={rollout.kind} decides from labels on the traffic it serves; with "
                f"data.label_delay={self.label_delay!r} use rollout=none"
            )
        self.check_task()
        self.data = WindowData(stream, settings.holdout_fraction, settings.seed)
        self._trusted: tuple[np.ndarray, np.ndarray] | None = None
        self.trusted_rows()  # a trusted-set file that cannot be used fails now, naming itself
        # Set when the run is opened (open): where it stands, and the models it serves with.
        self.state: LoopState | None = None
        self.champion: ClassifierModule | None = None
        self.static: ClassifierModule | None = None
        self._opened = False
        self._awaiting: tuple[str, ClassifierModule | None] = ("", None)  # judged on the next window
        self._served: tuple[str, ClassifierModule | None] = ("", None)  # a past champion, for late labels
        # Registry writes decided while a window is processed; they commit with its checkpoint.
        self._writes: list[Callable[[], object]] = []
        # The window rows a step changed (its own, and those whose labels landed): written with it.
        self._rows: dict[int, dict] = {}
        # Whether the source's state changed since it was last saved: it is saved only then.
        self._source_changed = True
        # Set (by a signal handler, another thread) to stop after the window being committed.
        self.stop = threading.Event()

    @property
    def task(self) -> str:
        return getattr(self.stream, "task", "classification")

    def check_task(self) -> None:
        """Refuse, before any training, a part that cannot serve the stream's task (a regressor has
        no classes to balance, screen or interleave)."""
        if hasattr(self.gate, "for_task"):
            self.gate.for_task(self.task)
        if self.task != "regression":
            return
        refusals = {
            "strategy=replay_balanced keeps equal room per class; use strategy=replay": isinstance(
                self.buffer, ClassBalancedBuffer
            ),
            "update.class_weight=balanced weighs classes; use update.class_weight=none": getattr(
                self.update, "class_weight", "none"
            )
            != "none",
            "screen=default screens labels with class probabilities; use screen=none": self.screen
            is not None,
            "rollout=interleave compares rankings; use rollout=ab, canary or shadow": self.rollout is not None
            and self.rollout.kind == "interleave",
        }
        for reason, refused in refusals.items():
            if refused:
                raise ValueError(f"a regression stream ({self.stream.name}) has no classes: {reason}")

    # ---- data -------------------------------------------------------------------------------
    def split(self, index: int):
        return self.data.split(index)

    def xy(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        return self.data.xy(w)

    def trusted_rows(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The gate's trusted reference set: the warm-up windows' held-out rows, or the user's file."""
        source = getattr(self.gate, "trusted", None)
        if source is None:
            return None
        if self._trusted is None and source != "warmup":
            self._trusted = load_trusted(source, self.stream)
        elif self._trusted is None and self.data.source.polled >= self.settings.warmup_windows:
            parts = [self.split(i).holdout for i in range(self.settings.warmup_windows)]
            self._trusted = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
        return self._trusted

    # ---- schema ------------------------------------------------------------------------------
    def columns(self, w: int) -> int | None:
        return self.data.columns(w)

    def schema_of(self, windows: Sequence[int]) -> dict[str, int]:
        """How far the stream's schema has grown by the newest of ``windows``: its feature columns,
        and the classes (ids below ``classes``) their labels hold."""
        if self.task == "regression":  # one output, whatever the target's values
            return {"features": self.data.present(windows[-1]), "classes": 1}
        return {
            "features": self.data.present(windows[-1]),
            "classes": max(int(self.data.labelled(w).y.max(initial=0)) + 1 for w in windows),
        }

    def schema_change(self, state: LoopState) -> Firing | None:
        """A firing when labelled windows waiting for an update bring feature columns or classes
        that no earlier window had; it names them."""
        seen, reasons = dict(state.schema), []
        for w in state.pending:
            now = self.schema_of([w])
            if now["features"] > seen["features"]:
                names = getattr(self.stream, "feature_names", None) or range(now["features"])
                new = [str(c) for c in list(names)[seen["features"] : now["features"]]]
                reasons.append(f"window {w} brings new feature columns {', '.join(new)}")
            if now["classes"] > seen["classes"]:
                new = [str(c) for c in self.stream.classes[seen["classes"] : now["classes"]]]
                reasons.append(f"window {w} brings new classes {', '.join(new)}")
            seen = {k: max(seen[k], now[k]) for k in seen}
        state.schema = seen
        return Firing("schema", "; ".join(reasons)) if reasons else None

    def reads(self, module: ClassifierModule, present: int) -> bool:
        """Whether rows that carry ``present`` leading columns carry all those ``module`` reads."""
        return present >= (module.n_features or self.data.width)

    def readable(self, windows: Sequence[int], module: ClassifierModule) -> list[int]:
        """Those of ``windows`` whose rows carry every column ``module`` reads."""
        return [w for w in windows if self.reads(module, self.data.present(w))]

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
        # How raw inputs become this version's inputs: the server builds a served model from the
        # registry alone. Read now, not when the loop is built: a growing source learns its schema
        # from its first window.
        extras["pipeline"] = InputPipeline.of_stream(self.stream).to_dict()
        if (preprocessing := getattr(self.stream, "preprocessing", None)) is not None:
            extras["preprocessing"] = preprocessing  # the table's encoding alone, as before the pipeline
        if cand.module.strategy_state:
            extras["strategy"] = cand.module.strategy_state
        if cand.kind == "stateful" and self.buffer is not None:
            extras["buffer"] = self.buffer.state_dict()
        weights = {k: v.detach().cpu() for k, v in cand.module.state_dict().items()}
        return self.registry.add(record, weights, extras)

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, resume: bool = False) -> RunResult:
        """Process every window that is complete now, commit, and return the run's result: the one
        command of a nightly schedule (run again tomorrow with ``resume``, it continues)."""
        with self.run_lock():
            self.open(resume)
            if self.state is not None:
                self.start_logger()
                with self.logger, self.progress_bar() as bar:
                    self._process(self._incoming(), bar)
            return self.result()

    def follow(self, poll_seconds: float, on_commit: Callable[[dict], object] | None = None) -> RunResult:
        """Keep processing windows as they become complete, polling the source every ``poll_seconds``,
        until ``stop`` is set (by SIGTERM or SIGINT in perennial-run): the window being committed
        finishes first. ``on_commit(result)`` runs after each poll that processed windows (the CLI
        refreshes summary.json, windows.csv and the plots)."""
        logging = False
        with self.run_lock(), self.logger, self.progress_bar() as bar:
            while not self.stop.is_set():
                self.open(resume=True)  # until v1 is trained, each poll tries again
                if self.state is not None and not logging:
                    self.start_logger()
                    logging = True
                processed = self._process(self._incoming(), bar) if self.state is not None else 0
                if processed and on_commit is not None:
                    on_commit(self.result())
                self.stop.wait(poll_seconds)
        return self.result()

    def process(self, windows: Iterable[Window]) -> RunResult:
        """Push ``windows`` (the next ones, in order) into a loop over a :class:`WindowFeed` and process
        every one that can be; for callers with their own scheduler. Windows the run has already
        processed (a new process pushing its history again) are taken as the history, not redone."""
        if not isinstance(self.stream, WindowFeed):
            raise TypeError(
                f"process() pushes windows into a WindowFeed source; this loop reads "
                f"{type(self.stream).__name__}, which it polls itself: call run() or follow()"
            )
        self.stream.push(*windows)
        return self.run(resume=True)

    @contextmanager
    def run_lock(self) -> Iterator[None]:
        """Hold the run directory for this process while it runs: two runs of one directory (a
        nightly job still going when the next starts) would process the same windows twice."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(
                    f"{self.run_dir} is being run by another process; wait for it to finish (or stop it) "
                    "and run again"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def open(self, resume: bool) -> None:
        """Load the run's checkpoint and models (once a process), or start the run: train v1 once the
        source has the warm-up windows. ``state`` stays None while it has fewer."""
        if self._opened and self.state is not None:
            return
        saved = self.registry.get_state(CHECKPOINT_KEY)
        if saved is not None and not resume and not self._opened:
            raise RuntimeError(
                f"{self.registry.root} already holds a run; pass resume=true to continue it, "
                "or start a new run directory"
            )
        self._opened = True
        if saved is None:
            self.state = self.start()
            if self.state is None:
                return
        else:
            self.state, legacy_rows = LoopState.from_dict(saved)
            self.check_same_config(self.state)
            if legacy_rows:  # a checkpoint from before the window_rows table: its rows move there
                with self.registry.transaction():
                    self.registry.put_window_rows(legacy_rows)
                    self.registry.set_state(CHECKPOINT_KEY, self.state.to_dict())
            if (source := self.registry.get_state(SOURCE_KEY)) is not None:
                self.stream.load_state_dict(source)
        state = self.state
        current = self.registry.champion()
        if current is not None and current != state.champion and not state.rollout:
            # A person promoted or rolled back between runs (perennial-registry): the registry is what
            # the server serves, so the loop serves, compares and fine-tunes from it too.
            state.champion, state.watch = current, None
        self.champion = self.load(state.champion)
        self.static = self.load(state.static)
        self.trigger.load_state_dict(state.trigger)
        if self.screen is not None:
            self.screen.load_state_dict(state.screen)
        if state.rollout:
            if self.stage is None:
                raise ValueError(
                    f"this run has {state.rollout['candidate']} in a live rollout; resume it with the same "
                    "rollout= setting"
                )
            self.stage.resume(state)
        if self.buffer is not None and state.buffer_file:
            self.buffer.load_state_dict(load_tree(self.run_dir / "checkpoint" / state.buffer_file))

    def start_logger(self) -> None:
        """The logger catches up with what the run has committed; the caller closes it (``with``)."""
        rows = [r for r in self.registry.window_rows() if r.get("n_labelled") is not None]
        history = {"config": self.state.config, "rows": rows}
        self.logger.start(RunHistory.of(self.run_dir, self.registry, history))

    def _incoming(self) -> Iterator[Window]:
        """The windows to process: those polled but not processed yet (a resumed run re-reads them),
        then each newly complete one."""
        for w in range(self.state.next_window, self.stream.polled):
            yield self.data[w]
        while new := self.stream.poll():
            self._source_changed = True
            for window in new:
                self.data.add(window)
                if window.index >= self.state.next_window:
                    yield window

    def _process(self, windows: Iterator[Window], bar: Progress) -> int:
        """Step through ``windows`` until they run out or ``stop`` is set; returns how many."""
        task = bar.add_task("windows", total=None, champion=self.state.champion)
        done = 0
        for window in windows:
            if window.index != self.state.next_window:
                raise DataError(
                    f"source {self.stream.name!r} gave window {window.index} where window "
                    f"{self.state.next_window} was due: windows must come in order, without gaps"
                )
            self.champion = self.step(window.index, self.state, self.champion, self.static)
            # Only once the step has committed, and a window only once its labels are in (at once
            # without a delay): its scores are what loggers are for.
            for w in sorted(self._landed):
                self.logger.log_window(self._rows[w])
            self.prune_checkpoints(self.state)
            done += 1
            bar.update(task, advance=1, champion=self.state.champion)
            if self.stop.is_set():
                break
        return done

    def result(self) -> RunResult:
        """The run as it stands: the checkpoint, every window's row, the guard's verdict, and the
        source's report on its input (what summary.json and windows.csv are made from), as a dict
        with typed properties (:class:`~perennial.loop.result.RunResult`)."""
        if self.state is None:
            data = {
                "started": False,
                "rows": [],
                "windows": self.stream.polled,
                "input": self.stream.input_report(),
            }
            return RunResult(data, registry=self.registry.root)
        data = self.state.to_dict() | {
            "started": True,
            "rows": self.registry.window_rows(),
            "guard_report": self.guard_report(self.state),
            "windows": self.stream.polled,
            "input": self.stream.input_report(),
        }
        return RunResult(data, registry=self.registry.root)

    def start(self) -> LoopState | None:
        """Train v1 on the warm-up windows, make it champion, and write the first checkpoint; None
        while the source has fewer windows (a finished history that never will is an error)."""
        if (serving := self.registry.champion()) is not None:
            return self.adopt(serving)
        warmup = self.settings.warmup_windows
        while self.stream.polled < warmup + 1 and (new := self.stream.poll()):
            for window in new:
                self.data.add(window)
        if self.stream.polled < warmup + int(not self.stream.growing):
            if not self.stream.growing:
                raise DataError(
                    f"stream {self.stream.name!r} has {self.stream.polled} non-empty windows; the loop "
                    f"needs more than loop.warmup_windows={warmup} (use smaller windows or fewer warm-ups)"
                )
            return None
        warm = list(range(warmup))
        self.check_ends(self.data[warm[-1]])  # before v1 is trained, not at the first window
        for w in warm:  # v1 learns from the warm-up windows' labels
            self.data.land(w)
        self._source_changed = True
        initial = StatelessUpdate(
            epochs=self.settings.initial_epochs,
            batch_size=self.update.batch_size,
            lr=self.update.lr,
            weight_decay=self.update.weight_decay,
            class_weight=self.update.class_weight,
        )
        seed = window_seed(self.settings.seed, warm[-1])
        splits = self.data.train_splits(warm[-1])
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
                probabilities = cand.module.predict_outputs(x)
                self.screen.accept(self.as_read_by(x, cand.module), y, probabilities)
        state = LoopState(
            next_window=warm[-1] + 1,
            champion="",
            static="",
            schema=self.schema_of(warm),
            config=self.config,
            compute={"train_seconds": cand.train_seconds, "samples_processed": cand.samples_processed},
        )
        self._rows = {}
        with self.registry.transaction():
            first = Firing("initial", "first model, trained on the warm-up windows")
            v1 = self.register(cand, None, warm[-1], first, self.on_holdouts(cand.module, warm))
            self.registry.promote(v1.id, window=warm[-1], reason="first model")
            self.registry.record_decision(v1.id, warm[-1], "promoted", {"reason": "first model"})
            state.champion = state.static = v1.id
            self.checkpoint(state, warm[-1])
        return state

    def adopt(self, version: str) -> LoopState:
        """Start the run from ``version``, the champion of a registry that already serves (a model
        trained elsewhere and exported, ``perennial-registry export``): it serves from window 0, and it
        is the never-updated baseline (``static``) the guard and the reports compare with."""
        module = self.load(version)
        width = int(np.prod(self.stream.feature_shape))
        state = LoopState(
            next_window=0,
            champion=version,
            static=version,
            schema={"features": module.n_features or width, "classes": self.stream.n_outputs},
            config=self.config,
        )
        self._rows = {}
        with self.registry.transaction():
            self.registry.record_decision(version, None, "adopted", {"reason": "the registry's champion"})
            self.checkpoint(state, -1)
        return state

    def follow_champion(self, state: LoopState, champion: ClassifierModule) -> ClassifierModule:
        """The registry's champion, if another process changed it (a person's promote or rollback,
        a server deciding a rollout): the loop serves, compares and fine-tunes from what serves. Not
        while this loop's own rollout runs: its decision is read where it is awaited."""
        current = self.registry.champion()
        if current is None or current == state.champion or state.rollout:
            return champion
        state.champion, state.watch = current, None
        return self.load(current)

    def check_ends(self, window: Window) -> None:
        """A label delay given as a duration needs windows that end at times."""
        if isinstance(self.label_delay, str) and not isinstance(window.end, pd.Timestamp | np.datetime64):
            raise DataError(
                f"data.label_delay={self.label_delay!r} is a duration, but stream windows end at row "
                f"positions ({window.end!r}), not times; give a number of windows"
            )

    def row_of(self, w: int) -> dict:
        """Window ``w``'s row, to change in this step: it is written when the step commits."""
        if w not in self._rows:
            row = self.registry.window_row(w)
            if row is None:
                raise RuntimeError(f"window {w} has no row in {self.registry.root}: the run is damaged")
            self._rows[w] = row
        return self._rows[w]

    def landing(self, t: int, state: LoopState) -> list[int]:
        """The windows whose labels land at step ``t``: ``data.label_delay`` windows after their own,
        or at the first window that ends ``label_delay`` (a duration) after theirs ends; without a
        delay, window ``t``'s own. Labels due after the newest window land in a later run."""
        delay, end = self.label_delay, self.data[t].end
        self.check_ends(self.data[t])
        state.unlabelled.append([t, str(end)])
        landed, waiting = [], []
        for w, w_end in state.unlabelled:
            if isinstance(delay, int):
                due = t >= w + delay
            else:
                due = pd.Timestamp(end) >= pd.Timestamp(w_end) + pd.Timedelta(delay)
            (landed if due else waiting).append(w if due else [w, w_end])
        state.unlabelled = waiting
        for w in landed:
            self.data.land(w)
        self._source_changed |= bool(landed) and self.stream.records_landings
        return landed

    def step(
        self, t: int, state: LoopState, champion: ClassifierModule, static: ClassifierModule
    ) -> ClassifierModule:
        # 1. The champion serves window t. Its accuracy, and everything that needs labels, waits for
        # them: with data.label_delay they land windows later (at once without a delay).
        if not self.reads(champion, self.data.present(t)):
            raise DataError(
                f"window {t} ({self.data[t].label}) lacks feature columns that champion "
                f"{state.champion} reads: columns may appear mid-stream (after the others), not vanish"
            )
        champion = self.follow_champion(state, champion)
        row = self.window_row(t, state)
        self._writes, self._rows = [], {t: row}
        # 2. Labels arrive; the triggers observe the windows they label, and may fire. Served
        # evidence may roll a new champion back, or (loop.guard=revert) return to v1.
        self._landed = self.landing(t, state)
        accepted = self.land_labels(t, row, state, champion, static)
        for w in accepted:
            labelled = self.row_of(w)
            champion = self.check_rollback(w, labelled, state, champion)
            champion = self.check_guard(w, labelled, state, champion, static)
        rolling = bool(state.rollout)
        if not rolling:
            # 3. A candidate awaiting judgement (gate.fresh=next) meets the first window labelled
            # after its training data, before it serves.
            champion = self.judge_awaiting(t, accepted, state, champion, row)
        # Updates wait while a candidate awaits its window or a live rollout decides.
        hold = rolling or bool(state.rollout) or bool(state.awaiting)
        # New columns or classes in the labelled data fire an update of their own (once a live
        # rollout, which holds updates back, is decided: a quarantined window does not decide it).
        schema = None if hold else self.schema_change(state)
        observed = bool(accepted)
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
                self.apply_writes()
                window = self.data.labelled(t)
                champion = self.stage.step(t, window, state, champion, row, self.watch, evidence)
                self.checkpoint(state, t)
            return champion
        if firing is None or hold:
            self.commit(state, t, row)
            return champion

        # 4. An update makes a candidate from the labelled windows since the last one.
        pending = list(state.pending)
        update = self.update.choose(self.registry.newest_first())  # a hybrid picks per update
        newest = self.columns(pending[-1])
        if firing.name == "schema" and newest != champion.n_features:
            # Fine-tuning cannot give a model new inputs: a new major version is trained from scratch.
            update = update.retrain()
        stateful = update.kind == "stateful"
        cand = update.run(
            self.build,
            champion if stateful else None,
            self.data.train_splits(pending[-1], state.quarantined_windows),
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
        if self.fresh == "next":
            return self.await_judgement(t, state, row, cand, firing, pending, stateful, champion)
        # 5. The gate compares candidate and champion on fresh held-out rows and on earlier windows.
        decision, fresh = self.judge(cand.module, champion, pending, state.quarantined_windows)
        rival = self.challenge(t, state, pending, newest, cand if decision.promote else None, champion)
        self.trigger.reset()
        state.pending = []
        for trained in (cand, rival[0] if rival else None):
            if trained is not None:
                state.compute["train_seconds"] += trained.train_seconds
                state.compute["samples_processed"] += trained.samples_processed
        with self.registry.transaction():
            self.apply_writes()
            record = self.register(cand, state.champion if stateful else None, t, firing, fresh)
            self.logger.log_version(record)
            row["trained"] = record.id
            label = decision.label
            if decision.promote and self.rollout is not None:
                # Passed offline; live traffic decides, from the next window on.
                label = "rollout"
                self.stage.hand_over(state, record.id, cand.module, t)
            elif decision.promote:
                self.registry.promote(record.id, window=t, reason=decision.reason)
            else:
                self.registry.reject(record.id, window=t)
            numbers = {"reason": decision.reason, **decision.numbers}
            self.registry.record_decision(record.id, t, label, numbers)
            self.logger.log_decision(record.id, t, label, numbers)
            row |= self.decision_columns(record.id, label, decision)
            if label == "promoted":
                self.watch(state, record.id, state.champion, t)
                state.champion = record.id
                champion = cand.module
            if rival is not None:
                champion = self.decide_challenger(t, state, *rival, row, champion)
            self.checkpoint(state, t)
        return champion

    def commit(self, state: LoopState, t: int, row: dict) -> None:
        """Window ``t``'s registry writes, its row and the checkpoint, in one transaction."""
        with self.registry.transaction():
            self.apply_writes()
            self.checkpoint(state, t)

    def decide_later(self, version: str, window: int, label: str, numbers: dict) -> None:
        """Record a decision, and log it, when the window commits."""
        self._writes.append(partial(self.registry.record_decision, version, window, label, numbers))
        self._writes.append(partial(self.logger.log_decision, version, window, label, numbers))

    def apply_writes(self) -> None:
        writes, self._writes = self._writes, []
        for write in writes:
            write()

    @staticmethod
    def decision_columns(candidate: str, label: str, decision: GateDecision) -> dict:
        return {
            "candidate": candidate,
            "decision": label,
            "fresh_diff": _finite(decision.numbers.get("fresh_diff")),
            "fresh_lower_bound": _finite(decision.numbers.get("fresh_lower_bound")),
            "p_value": _finite(decision.numbers.get("p_value")),
            "gate_min_detectable_drop": _finite(decision.numbers.get("min_detectable_drop")),
        }

    # ---- the temporal gate (gate.fresh=next) ------------------------------------------------------
    def await_judgement(
        self,
        t: int,
        state: LoopState,
        row: dict,
        cand: TrainedCandidate,
        firing: Firing,
        pending: list[int],
        stateful: bool,
        champion: ClassifierModule,
    ) -> ClassifierModule:
        """Register a new candidate to await the next labelled window; it serves nothing yet."""
        # Its score on the held-out rows of its newest window, as the holdout gate records it: what a
        # performance trigger later tests the champion's drop against.
        held_out = evaluate(cand.module, *self.split(pending[-1]).holdout)
        self.trigger.reset()
        state.pending = []
        state.compute["train_seconds"] += cand.train_seconds
        state.compute["samples_processed"] += cand.samples_processed
        with self.registry.transaction():
            self.apply_writes()
            record = self.register(cand, state.champion if stateful else None, t, firing, held_out)
            self.logger.log_version(record)
            state.awaiting = {"candidate": record.id, "pending": pending, "window": t}
            self._awaiting = (record.id, cand.module)
            row["trained"] = record.id
            self.checkpoint(state, t)
        return champion

    def judge_awaiting(
        self, t: int, accepted: list[int], state: LoopState, champion: ClassifierModule, row: dict
    ) -> ClassifierModule:
        """Judge the awaiting candidate on every row of the first window labelled after its training
        data, against the champion now serving (neither trained on that window); promote, reject, or
        hand it to the live rollout. The writes commit with window ``t``."""
        awaiting = state.awaiting
        after = [w for w in accepted if awaiting and w > awaiting["pending"][-1]]
        if not after:
            return champion
        w, candidate_id = after[0], awaiting["candidate"]
        if self._awaiting[0] != candidate_id:  # a resumed run: its weights from the registry
            self._awaiting = (candidate_id, self.load(candidate_id))
        candidate = self._awaiting[1]
        decision, _ = self.judge(
            candidate, champion, awaiting["pending"], state.quarantined_windows, fresh=self.xy(w)
        )
        numbers = {"reason": decision.reason, "fresh_window": w, **decision.numbers}
        label = decision.label
        state.awaiting, self._awaiting = None, ("", None)
        if decision.promote and self.rollout is not None:
            label = "rollout"  # passed offline; live traffic decides, from the next window on
            # At once, so that no update starts in this window; the registry's request commits with it.
            self.stage.hand_over(state, candidate_id, candidate, t, defer=self._writes.append)
        elif decision.promote:
            promote = partial(self.registry.promote, candidate_id, window=t, reason=decision.reason)
            self._writes.append(promote)
            self.watch(state, candidate_id, state.champion, t)
            state.champion = candidate_id
            champion = candidate
        else:
            self._writes.append(partial(self.registry.reject, candidate_id, window=t))
        self.decide_later(candidate_id, t, label, numbers)
        row |= self.decision_columns(candidate_id, label, decision)
        return champion

    # ---- served evidence: rollback and guard -----------------------------------------------------
    def watch(self, state: LoopState, version: str, replaced: str, t: int) -> None:
        """With loop.rollback, ``version`` (promoted at step ``t``, replacing ``replaced``) is checked
        against ``replaced`` when the labels of the first window it serves land."""
        if self.settings.rollback and replaced:
            state.watch = {"version": version, "replaced": replaced, "window": t + 1}

    def check_rollback(
        self, w: int, labelled: dict, state: LoopState, champion: ClassifierModule
    ) -> ClassifierModule:
        """Window ``w``'s labels are in: if the champion under watch served it, score the version it
        replaced on the same rows, and roll back when the champion is significantly worse."""
        watch = state.watch
        if not watch or w < watch["window"]:
            return champion
        state.watch = None
        version, replaced = watch["version"], watch["replaced"]
        if version != state.champion or labelled["champion"] != version or state.rollout:
            return champion  # replaced meanwhile, or a live rollout runs against it: nothing to undo
        try:
            self.registry.verify(replaced)
            previous = self.load(replaced)
        except CorruptVersion as err:
            failure = {"version": version, "restored": replaced, "window": w, "reason": str(err)}
            state.rollback_failures = [*state.rollback_failures, failure]
            reason = f"cannot check against {replaced}, whose files are corrupt: {err}"
            self.decide_later(version, w, "rollback_failed", {"reason": reason, **failure})
            labelled["rollback"] = f"failed: {replaced} corrupt"
            return champion
        x, y = self.xy(w)
        served = compare_served(evaluate(champion, x, y), evaluate(previous, x, y), self.gate.alpha)
        labelled["rollback_p_value"] = served.p_value
        if not served.worse:
            return champion
        evidence = {
            "version": version,
            "restored": replaced,
            "window": w,
            "diff": served.diff,
            "upper_bound": served.upper_bound,
            "p_value": served.p_value,
            "n": served.n,
        }
        reason = (
            f"served window {w} significantly worse than {replaced}: diff {served.diff:+.3f}, "
            f"{1 - self.gate.alpha:.0%} upper bound {served.upper_bound:+.3f} (p={served.p_value:.3g}, "
            f"{served.n} rows)"
        )
        self._writes.append(partial(self.registry.rollback, reason, w, expect=(version, replaced)))
        self.decide_later(version, w, "rolled_back", {"reason": reason, **evidence})
        state.rollbacks = [*state.rollbacks, evidence]
        state.champion = replaced
        labelled["rollback"] = version
        return previous

    def guard_test(self, state: LoopState, since: int = 0) -> tuple[list[int], ServedComparison] | None:
        """The served line against v1 never updated, paired over the rows of the last
        ``loop.guard_windows`` labelled windows from ``since`` on; None before any."""
        windows = sorted(int(w) for w in state.paired if int(w) >= since)[-self.settings.guard_windows :]
        if not windows:
            return None
        return windows, pooled_served([state.paired[str(w)] for w in windows], self.task, self.gate.alpha)

    def check_guard(
        self, w: int, labelled: dict, state: LoopState, champion: ClassifierModule, static: ClassifierModule
    ) -> ClassifierModule:
        """After window ``w``'s labels: is updating hurting? With loop.guard=revert, v1 serves again."""
        if self.settings.guard == "off":
            return champion
        guard = state.guard
        tested = self.guard_test(state, guard["since"])
        if tested is None or not tested[1].worse:
            return champion
        windows, served = tested
        if guard["first_worse"] is None:
            guard["first_worse"] = w
        labelled["guard"] = "worse"
        if self.settings.guard != "revert" or state.champion == state.static or state.rollout:
            return champion
        evidence = {
            "version": state.champion,
            "restored": state.static,
            "window": w,
            "windows": [windows[0], windows[-1]],
            **{k: served.numbers()[k] for k in ("diff", "upper_bound", "p_value", "n")},
        }
        reason = (
            f"the served line was significantly worse than {state.static} never updated over windows "
            f"{windows[0]}-{windows[-1]}: diff {served.diff:+.3f}, upper bound {served.upper_bound:+.3f}"
        )
        static_id = state.static
        self._writes.append(partial(self.registry.promote, static_id, window=w, reason=reason))
        self.decide_later(static_id, w, "reverted", {"reason": reason, **evidence})
        guard["reverts"] = [*guard["reverts"], evidence]
        guard["since"] = w + 1  # the line starts afresh from v1: only what it serves next counts
        state.champion, state.watch = static_id, None
        labelled["guard"] = "reverted"
        return static

    def guard_report(self, state: LoopState) -> dict | None:
        """The guard's verdict over the run's last ``loop.guard_windows`` labelled windows."""
        if self.settings.guard == "off":
            return None
        tested = self.guard_test(state)
        if tested is None:
            return None
        windows, served = tested
        return json_safe(
            {
                "mode": self.settings.guard,
                "windows": windows,
                **served.levels(),
                "diff": served.diff,
                "upper_bound": served.upper_bound,
                "p_value": served.p_value,
                "n": served.n,
                "worse": served.worse,
                "first_window_worse": state.guard["first_worse"],
                "reverts": state.guard["reverts"],
            }
        )

    def challenge(
        self,
        t: int,
        state: LoopState,
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
            self.data.train_splits(pending[-1], state.quarantined_windows),
            pending,
            None,
            window_seed(self.settings.seed, t),
            self.trainer,
            self.regularizers,
            n_features=newest,
            grow_head=self.settings.head == "grow",
        )
        opponent = promoted.module if promoted is not None else champion
        decision, fresh = self.judge(rival.module, opponent, pending, state.quarantined_windows)
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
        state: LoopState,
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
            self.watch(state, record.id, state.champion, t)
            state.champion = record.id
        else:
            self.registry.reject(record.id, window=t)
        numbers = {"reason": decision.reason, **decision.numbers}
        self.registry.record_decision(record.id, t, decision.label, numbers)
        self.logger.log_decision(record.id, t, decision.label, numbers)
        row |= {"challenger": record.id, "challenger_decision": decision.label}
        return rival.module if decision.promote else champion

    def land_labels(
        self, t: int, row: dict, state: LoopState, champion: ClassifierModule, static: ClassifierModule
    ) -> list[int]:
        """The labels that land at step ``t`` (window ``t``'s own without a delay) score the windows
        they belong to and go to the triggers; returns the windows the triggers observed. A screened
        window whose labels look poisoned is set aside: no trigger, update, buffer, gate or guard
        sees it."""
        observed = []
        for w in self._landed:
            labelled = self.row_of(w)
            served, probabilities, static_eval = self.label(labelled, w, champion, state.champion, static)
            window = self.data.labelled(w)
            x, y = self.as_read_by(window.x, champion), window.y
            screened = self.screen.screen(x, y, probabilities) if self.screen is not None else None
            if screened is not None and screened.quarantine:
                labelled["screen"] = f"quarantined: {screened.reason}"
                evidence = {"window": w, "flagged": screened.flagged, "reason": screened.reason}
                state.quarantined = [*state.quarantined, json_safe(evidence | screened.checks)]
                continue
            if screened is not None:
                self.screen.accept(x, y, probabilities)
                if screened.flagged:
                    labelled["screen"] = f"accepted: {screened.reason}"
            champion_record = self.registry.get(state.champion)
            self.trigger.update(
                Observation(
                    replace(window, x=x),
                    served.scores(),
                    champion_record.n_samples,
                    position=w,
                    champion=champion,
                    champion_metrics=champion_record.metrics,
                    champion_windows=tuple(champion_record.trained_on_windows),
                    probabilities=probabilities,
                    reference=lambda positions, rows: self.as_read_by(
                        self.data.reference_rows(positions, rows), champion
                    ),
                )
            )
            observed.append(w)
            state.pending.append(w)
            # What the served model and v1 never updated did on the same rows, for the guard.
            state.paired[str(w)] = paired_sums(served, static_eval)
        return observed

    def label(
        self, row: dict, w: int, champion: ClassifierModule, champion_id: str, static: ClassifierModule
    ) -> tuple[Evaluation, np.ndarray, Evaluation]:
        """Window ``w``'s labels are in: score the model that served it (named in its row) and the
        never-updated v1 on them, into the row; returns the served scores, the current champion's
        class probabilities on the window and v1's scores."""
        server = champion
        if row["champion"] != champion_id:  # labels that land late find another champion serving
            if self._served[0] != row["champion"]:
                self._served = (row["champion"], self.load(row["champion"]))
            server = self._served[1]
        x, y = self.xy(w)
        served, static_eval = evaluate(server, x, y), evaluate(static, x, y)
        row |= {"n_labelled": len(y)} | score_columns(served, static_eval)
        # The champion's outputs: those of the scoring above when it served the window itself.
        if server is not champion:
            probabilities = champion.predict_outputs(x)
        elif self.task == "regression":
            probabilities = served.predictions.astype(np.float32)[:, None]
        else:
            probabilities = served.probs
        return served, probabilities, static_eval

    def window_row(self, t: int, state: LoopState) -> dict:
        """Window ``t``'s row of windows.csv, with every column at its empty value; the scores stay
        empty until its labels arrive."""
        window = self.data[t]
        return {
            "window": t,
            "start": str(window.start),
            "end": str(window.end),
            "n": len(window),
            "n_labelled": None,  # rows whose labels landed (labels may arrive apart from inputs)
            **dict.fromkeys(SCORE_COLUMNS[self.task]),
            "champion": state.champion,
            "trigger": "",
            "trigger_reason": "",
            "trigger_statistic": None,
            "trigger_p_value": None,
            "candidate": "",
            "decision": "",
            # Empty (None) until a candidate is judged at this window: rows then compare equal after
            # a checkpoint's JSON round trip, which NaN never does.
            "fresh_diff": None,
            "fresh_lower_bound": None,
            "p_value": None,
            "gate_min_detectable_drop": None,
            "rollout": "",
            "rollout_candidate": "",
            "rollout_decision": "",
            "rollout_p_value": None,
            "screen": "",
            "challenger": "",
            "challenger_decision": "",
            "trained": "",
            "rollback": "",
            "rollback_p_value": None,
            "guard": "",
        }

    def judge(
        self,
        candidate: ClassifierModule,
        champion: ClassifierModule,
        pending: list[int],
        quarantined: Sequence[int] = (),
        fresh: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[GateDecision, Evaluation]:
        """The gate's decision, and the candidate's score on the fresh rows: ``fresh``, or the
        held-out rows of the newest of the ``pending`` windows the candidate was trained for."""
        fresh = fresh if fresh is not None else self.split(pending[-1]).holdout
        past = self.past_windows(pending[0], candidate, quarantined)
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

    def past_windows(self, before: int, candidate: ClassifierModule, quarantined: Sequence[int]) -> list[int]:
        """The gate's past windows: the newest ``gate.past_windows`` before ``before`` that are not
        quarantined and whose rows carry every column ``candidate`` reads (older windows may lack
        new columns); looked for from the newest back, so the cost does not grow with the run."""
        limit, skipped, found = self.gate.past_windows, set(quarantined), []
        for w in range(before - 1, -1, -1):
            if limit is not None and len(found) == limit:
                break
            if w not in skipped and self.reads(candidate, self.data.present(w)):
                found.append(w)
        return found[::-1]

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
    def checkpoint(self, state: LoopState, t: int) -> None:
        """Record progress up to window ``t``; called inside the window's registry transaction.
        Its cost does not grow with the run: the rows written are this step's, and the state keeps
        only what the next window needs (``LoopState``)."""
        state.next_window = t + 1
        state.trigger = self.trigger.state_dict()
        if self.screen is not None:
            state.screen = self.screen.state_dict()
        if self._source_changed:  # polled since the last checkpoint (or a source that records landings)
            self.registry.set_state(SOURCE_KEY, self.stream.state_dict())
            self._source_changed = False
        state.keep_paired(self.settings.guard_windows)
        state.buffer_file = ""
        if self.buffer is not None:
            # Written before the transaction commits; a crash leaves an unreferenced file, never a
            # referenced file that is missing.
            name = f"buffer-{t:05d}.safetensors"
            (self.run_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
            save_tree(self.run_dir / "checkpoint" / name, self.buffer.state_dict())
            state.buffer_file = name
        self.registry.put_window_rows([self._rows[w] for w in sorted(self._rows)])
        self.registry.set_state(CHECKPOINT_KEY, state.to_dict())

    def prune_checkpoints(self, state: LoopState) -> None:
        """Delete buffer files older than the committed one; only after the commit, never inside it."""
        if not state.buffer_file:
            return
        for old in (self.run_dir / "checkpoint").glob("buffer-*.safetensors"):
            if old.name < state.buffer_file:
                old.unlink(missing_ok=True)

    def check_same_config(self, state: LoopState) -> None:
        saved, now = _flatten(state.config), _flatten(self.config)
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
            TimeElapsedColumn(),
            disable=not self.progress,
        )

    # ---- results ----------------------------------------------------------------------------
    def accuracy_matrix(self) -> pd.DataFrame:
        """Accuracy (a regressor's R²) on each of the newest ``loop.matrix_windows`` windows'
        held-out rows (columns, by window) of every version made in them and of every champion that
        served them (rows, in creation order): a bounded amount of work however long the run."""
        if self.state is None:
            return pd.DataFrame()
        last = self.state.next_window
        first = max(0, last - self.settings.matrix_windows)
        served = {r["champion"] for r in self.registry.window_rows(first)}
        records = [r for r in self.registry.versions() if r.id in served or (r.created_window or 0) >= first]
        rows = {r.id: [float("nan")] * (last - first) for r in records}
        # A few versions at a time against every window, so that each window is read once a group
        # (a lazy source reads it from its files again) and only a group's modules are in memory.
        for group in range(0, len(records), MATRIX_GROUP):
            modules = {r.id: self.load(r.id) for r in records[group : group + MATRIX_GROUP]}
            for j in range(first, last):
                for version, module in modules.items():
                    if self.reads(module, self.data.present(j)):
                        scores = evaluate(module, *self.split(j).holdout)
                        rows[version][j - first] = scores.r2 if self.task == "regression" else scores.accuracy
        return pd.DataFrame.from_dict(rows, orient="index", columns=range(first, last))


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _finite(value: float | None) -> float | None:
    """A trigger's statistic for the window's row; None (an empty cell) when it computed none, so rows
    compare equal after a checkpoint's JSON round trip, which NaN never does."""
    return None if value is None or math.isnan(value) else float(value)
