"""The synthetic stream: seeded, and its concept really changes at the drift points it reports."""

from itertools import pairwise

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
    with pytest.raises(ValueError, match=r"abrupt.*gradual.*recurring.*transient.*none"):
        SyntheticStream(kind="sudden")


def window_scores(stream: SyntheticStream, model: LogisticRegression) -> list[float]:
    return [model.score(w.x, w.y) for w in stream]


def test_transient_excursions_sit_in_their_windows_and_the_base_concept_returns():
    stream = SyntheticStream(kind="transient", n_samples=20000, window=1000, width=1000, seed=1)
    excursion_windows = [p // 1000 for p in stream.drift_points]
    # a seeded 20% of the 20 windows, never the first, none back to back, each exactly one window
    assert len(excursion_windows) == 4 and 0 not in excursion_windows
    assert all(b - a > 1 for a, b in pairwise(excursion_windows))
    assert stream.excursions == [(p, p + 1000) for p in stream.drift_points]
    base = [w for w in stream if w.index not in excursion_windows]
    model = LogisticRegression().fit(
        np.concatenate([w.x for w in base[:8]]), np.concatenate([w.y for w in base[:8]])
    )
    scores = window_scores(stream, model)
    for k, score in enumerate(scores):
        if k in excursion_windows:
            assert score < 0.75, (k, score)  # a concept of its own
        else:
            assert score > 0.85, (k, score)  # the base concept, before and after every excursion


def test_transient_excursions_are_distinct_concepts():
    stream = SyntheticStream(kind="transient", n_samples=12000, window=1000, drift_points=[3000, 8000])
    first = LogisticRegression().fit(*rows(stream, 3000, 4000))
    assert first.score(*rows(stream, 3000, 4000)) > 0.85
    assert first.score(*rows(stream, 8000, 9000)) < 0.75


def test_transient_given_points_and_width():
    stream = SyntheticStream(kind="transient", n_samples=6000, window=1000, drift_points=[2500], width=500)
    assert stream.excursions == [(2500, 3000)]
    model = LogisticRegression().fit(*rows(stream, 0, 2500))
    assert model.score(*rows(stream, 2500, 3000)) < 0.75 and model.score(*rows(stream, 3000, 6000)) > 0.85
    with pytest.raises(ValueError, match="must not overlap"):
        SyntheticStream(kind="transient", n_samples=6000, drift_points=[2000, 2500], width=1000)


def test_transient_is_seeded_and_leaves_other_kinds_alone():
    a = SyntheticStream(kind="transient", seed=5)
    b = SyntheticStream(kind="transient", seed=5)
    assert a.drift_points == b.drift_points
    np.testing.assert_array_equal(a.windows()[7].x, b.windows()[7].x)
    assert SyntheticStream(kind="transient", seed=6).drift_points != a.drift_points
    assert SyntheticStream(kind="abrupt").excursions == []


def test_transient_config_gives_one_window_excursions():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from perennial.cli.common import CONF_DIR

    stream = instantiate(OmegaConf.load(f"{CONF_DIR}/data/synthetic_transient.yaml"))
    assert stream.kind == "transient" and len(stream) == 30
    assert stream.excursions and all(b - a == stream.window for a, b in stream.excursions)
    assert all(a % stream.window == 0 for a, _ in stream.excursions)
