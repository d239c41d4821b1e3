"""Paired tests for "is the candidate worse than the champion on the same examples?", and the
corrections for testing many hypotheses at once. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

# Multiple-testing corrections, by the names statsmodels' ``multipletests`` uses.
CORRECTION_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "fdr_bh": "BH"}


def mcnemar_worse_pvalue(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> float:
    """One-sided exact McNemar p-value for "the candidate is less accurate than the champion".

    Only the discordant pairs carry information: ``b`` examples the champion got right and the
    candidate wrong, ``c`` the reverse. Under equal accuracy ``b ~ Binomial(b + c, 1/2)``.

    >>> round(mcnemar_worse_pvalue(np.r_[np.zeros(10), np.ones(90)], np.ones(100)), 4)
    0.001
    """
    cand, champ = np.asarray(candidate_correct, bool), np.asarray(champion_correct, bool)
    b = int(np.sum(champ & ~cand))
    c = int(np.sum(cand & ~champ))
    if b + c == 0:
        return 1.0
    return float(stats.binom.sf(b - 1, b + c, 0.5))


def paired_bootstrap_worse_pvalue(
    candidate_correct: np.ndarray,
    champion_correct: np.ndarray,
    margin: float = 0.0,
    n: int = 2000,
    seed: int = 0,
) -> float:
    """Bootstrap p-value for "candidate accuracy minus champion accuracy is below ``-margin``".

    Examples are resampled in pairs, so the test keeps the correlation between the two models.
    """
    diff = np.asarray(candidate_correct, float) - np.asarray(champion_correct, float)
    if len(diff) == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(1)
    # Share of resamples at or above the no-harm boundary: small when the drop is clearly beyond it.
    return float((np.sum(means >= -margin) + 1) / (n + 1))


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
