"""Canary release: the candidate takes a growing share of traffic in ordered steps, each guarded by
sequential tests, and is rolled back at the first significant degradation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from perennial.rollout.router import Router
from perennial.stats.sequential import MixtureSPRT

STATUSES = ("running", "rolled_back", "completed")


class CanaryRollout:
    """Moves ``candidate`` through ``steps`` against the ``control`` champion.

    - Steps are traffic shares (``steps=[0.01, 0.05, 0.25, 0.5, 1.0]``) or segments
      (``segments=["us", "eu", "asia", "rest"]``: step i opens the first i + 1 segments to the
      canary, which takes ``segment_share`` of their traffic, so the champion keeps serving the
      same segments and the comparison is like for like).
    - ``guards`` maps each guard metric to ``"higher"`` or ``"lower"`` (which way is better). Each
      guard has a one-sided mixture SPRT (``MixtureSPRT(alternative="worse")``) over the canary's
      and the champion's outcomes since the start, valid however often it is checked; a "worse"
      on any guard rolls the canary back at once. Each step is a period of the test: the canary is
      compared only with champion outcomes served in the same step, at the same split, so a change
      in the traffic (users' mix, the season) that happens as the share grows is not taken for harm.
    - ``holdout``: the share of the traffic the champion keeps at every step, 5% by default (the
      canary's share is capped at ``1 - holdout``). At a 100% step without it there would be no
      champion outcome of the same time to compare with, and comparing with outcomes of earlier
      steps mistakes a change in the traffic for harm: equal models whose accuracy falls 3 points
      during that step were rolled back 49% of the time at 3,000 requests a window. With
      ``holdout=0`` the guard learns nothing at a 100% step, which then only waits ``min_samples``
      canary units.
    - A step advances once the canary has served ``min_samples`` units in it with no guard
      tripped; after the last step the rollout completes.

    ``timeline`` records every start, advance, rollback and completion with the sample counts and
    the guards' p-values.

    >>> canary = CanaryRollout("v1", "v1.1", steps=[0.1, 0.5, 1.0], min_samples=300, salt="doc")
    >>> rng = np.random.default_rng(0)
    >>> while canary.status == "running":
    ...     units = rng.integers(0, 10**9, 500)
    ...     arms = canary.assign(units)
    ...     correct = rng.random(500) < np.where(arms == "v1.1", 0.70, 0.90)  # a bad candidate
    ...     status = canary.record(arms, {"accuracy": correct})
    >>> canary.status, canary.timeline[-1]["event"], canary.canary_units < 0.1 * canary.units
    ('rolled_back', 'rollback', True)
    """

    def __init__(
        self,
        control: str,
        candidate: str,
        steps: Sequence[float] | None = (0.01, 0.05, 0.25, 0.5, 1.0),
        segments: Sequence[str] | None = None,
        segment_share: float = 0.5,
        guards: Mapping[str, str] | None = None,
        min_samples: int = 500,
        alpha: float = 0.05,
        salt: str = "canary",
        holdout: float = 0.05,
    ) -> None:
        if not (isinstance(holdout, int | float) and not isinstance(holdout, bool) and 0 <= holdout < 1):
            raise ValueError(f"canary holdout must be a share in [0, 1), got {holdout!r}")
        if segments is not None:
            if not segments or len(set(segments)) != len(segments):
                raise ValueError(f"canary segments must be distinct and non-empty, got {list(segments)}")
            if not 0 < segment_share <= 1:
                raise ValueError(f"canary segment_share must be in (0, 1], got {segment_share}")
            self.segments: list[str] | None = list(segments)
            shares = [segment_share] * len(segments)
        else:
            shares = [float(s) for s in steps or ()]
            if not shares or any(not 0 < s <= 1 for s in shares) or shares != sorted(set(shares)):
                raise ValueError(f"canary steps must be increasing shares in (0, 1], got {list(steps or ())}")
            self.segments = None
        guards = dict(guards or {"accuracy": "higher"})
        bad = {m: d for m, d in guards.items() if d not in ("higher", "lower")}
        if bad:
            raise ValueError(f"canary guards map a metric to 'higher' or 'lower' (better), got {bad}")
        if min_samples < 1:
            raise ValueError(f"canary min_samples must be >= 1, got {min_samples}")
        self.control, self.candidate, self.shares, self.min_samples = control, candidate, shares, min_samples
        self.holdout = float(holdout)
        first = self._served_share(0)
        self.router = Router({control: 1 - first, candidate: first}, control=control, salt=salt)
        self.tests = {
            m: MixtureSPRT(alpha, alternative="worse", higher_is_better=d == "higher")
            for m, d in guards.items()
        }
        self.step, self.step_units, self.units, self.canary_units = 0, 0, 0, 0
        self.status = "running"
        self.timeline: list[dict] = []
        self._event("start")

    def _served_share(self, step: int) -> float:
        """The canary's share of the traffic (of the open segments) at ``step``, after the holdout."""
        return min(self.shares[step], 1 - self.holdout)

    # ---- traffic --------------------------------------------------------------------------
    def assign(self, units: Sequence, segments: Sequence[str] | None = None) -> np.ndarray:
        """The arm serving each unit now (the champion everywhere once rolled back)."""
        if self.status == "rolled_back":
            return np.full(len(units), self.control, dtype=object)
        arms = self.router.route_many(units)
        if self.segments is not None:
            if segments is None:
                raise ValueError("a canary by segment needs each unit's segment")
            unknown = sorted(set(segments) - set(self.segments))
            if unknown:
                raise ValueError(f"unknown segment(s) {unknown}; canary segments: {self.segments}")
            open_ = set(self.segments[: self.step + 1])
            arms = np.where([s in open_ for s in segments], arms, self.control)
        return arms

    def record(self, arms: Sequence[str], metrics: Mapping[str, Sequence[float]]) -> str:
        """Feedback for served units: their arms and each guard metric's value; returns the status."""
        arms = np.asarray(arms, dtype=object)
        missing = sorted(set(self.tests) - set(metrics))
        if missing:
            raise ValueError(f"feedback lacks guard metric(s) {missing}; got {sorted(metrics)}")
        unknown = sorted(set(arms) - {self.control, self.candidate})
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; this canary has {[self.control, self.candidate]}")
        if self.status != "running":
            return self.status
        on_canary = arms == self.candidate
        for name, test in self.tests.items():
            values = np.asarray(metrics[name], dtype=float)
            if len(values) != len(arms):
                raise ValueError(f"guard metric {name!r} has {len(values)} values for {len(arms)} units")
            test.update(values[~on_canary], values[on_canary], period=self.step)
        self.units += len(arms)
        self.canary_units += int(on_canary.sum())
        self.step_units += int(on_canary.sum())
        tripped = [m for m, t in self.tests.items() if t.decision == "worse"]
        if tripped:
            self.router.remove(self.candidate)
            self.status = "rolled_back"
            self._event("rollback", guards=tripped)
        elif self.step_units >= self.min_samples:
            if self.step + 1 < len(self.shares):
                self.step, self.step_units = self.step + 1, 0
                if self.segments is None:
                    self.router.set_weights({self.candidate: self._served_share(self.step)})
                self._event("advance")
            else:
                self.status = "completed"
                self._event("complete")
        return self.status

    def _event(self, event: str, **extra) -> None:
        where = {"segments": self.segments[: self.step + 1]} if self.segments else {}
        self.timeline.append(
            {
                "event": event,
                "step": self.step,
                "share": self.shares[self.step],
                **where,
                "units": self.units,
                "canary_units": self.canary_units,
                "p_values": {m: t.p_value for m, t in self.tests.items()},
                # None, not NaN, before any data: the timeline is JSON and must read back equal
                "effects": {m: t.effect if t.n else None for m, t in self.tests.items()},
                **extra,
            }
        )

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "router": self.router.state_dict(),
            "tests": {m: t.state_dict() for m, t in self.tests.items()},
            "step": self.step,
            "step_units": self.step_units,
            "units": self.units,
            "canary_units": self.canary_units,
            "status": self.status,
            "timeline": self.timeline,
        }

    def load_state_dict(self, state: dict) -> None:
        self.router.load_state_dict(state["router"])
        for m, t in self.tests.items():
            t.load_state_dict(state["tests"][m])
        self.step, self.step_units = state["step"], state["step_units"]
        self.units, self.canary_units = state["units"], state["canary_units"]
        self.status, self.timeline = state["status"], list(state["timeline"])
        # A state from before steps were periods also holds outcomes waiting to be paired
        # ("recent_control", "waiting"); the tests it restores already hold every paired outcome.
