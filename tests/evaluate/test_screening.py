"""The window screen: clean windows with drift pass, flipped labels are quarantined with evidence,
a lasting change is let through as drift, and the state survives a resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perennial.evaluate.screening import CHECKS, WindowScreen


def _window(rng, n=500, classes=3, shift=0.0, flip=0.0, target=None):
    """Gaussian classes in 4 features (centres drift by ``shift``), a calibrated champion's
    probabilities, and labels of which ``flip`` are moved to another class (``target``: only rows
    of class ``target[0]`` move, all to ``target[1]``)."""
    centres = np.eye(classes, 4) * 3 + shift
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, 4))
    logits = -0.5 * ((x[:, None, :] - centres[None]) ** 2).sum(2)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = y.copy()
    if target is not None:
        labels[y == target[0]] = target[1]
    else:
        moved = rng.random(n) < flip
        labels[moved] = (y[moved] + rng.integers(1, classes, moved.sum())) % classes
    return x, labels, p


def _screen_after(rng, shift_per_window=0.0, **kw):
    screen = WindowScreen(**kw)
    for w in range(3):
        screen.accept(*_window(rng, shift=w * shift_per_window))
    return screen


def test_clean_windows_with_gradual_drift_are_rarely_quarantined():
    rng = np.random.default_rng(0)
    screen = _screen_after(rng, shift_per_window=0.1)
    alarms = 0
    for w in range(3, 60):
        x, y, p = _window(rng, shift=w * 0.1)
        result = screen.screen(x, y, p)
        alarms += result.quarantine
        if not result.quarantine:
            screen.accept(x, y, p)
    assert alarms <= 2


@pytest.mark.parametrize("flip", [0.3, 0.5])
def test_windows_with_many_flipped_labels_are_quarantined_with_evidence(flip):
    rng = np.random.default_rng(1)
    screen = _screen_after(rng)
    result = screen.screen(*_window(rng, flip=flip))
    assert result.quarantine and "disagreement" in result.flagged
    evidence = result.checks["disagreement"]
    assert evidence["statistic"] > 3 * evidence["usual"] and evidence["p_value"] < 1e-3
    assert "contradict the confident champion" in result.reason


def test_a_targeted_flip_of_one_class_is_caught_by_the_class_mix_and_the_class_features():
    rng = np.random.default_rng(2)
    screen = _screen_after(rng, checks=CHECKS)
    result = screen.screen(*_window(rng, target=(0, 2)))  # every class-0 row labelled 2
    assert result.quarantine
    assert {"label_shift", "class_stats", "disagreement"} <= set(result.flagged)
    assert "rows labelled 2 moved" in result.checks["class_stats"]["reason"]


def test_covariate_drift_moves_labelled_and_assigned_rows_alike_and_is_not_flagged():
    rng = np.random.default_rng(6)
    screen = _screen_after(rng, checks=CHECKS)
    result = screen.screen(*_window(rng, shift=1.5))  # every class 1.5 sd away, labels honest
    assert not result.quarantine and "class_stats" in result.checks


def test_a_lasting_change_is_accepted_as_drift_after_max_consecutive_quarantines():
    rng = np.random.default_rng(3)
    screen = _screen_after(rng, max_consecutive=2)
    verdicts = [screen.screen(*_window(rng, target=(0, 2))) for _ in range(3)]
    assert [v.quarantine for v in verdicts] == [True, True, False]
    assert "taken for drift" in verdicts[-1].reason and verdicts[-1].flagged


def test_state_round_trips_through_json():
    rng = np.random.default_rng(4)
    screen = _screen_after(rng)
    screen.screen(*_window(rng, flip=0.5))
    restored = WindowScreen()
    restored.load_state_dict(json.loads(json.dumps(screen.state_dict())))
    window = _window(rng, flip=0.4)
    a, b = screen.screen(*window), restored.screen(*window)
    assert (a.quarantine, a.flagged, a.reason) == (b.quarantine, b.flagged, b.reason)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"checks": ["vibes"]}, r"screen.checks must be a non-empty subset"),
        ({"alpha": 0}, r"screen.alpha must be in \(0, 1\), got 0"),
        ({"confidence": 1.0}, r"screen.confidence must be in \[0.5, 1\)"),
        ({"min_rows": 0}, r"screen.min_rows must be an integer >= 1, got 0"),
        ({"max_consecutive": -1}, r"screen.max_consecutive must be an integer >= 0"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WindowScreen(**kwargs)


def test_mismatched_inputs_are_refused():
    screen = WindowScreen()
    with pytest.raises(ValueError, match="one label and one probability row per input, got 3, 2, 3"):
        screen.screen(np.zeros((3, 2)), np.zeros(2, int), np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=r"labels must be class ids in 0\.\.1"):
        screen.screen(np.zeros((2, 2)), np.array([0, 5]), np.full((2, 2), 0.5))


def test_rows_of_classes_never_accepted_before_are_named_not_judged():
    rng = np.random.default_rng(5)
    screen = WindowScreen()
    for _ in range(3):
        x, y, p = _window(rng)
        keep = y < 2  # the reference has seen classes 0 and 1 only
        screen.accept(x[keep], y[keep], p[keep])
    x, y, p = _window(rng)
    result = screen.screen(x, y, p)  # class 2 is new: the champion cannot have predicted it
    assert not result.quarantine
    new = result.checks["new_classes"]
    assert new["classes"] == [2] and new["rows"] == (y == 2).sum()
    poisoned = screen.screen(*_window(rng, flip=0.5))
    assert poisoned.quarantine  # the known classes are still judged
