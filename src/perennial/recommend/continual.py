"""The global half of the two-speed recommender: item and user representations updated window by
window (stateful matrix factorisation plus a replay sample of past ratings), each update a registry
version that serves only once it passes a gate on the fresh window's held-out ratings.

>>> import tempfile
>>> rng = np.random.default_rng(0)
>>> def window(n):
...     return pd.DataFrame({"user": rng.integers(0, 40, n), "item": rng.integers(0, 60, n),
...                          "rating": rng.choice([1.0, 3.0, 5.0], n)}).drop_duplicates(["user", "item"])
>>> updater = ContinualRecommender(Registry(tempfile.mkdtemp()), dim=4, epochs=2, seed=0)
>>> updater.update(window(600), window=0).version
'v1'
>>> outcome = updater.update(window(600), window=1)
>>> outcome.version, outcome.parent, outcome.decision in ("promoted", "rejected")
('v1.1', 'v1', True)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from perennial.learn.rankers import MatrixFactorizationRanker
from perennial.recommend.metrics import hit_rate_at_k
from perennial.recommend.model import Recommender
from perennial.registry import Registry, VersionRecord

RATING_COLUMNS = ["user", "item", "rating"]


class RatingsReservoir:
    """A uniform sample of every rating it was given (reservoir sampling), at most ``capacity``, to
    replay past windows during an update. Draws derive from ``seed`` and the ratings seen so far, so
    a reservoir restored from ``state_dict`` continues exactly.

    >>> reservoir = RatingsReservoir(capacity=3, seed=0)
    >>> reservoir.update(pd.DataFrame({"user": [1, 2, 3, 4], "item": [5, 6, 7, 8], "rating": [1.0] * 4}))
    >>> len(reservoir), reservoir.seen
    (3, 4)
    """

    def __init__(self, capacity: int = 20_000, seed: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be a whole number >= 0, got {capacity!r}")
        self.capacity, self.seed = capacity, int(seed)
        self.users = np.empty(0, np.int64)
        self.items = np.empty(0, np.int64)
        self.ratings = np.empty(0, np.float64)
        self.seen = 0

    def __len__(self) -> int:
        return len(self.users)

    def update(self, ratings: pd.DataFrame) -> None:
        users = ratings["user"].to_numpy(np.int64)
        items = ratings["item"].to_numpy(np.int64)
        values = ratings["rating"].to_numpy(np.float64)
        room = max(0, min(self.capacity - len(self), len(users)))
        self.users = np.concatenate([self.users, users[:room]])
        self.items = np.concatenate([self.items, items[:room]])
        self.ratings = np.concatenate([self.ratings, values[:room]])
        rest = np.arange(room, len(users))
        if len(rest):
            # Algorithm R: the j-th rating ever seen takes a uniform slot with probability capacity / (j + 1).
            rng = np.random.default_rng([self.seed, self.seen])
            slots = rng.integers(0, self.seen + rest + 1)
            keep = slots < self.capacity
            # In order, so that a later rating drawn into the same slot wins, as in the one-by-one algorithm.
            for slot, j in zip(slots[keep], rest[keep], strict=True):
                self.users[slot], self.items[slot], self.ratings[slot] = users[j], items[j], values[j]
        self.seen += len(users)

    def sample(self, n: int, salt: int = 0) -> pd.DataFrame:
        """Up to ``n`` ratings drawn without replacement."""
        n = min(int(n), len(self))
        rng = np.random.default_rng([self.seed, self.seen, salt, 1])
        at = rng.choice(len(self), n, replace=False) if n else np.empty(0, np.int64)
        return pd.DataFrame({"user": self.users[at], "item": self.items[at], "rating": self.ratings[at]})

    def state_dict(self) -> dict[str, Any]:
        return {
            "users": torch.from_numpy(self.users.copy()),
            "items": torch.from_numpy(self.items.copy()),
            "ratings": torch.from_numpy(self.ratings.copy()),
            "seen": self.seen,
            "capacity": self.capacity,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.users, self.items = state["users"].numpy().copy(), state["items"].numpy().copy()
        self.ratings = state["ratings"].numpy().copy()
        self.seen, self.capacity, self.seed = int(state["seen"]), int(state["capacity"]), int(state["seed"])


def split_window(ratings: pd.DataFrame, held_share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A window's ratings cut at random into (train, held out), ``held_share`` of them held out."""
    held = np.random.default_rng(seed).random(len(ratings)) < held_share
    return ratings[~held].reset_index(drop=True), ratings[held].reset_index(drop=True)


def gate_hit_rate(
    ranker: MatrixFactorizationRanker,
    model: Recommender,
    held: pd.DataFrame,
    history: dict[int, set[int]],
    like: float = 4.0,
    k: int = 10,
) -> tuple[float, int]:
    """HR@k over the users of ``held`` with a liked (``rating >= like``) held-out item in the catalogue:
    a hit when one is among the top ``k`` of the catalogue less what the user rated before (``history``).
    A user the ranker does not know is scored with the population prior. Returns (HR@k, users)."""
    liked = held[(held["rating"] >= like) & (model.rows(held["item"].to_numpy()) >= 0)]
    rows = {int(u): r for r, u in enumerate(ranker.users)}
    emb, bias = ranker.params["user_emb"].numpy(), ranker.params["user_bias"].numpy()
    hits = []
    for user, group in liked.groupby("user", sort=True):
        row = rows.get(int(user))
        w = model.prior_mean if row is None else np.append(emb[row], bias[row])
        seen = np.fromiter(history.get(int(user), ()), np.int64)
        hits.append(hit_rate_at_k(model.recommend(w, k, exclude=seen), set(group["item"].tolist()), k))
    return (float(np.mean(hits)) if hits else math.nan), len(hits)


@dataclass(frozen=True)
class UpdateOutcome:
    """What one window's update did: the version it made and the gate's numbers (NaN for v1)."""

    window: int
    version: str
    parent: str | None
    decision: str  # "promoted" or "rejected"
    candidate_hr: float
    champion_hr: float
    gate_users: int
    train_ratings: int
    replay_ratings: int
    seconds: float


class ContinualRecommender:
    """Keeps a recommender fresh window by window in ``registry``: the first window trains v1 (stateless);
    each later window fine-tunes the champion (stateful: v1.1, v1.2, ...) on the ratings not yet learned
    plus ``replay_ratio`` times as many drawn from a reservoir of past ones.

    Gate: each window's ratings are cut into train and ``held_share`` held out (those are learned by
    the next update). The candidate's HR@k on the held-out liked ratings must be at least the
    champion's minus ``tolerance``, else it is rejected (recorded, with its numbers) and the champion
    keeps serving; the ratings it trained on wait for the next update.

    ``champion_model`` is the served snapshot (:class:`Recommender`) of the champion.
    """

    def __init__(
        self,
        registry: Registry,
        dim: int = 32,
        epochs: int = 5,
        lr: float = 0.01,
        l2: float = 0.05,
        negatives: int = 1,
        replay_capacity: int = 20_000,
        replay_ratio: float = 1.0,
        held_share: float = 0.2,
        tolerance: float = 0.01,
        like: float = 4.0,
        k: int = 10,
        min_ratings: int = 10,
        seed: int = 0,
    ) -> None:
        if not (math.isfinite(replay_ratio) and replay_ratio >= 0):
            raise ValueError(f"replay_ratio must be a finite number >= 0, got {replay_ratio!r}")
        if not 0 < held_share < 1:
            raise ValueError(f"held_share must be in (0, 1), got {held_share!r}")
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
        self.registry = registry
        self.params = {"dim": dim, "epochs": epochs, "lr": lr, "l2": l2, "negatives": negatives, "seed": seed}
        MatrixFactorizationRanker(**self.params)  # fails now on a bad parameter
        self.reservoir = RatingsReservoir(replay_capacity, seed)
        self.replay_ratio, self.held_share, self.tolerance = float(replay_ratio), held_share, tolerance
        self.like, self.k, self.min_ratings, self.seed = like, k, min_ratings, seed
        self.champion: MatrixFactorizationRanker | None = None
        self.champion_model: Recommender | None = None
        self.pending: list[pd.DataFrame] = []  # learned by no promoted version yet
        self.pending_windows: list[int] = []
        self.history: dict[int, set[int]] = {}  # items each user has rated, in every window seen
        self.user_counts: dict[int, int] = {}  # ratings per user the champion's line has learned

    @property
    def config(self) -> dict[str, Any]:
        return {
            "recommender": {
                "ranker": "matrix_factorization",
                **self.params,
                "replay_capacity": self.reservoir.capacity,
                "replay_ratio": self.replay_ratio,
                "held_share": self.held_share,
                "tolerance": self.tolerance,
                "like": self.like,
                "k": self.k,
                "min_ratings": self.min_ratings,
            }
        }

    def update(self, ratings: pd.DataFrame, window: int) -> UpdateOutcome:
        """Learn one window of ratings (columns user, item, rating) and make a version of it."""
        missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
        if missing:
            raise ValueError(f"ratings need the columns {RATING_COLUMNS}; {missing} not found")
        ratings = ratings[RATING_COLUMNS].reset_index(drop=True)
        if self.champion is None:
            return self._first(ratings, window)
        train, held = split_window(ratings, self.held_share, seed=self.seed * 7919 + window)
        learn = pd.concat([*self.pending, train], ignore_index=True)
        replay = self.reservoir.sample(round(self.replay_ratio * len(learn)), salt=window)
        start = time.perf_counter()
        candidate = MatrixFactorizationRanker(**self.params)
        candidate.load_state_dict(self.champion.state_dict())
        candidate.update(pd.concat([learn, replay], ignore_index=True))
        counts = self._counts_after(learn)
        parent = self._champion_id  # the version fine-tuned, whatever was promoted by hand meanwhile
        version = self.registry.next_id("stateful", parent)
        model = Recommender.from_ranker(version, candidate, learn, self.min_ratings, user_counts=counts)
        seconds = time.perf_counter() - start
        self._remember(train)  # the gate ranks what the user has not rated yet, held-out items aside
        candidate_hr, users = gate_hit_rate(candidate, model, held, self.history, self.like, self.k)
        champion_hr, _ = gate_hit_rate(
            self.champion, self.champion_model, held, self.history, self.like, self.k
        )
        passed = math.isnan(champion_hr) or (
            not math.isnan(candidate_hr) and candidate_hr >= champion_hr - self.tolerance
        )
        decision = "promoted" if passed else "rejected"
        outcome = UpdateOutcome(
            window,
            version,
            parent,
            decision,
            candidate_hr,
            champion_hr,
            users,
            len(learn),
            len(replay),
            seconds,
        )
        windows = [*self.pending_windows, window]
        self._store(model, candidate, outcome, windows, "stateful")
        if passed:
            self.reservoir.update(learn)
            self.champion, self.champion_model, self.user_counts = candidate, model, counts
            self.pending, self.pending_windows = [held], [window]
        else:
            self.pending, self.pending_windows = [learn, held], windows
        self._remember(held)
        return outcome

    def _first(self, ratings: pd.DataFrame, window: int) -> UpdateOutcome:
        start = time.perf_counter()
        ranker = MatrixFactorizationRanker(**self.params)
        ranker.update(ratings)
        counts = self._counts_after(ratings)
        version = self.registry.next_id("stateless", None)
        model = Recommender.from_ranker(version, ranker, ratings, self.min_ratings, user_counts=counts)
        outcome = UpdateOutcome(
            window, version, None, "promoted", math.nan, math.nan, 0, len(ratings), 0,
            time.perf_counter() - start,
        )  # fmt: skip
        self._store(model, ranker, outcome, [window], "stateless")
        self.reservoir.update(ratings)
        self._remember(ratings)
        self.champion, self.champion_model, self.user_counts = ranker, model, counts
        return outcome

    @property
    def _champion_id(self) -> str | None:
        return None if self.champion_model is None else self.champion_model.version

    def _counts_after(self, ratings: pd.DataFrame) -> pd.Series:
        counts = dict(self.user_counts)
        for user, n in ratings["user"].value_counts().items():
            counts[int(user)] = counts.get(int(user), 0) + int(n)
        return pd.Series(counts, dtype=np.int64)

    def _remember(self, ratings: pd.DataFrame) -> None:
        for user, item in zip(ratings["user"].tolist(), ratings["item"].tolist(), strict=True):
            self.history.setdefault(int(user), set()).add(int(item))

    def _store(
        self,
        model: Recommender,
        ranker: MatrixFactorizationRanker,
        outcome: UpdateOutcome,
        windows: list[int],
        kind: str,
    ) -> None:
        numbers = json_numbers(outcome)
        record = VersionRecord(
            outcome.version,
            outcome.parent,
            kind,
            trained_on_windows=windows,
            n_samples=outcome.train_ratings + outcome.replay_ratings,
            train_seconds=outcome.seconds,
            config=self.config,
            metrics={f"hr@{self.k}": numbers["candidate_hr"], "gate": numbers},
            created_window=outcome.window,
        )
        extras = {"trainer": ranker.state_dict(), "replay": self.reservoir.state_dict()}
        reason = "first version" if outcome.parent is None else self._reason(outcome)
        record_update(self.registry, record, model.state_dict(), extras, outcome.decision, numbers, reason)

    def _reason(self, outcome: UpdateOutcome) -> str:
        return (
            f"HR@{self.k} {outcome.candidate_hr:.4f} vs champion {outcome.champion_hr:.4f} "
            f"(tolerance {self.tolerance:g}, {outcome.gate_users} users)"
        )


def json_numbers(outcome: Any) -> dict[str, Any]:
    """An update outcome's fields as JSON numbers (NaN, for "not measured", as null)."""
    return {
        key: (None if isinstance(value, float) and math.isnan(value) else value)
        for key, value in asdict(outcome).items()
    }


def record_update(
    registry: Registry,
    record: VersionRecord,
    weights: dict[str, torch.Tensor],
    extras: dict[str, Any],
    decision: str,
    numbers: dict[str, Any],
    reason: str,
) -> None:
    """Add a recommender's version and its gate decision ("promoted" or "rejected") in one registry
    transaction: a stopped updater leaves either both or neither."""
    window = record.created_window
    with registry.transaction():
        registry.add(record, weights, extras=extras)
        if decision == "promoted":
            registry.promote(record.id, window=window, reason=reason)
        else:
            registry.reject(record.id, window=window)
        registry.record_decision(record.id, window, decision, numbers)
