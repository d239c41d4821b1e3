"""ADWIN and Page–Hinkley on a model's 0/1 errors: a jump in the error rate is caught quickly, a
steady rate raises (almost) no alarms, and a detector resumed from its state carries on exactly."""

import json

import numpy as np
import pytest

from perennial.drift import ADWIN, PageHinkley, StreamDetector

CHANGE_AT = 1000


def _errors(seed: int, before: float = 0.1, after: float = 0.5, n: int = 2000) -> list[float]:
    """0/1 errors whose rate jumps from ``before`` to ``after`` at ``CHANGE_AT``."""
    rng = np.random.default_rng(seed)
    rate = np.where(np.arange(n) < CHANGE_AT, before, after)
    return (rng.random(n) < rate).astype(float).tolist()


def _detections(detector: StreamDetector, values: list[float]) -> list[int]:
    return [i for i, value in enumerate(values) if detector.update(value)]


@pytest.mark.parametrize("make", [ADWIN, PageHinkley])
@pytest.mark.parametrize("seed", range(5))
def test_an_error_rate_jump_is_detected_within_a_few_hundred_samples(make, seed):
    detections = _detections(make(), _errors(seed))
    assert detections, "the jump was missed"
    assert CHANGE_AT <= detections[0] < CHANGE_AT + 300


@pytest.mark.parametrize("seed", range(3))
def test_adwin_raises_almost_no_false_alarms_on_a_steady_error_rate(seed):
    # Measured: no alarm at all on seeds 0-9 of this stream.
    assert len(_detections(ADWIN(), _errors(seed, 0.2, 0.2, n=10_000))) <= 2


def test_adwin_forgets_the_old_regime_after_a_detection():
    adwin = ADWIN()
    _detections(adwin, _errors(0))
    assert adwin.n_detections == 1
    assert adwin.width < 2000 - CHANGE_AT + 100
    assert adwin.estimation == pytest.approx(0.5, abs=0.05)


def test_adwin_window_is_bounded():
    adwin = ADWIN(max_window=100)
    _detections(adwin, [0.0] * 500)
    assert adwin.width == 100


def test_page_hinkley_watches_the_direction_it_is_asked_to():
    falling = _errors(0, before=0.5, after=0.1)
    assert _detections(PageHinkley(mode="up"), falling) == []
    assert _detections(PageHinkley(mode="down"), falling)
    assert _detections(PageHinkley(mode="both"), falling)


@pytest.mark.parametrize("make", [ADWIN, PageHinkley])
def test_a_detector_restored_mid_stream_gives_the_same_outputs_as_an_uninterrupted_one(make):
    values = _errors(1) + _errors(2, before=0.5, after=0.05)
    uninterrupted = make()
    expected = [uninterrupted.update(v) for v in values]
    for stop in (CHANGE_AT - 7, CHANGE_AT + 45, 2500):
        first = make()
        outputs = [first.update(v) for v in values[:stop]]
        resumed = make()
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
        outputs += [resumed.update(v) for v in values[stop:]]
        assert outputs == expected
        assert resumed.state_dict() == uninterrupted.state_dict()


@pytest.mark.parametrize("make", [ADWIN, PageHinkley])
def test_reset_forgets_the_stream(make):
    detector = make()
    _detections(detector, _errors(0))
    detector.reset()
    assert detector.state_dict() == make().state_dict()


@pytest.mark.parametrize("make", [ADWIN, PageHinkley])
def test_nan_is_refused(make):
    with pytest.raises(ValueError, match="got value nan"):
        make().update(float("nan"))


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (ADWIN, {"delta": 0}, r"delta must be in \(0, 1\), got 0"),
        (ADWIN, {"clock": 0}, "clock must be >= 1, got 0"),
        (ADWIN, {"max_window": 8}, "max_window must be >= 2 \\* min_window = 10, got 8"),
        (PageHinkley, {"threshold": 0}, "threshold must be > 0, got 0"),
        (PageHinkley, {"mode": "sideways"}, r"mode must be one of \['up', 'down', 'both'\], got 'sideways'"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(make, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_adwin_is_about_as_quick_as_rivers():
    river_drift = pytest.importorskip("river.drift")
    ours, theirs = [], []
    for seed in range(5):
        values = _errors(seed)
        ours.append(_detections(ADWIN(), values)[0] - CHANGE_AT)
        reference = river_drift.ADWIN()
        for i, value in enumerate(values):
            reference.update(value)
            if reference.drift_detected:
                theirs.append(i - CHANGE_AT)
                break
    assert len(theirs) == 5
    assert np.median(ours) <= 2 * np.median(theirs)
