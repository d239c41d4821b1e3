"""Rollouts of regressors: each labelled request's outcome is its squared error. An A/B test and a
canary hold equal regressors apart from chance (at most alpha of seeded runs, plus simulation noise)
and catch one with 30% more error; a shadow's paired test on the same requests promotes a better
one; the loop's replay writes the served mean squared error and resumes mid-rollout; the task travels
in the settings a server rebuilds the engine from."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import perennial
from perennial.data.window import Stream, Window
from perennial.learn.module import RegressorModule
from perennial.loop.rollouts import RolloutStage
from perennial.registry import Registry, VersionRecord
from perennial.rollout.live import AB, Interleave, make_rollout
from perennial.serve.rollouts import engine as server_engine
from perennial.tracking.base import RunLogger

ALPHA = 0.05
# Seeded runs per error-rate check; the bound allows 2.5 binomial standard deviations above alpha.
RUNS = 200
NOISE = 2.5 * (ALPHA * (1 - ALPHA) / RUNS) ** 0.5


class Linear(Stream):
    """``n`` windows of ``rows`` rows, ``y = 50 + 10 x·w_i + noise``, one weight drifting a window."""

    def __init__(self, n: int = 8, rows: int = 300, seed: int = 0) -> None:
        self.name, self.feature_shape, self.classes, self.task = "linear", (4,), [], "regression"
        self.issues, self.label_delay, self.polled = [], 0, 0
        self.quarantine = pd.DataFrame()
        rng = np.random.default_rng(seed)
        self._windows = []
        for i in range(n):
            x = rng.normal(size=(rows, 4)).astype(np.float32)
            w = np.array([1.0, -2.0, 0.5 + 0.2 * i, 0.0])
            y = (50 + 10 * (x @ w) + rng.normal(size=rows)).astype(np.float32)
            self._windows.append(Window(i, i, i, x, y, np.arange(rows) + i * rows))

    def windows(self) -> list[Window]:
        return self._windows


def _traffic(
    kind: str, settings: dict, error_ratio: float, seed: int, requests: int, batch: int = 200
) -> str:
    """Labelled traffic through a regression engine until it decides (or ``requests`` were served):
    the candidate (v2) errs with ``error_ratio`` times the champion's mean squared error."""
    live = make_rollout(kind, {**settings, "task": "regression"})
    live.begin("v1", "v2", salt=f"sim-{seed}")
    rng = np.random.default_rng(seed)
    for start in range(0, requests, batch):
        arms = live.assign(np.arange(start, start + batch))
        y = rng.normal(50, 10, batch)
        spread = 2.0 * np.where(arms == "v2", np.sqrt(error_ratio), 1.0)
        live.record(arms, y + rng.normal(size=batch) * spread, y)
        if live.decide() != "continue":
            break
    return live.decide()


def _rate(outcomes: list[str], outcome: str) -> float:
    return float(np.mean([o == outcome for o in outcomes]))


def test_an_ab_test_holds_equal_regressors_and_rejects_one_with_30_percent_more_error():
    equal = [_traffic("ab", {"share": 0.5}, 1.0, seed, 3000) for seed in range(RUNS)]
    # Any decision between equal models is a false one (measured: 6 of 200, 3%).
    assert 1 - _rate(equal, "continue") <= ALPHA + NOISE
    worse = [_traffic("ab", {"share": 0.5}, 1.3, seed, 3000) for seed in range(50)]
    assert _rate(worse, "reject") >= 0.9  # measured: all 50
    better = [_traffic("ab", {"share": 0.5}, 1 / 1.3, seed, 3000) for seed in range(50)]
    assert _rate(better, "promote") >= 0.9


def test_a_canary_completes_with_an_equal_regressor_and_rolls_back_one_with_30_percent_more_error():
    settings = {"min_samples": 300}
    equal = [_traffic("canary", settings, 1.0, seed, 20_000) for seed in range(RUNS)]
    assert _rate(equal, "reject") <= ALPHA + NOISE  # measured: 3 of 200, 1.5%
    assert _rate(equal, "promote") == 1 - _rate(equal, "reject")  # the others walked every step
    worse = [_traffic("canary", settings, 1.3, seed, 20_000) for seed in range(50)]
    assert _rate(worse, "reject") >= 0.9  # measured: all 50


def test_the_canary_guards_squared_error_lower_is_better():
    canary = make_rollout("canary", {"steps": [0.5, 1.0], "min_samples": 300, "task": "regression"})
    canary.begin("v1", "v2", salt="guard")
    rng = np.random.default_rng(0)
    while canary.decide() == "continue":
        arms = canary.assign(rng.integers(0, 10**9, 100))
        y = rng.normal(50, 10, 100)
        canary.record(arms, y + rng.normal(size=100) * np.where(arms == "v2", 4.0, 2.0), y)
    summary = canary.summary()
    assert canary.decide() == "reject" and summary["metric"] == "squared_error"
    assert summary["effect"] > 0  # the candidate's mean squared error minus the champion's
    assert summary["timeline"][-1]["guards"] == ["squared_error"]


def _shadow(settings: dict, error_ratio: float, seed: int, requests: int = 3000, batch: int = 500) -> str:
    """A regression shadow on paired traffic: both models miss the same hard rows alike (a shared
    error), and the candidate's own error has ``error_ratio`` times the champion's variance."""
    live = make_rollout("shadow", {**settings, "task": "regression"})
    live.begin("v1", "v2", salt="shadow")
    rng = np.random.default_rng(seed)
    for _ in range(0, requests, batch):
        y = rng.normal(50, 10, batch)
        shared = rng.normal(0, 1.5, batch)
        champion = (y + shared + rng.normal(size=batch))[:, None]
        candidate = (y + shared + rng.normal(size=batch) * np.sqrt(error_ratio))[:, None]
        arms = live.serve(np.arange(batch), champion, candidate)
        assert set(arms) == {"v1"}  # the champion answers everyone
        live.feedback(arms, champion, candidate, y)
        if live.decide() != "continue":
            break
    return live.decide()


def test_a_shadow_promotes_a_regressor_with_less_paired_error_and_not_an_equal_or_worse_one():
    better = {"criterion": "better", "margin": 0.0}
    equal = [_shadow(better, 1.0, seed) for seed in range(RUNS)]
    assert _rate(equal, "promote") <= ALPHA + NOISE  # measured: 2 of 200
    assert _rate([_shadow(better, 0.5, seed) for seed in range(50)], "promote") >= 0.9
    assert _rate([_shadow(better, 1.5, seed) for seed in range(50)], "promote") <= 0.02
    # not_worse takes its margin relative to the champion's mean squared error
    assert _rate([_shadow({"margin": 0.2}, 1.0, seed) for seed in range(20)], "promote") >= 0.9


def test_regression_answers_are_the_values_served_and_the_row_outcome_their_squared_error():
    live = make_rollout("ab", {"task": "regression"})
    live.begin("v1", "v2", salt="answers")
    ours, theirs = np.array([[1.0], [2.0], [3.0]]), np.array([[10.0], [20.0], [30.0]])
    arms = np.array(["v1", "v2", "v1"], dtype=object)
    assert live.answer(arms, ours, theirs).tolist() == [1.0, 20.0, 3.0]
    assert live.outcomes(np.array([1.0, 20.0]), np.array([2.0, 17.0])).tolist() == [1.0, 9.0]
    with pytest.raises(ValueError, match=r"labels must be finite numbers, got .*nan"):
        live.record(["v1"], [1.0], [float("nan")])


@pytest.mark.parametrize("kind", ["ab", "canary", "shadow"])
def test_a_regression_engine_rebuilt_from_its_settings_and_state_decides_as_the_original(kind):
    """What a server does: the registry keeps the settings (task among them) and the JSON state."""
    original = make_rollout(kind, {"task": "regression"})
    assert original.settings["task"] == "regression"
    original.begin("v1", "v2", salt="rt")
    rng = np.random.default_rng(1)

    def batch(live):
        arms = live.assign(rng.integers(0, 10**9, 120))
        y = rng.normal(50, 10, 120)
        theirs = y + rng.normal(size=120)
        served = np.where(arms == "v2", theirs, y + 1.3 * rng.normal(size=120))
        return arms, served, y, theirs.tolist()

    arms, served, y, theirs = batch(original)
    original.record(arms, served, y, theirs if original.shadows else None)
    rebuilt = make_rollout(kind, json.loads(json.dumps(original.settings)))
    rebuilt.load_state_dict(json.loads(json.dumps(original.state_dict())), salt="rt")
    assert rebuilt.task == "regression" and rebuilt.summary() == original.summary()
    for _ in range(8):
        arms, served, y, theirs = batch(original)
        for live in (original, rebuilt):
            live.record(arms, served, y, theirs if live.shadows else None)
    assert rebuilt.summary() == original.summary() and rebuilt.decide() == original.decide()


def test_classification_settings_stay_as_they_were_and_interleave_refuses_regression():
    assert "task" not in make_rollout("canary", {}).settings
    assert AB().for_task("regression").for_task("classification").settings == AB().settings
    with pytest.raises(ValueError, match=r"interleave ranks classes.*shadow, ab or canary"):
        make_rollout("interleave", {"task": "regression"})
    with pytest.raises(ValueError, match="interleave ranks classes"):
        Interleave().for_task("regression")
    with pytest.raises(ValueError, match=r"rollout.task must be one of \['classification', 'regression'\]"):
        make_rollout("ab", {"task": "ranking"})


def test_the_loop_hands_a_regressor_to_the_servers_with_the_task_in_the_request(tmp_path):
    registry = Registry(tmp_path / "registry")
    for version in ("v1", "v2"):
        registry.add(VersionRecord(version, None, "stateless"), {"w": torch.zeros(1)})
    registry.promote("v1")
    stage = RolloutStage(make_rollout("canary", {"on": "server"}), registry, None, RunLogger(), seed=0)
    state = SimpleNamespace(champion="v1", rollout=None)
    stage.hand_over(state, "v2", RegressorModule(torch.nn.Linear(4, 1)), t=3)
    record = registry.rollouts.get(state.rollout["id"])
    assert record.settings["task"] == "regression"
    assert server_engine(record).metric == "squared_error"
    registry.close()


def test_a_regression_loop_replays_a_canary_writes_served_mse_and_resumes_mid_rollout(tmp_path):
    def loop(n: int):
        return perennial.deploy(
            Linear(n=n),
            partial(perennial.MLP, hidden=(16,)),
            run_dir=tmp_path,
            rollout=perennial.Canary(steps=(0.5, 1.0), min_samples=200),
        )

    first = loop(7)
    first.run()
    assert first.state.rollout and first.state.rollout["candidate"] == "v1.1"  # mid-rollout
    first.registry.close()
    resumed = loop(8)
    resumed.run(resume=True)  # the engine's task comes from the candidate it loads
    rows = {r["window"]: r for r in resumed.registry.window_rows()}
    rolled = [w for w, r in rows.items() if r["rollout"] == "canary"]
    assert rolled == [5, 6, 7]
    assert [rows[w]["rollout_decision"] for w in rolled] == ["continue", "continue", "promote"]
    for w in rolled:
        assert "served_accuracy" not in rows[w] and np.isfinite(rows[w]["served_mse"])
        assert rows[w]["served_mae"] ** 2 <= rows[w]["served_mse"]
    assert resumed.registry.champion() == "v1.1"
    resumed.registry.close()
