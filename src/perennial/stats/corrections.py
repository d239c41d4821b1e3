"""Corrections for testing many hypotheses at once (drift detectors over features, rollouts over
metrics), as statsmodels' ``multipletests`` computes them. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Multiple-testing corrections, by the names statsmodels' ``multipletests`` uses.
CORRECTION_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "fdr_bh": "BH"}


def adjust_pvalues(p_values: Sequence[float], method: str) -> np.ndarray:
    """Corrected p-values for testing all of ``p_values`` at once, as statsmodels'
    ``multipletests`` computes them: ``holm`` and ``bonferroni`` bound the family-wise error
    rate, ``fdr_bh`` (Benjamini–Hochberg) the false discovery rate.

    >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(3).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_pvalues([0.01, 0.04, 0.03], "fdr_bh").round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    if method not in CORRECTION_NAMES:
        raise ValueError(f"correction must be one of {list(CORRECTION_NAMES)}, got {method!r}")
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        # Step-down: the i-th smallest p is multiplied by the number of hypotheses still in play,
        # and an adjusted p may never fall below that of a smaller raw p.
        adjusted = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        # Step-up: scale by m / rank, then take the minimum over all larger ranks.
        adjusted = np.minimum.accumulate((m / np.arange(m, 0, -1)) * ranked[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(adjusted, 1.0)
    return result
