"""Screening incoming windows for poisoned labels before anything trains on them.

Continuous updates let whoever supplies labels steer the next version. ``WindowScreen`` compares a
labelled window with the champion's view of it and with recently accepted windows, and flags:

- ``label_shift``: the labels' class mix is far from the mix the champion expects on these inputs
  (the sum of its predicted probabilities), by a chi-square test and a total-variation floor;
- ``disagreement``: the labels contradict the champion where it is confident (``confidence``)
  significantly more often than ``factor`` times its usual rate on accepted windows, by a one-sided
  binomial test;
- ``class_stats``: the features of the rows given some label moved suddenly away from the rows the
  champion assigns to that class, against how far apart the two were in the accepted windows (a
  z-test per class and feature, Bonferroni-corrected, with an effect floor of ``min_shift``
  standard deviations), as when another class's rows are relabelled. Measuring the labelled rows
  against the champion's own assignment, not against the past alone, keeps covariate drift, which
  moves both alike, from looking like poisoning.

A flagged window is quarantined: kept out of training, the buffer and the triggers, with the
evidence recorded. A real, lasting change of concept looks like poisoning from the champion's seat,
so after ``max_consecutive`` quarantined windows in a row the next flagged one is accepted as drift
(and says so); the gate's trusted reference set still guards what is trained on it.

>>> rng = np.random.default_rng(0)
>>> def window(flip=0.0):
...     x = rng.normal(size=(400, 3)); y = (x[:, 0] > 0).astype(int)
...     p1 = 1 / (1 + np.exp(-4 * x[:, 0]))                     # a good champion's probabilities
...     flipped = rng.random(400) < flip
...     return x, np.where(flipped, 1 - y, y), np.c_[1 - p1, p1]
>>> screen = WindowScreen()
>>> for _ in range(3):
...     screen.accept(*window())
>>> screen.screen(*window()).quarantine
False
>>> verdict = screen.screen(*window(flip=0.3))
>>> verdict.quarantine, verdict.flagged
(True, ['disagreement'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

CHECKS = ("label_shift", "disagreement", "class_stats")
# class_stats is off by default: a real change of concept moves labelled rows away from the
# champion's classes just as relabelling does, and it flagged clean drifting windows (docs/benchmarks.md).
DEFAULT_CHECKS = ("label_shift", "disagreement")


@dataclass(frozen=True)
class ScreenResult:
    """What the screen found in one window: each check's numbers, and the verdict."""

    quarantine: bool
    flagged: list[str]
    checks: dict[str, dict] = field(default_factory=dict)
    reason: str = ""


class WindowScreen:
    """Flags windows whose labels disagree with the champion and with recent accepted windows.

    ``accept(x, y, probabilities)`` adds a window to the reference (the last ``reference_windows``
    accepted ones); ``screen(x, y, probabilities)`` judges a new one. State is plain JSON
    (``state_dict`` / ``load_state_dict``), so a resumed run screens as an uninterrupted one.
    """

    def __init__(
        self,
        checks: tuple[str, ...] | list[str] = DEFAULT_CHECKS,
        alpha: float = 0.001,
        confidence: float = 0.9,
        factor: float = 2.0,
        min_excess: float = 0.05,
        min_label_shift: float = 0.2,
        min_shift: float = 1.0,
        min_rows: int = 30,
        reference_windows: int = 3,
        max_consecutive: int = 2,
    ) -> None:
        unknown = sorted(set(checks) - set(CHECKS))
        if unknown or not checks:
            raise ValueError(
                f"screen.checks must be a non-empty subset of {list(CHECKS)}, got {list(checks)}"
            )
        if not 0 < alpha < 1:
            raise ValueError(f"screen.alpha must be in (0, 1), got {alpha}")
        if not 0.5 <= confidence < 1:
            raise ValueError(f"screen.confidence must be in [0.5, 1), got {confidence}")
        for name, value in (("factor", factor), ("min_shift", min_shift)):
            if not value > 0:
                raise ValueError(f"screen.{name} must be > 0, got {value}")
        for name, value in (("min_excess", min_excess), ("min_label_shift", min_label_shift)):
            if not 0 <= value < 1:
                raise ValueError(f"screen.{name} must be in [0, 1), got {value}")
        for name, value in (("min_rows", min_rows), ("reference_windows", reference_windows)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"screen.{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(max_consecutive, int) and max_consecutive >= 0):
            raise ValueError(f"screen.max_consecutive must be an integer >= 0, got {max_consecutive!r}")
        self.checks = tuple(checks)
        self.alpha, self.confidence, self.factor, self.min_excess = alpha, confidence, factor, min_excess
        self.min_label_shift, self.min_shift, self.min_rows = min_label_shift, min_shift, min_rows
        self.reference_windows, self.max_consecutive = reference_windows, max_consecutive
        self.reset()

    def reset(self) -> None:
        # Per accepted window: confident rows and their disagreements, and per class the row count,
        # feature sums and sums of squares (enough for pooled means and variances).
        self.reference: list[dict] = []
        self.consecutive = 0

    # ---- reference -------------------------------------------------------------------------------
    def accept(self, x: np.ndarray, y: np.ndarray, probabilities: np.ndarray) -> None:
        """Add an accepted window to the reference; the oldest beyond ``reference_windows`` leaves."""
        x, y, p = _check(x, y, probabilities)
        confident = p.max(1) >= self.confidence
        summary = {
            "confident": int(confident.sum()),
            "disagree": int((p.argmax(1) != y)[confident].sum()),
            "labels": np.unique(y).tolist(),
            "classes": {},
        }
        for c in np.unique(y).tolist():
            gap = _gap(x, y, p.argmax(1), c)
            if gap is not None:
                summary["classes"][str(c)] = gap
        self.reference = [*self.reference, summary][-self.reference_windows :]

    # ---- judging ---------------------------------------------------------------------------------
    def screen(self, x: np.ndarray, y: np.ndarray, probabilities: np.ndarray) -> ScreenResult:
        """Judge one labelled window; updates the run of consecutive quarantines."""
        x, y, p = _check(x, y, probabilities)
        checks = {}
        known = sorted({int(c) for r in self.reference for c in r["labels"]})
        if known:
            # A class the accepted windows never had (class-incremental streams) has nothing to be
            # compared with: its rows are left out, and named.
            new = sorted(set(np.unique(y).tolist()) - set(known))
            if new:
                checks["new_classes"] = {"classes": new, "rows": int(np.isin(y, new).sum()), "flagged": False}
            keep = np.isin(y, known)
            x, y, p = x[keep], y[keep], p[keep][:, known]
            p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
            y = np.searchsorted(known, y)
        if not len(y):
            self.consecutive = 0
            return ScreenResult(False, [], checks, "")
        if "label_shift" in self.checks:
            checks["label_shift"] = self._label_shift(y, p)
        if self.reference and "disagreement" in self.checks:
            checks["disagreement"] = self._disagreement(y, p)
        if self.reference and "class_stats" in self.checks:
            labels = np.asarray(known)[y] if known else y
            predicted = np.asarray(known)[p.argmax(1)] if known else p.argmax(1)
            checks["class_stats"] = self._class_stats(x, labels, predicted)
        flagged = [name for name, c in checks.items() if c["flagged"]]
        if not flagged:
            self.consecutive = 0
            return ScreenResult(False, [], checks, "")
        if self.consecutive >= self.max_consecutive:
            self.consecutive = 0
            reason = (
                f"{', '.join(flagged)} flagged, but after {self.max_consecutive} quarantined window(s) in a "
                "row a lasting change is taken for drift, not poisoning"
            )
            return ScreenResult(False, flagged, checks, reason)
        self.consecutive += 1
        return ScreenResult(True, flagged, checks, "; ".join(checks[name]["reason"] for name in flagged))

    def _label_shift(self, y: np.ndarray, p: np.ndarray) -> dict:
        k = p.shape[1]
        observed = np.bincount(y, minlength=k)[:k].astype(float)
        expected = p.sum(0)
        keep = expected > 0
        tv = 0.5 * float(np.abs(observed / len(y) - expected / len(y)).sum())
        chi2 = float((((observed - expected) ** 2)[keep] / expected[keep]).sum())
        p_value = float(stats.chi2.sf(chi2, max(int(keep.sum()) - 1, 1)))
        flagged = len(y) >= self.min_rows and p_value < self.alpha and tv >= self.min_label_shift
        reason = (
            f"labels' class mix is {tv:.2f} (total variation) from the champion's expectation "
            f"(p={p_value:.2g})"
        )
        return {"statistic": tv, "p_value": p_value, "flagged": bool(flagged), "reason": reason}

    def _disagreement(self, y: np.ndarray, p: np.ndarray) -> dict:
        confident = p.max(1) >= self.confidence
        m = int(confident.sum())
        k = int((p.argmax(1) != y)[confident].sum())
        ref_m = sum(r["confident"] for r in self.reference)
        ref_k = sum(r["disagree"] for r in self.reference)
        usual = (ref_k + 1) / (ref_m + 2)  # smoothed: a flawless reference does not make 0 the bar
        bar = min(0.5, max(self.factor * usual, usual + self.min_excess))
        p_value = float(stats.binom.sf(k - 1, m, bar)) if m else 1.0
        rate = k / m if m else math.nan
        flagged = m >= self.min_rows and p_value < self.alpha
        reason = (
            f"labels contradict the confident champion on {rate:.1%} of {m} rows, usually {usual:.1%} "
            f"(tested against {bar:.1%}, p={p_value:.2g})"
        )
        return {
            "statistic": rate,
            "usual": usual,
            "p_value": p_value,
            "flagged": bool(flagged),
            "reason": reason,
        }

    def _class_stats(self, x: np.ndarray, y: np.ndarray, predicted: np.ndarray) -> dict:
        worst: tuple[float, float, int, int] = (1.0, 0.0, -1, -1)  # p, effect, class, feature
        tested = 0
        per_class = {}
        for c in np.unique(y).tolist():
            now = _gap(x, y, predicted, c)
            if now is None:
                continue
            # Windows summarised over as many features: a champion that reads columns new to the
            # stream starts its own reference.
            width = len(now["gap"])
            ref = [r["classes"][str(c)] for r in self.reference if str(c) in r["classes"]]
            ref = [r for r in ref if len(r["gap"]) == width]
            if not ref:
                continue
            # Pooled over the reference windows: the gap and its variance, and the spread of the rows.
            weights = np.array([r["n"] for r in ref], dtype=float)
            gap_ref = np.average([r["gap"] for r in ref], axis=0, weights=weights)
            var_gap_ref = np.average([r["var_gap"] for r in ref], axis=0, weights=weights) / len(ref)
            sd = np.sqrt(np.average([r["var"] for r in ref], axis=0, weights=weights))
            change = np.asarray(now["gap"]) - gap_ref
            z = change / np.sqrt(np.asarray(now["var_gap"]) + var_gap_ref)
            effect = np.abs(change) / np.maximum(sd, 1e-6)
            p_values = 2 * stats.norm.sf(np.abs(z))
            tested += len(p_values)
            j = int(np.argmax(np.where(effect >= self.min_shift, -np.log(p_values + 1e-300), -1.0)))
            per_class[str(c)] = {"max_effect": float(effect.max()), "min_p": float(p_values.min())}
            if effect[j] >= self.min_shift and p_values[j] < worst[0]:
                worst = (float(p_values[j]), float(effect[j]), int(c), j)
        p_value = min(1.0, worst[0] * max(tested, 1))  # Bonferroni over classes and features
        flagged = worst[2] >= 0 and p_value < self.alpha
        reason = (
            f"rows labelled {worst[2]} moved {worst[1]:.2f} sd on feature {worst[3]} away from the rows "
            f"the champion assigns to it, against recent windows (p={p_value:.2g}, Bonferroni over {tested})"
        )
        return {
            "statistic": worst[1],
            "p_value": p_value,
            "flagged": bool(flagged),
            "reason": reason,
            "classes": per_class,
        }

    # ---- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"reference": self.reference, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.reference = list(state["reference"])
        self.consecutive = int(state["consecutive"])


def _gap(x: np.ndarray, y: np.ndarray, predicted: np.ndarray, c: int, min_rows: int = 10) -> dict | None:
    """Mean features of the rows labelled ``c`` minus those of the rows predicted ``c``, with the
    variance of that difference and of the labelled rows; None with too few of either."""
    labelled, assigned = x[y == c].astype(np.float64), x[predicted == c].astype(np.float64)
    if len(labelled) < min_rows or len(assigned) < min_rows:
        return None
    return {
        "n": len(labelled),
        "gap": (labelled.mean(0) - assigned.mean(0)).tolist(),
        "var_gap": (labelled.var(0) / len(labelled) + assigned.var(0) / len(assigned)).tolist(),
        "var": labelled.var(0).tolist(),
    }


def _check(x: np.ndarray, y: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, ...]:
    x = np.asarray(x).reshape(len(x), -1)
    y = np.asarray(y)
    p = np.asarray(probabilities, dtype=np.float64)
    if not (len(x) == len(y) == len(p)):
        raise ValueError(
            f"screen needs one label and one probability row per input, got {len(x)}, {len(y)}, {len(p)}"
        )
    if p.ndim != 2 or (len(y) and (y.min() < 0 or y.max() >= p.shape[1])):
        raise ValueError(f"labels must be class ids in 0..{p.shape[1] - 1 if p.ndim == 2 else '?'}")
    return x, y.astype(int), p
