"""Per-feature drift tests: Kolmogorov–Smirnov for numeric features, chi-square for categorical
ones, with a multiple-testing correction across the features."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from perennial.drift.base import (
    DriftResult,
    TwoSampleDetector,
    check_alpha,
    not_enough_data,
    paired_rows,
    row_shortfall,
)
from perennial.stats.corrections import CORRECTION_NAMES, adjust_pvalues

MAX_VALUES_NAMED = 10


class UnivariateDrift(TwoSampleDetector):
    """Tests each feature on its own and corrects for testing many: drift when any corrected
    p-value is below ``alpha``.

    - Numeric features get the two-sample Kolmogorov–Smirnov test (``scipy.stats.ks_2samp``),
      categorical ones a chi-square test of homogeneity on the 2 x k table of reference and
      current counts (``scipy.stats.chi2_contingency``, which applies Yates' correction when k = 2).
      A value never seen in the reference gets its own column, so it counts toward drift.
    - ``categorical``: ``"auto"`` treats a feature as categorical when every reference value is an
      integer and there are at most ``max_categories`` of them (one-hot columns are categorical);
      or a list of column indices; or ``"none"``.
    - ``correction`` across the features tested: ``"holm"``, ``"bonferroni"`` or ``"fdr_bh"``.
    - ``min_effect``: a feature counts as drifted only if its shift is also this large: the KS
      statistic (the largest gap between the two CDFs) or, for a categorical feature, the total
      variation distance. With thousands of rows, or rows that are not independent (daily data),
      tiny shifts are significant; a floor such as 0.1 keeps them from triggering updates.
    - 1-D arrays are one feature; images and other (n, ...) arrays are flattened per row.
    - NaN and inf values are dropped per feature. A feature left with fewer than ``min_samples``
      values in either sample is skipped; a feature constant at one value in both gets p = 1.

    >>> rng = np.random.default_rng(0)
    >>> reference = rng.normal(size=(500, 4))
    >>> current = rng.normal(size=(500, 4))
    >>> current[:, 2] += 0.5
    >>> result = UnivariateDrift().test(reference, current)
    >>> result.drift, result.details["drifted_features"]
    (True, [2])
    >>> result.reason
    '1 of 4 features drifted (min Holm-adjusted p ..., feature 2)'
    """

    name = "univariate"

    def __init__(
        self,
        alpha: float = 0.05,
        correction: str = "holm",
        categorical: str | Sequence[int] = "auto",
        max_categories: int = 20,
        min_samples: int = 20,
        min_effect: float = 0.0,
    ) -> None:
        self.alpha = check_alpha(alpha)
        if not 0 <= min_effect < 1:
            raise ValueError(f"min_effect must be in [0, 1), got {min_effect}")
        self.min_effect = float(min_effect)
        if correction not in CORRECTION_NAMES:
            raise ValueError(f"correction must be one of {list(CORRECTION_NAMES)}, got {correction!r}")
        if isinstance(categorical, str):
            if categorical not in ("auto", "none"):
                raise ValueError(
                    f"categorical must be 'auto', 'none' or a list of column indices, got {categorical!r}"
                )
        elif not all(_is_column_index(c) for c in categorical):
            raise ValueError(
                f"categorical must be 'auto', 'none' or a list of column indices >= 0, got {categorical!r}"
            )
        if max_categories < 2:
            raise ValueError(f"max_categories must be >= 2, got {max_categories}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        self.correction = correction
        self.categorical = categorical if isinstance(categorical, str) else [int(c) for c in categorical]
        self.max_categories = int(max_categories)
        self.min_samples = int(min_samples)

    def test(self, reference: np.ndarray, current: np.ndarray) -> DriftResult:
        ref, cur = paired_rows(reference, current)
        n_features = ref.shape[1]
        if isinstance(self.categorical, list) and any(c >= n_features for c in self.categorical):
            raise ValueError(
                f"categorical columns {self.categorical} are out of range for {n_features} features"
            )
        shortfall = row_shortfall(len(ref), len(cur), self.min_samples)
        if shortfall:
            return not_enough_data(self.name, shortfall)

        features = [self._test_feature(j, ref[:, j], cur[:, j]) for j in range(n_features)]
        tested = [f for f in features if not math.isnan(f["p_value"])]
        skipped = len(features) - len(tested)
        if not tested:
            return not_enough_data(
                self.name,
                f"none of the {n_features} features has {self.min_samples} finite values in both samples",
                {"features": features},
            )
        adjusted = adjust_pvalues([f["p_value"] for f in tested], self.correction)
        for feature, p in zip(tested, adjusted, strict=True):
            feature["p_adjusted"] = float(p)
        drifted = [
            f["feature"] for f in tested if f["p_adjusted"] < self.alpha and f["effect"] >= self.min_effect
        ]
        top = min(tested, key=lambda f: (f["p_adjusted"], f["p_value"]))
        name = CORRECTION_NAMES[self.correction]
        summary = f"min {name}-adjusted p {top['p_adjusted']:.2g}, feature {top['feature']}"
        reason = (
            f"{len(drifted)} of {len(tested)} features drifted ({summary})"
            if drifted
            else f"no drift in {len(tested)} features ({summary})"
        )
        if skipped:
            reason += f"; {skipped} skipped (not enough data)"
        return DriftResult(
            detector=self.name,
            drift=bool(drifted),
            statistic=top["statistic"],
            p_value=top["p_adjusted"],
            reason=reason,
            details={
                "correction": self.correction,
                "alpha": self.alpha,
                "drifted_features": drifted,
                "n_tested": len(tested),
                "n_skipped": skipped,
                "features": features,
            },
        )

    def _is_categorical(self, column: int, reference: np.ndarray) -> bool:
        if self.categorical == "none":
            return False
        if self.categorical == "auto":
            return bool(np.all(reference == np.round(reference))) and (
                len(np.unique(reference)) <= self.max_categories
            )
        return column in self.categorical

    def _test_feature(self, column: int, reference: np.ndarray, current: np.ndarray) -> dict:
        notes = []
        ref_finite, cur_finite = np.isfinite(reference), np.isfinite(current)
        if not (ref_finite.all() and cur_finite.all()):
            notes.append(
                f"dropped {int((~ref_finite).sum())} reference and {int((~cur_finite).sum())} current "
                "non-finite values"
            )
        reference, current = reference[ref_finite], current[cur_finite]
        categorical = self._is_categorical(column, reference)
        record = {
            "feature": column,
            "test": "chi2" if categorical else "ks",
            "statistic": math.nan,
            "p_value": math.nan,
            "p_adjusted": math.nan,
            "effect": math.nan,
            "n_ref": len(reference),
            "n_cur": len(current),
        }
        shortfall = row_shortfall(len(reference), len(current), self.min_samples)
        if shortfall:
            notes.append(f"not enough data: {shortfall}")
        elif np.all(reference == reference[0]) and np.all(current == reference[0]):
            # Nothing to test (and chi-square has no degrees of freedom): the samples agree exactly.
            record.update(statistic=0.0, p_value=1.0, effect=0.0)
            notes.append("constant")
        elif categorical:
            categories, table = category_table(reference, current)
            chi2 = stats.chi2_contingency(table)
            shares = table / table.sum(axis=1, keepdims=True)
            record.update(
                statistic=float(chi2.statistic),
                p_value=float(chi2.pvalue),
                effect=float(0.5 * np.abs(shares[0] - shares[1]).sum()),  # total variation distance
            )
            unseen = categories[table[0] == 0]
            if len(unseen):
                notes.append(f"unseen values: {_named_values(unseen)}")
        else:
            ks = stats.ks_2samp(reference, current)
            record.update(statistic=float(ks.statistic), p_value=float(ks.pvalue), effect=float(ks.statistic))
        record["note"] = "; ".join(notes)
        return record


def category_table(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values seen in either sample, and the 2 x k table of their reference and current counts."""
    categories, codes = np.unique(np.concatenate([reference, current]), return_inverse=True)
    table = np.stack(
        [
            np.bincount(codes[: len(reference)], minlength=len(categories)),
            np.bincount(codes[len(reference) :], minlength=len(categories)),
        ]
    )
    return categories, table


def _is_column_index(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0


def _named_values(values: np.ndarray) -> str:
    """A short list for a note: integers without ".0", at most ``MAX_VALUES_NAMED`` of them."""
    shown = [int(v) if float(v).is_integer() else float(v) for v in values[:MAX_VALUES_NAMED]]
    more = len(values) - len(shown)
    return f"{shown} and {more} more" if more else str(shown)
