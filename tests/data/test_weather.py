"""The default job's stream: NOAA weather, one window per year."""

import numpy as np

from perennial.data import WeatherStream


def test_weather_gives_yearly_windows_of_daily_rows():
    stream = WeatherStream(window=365)
    windows = stream.windows()

    assert len(windows) == 50  # 18,159 days = 49 full years + 274 days
    assert [len(w) for w in windows[:-1]] == [365] * 49
    assert len(windows[-1]) == 274
    assert stream.feature_shape == (8,)
    assert stream.classes == [0, 1] and stream.name == "weather"
    assert [w.index for w in windows] == list(range(50))
    assert windows[1].start == 365 and windows[1].end == 729
    first = windows[0]
    assert first.x.dtype == np.float32 and first.x.shape == (365, 8)
    assert first.y.dtype == np.int64 and set(np.unique(first.y)) == {0, 1}
    np.testing.assert_array_equal(np.concatenate([w.time for w in windows]), np.arange(18159))
    assert stream.windows() is windows  # built once
