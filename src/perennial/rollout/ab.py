"""A/B(/n) tests: units split between the champion and any number of candidates by sticky weights,
judged by sequential tests that allow continuous monitoring, or at a fixed horizon."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from perennial.rollout.router import Router
from perennial.stats.sequential import MixtureSPRT
from perennial.stats.tests import cuped, holm, mann_whitney, two_proportion_ztest, welch_ttest

FIXED_TESTS = ("ztest", "welch", "mannwhitney")


class ABTest:
    """Champion ``control`` against ``candidates`` (each with its traffic weight) on one metric.

    - ``decision()`` is sequential: each candidate has a two-sided mixture SPRT against control
      (always-valid p-values, so looking after every batch is fine), Holm-corrected across
      candidates. A candidate wins when its adjusted p-value is below ``alpha`` and its effect is
      an improvement; the champion stays when every candidate is significantly worse.
    - ``fixed_horizon()`` analyses all the data once, at a planned sample size, with the
      two-proportion z-test (0/1 metrics), Welch's t-test or Mann-Whitney, Holm-corrected; with
      ``covariates`` it applies CUPED first (a pre-experiment value per unit, e.g. the unit's
      accuracy under the champion last window) to cut the variance.

    >>> ab = ABTest("v1", {"v2": 0.25, "v3": 0.25}, salt="doc")
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(40):
    ...     arms = ab.assign(rng.integers(0, 10**9, 1000))
    ...     rate = np.select([arms == "v2", arms == "v3"], [0.12, 0.10], 0.10)
    ...     ab.record(arms, rng.random(1000) < rate)
    >>> ab.decision()
    'v2'
    """

    def __init__(
        self,
        control: str,
        candidates: Mapping[str, float],
        salt: str,
        alpha: float = 0.05,
        higher_is_better: bool = True,
    ) -> None:
        weights = {control: 1 - sum(candidates.values()), **candidates}
        self.router = Router(weights, control=control, salt=salt)
        self.control, self.candidates = control, list(candidates)
        self.alpha, self.higher_is_better = alpha, higher_is_better
        self.tests = {c: MixtureSPRT(alpha) for c in self.candidates}
        self.values: dict[str, list[np.ndarray]] = {a: [] for a in [control, *self.candidates]}
        self.covariates: dict[str, list[np.ndarray]] = {a: [] for a in self.values}

    def assign(self, units: Sequence) -> np.ndarray:
        return self.router.route_many(units)

    def record(self, arms: Sequence[str], values: Sequence[float], covariates: Sequence[float] | None = None):
        """Outcomes of served units (e.g. 1 if the prediction was right), with their arms."""
        arms, values = np.asarray(arms, dtype=object), np.asarray(values, dtype=float)
        if len(arms) != len(values):
            raise ValueError(f"{len(values)} values for {len(arms)} arms")
        unknown = sorted(set(arms) - set(self.values))
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; arms: {list(self.values)}")
        if covariates is not None:
            covariates = np.asarray(covariates, dtype=float)
            if len(covariates) != len(values):
                raise ValueError(f"{len(covariates)} covariates for {len(values)} values")
        for arm in self.values:
            mine = arms == arm
            self.values[arm].append(values[mine])
            if covariates is not None:
                self.covariates[arm].append(covariates[mine])
        control = values[arms == self.control]
        for c, test in self.tests.items():
            test.update(control, values[arms == c])

    def _sign(self) -> float:
        return 1.0 if self.higher_is_better else -1.0

    def results(self) -> dict[str, dict]:
        """Per candidate: pairs, effect (candidate minus control), raw and Holm-adjusted always-valid
        p-values."""
        adjusted = holm([t.p_value for t in self.tests.values()])
        return {
            c: {"n": t.n, "effect": t.effect, "p_value": t.p_value, "p_holm": p}
            for (c, t), p in zip(self.tests.items(), adjusted, strict=True)
        }

    def decision(self) -> str:
        """``"continue"``, the winning candidate, or the control when every candidate lost."""
        results = self.results()
        significant = {c: r for c, r in results.items() if r["p_holm"] <= self.alpha}
        better = {
            c: r["effect"] * self._sign() for c, r in significant.items() if r["effect"] * self._sign() > 0
        }
        if better:
            return max(better, key=better.get)
        return self.control if len(significant) == len(results) else "continue"

    def fixed_horizon(self, test: str = "ztest", use_covariates: bool = False) -> dict[str, dict]:
        """One analysis of everything recorded, per candidate against control, Holm-corrected."""
        if test not in FIXED_TESTS:
            raise ValueError(f"fixed-horizon test must be one of {list(FIXED_TESTS)}, got {test!r}")
        data = {a: np.concatenate(v) if v else np.empty(0) for a, v in self.values.items()}
        if use_covariates:
            x = {a: np.concatenate(v) if v else np.empty(0) for a, v in self.covariates.items()}
            if any(len(x[a]) != len(data[a]) for a in data):
                raise ValueError("use_covariates needs a covariate for every recorded value")
            pooled_y, _ = cuped(np.concatenate(list(data.values())), np.concatenate(list(x.values())))
            # theta comes from all arms pooled, so the adjustment shifts no arm relative to another
            cuts = np.cumsum([len(v) for v in data.values()])[:-1]
            data = dict(zip(data, np.split(pooled_y, cuts), strict=True))
        a = data[self.control]
        out = {}
        for c in self.candidates:
            b = data[c]
            if test == "ztest":
                r = two_proportion_ztest(int(a.sum()), len(a), int(b.sum()), len(b), alpha=self.alpha)
            elif test == "welch":
                r = welch_ttest(a, b, alpha=self.alpha)
            else:
                r = mann_whitney(a, b)
            out[c] = {"n": (len(a), len(b)), "effect": r.effect, "p_value": r.p_value}
        for c, p in zip(out, holm([r["p_value"] for r in out.values()]), strict=True):
            out[c]["p_holm"] = p
        return out

    def state_dict(self) -> dict:
        return {
            "router": self.router.state_dict(),
            "tests": {c: t.state_dict() for c, t in self.tests.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.router.load_state_dict(state["router"])
        for c, t in self.tests.items():
            t.load_state_dict(state["tests"][c])
