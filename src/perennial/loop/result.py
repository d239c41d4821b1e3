"""What a run returns: the loop's result as a dict (what summary.json and windows.csv are made
from, read by key as before) with typed properties for the figures a user asks of it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd

from perennial.registry import Registry

# The columns an empty table still has: a run that has served no window yet (only its warm-up landed).
EMPTY_COLUMNS = ("window", "n", "n_labelled", "champion", "served_accuracy", "static_accuracy", "decision")


class RunResult(dict):
    """The run as it stands after ``run()``, ``follow()`` or ``process()``.

    Still the plain dict those methods always returned (``result["rows"]``, ``result["champion"]``,
    the loop's checkpoint fields), with read-only properties over it:

    - ``started``: whether v1 is trained (a growing source may not have the warm-up windows yet);
    - ``windows``: how many windows the source has given;
    - ``champion`` and ``static``: the version serving now, and v1 never updated (None before v1);
    - ``rows`` and ``table()``: one row per served window (windows.csv), as dicts or a DataFrame;
    - ``served_accuracy`` and ``static_accuracy``: means over the windows whose labels landed, of
      the served champion and of v1 never updated (a regressor's: ``served_mse`` and
      ``static_mse``; ``served(metric)`` reads any score column); ``recent(n)`` is the result over
      the newest ``n`` windows only;
    - ``versions`` and ``decisions``: read from the registry when asked, as it is then.

    >>> rows = [
    ...     {"window": 3, "champion": "v1", "served_accuracy": 0.70, "static_accuracy": 0.70},
    ...     {"window": 4, "champion": "v1.1", "served_accuracy": 0.80, "static_accuracy": 0.60},
    ...     {"window": 5, "champion": "v1.1", "served_accuracy": None, "static_accuracy": None},
    ... ]
    >>> result = RunResult({"started": True, "champion": "v1.1", "static": "v1", "windows": 6, "rows": rows})
    >>> result.champion == result["champion"] == "v1.1"
    True
    >>> round(result.served_accuracy, 3), round(result.static_accuracy, 3)  # window 5 awaits its labels
    (0.75, 0.65)
    >>> result.recent(2).served_accuracy
    0.8
    >>> result.table().loc[4, "champion"]
    'v1.1'
    >>> result
    RunResult(started=True, windows=6, champion='v1.1', served_accuracy=0.75, static_accuracy=0.65)
    """

    def __init__(self, data: Mapping[str, Any] = (), registry: str | Path | None = None) -> None:
        super().__init__(data)
        # A path, not the loop's connection: the result outlives the run (the CLI closes the registry)
        # and may be copied or pickled.
        self._registry = None if registry is None else Path(registry)

    @property
    def started(self) -> bool:
        return bool(self.get("started", False))

    @property
    def windows(self) -> int:
        return int(self.get("windows", 0))

    @property
    def champion(self) -> str | None:
        return self.get("champion") or None

    @property
    def static(self) -> str | None:
        return self.get("static") or None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.get("rows") or [])

    def table(self) -> pd.DataFrame:
        """The rows as a DataFrame indexed by window: the columns of windows.csv."""
        rows = self.rows
        return pd.DataFrame(rows, columns=None if rows else EMPTY_COLUMNS).set_index("window")

    @property
    def served_accuracy(self) -> float:
        """Mean accuracy of the champion that served each labelled window; NaN before any."""
        return _mean(r.get("served_accuracy") for r in self.rows)

    @property
    def static_accuracy(self) -> float:
        """Mean accuracy of v1 never updated on the same windows; NaN before any."""
        return _mean(r.get("static_accuracy") for r in self.rows)

    @property
    def served_mse(self) -> float:
        """A regressor's mean squared error, served, averaged over the labelled windows."""
        return self.served("mse")

    @property
    def static_mse(self) -> float:
        """A regressor's mean squared error, v1 never updated, on the same windows."""
        return self.served("mse", "static")

    @property
    def task(self) -> str:
        return "regression" if any(r.get("served_mse") is not None for r in self.rows) else "classification"

    def served(self, metric: str, who: str = "served") -> float:
        """The mean over labelled windows of the ``{who}_{metric}`` column (``who``: served or static)."""
        return _mean(r.get(f"{who}_{metric}") for r in self.rows)

    def recent(self, n: int = 10) -> RunResult:
        """The result over the newest ``n`` served windows (labelled or not, as summary.json's
        ``recent``): ``result.recent(10).served_accuracy``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"recent(n=...) must be a window count >= 1, got {n!r}")
        return RunResult({**self, "rows": self.rows[-n:]}, self._registry)

    @property
    def registry(self) -> Path | None:
        """The directory of the run's registry."""
        return self._registry

    @property
    def versions(self) -> list[str]:
        """Every version's id in version order (v1, v1.1, ..., v2), as the registry holds them now."""
        with self._open() as registry:
            return [r.id for r in registry.versions()]

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """Every logged decision (promoted, rejected, rolled back, ...) with its numbers, oldest
        first, as the registry holds them now."""
        with self._open() as registry:
            return registry.decisions()

    def _open(self) -> closing[Registry]:
        if self._registry is None:
            raise ValueError("this RunResult was made without a registry; versions come from the registry")
        return closing(Registry(self._registry, create=False, readonly=True))

    def __repr__(self) -> str:
        # A long run's dict is thousands of rows; the figures a reader looks for first.
        metric = "mse" if self.task == "regression" else "accuracy"
        shown = {
            "started": self.started,
            "windows": self.windows,
            "champion": self.champion,
            f"served_{metric}": _rounded(self.served(metric)),
            f"static_{metric}": _rounded(self.served(metric, "static")),
        }
        return f"RunResult({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def _mean(values) -> float:
    present = [float(v) for v in values if v is not None and not _isnan(v)]
    return sum(present) / len(present) if present else math.nan


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _rounded(value: float) -> float:
    return value if math.isnan(value) else round(value, 4)
