"""The served half of the two-speed recommender: a frozen snapshot of the global model (item factors,
a population prior over user vectors) and the exact in-session update of one user's vector.

A user vector ``w`` (the user's embedding with their bias appended) scores item ``i`` as
``offset_i + <x_i, w>``, where ``x_i`` is the item's embedding with a 1 appended and ``offset_i`` the
global plus item bias. A session's ratings ``r_j`` of items ``i_j`` give the posterior mean of ``w``
under the prior ``N(prior_mean, prior_precision^-1)`` and Gaussian rating noise of variance ``noise``:

    w = (P + X'X / noise)^-1 (P mean + X'(r - offset) / noise)

ridge regression centred on the population, exact after every interaction and cheap (a solve of
size ``dim + 1``). With no interactions ``w`` is the prior mean: the global model's guess for anyone.

>>> model = Recommender.synthetic(n_items=6, dim=2, seed=0)
>>> w0 = model.user_vector([], [])
>>> bool(np.allclose(w0, model.prior_mean))
True
>>> w1 = model.user_vector([3], [5.0])
>>> row = int(model.rows([3])[0])
>>> bool(model.scores(w1)[row] > model.scores(w0)[row])  # a liked item rises
True
>>> model.recommend(w1, k=3, exclude=[3])  # best first, never what the session already saw
[...]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from perennial.learn.rankers import MatrixFactorizationRanker
from perennial.registry import Registry

STATE_KEYS = ("items", "factors", "offsets", "prior_mean", "prior_precision", "noise", "rating_range")


@dataclass(frozen=True, eq=False)
class Recommender:
    """One version of the global model as a server uses it; its arrays are read-only, so nothing a
    session does can change it.

    ``items``: catalogue item ids, sorted (row ``r`` is item ``items[r]``); ``factors``: (items,
    dim + 1) item embeddings with a column of ones for the user bias; ``offsets``: global plus item
    bias; ``prior_mean`` / ``prior_precision``: the population prior over user vectors; ``noise``:
    the variance of a rating around the model's prediction; ``rating_range``: accepted ratings.
    """

    version: str
    items: np.ndarray
    factors: np.ndarray
    offsets: np.ndarray
    prior_mean: np.ndarray
    prior_precision: np.ndarray
    noise: float
    rating_range: tuple[float, float]
    _prior_rhs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        items = np.asarray(self.items, np.int64)
        n = len(items)
        if n == 0:
            raise ValueError(f"recommender {self.version}: the catalogue is empty")
        if np.any(np.diff(items) <= 0):
            raise ValueError(f"recommender {self.version}: item ids must be sorted and distinct")
        factors = np.ascontiguousarray(self.factors, np.float32)
        size = factors.shape[1] if factors.ndim == 2 else -1
        if factors.shape != (n, size) or size < 2:
            raise ValueError(
                f"recommender {self.version}: factors must have shape (items={n}, dim + 1), "
                f"got {factors.shape}"
            )
        shapes = {"offsets": (n,), "prior_mean": (size,), "prior_precision": (size, size)}
        arrays = {
            "offsets": np.asarray(self.offsets, np.float32),
            "prior_mean": np.asarray(self.prior_mean, np.float64),
            "prior_precision": np.asarray(self.prior_precision, np.float64),
        }
        for name, array in arrays.items():
            if array.shape != shapes[name]:
                raise ValueError(
                    f"recommender {self.version}: {name} must have shape {shapes[name]}, got {array.shape}"
                )
        for name, array in {"factors": factors, **arrays}.items():
            if not np.isfinite(array).all():
                raise ValueError(f"recommender {self.version}: {name} holds values that are not finite")
        if not (math.isfinite(self.noise) and self.noise > 0):
            raise ValueError(
                f"recommender {self.version}: noise must be a finite variance > 0, got {self.noise}"
            )
        low, high = (float(v) for v in self.rating_range)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"recommender {self.version}: bad rating_range {self.rating_range}")
        frozen = {"items": items, "factors": factors, **arrays}
        for name, array in frozen.items():
            array = array.copy() if np.shares_memory(array, getattr(self, name)) else array
            array.flags.writeable = False
            object.__setattr__(self, name, array)
        rhs = self.prior_precision @ self.prior_mean
        rhs.flags.writeable = False
        object.__setattr__(self, "_prior_rhs", rhs)
        object.__setattr__(self, "noise", float(self.noise))
        object.__setattr__(self, "rating_range", (low, high))

    @property
    def dim(self) -> int:
        """The size of a user vector: the embedding size plus one for the bias."""
        return self.factors.shape[1]

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """Catalogue rows of ``items``; -1 for an item not in the catalogue."""
        ids = np.asarray(items, np.int64).reshape(-1)
        rows = np.searchsorted(self.items, ids)
        rows = np.minimum(rows, len(self.items) - 1)
        return np.where(self.items[rows] == ids, rows, -1)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, int | np.integer) and self.rows([int(item)])[0] >= 0

    # -- the in-session update ---------------------------------------------------------------------

    def user_vector(
        self, items: Sequence[int] | np.ndarray, ratings: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        """The posterior mean user vector after rating ``items`` (catalogue ids) with ``ratings``;
        items not in this catalogue carry no information here and are skipped."""
        rows = self.rows(items)
        targets = np.asarray(ratings, np.float64).reshape(-1)
        if len(rows) != len(targets):
            raise ValueError(f"{len(rows)} item(s) but {len(targets)} rating(s)")
        known = rows >= 0
        if not known.all():
            rows, targets = rows[known], targets[known]
        if len(rows) == 0:
            return self.prior_mean.copy()
        x = self.factors[rows].astype(np.float64)
        precision = self.prior_precision + (x.T @ x) / self.noise
        rhs = self._prior_rhs + x.T @ (targets - self.offsets[rows]) / self.noise
        return np.linalg.solve(precision, rhs)

    def session_vector(
        self, items: Sequence[int] | np.ndarray, ratings: Sequence[float] | np.ndarray
    ) -> np.ndarray | None:
        """:meth:`user_vector` as a live session keeps it (float32 halves what each of up to 100,000
        sessions holds; scores are float32 anyway), or None for no interactions (the prior mean)."""
        if len(items) == 0:
            return None
        return self.user_vector(items, ratings).astype(np.float32)

    @property
    def skip_rating(self) -> float:
        """The rating a shown-and-skipped item stands for: the lowest."""
        return self.rating_range[0]

    # -- ranking ------------------------------------------------------------------------------------

    def scores(self, w: np.ndarray) -> np.ndarray:
        """Every catalogue item's score for the user vector ``w``, in row order."""
        return self.offsets + self.factors @ np.asarray(w, np.float32)

    def recommend(self, w: np.ndarray | None, k: int, exclude: Sequence[int] | np.ndarray = ()) -> list[int]:
        """The ``k`` best catalogue items for ``w`` (ids, best first; None: the prior mean), leaving
        out ``exclude``; equal scores go to the smaller item id."""
        return self.top(self.scores(self.prior_mean if w is None else w), k, exclude)

    def top(self, scores: np.ndarray, k: int, exclude: Sequence[int] | np.ndarray = ()) -> list[int]:
        """The ``k`` items with the highest ``scores`` (one per catalogue row), leaving out ``exclude``."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        scores = np.array(scores, np.float64)
        rows = self.rows(exclude)
        scores[rows[rows >= 0]] = -np.inf
        available = len(scores) - int(np.isneginf(scores).sum())
        k = min(int(k), available)
        if k == 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        # Rows are in item-id order, so the row breaks ties towards the smaller id.
        best = best[np.lexsort((best, -scores[best]))]
        # Ties at the cut: argpartition may have picked any of the equal scores; take the smallest rows.
        cut = scores[best[-1]]
        tied = np.flatnonzero(scores == cut)
        if len(tied) > int((scores[best] == cut).sum()):
            above = best[scores[best] > cut]
            best = np.concatenate([above, tied[: k - len(above)]])
        return self.items[best].tolist()

    # -- checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors, stored as a registry version's weights (safetensors, no pickle)."""
        return {
            "items": torch.from_numpy(self.items.copy()),
            "factors": torch.from_numpy(self.factors.copy()),
            "offsets": torch.from_numpy(self.offsets.copy()),
            "prior_mean": torch.from_numpy(self.prior_mean.copy()),
            "prior_precision": torch.from_numpy(self.prior_precision.copy()),
            "noise": torch.tensor([self.noise], dtype=torch.float64),
            "rating_range": torch.tensor(self.rating_range, dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, version: str, state: dict[str, torch.Tensor]) -> Recommender:
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"version {version} holds no recommender: tensors {missing} are missing "
                f"(it has {sorted(state)})"
            )
        low, high = state["rating_range"].tolist()
        return cls(
            version,
            state["items"].numpy(),
            state["factors"].numpy(),
            state["offsets"].numpy(),
            state["prior_mean"].numpy(),
            state["prior_precision"].numpy(),
            float(state["noise"][0]),
            (low, high),
        )

    @classmethod
    def from_registry(cls, registry: Registry, version: str) -> Recommender:
        """Load ``version`` from ``registry``; refused if it was not stored as a recommender."""
        record = registry.get(version)
        if "recommender" not in record.config:
            raise ValueError(
                f"version {version} is not a recommender: its config has no 'recommender' entry "
                f"(it has {sorted(record.config)})"
            )
        return cls.from_state_dict(version, registry.load_weights(version))

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_ranker(
        cls,
        version: str,
        ranker: MatrixFactorizationRanker,
        ratings: pd.DataFrame,
        min_ratings: int = 10,
        shrinkage: float = 0.05,
        user_counts: pd.Series | None = None,
    ) -> Recommender:
        """The snapshot of a trained matrix factorisation, with the population prior fitted to the
        vectors of its users who have at least ``min_ratings`` ratings (users with fewer are still
        near their random start), and the noise as the mean squared error on ``ratings``.

        ``user_counts`` (ratings per user id, all the model has learned from) defaults to the
        counts in ``ratings``.

        The prior covariance is shrunk towards its mean variance by ``shrinkage`` (so it stays
        invertible with few users), and the precision is its inverse.
        """
        if len(ranker.items) == 0:
            raise ValueError("the ranker has learned no items yet: update it first")
        p = ranker.params
        order = np.argsort(ranker.items, kind="stable")
        items = ranker.items[order]
        emb = p["item_emb"].numpy()[order]
        factors = np.hstack([emb, np.ones((len(items), 1), np.float32)])
        offsets = float(p["global_bias"][0]) + p["item_bias"].numpy()[order]

        users = np.hstack([p["user_emb"].numpy(), p["user_bias"].numpy()[:, None]]).astype(np.float64)
        counts = ratings["user"].value_counts() if user_counts is None else user_counts
        rated = counts.reindex(ranker.users).fillna(0).to_numpy() >= min_ratings
        if rated.sum() < 2:  # too few settled users for a covariance: use every user the model has
            rated = np.ones(len(users), bool)
        if len(users) < 2:
            raise ValueError("the ranker knows fewer than 2 users: no population prior can be fitted")
        mean = users[rated].mean(0)
        cov = np.cov(users[rated], rowvar=False).reshape(len(mean), len(mean))
        scale = max(float(np.trace(cov)) / len(mean), 1e-6)
        cov = (1 - shrinkage) * cov + shrinkage * scale * np.eye(len(mean))

        known = ratings[ratings["item"].isin(ranker.items) & ratings["user"].isin(ranker.users)]
        if known.empty:
            raise ValueError(
                "none of the ratings are of users and items the ranker knows: cannot fit the noise"
            )
        sample = known.sample(min(len(known), 20_000), random_state=0)
        predicted = np.concatenate(
            [ranker.score(int(u), g["item"].to_numpy()) for u, g in sample.groupby("user", sort=False)]
        )
        actual = np.concatenate([g["rating"].to_numpy() for _, g in sample.groupby("user", sort=False)])
        noise = max(float(np.mean((actual - predicted) ** 2)), 1e-3)
        values = ratings["rating"].to_numpy(np.float64)
        return cls(
            version, items, factors, offsets, mean, np.linalg.inv(cov), noise, (values.min(), values.max())
        )

    @classmethod
    def synthetic(cls, n_items: int, dim: int, seed: int = 0, version: str = "synthetic") -> Recommender:
        """A random model of ``n_items`` items with embeddings of size ``dim``: for timing and examples."""
        rng = np.random.default_rng(seed)
        factors = np.hstack([rng.normal(0, 0.3, (n_items, dim)), np.ones((n_items, 1))])
        precision = np.eye(dim + 1) / 0.1
        offsets = rng.normal(2.0, 0.5, n_items)
        return cls(
            version, np.arange(n_items), factors, offsets, np.zeros(dim + 1), precision, 1.0, (0.5, 5.0)
        )
