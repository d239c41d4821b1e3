"""Argument checks shared by the statistics modules: each names the bad value it refuses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import numpy as np


def check_alpha(alpha: float, name: str = "alpha") -> float:
    if not (isinstance(alpha, Real) and 0 < alpha < 1):
        raise ValueError(f"{name} must be in (0, 1), got {alpha!r}")
    return float(alpha)


def check_choice(value: str, name: str, accepted: Sequence[str]) -> str:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {list(accepted)}, got {value!r}")
    return value


def check_positive(value: float, name: str) -> float:
    if not (isinstance(value, Real) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_sample(values: np.ndarray | Sequence[float], name: str, min_size: int = 1) -> np.ndarray:
    """A 1-D float array of finite values, at least ``min_size`` of them."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if len(array) < min_size:
        raise ValueError(f"{name} needs at least {min_size} values, got {len(array)}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite values (first at index {np.argmax(bad)})"
        )
    return array
