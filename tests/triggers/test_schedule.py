"""Schedule triggers: every window, every N windows or a duration, and data volume; all resumable."""

import json

import numpy as np
import pandas as pd
import pytest

from perennial.data.window import Window
from perennial.triggers import EveryWindow, Observation, TimeTrigger, Trigger, VolumeTrigger

WEEK = pd.Timedelta("7D")
ORIGIN = pd.Timestamp("2024-01-01")


def _window(index: int, n: int = 10, dated: bool = True) -> Window:
    start, end = (
        (ORIGIN + index * WEEK, ORIGIN + (index + 1) * WEEK) if dated else (index * n, (index + 1) * n)
    )
    return Window(index, start, end, np.zeros((n, 2), np.float32), np.zeros(n, np.int64), np.arange(n))


def _obs(index: int, n: int = 10, champion_samples: int = 100, dated: bool = True) -> Observation:
    return Observation(_window(index, n, dated), served={"accuracy": 0.9}, champion_samples=champion_samples)


def _fired(trigger: Trigger, n_windows: int, **obs) -> list[int]:
    """Windows after which the trigger fired, resetting it each time (as the loop does after an update)."""
    fired = []
    for t in range(n_windows):
        trigger.update(_obs(t, **obs))
        if trigger.fires() is not None:
            fired.append(t)
            trigger.reset()
    return fired


def test_every_window_fires_every_window_and_resets():
    trigger = EveryWindow()
    assert trigger.fires() is None
    trigger.update(_obs(0))
    firing = trigger.fires()
    assert firing is not None and firing.name == "every_window"
    trigger.reset()
    assert trigger.fires() is None
    assert _fired(EveryWindow(), 5) == [0, 1, 2, 3, 4]


def test_every_three_windows():
    trigger = TimeTrigger(every=3)
    assert _fired(trigger, 10) == [2, 5, 8]
    assert trigger.windows_since == 1


def test_window_count_firing_says_how_many():
    trigger = TimeTrigger(every="2")  # counts may come from a config as strings
    trigger.update(_obs(0))
    assert trigger.fires() is None
    trigger.update(_obs(1))
    assert trigger.fires().reason == "2 windows since the last update"


def test_a_duration_fires_once_it_has_passed():
    trigger = TimeTrigger(every="14D")
    assert _fired(trigger, 8) == [1, 3, 5, 7]  # weekly windows: every second one
    assert _fired(TimeTrigger(every="20D"), 9) == [2, 5, 8]


def test_a_duration_counts_from_the_end_of_the_last_update():
    trigger = TimeTrigger(every="14D")
    for t in range(3):  # 21 days, no update asked for yet
        trigger.update(_obs(t))
    assert "21 days" in trigger.fires().reason
    trigger.reset()
    trigger.update(_obs(3))
    assert trigger.fires() is None
    trigger.update(_obs(4))
    assert trigger.fires() is not None


def test_a_duration_with_row_position_windows_names_the_window():
    trigger = TimeTrigger(every="14D")
    with pytest.raises(ValueError, match=r"window 0 ends at 10.*not a timestamp.*trigger\.every=2"):
        trigger.update(_obs(0, dated=False))


@pytest.mark.parametrize("every", [0, -1, "0", "soon"])
def test_bad_every_is_refused_naming_the_value(every):
    with pytest.raises(ValueError, match=f"got {every!r}" if every == "soon" else f"got {every}"):
        TimeTrigger(every=every)


def test_volume_fires_when_new_data_reaches_the_fraction():
    trigger = VolumeTrigger(fraction=0.25)
    fired = []
    for t in range(8):
        trigger.update(_obs(t, n=10, champion_samples=100))
        if firing := trigger.fires():
            fired.append((t, firing.statistic))
            trigger.reset()
    assert fired == [(2, pytest.approx(0.3)), (5, pytest.approx(0.3))]


def test_volume_follows_the_champion_size():
    trigger = VolumeTrigger(fraction=0.5)
    trigger.update(_obs(0, n=60, champion_samples=100))
    assert trigger.fires() is not None
    trigger.update(_obs(1, n=0, champion_samples=400))  # a bigger champion needs more new data
    assert trigger.fires() is None
    trigger.update(_obs(2, n=140, champion_samples=400))
    assert "200 new labelled examples, 50% of the champion's" in trigger.fires().reason


def test_volume_rejects_a_non_positive_fraction():
    with pytest.raises(ValueError, match="got 0"):
        VolumeTrigger(fraction=0)


@pytest.mark.parametrize(
    "make", [EveryWindow, lambda: TimeTrigger(every=4), lambda: TimeTrigger(every="20D"), VolumeTrigger]
)
def test_resumed_trigger_equals_uninterrupted_one(make):
    uninterrupted = make()
    whole = _fired(uninterrupted, 11)

    first = make()
    head = _fired(first, 5)
    state = json.loads(json.dumps(first.state_dict()))  # the loop stores it as JSON
    resumed = make()
    resumed.load_state_dict(state)
    tail = []
    for t in range(5, 11):
        resumed.update(_obs(t))
        if resumed.fires() is not None:
            tail.append(t)
            resumed.reset()
    assert head + tail == whole
    assert resumed.state_dict() == uninterrupted.state_dict()


def test_state_mid_count_is_restored():
    trigger = TimeTrigger(every=3)
    trigger.update(_obs(0))
    trigger.update(_obs(1))
    restored = TimeTrigger(every=3)
    restored.load_state_dict(trigger.state_dict())
    assert restored.fires() is None
    restored.update(_obs(2))
    assert restored.fires() is not None
