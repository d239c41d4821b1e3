"""Update when the data drifts: a two-sample test of each window against a reference, or a
streaming detector on the champion's errors."""

from __future__ import annotations

import math

import numpy as np

from perennial.drift.base import DriftResult, StreamDetector, TwoSampleDetector
from perennial.triggers.base import Cooldown, Firing, Observation, Trigger

SPACES = ("inputs", "embeddings", "predictions", "errors")
REFERENCES = ("champion", "sliding")


class DriftTrigger(Trigger):
    """Fires when ``detector`` finds drift in the newest window.

    - ``compare``: what is compared (by default what the detector is made for). ``inputs`` (the raw
      features), ``embeddings`` (the champion's penultimate layer) or ``predictions`` (the
      champion's class probabilities, or a regressor's predicted values) need no labels and
      go to a two-sample detector (``UnivariateDrift``, ``MMDDrift``, ``PredictionShift``);
      ``errors`` feeds the champion's 0/1 errors (a regressor's absolute residuals over its
      target's scale), row by row, to a streaming detector (``ADWIN``, ``PageHinkley``), which
      resets after each update because the new model errs differently.
    - ``reference``: ``champion`` compares with the rows the champion was trained on;
      ``sliding`` with the ``sliding_windows`` windows just before the new one.
    - ``max_reference_rows`` caps the reference (a seeded subsample), so a test costs the same on
      year 50 as on year 1.
    """

    name = "drift"

    def __init__(
        self,
        detector: TwoSampleDetector | StreamDetector,
        compare: str | None = None,
        reference: str = "champion",
        sliding_windows: int = 3,
        max_reference_rows: int = 2000,
        cooldown: int = 0,
    ) -> None:
        streaming = isinstance(detector, StreamDetector)
        if compare is None:  # what the detector is made for
            made_for = {"prediction_shift": "predictions"}.get(detector.name, "inputs")
            compare = "errors" if streaming else made_for
        if compare not in SPACES:
            raise ValueError(f"trigger.compare must be one of {list(SPACES)}, got {compare!r}")
        if reference not in REFERENCES:
            raise ValueError(f"trigger.reference must be one of {list(REFERENCES)}, got {reference!r}")
        if streaming != (compare == "errors"):
            kind = "a two-sample detector"
            if compare == "errors":
                kind = "a streaming detector (ADWIN, PageHinkley)"
            raise ValueError(
                f"trigger.compare={compare!r} needs {kind}; {type(detector).__name__} is "
                f"{'streaming' if streaming else 'two-sample'}"
            )
        if sliding_windows < 1:
            raise ValueError(f"trigger.sliding_windows must be >= 1, got {sliding_windows}")
        if max_reference_rows < 1:
            raise ValueError(f"trigger.max_reference_rows must be >= 1, got {max_reference_rows}")
        self._detector = detector
        self.compare, self.reference = compare, reference
        self.sliding_windows, self.max_reference_rows = sliding_windows, max_reference_rows
        self._cooldown = Cooldown(cooldown)
        self.result: dict | None = None  # the latest test, JSON-able

    # ---- observing ------------------------------------------------------------------------
    def update(self, obs: Observation) -> None:
        self._cooldown.tick()
        if isinstance(self._detector, StreamDetector):
            self.result = self._stream(obs)
        else:
            reference, current = self._samples(obs)
            self.result = self._detector.test(reference, current).to_dict()

    def _samples(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        if obs.reference is None:
            raise ValueError("a drift trigger needs the loop's reference rows (Observation.reference)")
        if self.reference == "champion":
            positions = list(obs.champion_windows)
        else:
            positions = list(range(max(0, obs.position - self.sliding_windows), obs.position))
        reference, current = obs.reference(positions, self.max_reference_rows), obs.window.x
        if self.compare == "inputs":
            return reference, current
        if obs.champion is None:
            raise ValueError(
                f"trigger.compare={self.compare!r} needs the champion model (Observation.champion)"
            )
        if self.compare == "embeddings":
            return obs.champion.embed(reference).numpy(), obs.champion.embed(current).numpy()
        current_p = obs.probabilities
        if current_p is None:
            current_p = obs.champion.predict_outputs(current)
        if getattr(obs.champion, "task", "") == "regression" and self._detector.name == "prediction_shift":
            raise ValueError(
                "trigger/detector=prediction_shift compares predicted classes; a regressor predicts "
                "values: use trigger/detector=univariate (or mmd) with trigger.compare=predictions"
            )
        return obs.champion.predict_outputs(reference), current_p

    def _stream(self, obs: Observation) -> dict:
        if obs.probabilities is None:
            raise ValueError(
                "trigger.compare='errors' needs the champion's predictions (Observation.probabilities)"
            )
        y = obs.window.y
        if y.dtype.kind == "f":  # a regressor: its absolute residuals, on the target's learned scale
            scale = float(getattr(obs.champion, "target_scale", 1.0)) or 1.0
            errors = np.abs(obs.probabilities[:, 0].astype(float) - y.astype(float)) / scale
            what = "the absolute residuals"
        else:
            errors = (obs.probabilities.argmax(1) != y).astype(float)
            what = "the error rate"
        detected_at = [i for i, e in enumerate(errors) if self._detector.update(float(e))]
        drift = bool(detected_at)
        reason = (
            f"change in {what} detected at row {detected_at[0]} of {len(errors)}"
            if drift
            else f"no change in {what} over {len(errors)} rows"
        )
        return DriftResult(
            detector=self._detector.name,
            drift=drift,
            statistic=float(errors.mean()) if len(errors) else math.nan,
            p_value=math.nan,
            reason=reason,
            details={"detected_at_rows": detected_at[:10], "error_rate": float(errors.mean() or 0.0)},
        ).to_dict()

    # ---- deciding -------------------------------------------------------------------------
    def fires(self) -> Firing | None:
        if not self.result or not self.result["drift"] or not self._cooldown.ready():
            return None
        r = self.result
        return Firing(
            self.name,
            f"{r['detector']} on {self.compare}: {r['reason']}",
            statistic=r["statistic"],
            p_value=r["p_value"],
            extra={"detector": r["detector"], "compare": self.compare, "reference": self.reference},
        )

    def last_test(self) -> dict[str, float]:
        if not self.result:
            return {}
        return {"statistic": self.result["statistic"], "p_value": self.result["p_value"]}

    def reset(self) -> None:
        self._cooldown.reset()
        self.result = None
        if isinstance(self._detector, StreamDetector):
            self._detector.reset()

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"result": self.result, "cooldown": self._cooldown.state_dict()}
        if isinstance(self._detector, StreamDetector):
            state["detector"] = self._detector.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.result = state["result"]
        self._cooldown.load_state_dict(state["cooldown"])
        if "detector" in state:
            self._detector.load_state_dict(state["detector"])
