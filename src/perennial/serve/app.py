"""The HTTP server: ``create_app(ServeSettings(...))`` builds a FastAPI app that answers predictions
from a registry's champion (or the live rollout's arm), logs every request before answering, joins
feedback, runs shadow, A/B and canary rollouts, and swaps models under load without dropping requests.

Endpoints: ``POST /predict``, ``POST /rank``, ``POST /feedback``, ``GET /status``, ``GET /metrics``
and the admin ``POST /rollout``, ``POST /promote``, ``POST /rollback`` (bearer token). See docs/serve.md.
"""

import hmac
import json
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perennial.registry.store import UnknownVersion
from perennial.serve.batching import MicroBatcher
from perennial.serve.log import RequestLog, Served
from perennial.serve.models import Deployment, FallbackBuilder, LoadedModel, ModelStore, make_rollout

TOKEN_ENV = "PERENNIAL_SERVE_TOKEN"
BATCHING = ("auto", "on", "off")
MODES = ("classifier", "recommender")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class ServeSettings:
    """How the server runs; the Hydra app fills it from conf/serve.yaml."""

    registry: str | Path
    log: str | Path | None = None  # default: <registry>/serve-log.sqlite
    token: str | None = None  # admin token; default: $PERENNIAL_SERVE_TOKEN; none: admin refused
    max_body_bytes: int = 1 << 20
    max_rows: int = 1024
    device: str = "cpu"  # where the models run: cpu, cuda, cuda:N, or auto (cuda when there is one)
    batching: str = "auto"  # on: concurrent requests share forward passes; off; auto: on for CUDA only
    max_batch_rows: int = 256
    log_queue: int = 10_000
    log_synchronous: str = "NORMAL"
    shadow_queue: int = 10_000
    fallback: FallbackBuilder | None = None  # builds versions stored without data/model configs
    # classifier: /predict and /rank of a classifier; recommender: sessions over a recommender version
    mode: str = "classifier"
    # Recommender mode's sessions (perennial.recommend): how many live at once (least recently used
    # evicted), their time-to-live, the interactions each keeps, and each unit's feedback rate limit.
    max_sessions: int = 100_000
    session_ttl_s: float = 1800.0
    session_interactions: int = 200
    feedback_rate: float = 5.0  # per second, per unit
    feedback_burst: float = 20.0
    click_rating: float = 4.0  # the rating a click stands for
    max_k: int = 1000

    def admin_token(self) -> str | None:
        return self.token or os.environ.get(TOKEN_ENV) or None


class ServeError(Exception):
    """A request the server refuses: an HTTP status and a message that names the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Metrics:
    """Counters and a latency histogram, written out in Prometheus' text format."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)
        self.labelled: dict[str, int] = defaultdict(int)
        self.correct: dict[str, int] = defaultdict(int)
        self.feedback = 0
        self.errors: dict[int, int] = defaultdict(int)
        self.shadow_dropped = 0
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_count, self.latency_sum = 0, 0.0

    def served(self, arm: str, rows: int, seconds: float) -> None:
        with self.lock:
            self.requests[arm] += 1
            self.rows[arm] += rows
            self.latency_count += 1
            self.latency_sum += seconds
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1

    def labelled_feedback(self, arm: str, rows: int, correct: int) -> None:
        with self.lock:
            self.feedback += 1
            self.labelled[arm] += rows
            self.correct[arm] += correct

    def error(self, status: int) -> None:
        with self.lock:
            self.errors[status] += 1

    def text(self, extra: dict[str, float]) -> str:
        p = "perennial_serve"
        with self.lock:
            lines = [f"# TYPE {p}_requests_total counter"]
            lines += [f'{p}_requests_total{{arm="{a}"}} {n}' for a, n in sorted(self.requests.items())]
            lines.append(f"# TYPE {p}_rows_total counter")
            lines += [f'{p}_rows_total{{arm="{a}"}} {n}' for a, n in sorted(self.rows.items())]
            lines += [f"# TYPE {p}_feedback_total counter", f"{p}_feedback_total {self.feedback}"]
            lines.append(f"# TYPE {p}_feedback_rows_total counter")
            lines += [f'{p}_feedback_rows_total{{arm="{a}"}} {n}' for a, n in sorted(self.labelled.items())]
            lines.append(f"# TYPE {p}_accuracy gauge")
            lines += [
                f'{p}_accuracy{{arm="{a}"}} {self.correct[a] / n:.6g}'
                for a, n in sorted(self.labelled.items())
            ]
            lines.append(f"# TYPE {p}_errors_total counter")
            lines += [f'{p}_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())]
            lines += [
                f"# TYPE {p}_shadow_dropped_total counter",
                f"{p}_shadow_dropped_total {self.shadow_dropped}",
            ]
            lines.append(f"# TYPE {p}_latency_seconds histogram")
            lines += [
                f'{p}_latency_seconds_bucket{{le="{b}"}} {n}'
                for b, n in zip(LATENCY_BUCKETS, self.buckets, strict=True)
            ]
            lines += [
                f'{p}_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                f"{p}_latency_seconds_sum {self.latency_sum:.6f}",
                f"{p}_latency_seconds_count {self.latency_count}",
            ]
        for name, value in extra.items():
            lines += [f"# TYPE {p}_{name} gauge", f"{p}_{name} {value}"]
        return "\n".join(lines) + "\n"


class ShadowWorker:
    """Predicts with the shadow models off the request path and logs their answers.

    Its queue is bounded: when full, a request's shadow prediction is dropped (and counted), never waited for.
    """

    def __init__(self, log: RequestLog, metrics: Metrics, max_queue: int, linger: float = 0.05) -> None:
        self.log, self.metrics, self.linger = log, metrics, linger
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._pending: set[str] = set()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
        self._thread.start()

    def submit(self, request_id: str, models: list[LoadedModel], x: np.ndarray) -> None:
        with self._done:
            self._pending.add(request_id)
        try:
            self._queue.put_nowait((request_id, models, x))
        except queue.Full:
            with self._done:
                self._pending.discard(request_id)
            with self.metrics.lock:
                self.metrics.shadow_dropped += 1

    def wait(self, request_id: str, timeout: float = 10.0) -> None:
        """Until the shadow answers for ``request_id`` are logged (or were never asked for)."""
        with self._done:
            self._done.wait_for(lambda: request_id not in self._pending, timeout)

    def _work(self) -> None:
        stop = False
        while not stop:
            jobs = [self._queue.get()]
            # Nobody waits for a shadow answer, so let requests gather: one forward pass and one log
            # commit per ``linger`` seconds, not per request, which would compete with the requests'
            # own commits in the log writer.
            time.sleep(self.linger)
            while len(jobs) < 1024:  # what queued up meanwhile goes through the model in one batch
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if None in jobs:
                stop = True
                jobs = [j for j in jobs if j is not None]
            try:
                rows = []
                by_model: dict[str, tuple[LoadedModel, list]] = {}
                for request_id, models, x in jobs:
                    for model in models:
                        by_model.setdefault(model.version, (model, []))[1].append((request_id, x))
                for model, batch in by_model.values():
                    start = time.perf_counter()
                    predictions, _ = model.predict(np.concatenate([x for _, x in batch]))
                    ms = 1e3 * (time.perf_counter() - start) / len(batch)
                    cuts = np.cumsum([len(x) for _, x in batch])[:-1]
                    for (request_id, _), p in zip(batch, np.split(predictions, cuts), strict=True):
                        rows.append((request_id, model.version, p.tolist(), ms))
                if rows:
                    self.log.write_shadows(rows)
            except Exception:  # a failed shadow must never take the server down; its pair is just missing
                pass
            finally:
                with self._done:
                    for job in jobs:
                        self._pending.discard(job[0])
                    self._done.notify_all()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class ModelServer:
    """The server's state and actions, independent of HTTP: the app's endpoints call these."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        if settings.mode != "classifier":
            raise ValueError(
                f"ModelServer serves serve.mode=classifier, got {settings.mode!r}; "
                "build the app with create_app, which picks the server for the mode"
            )
        self.device = _device(settings.device)
        if settings.batching not in BATCHING:
            raise ValueError(f"serve.batching must be one of {list(BATCHING)}, got {settings.batching!r}")
        self.batching = settings.batching == "on" or (settings.batching == "auto" and self.device != "cpu")
        self.store = ModelStore(settings.registry, settings.fallback, device=self.device)
        with self.store.registry() as registry:
            champion = registry.champion()
            if champion is not None and "recommender" in registry.get(champion).config:
                raise ValueError(
                    f"the champion {champion} of {settings.registry} is a recommender: "
                    "serve it with serve.mode=recommender"
                )
        if champion is None:
            raise ValueError(
                f"the registry {settings.registry} has no champion to serve; promote a version first"
            )
        self.log = RequestLog(
            settings.log or Path(settings.registry) / "serve-log.sqlite",
            max_queue=settings.log_queue,
            synchronous=settings.log_synchronous,
        )
        self.metrics = Metrics()
        self.shadow = ShadowWorker(self.log, self.metrics, settings.shadow_queue)
        self.batcher = MicroBatcher(settings.max_batch_rows)
        self._admin = threading.Lock()  # one change of what serves at a time
        self.deployment = Deployment(self.store.load(champion))
        self.swaps = 0

    def close(self) -> None:
        self.batcher.close()
        self.shadow.close()
        self.log.close()

    # ---- requests ---------------------------------------------------------------------------------
    async def predict(self, unit: str, rows: list[list[float]]) -> dict[str, Any]:
        start = time.perf_counter()
        deployment = self.deployment  # this request's models, whatever swaps meanwhile
        arm = deployment.route(unit)
        model = deployment.model(arm)
        x = _features(rows, model)
        if self.batching:
            predictions, probabilities = await self.batcher.predict(model, x)
        else:
            predictions, probabilities = model.predict(x)
        request_id = uuid.uuid4().hex
        if deployment.rollout is not None and deployment.rollout.shadows:
            self.shadow.submit(request_id, [deployment.candidate], x)
        served = Served(
            request_id,
            unit,
            arm,
            model.version,
            deployment.champion.version,
            deployment.rollout_id,
            predictions.tolist(),
            1e3 * (time.perf_counter() - start),
        )
        await self.log.log_request(served)  # answered only once its row is committed
        self.metrics.served(arm, len(x), time.perf_counter() - start)
        return {
            "request_id": request_id,
            "arm": arm,
            "version": model.version,
            "predictions": served.predictions,
            "probabilities": probabilities.tolist(),
        }

    async def rank(self, unit: str, row: list[float], k: int) -> dict[str, Any]:
        """The top ``k`` classes for one row, best first; during an interleave rollout, a team-draft
        mix of the champion's and the candidate's, with the version that placed each position."""
        start = time.perf_counter()
        deployment = self.deployment
        rollout = deployment.rollout
        interleaving = rollout is not None and rollout.kind == "interleave"
        arm = deployment.route(unit)
        models = [deployment.champion, deployment.candidate] if interleaving else [deployment.model(arm)]
        x = _features([row], models[0])
        n_classes = None
        rankings = []
        for model in models:
            _, probabilities = model.predict(x)
            n_classes = probabilities.shape[1]
            if k > n_classes:
                raise ServeError(422, f"k={k}, but version {model.version} ranks only {n_classes} classes")
            rankings.append(np.argsort(-probabilities[0], kind="stable")[:k].tolist())
        request_id = uuid.uuid4().hex
        if interleaving:
            shown = rollout.interleave(request_id, *rankings)
            ranking = list(shown.shown)
            teams = [deployment.champion.version if t == "a" else rollout.candidate for t in shown.teams]
            arm = teams[0]
        else:
            ranking, teams = rankings[0], [arm] * k
        served = Served(
            request_id,
            unit,
            arm,
            deployment.model(arm).version,
            deployment.champion.version,
            deployment.rollout_id,
            ranking,
            1e3 * (time.perf_counter() - start),
            teams=teams,
        )
        await self.log.log_request(served)
        self.metrics.served(arm, 1, time.perf_counter() - start)
        version = served.version
        return {"request_id": request_id, "arm": arm, "version": version, "ranking": ranking, "teams": teams}

    def clicks(self, request_id: str, positions: list[int]) -> dict[str, Any]:
        """Clicked positions of a ranking served by ``/rank``; an empty list: seen, nothing clicked."""
        row = self._unanswered(request_id)
        if row["teams"] is None:
            raise ServeError(
                422, f"request_id {request_id!r} was a /predict request: send labels, not clicks"
            )
        shown = len(row["predictions"])
        bad = [p for p in positions if not 0 <= p < shown]
        if bad or len(set(positions)) != len(positions):
            raise ServeError(
                422, f"clicks must be distinct positions in 0..{shown - 1} of the ranking, got {positions}"
            )
        self._write_feedback(request_id, positions)
        out: dict[str, Any] = {"request_id": request_id, "arm": row["arm"], "clicks": len(positions)}
        deployment = self.deployment
        rollout = deployment.rollout
        if rollout is not None and rollout.kind == "interleave" and row["rollout"] == deployment.rollout_id:
            out["rollout"] = rollout.clicks(row["teams"], positions)
        return out

    def _unanswered(self, request_id: str) -> dict[str, Any]:
        row = self.log.request(request_id)
        if row is None:
            raise ServeError(404, f"unknown request_id {request_id!r}: no such request in the log")
        if row["has_feedback"]:
            raise ServeError(409, f"feedback for request_id {request_id!r} was already recorded")
        return row

    def _write_feedback(self, request_id: str, values: list[int]) -> None:
        try:
            self.log.write_feedback(request_id, values)
        except sqlite3.IntegrityError:
            raise ServeError(409, f"feedback for request_id {request_id!r} was already recorded") from None

    def feedback(self, request_id: str, labels: list[int]) -> dict[str, Any]:
        row = self._unanswered(request_id)
        if row["teams"] is not None:
            raise ServeError(
                422, f"request_id {request_id!r} was a /rank request: send clicks (positions), not labels"
            )
        served = row["predictions"]
        if len(labels) != len(served):
            raise ServeError(
                422, f"{len(labels)} label(s) for request_id {request_id!r}, which had {len(served)} row(s)"
            )
        self._write_feedback(request_id, labels)
        correct = int((np.asarray(served) == np.asarray(labels)).sum())
        self.metrics.labelled_feedback(row["arm"], len(labels), correct)
        out: dict[str, Any] = {"request_id": request_id, "arm": row["arm"], "correct": correct}
        deployment = self.deployment
        rollout = deployment.rollout
        if rollout is not None and row["rollout"] == deployment.rollout_id:
            theirs = None
            if rollout.shadows:
                self.shadow.wait(request_id)
                theirs = (self.log.request(request_id) or {}).get("shadow", {}).get(rollout.candidate)
            outcome = rollout.feedback(row["arm"], served, labels, theirs)
            out["rollout"] = outcome
            if rollout.kind == "canary" and outcome != "continue":
                self._finish_canary(deployment, outcome)
        return out

    def _finish_canary(self, deployment: Deployment, outcome: str) -> None:
        """A canary that completed is promoted; one that tripped its guard is rolled back."""
        rollout = deployment.rollout
        with self._admin:
            if self.deployment is not deployment:  # another request or an admin got here first
                return
            summary = rollout.summary()
            reason = f"canary {outcome}: p={summary.get('p_value')}"
            if outcome == "promote":
                with self.store.registry() as registry:
                    registry.promote(rollout.candidate, reason=reason)
                    registry.record_decision(rollout.candidate, None, "promoted", {"reason": reason})
                self._swap(Deployment(deployment.candidate), "promoted")
            else:
                with self.store.registry() as registry:
                    if registry.get(rollout.candidate).status != "champion":
                        registry.reject(rollout.candidate)
                    registry.record_decision(rollout.candidate, None, "rejected", {"reason": reason})
                self._swap(Deployment(deployment.champion), "rolled_back")

    def _swap(self, new: Deployment, outcome: str) -> None:
        """Replace what serves; called under the admin lock with every model of ``new`` loaded."""
        old = self.deployment
        if old.rollout_id is not None:
            self.log.end_rollout(old.rollout_id, outcome)
        self.deployment = new
        self.swaps += 1

    # ---- admin ------------------------------------------------------------------------------------
    def start_rollout(self, kind: str, candidate: str | None, settings: dict[str, Any]) -> dict[str, Any]:
        with self._admin:
            current = self.deployment
            if kind == "none":
                if current.rollout is None:
                    raise ServeError(409, "no rollout is running")
                self._swap(Deployment(current.champion), "stopped")
                return self.status()
            if current.rollout is not None:
                raise ServeError(
                    409,
                    f"a {current.rollout.kind} rollout of {current.rollout.candidate} is running; "
                    'stop it first with {"kind": "none"}, or promote or roll back',
                )
            if not candidate:
                raise ServeError(422, "rollout needs a candidate version")
            champion = current.champion.version
            try:
                rollout = make_rollout(kind, champion, candidate, settings)
            except ValueError as err:
                raise ServeError(422, str(err)) from None
            loaded = self._load(candidate)
            if loaded.feature_shape != current.champion.feature_shape:
                raise ServeError(
                    422,
                    f"candidate {candidate} takes features of shape {loaded.feature_shape}, "
                    f"the champion {champion} {current.champion.feature_shape}",
                )
            rollout_id = self.log.start_rollout(kind, champion, candidate, rollout.settings)
            self._swap(Deployment(current.champion, rollout, loaded, rollout_id), "")
            return self.status()

    def promote(self, version: str, reason: str = "", override: bool = False) -> dict[str, Any]:
        with self._admin:
            loaded = self._load(version)  # fully loaded before anything changes
            with self.store.registry() as registry:
                try:
                    previous = registry.promote(
                        version, reason=reason or "promoted by hand", override=override
                    )
                except ValueError as err:
                    raise ServeError(409, str(err)) from None
            self._swap(Deployment(loaded), f"ended by promotion of {version}")
            return {"champion": version, "previous": previous}

    def rollback(self, reason: str = "") -> dict[str, Any]:
        with self._admin:
            with self.store.registry() as registry:
                demoted = registry.champion()
                try:
                    restored = registry.rollback(reason or "rolled back by hand")
                except ValueError as err:
                    raise ServeError(409, str(err)) from None
            loaded = self._load(restored)
            self._swap(Deployment(loaded), "ended by rollback")
            return {"champion": restored, "rolled_back": demoted}

    def _load(self, version: str) -> LoadedModel:
        try:
            return self.store.load(version)
        except UnknownVersion as err:
            raise ServeError(404, str(err)) from None

    # ---- reporting --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        deployment = self.deployment
        with self.store.registry() as registry:
            versions = [{"id": r.id, "status": r.status, "kind": r.kind} for r in registry.versions()]
        rollout = deployment.rollout
        out: dict[str, Any] = {
            "champion": deployment.champion.version,
            "versions": versions,
            "arms": [deployment.champion.version] + ([rollout.candidate] if rollout else []),
            "shares": rollout.shares() if rollout else {deployment.champion.version: 1.0},
            "rollout": None,
            "swaps": self.swaps,
            "device": self.device,
            "batching": self.batching,
            "log": str(self.log.path),
        }
        if rollout is not None:
            out["rollout"] = {
                "id": deployment.rollout_id,
                "kind": rollout.kind,
                "candidate": rollout.candidate,
                "settings": rollout.settings,
                **rollout.summary(),
            }
        return out

    def metrics_text(self) -> str:
        batcher = self.batcher
        extra = {"swaps": self.swaps, "log_commits": self.log.groups, "forward_passes": batcher.batches}
        return self.metrics.text({**extra, "batched_rows": batcher.rows})


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"serve.device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"serve.device={name}, but torch sees no CUDA device here; use cpu or auto")
    return name


def _features(rows: list[list[float]], model: LoadedModel) -> np.ndarray:
    n = model.n_features
    bad = [i for i, row in enumerate(rows) if len(row) != n]
    if bad:
        raise ServeError(
            422,
            f"row {bad[0]} has {len(rows[bad[0]])} feature(s); version {model.version} takes {n}",
        )
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
        x = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(x).all():  # e.g. 1e999 parses to inf, and float32 overflows past 3.4e38
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise ServeError(422, f"row {row}, feature {col} is not a finite float32 number")
    return x.reshape(len(rows), *model.feature_shape)


# ---- HTTP -----------------------------------------------------------------------------------------
class _NonFinite(ValueError):
    """A NaN or Infinity literal, which Python's json module accepts and JSON does not."""


def _reject_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not allowed: every value must be a finite number")


async def _json_body(request: Any, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ServeError(413, f"request body is over the limit of {limit} bytes")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except _NonFinite as err:
        raise ServeError(422, str(err)) from None
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise ServeError(400, f"malformed JSON: {err}") from None


async def parse_body(request: Any, model: Any, limit: int) -> Any:
    """The request's JSON body (at most ``limit`` bytes) validated as the pydantic ``model``; a 422
    naming what is wrong otherwise."""
    from pydantic import ValidationError

    body = await _json_body(request, limit)
    if not isinstance(body, dict):
        raise ServeError(422, f"the body must be a JSON object, got {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise ServeError(422, _validation_message(err)) from None


def _validation_message(err: Any) -> str:
    parts = []
    for e in err.errors()[:3]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def authorize(request: Any, settings: ServeSettings) -> None:
    """Refuse an admin request without the right bearer token (or when no token is configured)."""
    token = settings.admin_token()
    if token is None:
        raise ServeError(
            403, f"admin endpoints are disabled: start the server with serve.token or ${TOKEN_ENV}"
        )
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise ServeError(401, "admin endpoints need the header 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode()):
        raise ServeError(403, "wrong admin token")


def create_app(settings: Any):
    """The FastAPI app over a ``ModelServer`` (built from ``settings`` if given settings); with
    ``settings.mode == "recommender"`` (or a ``RecommenderServer``), the recommender's app instead."""
    if isinstance(settings, ServeSettings) and settings.mode not in MODES:
        raise ValueError(f"serve.mode must be one of {list(MODES)}, got {settings.mode!r}")
    if not isinstance(settings, ModelServer) and (
        not isinstance(settings, ServeSettings) or settings.mode == "recommender"
    ):
        from perennial.serve.recommend import create_recommender_app

        return create_recommender_app(settings)
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
    from starlette.concurrency import run_in_threadpool

    server = settings if isinstance(settings, ModelServer) else ModelServer(settings)
    limit = server.settings.max_body_bytes
    max_rows = server.settings.max_rows

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    class PredictRequest(Strict):
        unit: StrictStr | StrictInt
        features: list[float] | None = None
        rows: list[list[float]] | None = Field(default=None, min_length=1, max_length=max_rows)

    class RankRequest(Strict):
        unit: StrictStr | StrictInt
        features: list[float]
        k: StrictInt = Field(default=3, ge=1)

    class FeedbackRequest(Strict):
        request_id: StrictStr
        label: StrictInt | None = Field(default=None, ge=0)
        labels: list[StrictInt] | None = Field(default=None, min_length=1)
        clicks: list[StrictInt] | None = None

    class RolloutRequest(Strict):
        kind: StrictStr
        candidate: StrictStr | None = None
        settings: dict[str, Any] = Field(default_factory=dict)

    class PromoteRequest(Strict):
        version: StrictStr
        reason: StrictStr = ""
        override: bool = False

    class RollbackRequest(Strict):
        reason: StrictStr = ""

    async def parse(request: Request, model: type[BaseModel]) -> BaseModel:
        return await parse_body(request, model, limit)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.close()

    app = FastAPI(title="perennial-serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ServeError)
    async def refuse(request: Request, err: ServeError) -> JSONResponse:
        server.metrics.error(err.status)
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        body = await parse(request, PredictRequest)
        if (body.features is None) == (body.rows is None):
            raise ServeError(422, "give exactly one of 'features' (one row) or 'rows' (a batch)")
        rows = [body.features] if body.features is not None else body.rows
        return await server.predict(str(body.unit), rows)

    @app.post("/rank")
    async def rank(request: Request) -> dict:
        body = await parse(request, RankRequest)
        return await server.rank(str(body.unit), body.features, body.k)

    @app.post("/feedback")
    async def feedback(request: Request) -> dict:
        body = await parse(request, FeedbackRequest)
        given = [name for name in ("label", "labels", "clicks") if getattr(body, name) is not None]
        if len(given) != 1:
            raise ServeError(
                422, "give exactly one of 'label' (one row), 'labels' (a batch) or 'clicks' (a ranking)"
            )
        if body.clicks is not None:
            return await run_in_threadpool(server.clicks, body.request_id, body.clicks)
        labels = [body.label] if body.label is not None else body.labels
        if any(label < 0 for label in labels):
            raise ServeError(422, f"labels are class ids >= 0, got {labels}")
        return await run_in_threadpool(server.feedback, body.request_id, labels)

    @app.get("/status")
    def status() -> dict:
        return server.status()

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(server.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.post("/rollout")
    async def rollout(request: Request) -> dict:
        authorize(request, server.settings)
        body = await parse(request, RolloutRequest)
        return await run_in_threadpool(server.start_rollout, body.kind, body.candidate, body.settings)

    @app.post("/promote")
    async def promote(request: Request) -> dict:
        authorize(request, server.settings)
        body = await parse(request, PromoteRequest)
        return await run_in_threadpool(server.promote, body.version, body.reason, body.override)

    @app.post("/rollback")
    async def rollback(request: Request) -> dict:
        authorize(request, server.settings)
        body = await parse(request, RollbackRequest)
        return await run_in_threadpool(server.rollback, body.reason)

    @app.exception_handler(UnknownVersion)
    async def unknown_version(request: Request, err: UnknownVersion) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=404)

    return app
