"""A real `perennial-run` process killed with SIGKILL mid-run, then resumed (slow: `make test-slow`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from perennial.registry import Registry
from tests.test_cli_run import perennial_run

ARGS = [
    "data=synthetic",
    "data.n_samples=8000",
    "data.window=400",
    "update.epochs=4",
    "loop.initial_epochs=4",
    "loop.warmup_windows=1",
    "progress=false",
]


def registry_view(run_dir):
    registry = Registry(run_dir / "registry", create=False)
    versions = [(v.id, v.parent, v.status, v.trained_on_windows, v.n_samples) for v in registry.versions()]
    decisions = [(d["version"], d["window"], d["decision"]) for d in registry.decisions()]
    registry.close()
    return versions, decisions


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_same_registry_and_summary(tmp_path):
    whole = perennial_run(*ARGS, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "perennial.cli.run", *ARGS, f"hydra.run.dir={killed_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill once a few windows are committed, at whatever point it is
        index = killed_dir / "registry" / "index.sqlite"
        if index.exists():
            try:
                with Registry(killed_dir / "registry", create=False) as registry:
                    state = registry.get_state("loop")
            except Exception:  # the writer may hold the lock for a moment
                state = None
            if state and state["next_window"] >= 6:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "summary.json").exists(), "the run finished before it could be killed"

    resumed = perennial_run(*ARGS, f"hydra.run.dir={killed_dir}", f"resume={killed_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert registry_view(killed_dir) == registry_view(tmp_path / "whole")
    summaries = [json.loads((d / "summary.json").read_text()) for d in (tmp_path / "whole", killed_dir)]
    for summary in summaries:
        summary["compute"].pop("train_seconds")
    assert summaries[0] == summaries[1]
