"""One version of the session model as a server runs it: the GRU (:class:`SessionRecommender`), the
popularity of each catalogue item, how an empty session is ranked (``empty``: by popularity, or by the
model's own start-of-session ranking; the updater picks, per version, whichever scored better on the
window's held-out sessions, since neither wins on every data set: docs/benchmarks.md "Cold start") and
the range of ratings it was trained on. It answers the same calls as the matrix-factorisation
:class:`~perennial.recommend.Recommender`, so :class:`~perennial.recommend.LiveRecommender` and the
server serve either.

A session's vector is the GRU's hidden state after its items; items shown and skipped (``click=false``)
are not read, since the model learned from interactions only, but are never ranked again.

>>> model = SessionRecommender(np.arange(20), dim=8)
>>> snapshot = SessionSnapshot("v1", model.eval(), popularity=np.arange(20.0), rating_range=(1.0, 5.0))
>>> snapshot.recommend(None, k=3)  # an empty session: the most popular items
[19, 18, 17]
>>> w = snapshot.session_vector(np.array([4, 7]), np.array([5.0, 3.0]))
>>> len(snapshot.recommend(w, k=5, exclude=[4, 7]))
5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from perennial.recommend.session_model import WEIGHTS, SessionRecommender
from perennial.registry import Registry

RANKER = "session"  # config["recommender"]["ranker"] of a session model's versions
EXTRA = ("popularity", "rating_range")  # tensors stored beside the model's in weights.safetensors
EMPTY = ("popularity", "start")  # how an empty session is ranked; stored as the tensor "empty_start"


class SessionSnapshot:
    """A served version of the session model: ``version``, the evaluated ``model``, ``popularity`` (one
    number per catalogue row), ``rating_range`` (lowest, highest) and ``empty`` (:data:`EMPTY`)."""

    skip_rating = math.nan  # how LiveRecommender records a shown-and-skipped item: kept out of the input

    def __init__(
        self,
        version: str,
        model: SessionRecommender,
        popularity: np.ndarray,
        rating_range: tuple[float, float] = (0.0, 5.0),
        empty: str = "popularity",
    ) -> None:
        if empty not in EMPTY:
            raise ValueError(f"empty must be one of {', '.join(EMPTY)}, got {empty!r}")
        popularity = np.asarray(popularity, np.float64)
        if popularity.shape != (len(model),):
            raise ValueError(
                f"popularity needs one number per catalogue item ({len(model)}), got shape {popularity.shape}"
            )
        if not np.isfinite(popularity).all():
            raise ValueError(f"version {version}'s item popularity is not finite")
        low, high = (float(v) for v in rating_range)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"rating_range must be two finite numbers, lowest first, got {rating_range!r}")
        self.version, self.model = version, model.eval()
        self.popularity, self.rating_range, self.empty = popularity, (low, high), empty
        self._empty_scores = popularity if empty == "popularity" else model.scores(model.start())

    def __len__(self) -> int:
        return len(self.model)

    @property
    def dim(self) -> int:
        return self.model.dim

    def rows(self, items: Iterable[Any] | np.ndarray) -> np.ndarray:
        """Catalogue rows of ``items``; -1 for an id not in the catalogue."""
        return self.model.rows(items)

    def session_vector(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray | None:
        """The hidden state after the session's read items (those with a finite rating), or None for a
        session with none (ranked as ``empty`` says)."""
        read = np.asarray(items, np.int64)[np.isfinite(np.asarray(ratings, np.float64))]
        if len(read) == 0:
            return None
        return self.model.session(read).hidden

    def scores(self, w: np.ndarray | None) -> np.ndarray:
        if w is None:
            return self._empty_scores
        return self.model.logits(torch.from_numpy(np.asarray(w, np.float32))).detach().numpy()

    def recommend(self, w: np.ndarray | None, k: int, exclude: Iterable[Any] | np.ndarray = ()) -> list[int]:
        """The ``k`` best items (ids, best first) for session vector ``w`` (None: an empty session),
        leaving out ``exclude``."""
        with torch.no_grad():
            return self.model.top(self.scores(w), k, exclude)

    # -- storage ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's tensors plus ``popularity``, ``rating_range`` and ``empty_start``: the version's
        weights.safetensors."""
        return {
            **{k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "popularity": torch.from_numpy(self.popularity.astype(np.float32)),
            "rating_range": torch.tensor(self.rating_range, dtype=torch.float32),
            "empty_start": torch.tensor([float(self.empty == "start")]),
        }

    @classmethod
    def from_state_dict(
        cls, version: str, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]
    ) -> SessionSnapshot:
        """A snapshot of ``state`` with the model settings ``config`` (``SessionRecommender.config``)."""
        missing = [key for key in ("item_ids", *WEIGHTS, *EXTRA) if key not in state]
        if missing:
            raise ValueError(
                f"version {version} holds no session model: tensors {missing} are missing "
                f"(it has {sorted(state)})"
            )
        settings = {
            k: config[k] for k in ("dim", "max_len", "dropout", "lr", "weight_decay", "seed") if k in config
        }
        model = SessionRecommender.from_state_dict(
            {k: v for k, v in state.items() if k not in (*EXTRA, "empty_start")}, **settings
        )
        low, high = state["rating_range"].tolist()
        start = "empty_start" in state and bool(state["empty_start"].reshape(-1)[0] > 0.5)
        return cls(
            version, model, state["popularity"].numpy(), (low, high), "start" if start else "popularity"
        )

    @classmethod
    def from_registry(cls, registry: Registry, version: str) -> SessionSnapshot:
        """Load ``version``; refused if it was not stored as a session model."""
        config = registry.get(version).config.get("recommender")
        if not isinstance(config, Mapping) or config.get("ranker") != RANKER:
            raise ValueError(
                f"version {version} is not a session model (config recommender.ranker != {RANKER!r})"
            )
        model_config = config.get("model")
        if not isinstance(model_config, Mapping):
            raise ValueError(f"version {version}'s config has no recommender.model settings")
        return cls.from_state_dict(version, registry.load_weights(version), model_config)


def is_session_version(config: Mapping[str, Any]) -> bool:
    """Whether a version's config marks a session model (rather than matrix factorisation)."""
    recommender = config.get("recommender")
    return isinstance(recommender, Mapping) and recommender.get("ranker") == RANKER
