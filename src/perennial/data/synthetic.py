"""A seeded drifting stream with known drift points, for testing triggers and update strategies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from perennial.data.table import windows_by_count
from perennial.data.window import Stream, Window

KINDS = ("abrupt", "gradual", "recurring", "none")
CONCEPT_SHIFT = 0.5  # how far each concept's inputs move, so the drift is visible in x as well as in y


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
    - ``none``: one concept throughout (``drift_points`` is empty).

    ``noise`` flips that share of labels. ``time`` is the row position; the same seed gives the same stream.

    >>> stream = SyntheticStream(kind="abrupt", n_samples=4000, window=500, drift_points=[2000])
    >>> len(stream), stream.drift_points
    (8, [2000])
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
        if self.kind == "none":
            self.drift_points = []
        elif self.drift_points is None:
            self.drift_points = [self.n_samples * i // 4 for i in (1, 2, 3)]
        else:
            self.drift_points = sorted(int(p) for p in self.drift_points)
        if any(not 0 < p < self.n_samples for p in self.drift_points):
            raise ValueError(f"drift_points must lie inside (0, {self.n_samples}); got {self.drift_points}")

        rng = np.random.default_rng(self.seed)
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
        return passed % 2 if self.kind == "recurring" else passed

    def windows(self) -> list[Window]:
        if self._windows is None:
            self._windows = windows_by_count(self._x, self._y, np.arange(self.n_samples), self.window)
        return self._windows
