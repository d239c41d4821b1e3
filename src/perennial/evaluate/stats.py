"""Paired tests for "is the candidate worse than the champion on the same examples?". Pure functions."""

from __future__ import annotations

import numpy as np
from scipy import stats


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
