"""perennial-run in follow mode: it processes partitions as they land, refreshes its outputs, and on
SIGTERM finishes the window in hand and exits 0; the same command run again continues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .test_cli_run import FAST

DAYS = 12


def land(directory: Path, days: range, rows: int = 80) -> None:
    """One CSV a day of a small drifting table, written under a hidden name and renamed into place."""
    directory.mkdir(parents=True, exist_ok=True)
    for day in days:
        rng = np.random.default_rng(day)
        when = (
            pd.Timestamp("2025-03-01")
            + pd.Timedelta(days=day)
            + pd.to_timedelta(np.sort(rng.integers(0, 86_400, rows)), unit="s")
        )
        amount = rng.normal(0, 1, rows)
        region = rng.choice(["north", "south"], rows)
        label = (amount + (day > DAYS // 2) * (region == "south") + rng.normal(0, 0.5, rows) > 0.3).astype(
            int
        )
        frame = pd.DataFrame({"when": when, "amount": amount.round(4), "region": region, "label": label})
        tmp = directory / f".day-{day:03d}.csv"
        frame.to_csv(tmp, index=False)
        tmp.rename(directory / f"day-{day:03d}.csv")


def command(landing: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "perennial.cli.run",
        "data=table",
        f"data.path={landing}",
        "data.time_column=when",
        "data.target=label",
        "data.window=1D",
        "logger=none",
        f"resume={run}",
        *FAST,
        *extra,
    ]


def wait_for(predicate, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_follow_processes_partitions_as_they_land_and_sigterm_exits_cleanly(tmp_path):
    landing, run = tmp_path / "landing", tmp_path / "run"
    land(landing, range(4))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        command(landing, run, "loop.follow=true", "loop.poll=0.2s"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        summary = run / "summary.json"
        # Days 0-2 are complete (day 3 is not until a later day lands): v1 on day 0, then days 1-2.
        wait_for(lambda: summary.exists() and json.loads(summary.read_text())["evaluated_windows"] == 2)
        land(landing, range(4, 8))
        wait_for(lambda: json.loads(summary.read_text())["evaluated_windows"] == 6)
        job.send_signal(signal.SIGTERM)
        _, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err[-3000:]
    assert "SIGTERM: stopping after the current window" in err

    # The same command, run again after more days landed, continues where the follower stopped.
    land(landing, range(8, DAYS))
    again = subprocess.run(command(landing, run), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = pd.read_csv(run / "windows.csv")
    assert rows["window"].tolist() == list(range(1, DAYS - 1))  # the last day waits for the next
    summary = json.loads((run / "summary.json").read_text())
    assert summary["input"]["late_rows"] == 0 and summary["input"]["files"] == DAYS


def test_quarantine_csv_keeps_the_bad_rows_of_every_night(tmp_path):
    landing, run = tmp_path / "landing", tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for days, bad_day in ((range(5), 1), (range(5, 9), 6)):
        land(landing, days)
        path = landing / f"day-{bad_day:03d}.csv"
        frame = pd.read_csv(path)
        frame.loc[3, "amount"] = np.nan  # one bad row a night
        frame.to_csv(path, index=False)
        night = subprocess.run(command(landing, run), cwd=tmp_path, env=env, capture_output=True, text=True)
        assert night.returncode == 0, night.stderr[-3000:]
    quarantine = pd.read_csv(run / "quarantine.csv")
    assert sorted(Path(s).name for s in quarantine["_source"]) == ["day-001.csv", "day-006.csv"]
    assert json.loads((run / "summary.json").read_text())["quarantined_rows"] == 2
