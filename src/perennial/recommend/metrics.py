"""Top-k ranking metrics with binary relevance, as the cold-start evaluation and the gate use them.

>>> hit_rate_at_k([5, 3, 9], targets={9, 11}, k=3)
1.0
>>> round(ndcg_at_k([5, 3, 9], targets={9, 11}, k=3), 4)  # one hit at rank 3 of 2 possible
0.3066
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence


def hit_rate_at_k(ranked: Sequence[int], targets: Collection[int], k: int = 10) -> float:
    """1.0 if any of the first ``k`` ranked items is a target, else 0.0."""
    return float(any(item in targets for item in ranked[:k]))


def ndcg_at_k(ranked: Sequence[int], targets: Collection[int], k: int = 10) -> float:
    """Normalised discounted cumulative gain of the first ``k`` ranked items, every target worth 1:
    ``sum(1 / log2(rank + 1))`` over hits, divided by the same sum for ``min(k, len(targets))``
    hits at the top. 0.0 when there are no targets."""
    if not targets:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in targets)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(targets))))
    return dcg / ideal
