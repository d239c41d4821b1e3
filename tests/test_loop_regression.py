"""Regression through the whole loop: a numeric target is served, scored (MSE, MAE, R²), judged by
the paired gate on per-row errors, guarded against v1 never updated, watched by the triggers, and
updated with replay and regularisers; what cannot serve a regressor is refused before training."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
import torch

import perennial as pn
from perennial.data.window import Window
from perennial.drift.streaming import ADWIN
from perennial.evaluate.gate import PromotionGate
from perennial.evaluate.metrics import RegressionEvaluation
from perennial.evaluate.served import compare_served, paired_sums, pooled_served
from perennial.learn.module import RegressorModule, build_model
from perennial.learn.strategies import DER, EWC, LwF
from perennial.registry import Registry
from perennial.report.sweep import collect, write_outputs
from perennial.rollout.live import make_rollout
from perennial.triggers import DriftTrigger, Observation, PerformanceTrigger

from .regression_helpers import DriftingRegression
from .test_cli_run import FAST, perennial_run


def fast(**parts):
    return {
        "update": pn.StatefulUpdate(epochs=3),
        "settings": pn.LoopSettings(warmup_windows=2, initial_epochs=10),
        "model": functools.partial(pn.MLP, hidden=(32,)),
        **parts,
    }


def test_a_regression_stream_runs_through_the_loop_and_serves_better_than_v1(tmp_path):
    result = pn.deploy(DriftingRegression(n_windows=10), run_dir=tmp_path, **fast()).run()
    table = result.table()
    for column in ("served_mse", "static_mse", "served_mae", "static_mae", "served_r2"):
        assert table[column].notna().all(), column
    assert "served_accuracy" not in table
    assert result.task == "regression"
    # The weights drift every window: updated versions must track them, v1 cannot.
    assert result.recent(4).served_mse < 0.7 * result.recent(4).static_mse
    promoted = table[table["decision"] == "promoted"]
    assert len(promoted) >= 1
    assert (promoted["fresh_lower_bound"] > 0).all()  # tolerance 0: shown better, relatively
    registry = Registry(tmp_path / "registry", create=False, readonly=True)
    record = registry.get(result.champion)
    assert {"mse", "mae", "r2", "n_holdout"} <= set(record.metrics)
    assert registry.load_extra(result.champion, "pipeline")["task"] == "regression"
    assert "served_mse" in repr(result)


def test_every_decision_names_the_relative_mse_and_the_test(tmp_path):
    result = pn.deploy(DriftingRegression(n_windows=8), run_dir=tmp_path, **fast()).run()
    gate_decisions = [d for d in result.decisions if d["numbers"].get("test")]
    assert gate_decisions
    for decision in gate_decisions:
        numbers = decision["numbers"]
        assert numbers["test"] == "t" and numbers["metric"] == "mse"
        assert "fresh_candidate_mse" in numbers and "fresh_candidate_accuracy" not in numbers


def test_a_resumed_regression_run_equals_an_uninterrupted_one(tmp_path):
    whole = pn.deploy(DriftingRegression(n_windows=8), run_dir=tmp_path / "whole", **fast()).run()

    class Growing(DriftingRegression):
        """The same windows, landing over two runs (the source's config stays the same)."""

        growing = True
        landed = 5

        def windows(self):
            return self._windows[: Growing.landed]

    pn.deploy(Growing(n_windows=8), run_dir=tmp_path / "parts", **fast()).run()
    Growing.landed = 8
    resumed = pn.deploy(Growing(n_windows=8), run_dir=tmp_path / "parts", **fast()).run(resume=True)
    columns = ["champion", "served_mse", "static_mse", "decision"]
    pd.testing.assert_frame_equal(whole.table()[columns], resumed.table()[columns])


@pytest.mark.parametrize(
    "regularizers, buffer",
    [
        ((EWC(lam=10.0),), None),
        ((LwF(alpha=1.0),), None),
        ((DER(alpha=0.3),), pn.ReservoirBuffer(capacity=300)),
    ],
    ids=["ewc", "lwf", "derpp"],
)
def test_each_regulariser_trains_a_regressor_and_hands_its_state_down(tmp_path, regularizers, buffer):
    result = pn.deploy(
        DriftingRegression(n_windows=6), run_dir=tmp_path, regularizers=regularizers, buffer=buffer, **fast()
    ).run()
    registry = Registry(tmp_path / "registry", create=False, readonly=True)
    versions = registry.versions()
    assert len(versions) > 2
    assert registry.load_extra(versions[-1].id, "strategy")
    assert np.isfinite(result.table()["served_mse"]).all()


def test_the_regularisers_penalise_a_regressor_on_its_standardised_scale():
    module = RegressorModule(functools.partial(pn.MLP, hidden=(8,))(in_shape=(3,), n_classes=1))
    module.fit_target(np.array([1000.0, 1200.0, 800.0]))
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    lwf = LwF(alpha=1.0)
    lwf.begin(module, {"seen_classes": torch.ones(1, dtype=torch.bool)})
    with torch.no_grad():
        outputs = module(torch.from_numpy(x))
    assert float(lwf.penalty(module, {"x": torch.from_numpy(x)}, outputs)) == pytest.approx(0.0, abs=1e-9)
    moved = outputs + float(module.target_scale)  # one standard deviation off on every row
    assert float(lwf.penalty(module, {"x": torch.from_numpy(x)}, moved)) == pytest.approx(1.0, rel=1e-4)


def test_a_regressor_learns_a_target_far_from_unit_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype(np.float32)
    y = (10_000 + 2_000 * x[:, 0] - 500 * x[:, 1]).astype(np.float32)
    update = pn.StatelessUpdate(epochs=20)
    build = functools.partial(
        build_model, functools.partial(pn.MLP, hidden=(16,)), (3,), 1, task="regression"
    )
    trained = update.run(build, None, {0: (x, y)}, [0], None, 0, None, [])
    scores = RegressionEvaluation.of(y, trained.module.predict_values(x))
    assert scores.r2 > 0.98


@pytest.mark.parametrize(
    "parts, named",
    [
        ({"buffer": pn.ClassBalancedBuffer(capacity=100)}, "strategy=replay_balanced"),
        ({"update": pn.StatefulUpdate(epochs=1, class_weight="balanced")}, "update.class_weight"),
        ({"screen": pn.WindowScreen()}, "screen=default"),
        ({"rollout": make_rollout("interleave", {})}, "rollout=interleave"),
        ({"gate": PromotionGate(test="score")}, "gate.test=score"),
        ({"gate": PromotionGate(metric="f1")}, "gate.metric"),
    ],
    ids=["balanced-buffer", "class-weight", "screen", "interleave", "score-test", "classifier-metric"],
)
def test_what_cannot_serve_a_regressor_is_refused_before_training(tmp_path, parts, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        pn.deploy(DriftingRegression(n_windows=5), run_dir=tmp_path, **{**fast(), **parts}).run()
    assert not (tmp_path / "registry").exists() or not Registry(tmp_path / "registry").versions()


# ---- the served evidence: rollback and guard ------------------------------------------------------


def _evaluation(errors: np.ndarray) -> RegressionEvaluation:
    return RegressionEvaluation.of(np.zeros(len(errors)), errors)


def test_a_served_line_with_more_error_is_significantly_worse_and_an_equal_one_is_not():
    rng = np.random.default_rng(0)
    theirs = rng.normal(size=2000)
    worse = compare_served(_evaluation(1.3 * theirs), _evaluation(theirs), alpha=0.05)
    assert worse.worse and worse.diff == pytest.approx(1 - 1.69, abs=1e-9)
    equal = compare_served(_evaluation(theirs + 0.01 * rng.normal(size=2000)), _evaluation(theirs), 0.05)
    assert not equal.worse
    # Pooled over windows from their sums, as the guard keeps them across a restart.
    sums = [
        json.loads(json.dumps(paired_sums(_evaluation(1.3 * t), _evaluation(t)))) for t in np.split(theirs, 4)
    ]
    pooled = pooled_served(sums, "regression", 0.05)
    assert pooled.n == 2000 and pooled.upper_bound == pytest.approx(worse.upper_bound)
    assert set(pooled.levels()) == {"served_mse", "static_mse"}


def test_the_guard_restores_v1_when_updates_serve_more_error(tmp_path):
    # A stable stream, a gate that passes every candidate and no rollback, and an update that learns
    # next to nothing (one epoch from scratch on one window): only the guard stands between the
    # users and ever worse versions.
    result = pn.deploy(
        DriftingRegression(n_windows=12, drift=0.0),
        run_dir=tmp_path,
        gate=PromotionGate(tolerance=1.0, past_windows=0),
        **{
            **fast(),
            "update": pn.StatelessUpdate(epochs=1, history=1),
            "settings": pn.LoopSettings(warmup_windows=2, initial_epochs=10, rollback=False),
        },
    ).run()
    reverts = result["guard"]["reverts"]
    assert reverts and reverts[0]["restored"] == "v1" and reverts[0]["upper_bound"] < 0
    assert (result.table()["guard"] == "reverted").any()
    assert set(result["guard_report"]) >= {"served_mse", "static_mse", "diff", "upper_bound", "worse"}


# ---- triggers ---------------------------------------------------------------------------------------


def _regression_obs(errors: np.ndarray, validation_mse: float) -> Observation:
    n = len(errors)
    y = np.zeros(n, np.float32)
    window = Window(0, 0, n, np.zeros((n, 2), np.float32), y, np.arange(n))
    scores = RegressionEvaluation.of(y, errors)
    return Observation(
        window,
        scores.scores(),
        100,
        champion_metrics={"mse": validation_mse, "n_holdout": 200},
        probabilities=errors.astype(np.float32)[:, None],
    )


def test_the_performance_trigger_fires_on_a_significant_rise_in_error_not_on_noise():
    rng = np.random.default_rng(1)
    trigger = PerformanceTrigger(alpha=0.01, min_drop=0.0)
    trigger.update(_regression_obs(rng.normal(size=400), validation_mse=1.0))
    assert trigger.fires() is None
    trigger.update(_regression_obs(1.6 * rng.normal(size=400), validation_mse=1.0))
    firing = trigger.fires()
    assert (
        firing is not None and "mse" in firing.reason and "above the champion's validation" in firing.reason
    )
    floor = PerformanceTrigger(threshold=2.0, alpha=None)
    floor.update(_regression_obs(2 * rng.normal(size=400), validation_mse=1.0))
    assert "above the threshold" in floor.fires().reason


def test_a_streaming_drift_trigger_watches_the_residuals():
    rng = np.random.default_rng(2)
    trigger = DriftTrigger(ADWIN())
    module = RegressorModule(functools.partial(pn.MLP, hidden=(4,))(in_shape=(2,), n_classes=1))
    calm = np.r_[rng.normal(size=600), 4 * rng.normal(size=600)]
    obs = _regression_obs(calm, 1.0)
    trigger.update(Observation(obs.window, obs.served, 100, champion=module, probabilities=obs.probabilities))
    firing = trigger.fires()
    assert firing is not None and "absolute residuals" in firing.reason


# ---- no code: a user's CSV -----------------------------------------------------------------------


def test_a_users_csv_with_a_numeric_target_runs_from_the_command_line(tmp_path):
    rng = np.random.default_rng(0)
    n = 1500
    days = pd.date_range("2024-01-01", periods=n, freq="6h")
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    trend = np.linspace(0, 3, n)
    frame = pd.DataFrame(
        {
            "when": days.astype(str),
            "x1": x1,
            "store": rng.choice(["north", "south"], n),
            "x2": x2,
            "demand": 200 + 30 * x1 * (1 + trend) - 10 * x2 + rng.normal(size=n),
        }
    )
    frame.to_csv(tmp_path / "demand.csv", index=False)
    done = perennial_run(
        "data=table",
        f"data.path={tmp_path / 'demand.csv'}",
        "data.time_column=when",
        "data.target=demand",
        "data.task=regression",
        "data.window=30D",
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "regression"
    assert summary["served_mse"] > 0 and summary["static_mse"] > 0
    for name in ("windows.csv", "r2_matrix.csv", "mse_over_time.png", "r2_matrix.png"):
        assert (tmp_path / "run" / name).exists(), name
    assert "served mse" in done.stdout
    # perennial-report reads it as a regression run: its figures are MSE, its plots drawn.
    report = collect(tmp_path / "run")
    assert report.metric == "mse" and "served mse" in report.figures and "served acc" not in report.figures
    written = write_outputs(report, tmp_path / "report")
    assert "served mse" in (tmp_path / "report" / "report.md").read_text() and len(written) == 4


def test_a_non_numeric_regression_target_is_a_clear_error_from_the_command_line(tmp_path):
    frame = pd.DataFrame({"when": ["2024-01-01", "2024-01-02"], "x": [1.0, 2.0], "demand": ["12", "lots"]})
    frame.to_csv(tmp_path / "bad.csv", index=False)
    done = perennial_run(
        "data=table",
        f"data.path={tmp_path / 'bad.csv'}",
        "data.time_column=when",
        "data.target=demand",
        "data.task=regression",
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "lots" in done.stderr and "demand" in done.stderr and "Traceback" not in done.stderr
