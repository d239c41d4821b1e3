"""`perennial-freshness`: fresher models serve better where the stream drifts, each model is trained
once however many cadences use it, and the app writes its outputs, sweeps, and refuses bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from unittest import mock

import pandas as pd
import pytest

from perennial.cli import freshness as app
from perennial.data import SyntheticStream
from perennial.evaluate.freshness import FreshnessSettings, FreshnessStudy
from perennial.learn.fit import fit
from tests.conftest import build_mlp

# 30 windows of 200 rows; the concept changes in windows 15 and 22, the second inside the scored ones.
DRIFTING = {"kind": "abrupt", "n_samples": 6000, "window": 200, "n_features": 6, "drift_points": [3000, 4400]}
EVERY, HISTORY, EVAL = [1, 4, 8], [1, 4], 10


@pytest.fixture(scope="module")
def drifting():
    """The study on the drifting stream, and how many times it called ``fit``."""
    stream = SyntheticStream(**DRIFTING, seed=0)
    build = partial(build_mlp, tuple(stream.feature_shape), stream.n_classes, hidden=(16,))
    settings = FreshnessSettings(every=EVERY, history=HISTORY, eval_windows=EVAL, epochs=5, lr=0.01)
    with mock.patch("perennial.evaluate.freshness.fit", wraps=fit) as fits:
        result = FreshnessStudy(stream, build, settings, seed=0).run()
    return result, fits.call_count


def setting(result, every, history) -> pd.Series:
    t = result.table
    (i,) = t.index[(t["every"] == every) & (t["history"] == history)]
    return t.loc[i]


@pytest.mark.parametrize("history", HISTORY)
def test_after_a_drift_retraining_every_window_serves_better_than_every_eighth(drifting, history):
    result, _ = drifting
    fresh, stale = setting(result, 1, history), setting(result, 8, history)
    assert fresh["served_accuracy"] > stale["served_accuracy"] + 0.05
    # the middle cadence lies between them, and models get worse with age after the drift
    assert (
        fresh["served_accuracy"] >= setting(result, 4, history)["served_accuracy"] >= stale["served_accuracy"]
    )
    age = result.by_age[result.by_age["history"] == history].set_index("staleness")["accuracy"]
    assert age[1] > age[8]


def test_each_model_is_trained_once_whatever_the_cadences_that_serve_from_it(drifting):
    result, fits = drifting
    # update points 30 - 10 - 8 = 12 .. 28 serve the scored windows 20 .. 29, once per history length
    assert result.trainings == fits == (EVAL + max(EVERY) - 1) * len(HISTORY) == 34
    assert len(result.table) == len(EVERY) * len(HISTORY)
    # each of the 17 update points trains on 1 and on 4 windows of 200 rows, for 5 epochs
    assert result.samples_processed == 17 * (1 + 4) * 200 * 5


def test_staleness_and_cost_follow_the_schedule(drifting):
    result, _ = drifting
    for history in HISTORY:
        assert setting(result, 1, history)["mean_staleness"] == 1.0
        assert setting(result, 4, history)["mean_staleness"] == 2.5
        assert setting(result, 8, history)["mean_staleness"] == 4.5
        assert setting(result, 4, history)["updates_per_window"] == 0.25
        # a retrain on `history` windows of 200 rows, 5 epochs, spread over `every` windows
        assert setting(result, 4, history)["samples_per_window"] == 200 * history * 5 / 4
    assert sorted(set(result.by_age["staleness"])) == list(range(1, 9))
    assert result.recommendation()["served_accuracy"] >= result.best()["served_accuracy"] - 0.01


# ---- the Hydra app --------------------------------------------------------------------------

TINY = [
    "data=synthetic",
    "data.n_samples=3000",
    "data.window=250",
    "data.n_features=4",
    "model.hidden=[8]",
    "freshness.eval_windows=3",
    "freshness.epochs=1",
    "progress=false",
]
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # in-process: leave pytest's logging alone


def run_app(monkeypatch, *overrides: str) -> None:
    monkeypatch.setattr(sys, "argv", ["perennial-freshness", *overrides, *QUIET])
    app.main()


def test_app_writes_the_table_plot_and_summary(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    run_app(monkeypatch, *TINY, "freshness.every=[1,2]", "freshness.history=[1,all]", f"hydra.run.dir={out}")
    table = pd.read_csv(out / "freshness.csv")
    assert list(table.columns) == [
        "every",
        "history",
        "served_accuracy",
        "mean_staleness",
        "updates_per_window",
        "samples_per_window",
        "train_seconds_per_window",
    ]
    assert list(zip(table["every"], table["history"], strict=True)) == [
        (1, "1"),
        (1, "all"),
        (2, "1"),
        (2, "all"),
    ]
    ages = pd.read_csv(out / "staleness.csv")
    assert list(ages.columns) == ["history", "staleness", "accuracy", "rows"] and len(ages) == 4
    assert (out / "freshness.png").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert {
        "stream",
        "windows",
        "evaluated_windows",
        "trainings",
        "compute",
        "best",
        "recommendation",
    } <= set(summary)
    assert summary["evaluated_windows"] == [9, 10, 11] and summary["trainings"] == 8
    assert len(summary["settings"]) == 4 and len(summary["staleness"]) == 4
    md = (out / "freshness.md").read_text()
    assert "| every | history | served accuracy |" in md and "Recommendation: retrain every" in md
    assert "Recommendation: retrain every" in capsys.readouterr().out


def test_multirun_sweeps_cadences_one_job_each(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perennial.cli.freshness",
            "-m",
            "freshness.every=1,2",
            "freshness.history=1",
            *TINY,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for job, every in (("0", 1), ("1", 2)):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["every"] == [every] and summary["history"] == [1]
        assert len(pd.read_csv(sweep / job / "freshness.csv")) == 1
        assert (sweep / job / "freshness.png").exists()


@pytest.mark.parametrize(
    "override,words",
    [
        ("freshness.every=0", ["freshness.every", ">= 1", "got 0"]),
        ("freshness.every=[1,2.5]", ["freshness.every", ">= 1", "got 2.5"]),
        ("freshness.history=[4,recent]", ["freshness.history", ">= 1 or 'all'", "got 'recent'"]),
        ("freshness.history=0", ["freshness.history", "got 0"]),
        ("freshness.eval_windows=0", ["freshness.eval_windows", ">= 1", "got 0"]),
        ("freshness.epochs=0", ["freshness.epochs", ">= 1", "got 0"]),
        # 12 windows; 3 scored + every 8 + history 4 - 1 = 14 needed
        ("freshness.every=8", ["has 12 windows", "needs 14", "freshness.eval_windows <= 1"]),
    ],
)
def test_bad_input_exits_2_naming_the_value_before_any_training(
    tmp_path, monkeypatch, capsys, override, words
):
    with (
        mock.patch("perennial.evaluate.freshness.fit", side_effect=AssertionError("trained")),
        pytest.raises(SystemExit) as exited,
    ):
        run_app(monkeypatch, *TINY, override, f"hydra.run.dir={tmp_path}")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("perennial-freshness: error: ")
    for word in words:
        assert word in err
