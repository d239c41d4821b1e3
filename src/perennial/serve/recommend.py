"""The server's recommender mode (``serve.mode=recommender``): the registry's champion is a recommender
version (``perennial.recommend``), ``POST /rank`` ranks the catalogue for a unit's session and
``POST /feedback`` updates that session at once, so the unit's next ``/rank`` reflects it.

Sessions live in the server's memory only (bounded, with a time-to-live); they are never written
into the global model, which changes only through a gated registry version and ``POST /reload``.
See docs/serve.md.
"""

import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from perennial.recommend import (
    BadFeedback,
    LiveRecommender,
    RateLimited,
    Recommender,
    SessionExpired,
    SessionStore,
    UnknownSession,
)
from perennial.registry import Registry
from perennial.serve.app import ServeError, ServeSettings
from perennial.serve.metrics import Metrics

# Paths of the classifier mode, answered with a pointer to this mode's endpoints instead of a bare 404.
CLASSIFIER_PATHS = ("/predict", "/rollout", "/promote", "/rollback")
SESSION_COUNTS = {
    "started": "Sessions started",
    "evicted": "Sessions evicted to stay within serve.max_sessions",
    "expired": "Sessions expired after serve.session_ttl_s idle",
    "rate_limited": "Feedback refused over a unit's rate",
}


class RecommenderServer:
    """The recommender mode's state and actions, independent of HTTP: the app's endpoints call these."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.registry_path = Path(settings.registry)
        store = SessionStore(
            max_sessions=settings.max_sessions,
            ttl_s=settings.session_ttl_s,
            rate=settings.feedback_rate,
            burst=settings.feedback_burst,
        )
        self.live = LiveRecommender(
            self._champion(),
            store,
            max_interactions=settings.session_interactions,
            click_rating=settings.click_rating,
            max_k=settings.max_k,
        )
        self.metrics = Metrics()
        self.feedback_total = 0
        self.reloads = 0
        m = self.metrics
        m.watch("session_feedback", "counter", "Feedback recorded into sessions", lambda: self.feedback_total)
        m.watch("sessions_live", "gauge", "Live sessions", lambda: store.stats()["live"])
        for name, help_text in SESSION_COUNTS.items():
            m.watch(f"sessions_{name}", "counter", help_text, lambda name=name: store.stats()[name])
        self._admin = threading.Lock()
        self._count = threading.Lock()

    def _champion(self) -> Recommender:
        with Registry(self.registry_path, create=False) as registry:
            champion = registry.champion()
            if champion is None:
                raise ValueError(
                    f"the registry {self.registry_path} has no champion to serve; promote a version first"
                )
            return Recommender.from_registry(registry, champion)

    def close(self) -> None:
        """Nothing to flush: sessions are in memory by design."""

    @property
    def store(self) -> SessionStore:
        return self.live.store

    # ---- requests ---------------------------------------------------------------------------------
    def rank(self, unit: str, k: int) -> dict[str, Any]:
        try:
            answer = self.live.rank(unit, k)
        except BadFeedback as err:
            raise ServeError(422, str(err)) from None
        self.metrics.served(answer["version"], 1)
        return answer

    def feedback(self, unit: str, item: int, rating: float | None, click: bool | None) -> dict[str, Any]:
        try:
            answer = self.live.feedback(unit, item, rating=rating, click=click)
        except BadFeedback as err:
            raise ServeError(422, str(err)) from None
        except UnknownSession as err:
            raise ServeError(404, str(err)) from None
        except SessionExpired as err:
            raise ServeError(410, str(err)) from None
        with self._count:
            self.feedback_total += 1
        return answer

    # ---- admin ------------------------------------------------------------------------------------
    def reload(self) -> dict[str, Any]:
        """Serve the registry's champion now (after the gate promoted a new version); sessions refit
        to it when next used."""
        with self._admin:
            previous = self.live.model.version
            try:
                model = self._champion()
            except ValueError as err:
                raise ServeError(409, str(err)) from None
            if model.version != previous:
                self.live.swap(model)
                self.reloads += 1
            return {"version": model.version, "previous": previous}

    # ---- reporting --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        model = self.live.model
        s = self.settings
        return {
            "mode": "recommender",
            "version": model.version,
            "catalogue": len(model),
            "dim": model.dim - 1,
            "sessions": self.store.stats(),
            "settings": {
                "max_sessions": s.max_sessions,
                "session_ttl_s": s.session_ttl_s,
                "session_interactions": s.session_interactions,
                "feedback_rate": s.feedback_rate,
                "feedback_burst": s.feedback_burst,
                "click_rating": s.click_rating,
                "max_k": s.max_k,
            },
            "reloads": self.reloads,
        }

    def metrics_text(self) -> str:
        return self.metrics.text()


def create_recommender_app(settings: ServeSettings | RecommenderServer):
    """The FastAPI app of the recommender mode over a ``RecommenderServer``."""
    from typing import Annotated

    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import Field, StrictInt
    from starlette.concurrency import run_in_threadpool

    from perennial.serve.edge import (
        INT64,
        Strict,
        Unit,
        admin_guard,
        install_handlers,
        parse_body,
        timed_routes,
    )
    from perennial.serve.metrics import CONTENT_TYPE

    server = settings if isinstance(settings, RecommenderServer) else RecommenderServer(settings)
    limit = server.settings.max_body_bytes

    class RankRequest(Strict):
        unit: Unit
        k: StrictInt = Field(default=10, ge=1)

    class FeedbackRequest(Strict):
        unit: Unit
        # Item ids are int64 in the catalogue: a larger one is refused here, not overflowed there.
        item: Annotated[StrictInt, Field(ge=INT64[0], le=INT64[1])]
        rating: float | None = None
        click: bool | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.close()

    app = FastAPI(
        title="perennial-serve (recommender)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.server = server
    app.router.route_class = timed_routes(server.metrics)
    install_handlers(app, server.metrics)

    @app.exception_handler(RateLimited)
    async def limited(request: Request, err: RateLimited) -> JSONResponse:
        server.metrics.error(429)
        retry = max(1, round(err.retry_after_s + 0.5))  # Retry-After takes whole seconds
        return JSONResponse({"error": str(err)}, status_code=429, headers={"Retry-After": str(retry)})

    # Ranking a catalogue and refitting a session are numeric work, and a reload reads weights from
    # disk: all run in worker threads (the session store locks what they share), never on the loop.
    @app.post("/rank")
    async def rank(request: Request) -> dict:
        body = await parse_body(request, RankRequest, limit)
        return await run_in_threadpool(server.rank, str(body.unit), body.k)

    @app.post("/feedback")
    async def feedback(request: Request) -> dict:
        body = await parse_body(request, FeedbackRequest, limit)
        if (body.rating is None) == (body.click is None):
            raise ServeError(422, "give exactly one of 'rating' (a number) or 'click' (true or false)")
        return await run_in_threadpool(server.feedback, str(body.unit), body.item, body.rating, body.click)

    @app.get("/status")
    def status() -> dict:
        return server.status()

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(server.metrics_text(), media_type=CONTENT_TYPE)

    @app.post("/reload", dependencies=[Depends(admin_guard(server.settings))])
    async def reload() -> dict:
        return await run_in_threadpool(server.reload)

    async def classifier_only(request: Request) -> None:
        raise ServeError(
            404,
            f"{request.url.path} is not served in serve.mode=recommender; "
            "this mode answers POST /rank, POST /feedback, GET /status, GET /metrics and POST /reload",
        )

    for path in CLASSIFIER_PATHS:
        app.add_api_route(path, classifier_only, methods=["POST"])

    return app
