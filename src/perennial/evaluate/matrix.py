"""The accuracy matrix (versions x windows) and the continual-learning scores read from it.

Rows are versions in the order they held the champion role; ``matrix[i, j]`` is the accuracy of
version i on the held-out slice of window j; ``trained[i]`` is the last window version i learned from.
"""

from __future__ import annotations

import numpy as np


def forgetting(matrix: np.ndarray, trained: list[int]) -> float:
    """Average drop of the final row on each earlier learned window from the best any row reached there.

    Only windows learned before the final row's own newest window count, and for each, only earlier
    rows that had already learned it (a model cannot forget what it never saw).

    >>> forgetting(np.array([[0.9, 0.5], [0.7, 0.8]]), trained=[0, 1])
    0.2
    """
    last = len(matrix) - 1
    drops = []
    for j in range(trained[last]):
        seen = [i for i in range(last) if trained[i] >= j and not np.isnan(matrix[i, j])]
        if seen and not np.isnan(matrix[last, j]):
            # A gain is not negative forgetting; backward_transfer reports gains.
            drops.append(max(0.0, max(matrix[i, j] for i in seen) - matrix[last, j]))
    return round(float(np.mean(drops)), 10) if drops else 0.0


def backward_transfer(matrix: np.ndarray, trained: list[int]) -> float:
    """BWT (Lopez-Paz and Ranzato 2017): final accuracy on each earlier window minus the accuracy
    right after that window was learned. Negative means forgetting.

    >>> round(backward_transfer(np.array([[0.9, 0.5], [0.7, 0.8]]), trained=[0, 1]), 3)
    -0.2
    """
    last = len(matrix) - 1
    gaps = []
    for j in range(trained[last]):
        first = next((i for i in range(len(matrix)) if trained[i] >= j), None)
        if first is not None and first != last and not np.isnan(matrix[first, j] - matrix[last, j]):
            gaps.append(matrix[last, j] - matrix[first, j])
    return float(np.mean(gaps)) if gaps else 0.0
