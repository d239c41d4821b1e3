"""Feature columns that appear mid-stream: a sensor installed, a field added to a form. Before it
arrived a column is missing (NaN) in every row; from then on it is there. Columns only ever append,
after the others, so a model keeps reading the columns it was trained on while a wider one is
trained (see ``ClassifierModule.n_features`` and ``data.window.present_features``).

>>> from perennial.data import SyntheticStream
>>> from perennial.data.window import present_features
>>> stream = NewColumnsStream(SyntheticStream(kind="none", n_samples=4000, window=1000), columns=2, at=2)
>>> [present_features(w.x) for w in stream.windows()]
[8, 8, 10, 10]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from perennial.data.window import Stream, Window


@dataclass
class NewColumnsStream(Stream):
    """``inner`` with its last ``columns`` feature columns missing before window ``at``."""

    inner: Stream = field(default=None)  # type: ignore[assignment]
    columns: int = 1
    at: int = 1
    _windows: list[Window] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Stream):
            raise ValueError(f"data.inner must be a stream config, got {type(self.inner).__name__}")
        shape = tuple(self.inner.feature_shape)
        if len(shape) != 1:
            raise ValueError(f"new columns need rows of flat features; {self.inner.name} has shape {shape}")
        count = self.columns
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count < shape[0]:
            raise ValueError(f"data.columns must be a column count in 1..{shape[0] - 1}, got {count!r}")
        if isinstance(self.at, bool) or not isinstance(self.at, int) or self.at < 1:
            raise ValueError(f"data.at must be a window index >= 1, got {self.at!r}")
        self.name = f"{self.inner.name}-{self.columns}-new-columns-at-{self.at}"
        self.feature_shape, self.classes = shape, self.inner.classes
        names = getattr(self.inner, "feature_names", None)
        self.feature_names = list(names) if names else [f"x{i}" for i in range(shape[0])]

    def windows(self) -> list[Window]:
        if self._windows is None:
            inner = self.inner.windows()
            if self.at >= len(inner):
                raise ValueError(f"data.at={self.at}, but {self.inner.name} has only {len(inner)} windows")
            self._windows = [w if k >= self.at else self._without_new(w) for k, w in enumerate(inner)]
            self.issues, self.quarantine = self.inner.issues, self.inner.quarantine
        return self._windows

    def _without_new(self, window: Window) -> Window:
        x = window.x.astype(np.float32, copy=True)
        x[:, -self.columns :] = np.nan
        return replace(window, x=x)
