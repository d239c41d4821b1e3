"""Update when the champion's served performance falls: below a fixed floor, or significantly below
the level it showed on its own held-out rows when it was registered."""

from __future__ import annotations

import math

from scipy.stats import norm

from perennial.evaluate.metrics import check_metric
from perennial.triggers.base import Cooldown, Firing, Observation, Trigger

# Proportions, for which the two-proportion z-test below is valid.
PROPORTIONS = ("accuracy",)


class PerformanceTrigger(Trigger):
    """Fires when the labelled newest window shows the champion doing worse.

    - ``threshold``: fire when ``metric`` on the window falls below it (absolute floor).
    - ``alpha``: fire when the window's accuracy is significantly below the champion's validation
      accuracy minus ``min_drop`` (one-sided two-proportion z-test of the window's rows against the
      champion's held-out rows, p < alpha). The test needs a proportion, so it applies to
      ``metric="accuracy"``; other metrics use ``threshold`` and ``min_drop`` as plain comparisons.

    At least one of the two must be set. ``metric`` is one of ``perennial.evaluate.metrics.METRICS``
    (accuracy, balanced_accuracy, f1, auroc, precision_at_recall): on a stream with a rare class,
    accuracy stays high while the model misses every rare row, and balanced accuracy does not.

    >>> t = PerformanceTrigger(threshold=0.8)
    >>> t.value, t.validation = 0.75, 0.9
    >>> t.fires().reason
    'accuracy 0.750 below the threshold 0.800'
    """

    name = "performance"

    def __init__(
        self,
        metric: str = "accuracy",
        threshold: float | None = None,
        alpha: float | None = 0.05,
        min_drop: float = 0.0,
        cooldown: int = 0,
    ) -> None:
        check_metric(metric, "trigger.metric")
        if threshold is None and alpha is None:
            raise ValueError("trigger=performance needs trigger.threshold, trigger.alpha or both")
        if alpha is not None and not 0 < alpha < 1:
            raise ValueError(f"trigger.alpha must be in (0, 1), got {alpha}")
        if min_drop < 0:
            raise ValueError(f"trigger.min_drop must be >= 0, got {min_drop}")
        self.metric, self.threshold, self.alpha, self.min_drop = metric, threshold, alpha, min_drop
        self._cooldown = Cooldown(cooldown)
        self.value: float | None = None
        self.n = 0
        self.validation: float | None = None
        self.n_validation = 0

    def update(self, obs: Observation) -> None:
        if self.metric not in obs.served:
            raise ValueError(
                f"trigger.metric={self.metric!r} is not a served score; available: "
                f"{sorted(k for k in obs.served if k != 'n')}"
            )
        self._cooldown.tick()
        self.value, self.n = float(obs.served[self.metric]), int(obs.served.get("n", 0))
        validation = obs.champion_metrics.get(self.metric)
        self.validation = None if validation is None else float(validation)
        self.n_validation = int(obs.champion_metrics.get("n_holdout", 0) or 0)

    def drop_p_value(self) -> float:
        """One-sided p-value that the window's accuracy is below validation - min_drop."""
        if self.metric not in PROPORTIONS or self.validation is None or not self.n or not self.n_validation:
            return math.nan
        p1, pv = self.value, self.validation
        # Unpooled standard error: under the null the two accuracies differ by min_drop, not zero.
        var = p1 * (1 - p1) / self.n + pv * (1 - pv) / self.n_validation
        se = math.sqrt(max(var, 1e-12))
        p0 = pv - self.min_drop
        return float(norm.cdf((p1 - p0) / se))

    def fires(self) -> Firing | None:
        if self.value is None or math.isnan(self.value) or not self._cooldown.ready():
            return None
        if self.threshold is not None and self.value < self.threshold:
            reason = f"{self.metric} {self.value:.3f} below the threshold {self.threshold:.3f}"
            return Firing(self.name, reason, statistic=self.value, p_value=self._p_or_none())
        if self.alpha is None or self.validation is None:
            return None
        p = self.drop_p_value()
        # Not a proportion (or no validation rows to test against): a plain comparison.
        plain = self.value < self.validation - self.min_drop
        if not (plain if math.isnan(p) else p < self.alpha):
            return None
        reason = (
            f"{self.metric} {self.value:.3f} on {self.n} rows, below the champion's validation "
            f"{self.validation:.3f}" + (f" - {self.min_drop:g}" if self.min_drop else "")
        )
        if not math.isnan(p):
            reason += f" (one-sided p={p:.2g} < {self.alpha:g})"
        return Firing(self.name, reason, statistic=self.value, p_value=None if math.isnan(p) else p)

    def _p_or_none(self) -> float | None:
        p = self.drop_p_value()
        return None if math.isnan(p) else p

    def last_test(self) -> dict[str, float]:
        if self.value is None:
            return {}
        return {"statistic": self.value, "p_value": self.drop_p_value()}

    def reset(self) -> None:
        self._cooldown.reset()
        self.value = None

    def state_dict(self) -> dict:
        return {**super().state_dict(), "cooldown": self._cooldown.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        self._cooldown.load_state_dict(state.pop("cooldown"))
        super().load_state_dict(state)
