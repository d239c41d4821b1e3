"""The drift-detector contracts: a two-sample test that returns a ``DriftResult``, and a streaming
change detector that checkpoints like a metric."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one drift test, stored with the trigger firing it caused.

    ``drift`` is None when the test could not be run (not enough data); ``statistic`` and
    ``p_value`` are then nan. For tests over several features ``p_value`` is the corrected,
    family-wise one.

    >>> result = DriftResult("ks", None, math.nan, math.nan, "not enough data: 12 current rows")
    >>> result.drift is None, result.to_dict()["reason"]
    (True, 'not enough data: 12 current rows')
    """

    detector: str
    drift: bool | None
    statistic: float
    p_value: float
    reason: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class TwoSampleDetector(ABC):
    """Compares a reference sample with a current one. Configured in ``__init__``; keeps no data
    between calls, so one detector can test any number of pairs."""

    name: ClassVar[str]

    @abstractmethod
    def test(self, reference: np.ndarray, current: np.ndarray) -> DriftResult: ...


class StreamDetector(ABC):
    """Sequential change detector on a stream of numbers (e.g. a model's 0/1 errors).

    ``update(value)`` returns True when a change is detected at that value (also kept in
    ``drift_detected``); ``reset()`` forgets the stream. The state travels through
    ``state_dict`` / ``load_state_dict`` as plain JSON, so a resumed stream continues exactly
    where it stopped.
    """

    name: ClassVar[str]
    drift_detected: bool = False

    @abstractmethod
    def update(self, value: float) -> bool: ...

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, or a ValueError naming it; every two-sample detector takes one."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


def paired_rows(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as float64 (rows x features) arrays: a 1-D array is one feature, images and
    other (n, ...) arrays are flattened per row. Different feature counts raise, naming both shapes."""
    ref, cur = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if ref.ndim == 0 or cur.ndim == 0:
        raise ValueError(f"samples must be arrays of rows, got shapes {ref.shape} and {cur.shape}")
    rows = [x.reshape(len(x), math.prod(x.shape[1:])) for x in (ref, cur)]
    if rows[0].shape[1] != rows[1].shape[1]:
        raise ValueError(
            f"reference has shape {ref.shape} but current has shape {cur.shape}: "
            "both samples need the same features"
        )
    return rows[0], rows[1]


def not_enough_data(detector: str, reason: str, details: dict | None = None) -> DriftResult:
    """The result of a test that could not be run."""
    return DriftResult(detector, None, math.nan, math.nan, f"not enough data: {reason}", details or {})


def row_shortfall(n_reference: int, n_current: int, needed: int) -> str | None:
    """Why a test cannot run on samples this small ("12 current rows, the test needs 20"), or None."""
    short = [f"{n} {side}" for n, side in ((n_reference, "reference"), (n_current, "current")) if n < needed]
    return f"{' and '.join(short)} rows, the test needs {needed}" if short else None
