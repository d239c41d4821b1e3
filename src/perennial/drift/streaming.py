"""Streaming change detectors for a sequence of numbers, such as a served model's 0/1 errors:
``update(value)`` one value at a time, True when the stream has changed."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from perennial.drift.base import StreamDetector


def _checked(value: float, detector: str) -> float:
    value = float(value)
    # One NaN would turn every later mean and variance into NaN, silently disabling the detector.
    if math.isnan(value):
        raise ValueError(f"{detector}.update got value nan: stream values must be numbers")
    return value


class ADWIN(StreamDetector):
    """ADWIN, adaptive windowing (Bifet & Gavaldà, 2007): keeps the recent values whose mean has
    not changed, and detects a change when two parts of that window have means further apart than
    chance allows.

    Every ``clock`` updates each split of the window into an older part W0 (n0 values) and a newer
    part W1 (n1 values, both at least ``min_window``) is tested: a cut when
    ``|mean(W0) - mean(W1)| >= sqrt(2/m · σ² · ln(2/δ')) + 2/(3m) · ln(2/δ')``, with
    ``m = 1 / (1/n0 + 1/n1)``, ``δ' = delta / ln(n)`` (as river does) and σ² the window's variance.
    On a cut the older part is dropped, at the split with the strongest evidence (the best
    estimate of where the change happened), and the check repeats until no split cuts.

    This is the exact-window ADWIN: the window is a plain deque of the last ``max_window`` values
    instead of the paper's exponential-histogram compression. Memory is bounded by
    ``max_window`` either way, every split is tested rather than bucket boundaries only, and the
    state is a list of floats that round-trips through JSON exactly.

    >>> import random
    >>> rng = random.Random(1)
    >>> before = [float(rng.random() < 0.1) for _ in range(1000)]
    >>> after = [float(rng.random() < 0.5) for _ in range(1000)]
    >>> adwin = ADWIN()
    >>> [i for i, e in enumerate(before + after) if adwin.update(e)]
    [1055]
    >>> adwin.width, round(adwin.estimation, 2)
    (1000, 0.5)
    """

    name = "adwin"

    def __init__(
        self, delta: float = 0.002, clock: int = 32, max_window: int = 5000, min_window: int = 5
    ) -> None:
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if clock < 1:
            raise ValueError(f"clock must be >= 1, got {clock}")
        if min_window < 1:
            raise ValueError(f"min_window must be >= 1, got {min_window}")
        if max_window < 2 * min_window:
            raise ValueError(f"max_window must be >= 2 * min_window = {2 * min_window}, got {max_window}")
        self.delta, self.clock = float(delta), int(clock)
        self.max_window, self.min_window = int(max_window), int(min_window)
        self.reset()

    def reset(self) -> None:
        self._window: deque[float] = deque(maxlen=self.max_window)
        self._ticks = 0
        self._n_detections = 0
        self.drift_detected = False

    @property
    def width(self) -> int:
        """Values in the window."""
        return len(self._window)

    @property
    def estimation(self) -> float:
        """Mean of the window; nan while it is empty."""
        return math.fsum(self._window) / len(self._window) if self._window else math.nan

    @property
    def n_detections(self) -> int:
        """Changes detected since the last ``reset``."""
        return self._n_detections

    def update(self, value: float) -> bool:
        self._window.append(_checked(value, self.name))
        self._ticks += 1
        self.drift_detected = False
        if self._ticks % self.clock == 0:
            while (cut := self._cut()) is not None:
                for _ in range(cut):
                    self._window.popleft()
                self.drift_detected = True
            self._n_detections += self.drift_detected
        return self.drift_detected

    def _cut(self) -> int | None:
        """How many of the oldest values to drop, or None when no split shows a change."""
        n = len(self._window)
        if n < 2 * self.min_window:
            return None
        values = np.fromiter(self._window, dtype=np.float64, count=n)
        # Centred values keep the prefix sums small, so the means of the parts stay accurate.
        centred = values - values.mean()
        variance = float(centred.var())
        older = np.arange(self.min_window, n - self.min_window + 1)
        newer = n - older
        older_sum = np.cumsum(centred)[older - 1]
        gap = np.abs(older_sum / older - (centred.sum() - older_sum) / newer)
        harmonic = 1.0 / older + 1.0 / newer
        log_term = math.log(2 * math.log(n) / self.delta)
        threshold = np.sqrt(2 * harmonic * variance * log_term) + 2 / 3 * harmonic * log_term
        cuts = gap >= threshold
        if not cuts.any():
            return None
        return int(older[np.argmax(np.where(cuts, gap / threshold, 0.0))])

    def state_dict(self) -> dict:
        return {
            "window": list(self._window),
            "ticks": self._ticks,
            "n_detections": self._n_detections,
            "drift_detected": self.drift_detected,
        }

    def load_state_dict(self, state: dict) -> None:
        self._window = deque((float(v) for v in state["window"]), maxlen=self.max_window)
        self._ticks = int(state["ticks"])
        self._n_detections = int(state["n_detections"])
        self.drift_detected = bool(state["drift_detected"])


class PageHinkley(StreamDetector):
    """The Page–Hinkley test for a change in the mean: ``mode="up"`` detects an increase (a
    rising error rate), ``"down"`` a decrease, ``"both"`` either. Resets itself after a detection.

    It accumulates the deviations from the running mean, each shrunk by ``delta`` (the size of
    change to ignore) and faded by ``alpha``; a change is detected once the sum has moved more
    than ``threshold`` from its extreme, after at least ``min_instances`` values.

    >>> import random
    >>> rng = random.Random(1)
    >>> before = [float(rng.random() < 0.1) for _ in range(1000)]
    >>> after = [float(rng.random() < 0.5) for _ in range(1000)]
    >>> detector = PageHinkley()
    >>> [i for i, e in enumerate(before + after) if detector.update(e)]
    [1128]
    """

    name = "page_hinkley"
    MODES = ("up", "down", "both")

    def __init__(
        self,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 0.9999,
        min_instances: int = 30,
        mode: str = "up",
    ) -> None:
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if min_instances < 1:
            raise ValueError(f"min_instances must be >= 1, got {min_instances}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {list(self.MODES)}, got {mode!r}")
        self.delta, self.threshold, self.alpha = float(delta), float(threshold), float(alpha)
        self.min_instances, self.mode = int(min_instances), mode
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._mean = 0.0
        # The cumulative sums start at 0, before any value, so their extremes start there too.
        self._sum_up, self._min_up = 0.0, 0.0
        self._sum_down, self._max_down = 0.0, 0.0
        self.drift_detected = False

    def update(self, value: float) -> bool:
        value = _checked(value, self.name)
        self._n += 1
        self._mean += (value - self._mean) / self._n
        deviation = value - self._mean
        self._sum_up = self.alpha * self._sum_up + deviation - self.delta
        self._sum_down = self.alpha * self._sum_down + deviation + self.delta
        self._min_up = min(self._min_up, self._sum_up)
        self._max_down = max(self._max_down, self._sum_down)
        detected = False
        if self._n >= self.min_instances:
            increase = self._sum_up - self._min_up > self.threshold
            decrease = self._max_down - self._sum_down > self.threshold
            detected = {"up": increase, "down": decrease, "both": increase or decrease}[self.mode]
        if detected:
            self.reset()
        self.drift_detected = detected
        return detected

    def state_dict(self) -> dict:
        return {
            "n": self._n,
            "mean": self._mean,
            "sum_up": self._sum_up,
            "min_up": self._min_up,
            "sum_down": self._sum_down,
            "max_down": self._max_down,
            "drift_detected": self.drift_detected,
        }

    def load_state_dict(self, state: dict) -> None:
        self._n = int(state["n"])
        self._mean = float(state["mean"])
        self._sum_up, self._min_up = float(state["sum_up"]), float(state["min_up"])
        self._sum_down, self._max_down = float(state["sum_down"]), float(state["max_down"])
        self.drift_detected = bool(state["drift_detected"])
