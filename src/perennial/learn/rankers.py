"""Recommenders that rank a user's candidate items and are updated window by window from ratings:
a popularity baseline and a small matrix factorisation, both checkpointed as plain tensors.

Ratings are a DataFrame with integer ``user`` and ``item`` ids and a numeric ``rating`` (the
columns of :func:`perennial.data.movielens.load_ratings`; other columns are ignored).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from pandas.api import types as ptypes


def _checked_ratings(ratings: pd.DataFrame, ranker: str) -> pd.DataFrame:
    missing = [c for c in ("user", "item", "rating") if c not in ratings.columns]
    if missing:
        raise ValueError(
            f"{ranker}.update needs the columns ['user', 'item', 'rating']; {missing} not found "
            f"among {list(ratings.columns)}"
        )
    for column in ("user", "item"):
        if not ptypes.is_integer_dtype(ratings[column]):
            raise ValueError(
                f"{ranker}.update: {column} ids must be integers, got dtype {ratings[column].dtype}"
            )
    values = ratings["rating"].to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise ValueError(f"{ranker}.update: rating {values[bad[0]]} at row {bad[0]} is not a finite number")
    return ratings


class Ranker(ABC):
    """Ranks a user's candidate items: ``update(ratings)`` learns from one window of ratings,
    ``score(user, items)`` rates items for a user, and ``rank`` orders candidates by that score.
    ``state_dict()`` holds tensors and plain numbers only (it saves as safetensors, no pickle)."""

    name = "ranker"

    @abstractmethod
    def update(self, ratings: pd.DataFrame) -> None: ...

    @abstractmethod
    def score(self, user: int, items: Sequence[int]) -> np.ndarray: ...

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def rank(self, user: int, candidates: Sequence[int], k: int | None = None) -> list[int]:
        """The best ``k`` candidates (all of them by default), best first. Equal scores go to the
        smaller item id, so the order in which candidates are given never matters."""
        items = np.asarray(candidates, dtype=np.int64)
        if len(np.unique(items)) != len(items):
            values, counts = np.unique(items, return_counts=True)
            raise ValueError(f"candidates hold item {int(values[counts > 1][0])} more than once")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be a whole number >= 1 or None, got {k!r}")
        scores = np.asarray(self.score(user, items), dtype=np.float64)
        order = np.lexsort((items, -scores))
        return items[order[:k]].tolist()


class PopularityRanker(Ranker):
    """Ranks items by how many ratings of at least ``threshold`` they have received so far,
    the same for every user: the baseline a personalised ranker has to beat.

    >>> ranker = PopularityRanker(threshold=4.0)
    >>> ranker.update(pd.DataFrame({"user": [1, 2, 3, 1], "item": [10, 10, 11, 12],
    ...                             "rating": [5.0, 4.0, 4.5, 2.0]}))
    >>> ranker.rank(user=7, candidates=[12, 11, 10, 99])
    [10, 11, 12, 99]
    """

    name = "popularity"

    def __init__(self, threshold: float = 4.0) -> None:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite rating, got {threshold!r}")
        self.threshold = float(threshold)
        self.counts: dict[int, int] = {}

    def update(self, ratings: pd.DataFrame) -> None:
        ratings = _checked_ratings(ratings, self.name)
        liked = ratings.loc[ratings["rating"].to_numpy(np.float64) >= self.threshold, "item"]
        for item, count in liked.value_counts().items():
            self.counts[int(item)] = self.counts.get(int(item), 0) + int(count)

    def score(self, user: int, items: Sequence[int]) -> np.ndarray:
        return np.array([self.counts.get(int(item), 0) for item in items], dtype=np.float64)

    def state_dict(self) -> dict:
        items = sorted(self.counts)
        return {
            "items": torch.tensor(items, dtype=torch.int64),
            "counts": torch.tensor([self.counts[i] for i in items], dtype=torch.int64),
        }

    def load_state_dict(self, state: dict) -> None:
        self.counts = dict(zip(state["items"].tolist(), state["counts"].tolist(), strict=True))


class MatrixFactorizationRanker(Ranker):
    """Biased matrix factorisation, ``rating ≈ g + b_user + b_item + <p_user, q_item>``, trained with
    Adam on each window's ratings and warm-started from the previous window (a stateful update).

    Users and items seen for the first time get new rows; earlier ones keep theirs, and Adam's
    moments carry over between windows. Each rating is paired with ``negatives`` items sampled
    from all known items and fitted to ``negative_rating``, so the model also learns which items a
    user is likely to rate at all, not only how much they like the ones they rated. Unknown users
    or items score with zero vectors and biases. Randomness derives from ``seed`` and the number of
    updates, so a ranker restored from ``state_dict`` continues exactly as the original would.

    >>> ratings = pd.DataFrame({"user": [1, 1, 2, 2, 3], "item": [10, 11, 10, 12, 11],
    ...                         "rating": [5.0, 1.0, 4.0, 2.0, 1.0]})
    >>> ranker = MatrixFactorizationRanker(dim=4, epochs=50, negatives=0, seed=0)
    >>> ranker.update(ratings)
    >>> ranker.rank(user=1, candidates=[11, 10])
    [10, 11]
    """

    name = "matrix_factorization"
    PARAMS = ("user_emb", "item_emb", "user_bias", "item_bias", "global_bias")

    def __init__(
        self,
        dim: int = 32,
        epochs: int = 5,
        lr: float = 0.01,
        batch_size: int = 1024,
        l2: float = 0.05,
        negatives: int = 1,
        negative_rating: float = 0.0,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        for name, value, low in (("dim", dim, 1), ("epochs", epochs, 1), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0:
            raise ValueError(f"negatives must be a whole number >= 0, got {negatives!r}")
        for name, value in (("lr", lr), ("init_std", init_std)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.dim, self.epochs, self.batch_size, self.negatives = dim, epochs, batch_size, negatives
        self.lr, self.l2, self.init_std = float(lr), float(l2), float(init_std)
        self.negative_rating, self.seed = float(negative_rating), int(seed)
        self.users = np.empty(0, np.int64)  # row -> user id
        self.items = np.empty(0, np.int64)  # row -> item id
        self._user_row: dict[int, int] = {}
        self._item_row: dict[int, int] = {}
        self.params = {
            "user_emb": torch.zeros(0, dim),
            "item_emb": torch.zeros(0, dim),
            "user_bias": torch.zeros(0),
            "item_bias": torch.zeros(0),
            "global_bias": torch.zeros(1),
        }
        self.adam: dict[str, dict[str, torch.Tensor]] = {}  # per parameter: step, exp_avg, exp_avg_sq
        self.updates = 0

    # -- learning ----------------------------------------------------------------------------------

    def update(self, ratings: pd.DataFrame) -> None:
        ratings = _checked_ratings(ratings, self.name)
        if ratings.empty:
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.updates)
        if self.updates == 0 and len(self.items) == 0:
            self.params["global_bias"] = torch.tensor([float(ratings["rating"].mean())])
        self._grow(ratings["user"].to_numpy(np.int64), ratings["item"].to_numpy(np.int64), generator)
        users = torch.from_numpy(np.array([self._user_row[int(u)] for u in ratings["user"]], np.int64))
        items = torch.from_numpy(np.array([self._item_row[int(i)] for i in ratings["item"]], np.int64))
        targets = torch.from_numpy(ratings["rating"].to_numpy(np.float32))

        params = {name: tensor.clone().requires_grad_(True) for name, tensor in self.params.items()}
        optimizer = torch.optim.Adam(list(params.values()), lr=self.lr)
        for name, tensor in params.items():
            if name in self.adam:
                optimizer.state[tensor] = {key: value.clone() for key, value in self.adam[name].items()}
        n_items = len(self.items)
        for _ in range(self.epochs):
            order = torch.randperm(len(targets), generator=generator)
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                u, i, y = users[batch], items[batch], targets[batch]
                if self.negatives:
                    u = torch.cat([u, u.repeat(self.negatives)])
                    sampled = torch.randint(n_items, (len(batch) * self.negatives,), generator=generator)
                    i = torch.cat([i, sampled])
                    y = torch.cat([y, torch.full((len(sampled),), self.negative_rating)])
                p, q = params["user_emb"][u], params["item_emb"][i]
                prediction = (
                    params["global_bias"] + params["user_bias"][u] + params["item_bias"][i] + (p * q).sum(1)
                )
                penalty = self.l2 * ((p**2).sum(1) + (q**2).sum(1)).mean()
                loss = torch.nn.functional.mse_loss(prediction, y) + penalty
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        self.params = {name: tensor.detach() for name, tensor in params.items()}
        self.adam = {
            name: {key: value.detach().clone() for key, value in optimizer.state[tensor].items()}
            for name, tensor in params.items()
            if tensor in optimizer.state
        }
        self.updates += 1

    def _grow(self, users: np.ndarray, items: np.ndarray, generator: torch.Generator) -> None:
        """Add rows for users and items seen for the first time, in order of first appearance."""
        new_users = [u for u in pd.unique(users).tolist() if u not in self._user_row]
        new_items = [i for i in pd.unique(items).tolist() if i not in self._item_row]
        for ids, rows, table in ((new_users, self._user_row, "user"), (new_items, self._item_row, "item")):
            for key in ids:
                rows[key] = len(rows)
            if not ids:
                continue
            emb = torch.randn(len(ids), self.dim, generator=generator) * self.init_std
            grown = {f"{table}_emb": emb, f"{table}_bias": torch.zeros(len(ids))}
            for name, extra in grown.items():
                self.params[name] = torch.cat([self.params[name], extra])
                if name in self.adam:  # new rows start with no momentum
                    for key in ("exp_avg", "exp_avg_sq"):
                        self.adam[name][key] = torch.cat([self.adam[name][key], torch.zeros_like(extra)])
        self.users = np.concatenate([self.users, np.asarray(new_users, np.int64)])
        self.items = np.concatenate([self.items, np.asarray(new_items, np.int64)])

    # -- serving ------------------------------------------------------------------------------------

    def score(self, user: int, items: Sequence[int]) -> np.ndarray:
        """Predicted ratings of ``items`` for ``user``."""
        row = self._user_row.get(int(user))
        p = self.params["user_emb"][row] if row is not None else torch.zeros(self.dim)
        b_user = float(self.params["user_bias"][row]) if row is not None else 0.0
        rows = np.array([self._item_row.get(int(i), -1) for i in items], np.int64)
        known = torch.from_numpy(rows >= 0)
        safe = torch.from_numpy(np.maximum(rows, 0))
        q = self.params["item_emb"][safe] if len(self.items) else torch.zeros(len(rows), self.dim)
        b_item = self.params["item_bias"][safe] if len(self.items) else torch.zeros(len(rows))
        scores = float(self.params["global_bias"]) + b_user + torch.where(known, b_item + q @ p, 0.0)
        return scores.numpy().astype(np.float64)

    # -- checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state: dict = {
            "users": torch.from_numpy(self.users.copy()),
            "items": torch.from_numpy(self.items.copy()),
            "updates": self.updates,
            **{name: tensor.clone() for name, tensor in self.params.items()},
        }
        for name, moments in self.adam.items():
            for key, value in moments.items():
                state[f"adam.{name}.{key}"] = value.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        size = state["user_emb"].shape[1]
        if size != self.dim:  # checked first, so a refused state leaves the ranker as it was
            raise ValueError(f"the state holds embeddings of size {size}; this ranker has dim={self.dim}")
        self.users = state["users"].numpy().astype(np.int64)
        self.items = state["items"].numpy().astype(np.int64)
        self._user_row = {int(u): row for row, u in enumerate(self.users)}
        self._item_row = {int(i): row for row, i in enumerate(self.items)}
        self.updates = int(state["updates"])
        self.params = {name: state[name].clone() for name in self.PARAMS}
        self.adam = {}
        for key, value in state.items():
            if key.startswith("adam."):
                _, name, moment = key.split(".")
                self.adam.setdefault(name, {})[moment] = value.clone()
