"""A small regression stream for the tests: a linear target whose weights drift window by window."""

from __future__ import annotations

import numpy as np
import pandas as pd

from perennial.data.window import Stream, Window


class DriftingRegression(Stream):
    """``n_windows`` windows of ``rows`` rows: ``y = 50 + 10 x·w_i + noise``, where one weight of
    ``w_i`` moves by ``drift`` a window. Targets far from 0 and 1 check that nothing assumes a
    unit-scale target."""

    def __init__(self, n_windows: int = 10, rows: int = 300, drift: float = 0.2, seed: int = 0) -> None:
        self.name, self.feature_shape, self.classes, self.task = "drifting_regression", (4,), [], "regression"
        self.issues, self.quarantine, self.label_delay, self.polled = [], pd.DataFrame(), 0, 0
        rng = np.random.default_rng(seed)
        self._windows = []
        for i in range(n_windows):
            x = rng.normal(size=(rows, 4)).astype(np.float32)
            w = np.array([1.0, -2.0, 0.5 + drift * i, 0.0])
            y = (50 + 10 * (x @ w) + rng.normal(size=rows)).astype(np.float32)
            self._windows.append(Window(i, i, i, x, y, np.arange(rows) + i * rows))

    def windows(self) -> list[Window]:
        return self._windows
