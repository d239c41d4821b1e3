"""The session model kept fresh window by window, like every other model here: each window's update is a
registry version (v1 from scratch, then v1.1, v1.2, ... fine-tuned from the champion with replay) that
serves only once a paired test on held-out sessions says it is not worse than the champion; the state to
continue the line is stored with every version, so a stopped updater resumes from its registry.

The gate. A seeded ``held_share`` of the users of each window are held out of the candidate's training.
Each held-out user's interactions in the window are replayed as a fresh session, which is how a session
is served: after each of the first ``1 .. max_len - 1`` interactions, both models rank the catalogue
less what the session saw (an empty read session gets the popularity order, as served), and NDCG@``k``
scores the ranking against the liked items among the user's next ``horizon``. A user's score is the mean
over those positions; the test is Student's t, corrected for left skew (``mean_lower_bound``: a harmful
candidate's differences have a few users losing a lot), on the users' paired differences, candidate
minus champion, for non-inferiority: promoted when the one-sided ``1 - alpha`` lower bound of the mean
difference is above ``-tolerance`` (NDCG points). Too few held-out users to test is a rejection: the
candidate's data wait for the next update, which learns them too. docs/benchmarks.md ("Session gate")
has its error rates.

>>> import tempfile
>>> rng = np.random.default_rng(0)
>>> def window(n, t0):
...     return pd.DataFrame({"user": rng.integers(0, 60, n), "item": rng.integers(0, 40, n),
...                          "rating": rng.choice([2.0, 5.0], n), "timestamp": t0 + np.arange(n)})
>>> updater = SessionUpdater(Registry(tempfile.mkdtemp()), learner={"dim": 8, "max_len": 6, "epochs": 2},
...                          min_users=2, seed=0)
>>> updater.update(window(600, 0), window=0).version
'v1'
>>> outcome = updater.update(window(600, 1000), window=1)
>>> outcome.version, outcome.parent, outcome.decision in ("promoted", "rejected")
('v1.1', 'v1', True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from perennial.recommend.continual import json_numbers, record_update
from perennial.recommend.metrics import ndcg_at_k
from perennial.recommend.session_model import SessionLearner, item_ids
from perennial.recommend.session_snapshot import RANKER, SessionSnapshot, is_session_version
from perennial.registry import Registry, VersionRecord
from perennial.stats.paired import mean_lower_bound, mean_noninferiority_pvalue

STATE_KEY = "session_updater"  # the registry state entry: the last window learned
PENDING = {"user": np.int64, "item": np.int64, "rating": np.float64, "timestamp": np.float64}


@dataclass(frozen=True)
class SessionOutcome:
    """What one window's update did: the version, the decision and the gate's numbers (NaN for v1)."""

    window: int
    version: str
    parent: str | None
    decision: str  # "promoted" or "rejected"
    reason: str
    candidate_ndcg: float
    champion_ndcg: float
    lower_bound: float
    p_value: float
    gate_users: int
    train_interactions: int
    replayed_chunks: int
    new_items: int
    catalogue: int
    seconds: float
    empty_session: str = "popularity"  # how the version ranks an empty session (SessionSnapshot.empty)


class SessionUpdater:
    """Keeps a session model fresh in ``registry``, one :meth:`update` per window of interactions (columns
    ``user``, ``item``, ``timestamp``, and ``rating`` when ``like`` is set).

    ``learner``: the :class:`SessionLearner` settings (its ``like`` and ``horizon`` are this updater's).
    ``like``: a rating at least this is liked (a target); None: every interaction is.
    ``held_share``, ``tolerance``, ``alpha``, ``k``, ``horizon``, ``min_users``: the gate (module doc).
    """

    def __init__(
        self,
        registry: Registry,
        learner: Mapping[str, Any] | None = None,
        like: float | None = 4.0,
        horizon: int = 10,
        k: int = 10,
        held_share: float = 0.2,
        tolerance: float = 0.01,
        alpha: float = 0.05,
        min_users: int = 10,
        seed: int = 0,
    ) -> None:
        if not (isinstance(held_share, int | float) and 0 < held_share < 1):
            raise ValueError(f"held_share must be in (0, 1), got {held_share!r}")
        if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"tolerance must be a finite number >= 0 (NDCG points), got {tolerance!r}")
        if not (isinstance(alpha, int | float) and 0 < alpha < 1):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        for name, value in (("k", k), ("min_users", min_users)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "k" else 2):
                raise ValueError(f"{name} must be a whole number >= {1 if name == 'k' else 2}, got {value!r}")
        self.registry = registry
        self.learner_settings = {**dict(learner or {}), "like": like, "horizon": horizon, "seed": seed}
        self.learner_settings.pop("trainer", None)  # where it runs is not a setting of the line
        self.trainer = (learner or {}).get("trainer")
        self._fresh_learner()  # fails now on a bad setting
        self.like, self.horizon, self.k = like, horizon, k
        self.held_share, self.tolerance, self.alpha = float(held_share), float(tolerance), float(alpha)
        self.min_users, self.seed = min_users, int(seed)
        self.champion: SessionLearner | None = None
        self.champion_snapshot: SessionSnapshot | None = None
        self.popularity: dict[int, float] = {}  # liked interactions per item the champion's line learned
        self.pending = pd.DataFrame({c: np.empty(0, t) for c, t in PENDING.items()})  # not learned yet
        self.pending_windows: list[int] = []
        self.last_window: int | None = None
        self.rating_range = (math.inf, -math.inf)  # of every rating seen: what feedback may give

    @property
    def config(self) -> dict[str, Any]:
        model = self._fresh_learner().model_settings
        return {
            "recommender": {
                "ranker": RANKER,
                "model": model,
                "learner": {k: v for k, v in self.learner_settings.items() if k not in model},
                "gate": {
                    "held_share": self.held_share,
                    "tolerance": self.tolerance,
                    "alpha": self.alpha,
                    "k": self.k,
                    "horizon": self.horizon,
                    "like": self.like,
                    "min_users": self.min_users,
                },
            }
        }

    def _fresh_learner(self) -> SessionLearner:
        return SessionLearner(**self.learner_settings, trainer=self.trainer)

    # -- one window ---------------------------------------------------------------------------------

    def update(self, interactions: pd.DataFrame, window: int) -> SessionOutcome:
        """Learn one window's interactions and make a version of them (promoted or rejected)."""
        if self.last_window is not None and window <= self.last_window:
            raise ValueError(f"window {window} is not after the last window learned ({self.last_window})")
        frame = self._check(interactions, window)
        if self.champion is None:
            return self._first(frame, window)
        held_users = self._held_users(frame["user"].to_numpy(), window)
        held = frame[frame["user"].isin(held_users)]
        train = frame[~frame["user"].isin(held_users)]
        learn = pd.concat([self.pending, train], ignore_index=True)
        start = time.perf_counter()
        candidate = self._fresh_learner()
        candidate.load_state_dict(self.champion.state_dict())
        fitted = candidate.update(learn, window)
        popularity = self._popularity_after(learn)
        parent = self.champion_snapshot.version
        version = self.registry.next_id("stateful", parent)
        snapshot = self._snapshot(version, candidate, popularity, held)
        seconds = time.perf_counter() - start
        ours = session_ndcg(snapshot, held, self.like, self.k, self.horizon)
        theirs = session_ndcg(self.champion_snapshot, held, self.like, self.k, self.horizon)
        scored = ~np.isnan(ours)
        diff = ours[scored] - theirs[scored]
        n = len(diff)
        if n < self.min_users:
            bound, p = math.nan, 1.0
            passed, reason = (
                False,
                f"{n} held-out users with a liked target, fewer than min_users={self.min_users}",
            )
        else:
            bound, p = mean_lower_bound(diff, self.alpha), mean_noninferiority_pvalue(diff, self.tolerance)
            passed = p < self.alpha
            reason = (
                f"NDCG@{self.k} {ours[scored].mean():.4f} vs champion {theirs[scored].mean():.4f} over {n} "
                f"held-out sessions: lower bound of the difference {bound:+.4f} "
                f"{'>' if passed else '<='} -{self.tolerance:g} (p={p:.3g})"
            )
        outcome = SessionOutcome(
            window,
            version,
            parent,
            "promoted" if passed else "rejected",
            reason,
            float(ours[scored].mean()) if n else math.nan,
            float(theirs[scored].mean()) if n else math.nan,
            bound,
            p,
            n,
            len(learn),
            fitted.replayed,
            fitted.new_items,
            fitted.catalogue,
            seconds,
            snapshot.empty,
        )
        windows = [*self.pending_windows, window]
        if passed:  # the held-out sessions are learned by the next update
            pending, pending_windows = held, [window]
        else:  # the next candidate is fine-tuned from the champion again, on all of it
            pending, pending_windows = pd.concat([learn, held], ignore_index=True), windows
        pending = pending.reset_index(drop=True)
        self._store(outcome, snapshot, candidate, popularity, windows, pending, pending_windows)
        if passed:
            self.champion, self.champion_snapshot, self.popularity = candidate, snapshot, popularity
        self.pending, self.pending_windows, self.last_window = pending, pending_windows, window
        return outcome

    def _first(self, frame: pd.DataFrame, window: int) -> SessionOutcome:
        start = time.perf_counter()
        learner = self._fresh_learner()
        fitted = learner.update(frame, window)
        popularity = self._popularity_after(frame)
        version = self.registry.next_id("stateless", None)
        snapshot = self._snapshot(version, learner, popularity)
        nan = math.nan
        outcome = SessionOutcome(
            window, version, None, "promoted", "first version", nan, nan, nan, nan, 0, len(frame), 0,
            fitted.new_items, fitted.catalogue, time.perf_counter() - start,
        )  # fmt: skip
        self._store(outcome, snapshot, learner, popularity, [window], frame.iloc[:0], [])
        self.champion, self.champion_snapshot, self.popularity = learner, snapshot, popularity
        self.pending, self.pending_windows, self.last_window = frame.iloc[:0], [], window
        return outcome

    def _check(self, interactions: pd.DataFrame, window: int) -> pd.DataFrame:
        needed = ["user", "item", "timestamp"] + (["rating"] if self.like is not None else [])
        missing = [c for c in needed if c not in interactions.columns]
        if missing:
            raise ValueError(f"interactions need the columns {needed}; {missing} not found")
        if interactions.empty:
            raise ValueError(f"window {window} has no interactions to learn")
        frame = pd.DataFrame(
            {
                "user": item_ids(interactions["user"].to_numpy(), "user id"),
                "item": item_ids(interactions["item"].to_numpy()),
                "rating": (
                    interactions["rating"].to_numpy(np.float64) if "rating" in interactions else np.nan
                ),
                "timestamp": seconds(interactions["timestamp"]),
            }
        )
        ratings = frame["rating"].to_numpy()
        if np.isfinite(ratings).any():
            low, high = self.rating_range
            self.rating_range = (min(low, np.nanmin(ratings)), max(high, np.nanmax(ratings)))
        if not np.isfinite(frame["timestamp"]).all():
            bad = frame["timestamp"][~np.isfinite(frame["timestamp"])].iloc[0]
            raise ValueError(f"window {window}: timestamps must be finite numbers, got {bad!r}")
        return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)

    def _held_users(self, users: np.ndarray, window: int) -> np.ndarray:
        unique = np.unique(users)
        return unique[np.random.default_rng([self.seed, window]).random(len(unique)) < self.held_share]

    def _popularity_after(self, learned: pd.DataFrame) -> dict[int, float]:
        liked = learned if self.like is None else learned[learned["rating"] >= self.like]
        counts = dict(self.popularity)
        for item, n in liked["item"].value_counts().items():
            counts[int(item)] = counts.get(int(item), 0.0) + float(n)
        return counts

    def _snapshot(
        self,
        version: str,
        learner: SessionLearner,
        popularity: dict[int, float],
        held: pd.DataFrame | None = None,
    ) -> SessionSnapshot:
        """The served version; its empty sessions are ranked by whichever of popularity and the model's
        start-of-session ranking scores the better NDCG on ``held``'s first interactions (popularity
        without held-out sessions, or on a tie)."""
        assert learner.model is not None
        counts = np.array([popularity.get(int(i), 0.0) for i in learner.model.items])
        low, high = self.rating_range
        rating_range = (low, high) if low <= high else (0.0, 1.0)  # no ratings: a click is all there is
        snapshot = SessionSnapshot(version, learner.model, counts, rating_range)
        if held is None or held.empty:
            return snapshot
        start = SessionSnapshot(version, learner.model, counts, rating_range, empty="start")
        by_popularity = first_ndcg(snapshot, held, self.like, self.k, self.horizon)
        by_start = first_ndcg(start, held, self.like, self.k, self.horizon)
        scored = ~np.isnan(by_popularity)
        return start if scored.any() and by_start[scored].mean() > by_popularity[scored].mean() else snapshot

    # -- the registry -------------------------------------------------------------------------------

    def _store(
        self,
        outcome: SessionOutcome,
        snapshot: SessionSnapshot,
        learner: SessionLearner,
        popularity: dict[int, float],
        windows: list[int],
        pending: pd.DataFrame,
        pending_windows: list[int],
    ) -> None:
        """Write the version, its decision and the state to continue from, in one transaction."""
        numbers = json_numbers(outcome)
        record = VersionRecord(
            outcome.version,
            outcome.parent,
            "stateless" if outcome.parent is None else "stateful",
            trained_on_windows=windows,
            n_samples=outcome.train_interactions,
            train_seconds=outcome.seconds,
            config=self.config,
            metrics={f"ndcg@{self.k}": numbers["candidate_ndcg"], "gate": numbers},
            created_window=outcome.window,
        )
        items = sorted(popularity)
        extras = {
            "trainer": learner.state_dict(),
            "pending": {c: torch.from_numpy(pending[c].to_numpy(PENDING[c], copy=True)) for c in PENDING},
            "popularity": {
                "items": torch.tensor(items, dtype=torch.int64),
                "counts": torch.tensor([popularity[i] for i in items], dtype=torch.float64),
            },
        }
        with self.registry.transaction():  # the version, its decision and the resume point: all or none
            weights = snapshot.state_dict()
            record_update(self.registry, record, weights, extras, outcome.decision, numbers, outcome.reason)
            state = {"window": outcome.window, "version": outcome.version, "pending_windows": pending_windows}
            self.registry.set_state(STATE_KEY, state)

    # -- resuming -----------------------------------------------------------------------------------

    @classmethod
    def resume(cls, registry: Registry, **settings: Any) -> SessionUpdater:
        """An updater continuing ``registry``'s line where the last :meth:`update` left it: the
        champion's weights, reservoir and popularity, and the interactions no promoted version learned.
        A registry with no session-model state is refused; an empty one starts fresh."""
        updater = cls(registry, **settings)
        state = registry.get_state(STATE_KEY)
        if state is None:
            if registry.ids():
                raise ValueError(
                    f"the registry {registry.root} holds versions but no session-model updater state: "
                    "it was not written by the session model's updater"
                )
            return updater
        champion = registry.champion()
        if champion is None or not is_session_version(registry.get(champion).config):
            raise ValueError(
                f"the registry's champion {champion!r} is not a session model: cannot continue it"
            )
        stored = registry.get(champion).config["recommender"]
        given = updater.config["recommender"]
        for part, key in (("model", "dim"), ("model", "max_len"), ("learner", "horizon")):
            ours, theirs = given[part].get(key), stored.get(part, {}).get(key)
            if ours != theirs:  # the stored weights, reservoir and chunks are shaped by these
                raise ValueError(
                    f"the registry's line was trained with {key}={theirs!r}, not {key}={ours!r}: keep "
                    f"{key}={theirs!r} to continue it, or start a new registry"
                )
        trainer = registry.load_extra(champion, "trainer")
        popularity = registry.load_extra(champion, "popularity")
        pending = registry.load_extra(state["version"], "pending")
        if trainer is None or popularity is None or pending is None:
            raise ValueError(f"versions {champion}/{state['version']} lack the state to continue the line")
        learner = updater._fresh_learner()
        learner.load_state_dict(trainer)
        updater.champion = learner
        updater.champion_snapshot = SessionSnapshot.from_registry(registry, champion)
        updater.rating_range = updater.champion_snapshot.rating_range
        updater.popularity = dict(
            zip(popularity["items"].tolist(), popularity["counts"].tolist(), strict=True)
        )
        updater.pending = pd.DataFrame({c: pending[c].numpy() for c in PENDING})
        updater.pending_windows = list(state["pending_windows"])
        updater.last_window = int(state["window"])
        return updater


def session_ndcg(
    snapshot: SessionSnapshot, interactions: pd.DataFrame, like: float | None, k: int, horizon: int
) -> np.ndarray:
    """Each user's NDCG@``k`` replayed as a fresh session through ``snapshot`` (time-ordered
    ``interactions``): the mean, over positions ``n = 1 .. max_len - 1`` with a target, of the ranking
    after the first ``n`` interactions against the liked items among the next ``horizon``, the session's
    items left out. NaN for a user with no such position. Items the model does not know are not read
    (and, as targets, cannot be ranked); a session with nothing read is ranked by popularity, as served.
    One value per user, in sorted user order."""
    model = snapshot.model
    positions = model.max_len - 1
    out = []
    for _, group in interactions.groupby("user", sort=True):
        items = group["item"].to_numpy(np.int64)
        liked = np.ones(len(items), bool) if like is None else group["rating"].to_numpy() >= like
        known = model.rows(items) >= 0
        scores = model.prefix_scores(items[known]) if known.any() else None
        read = np.concatenate([[0], np.cumsum(known)])  # items read after n interactions
        values = []
        for n in range(1, min(len(items) - 1, positions) + 1):
            seen = items[:n]
            targets = set(items[n : n + horizon][liked[n : n + horizon]].tolist()) - set(seen.tolist())
            if not targets:
                continue
            row = snapshot.scores(None) if read[n] == 0 else scores[read[n]]
            values.append(ndcg_at_k(model.top(row, k, exclude=seen), targets, k))
        out.append(np.mean(values) if values else math.nan)
    return np.array(out, np.float64)


def first_ndcg(
    snapshot: SessionSnapshot, interactions: pd.DataFrame, like: float | None, k: int, horizon: int
) -> np.ndarray:
    """Each user's NDCG@``k`` of ``snapshot``'s ranking of an empty session against the liked items among
    their first ``horizon`` interactions (NaN for a user with none), in sorted user order."""
    ranked = snapshot.recommend(None, k)
    out = []
    for _, group in interactions.groupby("user", sort=True):
        first = group.iloc[:horizon]
        liked = first if like is None else first[first["rating"] >= like]
        targets = set(liked["item"].tolist())
        out.append(ndcg_at_k(ranked, targets, k) if targets else math.nan)
    return np.array(out, np.float64)


def seconds(timestamps: pd.Series) -> np.ndarray:
    """Timestamps as float seconds: numbers as they are, datetimes since the epoch."""
    if pd.api.types.is_datetime64_any_dtype(timestamps):
        return (timestamps - pd.Timestamp(0, tz=timestamps.dt.tz)).dt.total_seconds().to_numpy(np.float64)
    return pd.to_numeric(timestamps, errors="coerce").to_numpy(np.float64)
