"""The offline promotion gate: a candidate replaces the champion only if fresh data show it is at most
``tolerance`` worse, and it does not forget earlier windows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perennial.evaluate.metrics import HEADLINE, Evaluation, RegressionEvaluation, check_metric, metric
from perennial.stats.paired import (
    accuracy_bootstrap_differences,
    bootstrap_lower_bound,
    bootstrap_noninferiority_pvalue,
    discordant_counts,
    min_detectable_drop,
    noninferiority_pvalue,
    normal_min_detectable_drop,
    paired_bootstrap_differences,
    score_lower_bound,
)
from perennial.stats.ratio import (
    ratio_bootstrap_differences,
    ratio_lower_bound,
    ratio_min_detectable_drop,
    ratio_noninferiority_pvalue,
)

# auto: the task's own test (score for accuracy, bootstrap for the other classifier metrics, t for
# a regressor); score: Tango's interval (accuracy); t: Fieller's paired t bound on the ratio of mean
# per-row losses (regression); bootstrap: the paired-bootstrap percentile bound (any metric).
TESTS = ("auto", "score", "t", "bootstrap")
# Which rows are fresh: ``next``, the next labelled window, after everything the candidate trained on
# (it waits one window, then is judged before it serves); ``holdout``, a held-out share of the window
# it was just trained on (it serves at once). See docs/design.md, "Do no harm".
FRESH = ("next", "holdout")
# Names a config may still carry, with what replaced them and why.
RENAMED = {
    "mcnemar": "score: the gate now tests non-inferiority (is the candidate's lower confidence bound "
    "above -tolerance?) with Tango's score interval, not McNemar's test of 'worse than 0'"
}
# The power at which the gate's minimum detectable drop is quoted.
POWER = 0.8


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    numbers: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "rejected"


class PromotionGate:
    """Decide between a candidate and the champion, from per-example outcomes on the same data.

    Fresh data, a non-inferiority test: with ``Δ = metric(candidate) - metric(champion)`` on the
    fresh rows (``fresh="next"``: every row of the first window labelled after the candidate's
    training data, which neither model trained on; ``fresh="holdout"``: the newest training window's
    held-out rows), the candidate passes only when the one-sided ``1 - alpha`` lower
    confidence bound of ``Δ`` lies above ``-tolerance``. So a candidate truly worse by ``tolerance``
    or more is promoted at most ``alpha`` of the time; a candidate as good as the champion passes
    only when the rows are enough to show it (``min_detectable_drop`` in the numbers says how
    much they can show). ``test="score"``: Tango's score interval for paired proportions
    (accuracy); ``test="bootstrap"``: the paired-bootstrap percentile bound.

    ``metric`` is what "worse" means: accuracy, or for imbalanced streams balanced accuracy, macro
    F1, AUROC or precision at 90% recall (``perennial.evaluate.metrics``). With any metric but
    accuracy the fresh test is the paired bootstrap of that metric, and the trusted and forgetting
    checks compare it too.

    Forgetting: on held-out slices of the ``past_windows`` windows before the new data, the
    candidate's pooled accuracy may trail the champion's by at most ``forgetting_tolerance``.

    Trusted reference set: rows nobody outside the team could have labelled (``trusted="warmup"``:
    the held-out rows of the warm-up windows v1 was trained on; or a ``.npz`` file with arrays
    ``x`` and ``y``). The candidate's accuracy there may trail the champion's by at most
    ``trusted_tolerance``, so a candidate trained on poisoned labels is rejected even when it looks
    fine on the (equally poisoned) newest window.

    >>> gate = PromotionGate(tolerance=0.05)
    >>> good = Evaluation(0.9, 0.3, 0.9, 400, np.arange(400) < 360)
    >>> bad = Evaluation(0.6, 0.9, 0.6, 400, np.arange(400) < 240)
    >>> gate.decide(fresh_candidate=bad, fresh_champion=good).promote
    False
    >>> decision = gate.decide(fresh_candidate=good, fresh_champion=good)
    >>> decision.promote, round(decision.numbers["fresh_lower_bound"], 3)
    (True, -0.007)
    """

    def __init__(
        self,
        tolerance: float = 0.0,
        alpha: float = 0.05,
        test: str = "auto",
        forgetting_tolerance: float = 0.05,
        past_windows: int | None = 5,
        bootstrap_samples: int = 2000,
        seed: int = 0,
        trusted: str | None = None,
        trusted_tolerance: float = 0.05,
        metric: str | None = None,
        fresh: str = "next",
    ) -> None:
        if fresh not in FRESH:
            raise ValueError(f"gate.fresh must be one of {', '.join(FRESH)}; got {fresh!r}")
        self.fresh = fresh
        if test in RENAMED:
            raise ValueError(f"gate.test={test!r} was replaced by gate.test={RENAMED[test]}")
        if test not in TESTS:
            raise ValueError(f"gate.test must be one of {', '.join(TESTS)}; got {test!r}")
        if not 0 <= tolerance <= 1:
            raise ValueError(f"gate.tolerance must be in [0, 1] (1: pass any candidate), got {tolerance}")
        if bootstrap_samples < 1:
            raise ValueError(f"gate.bootstrap_samples must be >= 1, got {bootstrap_samples}")
        if not 0 < alpha < 1:
            raise ValueError(f"gate.alpha must be in (0, 1), got {alpha}")
        if past_windows is not None and past_windows < 0:
            raise ValueError(f"gate.past_windows must be >= 0 or null (all), got {past_windows}")
        self.tolerance, self.alpha, self.test = tolerance, alpha, test
        self.forgetting_tolerance, self.past_windows = forgetting_tolerance, past_windows
        self.bootstrap_samples, self.seed = bootstrap_samples, seed
        if trusted is not None and trusted != "warmup" and not str(trusted).endswith(".npz"):
            raise ValueError(
                f"gate.trusted must be null, 'warmup' or a .npz file with x and y, got {trusted!r}"
            )
        if not 0 <= trusted_tolerance < 1:
            raise ValueError(f"gate.trusted_tolerance must be in [0, 1), got {trusted_tolerance}")
        self.trusted, self.trusted_tolerance = trusted, trusted_tolerance
        # None: the task's headline (accuracy, or MSE for a regressor), whichever the rows are.
        self.metric = metric
        if metric is not None and metric not in HEADLINE.values():
            check_metric(
                metric, "gate.metric", task="regression" if metric in ("mae", "r2") else "classification"
            )
        if test == "t" and metric is not None and metric not in ("mse", "mae"):
            raise ValueError(f"gate.test=t compares per-row losses (mse, mae), not gate.metric={metric!r}")

    def for_task(self, task: str) -> PromotionGate:
        """Check that the metric and test fit a stream's task, or raise a ``ValueError`` naming the
        setting that does not. The loop calls it before any training."""
        check_metric(self.metric or HEADLINE[task], "gate.metric", task=task)
        if task == "regression":
            if self.test == "score":
                raise ValueError(
                    "gate.test=score is Tango's interval for paired accuracy; a regressor's gate "
                    "compares per-row errors: use gate.test=t or bootstrap (or auto)"
                )
        elif self.test == "t":
            raise ValueError(
                "gate.test=t compares a regressor's per-row errors; a classifier's gate "
                "uses score or bootstrap (or auto)"
            )
        return self

    def past(self, windows: list[int]) -> list[int]:
        """The earlier windows whose held-out slices measure forgetting."""
        return windows if self.past_windows is None else windows[max(0, len(windows) - self.past_windows) :]

    def decide(
        self,
        fresh_candidate: Evaluation,
        fresh_champion: Evaluation,
        past_candidate: Evaluation | None = None,
        past_champion: Evaluation | None = None,
        trusted_candidate: Evaluation | None = None,
        trusted_champion: Evaluation | None = None,
    ) -> GateDecision:
        task = fresh_candidate.task
        self.for_task(task)
        regression = task == "regression"
        # A regressor's R² orders models on the same rows exactly as its MSE does.
        name = self.metric if self.metric in ("mse", "mae") or not regression else "mse"
        name = name or HEADLINE[task]
        if regression:
            test = "t" if self.test == "auto" else self.test
            bounds = self.regression_bounds(test, name, fresh_candidate, fresh_champion)
        else:
            test = "score" if self.test == "auto" and name == "accuracy" else self.test
            test = test if name == "accuracy" else "bootstrap"
            bounds = self.fresh_bounds(test, fresh_candidate, fresh_champion)
        lower, p, detectable = bounds
        diff = difference(name, fresh_candidate, fresh_champion)
        # Differences are absolute for a classifier's metrics, relative for a regressor's losses.
        shown = "{:+.1%}" if regression else "{:+.3f}"
        numbers = {
            **levels("fresh", name, fresh_candidate, fresh_champion),
            "fresh_diff": diff,
            "fresh_lower_bound": lower,
            "p_value": p,
            "min_detectable_drop": detectable,
            "metric": name,
            "test": test,
            "n_fresh": fresh_candidate.n,
        }
        # NaN (no fresh rows) is no evidence, so it holds the candidate back too; but no metric in
        # [0, 1] can drop by more than 1, so tolerance 1 passes everyone without looking.
        if self.tolerance < 1 and not lower > -self.tolerance:
            reason = (
                f"not shown within {self.tolerance:g} of the champion on fresh data: {name} diff "
                f"{shown.format(diff)}, {1 - self.alpha:.0%} lower bound {shown.format(lower)} (p={p:.3g}; "
                f"{fresh_candidate.n} rows can tell apart drops of {shown.format(detectable)[1:]})"
            )
            return GateDecision(False, reason, numbers)
        # Then the trusted reference set, then forgetting: the drop in the metric may not pass the
        # tolerance. Point checks, not tests: they pool many more rows than the fresh set and their
        # tolerances are wider, so the estimate's noise is small against them.
        trusted, past = self.trusted_tolerance, self.forgetting_tolerance
        held_out = (
            ("trusted", trusted_candidate, trusted_champion, trusted, "worse on the trusted set"),
            ("past", past_candidate, past_champion, past, "forgets earlier windows"),
        )
        for prefix, candidate, champion, tolerance, failure in held_out:
            if candidate is None or champion is None or candidate.n == 0:
                continue
            drop = -difference(name, candidate, champion)
            numbers |= {
                **levels(prefix, name, candidate, champion),
                f"{prefix}_drop": drop,
                f"n_{prefix}": candidate.n,
            }
            if drop > tolerance:
                worse = f"{drop:.1%} above" if regression else f"{drop:.3f} below"
                return GateDecision(False, f"{failure}: {name} {worse} the champion's", numbers)
        reason = f"fresh {name} diff {shown.format(diff)}, lower bound {shown.format(lower)} (p={p:.3g})"
        return GateDecision(True, reason, numbers)

    def regression_bounds(
        self, test: str, name: str, candidate: RegressionEvaluation, champion: RegressionEvaluation
    ) -> tuple[float, float, float]:
        """As :meth:`fresh_bounds`, on the relative difference of the mean per-row loss ``name``."""
        if candidate.n < 2:
            return float("nan"), 1.0, float("nan")
        ours, theirs = candidate.losses(name), champion.losses(name)
        detectable = ratio_min_detectable_drop(ours, theirs, self.alpha, POWER)
        if test == "t":
            return (
                float(ratio_lower_bound(ours, theirs, self.alpha)),
                float(ratio_noninferiority_pvalue(ours, theirs, self.tolerance)),
                float(detectable),
            )
        differences = ratio_bootstrap_differences(ours, theirs, self.bootstrap_samples, self.seed)
        return (
            bootstrap_lower_bound(differences, self.alpha),
            bootstrap_noninferiority_pvalue(differences, self.tolerance),
            float(detectable),
        )

    def fresh_bounds(
        self, test: str, candidate: Evaluation, champion: Evaluation
    ) -> tuple[float, float, float]:
        """The lower bound of the fresh difference, the non-inferiority p-value (below ``alpha``
        exactly when the bound is above ``-tolerance``) and the minimum detectable drop."""
        if candidate.n == 0:
            return float("nan"), 1.0, float("nan")
        if test == "score":
            gained, lost, n = discordant_counts(candidate.correct, champion.correct)
            return (
                float(score_lower_bound(gained, lost, n, self.alpha)),
                float(noninferiority_pvalue(gained, lost, n, self.tolerance)),
                min_detectable_drop(n, (gained + lost) / n, self.alpha, POWER),
            )
        name = self.metric or HEADLINE["classification"]
        if name == "accuracy":
            differences = accuracy_bootstrap_differences(
                candidate.correct, champion.correct, self.bootstrap_samples, self.seed
            )
        else:
            differences = metric_bootstrap_differences(
                name, candidate, champion, self.bootstrap_samples, self.seed
            )
        finite = differences[np.isfinite(differences)]
        spread = float(np.std(finite)) if len(finite) > 1 else float("nan")
        return (
            bootstrap_lower_bound(differences, self.alpha),
            bootstrap_noninferiority_pvalue(differences, self.tolerance),
            normal_min_detectable_drop(spread, self.alpha, POWER),
        )


def difference(name: str, candidate: Evaluation | RegressionEvaluation, champion) -> float:
    """How much better the candidate is on ``name``: ``Δ = metric(candidate) - metric(champion)``
    for a classifier, ``Δ = 1 - loss(candidate) / loss(champion)`` for a regressor's loss (relative,
    so that one tolerance means the same on any target's scale; NaN when the champion's loss is 0)."""
    ours, theirs = candidate.value(name), champion.value(name)
    if candidate.task == "regression":
        return 1 - ours / theirs if theirs > 0 else float("nan")
    return ours - theirs


def levels(prefix: str, name: str, candidate: Evaluation | RegressionEvaluation, champion) -> dict:
    """Both models' scores for a decision's numbers: accuracy always for a classifier (and ``name``
    beside it), the loss for a regressor."""
    names = [name] if candidate.task == "regression" or name == "accuracy" else ["accuracy", name]
    return {
        f"{prefix}_{who}_{n}": model.value(n)
        for n in names
        for who, model in (("candidate", candidate), ("champion", champion))
    }


def metric_bootstrap_differences(
    name: str, candidate: Evaluation, champion: Evaluation, samples: int, seed: int
) -> np.ndarray:
    """Paired-bootstrap differences of metric ``name`` (candidate minus champion); NaN where a
    resample holds one class only. Without probabilities there is nothing to resample: all NaN."""
    if candidate.probs is None or champion.probs is None:
        return np.full(samples, np.nan)
    target, ours, theirs = candidate.target, candidate.probs, champion.probs

    def difference(rows: np.ndarray) -> float:
        return metric(name, target[rows], ours[rows]) - metric(name, target[rows], theirs[rows])

    return paired_bootstrap_differences(difference, candidate.n, samples, seed)


def pooled(evaluations: list[Evaluation]) -> Evaluation | None:
    """One evaluation over the union of several sets (accuracy weighted by size)."""
    evaluations = [e for e in evaluations if e.n > 0]
    if not evaluations:
        return None
    if all(e.task == "regression" for e in evaluations):
        return RegressionEvaluation.of(
            np.concatenate([e.target for e in evaluations]),
            np.concatenate([e.predictions for e in evaluations]),
        )
    if all(e.probs is not None for e in evaluations):
        return Evaluation.of(
            np.concatenate([e.target for e in evaluations]), np.concatenate([e.probs for e in evaluations])
        )
    n = sum(e.n for e in evaluations)
    correct = np.concatenate([e.correct for e in evaluations])
    loss = sum(e.loss * e.n for e in evaluations) / n
    f1 = sum(e.f1 * e.n for e in evaluations) / n
    return Evaluation(float(correct.mean()), float(loss), float(f1), n, correct)
