"""Performance and drift triggers, their composition and cooldown: what fires, what it records,
what survives a checkpoint, and the errors bad settings get."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perennial.data.window import Window
from perennial.drift import ADWIN, MMDDrift, UnivariateDrift
from perennial.triggers import AllOf, AnyOf, DriftTrigger, EveryWindow, Observation, PerformanceTrigger


def _window(position: int, x: np.ndarray, y: np.ndarray | None = None) -> Window:
    n = len(x)
    y = np.zeros(n, np.int64) if y is None else y
    return Window(position, position * n, (position + 1) * n, x.astype(np.float32), y, np.arange(n))


class _Data:
    """Stands in for the loop: windows of Gaussian inputs, the mean moving at ``shift_at``."""

    def __init__(self, n_windows=8, n=400, d=4, shift_at=5, shift=1.0, seed=0):
        rng = np.random.default_rng(seed)
        self.x = [rng.normal(size=(n, d)) + (shift if t >= shift_at else 0.0) for t in range(n_windows)]

    def reference(self, positions, max_rows):
        x = np.concatenate([self.x[i] for i in positions])
        return x[:max_rows]

    def obs(self, t, champion_windows=(0,), served=None, metrics=None, probabilities=None, y=None):
        return Observation(
            _window(t, self.x[t], y),
            served=served or {"accuracy": 0.9, "n": len(self.x[t])},
            champion_samples=400,
            position=t,
            champion_metrics=metrics or {},
            champion_windows=tuple(champion_windows),
            probabilities=probabilities,
            reference=self.reference,
        )


# ---- performance -------------------------------------------------------------------------------
def _perf_obs(accuracy: float, n: int = 500, validation: float = 0.9, n_validation: int = 500):
    return _Data(n_windows=1, n=4).obs(
        0,
        served={"accuracy": accuracy, "f1": accuracy, "n": n},
        metrics={"accuracy": validation, "n_holdout": n_validation},
    )


def test_performance_fires_on_a_significant_drop_not_on_noise():
    trigger = PerformanceTrigger(alpha=0.01)
    trigger.update(_perf_obs(0.80))
    firing = trigger.fires()
    assert firing is not None and firing.p_value < 1e-4
    assert firing.statistic == pytest.approx(0.80)
    assert "validation 0.900" in firing.reason
    trigger.update(_perf_obs(0.89))  # one point down on 500 rows: well within noise
    assert trigger.fires() is None
    assert 0.2 < trigger.last_test()["p_value"] < 1


def test_performance_threshold_is_an_absolute_floor():
    trigger = PerformanceTrigger(threshold=0.85, alpha=None)
    trigger.update(_perf_obs(0.86, validation=0.99))
    assert trigger.fires() is None
    trigger.update(_perf_obs(0.84))
    assert "below the threshold 0.850" in trigger.fires().reason


def test_min_drop_tolerates_a_small_known_decline():
    strict, tolerant = PerformanceTrigger(alpha=0.05), PerformanceTrigger(alpha=0.05, min_drop=0.05)
    for t in (strict, tolerant):
        t.update(_perf_obs(0.86, n=2000, n_validation=2000))
    assert strict.fires() is not None
    assert tolerant.fires() is None


def test_cooldown_holds_fire_for_that_many_windows_after_an_update():
    trigger = PerformanceTrigger(threshold=0.95, alpha=None, cooldown=2)
    fired = []
    for t in range(6):
        trigger.update(_perf_obs(0.5))
        if trigger.fires():
            fired.append(t)
            trigger.reset()
    assert fired == [2, 5]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": None, "alpha": None}, "threshold, trigger.alpha or both"),
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\), got 1.5"),
        ({"min_drop": -0.1}, "min_drop must be >= 0"),
        ({"cooldown": -1}, "cooldown must be a whole number of windows >= 0, got -1"),
    ],
)
def test_bad_performance_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PerformanceTrigger(**kwargs)


def test_unknown_metric_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"trigger\.metric must be one of \['accuracy', 'balanced_accuracy'"):
        PerformanceTrigger(metric="mcc")
    trigger = PerformanceTrigger(metric="auroc")  # a known metric these served scores lack
    with pytest.raises(ValueError, match=r"'auroc' is not a served score; available: \['accuracy', 'f1'\]"):
        trigger.update(_perf_obs(0.9))


# ---- drift -------------------------------------------------------------------------------------
def test_input_drift_fires_at_the_shift_with_its_statistic():
    data = _Data(shift_at=5)
    trigger = DriftTrigger(UnivariateDrift(alpha=0.01), reference="champion")
    fired = []
    for t in range(1, 8):
        trigger.update(data.obs(t, champion_windows=(0,)))
        firing = trigger.fires()
        if firing:
            fired.append(t)
            assert firing.p_value < 0.01 and firing.statistic > 0
            assert firing.extra == {"detector": "univariate", "compare": "inputs", "reference": "champion"}
    assert fired == [5, 6, 7]  # the champion (trained on window 0) never caught up in this test


def test_sliding_reference_stops_firing_once_the_new_level_fills_it():
    data = _Data(n_windows=10, shift_at=5)
    trigger = DriftTrigger(MMDDrift(alpha=0.01, n_permutations=200), reference="sliding", sliding_windows=2)
    fired = []
    for t in range(2, 10):
        trigger.update(data.obs(t))
        if trigger.fires():
            fired.append(t)
    assert 5 in fired and 6 in fired  # the reference still holds pre-shift windows
    assert not {8, 9} & set(fired)  # windows 6-7 now make the reference


def test_error_stream_detector_fires_when_the_champion_starts_failing():
    data = _Data(n_windows=6, n=300)
    trigger = DriftTrigger(ADWIN(delta=0.002), compare="errors")
    rng = np.random.default_rng(1)
    fired = []
    for t in range(6):
        error_rate = 0.1 if t < 3 else 0.5
        wrong = rng.random(300) < error_rate
        y = np.zeros(300, np.int64)
        probabilities = np.where(wrong[:, None], [[0.2, 0.8]], [[0.8, 0.2]])
        trigger.update(data.obs(t, probabilities=probabilities, y=y))
        if trigger.fires():
            fired.append(t)
            trigger.reset()
    assert fired and fired[0] == 3


def test_drift_trigger_state_survives_json_mid_stream():
    data = _Data(n_windows=6, n=300)
    rng = np.random.default_rng(2)
    batches = []
    for t in range(6):
        wrong = rng.random(300) < (0.1 if t < 4 else 0.6)
        batches.append(np.where(wrong[:, None], [[0.2, 0.8]], [[0.8, 0.2]]))
    a, b = DriftTrigger(ADWIN(), compare="errors"), DriftTrigger(ADWIN(), compare="errors")
    for t in range(3):
        a.update(data.obs(t, probabilities=batches[t]))
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for t in range(3, 6):
        for trigger in (a, b):
            trigger.update(data.obs(t, probabilities=batches[t]))
        assert (a.fires() is None) == (b.fires() is None)
        assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"compare": "labels"}, r"compare must be one of \['inputs', 'embeddings', 'predictions'"),
        ({"reference": "last"}, "trigger.reference must be one of"),
        ({"compare": "errors"}, "trigger.compare='errors' needs a streaming detector"),
        ({"sliding_windows": 0}, "sliding_windows must be >= 1"),
    ],
)
def test_bad_drift_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DriftTrigger(UnivariateDrift(), **kwargs)


def test_not_enough_data_is_recorded_not_fired():
    data = _Data(n_windows=2, n=5)  # five rows a window: fewer than the test needs
    trigger = DriftTrigger(UnivariateDrift())
    trigger.update(data.obs(1))
    assert trigger.fires() is None
    assert trigger.result["drift"] is None and "not enough data" in trigger.result["reason"]


# ---- composition -------------------------------------------------------------------------------
def test_any_fires_with_one_member_all_needs_every_member():
    def members():
        return [EveryWindow(), PerformanceTrigger(threshold=0.5, alpha=None)]

    any_, all_ = AnyOf(members()), AllOf(members())
    for t in (any_, all_):
        t.update(_perf_obs(0.9))
    assert any_.fires().reason.startswith("every_window:")
    assert all_.fires() is None
    for t in (any_, all_):
        t.update(_perf_obs(0.4))
    firing = all_.fires()
    assert firing is not None and "performance: accuracy 0.400 below the threshold" in firing.reason
    assert [f["name"] for f in firing.extra["fired"]] == ["every_window", "performance"]


def test_composite_state_round_trips_and_empty_lists_are_refused():
    a = AnyOf([EveryWindow(), PerformanceTrigger(threshold=0.5, alpha=None)], cooldown=1)
    a.update(_perf_obs(0.4))
    b = AnyOf([EveryWindow(), PerformanceTrigger(threshold=0.5, alpha=None)], cooldown=1)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    with pytest.raises(ValueError, match=r"non-empty trigger\.triggers"):
        AllOf([])


def test_embedding_and_prediction_drift_use_the_champion():
    import torch

    from perennial.drift import PredictionShift
    from perennial.learn import MLP, ClassifierModule

    torch.manual_seed(0)
    champion = ClassifierModule(MLP(in_shape=(4,), n_classes=3, hidden=(16,)), 3)
    assert champion.embed(np.zeros((5, 4), np.float32)).shape == (5, 16)  # the last layer's inputs
    data = _Data(shift_at=3, shift=3.0)
    for compare, detector in (
        ("embeddings", MMDDrift(alpha=0.01, n_permutations=200)),
        (None, PredictionShift()),
    ):
        trigger = DriftTrigger(detector, compare=compare)
        assert trigger.compare == (compare or "predictions")
        fired = []
        for t in (1, 2, 3):
            obs = data.obs(t)
            trigger.update(Observation(**{**vars(obs), "champion": champion}))
            fired.append(trigger.fires() is not None)
        assert fired == [False, False, True], compare
