"""The offline promotion gate: a candidate replaces the champion only if it is not worse on fresh data
and does not forget earlier windows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perennial.evaluate.metrics import Evaluation, check_metric, metric
from perennial.evaluate.stats import mcnemar_worse_pvalue, paired_bootstrap_worse_pvalue

TESTS = ("mcnemar", "bootstrap")


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

    Fresh data: the candidate is rejected when it is worse than the champion by more than
    ``tolerance`` *and* that drop is significant at ``alpha`` under a paired test (exact McNemar,
    or a paired bootstrap around the tolerance). Small, noisy differences do not block an update.

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

    >>> gate = PromotionGate(tolerance=0.02)
    >>> good = Evaluation(0.9, 0.3, 0.9, 100, np.r_[np.ones(90), np.zeros(10)].astype(bool))
    >>> bad = Evaluation(0.6, 0.9, 0.6, 100, np.r_[np.ones(60), np.zeros(40)].astype(bool))
    >>> gate.decide(fresh_candidate=bad, fresh_champion=good).promote
    False
    """

    def __init__(
        self,
        tolerance: float = 0.02,
        alpha: float = 0.05,
        test: str = "mcnemar",
        forgetting_tolerance: float = 0.05,
        past_windows: int | None = 5,
        bootstrap_samples: int = 2000,
        seed: int = 0,
        trusted: str | None = None,
        trusted_tolerance: float = 0.05,
        metric: str = "accuracy",
    ) -> None:
        if test not in TESTS:
            raise ValueError(f"gate.test must be one of {', '.join(TESTS)}; got {test!r}")
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
        self.metric = check_metric(metric, "gate.metric")

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
        name = self.metric
        diff = fresh_candidate.value(name) - fresh_champion.value(name)
        if name != "accuracy":
            p = bootstrap_metric_worse_pvalue(
                name, fresh_candidate, fresh_champion, self.tolerance, self.bootstrap_samples, self.seed
            )
            worse = p < self.alpha
        elif self.test == "mcnemar":
            p = mcnemar_worse_pvalue(fresh_candidate.correct, fresh_champion.correct)
            worse = diff < -self.tolerance and p < self.alpha
        else:
            p = paired_bootstrap_worse_pvalue(
                fresh_candidate.correct,
                fresh_champion.correct,
                self.tolerance,
                self.bootstrap_samples,
                self.seed,
            )
            worse = p < self.alpha
        numbers = {
            "fresh_candidate_accuracy": fresh_candidate.accuracy,
            "fresh_champion_accuracy": fresh_champion.accuracy,
            "fresh_diff": diff,
            "p_value": p,
            "metric": name,
            "test": self.test if name == "accuracy" else "bootstrap",
            "n_fresh": fresh_candidate.n,
        }
        if name != "accuracy":
            numbers |= {
                f"fresh_candidate_{name}": fresh_candidate.value(name),
                f"fresh_champion_{name}": fresh_champion.value(name),
            }
        if worse:
            return GateDecision(False, f"{name} worse on fresh data by {-diff:.3f} (p={p:.3g})", numbers)
        # Then the trusted reference set, then forgetting: the drop in the metric may not pass the tolerance.
        trusted, past = self.trusted_tolerance, self.forgetting_tolerance
        held_out = (
            ("trusted", trusted_candidate, trusted_champion, trusted, "worse on the trusted set"),
            ("past", past_candidate, past_champion, past, "forgets earlier windows"),
        )
        for prefix, candidate, champion, tolerance, failure in held_out:
            if candidate is None or champion is None or candidate.n == 0:
                continue
            drop = champion.value(name) - candidate.value(name)
            numbers |= {
                f"{prefix}_candidate_accuracy": candidate.accuracy,
                f"{prefix}_champion_accuracy": champion.accuracy,
                f"{prefix}_drop": drop,
                f"n_{prefix}": candidate.n,
            }
            if drop > tolerance:
                return GateDecision(False, f"{failure}: {name} {drop:.3f} below the champion", numbers)
        return GateDecision(True, f"fresh diff {diff:+.3f} (p_worse={p:.3g})", numbers)


def bootstrap_metric_worse_pvalue(
    name: str, candidate: Evaluation, champion: Evaluation, margin: float, n: int, seed: int
) -> float:
    """Bootstrap p-value for "the candidate's ``name`` is below the champion's by more than
    ``margin``": rows are resampled in pairs, so the test keeps the correlation between the models."""
    if candidate.n == 0 or candidate.probs is None or champion.probs is None:
        return 1.0
    rng = np.random.default_rng(seed)
    target, ours, theirs = candidate.target, candidate.probs, champion.probs
    at_or_above = 0
    for rows in rng.integers(0, candidate.n, size=(n, candidate.n)):
        diff = metric(name, target[rows], ours[rows]) - metric(name, target[rows], theirs[rows])
        at_or_above += not diff < -margin  # NaN (a resample of one class) counts as no evidence
    return float((at_or_above + 1) / (n + 1))


def pooled(evaluations: list[Evaluation]) -> Evaluation | None:
    """One evaluation over the union of several sets (accuracy weighted by size)."""
    evaluations = [e for e in evaluations if e.n > 0]
    if not evaluations:
        return None
    if all(e.probs is not None for e in evaluations):
        return Evaluation.of(
            np.concatenate([e.target for e in evaluations]), np.concatenate([e.probs for e in evaluations])
        )
    n = sum(e.n for e in evaluations)
    correct = np.concatenate([e.correct for e in evaluations])
    loss = sum(e.loss * e.n for e in evaluations) / n
    f1 = sum(e.f1 * e.n for e in evaluations) / n
    return Evaluation(float(correct.mean()), float(loss), float(f1), n, correct)
