"""`perennial-report` on run and multirun directories: one table across jobs, the jobs that did not
finish named, plots, and a clear error where there is nothing to report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from perennial.cli.report import main

PNG = b"\x89PNG\r\n\x1a\n"
REPORT_FILES = {"report.csv", "report.md", "report_accuracy_vs_compute.png", "report_accuracy_over_time.png"}


def summary(served: float, samples: int, promoted: int = 2, rejected: int = 1) -> dict:
    """A summary.json shaped like perennial.report.run.summarize's."""
    updates = promoted + rejected
    return {
        "stream": "synthetic-abrupt",
        "windows": updates + 1,
        "evaluated_windows": updates,
        "versions": [{"id": "v1"}, *({"id": f"v1.{i}"} for i in range(1, updates + 1))],
        "champion": f"v1.{promoted}",
        "served_accuracy": served,
        "static_accuracy": 0.5,
        "recent": {"windows": updates, "served_accuracy": served - 0.01, "static_accuracy": 0.45},
        "forgetting": 0.1,
        "backward_transfer": -0.05,
        "updates": updates,
        "promoted": promoted,
        "rejected": rejected,
        "rollouts": [],
        "compute": {"train_seconds": samples / 10_000, "samples_processed": samples},
        "quarantined_rows": 0,
        "empty_windows": [],
    }


def job(path: Path, overrides: list[str] | None = None, result: dict | None = None) -> Path:
    """A job directory as perennial-run leaves it; without ``result``, one that never finished."""
    if overrides is not None:
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    path.mkdir(parents=True, exist_ok=True)
    if result is not None:
        (path / "summary.json").write_text(json.dumps(result, indent=2))
        windows = range(1, result["evaluated_windows"] + 1)
        served = result["served_accuracy"]
        pd.DataFrame({"window": windows, "served_accuracy": served}).to_csv(path / "windows.csv", index=False)
    return path


def test_a_multirun_becomes_one_table_with_a_column_per_swept_key(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "2026-01-01_00-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    settings = {
        "0": ("naive", "stateful", 0.61, 7_200),
        "1": ("replay", "stateful", 0.74, 12_000),
        "2": ("naive", "stateless", 0.69, 30_000),
        "10": ("replay", "stateless", 0.71, 36_000),
    }
    for number, (strategy, update, served, samples) in settings.items():
        # A single run keeps `progress=false`; a multirun writes it back as `progress=False`.
        progress = "progress=false" if number == "0" else "progress=False"
        overrides = [f"strategy={strategy}", f"update={update}", "data=synthetic", progress]
        job(sweep / number, overrides, summary(served, samples))

    assert main([str(sweep)]) == 0

    table = pd.read_csv(sweep / "report.csv", dtype={"job": str})
    # Hydra numbers jobs 0, 1, 2, 10: job 10 comes last, not after job 1.
    assert table["job"].tolist() == ["0", "1", "2", "10"]
    assert table.columns[:3].tolist() == ["job", "strategy", "update"]
    assert "data" not in table and "progress" not in table  # the same in every job: not swept
    assert table["strategy"].tolist() == [s[0] for s in settings.values()]
    assert table["served_accuracy"].tolist() == [s[2] for s in settings.values()]
    assert table["compute.samples_processed"].tolist() == [s[3] for s in settings.values()]
    assert table["recent.served_accuracy"].tolist() == pytest.approx([s[2] - 0.01 for s in settings.values()])
    assert table["versions"].tolist() == [4] * 4  # the list of versions, counted
    md = (sweep / "report.md").read_text()
    assert "| job | strategy | update | served acc |" in md
    assert "| 1 | replay | stateful | 0.740 |" in md
    assert "Not finished" not in md
    out = capsys.readouterr().out
    assert "replay" in out and "0.740" in out


def test_unfinished_and_broken_jobs_are_named_while_the_others_are_reported(tmp_path, capsys):
    job(tmp_path / "0", ["strategy=naive"], summary(0.6, 7_200))
    job(tmp_path / "1", ["strategy=ewc"])  # crashed: Hydra's files, no summary.json
    broken = job(tmp_path / "2", ["strategy=lwf"])
    (broken / "summary.json").write_text('{"stream": "synthetic-abrupt", "served_acc')  # killed mid-write
    no_hydra = tmp_path / "3" / "registry"  # run outside Hydra, stopped after its first checkpoint
    no_hydra.mkdir(parents=True)
    (no_hydra / "index.sqlite").write_bytes(b"")

    assert main([str(tmp_path)]) == 0

    table = pd.read_csv(tmp_path / "report.csv", dtype={"job": str})
    assert table["job"].tolist() == ["0"]
    assert table["strategy"].tolist() == ["naive"]
    md = (tmp_path / "report.md").read_text()
    assert "1 of 4 jobs finished" in md
    not_finished = md.split("## Not finished")[1].split("## Plots")[0]
    assert "| 1 | strategy=ewc | no summary.json" in not_finished
    assert "| 2 | strategy=lwf | summary.json unreadable" in not_finished
    assert "| 3 |  | no summary.json" in not_finished
    out = capsys.readouterr().out
    assert "not finished: 3 of 4 jobs" in out
    assert "summary.json unreadable" in out


def test_a_sweep_in_which_no_job_finished_exits_non_zero_and_says_so(tmp_path):
    job(tmp_path / "0", ["strategy=naive"])
    job(tmp_path / "1", ["strategy=replay"])

    assert main([str(tmp_path)]) == 1

    md = (tmp_path / "report.md").read_text()
    assert "0 of 2 jobs finished" in md and "No job finished." in md
    assert "| 1 | strategy=replay | no summary.json" in md
    assert not list(tmp_path.glob("*.png"))


def test_a_directory_without_runs_is_an_error_and_nothing_is_written(tmp_path, capsys):
    empty = tmp_path / "not-runs"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "readme.txt").write_text("no runs here\n")
    before = sorted(empty.rglob("*"))
    out = tmp_path / "report"

    assert main([str(empty), "--out", str(out)]) == 2
    assert "no perennial-run job under" in capsys.readouterr().err
    assert sorted(empty.rglob("*")) == before
    assert not out.exists()

    assert main([str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err
    assert sorted(empty.rglob("*")) == before

    missing = tmp_path / "no-such-dir"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_a_single_run_gets_its_plots_beside_its_own_and_its_overrides_as_columns(tmp_path):
    run = job(tmp_path / "run", ["update=stateless", "trigger=time", "trigger.every=5"], summary(0.7, 9_000))
    own_plot = run / "accuracy_over_time.png"
    own_plot.write_bytes(PNG + b"the run's own plot")

    assert main([str(run)]) == 0

    assert {p.name for p in run.iterdir()} >= REPORT_FILES
    for name in ("report_accuracy_vs_compute.png", "report_accuracy_over_time.png"):
        assert (run / name).read_bytes().startswith(PNG)
        assert (run / name).stat().st_size > 10_000  # axes, labels and points, not an empty canvas
    assert own_plot.read_bytes() == PNG + b"the run's own plot"
    table = pd.read_csv(run / "report.csv")
    assert table["job"].tolist() == ["."]
    assert table.columns[1:4].tolist() == ["update", "trigger", "trigger.every"]
    assert table["trigger.every"].tolist() == [5]
    assert not list(run.glob("*.tmp*"))  # atomic writes leave no temporary files behind


def test_out_puts_the_report_elsewhere_and_names_a_job_left_off_the_time_plot(tmp_path):
    sweep = tmp_path / "sweep"
    job(sweep / "0", ["strategy=naive"], summary(0.6, 7_200))
    job(sweep / "1", ["strategy=replay"], summary(0.7, 12_000))
    (sweep / "1" / "windows.csv").unlink()
    out = tmp_path / "reports" / "sweep"

    assert main([str(sweep), "--out", str(out), "--compute", "train_seconds"]) == 0

    assert {p.name for p in out.iterdir()} == REPORT_FILES
    assert not (sweep / "report.csv").exists()
    md = (out / "report.md").read_text()
    assert "no readable windows.csv): 1" in md
    assert "![report_accuracy_vs_compute](report_accuracy_vs_compute.png)" in md
    with pytest.raises(SystemExit):
        main([str(sweep), "--compute", "flops"])


def test_a_real_two_job_multirun_is_reported(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perennial.cli.run",
            "-m",
            "strategy=naive,replay",
            "data=synthetic",
            "data.n_samples=4000",
            "update.epochs=2",
            "loop.initial_epochs=3",
            "loop.warmup_windows=1",
            "progress=false",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    assert main([str(sweep)]) == 0

    table = pd.read_csv(sweep / "report.csv", dtype={"job": str})
    assert table["job"].tolist() == ["0", "1"]
    assert table["strategy"].tolist() == ["naive", "replay"]
    for i, row in table.iterrows():
        written = json.loads((sweep / str(i) / "summary.json").read_text())
        assert row["served_accuracy"] == written["served_accuracy"]
        assert row["compute.samples_processed"] == written["compute"]["samples_processed"]
        assert row["versions"] == len(written["versions"])
    assert {p.name for p in sweep.iterdir()} >= REPORT_FILES
