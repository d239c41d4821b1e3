"""A trigger resumed from its state keeps the settings it was built with: a threshold changed
between runs is in force after the resume, from Python as from the CLI, and checkpoints written when
state still carried the settings load all the same."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perennial.data.window import Window
from perennial.drift.streaming import ADWIN
from perennial.triggers import (
    AnyOf,
    Cooldown,
    DriftTrigger,
    EveryWindow,
    Observation,
    PerformanceTrigger,
    TimeTrigger,
    Trigger,
    VolumeTrigger,
)


def _obs(index: int, accuracy: float = 0.8, n: int = 40, champion_samples: int = 100) -> Observation:
    window = Window(
        index, index * n, (index + 1) * n, np.zeros((n, 2), np.float32), np.zeros(n, np.int64), np.arange(n)
    )
    return Observation(window, served={"accuracy": accuracy, "n": n}, champion_samples=champion_samples)


def _saved(trigger: Trigger, windows: int) -> dict:
    """The trigger's state after ``windows`` windows, through JSON as the loop stores it."""
    for t in range(windows):
        trigger.update(_obs(t))
    return json.loads(json.dumps(trigger.state_dict()))


@pytest.mark.parametrize(
    "before, after, windows",
    [
        # (built with, resumed with, windows seen): the first would stay quiet, the second fires.
        (lambda: TimeTrigger(every=5), lambda: TimeTrigger(every=3), 3),
        (lambda: VolumeTrigger(fraction=1.5), lambda: VolumeTrigger(fraction=1.0), 3),  # 120 of 100 rows
        (
            lambda: PerformanceTrigger(threshold=0.7, alpha=None),
            lambda: PerformanceTrigger(threshold=0.9, alpha=None),  # the window's 0.8 is below it
            1,
        ),
        (lambda: AnyOf([EveryWindow()], cooldown=4), lambda: AnyOf([EveryWindow()], cooldown=1), 2),
        (
            lambda: PerformanceTrigger(threshold=0.9, alpha=None, cooldown=4),
            lambda: PerformanceTrigger(threshold=0.9, alpha=None, cooldown=0),
            2,
        ),
    ],
    ids=["time.every", "volume.fraction", "performance.threshold", "any.cooldown", "performance.cooldown"],
)
def test_the_resumed_triggers_own_settings_are_in_force(before, after, windows):
    original = before()
    state = _saved(original, windows)
    assert original.fires() is None  # under the old setting it would not fire yet
    resumed = after()
    resumed.load_state_dict(state)
    assert resumed.fires() is not None
    assert resumed.state_dict() == state  # what was counted came back whole


def test_a_drift_triggers_cooldown_and_its_detectors_settings_stay_as_built():
    errors = DriftTrigger(ADWIN(delta=0.002), compare="errors", cooldown=5)
    errors.result = {"drift": True, "detector": "adwin", "reason": "r", "statistic": 0.5, "p_value": None}
    errors._cooldown.tick()
    state = json.loads(json.dumps(errors.state_dict()))
    resumed = DriftTrigger(ADWIN(delta=0.1), compare="errors", cooldown=0)
    resumed.load_state_dict(state)
    assert resumed._cooldown.windows == 0 and resumed._detector.delta == 0.1
    assert resumed.fires() is not None


def test_a_checkpoint_that_still_holds_settings_loads_and_they_are_ignored():
    # As written before state and settings were kept apart: settings next to the counts.
    old_time = {"every": 5, "windows_since": 3, "since": None, "latest": None}
    resumed = TimeTrigger(every=3)
    resumed.load_state_dict(old_time)
    assert resumed.every == 3 and resumed.fires().reason == "3 windows since the last update"
    old_performance = {
        "metric": "accuracy",
        "threshold": 0.7,
        "alpha": None,
        "min_drop": 0.0,
        "value": 0.8,
        "n": 40,
        "validation": None,
        "n_validation": 0,
        "cooldown": {"windows": 4, "since_update": 1},
    }
    performance = PerformanceTrigger(threshold=0.9, alpha=None)
    performance.load_state_dict(old_performance)
    assert (performance.threshold, performance._cooldown.windows) == (0.9, 0)
    assert performance.fires().reason == "accuracy 0.800 below the threshold 0.900"
    cooldown = Cooldown(1)
    cooldown.load_state_dict({"windows": 4, "since_update": 2})
    assert cooldown.windows == 1 and cooldown.ready()


def test_state_holds_no_settings():
    for trigger in (TimeTrigger(every=2), VolumeTrigger(0.5), PerformanceTrigger(threshold=0.5), Cooldown(2)):
        assert set(trigger.state_dict()).isdisjoint(
            {"every", "fraction", "metric", "threshold", "alpha", "min_drop", "windows"}
        )
