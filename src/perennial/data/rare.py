"""A rare class made from a common one: fraud-like streams, where accuracy hides a model that
never finds the rare rows, from real data sets that are not that skewed.

>>> from perennial.data import SyntheticStream
>>> rare = RareClassStream(SyntheticStream(kind="none", n_samples=4000, window=1000), rate=0.02)
>>> [round(float((w.y == 1).mean()), 2) for w in rare.windows()]
[0.02, 0.02, 0.02, 0.02]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from perennial.data.window import Stream, Window


@dataclass
class RareClassStream(Stream):
    """``inner`` with the rows of class ``positive`` thinned, window by window, to a ``rate`` share
    of each window (a seeded random subset; every other row is kept, in time order). A window with
    fewer positives than that keeps them all."""

    inner: Stream = field(default=None)  # type: ignore[assignment]
    positive: int = 1
    rate: float = 0.02
    seed: int = 0
    _windows: list[Window] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Stream):
            raise ValueError(f"data.inner must be a stream config, got {type(self.inner).__name__}")
        if not 0 < self.rate < 1:
            raise ValueError(f"data.rate must be in (0, 1), got {self.rate}")
        if not 0 <= self.positive < len(self.inner.classes):
            raise ValueError(
                f"data.positive must be a class id in 0..{len(self.inner.classes) - 1}, got {self.positive}"
            )
        self.name = f"{self.inner.name}-rare{self.rate:g}"
        self.feature_shape, self.classes = self.inner.feature_shape, self.inner.classes

    def windows(self) -> list[Window]:
        if self._windows is None:
            self._windows = [self._thin(w) for w in self.inner.windows()]
            self.issues, self.quarantine = self.inner.issues, self.inner.quarantine
        return self._windows

    def _thin(self, window: Window) -> Window:
        rng = np.random.default_rng([self.seed, window.index])
        positives = np.flatnonzero(window.y == self.positive)
        others = np.flatnonzero(window.y != self.positive)
        keep = min(len(positives), round(self.rate / (1 - self.rate) * len(others)))
        rows = np.sort(np.r_[others, rng.choice(positives, keep, replace=False)])
        return replace(window, x=window.x[rows], y=window.y[rows], time=window.time[rows])
