"""The server's recommender mode (``serve.mode=recommender``): the registry's champion is a recommender
version (``perennial.recommend``), ``POST /rank`` ranks the catalogue for a unit's session and
``POST /feedback`` updates that session at once, so the unit's next ``/rank`` reflects it. The
champion is either kind of version, told apart by its stored config: matrix factorisation
(:class:`~perennial.recommend.Recommender`) or the session model
(:class:`~perennial.recommend.session_snapshot.SessionSnapshot`).

Sessions live in the server's memory only (bounded, with a time-to-live); they are never written
into the global model, which changes only through a gated registry version and ``POST /reload``.
Every accepted feedback is logged durably (the ``interactions`` table of the request log): the
training data of the next version. See docs/serve.md.
"""

import logging
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
from perennial.recommend.live import ServedRecommender
from perennial.recommend.session_snapshot import SessionSnapshot, is_session_version
from perennial.registry import Registry
from perennial.serve.app import ServeError, ServeSettings
from perennial.serve.log import RequestLog
from perennial.serve.metrics import Metrics

log = logging.getLogger("perennial.serve")
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
        self.log = RequestLog(
            settings.log or self.registry_path / "serve-log.sqlite",
            max_queue=settings.log_queue,
            synchronous=settings.log_synchronous,
        )
        self.metrics = Metrics()
        self.feedback_total = 0
        self.logged = 0
        self.reloads = 0
        m = self.metrics
        m.watch("session_feedback", "counter", "Feedback recorded into sessions", lambda: self.feedback_total)
        m.watch("interactions_logged", "counter", "Feedback committed to the log", lambda: self.logged)
        m.watch("log_commits", "counter", "Group commits of the request log", lambda: self.log.groups)
        m.watch("sessions_live", "gauge", "Live sessions", lambda: store.stats()["live"])
        for name, help_text in SESSION_COUNTS.items():
            m.watch(f"sessions_{name}", "counter", help_text, lambda name=name: store.stats()[name])
        self._admin = threading.Lock()
        self._count = threading.Lock()
        # Follow the registry: a version the updater promotes serves within poll_s, no /reload needed.
        self.follow_note: str | None = None  # why the registry's champion is not served, if it is not
        self._refused: str | None = None  # a champion that failed to load: not retried every poll
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        if settings.follow:
            if not settings.poll_s > 0:
                raise ValueError(f"serve.poll_s must be a number of seconds > 0, got {settings.poll_s!r}")
            self._follower = threading.Thread(target=self._follow_loop, name="follow-registry", daemon=True)
            self._follower.start()

    def _champion(self) -> ServedRecommender:
        """The registry's champion, built as the kind its config names."""
        # Read-only: a server never changes the registry it serves.
        with Registry(self.registry_path, create=False, readonly=True) as registry:
            champion = registry.champion()
            if champion is None:
                raise ValueError(
                    f"the registry {self.registry_path} has no champion to serve; promote a version first"
                )
            registry.verify(champion)  # checksums and finite weights (CorruptVersion, a ValueError)
            if not is_session_version(registry.get(champion).config):
                return Recommender.from_registry(registry, champion)
            try:
                return SessionSnapshot.from_registry(registry, champion)
            except (RuntimeError, TypeError) as err:  # torch's shape mismatch, a setting of the wrong type
                raise ValueError(f"version {champion} cannot be loaded as a session model: {err}") from None

    def close(self) -> None:
        """Stop following and commit what the log holds; sessions are in memory by design and go with
        the process."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join()
        self.log.close()

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
        # Answered only once on disk: what a unit was told is recorded is in the next window's data.
        self.log.write_interaction(unit, item, answer["version"], rating=rating, click=click)
        with self._count:
            self.logged += 1
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

    def poll_registry(self) -> None:
        """One poll of the follower: serve the registry's champion if another process changed it. A
        champion that cannot be served, or a registry that cannot be read, is said in ``/status`` and
        logged, never raised: what is loaded goes on serving."""
        wanted = None
        try:
            with Registry(self.registry_path, create=False, readonly=True) as registry:
                wanted = registry.champion()
            if wanted is None or wanted == self._refused:
                return
            self._refused = None  # the registry moved on: a later return of a refused one is tried again
            if wanted != self.live.model.version:
                self.reload()
            self.follow_note = None
        except ServeError as err:
            self._refused = wanted
            self.follow_note = f"the registry's champion is {wanted}, which is refused: {err}"
            log.error("%s", self.follow_note)
        except Exception as err:  # deleted, damaged or locked past the busy timeout
            self.follow_note = f"cannot read the registry: {type(err).__name__}: {err}"
            log.error("%s", self.follow_note)

    def _follow_loop(self) -> None:
        while not self._stop.wait(self.settings.poll_s):
            self.poll_registry()

    # ---- reporting --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        model = self.live.model
        s = self.settings
        session = isinstance(model, SessionSnapshot)
        return {
            "mode": "recommender",
            "version": model.version,
            "ranker": "session" if session else "matrix_factorization",
            "catalogue": len(model),
            # A session model's hidden state; a factorisation's embedding (its vectors add a bias).
            "dim": model.dim if session else model.dim - 1,
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
            "follow": self.settings.follow,
            "note": self.follow_note,
            "log": str(self.log.path),
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
