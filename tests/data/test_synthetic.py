"""The synthetic stream: seeded, and its concept really changes at the drift points it reports."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from perennial.data import SyntheticStream


def rows(stream: SyntheticStream, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([w.x for w in stream])
    y = np.concatenate([w.y for w in stream])
    return x[start:stop], y[start:stop]


def accuracy_before_and_after(stream: SyntheticStream, point: int) -> tuple[float, float]:
    """Fit on rows well before ``point``; score just before and just after it."""
    model = LogisticRegression().fit(*rows(stream, 0, point - 1000))
    return model.score(*rows(stream, point - 1000, point)), model.score(*rows(stream, point, point + 1000))


def test_same_seed_same_stream_other_seed_other_stream():
    a, b, c = SyntheticStream(seed=3), SyntheticStream(seed=3), SyntheticStream(seed=4)
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa.x, wb.x)
        np.testing.assert_array_equal(wa.y, wb.y)
    assert not np.array_equal(a.windows()[0].x, c.windows()[0].x)


def test_shape_and_default_drift_points():
    stream = SyntheticStream()
    assert len(stream) == 20 and stream.feature_shape == (10,) and stream.classes == [0, 1]
    assert stream.drift_points == [5000, 10000, 15000]
    assert SyntheticStream(kind="none").drift_points == []


def test_abrupt_drift_makes_an_old_model_fail_and_no_drift_does_not():
    before, after = accuracy_before_and_after(SyntheticStream(kind="abrupt"), 5000)
    assert before > 0.85 and after < before - 0.2
    before, after = accuracy_before_and_after(SyntheticStream(kind="none"), 5000)
    assert before > 0.85 and abs(after - before) < 0.05


def test_recurring_concept_comes_back():
    stream = SyntheticStream(kind="recurring")
    model = LogisticRegression().fit(*rows(stream, 0, 5000))
    assert model.score(*rows(stream, 5000, 10000)) < 0.7  # concept B
    assert model.score(*rows(stream, 10000, 15000)) > 0.85  # concept A again


def test_gradual_drift_ramps_over_its_width():
    stream = SyntheticStream(kind="gradual", drift_points=[10000], width=4000)
    model = LogisticRegression().fit(*rows(stream, 0, 7000))
    scores = [model.score(*rows(stream, s, s + 1000)) for s in (7000, 9500, 12000)]
    assert scores[0] > scores[1] > scores[2]


def test_unknown_kind_lists_accepted_values():
    with pytest.raises(ValueError, match=r"abrupt.*gradual.*recurring.*none"):
        SyntheticStream(kind="sudden")
