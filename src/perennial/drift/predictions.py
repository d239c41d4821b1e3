"""Drift in what the model predicts: has the mix of predicted classes changed? Needs no labels."""

from __future__ import annotations

import numpy as np
from scipy import stats

from perennial.drift.base import DriftResult, TwoSampleDetector, check_alpha, not_enough_data, row_shortfall
from perennial.drift.univariate import category_table


class PredictionShift(TwoSampleDetector):
    """Chi-square test of homogeneity on the predicted classes of the reference and current rows.

    Inputs are class probabilities (n x C; the predicted class is the argmax) or 1-D integer
    labels. Classes predicted in neither sample are left out of the table. Rows with NaN or inf
    are dropped; fewer than ``min_samples`` rows left in either sample gives ``drift=None``.

    >>> rng = np.random.default_rng(0)
    >>> reference = rng.choice(3, size=300, p=[0.5, 0.3, 0.2])
    >>> detector = PredictionShift()
    >>> detector.test(reference, rng.choice(3, size=300, p=[0.5, 0.3, 0.2])).drift
    False
    >>> result = detector.test(reference, rng.choice(3, size=300, p=[0.2, 0.3, 0.5]))
    >>> result.drift, result.reason
    (True, 'predicted-class mix changed: chi-square 48.7, p 2.6e-11, total variation 0.25')
    """

    name = "prediction_shift"

    def __init__(self, alpha: float = 0.05, min_samples: int = 20) -> None:
        self.alpha = check_alpha(alpha)
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        self.min_samples = int(min_samples)

    def test(self, reference: np.ndarray, current: np.ndarray) -> DriftResult:
        ref, cur = np.asarray(reference), np.asarray(current)
        if ref.ndim == cur.ndim == 2 and ref.shape[1] != cur.shape[1]:
            raise ValueError(
                f"reference has shape {ref.shape} but current has shape {cur.shape}: "
                "both need the same number of classes"
            )
        ref_labels, ref_dropped = _predicted_classes(ref)
        cur_labels, cur_dropped = _predicted_classes(cur)
        details: dict = {"dropped_reference_rows": ref_dropped, "dropped_current_rows": cur_dropped}
        shortfall = row_shortfall(len(ref_labels), len(cur_labels), self.min_samples)
        if shortfall:
            return not_enough_data(self.name, shortfall, details)

        classes, table = category_table(ref_labels, cur_labels)
        if len(classes) == 1:
            # Both samples predict one and the same class: no degrees of freedom, and nothing changed.
            statistic, p_value = 0.0, 1.0
        else:
            chi2 = stats.chi2_contingency(table)
            statistic, p_value = float(chi2.statistic), float(chi2.pvalue)
        shares = table / table.sum(axis=1, keepdims=True)
        total_variation = float(0.5 * np.abs(shares[0] - shares[1]).sum())
        drift = p_value < self.alpha
        details.update(
            classes=[int(c) for c in classes],
            reference_counts=[int(c) for c in table[0]],
            current_counts=[int(c) for c in table[1]],
            total_variation=total_variation,
        )
        verdict = "changed" if drift else "unchanged"
        return DriftResult(
            detector=self.name,
            drift=drift,
            statistic=statistic,
            p_value=p_value,
            reason=(
                f"predicted-class mix {verdict}: chi-square {statistic:.3g}, p {p_value:.2g}, "
                f"total variation {total_variation:.2f}"
            ),
            details=details,
        )


def _predicted_classes(predictions: np.ndarray) -> tuple[np.ndarray, int]:
    """Predicted class per finite row, and how many rows were dropped for NaN or inf."""
    if predictions.ndim not in (1, 2):
        raise ValueError(
            f"predictions must be class probabilities (n x C) or 1-D labels, got shape {predictions.shape}"
        )
    values = predictions.astype(np.float64)
    finite = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=1)
    values = values[finite]
    if values.ndim == 2:
        return values.argmax(axis=1), int((~finite).sum())
    if not np.all(values == np.round(values)):
        raise ValueError(
            f"1-D predictions must be integer class labels, got {values[values != np.round(values)][0]}"
        )
    return values.astype(np.int64), int((~finite).sum())
