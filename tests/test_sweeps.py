"""Sweeps with `perennial-run -m`: the experiment presets, bad values refused before any job runs,
the submitit launchers, and a sweep or a requeued job going on from its last saved window."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from hydra_plugins.perennial_sweeper.perennial_sweeper import Job, batches, pin_sweep_dir
from perennial.cli.run import CONF_DIR
from perennial.registry import Registry
from tests.test_cli_run import perennial_run
from tests.test_kill_resume_e2e import registry_view

TINY = [
    "data=synthetic",
    "data.n_samples=3000",
    "update.epochs=1",
    "loop.initial_epochs=2",
    "loop.warmup_windows=1",
    "progress=false",
]
# 20 windows: long enough to cut a job off part-way.
LONG = [*TINY, "data.n_samples=8000", "data.window=400"]
PRESETS = sorted(f.stem for f in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def sweep_jobs(params: dict[str, str]) -> list[list[str]]:
    """The overrides of every job a sweep over ``params`` runs, as Hydra's basic sweeper expands them."""
    parser = OverridesParser.create()
    axes = [
        [f"{key}={value}" for value in parser.parse_override(f"{key}={values}").sweep_string_iterator()]
        for key, values in params.items()
    ]
    return [list(job) for job in product(*axes)]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_sweeps_jobs_that_all_build(preset):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=[f"experiment={preset}"], return_hydra_config=True)
        assert cfg.hydra.sweeper._target_.endswith("PerennialSweeper")
        jobs = sweep_jobs(cfg.hydra.sweeper.params)
        assert len(jobs) > 1
        for overrides in jobs:
            job = compose(config_name="run", overrides=[f"experiment={preset}", *overrides])
            assert instantiate(job["update"]).kind in ("stateful", "stateless")
            assert instantiate(job.trigger) is not None
            assert job.strategy.buffer is None or len(instantiate(job.strategy.buffer)) == 0
            assert all(instantiate(r).name for r in job.strategy.get("regularizers") or [])


@pytest.mark.parametrize(
    "preset,launcher", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")], ids=["slurm", "local"]
)
def test_launcher_presets_extend_submitit_without_schema_warnings(preset, launcher, recwarn):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    built = instantiate(cfg.hydra.launcher)
    assert type(built).__name__ == launcher
    assert built.params["timeout_min"] == 240
    if preset == "slurm":
        assert built.params["max_num_timeout"] > 0  # a job that reaches its time limit is requeued
        assert {"partition", "gpus_per_node", "cpus_per_task", "mem_gb"} <= built.params.keys()
    # A file named like a ConfigStore entry would be validated against it, deprecated since Hydra 1.1.
    assert not [w for w in recwarn if "schema" in str(w.message)]


def test_a_bad_value_fails_the_sweep_before_any_job_and_lists_the_accepted_ones(tmp_path):
    done = perennial_run("-m", *TINY, "strategy=naive,bogus", "update.epcohs=1,2", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    accepted = ", ".join(sorted(f.stem for f in (Path(CONF_DIR) / "strategy").glob("*.yaml")))
    assert f"strategy=bogus: no such strategy config; accepted: {accepted} (jobs 2, 3)" in done.stderr
    assert "update.epcohs: no such setting; accepted: batch_size, class_weight, epochs, lr," in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_true_continues_the_newest_sweep_and_never_starts_one_silently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def pinned(*overrides: str) -> tuple[str, list[str]]:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="run", overrides=list(overrides), return_hydra_config=True)
        pin_sweep_dir(cfg)
        return cfg.hydra.sweep.dir, list(cfg.hydra.overrides.hydra)

    # ValueError, not SweepError: Hydra executes plugin modules again when it scans for plugins.
    with pytest.raises(ValueError, match="resume=true, but no sweep to resume under runs/multirun/"):
        pinned("resume=true")
    sweeps = tmp_path / "runs" / "multirun"
    for stamp in ("2025-01-01_00-00-00", "2025-02-01_00-00-00"):
        (sweeps / stamp).mkdir(parents=True)
        (sweeps / stamp / "multirun.yaml").touch()
    (sweeps / "2025-03-01_00-00-00").mkdir()  # no multirun.yaml: no sweep ever started there
    newest = str(sweeps / "2025-02-01_00-00-00")
    # Every job, wherever it runs, gets the directory the sweeper chose.
    assert pinned("resume=true") == (newest, [f"hydra.sweep.dir='{newest}'"])
    assert pinned(f"resume={sweeps / '2025-01-01_00-00-00'}")[0] == str(sweeps / "2025-01-01_00-00-00")
    fresh, _ = pinned()
    assert Path(fresh).parent == sweeps and Path(fresh).name > "2025-03-01_00-00-00"


def test_batches_never_span_a_skipped_job():
    # A launcher numbers a batch's jobs on from its first: a batch across job 2 would put job 3 in 2/.
    jobs = [Job(n, [], Path(str(n)), "new") for n in (0, 1, 3, 4, 5)]
    assert [[j.num for j in b] for b in batches(jobs, size=2)] == [[0, 1], [3, 4], [5]]


def test_a_sweep_through_submitit_runs_every_job_in_its_own_directory(tmp_path):
    sweep = tmp_path / "sweep"
    done = perennial_run(
        "-m",
        *TINY,
        "update=stateful,stateless",
        "hydra/launcher=local",
        "hydra.sweeper.max_batch_size=1",  # one job at a time: one torch process at a time
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    kinds = [json.loads((sweep / n / "summary.json").read_text())["versions"][-1]["kind"] for n in "01"]
    assert kinds == ["stateful", "stateless"]
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # each ran as a submitit job


@pytest.mark.slow
def test_a_resumed_sweep_skips_finished_jobs_and_continues_a_cut_off_one(tmp_path):
    args = ["-m", *LONG, "update=stateful,stateless"]
    reference = tmp_path / "reference"
    whole = perennial_run(*args, f"hydra.sweep.dir={reference}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]

    process = start(*args, cwd=tmp_path)  # into runs/multirun/<time>, where resume=true looks
    kill_when(process, lambda: _next_window(tmp_path.glob("runs/multirun/*/1")) >= 6)
    (sweep,) = (tmp_path / "runs" / "multirun").iterdir()
    assert (sweep / "0" / "summary.json").exists() and not (sweep / "1" / "summary.json").exists()
    finished = mtimes(sweep / "0")

    refused = perennial_run(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert refused.returncode == 2 and "already holds runs (jobs 0, 1); pass resume=true" in refused.stderr
    reordered = perennial_run("-m", *LONG, "update=stateless,stateful", "resume=true", cwd=tmp_path)
    assert (
        reordered.returncode == 2
        and "job 0 in" in reordered.stderr
        and "update=stateful]" in reordered.stderr
    )
    resumed = perennial_run(*args, "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert list((tmp_path / "runs" / "multirun").iterdir()) == [sweep]
    assert mtimes(sweep / "0") == finished  # skipped: not one file rewritten
    assert registry_view(sweep / "1") == registry_view(reference / "1")
    assert summary(sweep / "1") == summary(reference / "1")


@pytest.mark.slow
def test_a_job_signalled_by_submitit_is_requeued_and_goes_on_from_its_last_window(tmp_path):
    reference = tmp_path / "reference"
    whole = perennial_run(*LONG, f"hydra.run.dir={reference}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]

    sweep = tmp_path / "sweep"
    process = start("-m", *LONG, "hydra/launcher=local", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while _next_window([sweep / "0"]) < 6:
        assert process.poll() is None and time.monotonic() < deadline, "the job ended before its signal"
        time.sleep(0.05)
    # What SLURM sends before a time limit or a preemption: submitit checkpoints and requeues the job.
    os.kill(submitit_task(sweep), signal.SIGUSR2)
    # A job not requeued, or requeued but refused by its own directory, would fail the sweep.
    assert process.wait(timeout=300) == 0

    log = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log
    assert registry_view(sweep / "0") == registry_view(reference)
    assert summary(sweep / "0") == summary(reference)


def start(*overrides: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "perennial.cli.run", *overrides],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_when(process: subprocess.Popen, ready) -> None:
    """SIGKILL ``process`` once ``ready()``: a sweep cut off at whatever point its job has reached."""
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended before its cut-off"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _next_window(job_dirs) -> int:
    """The next window the run in the first of ``job_dirs`` would train on; -1 before its first commit."""
    for job_dir in job_dirs:
        if (job_dir / "registry" / "index.sqlite").exists():
            try:
                with Registry(job_dir / "registry", create=False) as registry:
                    state = registry.get_state("loop")
            except Exception:  # the writer may hold the lock for a moment
                return -1
            return state["next_window"] if state else -1
    return -1


def submitit_task(sweep: Path) -> int:
    """The process id of the submitit task running a job of ``sweep`` (not its controller)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process has ended
            continue
        if b"submitit.core._submit" in argv and any(str(sweep).encode() in a for a in argv):
            return int(cmdline.parent.name)
    raise AssertionError(f"no submitit task of {sweep} is running")


def mtimes(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


def summary(run_dir: Path) -> dict:
    out = json.loads((run_dir / "summary.json").read_text())
    out["compute"].pop("train_seconds")  # wall-clock time, never equal
    return out
