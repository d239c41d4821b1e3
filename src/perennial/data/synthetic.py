"""A seeded drifting stream with known drift points, for testing triggers and update strategies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from perennial.data.table import windows_by_count
from perennial.data.window import Stream, Window

KINDS = ("abrupt", "gradual", "recurring", "transient", "none")
CONCEPT_SHIFT = 0.5  # how far each concept's inputs move, so the drift is visible in x as well as in y
EXCURSION_SHARE = 0.2  # transient: the share of windows that get an excursion when drift_points is None


@dataclass
class SyntheticStream(Stream):
    """Binary labels ``1[w_c · (x - mu_c) > 0]`` from a concept ``c`` that changes at ``drift_points``.

    Inputs are ``N(mu_c, 1)`` in ``n_features`` dimensions; every concept has its own random unit
    vector ``w_c`` and (except the first) a mean ``mu_c`` shifted by 0.5, so there is data drift as
    well as concept drift. ``kind`` says how concepts change at each drift point:

    - ``abrupt``: a new concept from the drift point on;
    - ``gradual``: the chance of drawing from the new concept ramps linearly over ``width`` rows
      centred on the drift point;
    - ``recurring``: two concepts alternate, A B A B ...;
    - ``transient``: short excursions from a base concept: from each drift point a concept of its own
      holds for ``width`` rows, then the base concept returns. With ``drift_points=None`` they start
      at the first row of a seeded random 20% of the windows (never the first, never two in a row); with
      ``width == window`` each excursion is exactly one window. ``excursions`` lists their rows;
    - ``none``: one concept throughout (``drift_points`` is empty).

    ``noise`` flips that share of labels. ``time`` is the row position; the same seed gives the same stream.

    >>> stream = SyntheticStream(kind="abrupt", n_samples=4000, window=500, drift_points=[2000])
    >>> len(stream), stream.drift_points
    (8, [2000])
    >>> stream = SyntheticStream(kind="transient", n_samples=10000, window=500, width=500)
    >>> len(stream), stream.drift_points
    (20, [500, 1500, 5500, 7500])
    >>> stream.excursions[0]  # the rows of window 1; the base concept returns in window 2
    (500, 1000)
    """

    kind: str = "abrupt"
    n_samples: int = 20000
    window: int = 1000
    n_features: int = 10
    drift_points: Sequence[int] | None = None
    width: int = 1000
    noise: float = 0.05
    seed: int = 0
    _x: np.ndarray = field(init=False, repr=False)
    _y: np.ndarray = field(init=False, repr=False)
    _windows: list[Window] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")
        if self.n_samples < 1 or self.window < 1 or self.n_features < 1 or self.width < 1:
            raise ValueError("n_samples, window, n_features and width must be positive")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise is a share of labels to flip, between 0 and 1; got {self.noise!r}")
        rng = np.random.default_rng(self.seed)
        if self.kind == "none":
            self.drift_points = []
        elif self.drift_points is None and self.kind == "transient":
            self.drift_points = self._excursion_starts(rng)
        elif self.drift_points is None:
            self.drift_points = [self.n_samples * i // 4 for i in (1, 2, 3)]
        else:
            self.drift_points = sorted(int(p) for p in self.drift_points)
        if any(not 0 < p < self.n_samples for p in self.drift_points):
            raise ValueError(f"drift_points must lie inside (0, {self.n_samples}); got {self.drift_points}")
        if self.kind == "transient" and any(b - a < self.width for a, b in pairwise(self.drift_points)):
            raise ValueError(
                f"transient excursions last width={self.width} rows and must not overlap; "
                f"got drift_points {self.drift_points}"
            )

        concept = self._concepts(rng)
        n_concepts = 2 if self.kind == "recurring" else len(self.drift_points) + 1
        weights = rng.normal(size=(n_concepts, self.n_features))
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        shifts = rng.normal(size=(n_concepts, self.n_features))
        shifts *= CONCEPT_SHIFT / np.linalg.norm(shifts, axis=1, keepdims=True)
        shifts[0] = 0.0
        x = rng.normal(size=(self.n_samples, self.n_features)) + shifts[concept]
        y = (np.einsum("nd,nd->n", x - shifts[concept], weights[concept]) > 0).astype(np.int64)
        flip = rng.random(self.n_samples) < self.noise
        y[flip] = 1 - y[flip]

        self._x, self._y = x.astype(np.float32), y
        self.name = f"synthetic-{self.kind}"
        self.feature_shape = (self.n_features,)
        self.classes = [0, 1]

    def _concepts(self, rng: np.random.Generator) -> np.ndarray:
        """The concept each row is drawn from."""
        rows = np.arange(self.n_samples)
        points = np.asarray(self.drift_points, dtype=np.int64)
        if self.kind == "gradual":
            # row i has passed drift point p with probability clip((i - p) / width + 1/2, 0, 1)
            progress = np.clip((rows[:, None] - points[None, :]) / self.width + 0.5, 0.0, 1.0)
            passed = (rng.random(self.n_samples)[:, None] < progress).sum(axis=1)
        else:
            passed = np.searchsorted(points, rows, side="right")
        if self.kind == "transient":
            # excursion k (1-based) holds its own concept k for width rows; between them, concept 0
            if len(points) == 0:
                return passed
            since = rows - points[np.maximum(passed - 1, 0)]
            return np.where((passed > 0) & (since < self.width), passed, 0)
        return passed % 2 if self.kind == "recurring" else passed

    def _excursion_starts(self, rng: np.random.Generator) -> list[int]:
        """First rows of a seeded EXCURSION_SHARE of the windows after the first, none back to back, so
        the base concept returns after each."""
        n_windows = -(-self.n_samples // self.window)
        count = max(1, round(EXCURSION_SHARE * n_windows))
        span = -(-self.width // self.window)  # windows an excursion touches
        chosen: list[int] = []
        for k in rng.permutation(np.arange(1, n_windows)).tolist():
            if all(abs(k - c) > span for c in chosen):
                chosen.append(k)
            if len(chosen) == count:
                break
        return sorted(k * self.window for k in chosen)

    @property
    def excursions(self) -> list[tuple[int, int]]:
        """``(first row, row after the last)`` of each transient excursion; empty for other kinds."""
        if self.kind != "transient":
            return []
        return [(p, min(p + self.width, self.n_samples)) for p in self.drift_points]

    def windows(self) -> list[Window]:
        if self._windows is None:
            self._windows = windows_by_count(self._x, self._y, np.arange(self.n_samples), self.window)
        return self._windows
