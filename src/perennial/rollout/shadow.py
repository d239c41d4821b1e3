"""Shadow deployment: every request also goes to one or more shadow models; only the champion's
answer is served. Agreement, latency and, once labels arrive, accuracy (a regressor's: squared
error) are compared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from perennial.stats.sequential import MixtureSPRT

CRITERIA = ("better", "not_worse")
TASKS = ("classification", "regression")


class ShadowDeployment:
    """Records the champion's and each shadow's predictions on the same requests.

    Promotion is judged per shadow by a sequential test on paired per-request correctness (the
    same request, answered by both), valid however often it is checked:

    - ``criterion="better"``: promote when the shadow is significantly more accurate;
    - ``criterion="not_worse"``: promote when it is significantly no worse than ``margin`` below
      the champion (a non-inferiority test: the shadow's correctness plus ``margin`` tested as
      better), for a retrain whose point is freshness rather than accuracy.

    ``task="regression"``: predictions are values, and each labelled request's outcome is its
    squared error. The test is on the per-request difference ``(1 + margin) · champion's squared
    error - shadow's``, truly paired (the same request's two errors, whose difference varies far
    less than either when the models agree), so ``margin`` is relative: ``not_worse`` promotes a
    shadow whose mean squared error is significantly below ``1 + margin`` times the champion's.
    Agreement becomes ``rms_difference`` (the root mean squared difference of the two answers) and
    accuracy ``mse``.

    >>> shadow = ShadowDeployment("v1", ["v1.1"], task="regression", min_requests=300)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(10):
    ...     y = rng.normal(50, 10, 100)
    ...     champion, candidate = y + rng.normal(0, 2, 100), y + rng.normal(0, 1.5, 100)
    ...     shadow.record({"v1": champion, "v1.1": candidate}, labels=y)
    >>> s = shadow.summary()
    >>> shadow.decision("v1.1"), round(s["v1"]["mse"], 1), round(s["v1.1"]["mse"], 1)
    ('promote', 4.5, 2.0)

    >>> shadow = ShadowDeployment("v1", ["v1.1"], min_requests=500)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(20):
    ...     y = rng.integers(0, 2, 200)
    ...     champion = np.where(rng.random(200) < 0.80, y, 1 - y)
    ...     candidate = np.where(rng.random(200) < 0.90, y, 1 - y)
    ...     shadow.record({"v1": champion, "v1.1": candidate}, {"v1": 0.002, "v1.1": 0.003}, labels=y)
    >>> shadow.decision("v1.1"), round(shadow.summary()["v1.1"]["agreement"], 2)
    ('promote', 0.74)
    """

    def __init__(
        self,
        champion: str,
        shadows: Sequence[str],
        criterion: str = "better",
        margin: float = 0.0,
        alpha: float = 0.05,
        min_requests: int = 1000,
        task: str = "classification",
    ) -> None:
        shadows = list(shadows)
        if not shadows or champion in shadows or len(set(shadows)) != len(shadows):
            raise ValueError(f"shadows must be distinct, non-empty and exclude the champion, got {shadows}")
        if criterion not in CRITERIA:
            raise ValueError(f"shadow criterion must be one of {list(CRITERIA)}, got {criterion!r}")
        if margin < 0 or (criterion == "better" and margin):
            raise ValueError(f"shadow margin must be >= 0 and used only with not_worse, got {margin}")
        if task not in TASKS:
            raise ValueError(f"shadow task must be one of {list(TASKS)}, got {task!r}")
        self.champion, self.shadows, self.criterion, self.margin = champion, shadows, criterion, margin
        self.min_requests, self.task = min_requests, task
        self.tests = {s: MixtureSPRT(alpha, alternative="better") for s in shadows}
        self.requests = 0
        self.labelled = 0
        self.agreements = dict.fromkeys(shadows, 0)
        self.correct = dict.fromkeys([champion, *shadows], 0)
        self.latency_sum = dict.fromkeys([champion, *shadows], 0.0)
        # Regression's counterparts of agreements and correct: sums of squares.
        self.differences = dict.fromkeys(shadows, 0.0)
        self.squared_error = dict.fromkeys([champion, *shadows], 0.0)

    @property
    def arms(self) -> list[str]:
        return [self.champion, *self.shadows]

    def record(
        self,
        predictions: Mapping[str, Sequence],
        latency_seconds: Mapping[str, float] | None = None,
        labels: Sequence | None = None,
    ) -> None:
        """One batch of requests: every model's predictions (the champion's were served), the mean
        latency per request of each, and the labels when they are known."""
        unknown = sorted(set(predictions) - set(self.arms))
        missing = sorted(set(self.arms) - set(predictions))
        if unknown or missing:
            raise ValueError(
                f"predictions for unknown arm(s) {unknown}, missing {missing}; arms: {self.arms}"
            )
        served = np.asarray(predictions[self.champion])
        n = len(served)
        if any(len(predictions[a]) != n for a in self.arms):
            raise ValueError(f"every arm must predict the same {n} requests")
        for arm in latency_seconds or {}:
            if arm not in self.latency_sum:
                raise ValueError(f"latency for unknown arm {arm!r}; arms: {self.arms}")
        if labels is not None and len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} requests")
        if self.task == "regression":
            self._record_values(predictions, latency_seconds, labels)
            return
        self.requests += n
        for s in self.shadows:
            self.agreements[s] += int((np.asarray(predictions[s]) == served).sum())
        for arm, seconds in (latency_seconds or {}).items():
            self.latency_sum[arm] += float(seconds) * n
        if labels is None:
            return
        labels = np.asarray(labels)
        right = {a: np.asarray(predictions[a]) == labels for a in self.arms}
        self.labelled += n
        for a in self.arms:
            self.correct[a] += int(right[a].sum())
        for s in self.shadows:
            self.tests[s].update(right[self.champion].astype(float), right[s] + self.margin)

    def _record_values(
        self,
        predictions: Mapping[str, Sequence],
        latency_seconds: Mapping[str, float] | None,
        labels: Sequence | None,
    ) -> None:
        """``record`` for regressors: predictions and labels are values."""
        values = {a: _finite(predictions[a], f"{a}'s predictions") for a in self.arms}
        served = values[self.champion]
        n = len(served)
        self.requests += n
        for s in self.shadows:
            self.differences[s] += float(((values[s] - served) ** 2).sum())
        for arm, seconds in (latency_seconds or {}).items():
            self.latency_sum[arm] += float(seconds) * n
        if labels is None:
            return
        y = _finite(labels, "labels")
        errors = {a: (values[a] - y) ** 2 for a in self.arms}
        self.labelled += n
        for a in self.arms:
            self.squared_error[a] += float(errors[a].sum())
        for s in self.shadows:
            # The control arm fixed at 0 makes the test one of the paired differences' mean (its
            # pooled variance over both arms is half theirs, and it weighs both arms equally).
            gain = (1 + self.margin) * errors[self.champion] - errors[s]
            self.tests[s].update(np.zeros(n), gain)

    def decision(self, shadow: str) -> str:
        """``"promote"`` once the criterion holds (after ``min_requests`` labelled requests), else
        ``"continue"``."""
        if shadow not in self.tests:
            raise ValueError(f"unknown shadow {shadow!r}; shadows: {self.shadows}")
        ready = self.labelled >= self.min_requests
        return "promote" if ready and self.tests[shadow].decision == "better" else "continue"

    def summary(self) -> dict:
        if self.task == "regression":
            return self._value_summary()
        out = {}
        for a in self.arms:
            row = {
                "accuracy": self.correct[a] / self.labelled if self.labelled else float("nan"),
                "latency_ms": 1e3 * self.latency_sum[a] / self.requests if self.requests else float("nan"),
            }
            if a in self.tests:
                test = self.tests[a]
                row |= {
                    "agreement": self.agreements[a] / self.requests if self.requests else float("nan"),
                    "p_value": test.p_value,
                    "effect": test.effect - self.margin if test.n else float("nan"),
                    "decision": self.decision(a),
                }
            out[a] = row
        return out

    def _value_summary(self) -> dict:
        """``summary`` for regressors: each arm's mean squared error, and for a shadow the root mean
        squared difference of its answers from the champion's and the effect, its mean squared error
        minus the champion's (negative: the shadow is better)."""
        nan = float("nan")
        out = {}
        for a in self.arms:
            row = {
                "mse": self.squared_error[a] / self.labelled if self.labelled else nan,
                "latency_ms": 1e3 * self.latency_sum[a] / self.requests if self.requests else nan,
            }
            if a in self.tests:
                mine, theirs = self.squared_error[a], self.squared_error[self.champion]
                row |= {
                    "rms_difference": (self.differences[a] / self.requests) ** 0.5 if self.requests else nan,
                    "p_value": self.tests[a].p_value,
                    "effect": (mine - theirs) / self.labelled if self.labelled else nan,
                    "decision": self.decision(a),
                }
            out[a] = row
        return out


def _finite(values: Sequence, what: str) -> np.ndarray:
    """Values as float64, refused unless finite: a NaN would poison every running sum."""
    out = np.asarray(values, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} must be finite numbers, got {out[~np.isfinite(out)][0]!r}")
    return out
