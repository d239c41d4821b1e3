"""Serving a registry over HTTP: predictions from the champion or a live rollout's arm, a durable
request and feedback log, and hot swaps. ``perennial-serve serve.registry=PATH`` runs it; docs/serve.md.

- ``create_app`` / ``ModelServer`` / ``ServeSettings`` (``perennial.serve.app``): the FastAPI app;
- ``RequestLog`` / ``analyze`` / ``read_interactions`` (``perennial.serve.log``): the group-committed
  SQLite log, its analysis, and the recommender's logged interactions (the next window's training data);
- ``ModelStore`` / ``Deployment`` (``perennial.serve.models``): versions, and what serves now;
- ``perennial.serve.rollouts``: the registry's live rollouts, advanced from the log by any replica.

FastAPI is imported only when an app is built, so importing this package stays cheap.
"""

from perennial.serve.app import ModelServer, ServeSettings, create_app
from perennial.serve.log import RequestLog, analyze, read_interactions
from perennial.serve.models import Deployment, ModelStore

__all__ = [
    "Deployment",
    "ModelServer",
    "ModelStore",
    "RequestLog",
    "ServeSettings",
    "analyze",
    "create_app",
    "read_interactions",
]
