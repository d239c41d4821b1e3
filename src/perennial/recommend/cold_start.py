"""Cold-start replay: a user the global model never saw rates items one by one, in time order, and after
0, 1, 3, 5, 10 of them each ranker's top 10 is scored against the items the user goes on to like.

Definitions. A cold user's interactions are their ratings of catalogue items, in time order (items
outside the catalogue cannot be ranked and are dropped). After ``n`` interactions the targets are the
items among the user's later ratings rated ``>= like``; every ranker ranks the whole catalogue less
the ``n`` items already interacted with. A user takes part only if they have a target after the last
step, so every step averages over the same users. Rankers:

- ``popularity``: items by count of liked ratings in the training stream, the same for everyone;
- ``global``: the global model without in-session adaptation (the population's mean user vector);
- ``adapted``: the user vector refitted after every interaction (:meth:`Recommender.user_vector`).

>>> model = Recommender.synthetic(n_items=50, dim=3, seed=1)
>>> user = ColdUser(7, np.arange(20), np.full(20, 5.0))
>>> result = replay_user(model, np.zeros(50), user, steps=(0, 5))
>>> sorted(result), sorted(result["adapted"])
(['adapted', 'global', 'popularity'], [0, 5])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from perennial.data.movielens import rating_grades
from perennial.recommend.metrics import hit_rate_at_k, ndcg_at_k
from perennial.recommend.model import Recommender
from perennial.rollout.clicks import ClickModel
from perennial.rollout.interleaving import Outcome, credit, team_draft

STEPS = (0, 1, 3, 5, 10)
RANKERS = ("popularity", "global", "adapted")


@dataclass(frozen=True)
class ColdUser:
    """One held-out user's interactions with catalogue items, oldest first."""

    user: int
    items: np.ndarray
    ratings: np.ndarray


def cold_users(
    ratings: pd.DataFrame, model: Recommender, steps: Sequence[int] = STEPS, like: float = 4.0
) -> list[ColdUser]:
    """The users of ``ratings`` (columns user, item, rating, timestamp) as :class:`ColdUser`, their
    ratings in time order (ties keep the given order), limited to ``model``'s catalogue; only users
    with a liked item after the last step."""
    ordered = ratings.sort_values("timestamp", kind="stable") if "timestamp" in ratings else ratings
    ordered = ordered[model.rows(ordered["item"].to_numpy()) >= 0]
    last = max(steps)
    out = []
    for user, group in ordered.groupby("user", sort=True):
        values = group["rating"].to_numpy(np.float64)
        if (values[last:] >= like).any():
            out.append(ColdUser(int(user), group["item"].to_numpy(np.int64), values))
    return out


def replay_user(
    model: Recommender,
    popularity: np.ndarray,
    user: ColdUser,
    steps: Sequence[int] = STEPS,
    k: int = 10,
    like: float = 4.0,
    horizon: int | None = None,
) -> dict[str, dict[int, tuple[float, float]]]:
    """``{ranker: {step: (HR@k, NDCG@k)}}`` for one cold user; ``popularity`` scores each catalogue row.

    With ``horizon``, the targets are only the liked items among the next ``horizon`` interactions
    (the near future of the session); a step with none is NaN (left out of the means)."""
    out: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in RANKERS}
    prior = model.recommend(model.prior_mean, k + max(steps))  # the global list, before exclusions
    for step in steps:
        seen = user.items[:step]
        end = None if horizon is None else step + horizon
        later = user.ratings[step:end] >= like
        targets = set(user.items[step:end][later].tolist())
        seen_set = set(seen.tolist())
        lists = {
            "popularity": model.top(popularity, k, exclude=seen),
            "global": [item for item in prior if item not in seen_set][:k],
            "adapted": model.recommend(model.user_vector(seen, user.ratings[:step]), k, exclude=seen),
        }
        for name, ranked in lists.items():
            if targets:
                out[name][step] = (hit_rate_at_k(ranked, targets, k), ndcg_at_k(ranked, targets, k))
            else:
                out[name][step] = (math.nan, math.nan)
    return out


@dataclass
class ColdStartReport:
    """Per-user results pooled over users (and windows): ``update`` adds one user's, ``compute`` gives
    the means ``{ranker: {step: {"hr", "ndcg", "users"}}}`` (NaN results, steps without targets, left
    out). ``per_user`` keeps each user's pairs in order, so rankers can be paired user by user."""

    per_user: dict[str, dict[int, list[tuple[float, float]]]] = field(default_factory=dict)

    def update(self, result: dict[str, dict[int, tuple[float, float]]]) -> None:
        for name, by_step in result.items():
            for step, pair in by_step.items():
                self.per_user.setdefault(name, {}).setdefault(step, []).append(pair)

    def compute(self) -> dict[str, dict[int, dict[str, float]]]:
        out: dict[str, dict[int, dict[str, float]]] = {}
        for name, by_step in self.per_user.items():
            out[name] = {}
            for step, pairs in sorted(by_step.items()):
                values = np.array(pairs, np.float64).reshape(-1, 2)
                values = values[~np.isnan(values[:, 0])]
                mean = values.mean(0) if len(values) else np.full(2, math.nan)
                out[name][step] = {"hr": float(mean[0]), "ndcg": float(mean[1]), "users": len(values)}
        return out


def interleave_user(
    model: Recommender,
    user: ColdUser,
    click_model: ClickModel,
    rng: np.random.Generator,
    steps: Sequence[int] = STEPS,
    k: int = 10,
    repeats: int = 1,
) -> list[Outcome]:
    """Team-draft impressions of the adapted list (team ``"a"``) against the global one (``"b"``) after
    each step's interactions, ``repeats`` per step; the simulated user clicks by the grades of the
    ratings they give later (:func:`rating_grades`; an item they never rate is grade 0)."""
    grades = dict(zip(user.items.tolist(), rating_grades(user.ratings).tolist(), strict=True))
    outcomes = []
    for step in steps:
        seen = user.items[:step]
        adapted = model.recommend(model.user_vector(seen, user.ratings[:step]), k, exclude=seen)
        static = model.recommend(model.prior_mean, k, exclude=seen)
        for _ in range(repeats):
            shown = team_draft(adapted, static, rng, length=k)
            clicks = click_model.clicks([grades.get(item, 0) for item in shown.shown])
            outcomes.append(credit(shown, clicks))
    return outcomes
