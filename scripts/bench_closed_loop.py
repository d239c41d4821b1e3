"""The closed loop, measured end to end on one machine (``perennial.demo.ClosedLoop``): a v1 trained on
four years of the weather data serves the following years as live HTTP traffic through
``perennial-serve``, their labels come back through ``/feedback``, and ``perennial-run data=serve_log
... rollout=canary rollout.on=server loop.follow=true`` trains candidates on the server's log and sends
each one that passes its offline gate into a canary on that traffic. The figures of
docs/benchmarks.md, "Closed loop".

    .venv/bin/python scripts/bench_closed_loop.py --write          # about 8 minutes on 2 cores
    .venv/bin/python scripts/bench_closed_loop.py --parts normal --years 6   # a quick look

Three parts:

- normal: the closed loop as ``perennial-demo`` runs it, the loop polling every 5 s. Freshness lag of
  every version promoted through a live rollout, from the last label of the newest window it trained
  on to its first answer (in the canary) and its first answer as champion, cut into its parts from
  the registry's and the request log's timestamps; every failed request.
- chaos: the same, with the server and the loop each killed (SIGKILL) ``--kills`` times at seeded
  random moments spread over the traffic, the loop restarted at once, the server after a moment
  down. Acknowledged requests and labels missing from the log, windows processed twice or skipped,
  rollout decisions lost, and the requests refused while the server was down.
- replay: ``perennial-run data=table`` over the same rows (history and played years in one CSV) with
  ``rollout=canary rollout.on=replay`` and the same settings: served accuracy per played year against
  the closed loop's live answers (normal part), paired by year, with a bootstrap interval.

Every part keeps its processes' logs, registry and request log under ``--out`` (default: a temporary
directory, removed at the end), and ``--reuse`` analyses the parts already there without running them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench_update import command, load_average, machine, replace_section
from perennial.demo.closed_loop import DAYS_PER_YEAR, TARGET, ClosedLoop, DemoSettings
from perennial.loop.rollouts import FEEDBACK_SLICE
from perennial.loop.state import CHECKPOINT_KEY, SOURCE_KEY
from perennial.registry import Registry

SECTION = "bench_closed_loop"
PARTS = ("normal", "chaos", "replay")
LOOP_POLL = 5.0  # seconds between the loop's looks at the request log (the setting)
SERVER_POLL = 1.0  # seconds between the server's looks at the registry
BOOTSTRAP = 10_000  # resamples of the years for the accuracy difference's interval


def settings_for(args: argparse.Namespace) -> DemoSettings:
    return DemoSettings(years=args.years, seed=args.seed, loop_poll=LOOP_POLL, server_poll=SERVER_POLL)


def say_as(part: str):
    def say(line: str) -> None:
        print(f"[{part}] {line}", flush=True)

    return say


# ---- chaos ----------------------------------------------------------------------------------------
@dataclass
class Chaos:
    """Kills the server and the loop at seeded moments of the traffic (demo clock, seconds): ``kills``
    of each, one in each of ``kills`` equal slots of the traffic, away from the slots' edges. The loop
    is started again at once; the server after ``down`` seconds (seeded, 0.5-2 s), in a thread that
    waits until it answers ``/status``. A child that exits by itself is noted and started again."""

    kills: int
    seconds: float  # length of the traffic
    seed: int
    plan: list[dict] = field(default_factory=list)  # {"at", "what", "down"}: still to do
    done: list[dict] = field(default_factory=list)  # {"what", "planned", "at", "ready", "code"}
    unexpected: list[dict] = field(default_factory=list)  # {"what", "at", "code"}
    errors: list[str] = field(default_factory=list)
    schedule: list[dict] = field(default_factory=list)  # the whole plan, as drawn
    _restart: threading.Thread | None = None

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 9])
        slot = self.seconds / max(self.kills, 1)
        for what in ("server", "loop"):
            for k in range(self.kills):
                at = float(rng.uniform(k * slot + 0.1 * slot, (k + 1) * slot - 0.1 * slot))
                down = float(rng.uniform(0.5, 2.0)) if what == "server" else 0.0
                self.plan.append({"at": round(at, 2), "what": what, "down": round(down, 2)})
        self.plan.sort(key=lambda p: p["at"])
        self.schedule = [dict(p) for p in self.plan]

    def restarting(self) -> bool:
        return self._restart is not None and self._restart.is_alive()

    def tick(self, demo: ClosedLoop) -> None:
        now = demo.now()
        # Exits nobody asked for: noted, and the child started again so that the run goes on.
        if demo.loop is not None and not demo.loop.alive:
            self.unexpected.append({"what": "loop", "at": round(now, 2), "code": demo.loop.returncode})
            demo.start_loop()
        if not self.restarting() and demo.server is not None and not demo.server.alive:
            self.unexpected.append({"what": "server", "at": round(now, 2), "code": demo.server.returncode})
            self._restart_server(demo, {"what": "server", "planned": None, "at": now, "code": None}, 0.0)
        while self.plan and self.plan[0]["at"] <= now:
            if self.plan[0]["what"] == "server" and self.restarting():
                break  # still coming back from the last kill: this one waits for it
            step = self.plan.pop(0)
            at = demo.now()
            if step["what"] == "loop":
                code = demo.kill_loop()
                demo.start_loop()
                self.done.append({"what": "loop", "planned": step["at"], "at": at, "code": code})
            else:
                code = demo.kill_server()
                kill = {"what": "server", "planned": step["at"], "at": at, "code": code}
                self._restart_server(demo, kill, step["down"])

    def _restart_server(self, demo: ClosedLoop, kill: dict, down: float) -> None:
        self.done.append(kill)

        def restart() -> None:
            time.sleep(down)
            try:
                demo.restart_server()
            except Exception as err:  # reported; the end of the run checks the server is up
                self.errors.append(f"server restart after {kill['at']:.1f} s: {type(err).__name__}: {err}")
            kill["ready"] = demo.now()

        self._restart = threading.Thread(target=restart, name="restart-server", daemon=True)
        self._restart.start()

    def finish(self, demo: ClosedLoop) -> None:
        """After the traffic: wait for a restart under way; both children up for the drain."""
        if self._restart is not None:
            self._restart.join()
        if demo.server is not None and not demo.server.alive:
            self.unexpected.append(
                {"what": "server", "at": round(demo.now(), 2), "code": demo.server.returncode}
            )
            demo.restart_server()
        if demo.loop is not None and not demo.loop.alive:
            self.unexpected.append({"what": "loop", "at": round(demo.now(), 2), "code": demo.loop.returncode})
            demo.start_loop()

    def report(self) -> dict:
        return {
            "schedule": self.schedule,
            "not_done": self.plan,
            "done": self.done,
            "unexpected": self.unexpected,
            "errors": self.errors,
        }


# ---- one closed-loop run --------------------------------------------------------------------------
def run_closed_loop(out: Path, settings: DemoSettings, part: str, kills: int = 0) -> dict:
    """Run the closed loop in ``out`` (with kills for the chaos part); what the analysis needs, also
    written to ``out/bench.json``."""
    if out.exists():
        shutil.rmtree(out)
    started = time.monotonic()
    demo = ClosedLoop(out, settings, say=say_as(part))
    chaos = Chaos(kills, settings.years * settings.seconds_per_year, settings.seed) if kills else None
    with demo:
        demo.prepare()
        demo.start_server()
        demo.start_loop()
        demo.play(tick=0.5 if chaos else 1.0, on_tick=chaos.tick if chaos else None)
        if chaos is not None:
            chaos.finish(demo)
        # A loop killed late catches up after the traffic: it restarts, then reads every window left.
        windows = demo.drain(timeout=settings.label_deadline + settings.settle + 3 * settings.loop_poll + 240)
        loop_exit = demo.stop_loop()
    records = demo.player.records
    result = {
        "part": part,
        "settings": asdict(settings),
        "traffic_start": demo.traffic_start,
        "baseline": demo.baseline,
        "years": calendar_years(demo.traffic_table()),
        "windows_at_drain": windows,
        "loop_exit": loop_exit,
        "seconds": demo.seconds | {"part": round(time.monotonic() - started, 1)},
        "records": [r.to_dict() for r in records],
        "v1_correct": [bool(int(demo.baseline_predictions[r.index]) == r.label) for r in records],
        "chaos": chaos.report() if chaos else None,
        "left_running": [p.name for p in demo.processes.alive()],
    }
    (out / "bench.json").write_text(json.dumps(result, default=str) + "\n")
    return result


def calendar_years(table: pd.DataFrame) -> list[int]:
    """The calendar year of each played year, read at its middle day."""
    return [int(d.year) for d in table["date"].iloc[DAYS_PER_YEAR // 2 :: DAYS_PER_YEAR]]


# ---- reading what a run left ----------------------------------------------------------------------
def unix(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


def log_connection(registry: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{registry / 'serve-log.sqlite'}?mode=ro", uri=True)


def stored_at(registry: Path, version: str) -> float:
    """When the version's files were written (their mtime, in the rename that stores them just before
    its index row): finer than ``created_at``, kept to the second."""
    files = [p for p in (registry / "versions" / version).iterdir() if p.is_file()]
    return max(p.stat().st_mtime for p in files)


def ledger(registry: Registry) -> dict:
    return registry.get_state(SOURCE_KEY) or {}


def freshness(run: dict, out: Path) -> list[dict]:
    """For each version promoted through a live rollout: the moments of its way from the last label
    of the newest window it trained on to its first answer as champion, in unix seconds, and the lag
    cut into consecutive parts (each at least 0, summing to the whole)."""
    s, root = run["settings"], out / "registry"
    length, ready = s["seconds_per_year"], s["label_deadline"] + s["settle"]
    lags = []
    with Registry(root, create=False, readonly=True) as registry, log_connection(root) as log:
        source = ledger(registry)
        start = source.get("start") or run["traffic_start"]
        period = {w: p for w, (p, _) in enumerate(source.get("windows", []))}
        for rollout in registry.rollouts.all():
            if rollout.status != "promoted":
                continue
            version = registry.get(rollout.candidate)
            newest = max(version.trained_on_windows)
            gated = [d for d in registry.decisions(version.id) if d["decision"] == "rollout"]
            fresh = gated[0]["numbers"].get("fresh_window", newest + 1) if gated else newest + 1
            lo = start + period.get(newest, newest) * length
            t_label = log.execute(
                "SELECT max(f.at) FROM requests q JOIN feedback f USING (request_id)"
                " WHERE q.at >= ? AND q.at < ? AND f.at <= q.at + ?",
                (lo, lo + length, s["label_deadline"]),
            ).fetchone()[0]
            first = log.execute("SELECT min(at) FROM requests WHERE version = ?", (version.id,)).fetchone()[0]
            champion = log.execute(
                "SELECT min(at) FROM requests WHERE champion = ?", (version.id,)
            ).fetchone()[0]
            stored = stored_at(root, version.id)
            moments = [
                ("label", t_label),
                ("window readable", lo + length + ready),  # its end + label_deadline + settle
                ("training starts", stored - version.train_seconds),
                ("candidate stored", stored),
                ("next window readable", start + (period.get(fresh, fresh) + 1) * length + ready),
                ("rollout requested", unix(rollout.requested_at)),
                ("first answer", first),
                ("decided", unix(rollout.decided_at)),
                ("first answer as champion", champion),
            ]
            if any(t is None for _, t in moments):
                lags.append({"version": version.id, "missing": [n for n, t in moments if t is None]})
                continue
            running, times = -np.inf, []
            for _, t in moments:  # each moment no earlier than the one before it
                running = max(running, t)
                times.append(running)
            parts = dict(zip(PARTS_OF_LAG, np.diff(times).tolist(), strict=True))
            lags.append(
                {
                    "version": version.id,
                    "trained_on": version.trained_on_windows,
                    "fresh_window": fresh,
                    "train_seconds": version.train_seconds,
                    "to_first_answer": first - t_label,
                    "to_champion": champion - t_label,
                    "parts": parts,
                    "decided_by": "loop deadline" if "on_timeout" in (rollout.reason or "") else "server",
                    "reason": rollout.reason,
                }
            )
    return lags


PARTS_OF_LAG = (
    "label deadline + settle",  # the last label to the window's end + label_deadline + settle
    "loop poll wait",  # until the loop reads it and starts training (its poll, reading, landing)
    "training",  # the candidate's train_seconds
    "gate: next window",  # gate.fresh=next: until the first window after its data is readable
    "gate: poll wait + judging",  # until the loop reads that window, judges, asks for the rollout
    "server pick-up",  # until a server answers with it (its registry poll, loading it)
    "canary",  # its first answer to the decision
    "swap to champion",  # the decision to its first answer as champion
)


def integrity(run: dict, out: Path) -> dict:
    """What a run's registry and request log hold against what the clients were told."""
    s, root = run["settings"], out / "registry"
    records = run["records"]
    with Registry(root, create=False, readonly=True) as registry, log_connection(root) as log:
        logged = {r for (r,) in log.execute("SELECT request_id FROM requests")}
        labelled = {r for (r,) in log.execute("SELECT request_id FROM feedback")}
        versions = registry.versions()
        decisions = registry.decisions()
        history = registry.champion_history()
        rollouts = registry.rollouts.all()
        rows = registry.window_rows()
        checkpoint = registry.get_state(CHECKPOINT_KEY) or {}
        source = ledger(registry)
        statuses = {v.id: v.status for v in versions}
        # The log's labelled rows of each period, by the rule data=serve_log reads it with.
        start, length = source.get("start") or run["traffic_start"], s["seconds_per_year"]
        expected = Counter(
            int((at - start) // length)
            for (at,) in log.execute(
                "SELECT q.at FROM requests q JOIN feedback f USING (request_id)"
                " WHERE f.at <= q.at + ? AND q.at >= ?",
                (s["label_deadline"], start),
            )
        )
    answered = [r for r in records if r["status"] == 200 and r["prediction"] is not None]
    windows = [int(r["window"]) for r in rows]
    created = Counter(
        v.created_window for v in versions if v.created_window is not None and v.id != run["baseline"]
    )
    repeated = Counter((d["version"], d["window"], d["decision"]) for d in decisions)
    lost = []
    for rollout in rollouts:
        candidate = rollout.candidate
        said = {d["decision"] for d in decisions if d["version"] == candidate}
        in_rows = {r.get("rollout_decision") for r in rows if r.get("rollout_candidate") == candidate}
        if rollout.status == "promoted":
            ok = (
                statuses.get(candidate) in ("champion", "retired", "rolled_back")
                and any(h["version"] == candidate and h["action"] == "promote" for h in history)
                and "promoted" in said
                and "promote" in in_rows
            )
        elif rollout.status in ("rejected", "failed"):
            ok = (
                statuses.get(candidate) == "rejected"
                and "rejected" in said
                and bool({"reject", "failed"} & in_rows)
            )
        elif rollout.status == "stopped":
            ok = "rollout_stopped" in said and "stopped" in in_rows
        else:
            continue  # still open: undecided, counted apart
        if not ok:
            lost.append(
                {
                    "rollout": rollout.id,
                    "candidate": candidate,
                    "status": rollout.status,
                    "version status": statuses.get(candidate),
                    "decisions": sorted(said),
                    "window rows": sorted(str(d) for d in in_rows),
                }
            )
    # Candidates that passed the offline gate and never reached a rollout record or a decision.
    handed = {d["version"] for d in decisions if d["decision"] == "rollout"}
    orphaned = sorted(
        handed
        - {r.candidate for r in rollouts}
        - {d["version"] for d in decisions if d["decision"] == "rejected"}
    )
    periods = [int(p) for p, _ in source.get("windows", [])]
    rows_per_window = {int(p): int(n) for p, n in source.get("windows", [])}
    return {
        "requests": sum(r["sent"] is not None for r in records),
        "answered": len(answered),
        "failed_predict": sum(
            r["done"] and not (r["status"] == 200 and r["prediction"] is not None) for r in records
        ),
        "failed_feedback": sum(r["feedback_done"] and r["feedback_status"] != 200 for r in records),
        "acknowledged_missing": sum(r["request_id"] not in logged for r in answered),
        "labels_acknowledged_missing": sum(
            r["request_id"] not in labelled for r in records if r["feedback_status"] == 200
        ),
        "windows": len(windows),
        "windows_expected": s["years"],
        "windows_in_order": windows == list(range(len(windows))),
        "windows_skipped": len(set(range(s["years"])) - set(windows))
        + sum(b - a + 1 for a, b in source.get("empty", [])),
        "periods_are_windows": periods == list(range(len(periods))),
        "checkpoint_next_window": checkpoint.get("next_window"),
        "rows_differing": sum(rows_per_window.get(p) != n for p, n in expected.items() if p < s["years"]),
        "versions_same_window": sum(n - 1 for n in created.values() if n > 1),
        "decisions_repeated": sum(n - 1 for n in repeated.values() if n > 1),
        "rollouts": Counter(r.status for r in rollouts),
        "decisions_lost": lost,
        "gate_passed_without_rollout": orphaned,
        "candidates": len([v for v in versions if v.id != run["baseline"]]),
        "open_rollouts": [r.candidate for r in rollouts if r.is_open],
    }


def down_failures(run: dict) -> dict:
    """Failed calls of the chaos part: sent while the server was down (from its kill until it answered
    ``/status`` again), in flight when it was killed (no HTTP answer, sent before the kill), or
    neither (failed while the server was up)."""
    chaos = run["chaos"] or {}
    down = [(k["at"], k.get("ready", k["at"])) for k in chaos.get("done", []) if k["what"] == "server"]
    timeout = 30.0  # the traffic player's client timeout

    def where(sent: float, status: int | None) -> tuple[str, float]:
        if any(a <= sent <= b for a, b in down):
            return "down", 0.0
        before = [a - sent for a, _ in down if 0 < a - sent <= timeout]
        if status is None and before:
            return "in_flight", min(before)
        return "up", 0.0

    counts: Counter = Counter()
    in_flight = [0.0]
    for r in run["records"]:
        if r["done"] and not (r["status"] == 200 and r["prediction"] is not None):
            kind, ahead = where(r["sent"], r["status"])
            counts[f"predict_{kind}"] += 1
            in_flight.append(ahead)
        if r["feedback_done"] and r["feedback_status"] != 200:
            kind, ahead = where(r["feedback_sent"], r["feedback_status"])
            counts[f"feedback_{kind}"] += 1
            in_flight.append(ahead)
    return dict(counts) | {
        "down_seconds": round(sum(b - a for a, b in down), 1),
        "in_flight_longest": round(max(in_flight), 2),  # seconds between sending and the kill
    }


def served_by_year(run: dict) -> dict:
    """Live accuracy of each played year's answered requests, and v1's on the same requests."""
    years, served, v1, versions, answered = run["settings"]["years"], [], [], [], []
    for k in range(years):
        mine = [
            (r, ok)
            for r, ok in zip(run["records"], run["v1_correct"], strict=True)
            if k * DAYS_PER_YEAR <= r["index"] < (k + 1) * DAYS_PER_YEAR and r["status"] == 200
        ]
        served.append(float(np.mean([r["correct"] for r, _ in mine])) if mine else None)
        v1.append(float(np.mean([ok for _, ok in mine])) if mine else None)
        versions.append(dict(Counter(r["version"] for r, _ in mine)))
        answered.append(len(mine))
    every = [r for r in run["records"] if r["status"] == 200]
    overall = float(np.mean([r["correct"] for r in every])) if every else None
    return {"served": served, "v1": v1, "versions": versions, "answered": answered, "overall": overall}


def canary_seconds(out: Path) -> list[float]:
    """How long each decided live rollout ran, from its request to its decision."""
    with Registry(out / "registry", create=False, readonly=True) as registry:
        return [
            unix(r.decided_at) - unix(r.requested_at)
            for r in registry.rollouts.all()
            if r.decided_at is not None and r.status in ("promoted", "rejected")
        ]


# ---- the replay -----------------------------------------------------------------------------------
REPLAYS = {"same": None, "paced": 1}  # rollout.max_windows: the closed loop's, and 1


def replay_command(settings: DemoSettings, data: Path, run_dir: Path, max_windows: int | None) -> list[str]:
    steps = "[" + ",".join(f"{x:g}" for x in settings.steps) + "]"
    return [
        "data=table",
        f"data.path={data}",
        "data.time_column=date",
        f"data.target={TARGET}",
        "data.window=365D",
        f"loop.warmup_windows={settings.history_years - 1}",
        f"gate.tolerance={settings.gate_tolerance:g}",
        f"update.epochs={settings.epochs}",
        "rollout=canary",
        "rollout.on=replay",
        f"rollout.steps={steps}",
        f"rollout.min_samples={settings.min_samples}",
        f"rollout.max_windows={max_windows or settings.max_windows}",
        f"seed={settings.seed}",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    ]


def run_replay(out: Path, settings: DemoSettings) -> dict:
    """``perennial-run`` over the history and the played years as one table, its canary replayed on
    the windows' rows: with the closed loop's settings, and with ``rollout.max_windows=1``; their
    windows.csv."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()
    demo = ClosedLoop(out, settings)  # only for its tables: starts nothing
    table = pd.concat([demo.history_table(), demo.traffic_table()], ignore_index=True)
    data = out / "stream.csv"
    table.to_csv(data, index=False)
    result: dict[str, Any] = {"part": "replay", "rows": len(table), "runs": {}}
    for name, max_windows in REPLAYS.items():
        args = replay_command(settings, data, out / name, max_windows)
        print(f"[replay] perennial-run {' '.join(args)}", flush=True)
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(
                [sys.executable, "-m", "perennial.cli.run", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        result["runs"][name] = {
            "command": shlex.join(
                ["perennial-run", *replay_command(settings, Path("STREAM.csv"), Path("RUN_DIR"), max_windows)]
            ),
            "windows": pd.read_csv(out / name / "windows.csv").to_dict(orient="records"),
        }
    result["seconds"] = round(time.monotonic() - started, 1)
    (out / "bench.json").write_text(json.dumps(result, default=str) + "\n")
    return result


def replay_by_year(windows: list[dict], settings: DemoSettings) -> dict:
    """The replay's windows of the played years (after the history's): served and v1 accuracy, who
    served each (the champion, and a candidate in its canary), and how many windows each canary ran."""
    rows = {int(r["window"]): r for r in windows}
    out: dict[str, list] = {"served": [], "v1": [], "serving": [], "rows": []}
    for k in range(settings.years):
        row = rows.get(settings.history_years + k, {})
        out["served"].append(_float(row.get("served_accuracy")))
        out["v1"].append(_float(row.get("static_accuracy")))
        out["rows"].append(int(_float(row.get("n_labelled")) or 0))
        canary = row.get("rollout_candidate")
        serving = str(row.get("champion", "?"))
        if isinstance(canary, str) and canary:
            serving += f" + {canary} ({row.get('rollout_decision')})"
        out["serving"].append(serving)
    canaries = Counter(r["rollout_candidate"] for r in windows if isinstance(r.get("rollout_candidate"), str))
    out["canary_windows"] = list(canaries.values())
    return out


def _float(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(value) else value


def paired(closed: list, replay: list, seed: int) -> dict:
    """Mean of the per-year differences (closed loop less replay) and its 95% bootstrap interval over
    the years."""
    d = np.array([a - b for a, b in zip(closed, replay, strict=True) if a is not None and b is not None])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (BOOTSTRAP, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "years": len(d),
        "diffs": d.tolist(),
        "within_noise": bool(low <= 0 <= high),
    }


# ---- the section ----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def interval(c: dict) -> str:
    return f"**{c['mean']:+.3f}** (95% bootstrap interval over the years {c['low']:+.3f} to {c['high']:+.3f})"


def section(results: dict, settings: DemoSettings, minutes: float, load: str) -> str:
    s = settings
    lines = [
        "## Closed loop (scripts/bench_closed_loop.py)",
        "",
        f"Command: `{command()}` ({minutes:.1f} min; {machine()}; {load}; {datetime.now(UTC):%Y-%m-%d})",
        "",
        f"`perennial.demo.ClosedLoop` on one machine: v1 trained on {s.history_years} years of the weather "
        f"data (skipping the first {s.skip_years}) and exported to a registry; `perennial-serve` following "
        f"it (`serve.poll_s={s.server_poll:g}`); the {s.years} following years played as live HTTP "
        f"traffic, {DAYS_PER_YEAR} `/predict` a year in {s.seconds_per_year:g} s from {s.clients} "
        f"clients ({s.concurrency} in flight at most), each labelled through `/feedback` "
        f"{s.feedback_delay:g} s after its answer; `perennial-run data=serve_log rollout=canary "
        f"rollout.on=server loop.follow=true` over the server's request log, a window per played year "
        f"(`data.window={s.seconds_per_year:g}s`), `data.label_deadline={s.label_deadline:g}s`, "
        f"`data.settle={s.settle:g}s`, `loop.poll={s.loop_poll:g}s`, `update.epochs={s.epochs}`, "
        f"`gate.tolerance={s.gate_tolerance:g}` (`gate.fresh=next`), canary steps "
        f"{', '.join(f'{x:.0%}' for x in s.steps)} of the clients with `min_samples={s.min_samples}` "
        f"canary clients a step and `max_windows={s.max_windows}`, seed {s.seed}. Each part ran once.",
    ]
    if "normal" in results:
        lines += section_normal(results["normal"], s)
    if "chaos" in results:
        lines += section_chaos(results["chaos"], results.get("normal"), s)
    if "replay" in results and "normal" in results:
        lines += section_replay(results["replay"], results["normal"], s)
    return "\n".join(lines)


WHAT_LAG = {
    "label deadline + settle": "the last label to its window's end + `label_deadline` + `settle`",
    "loop poll wait": "until the loop has read the window and starts training (`loop.poll`)",
    "training": "the update (`train_seconds`)",
    "gate: next window": "`gate.fresh=next`: until the next window is readable too",
    "gate: poll wait + judging": "until the loop has read it, judged the candidate, requested the rollout",
    "server pick-up": "until the server answers with the candidate (`serve.poll_s`, loading it)",
    "canary": "its first answer to the server's decision",
    "swap to champion": "the decision to its first answer as champion",
}


def lag_rows(lags: list[dict]) -> list[str]:
    rows = ["| part | p50 (s) | p95 (s) | what it is |", "|---|---|---|---|"]
    for name in PARTS_OF_LAG:
        values = [lag["parts"][name] for lag in lags]
        rows.append(f"| {name} | {fmt(pct(values, 50), 1)} | {fmt(pct(values, 95), 1)} | {WHAT_LAG[name]} |")
    for key, name in (
        ("to_first_answer", "first answer (canary)"),
        ("to_champion", "first answer as champion"),
    ):
        values = [lag[key] for lag in lags]
        rows.append(
            f"| **to its {name}** | **{fmt(pct(values, 50), 1)}** | **{fmt(pct(values, 95), 1)}** | |"
        )
    return rows


def section_normal(normal: dict, s: DemoSettings) -> list[str]:
    check, lags = normal["integrity"], [lag for lag in normal["lags"] if "parts" in lag]
    rollouts = check["rollouts"]
    per_version = "; ".join(
        f"{lag['version']} (trained on window {', '.join(map(str, lag['trained_on']))}; "
        f"{lag['to_first_answer']:.1f} s, {lag['to_champion']:.1f} s)"
        for lag in lags
    )
    canary = normal["canary_seconds"]
    return [
        "",
        "### Freshness lag",
        "",
        "From the last label of the newest window a version trained on (the latest `/feedback` of that "
        "window's requests) to its first answer, in the canary, and to its first answer as champion (the "
        f"first request the log shows with `champion` = it), over the {len(lags)} versions promoted "
        "through a live rollout of the normal run. Each part is measured, one after the other, from the "
        "request log (`at` of requests and feedback), the registry (the rollout's `requested_at` and "
        "`decided_at`; the version's files, their mtime when stored; its `train_seconds`) and the "
        "windows' schedule (a window is readable at its end + `label_deadline` + `settle`).",
        "",
        *lag_rows(lags),
        "",
        f"Per version (to its first answer, to champion): {per_version}. With so few versions the p95 is "
        "about their largest. The lag is counted from a window's last label: its first label waited one "
        f"window ({s.seconds_per_year:g} s) more. The largest part is `gate.fresh=next`: a candidate "
        "waits for the next window to be judged on, nearly a whole window. Then the canary: "
        f"{fmt(statistics.median(canary) if canary else None, 1)} s from request to decision (median) "
        f"for its {len(s.steps)} steps of {s.min_samples} canary clients each. Training, the loop's and "
        "the server's polls and the swap add a few seconds.",
        "",
        f"Requests failed during the whole run: **{check['failed_predict']}** of {check['requests']:,} "
        f"`/predict` and **{check['failed_feedback']}** of their `/feedback`, through "
        f"{rollouts.get('promoted', 0)} promotions and {rollouts.get('rejected', 0)} rollbacks by the "
        f"canary ({check['candidates']} candidates trained; {len(check['open_rollouts'])} still in its "
        f"canary when the traffic ended). The loop committed {check['windows']} of "
        f"{check['windows_expected']} windows and exited {normal['run']['loop_exit']} on SIGTERM.",
    ]


def section_chaos(chaos: dict, normal: dict | None, s: DemoSettings) -> list[str]:
    check, failures, run = chaos["integrity"], chaos["failures"], chaos["run"]
    report = run["chaos"]
    planned = [k for k in report["done"] if k.get("planned") is not None]
    times = {w: ", ".join(f"{k['at']:.0f}" for k in planned if k["what"] == w) for w in ("server", "loop")}
    kills = Counter(k["what"] for k in planned)
    lost = len(check["decisions_lost"]) + len(check["gate_passed_without_rollout"])
    twice = check["versions_same_window"] + check["decisions_repeated"] + int(not check["windows_in_order"])
    refused = failures.get("predict_down", 0) + failures.get("predict_in_flight", 0)
    labels = failures.get("feedback_down", 0) + failures.get("feedback_in_flight", 0)
    rows = [
        ("acknowledged requests (HTTP 200) missing from the log", check["acknowledged_missing"]),
        ("acknowledged labels (`/feedback` 200) missing from the log", check["labels_acknowledged_missing"]),
        ("windows processed twice", twice),
        ("windows skipped", check["windows_skipped"]),
        (
            "checkpoint `next_window` / windows committed",
            f"{check['checkpoint_next_window']} / {check['windows']}",
        ),
        ("windows whose rows differ from the log's labelled rows", check["rows_differing"]),
        ("rollout decisions lost", lost),
        ("`/predict` refused while the server was down or cut by its kill", refused),
        ("`/feedback` refused while the server was down or cut by its kill", labels),
        (
            "calls failed while the server was up",
            failures.get("predict_up", 0) + failures.get("feedback_up", 0),
        ),
        ("children that exited by themselves", len(report["unexpected"])),
    ]
    lags = [lag for lag in chaos["lags"] if "parts" in lag]
    first, champ = [lag["to_first_answer"] for lag in lags], [lag["to_champion"] for lag in lags]
    lines = [
        "",
        "### Chaos: kill -9 of the server and the loop",
        "",
        f"The same run with the server killed {kills['server']} times (at {times['server']} s of the "
        f"{s.years * s.seconds_per_year:.0f} s of traffic) and the loop {kills['loop']} times (at "
        f"{times['loop']} s): SIGKILL to the process group, at moments drawn with seed {s.seed}, one in "
        f"each {s.years * s.seconds_per_year / max(len(planned) // 2, 1):.0f} s of the traffic. The loop "
        "was started again at once, the server after 0.5-2 s; the server counts as down from its kill "
        f"until its `/status` answers again, start-up included: {failures['down_seconds']:.1f} s in all. "
        "After the traffic the loop caught up and was "
        f"stopped with SIGTERM (exit {run['loop_exit']}).",
        "",
        "| check | count |",
        "|---|---|",
        *[f"| {name} | **{value}** |" for name, value in rows],
        "",
        "Windows processed twice counts window rows out of order, versions created in one window, and "
        "decision rows repeated for one (version, window, decision); a decision is lost when a decided "
        "rollout lacks the candidate's status, its champion-history row (promoted), its decision row or "
        "the loop's window row showing it, or a candidate handed to the canary has no rollout. Refused "
        "calls were never acknowledged: the clients saw the failure "
        f"({failures.get('predict_in_flight', 0) + failures.get('feedback_in_flight', 0)} of them were in "
        f"flight when the server was killed, sent up to {failures['in_flight_longest']:.2f} s before). "
        f"{check['requests']:,} requests, {check['answered']:,} answered; {check['candidates']} candidates; "
        "rollouts " + ", ".join(f"{n} {k}" for k, n in sorted(check["rollouts"].items())) + ". Freshness "
        f"lag to the first answer p50 {fmt(pct(first, 50), 1)} s, to champion p50 {fmt(pct(champ, 50), 1)} s "
        f"({len(lags)} promotions: a restarted loop or server adds its start-up).",
    ]
    if normal is not None:
        lines[-1] += (
            f" Served accuracy of the answered requests {fmt(chaos['by_year']['overall'])} "
            f"(normal run {fmt(normal['by_year']['overall'])})."
        )
    found = {k: check[k] for k in ("decisions_lost", "gate_passed_without_rollout") if check[k]}
    found |= {k: report[k] for k in ("errors", "unexpected") if report[k]}
    if found:
        lines += ["", f"Found: `{json.dumps(found)}`"]
    return lines


def section_replay(replay: dict, normal: dict, s: DemoSettings) -> list[str]:
    closed, same, paced = normal["by_year"], replay["same"], replay["paced"]
    v1_gap = max(
        (
            abs(a - b)
            for a, b in zip(closed["v1"], same["v1"], strict=True)
            if a is not None and b is not None
        ),
        default=float("nan"),
    )
    rows_equal = closed["answered"] == same["rows"] == [DAYS_PER_YEAR] * s.years
    c_same, c_paced = replay["comparison"]["same"], replay["comparison"]["paced"]
    live = normal["canary_seconds"]
    live_canary = statistics.median(live) if live else float("nan")
    firsts = [lag["to_first_answer"] for lag in normal.get("lags", [])]
    lag_first = statistics.median(firsts) if firsts else float("nan")
    lines = [
        "",
        "### Served accuracy: the closed loop against its replay",
        "",
        "The replay: the same rows (the history and the played years as one table, a window a year) with "
        "the same gate, update, canary and seed, the canary replayed on each window's rows:",
        "",
        f"    {replay['run']['runs']['same']['command']}",
        "",
        "Closed loop: the share of correct live answers of each played year (normal run); replay: the "
        "`served_accuracy` of that year's window in windows.csv; paired by year. The last columns: the "
        "replay again with `rollout.max_windows=1`.",
        "",
        "| year | closed loop | replay | difference | served by, closed loop | served by, replay "
        "| replay, max_windows=1 | difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, year in enumerate(normal["run"]["years"]):
        versions = ", ".join(f"{v} {n}" for v, n in sorted(closed["versions"][k].items()))
        a, b, p = closed["served"][k], same["served"][k], paced["served"][k]
        lines.append(
            f"| {year} | {fmt(a)} | {fmt(b)} | {_diff(a, b)} | {versions} | {same['serving'][k]} "
            f"| {fmt(p)} | {_diff(a, p)} |"
        )
    lines += [
        "",
        f"Closed loop less replay, over {c_same['years']} years: {interval(c_same)}, "
        + _verdict(c_same)
        + f" Less the replay with `rollout.max_windows=1`: {interval(c_paced)}, "
        + _verdict(c_paced)
        + " The data are the same: "
        + (
            f"every played row was answered live and is in its replay window ({DAYS_PER_YEAR} a year)"
            if rows_equal
            else f"rows per year, closed loop {closed['answered']}, replay {same['rows']}"
        )
        + f", and v1 is the same model (v1's accuracy per year differs by at most {v1_gap:.3f} between "
        "them). The canary's pace is the same too: on the server a step advances as soon as "
        f"{s.min_samples} canary clients have labels, feedback by feedback (a canary took a median "
        f"{live_canary:.1f} s from request to decision, {live_canary / s.seconds_per_year:.1f} of a "
        "window), and the replay feeds each window's labels to the same engine in slices of "
        f"{FEEDBACK_SLICE} requests in time order (`perennial.loop.rollouts.RolloutStage.feed`): its "
        f"canaries ran {', '.join(map(str, same['canary_windows']))} window(s). What the replay leaves "
        "out is time: its candidate meets the traffic at the start of the window after the one that "
        "judged it, and a decision swaps at once, while live the candidate enters its canary a median "
        f"{lag_first:.1f} s ({lag_first / s.seconds_per_year:.1f} windows) after its data's last label "
        "(the freshness lag above: the deadline, the polls, training, the gate's window) and the servers "
        "follow a decision within their poll. The replay is the closed loop with no processing time, "
        "so where it differs, it flatters. Other differences: the replay's first candidate learned "
        "the history's last year (its window 3), the closed loop's first learned played year 0; the "
        f"canary's units are {s.clients} sticky clients live, single rows in the replay.",
    ]
    return lines


def _verdict(c: dict) -> str:
    if c["within_noise"]:
        return "within noise."
    better = "the closed loop" if c["mean"] > 0 else "the replay"
    return f"**not within noise**: {better} served better."


def _diff(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a - b:+.3f}"


# ---- main -----------------------------------------------------------------------------------------
def analyse(part: str, run: dict, out: Path) -> dict:
    result = {
        "run": run,
        "integrity": integrity(run, out),
        "by_year": served_by_year(run),
        "lags": freshness(run, out),
        "canary_seconds": canary_seconds(out),
    }
    if part == "chaos":
        result["failures"] = down_failures(run)
    return result


def print_table(results: dict) -> None:
    print("\n=== closed loop ===")
    for part in ("normal", "chaos"):
        if part not in results:
            continue
        r, check = results[part], results[part]["integrity"]
        lags = [lag for lag in r["lags"] if "parts" in lag]
        print(
            f"{part}: requests {check['requests']}, failed predict {check['failed_predict']}, feedback "
            f"{check['failed_feedback']}; acknowledged missing {check['acknowledged_missing']}, labels "
            f"{check['labels_acknowledged_missing']}; windows {check['windows']}/{check['windows_expected']} "
            f"in order {check['windows_in_order']}, skipped {check['windows_skipped']}, checkpoint "
            f"{check['checkpoint_next_window']}, rows differing {check['rows_differing']}; versions from one "
            f"window {check['versions_same_window']}, repeated decisions {check['decisions_repeated']}, lost "
            f"{len(check['decisions_lost'])}, gate-passed without rollout "
            f"{len(check['gate_passed_without_rollout'])}; rollouts {dict(check['rollouts'])}; served "
            f"accuracy {fmt(r['by_year']['overall'])}"
        )
        for row in lag_rows(lags)[2:]:
            cells = [c.strip(" *") for c in row.strip("|").split("|")]
            print(f"    lag {cells[0]:38s} p50 {cells[1]:>6s}  p95 {cells[2]:>6s}")
        if part == "chaos":
            print(f"    failures {r['failures']}; unexpected exits {r['run']['chaos']['unexpected']}")
    if "replay" in results and "normal" in results:
        for name, c in results["replay"]["comparison"].items():
            print(
                f"replay ({name}): closed loop less replay {c['mean']:+.3f} "
                f"[{c['low']:+.3f}, {c['high']:+.3f}] per year {[round(d, 3) for d in c['diffs']]}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="a directory to work in and keep (default: a temporary one)")
    parser.add_argument("--years", type=int, default=DemoSettings.years, help="years of traffic (default 12)")
    parser.add_argument(
        "--kills", type=int, default=5, help="kills of the server, and of the loop (default 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the runs, the traffic and the kills")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated (default: all)")
    parser.add_argument("--reuse", action="store_true", help="analyse the parts in --out again, running none")
    parser.add_argument("--write", action="store_true", help="put the results in docs/benchmarks.md")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if args.reuse and args.out is None:
        parser.error("--reuse needs --out")
    settings = settings_for(args)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.out is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_closed_loop-")))
        else:
            work = args.out.resolve()
            work.mkdir(parents=True, exist_ok=True)
        results: dict[str, dict] = {}
        for part in parts:
            out = work / part
            if args.reuse:
                run = json.loads((out / "bench.json").read_text())
            elif part == "replay":
                run = run_replay(out, settings)
            else:
                run = run_closed_loop(out, settings, part, kills=args.kills if part == "chaos" else 0)
            took = run["seconds"] if part == "replay" else run["seconds"]["part"]
            print(f"[{part}] took {took} s", flush=True)
            if part == "replay":
                results[part] = {"run": run} | {
                    name: replay_by_year(r["windows"], settings) for name, r in run["runs"].items()
                }
            else:
                results[part] = analyse(part, run, out)
        if "replay" in results and "normal" in results:
            closed = results["normal"]["by_year"]["served"]
            results["replay"]["comparison"] = {
                name: paired(closed, results["replay"][name]["served"], args.seed) for name in REPLAYS
            }
        print_table(results)
        body = section(results, settings, (time.perf_counter() - started) / 60, load_average(load))
        print("\n" + body)
        summary = {k: {n: v for n, v in r.items() if n != "run"} for k, r in results.items()}
        (work / "results.json").write_text(json.dumps(summary, default=str, indent=1) + "\n")
    if args.write:
        replace_section(Path("docs/benchmarks.md"), SECTION, body)


if __name__ == "__main__":
    main()
