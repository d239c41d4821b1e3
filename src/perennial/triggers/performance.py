"""Update when the champion's served performance falls: below a fixed floor, or significantly below
the level it showed on its own held-out rows when it was registered."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from perennial.evaluate.metrics import LOWER_IS_BETTER, METRICS, REGRESSION_METRICS
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
    None (the default) is the task's headline: accuracy, or a regressor's MSE.

    For a regressor's error (``mse``, ``mae``: lower is better) "worse" is "higher": it fires when
    the window's error is above ``threshold``, or significantly above the validation error times
    ``1 + min_drop`` (``min_drop`` is relative there: 0.1 is 10% more error), by a one-sided z-test
    on the window's per-row errors, whose spread stands in for the validation rows' (the same under
    the null of no change). ``r2`` (higher is better) compares plainly.

    >>> t = PerformanceTrigger(threshold=0.8)
    >>> t.value, t.validation = 0.75, 0.9
    >>> t.fires().reason
    'accuracy 0.750 below the threshold 0.800'
    """

    name = "performance"

    def __init__(
        self,
        metric: str | None = None,
        threshold: float | None = None,
        alpha: float | None = 0.05,
        min_drop: float = 0.0,
        cooldown: int = 0,
    ) -> None:
        if metric is not None and metric not in (*METRICS, *REGRESSION_METRICS):
            raise ValueError(
                f"trigger.metric must be one of {[*METRICS, *REGRESSION_METRICS]} or null, got {metric!r}"
            )
        if threshold is None and alpha is None:
            raise ValueError("trigger=performance needs trigger.threshold, trigger.alpha or both")
        if alpha is not None and not 0 < alpha < 1:
            raise ValueError(f"trigger.alpha must be in (0, 1), got {alpha}")
        if min_drop < 0:
            raise ValueError(f"trigger.min_drop must be >= 0, got {min_drop}")
        self.metric, self.threshold, self.alpha, self.min_drop = metric, threshold, alpha, min_drop
        self._cooldown = Cooldown(cooldown)
        # The metric measured: ``metric``, or once a window is seen the task's headline.
        self.measure = metric or "accuracy"
        self.value: float | None = None
        self.n = 0
        self.validation: float | None = None
        self.n_validation = 0
        self.spread: float | None = None  # the per-row errors' standard deviation (a regressor's)

    def update(self, obs: Observation) -> None:
        self.measure = self.metric or ("mse" if "mse" in obs.served else "accuracy")
        if self.measure not in obs.served:
            raise ValueError(
                f"trigger.metric={self.measure!r} is not a served score; available: "
                f"{sorted(k for k in obs.served if k != 'n')}"
            )
        self._cooldown.tick()
        self.value, self.n = float(obs.served[self.measure]), int(obs.served.get("n", 0))
        validation = obs.champion_metrics.get(self.measure)
        self.validation = None if validation is None else float(validation)
        self.n_validation = int(obs.champion_metrics.get("n_holdout", 0) or 0)
        self.spread = None
        if self.measure in ("mse", "mae") and obs.probabilities is not None and len(obs.window.y) > 1:
            errors = obs.probabilities[:, 0].astype(float) - obs.window.y.astype(float)
            losses = errors**2 if self.measure == "mse" else np.abs(errors)
            self.spread = float(losses.std(ddof=1))

    @property
    def lower_is_better(self) -> bool:
        return self.measure in LOWER_IS_BETTER

    def drop_p_value(self) -> float:
        """One-sided p-value that the window's accuracy is below validation - min_drop (a regressor's
        error above validation times 1 + min_drop)."""
        if self.validation is None or not self.n or not self.n_validation:
            return math.nan
        if self.lower_is_better:
            if self.spread is None:
                return math.nan
            limit = self.validation * (1 + self.min_drop)
            se = self.spread * math.sqrt(1 / self.n + 1 / self.n_validation)
            return float(norm.sf((self.value - limit) / max(se, 1e-12)))
        if self.measure not in PROPORTIONS:
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
        side = "above" if self.lower_is_better else "below"
        shown = "{:.4g}" if self.lower_is_better else "{:.3f}"  # an error has its target's units
        if self.threshold is not None and (
            self.value > self.threshold if self.lower_is_better else self.value < self.threshold
        ):
            value, threshold = shown.format(self.value), shown.format(self.threshold)
            reason = f"{self.measure} {value} {side} the threshold {threshold}"
            return Firing(self.name, reason, statistic=self.value, p_value=self._p_or_none())
        if self.alpha is None or self.validation is None:
            return None
        p = self.drop_p_value()
        # Not a proportion (or no validation rows to test against): a plain comparison.
        if self.lower_is_better:
            plain = self.value > self.validation * (1 + self.min_drop)
            margin = f" x {1 + self.min_drop:g}" if self.min_drop else ""
        else:
            plain = self.value < self.validation - self.min_drop
            margin = f" - {self.min_drop:g}" if self.min_drop else ""
        if not (plain if math.isnan(p) else p < self.alpha):
            return None
        reason = (
            f"{self.measure} {shown.format(self.value)} on {self.n} rows, {side} the champion's "
            f"validation {shown.format(self.validation)}{margin}"
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
