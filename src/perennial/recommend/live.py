"""The in-session half as a server runs it, without HTTP: ``rank(unit, k)`` starts or continues a unit's
session and ranks the catalogue for it; ``feedback(unit, item, rating)`` updates that session's vector
at once, so the unit's next ``rank`` reflects it. The global model is only ever read; it is either kind
of served version (:class:`ServedRecommender`): matrix factorisation
(:class:`~perennial.recommend.model.Recommender`) or the session model
(:class:`~perennial.recommend.session_snapshot.SessionSnapshot`).

>>> from perennial.recommend import Recommender
>>> live = LiveRecommender(Recommender.synthetic(n_items=30, dim=4, seed=0))
>>> before = live.rank("u1", k=5)["items"]
>>> live.feedback("u1", item=before[-1], rating=5.0)["interactions"]
1
>>> after = live.rank("u1", k=5)["items"]
>>> before[-1] in after  # rated items are never recommended again in the session
False
>>> live.feedback("u1", item=999, rating=5.0)
Traceback (most recent call last):
...
perennial.recommend.live.BadFeedback: item 999 is not in the catalogue of version synthetic (30 items)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from perennial.recommend.sessions import Session, SessionError, SessionStore


class BadFeedback(SessionError):
    """Feedback that cannot be applied: an item outside the catalogue, a rating out of range."""


class ServedRecommender(Protocol):
    """What :class:`LiveRecommender` asks of a served version. ``session_vector`` of a session's read
    items and ratings is None for an empty one, which ``recommend`` ranks by the version's own default
    (the prior mean, or popularity). ``skip_rating``: how a shown-and-skipped item is recorded; NaN
    means it is never read, only excluded from later rankings."""

    @property
    def version(self) -> str: ...

    @property
    def rating_range(self) -> tuple[float, float]: ...

    @property
    def skip_rating(self) -> float: ...

    def __len__(self) -> int: ...

    def rows(self, items: Iterable[Any] | np.ndarray) -> np.ndarray: ...

    def session_vector(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray | None: ...

    def recommend(
        self, w: np.ndarray | None, k: int, exclude: Iterable[Any] | np.ndarray = ()
    ) -> list[int]: ...


class LiveRecommender:
    """Sessions over one served version (``model``, replaced whole by ``swap``).

    A click is the rating ``click_rating``; a shown item not clicked, ``skip_rating`` (default: the
    model's, the lowest rating for matrix factorisation; a session model's NaN always wins). A session
    keeps its last ``max_interactions`` interactions. Sessions fitted under an earlier version are
    refitted from their items when next used; items the new version does not know are not read, but
    stay excluded.
    """

    def __init__(
        self,
        model: ServedRecommender,
        store: SessionStore | None = None,
        max_interactions: int = 200,
        click_rating: float = 4.0,
        skip_rating: float | None = None,
        max_k: int = 1000,
    ) -> None:
        if (
            isinstance(max_interactions, bool)
            or not isinstance(max_interactions, int)
            or max_interactions < 1
        ):
            raise ValueError(f"max_interactions must be a whole number >= 1, got {max_interactions!r}")
        if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
            raise ValueError(f"max_k must be a whole number >= 1, got {max_k!r}")
        self.model = model
        self.store = store if store is not None else SessionStore()
        self.max_interactions, self.max_k = max_interactions, max_k
        self.click_rating = float(click_rating)
        self.skip_rating = skip_rating
        self._swap_lock = threading.Lock()

    def swap(self, model: ServedRecommender) -> None:
        """Serve ``model`` from now on; sessions refit to it lazily."""
        with self._swap_lock:
            self.model = model

    # ---- requests ---------------------------------------------------------------------------------
    def rank(self, unit: str, k: int = 10) -> dict[str, Any]:
        """The unit's top ``k`` items (ids, best first), leaving out what its session interacted with."""
        model = self.model  # this request's version, whatever swaps meanwhile
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise BadFeedback(f"k must be a whole number in 1..{self.max_k}, got {k!r}")
        with self.store.lock:
            session, started = self.store.open(unit)
            w = self._vector(session, model)
            seen = session.items
            n = len(session)
        return {
            "unit": unit,
            "version": model.version,
            "items": model.recommend(w, k, exclude=seen),
            "interactions": n,
            "session": "started" if started else "continued",
        }

    def feedback(
        self, unit: str, item: int, rating: float | None = None, click: bool | None = None
    ) -> dict[str, Any]:
        """Apply one interaction to the unit's live session: a ``rating``, or a ``click`` (True: clicked,
        False: shown and skipped). Refused without changing any session: no live session (never
        started, evicted, expired), over the unit's rate limit, an item not in the catalogue, a
        rating outside the model's range."""
        model = self.model
        target = self._target(model, rating, click)
        with self.store.lock:
            session = self.store.get(unit)
            self.store.admit(unit, session)
            if int(model.rows([item])[0]) < 0:
                raise BadFeedback(
                    f"item {item} is not in the catalogue of version {model.version} ({len(model):,} items)"
                )
            session.record(item, target, self.max_interactions)
            self._fit(session, model)
            self.store.touch(unit, session)
            n = len(session)
        return {"unit": unit, "version": model.version, "interactions": n}

    # ---- helpers ----------------------------------------------------------------------------------
    def _target(self, model: ServedRecommender, rating: float | None, click: bool | None) -> float:
        if (rating is None) == (click is None):
            raise BadFeedback("give exactly one of 'rating' or 'click'")
        if click is not None:
            if not isinstance(click, bool):
                raise BadFeedback(f"click must be true or false, got {click!r}")
            skip = float(model.skip_rating)
            # A session model reads every item with a finite rating as an interaction: its NaN stays.
            if self.skip_rating is not None and not math.isnan(skip):
                skip = float(self.skip_rating)
            return self.click_rating if click else skip
        low, high = model.rating_range
        if isinstance(rating, bool) or not isinstance(rating, int | float) or not math.isfinite(rating):
            raise BadFeedback(f"rating must be a finite number, got {rating!r}")
        if not low <= rating <= high:
            raise BadFeedback(
                f"rating {rating:g} is outside version {model.version}'s range {low:g}..{high:g}"
            )
        return float(rating)

    def _fit(self, session: Session, model: ServedRecommender) -> None:
        items, ratings = session.items, session.ratings
        # Read only what this version can: items it knows (a session may predate it) with a rating (a
        # skip recorded under a session model is NaN). The rest stays in the session, excluded.
        read = (model.rows(items) >= 0) & np.isfinite(ratings)
        session.w = model.session_vector(items[read], ratings[read])
        session.version = model.version

    def _vector(self, session: Session, model: ServedRecommender) -> np.ndarray | None:
        if len(session) == 0:
            return None
        if session.version != model.version:
            self._fit(session, model)
        return session.w
