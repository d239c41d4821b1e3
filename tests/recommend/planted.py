"""A small ratings problem with planted structure: items in taste clusters, each user loyal to one."""

from __future__ import annotations

import numpy as np
import pandas as pd

N_CLUSTERS, PER_CLUSTER = 8, 25
N_ITEMS = N_CLUSTERS * PER_CLUSTER


def planted_ratings(n_users: int, seed: int, first_user: int = 0, per_user: int = 24) -> pd.DataFrame:
    """Each user rates ``per_user`` items: 80% from their own cluster (4-5 stars), the rest from other
    clusters (1-2 stars), in a random order; timestamps follow that order."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        cluster = rng.integers(N_CLUSTERS)
        own = cluster * PER_CLUSTER + rng.choice(PER_CLUSTER, int(per_user * 0.8), replace=False)
        others = np.setdiff1d(
            np.arange(N_ITEMS), np.arange(cluster * PER_CLUSTER, (cluster + 1) * PER_CLUSTER)
        )
        other = rng.choice(others, per_user - len(own), replace=False)
        items = np.concatenate([own, other])
        stars = np.concatenate([rng.choice([4.0, 5.0], len(own)), rng.choice([1.0, 2.0], len(other))])
        order = rng.permutation(len(items))
        for t, k in enumerate(order):
            rows.append((first_user + u, int(items[k]), float(stars[k]), t))
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s")
    return frame
