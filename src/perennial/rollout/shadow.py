"""Shadow deployment: every request also goes to one or more shadow models; only the champion's
answer is served. Agreement, latency and, once labels arrive, accuracy are compared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from perennial.stats.sequential import MixtureSPRT

CRITERIA = ("better", "not_worse")


class ShadowDeployment:
    """Records the champion's and each shadow's predictions on the same requests.

    Promotion is judged per shadow by a sequential test on paired per-request correctness (the
    same request, answered by both), valid however often it is checked:

    - ``criterion="better"``: promote when the shadow is significantly more accurate;
    - ``criterion="not_worse"``: promote when it is significantly no worse than ``margin`` below
      the champion (a non-inferiority test: the shadow's correctness plus ``margin`` tested as
      better), for a retrain whose point is freshness rather than accuracy.

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
    ) -> None:
        shadows = list(shadows)
        if not shadows or champion in shadows or len(set(shadows)) != len(shadows):
            raise ValueError(f"shadows must be distinct, non-empty and exclude the champion, got {shadows}")
        if criterion not in CRITERIA:
            raise ValueError(f"shadow criterion must be one of {list(CRITERIA)}, got {criterion!r}")
        if margin < 0 or (criterion == "better" and margin):
            raise ValueError(f"shadow margin must be >= 0 and used only with not_worse, got {margin}")
        self.champion, self.shadows, self.criterion, self.margin = champion, shadows, criterion, margin
        self.min_requests = min_requests
        self.tests = {s: MixtureSPRT(alpha, alternative="better") for s in shadows}
        self.requests = 0
        self.labelled = 0
        self.agreements = dict.fromkeys(shadows, 0)
        self.correct = dict.fromkeys([champion, *shadows], 0)
        self.latency_sum = dict.fromkeys([champion, *shadows], 0.0)

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
        self.requests += n
        for s in self.shadows:
            self.agreements[s] += int((np.asarray(predictions[s]) == served).sum())
        for arm, seconds in (latency_seconds or {}).items():
            if arm not in self.latency_sum:
                raise ValueError(f"latency for unknown arm {arm!r}; arms: {self.arms}")
            self.latency_sum[arm] += float(seconds) * n
        if labels is None:
            return
        labels = np.asarray(labels)
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} requests")
        right = {a: np.asarray(predictions[a]) == labels for a in self.arms}
        self.labelled += n
        for a in self.arms:
            self.correct[a] += int(right[a].sum())
        for s in self.shadows:
            self.tests[s].update(right[self.champion].astype(float), right[s] + self.margin)

    def decision(self, shadow: str) -> str:
        """``"promote"`` once the criterion holds (after ``min_requests`` labelled requests), else
        ``"continue"``."""
        if shadow not in self.tests:
            raise ValueError(f"unknown shadow {shadow!r}; shadows: {self.shadows}")
        ready = self.labelled >= self.min_requests
        return "promote" if ready and self.tests[shadow].decision == "better" else "continue"

    def summary(self) -> dict:
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
