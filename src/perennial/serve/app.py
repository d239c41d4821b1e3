"""The HTTP server: ``create_app(ServeSettings(...))`` builds a FastAPI app that answers predictions
from a registry's champion (or the live rollout's arm), logs every request before answering, joins
feedback, runs shadow, A/B and canary rollouts, and swaps models under load without dropping requests.

Endpoints: ``POST /predict``, ``POST /rank``, ``POST /feedback``, ``GET /status``, ``GET /metrics``
and the admin ``POST /rollout``, ``POST /promote``, ``POST /rollback`` (bearer token). See docs/serve.md.
``/predict`` and ``/rank`` take rows as numeric arrays, or as raw named rows (``{"temp": 12.3,
"carrier": "UA"}``) that the version's stored pipeline encodes as its training rows were. A
regression version answers ``/predict`` with a value per row (``values``), takes numbers as
``/feedback`` labels and ranks nothing.
The HTTP edge both modes share (body parsing, auth, error answers) is ``perennial.serve.edge``.
"""

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perennial.data.window import DataError
from perennial.registry import Registry, RegistryIndexError
from perennial.registry.rollouts import RolloutRecord
from perennial.registry.store import UnknownVersion
from perennial.rollout.live import make_rollout
from perennial.serve import rollouts as live
from perennial.serve.batching import MicroBatcher
from perennial.serve.log import RequestLog, Served
from perennial.serve.metrics import Metrics
from perennial.serve.models import (
    Deployment,
    FallbackBuilder,
    LoadedModel,
    ModelStore,
    UnservableVersion,
)

TOKEN_ENV = "PERENNIAL_SERVE_TOKEN"
BATCHING = ("auto", "on", "off")
INLINE_ROWS = 64
# How long /feedback waits to record its label into the running rollout (the registry may be busy
# with the loop's commit): past it the answer says "pending" and a later advance records it.
FEEDBACK_WAIT_S = 0.5  # named rows beyond this are encoded in a worker thread, off the event loop
MODES = ("classifier", "recommender")
# A regressor's label is refused past float32's range, as features are: its squared error must stay
# finite in the rollout's running sums.
MAX_LABEL = float(np.finfo(np.float32).max)
log = logging.getLogger("perennial.serve")


@dataclass
class ServeSettings:
    """How the server runs; the Hydra app fills it from conf/serve.yaml."""

    registry: str | Path
    log: str | Path | None = None  # default: <registry>/serve-log.sqlite
    token: str | None = None  # admin token; default: $PERENNIAL_SERVE_TOKEN; none: admin refused
    max_body_bytes: int = 1 << 20
    max_rows: int = 1024
    # Bytes a number may take in a body: each endpoint's body limit is what a valid request can hold
    # at this many bytes a number (perennial.serve.edge.BodyLimits), at most max_body_bytes.
    body_number_bytes: int = 48
    device: str = "cpu"  # where the models run: cpu, cuda, cuda:N, or auto (cuda when there is one)
    batching: str = "auto"  # on: concurrent requests share forward passes; off; auto: on for CUDA only
    max_batch_rows: int = 256
    log_queue: int = 10_000
    log_synchronous: str = "NORMAL"
    shadow_queue: int = 10_000
    # Follow the registry: every poll_s seconds, serve its champion if another process changed it.
    follow: bool = True
    poll_s: float = 1.0
    fallback: FallbackBuilder | None = None  # rebuilds versions stored without a pipeline extra
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
    max_k: int = 1000  # the longest ranking /rank gives (classes in classifier mode, items in recommender)

    def admin_token(self) -> str | None:
        return self.token or os.environ.get(TOKEN_ENV) or None


class ServeError(Exception):
    """A request the server refuses: an HTTP status and a message that names the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


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
            self.metrics.shadow_dropped.inc()

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
                        if not np.isfinite(p).all():  # a regressor's NaN: no pair, as a lost answer
                            self.metrics.shadow_errors.inc()
                            continue
                        rows.append((request_id, model.version, p.tolist(), ms))
                if rows:
                    self.log.write_shadows(rows)
            except Exception:  # a failed shadow must never take the server down; its pair is just missing
                self.metrics.shadow_errors.inc()
                log.exception(
                    "a shadow batch of %d request(s) failed; their shadow answers are missing",
                    len(jobs),
                )
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
        if settings.follow and not settings.poll_s > 0:
            raise ValueError(f"serve.poll_s must be a number of seconds > 0, got {settings.poll_s!r}")
        self.store = ModelStore(settings.registry, settings.fallback, device=self.device)
        with self.store.reader() as registry:
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
        self._follow_note: str | None = None  # why the registry's champion is not served, if it is not
        self._follow_refused: str | None = None  # a champion that failed to load: not retried every poll
        self._stop_following = threading.Event()
        self._follower: threading.Thread | None = None
        if settings.follow:
            self._follower = threading.Thread(target=self._follow_loop, name="follow-registry", daemon=True)
            self._follower.start()
        batcher, m = self.batcher, self.metrics
        m.watch("swaps", "counter", "Changes of what serves (rollouts, promotions)", lambda: self.swaps)
        m.watch("log_commits", "counter", "Group commits of the request log", lambda: self.log.groups)
        m.watch("forward_passes", "counter", "Micro-batched forward passes", lambda: batcher.batches)
        m.watch("batched_rows", "counter", "Rows through micro-batched forward passes", lambda: batcher.rows)

    def close(self) -> None:
        self._stop_following.set()
        if self._follower is not None:
            self._follower.join()
        self.batcher.close()
        self.shadow.close()
        self.log.close()

    # ---- requests ---------------------------------------------------------------------------------
    async def predict(self, unit: str, rows: Sequence[Sequence[float] | Mapping[str, Any]]) -> dict[str, Any]:
        """Predictions for ``rows``: numeric arrays, or raw named rows that the serving version's
        pipeline encodes (``InputPipeline.encode_rows``)."""
        start = time.perf_counter()
        deployment = self.deployment  # this request's models, whatever swaps meanwhile
        arm = deployment.route(unit)
        model = deployment.model(arm)
        if len(rows) > INLINE_ROWS and isinstance(rows[0], Mapping):
            x = await asyncio.to_thread(_inputs, rows, model)
        else:
            x = _inputs(rows, model)
        if self.batching:
            predictions, probabilities = await self.batcher.predict(model, x)
        else:
            predictions, probabilities = model.predict(x)
        regression = model.task == "regression"
        if regression and not np.isfinite(predictions).all():
            row = int(np.flatnonzero(~np.isfinite(predictions))[0])
            # Never logged: a NaN answer has no squared error, and the rollouts' sums would break.
            raise ServeError(
                500, f"version {model.version} answered a value that is not finite for row {row}"
            )
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
            inputs=list(rows),  # as the client sent them: the loop trains on the log (data=serve_log)
        )
        await self.log.log_request(served)  # answered only once its row is committed
        self.metrics.served(arm, len(x))
        if regression:
            values = served.predictions
            return {"request_id": request_id, "arm": arm, "version": model.version, "values": values}
        out = {
            "request_id": request_id,
            "arm": arm,
            "version": model.version,
            "predictions": served.predictions,
            "probabilities": probabilities.tolist(),
        }
        classes = model.inputs.classes
        if len(classes) == probabilities.shape[1]:  # unknown for versions stored without a pipeline
            out["predicted_classes"] = [classes[p] for p in served.predictions]
        return out

    async def rank(self, unit: str, row: Sequence[float] | Mapping[str, Any], k: int) -> dict[str, Any]:
        """The top ``k`` classes for one row, best first; during an interleave rollout, a team-draft
        mix of the champion's and the candidate's, with the version that placed each position."""
        start = time.perf_counter()
        deployment = self.deployment
        rollout = deployment.rollout
        interleaving = rollout is not None and rollout.kind == "interleave"
        arm = deployment.route(unit)
        models = [deployment.champion, deployment.candidate] if interleaving else [deployment.model(arm)]
        if models[0].task == "regression":
            raise ServeError(
                422,
                f"version {models[0].version} is a regressor: it answers a value, not a ranking of "
                "classes; use /predict",
            )
        x = _inputs([row], models[0])
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
        self.metrics.served(arm, 1)
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
        if row["rollout"] is not None and row["rollout"] == self.deployment.rollout_id:
            out["rollout"] = self.advance_rollout()
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

    def feedback(self, request_id: str, labels: list[int] | list[float]) -> dict[str, Any]:
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
        if self._task(row["version"], served) == "regression":
            return self._value_feedback(request_id, row, labels)
        n_classes = self._n_classes(row["version"])
        bad = [label for label in labels if n_classes is not None and label >= n_classes]
        if bad:  # a label no class has would count as a wrong answer and skew every statistic
            raise ServeError(
                422,
                f"label {bad[0]} for request_id {request_id!r}: version {row['version']} has "
                f"{n_classes} classes, 0..{n_classes - 1}",
            )
        self._write_feedback(request_id, labels)
        correct = int((np.asarray(served) == np.asarray(labels)).sum())
        self.metrics.labelled_feedback(row["arm"], len(labels), correct)
        out: dict[str, Any] = {"request_id": request_id, "arm": row["arm"], "correct": correct}
        if row["rollout"] is not None and row["rollout"] == self.deployment.rollout_id:
            out["rollout"] = self.advance_rollout()
        return out

    def _value_feedback(self, request_id: str, row: dict[str, Any], labels: list) -> dict[str, Any]:
        """Labels of a request a regressor answered: finite numbers (within float32's range), each the
        true value of its row; the answer gives the rows' summed squared error."""
        for i, label in enumerate(labels):
            if isinstance(label, bool) or not isinstance(label, int | float) or not abs(label) <= MAX_LABEL:
                field = "label" if len(labels) == 1 else f"labels.{i}"
                raise ServeError(
                    422,
                    f"{field}: {label!r} for request_id {request_id!r}: version {row['version']} is a "
                    "regressor, and its labels are finite numbers (within float32's range)",
                )
        self._write_feedback(request_id, labels)
        errors = np.asarray(row["predictions"], dtype=np.float64) - np.asarray(labels, dtype=np.float64)
        squared_error = float(np.sum(errors**2))
        self.metrics.labelled_values(row["arm"], len(labels), squared_error)
        out: dict[str, Any] = {"request_id": request_id, "arm": row["arm"], "squared_error": squared_error}
        if row["rollout"] is not None and row["rollout"] == self.deployment.rollout_id:
            out["rollout"] = self.advance_rollout()
        return out

    def answers_values(self, request_id: str) -> bool:
        """Whether the logged request ``request_id`` was answered by a regressor (False if unknown)."""
        row = self.log.request(request_id)
        return row is not None and self._task(row["version"], row["predictions"]) == "regression"

    def _task(self, version: str, predictions: list) -> str:
        """What the version that served a request answers; for a version gone from the registry, what
        its logged answers say (a regressor's values are logged as JSON floats, class ids as ints)."""
        deployment = self.deployment
        for model in (deployment.champion, deployment.candidate):  # usually: no look-up at all
            if model is not None and model.version == version:
                return model.task
        try:
            return self.store.load(version).task
        except UnknownVersion:
            return "regression" if any(isinstance(p, float) for p in predictions) else "classification"

    def _n_classes(self, version: str) -> int | None:
        """The class count of the version that served a request; None when it cannot be told (a version
        gone from the registry, a module without ``n_classes``), and the label bound is not checked."""
        try:
            module = self.store.load(version).module
        except UnknownVersion:
            return None
        n = getattr(module, "n_classes", None)
        return n if isinstance(n, int) else None

    def _swap(self, new: Deployment) -> None:
        """Replace what serves; called under the admin lock with every model of ``new`` loaded."""
        self.deployment = new
        self.swaps += 1

    # ---- live rollouts (the registry's: the loop's requests, or an admin's) ---------------------
    def advance_rollout(self, wait: float | None = FEEDBACK_WAIT_S) -> str:
        """Record the running rollout's new feedback from the log and decide (``perennial.serve.rollouts``);
        a decision swaps what serves here at once (other replicas follow within ``poll_s``).

        From ``/feedback`` it waits at most ``wait`` seconds for the registry (the loop or another
        replica may be writing it) and for this server's own changes: a feedback call must not stall
        on them. Then it answers ``"pending"``; the feedback is in the log, and the next advance (the
        next feedback, or the follower's poll) records it. ``wait=None`` waits as long as the
        registry's busy timeout."""
        if not self._admin.acquire(timeout=-1 if wait is None else wait):
            return "pending"
        try:
            current = self.deployment
            if current.rollout_id is None:
                return "continue"
            candidate = current.rollout.candidate

            def wait_shadow(request_id: str) -> list | None:
                self.shadow.wait(request_id)
                return ((self.log.request(request_id) or {}).get("shadow") or {}).get(candidate)

            try:
                with Registry(self.store.root, create=False, busy_timeout=wait) as registry:
                    step = live.advance(registry, self.log.path, current.rollout_id, wait_shadow)
            except sqlite3.OperationalError as err:
                if wait is None or ("locked" not in str(err) and "busy" not in str(err)):
                    raise
                return "pending"
            self._after(step.record, step.engine, current)
            return step.outcome
        finally:
            self._admin.release()

    def _after(self, record: RolloutRecord, engine, current: Deployment) -> None:
        """What serves once the registry says where ``record`` stands: its engine's new routing while it
        runs, the candidate once promoted, the champion otherwise."""
        if record.is_open:
            if current.rollout_id == record.id:
                self.deployment = Deployment(current.champion, engine, current.candidate, record.id)
            return
        if record.status == "promoted" and current.candidate is not None:
            self._swap(Deployment(current.candidate))
        else:
            self._swap(Deployment(current.champion))
        self._follow_note = None

    def _run_rollout(self, record: RolloutRecord) -> None:
        """Start serving the registry's open rollout ``record`` here (under the admin lock): its
        candidate loaded and checked, its engine as the registry holds it. A candidate that cannot
        serve, or does not fit the champion's inputs, ends the rollout as ``failed`` with the reason."""
        current = self.deployment
        if current.champion.version != record.champion:
            self._follow_note = (
                f"rollout {record.id} of {record.candidate} is against {record.champion}, but "
                f"{current.champion.version} serves here; it starts once this server serves {record.champion}"
            )
            return
        try:
            engine = live.engine(record)
            if engine.task != current.champion.task:
                raise ValueError(
                    f"the rollout compares {engine.task} models (settings task={engine.task!r}), but the "
                    f"champion {current.champion.version} is a {current.champion.task} model"
                )
            loaded = self._load(record.candidate)
            self._check_fits(loaded, current.champion)
        except (ServeError, ValueError) as err:
            reason = f"the candidate cannot serve: {getattr(err, 'message', err)}"
            with self.store.registry() as registry:
                registry.rollouts.decide(record.id, "failed", {"error": reason}, reason)
            self._follow_note = f"rollout {record.id} failed: {reason}"
            log.error("%s", self._follow_note)
            return
        self._swap(Deployment(current.champion, engine, loaded, record.id))
        if record.status == "requested":  # marks it running, and its state as this engine's
            with self.store.registry() as registry:
                registry.rollouts.advance(record.id, engine.state_dict(), record.seq)

    @staticmethod
    def _check_fits(candidate: LoadedModel, champion: LoadedModel) -> None:
        if candidate.task != champion.task:
            raise ServeError(
                422,
                f"candidate {candidate.version} is a {candidate.task} model, the champion "
                f"{champion.version} a {champion.task} one: they answer different things",
            )
        if candidate.feature_shape != champion.feature_shape:
            raise ServeError(
                422,
                f"candidate {candidate.version} takes features of shape {candidate.feature_shape}, "
                f"the champion {champion.version} {champion.feature_shape}",
            )
        theirs, ours = candidate.inputs.encoding, champion.inputs.encoding
        if None not in (theirs, ours) and theirs != ours:
            # A shadow predicts on the rows the champion's pipeline encoded: they must mean the same.
            raise ServeError(
                422,
                f"candidate {candidate.version} encodes raw rows differently from the champion "
                f"{champion.version} (another table encoding): they were trained on different streams",
            )

    def _stop_open_rollout(self, registry, reason: str) -> None:
        """End the registry's open rollout, if any, as ``stopped`` (a person changed the champion)."""
        record = registry.rollouts.open()
        if record is not None:
            registry.rollouts.decide(record.id, "stopped", {}, reason)

    # ---- admin ------------------------------------------------------------------------------------
    def start_rollout(self, kind: str, candidate: str | None, settings: dict[str, Any]) -> dict[str, Any]:
        """An admin's rollout: written to the registry as a request (as the loop's are) and started here
        at once; other replicas following the registry start it within ``poll_s``."""
        with self._admin:
            current = self.deployment
            if kind == "none":
                if current.rollout is None:
                    raise ServeError(409, "no rollout is running")
                with self.store.registry() as registry:
                    summary = current.rollout.summary()
                    registry.rollouts.decide(current.rollout_id, "stopped", summary, "stopped by hand")
                self._swap(Deployment(current.champion))
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
            if candidate == champion:
                raise ServeError(422, f"the candidate {candidate} is already the champion")
            settings = dict(settings)
            task = current.champion.task
            if settings.get("task", task) != task:
                raise ServeError(
                    422,
                    f"rollout settings task={settings['task']!r}, but the champion {champion} is a "
                    f"{task} model",
                )
            if task == "regression":  # the engine compares squared errors; on every replica
                settings["task"] = task
            salt = settings.pop("salt", None)  # how units are shuffled: the rollout's, for every replica
            if salt is not None and (not isinstance(salt, str) or not 0 < len(salt) <= 256):
                raise ServeError(
                    422, f"rollout salt must be a non-empty string of at most 256 characters, got {salt!r}"
                )
            try:
                make_rollout(kind, settings)
            except ValueError as err:
                raise ServeError(422, str(err)) from None
            loaded = self._load(candidate)
            self._check_fits(loaded, current.champion)
            with self.store.registry() as registry:
                try:
                    record = registry.rollouts.request(
                        kind, champion, candidate, settings, by="admin", salt=salt
                    )
                except ValueError as err:
                    raise ServeError(409, str(err)) from None
            self._run_rollout(record)
            return self.status()

    def promote(self, version: str, reason: str = "", override: bool = False) -> dict[str, Any]:
        with self._admin:
            # Loaded and checked before the registry changes: a version that cannot serve leaves the
            # registry and what serves as they were, so the index never names a champion nobody serves.
            loaded = self._load(version)
            with self.store.registry() as registry, registry.transaction():
                self._stop_open_rollout(registry, f"ended by the promotion of {version} by hand")
                try:
                    previous = registry.promote(
                        version, reason=reason or "promoted by hand", override=override
                    )
                except ValueError as err:
                    raise ServeError(409, str(err)) from None
            self._swap(Deployment(loaded))
            return {"champion": version, "previous": previous}

    def rollback(self, reason: str = "") -> dict[str, Any]:
        with self._admin:
            with self.store.reader() as registry:
                demoted = registry.champion()
                try:
                    target = registry.rollback_target()
                except ValueError as err:
                    raise ServeError(409, str(err)) from None
            # As in promote: the restored version must load before the registry says it serves.
            loaded = self._load(target)
            with self.store.registry() as registry, registry.transaction():
                self._stop_open_rollout(registry, f"ended by the rollback of {demoted} by hand")
                try:
                    restored = registry.rollback(reason or "rolled back by hand", expect=(demoted, target))
                except ValueError as err:  # another process changed the champion meanwhile
                    raise ServeError(409, str(err)) from None
            self._swap(Deployment(loaded))
            return {"champion": restored, "rolled_back": demoted}

    def _load(self, version: str) -> LoadedModel:
        """``version`` loaded and checked (``ModelStore.load``), or a ServeError that names the version
        and the problem: 404 if the registry has no such version, 422 if it cannot serve."""
        try:
            return self.store.load(version)
        except UnknownVersion as err:
            raise ServeError(404, str(err)) from None
        except UnservableVersion as err:
            serving = self.deployment.champion.version
            raise ServeError(422, f"{err}; {serving} goes on serving") from None

    def follow_registry(self) -> None:
        """Serve what the registry says: its champion if another process changed it (``perennial-registry
        promote`` or rollback, the loop's gate, another replica's rollout decision), through the same
        checked load as ``promote``; and its open rollout (the loop's request, another replica's
        admin call), started here or advanced with the feedback any replica logged.

        A rollout is ended as ``stopped`` when the champion it was started against is no longer the
        registry's (a person promoted another meanwhile)."""
        with self._admin:
            with self.store.reader() as registry:
                identity = registry.identity
                wanted = registry.champion()
                record = registry.rollouts.open()
            if identity != self.store.identity:
                self._follow_note = (
                    f"the registry at {self.store.root} was replaced (it is another registry now: id "
                    f"{identity}, not {self.store.identity}); {self.deployment.champion.version} of the "
                    "one this server loaded goes on serving: restart the server to serve the new one"
                )
                self.metrics.follow_refused.inc()
                return
            current = self.deployment
            serving = current.champion.version
            if self._follow_refused not in (None, wanted):
                self._follow_refused = None  # the registry moved on: a later return is tried again
            if current.rollout_id is not None:
                if record is not None and record.id == current.rollout_id:
                    if wanted != record.champion:
                        with self.store.registry() as writer:
                            reason = f"the champion changed to {wanted} during the rollout"
                            writer.rollouts.decide(record.id, "stopped", current.rollout.summary(), reason)
                    else:
                        with self.store.registry() as writer:
                            step = live.advance(writer, self.log.path, record.id)
                        self._after(step.record, step.engine, current)
                        return
                else:  # decided elsewhere (another replica, the loop's deadline, a person)
                    with self.store.reader() as reader:
                        ended = reader.rollouts.get(current.rollout_id)
                    self._after(ended, current.rollout, current)
                current = self.deployment
                serving = current.champion.version
            if wanted is not None and wanted != serving and self._follow_refused != wanted:
                try:
                    loaded = self._load(wanted)
                except ServeError as err:
                    self._follow_refused = wanted
                    note = f"the registry's champion is {wanted}, which is refused: {err.message}"
                    self._follow_note = note
                    log.error("%s", self._follow_note)
                    return
                self._swap(Deployment(loaded))
                serving = wanted
            if wanted is None or wanted == serving:
                self._follow_note = None
            if record is not None and self.deployment.rollout_id is None and record.champion == serving:
                self._run_rollout(record)

    def poll_registry(self) -> None:
        """One poll of the follower thread: ``follow_registry``, with any failure (a registry deleted,
        damaged or locked past the busy timeout) said in ``/status`` and logged, never raised: what
        is loaded goes on serving."""
        try:
            self.follow_registry()
        except Exception as err:
            self._follow_note = f"cannot read the registry: {type(err).__name__}: {err}"
            log.error("%s", self._follow_note)

    def _follow_loop(self) -> None:
        while not self._stop_following.wait(self.settings.poll_s):
            self.poll_registry()

    # ---- reporting --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        deployment = self.deployment
        # Read-only: /status is unauthenticated, and reading must never change or clean the registry.
        unreadable = None
        try:
            with self.store.reader() as registry:
                versions = [{"id": r.id, "status": r.status, "kind": r.kind} for r in registry.versions()]
                registry_champion = registry.champion()
        except (OSError, sqlite3.Error, RegistryIndexError) as err:  # deleted or damaged under us
            versions, registry_champion = [], None
            unreadable = f"cannot read the registry: {type(err).__name__}: {err}"
        rollout = deployment.rollout
        serving = deployment.champion.version
        note = self._follow_note or unreadable  # set by the poll: a refused champion, an unreadable registry
        if note is None and registry_champion not in (None, serving):
            if not self.settings.follow:
                note = f"serve.follow is off: {serving} serves until a promote or rollback here, or a restart"
            elif rollout is not None:
                note = (
                    f"the registry's champion is {registry_champion}; {serving} serves until the running "
                    f"{rollout.kind} rollout of {rollout.candidate} ends"
                )
            else:
                note = f"{registry_champion} serves from the next poll (every {self.settings.poll_s} s)"
        out: dict[str, Any] = {
            "champion": deployment.champion.version,
            # Differs from "champion" only for a moment (follow on), or while a rollout runs or the
            # registry's champion is refused (follow.note says which), or with follow off.
            "registry_champion": registry_champion,
            "follow": {
                "enabled": self.settings.follow,
                "poll_s": self.settings.poll_s,
                "note": note,
            },
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
                "decision": rollout.decide(),
                **rollout.summary(),
            }
        return out

    def metrics_text(self) -> str:
        return self.metrics.text()


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"serve.device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"serve.device={name}, but torch sees no CUDA device here; use cpu or auto")
    return name


def _inputs(rows: Sequence[Sequence[float] | Mapping[str, Any]], model: LoadedModel) -> np.ndarray:
    """``rows`` as ``model``'s inputs: numeric arrays checked, raw named rows encoded by its pipeline
    (the training rows' encoding); a 422 naming the version, the row and the column otherwise."""
    inputs = model.inputs
    try:
        if rows and isinstance(rows[0], Mapping):
            return inputs.encode_rows(rows)
        return inputs.check_array(rows)
    except DataError as err:
        raise ServeError(422, f"version {model.version}: {err}") from None


# ---- HTTP -----------------------------------------------------------------------------------------
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
    from functools import cache
    from typing import Annotated

    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
    from starlette.concurrency import run_in_threadpool

    from perennial.serve.edge import (
        EXTRA_KEYS,
        INLINE_BODY_BYTES,
        MAX_COLUMN_CHARS,
        BodyLimit,
        BodyLimits,
        Strict,
        Unit,
        admin_guard,
        install_handlers,
        parse_body,
        read_body,
        timed_routes,
        validate_json,
    )
    from perennial.serve.metrics import CONTENT_TYPE

    # Checked before a server starts its threads: a bad setting leaves nothing running.
    body_limits = BodyLimits.of(settings.settings if isinstance(settings, ModelServer) else settings)
    server = settings if isinstance(settings, ModelServer) else ModelServer(settings)
    limit = server.settings.max_body_bytes
    max_rows, max_k = server.settings.max_rows, server.settings.max_k
    feedback_limit = body_limits.feedback()

    @cache
    def row_schemas(n_features: int, n_columns: int) -> tuple[type[BaseModel], type[BaseModel]]:
        """/predict and /rank bodies for a model of ``n_features``, whose raw named rows have
        ``n_columns`` columns: a row longer than that is refused while parsing, so a 500,000-number
        body costs one bounded parse, not a Python list of it.

        A row is a list of numbers, or a JSON object of raw values that the version's pipeline checks
        and encodes (naming the row and the column of a bad value). Its keys are bounded a few past
        its columns, so that an extra column is named, not only counted."""
        Row = Annotated[list[float], Field(max_length=n_features)]
        Column = Annotated[StrictStr, Field(max_length=MAX_COLUMN_CHARS)]
        Named = Annotated[dict[Column, Any], Field(max_length=n_columns + EXTRA_KEYS)]
        # Left to right: a batch of numbers (the common case) parses once, as before named rows.
        Rows = Annotated[list[Row], Field(min_length=1, max_length=max_rows)]
        NamedRows = Annotated[list[Named], Field(min_length=1, max_length=max_rows)]

        class PredictRequest(Strict):
            unit: Unit
            features: Row | Named | None = Field(default=None, union_mode="left_to_right")
            rows: Rows | NamedRows | None = Field(default=None, union_mode="left_to_right")

        class RankRequest(Strict):
            unit: Unit
            features: Row | Named = Field(union_mode="left_to_right")
            k: StrictInt = Field(default=3, ge=1, le=max_k)

        return PredictRequest, RankRequest

    @cache
    def row_limits(n_features: int, named_row_bytes: int) -> tuple[BodyLimit, BodyLimit]:
        """/predict and /rank body limits for a model of ``n_features`` whose raw named rows take up
        to ``named_row_bytes``: a larger body is refused (413) on its declared length before it is
        read, never parsed."""
        return body_limits.predict(n_features, named_row_bytes), body_limits.rank(n_features, named_row_bytes)

    class FeedbackRequest(Strict):
        request_id: StrictStr = Field(max_length=64)
        label: StrictInt | None = Field(default=None, ge=0)
        labels: list[Annotated[StrictInt, Field(ge=0)]] | None = Field(
            default=None, min_length=1, max_length=max_rows
        )
        clicks: list[StrictInt] | None = Field(default=None, max_length=max_k)

    class ValueFeedbackRequest(Strict):
        """Feedback for a request a regressor answered: its labels are finite numbers."""

        request_id: StrictStr = Field(max_length=64)
        label: float | None = None
        labels: list[float] | None = Field(default=None, min_length=1, max_length=max_rows)
        clicks: list[StrictInt] | None = Field(default=None, max_length=max_k)

    class Addressed(BaseModel):
        model_config = ConfigDict(extra="ignore")
        request_id: StrictStr = Field(max_length=64)

    def value_feedback(body: bytes, refused: ServeError) -> ValueFeedbackRequest:
        """A /feedback body that class ids refused (``refused``): numbers, if its request was answered
        by a regressor; for any other request (unknown ones included) the refusal stands."""
        try:
            request_id = Addressed.model_validate_json(body).request_id
        except ValidationError:
            raise refused from None
        if not server.answers_values(request_id):
            raise refused
        return validate_json(ValueFeedbackRequest, body)

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

    sized: list = [None, None]  # the champion the schemas were last sized for, and them

    def schemas() -> tuple[type[BaseModel], type[BaseModel], BodyLimit, BodyLimit]:
        # Sized from what serves now: a promotion may change the feature count and the columns.
        champion = server.deployment.champion
        if sized[0] is not champion:
            columns = champion.inputs.row_columns or []
            named = body_limits.named_row_bytes(champion.inputs)
            n = champion.n_features
            sized[:] = [champion, (*row_schemas(n, len(columns)), *row_limits(n, named))]
        return sized[1]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.close()

    app = FastAPI(title="perennial-serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server
    app.router.route_class = timed_routes(server.metrics)
    install_handlers(app, server.metrics)

    @app.exception_handler(UnknownVersion)
    async def unknown_version(request: Request, err: UnknownVersion) -> JSONResponse:
        server.metrics.error(404)
        return JSONResponse({"error": str(err)}, status_code=404)

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        schema, _, predict_limit, _ = schemas()
        body = await parse_body(request, schema, predict_limit)
        if (body.features is None) == (body.rows is None):
            raise ServeError(422, "give exactly one of 'features' (one row) or 'rows' (a batch)")
        rows = [body.features] if body.features is not None else body.rows
        return await server.predict(str(body.unit), rows)

    @app.post("/rank")
    async def rank(request: Request) -> dict:
        _, schema, _, rank_limit = schemas()
        body = await parse_body(request, schema, rank_limit)
        return await server.rank(str(body.unit), body.features, body.k)

    @app.post("/feedback")
    async def feedback(request: Request) -> dict:
        raw = await read_body(request, feedback_limit)
        try:
            if len(raw) > INLINE_BODY_BYTES:
                body = await run_in_threadpool(validate_json, FeedbackRequest, raw)
            else:
                body = validate_json(FeedbackRequest, raw)
        except ServeError as refused:  # not class ids: a regressor's numbers, or refused as before
            body = await run_in_threadpool(value_feedback, raw, refused)
        given = [name for name in ("label", "labels", "clicks") if getattr(body, name) is not None]
        if len(given) != 1:
            raise ServeError(
                422, "give exactly one of 'label' (one row), 'labels' (a batch) or 'clicks' (a ranking)"
            )
        if body.clicks is not None:
            return await run_in_threadpool(server.clicks, body.request_id, body.clicks)
        labels = [body.label] if body.label is not None else body.labels
        return await run_in_threadpool(server.feedback, body.request_id, labels)

    @app.get("/status")
    def status() -> dict:
        return server.status()

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(server.metrics_text(), media_type=CONTENT_TYPE)

    # One dependency guards every admin route; it runs before the body is read.
    guard = Depends(admin_guard(server.settings))
    admin = APIRouter(dependencies=[guard], route_class=app.router.route_class)

    @admin.post("/rollout")
    async def rollout(request: Request) -> dict:
        body = await parse_body(request, RolloutRequest, limit)
        return await run_in_threadpool(server.start_rollout, body.kind, body.candidate, body.settings)

    @admin.post("/promote")
    async def promote(request: Request) -> dict:
        body = await parse_body(request, PromoteRequest, limit)
        return await run_in_threadpool(server.promote, body.version, body.reason, body.override)

    @admin.post("/rollback")
    async def rollback(request: Request) -> dict:
        body = await parse_body(request, RollbackRequest, limit)
        return await run_in_threadpool(server.rollback, body.reason)

    app.include_router(admin)
    return app
