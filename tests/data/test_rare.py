"""A rare class thinned from a common one: the rate holds in every window, every other row stays in
time order, and bad settings are named."""

from __future__ import annotations

import numpy as np
import pytest

from perennial.data import RareClassStream, SyntheticStream


def _inner():
    return SyntheticStream(kind="none", n_samples=6000, window=1000, seed=3)


def test_every_window_keeps_its_other_rows_and_a_rate_share_of_the_rare_class():
    inner = _inner()
    rare = RareClassStream(inner, positive=1, rate=0.02, seed=0)
    for before, after in zip(inner.windows(), rare.windows(), strict=True):
        assert (after.y == 0).sum() == (before.y == 0).sum()  # nothing else is dropped
        assert float((after.y == 1).mean()) == pytest.approx(0.02, abs=0.002)
        assert np.all(np.diff(after.time) >= 0)  # still in time order
    assert rare.name == "synthetic-none-rare0.02" and rare.classes == inner.classes


def test_the_same_seed_thins_the_same_rows():
    a, b = RareClassStream(_inner(), rate=0.05, seed=1), RareClassStream(_inner(), rate=0.05, seed=1)
    assert all(np.array_equal(x.time, y.time) for x, y in zip(a.windows(), b.windows(), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 0.0}, r"data\.rate must be in \(0, 1\), got 0\.0"),
        ({"positive": 5}, r"data\.positive must be a class id in 0\.\.1, got 5"),
        ({"inner": "weather"}, r"data\.inner must be a stream config, got str"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RareClassStream(**{"inner": _inner(), **kwargs})
