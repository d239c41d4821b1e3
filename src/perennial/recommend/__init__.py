"""Recommendations that adapt inside a session: a two-speed recommender on a ratings stream
(docs/recommend.md).

- ``ContinualRecommender`` (``perennial.recommend.continual``): the global model, updated window by
  window with replay, each update a registry version behind an HR@10 gate;
- ``Recommender`` (``perennial.recommend.model``): one version as served, and the exact in-session
  update of a user vector (ridge regression centred on the population prior);
- ``SessionStore`` (``perennial.recommend.sessions``): live sessions with a time-to-live, an LRU
  bound and per-unit rate limits;
- ``LiveRecommender`` (``perennial.recommend.live``): rank and feedback per unit, as the server runs them;
- ``SessionRecommender`` (``perennial.recommend.session_model``): a GRU over a session's items that
  ranks the catalogue for the next one, trained window by window by ``SessionLearner``;
- ``SessionUpdater`` (``perennial.recommend.session_continual``): the session model's versions behind a
  paired NDCG@10 gate on held-out sessions, resumable from its registry; ``SessionSnapshot``
  (``perennial.recommend.session_snapshot``): one version as the server runs it;
- ``perennial.recommend.cold_start``: replaying held-out users as cold users, and interleaving.
"""

from perennial.recommend.cold_start import ColdStartReport, ColdUser, cold_users, interleave_user, replay_user
from perennial.recommend.continual import ContinualRecommender, RatingsReservoir, UpdateOutcome
from perennial.recommend.live import BadFeedback, LiveRecommender, ServedRecommender
from perennial.recommend.model import Recommender
from perennial.recommend.session_continual import SessionOutcome, SessionUpdater
from perennial.recommend.session_model import SessionLearner, SessionRecommender, SessionState, SessionUpdate
from perennial.recommend.session_snapshot import SessionSnapshot
from perennial.recommend.sessions import (
    RateLimited,
    Session,
    SessionError,
    SessionExpired,
    SessionStore,
    UnknownSession,
)

__all__ = [
    "BadFeedback",
    "ColdStartReport",
    "ColdUser",
    "ContinualRecommender",
    "LiveRecommender",
    "RateLimited",
    "RatingsReservoir",
    "Recommender",
    "ServedRecommender",
    "Session",
    "SessionError",
    "SessionExpired",
    "SessionLearner",
    "SessionOutcome",
    "SessionRecommender",
    "SessionSnapshot",
    "SessionState",
    "SessionStore",
    "SessionUpdate",
    "SessionUpdater",
    "UnknownSession",
    "UpdateOutcome",
    "cold_users",
    "interleave_user",
    "replay_user",
]
