"""Rows played as live traffic over HTTP: each row one ``/predict`` at its time, its label sent to
``/feedback`` a little later, every failure counted and every answer recorded.

>>> import httpx, json
>>> def answer(request):
...     if request.url.path == "/predict":
...         return httpx.Response(200, json={"request_id": "r1", "arm": "v1", "version": "v1",
...                                          "predictions": [1]})
...     return httpx.Response(200, json={"rollout": "continue"})
>>> player = TrafficPlayer("http://demo", [{"temp": 1.0}], [1], ["client-0"], seconds_per_row=0.0,
...                        feedback_delay=0.0, transport=httpx.MockTransport(answer))
>>> (record,) = player.run()
>>> record.version, record.correct, player.failures()
('v1', True, {'predict': 0, 'feedback': 0})
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx


@dataclass
class RequestRecord:
    """One played row: what was sent when, what answered, and its feedback. Times are seconds after
    the player's ``t0`` (``time.monotonic``)."""

    index: int  # the row's position in what is played
    unit: str
    label: int  # the class id sent as feedback
    due: float  # when it was meant to be sent
    sent: float | None = None
    latency_ms: float | None = None
    status: int | None = None  # the HTTP status of /predict; None: no answer (a transport error)
    error: str | None = None  # why it failed: the error's type and message, or the answer's body
    request_id: str | None = None
    version: str | None = None  # the version that answered
    arm: str | None = None
    prediction: int | None = None
    feedback_sent: float | None = None
    feedback_status: int | None = None
    feedback_error: str | None = None
    rollout: str | None = None  # the /feedback answer's "rollout": continue, promote or reject
    done: bool = False  # the /predict call has ended (answered or failed)
    feedback_done: bool = False

    @property
    def answered(self) -> bool:
        return self.status == 200 and self.prediction is not None

    @property
    def failed(self) -> bool:
        """The /predict ended without a good answer."""
        return self.done and not self.answered

    @property
    def feedback_failed(self) -> bool:
        return self.feedback_done and self.feedback_status != 200

    @property
    def correct(self) -> bool | None:
        return None if not self.answered else self.prediction == self.label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"correct": self.correct}


class TrafficPlayer:
    """Plays ``rows`` (raw named rows) as ``/predict`` requests, row ``i`` at ``i * seconds_per_row``
    after the start, from ``units``; the answer's label (``labels[i]``, a class id) goes to
    ``/feedback`` ``feedback_delay`` seconds after the answer. At most ``concurrency`` requests are in
    flight (one connection pool); a request that waits for a free slot is sent late, and its record
    says when it was really sent.

    A failure is any /predict or /feedback without a 200 answer: another status, a transport error,
    a timeout. Nothing is retried: the count is what clients would have seen."""

    def __init__(
        self,
        url: str,
        rows: Sequence[Mapping[str, Any]],
        labels: Sequence[int],
        units: Sequence[str],
        *,
        seconds_per_row: float,
        feedback_delay: float = 1.0,
        concurrency: int = 4,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not len(rows) == len(labels) == len(units):
            raise ValueError(
                f"rows, labels and units differ in length: {len(rows)}, {len(labels)}, {len(units)}"
            )
        if seconds_per_row < 0 or feedback_delay < 0:
            raise ValueError("seconds_per_row and feedback_delay must be >= 0")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.url, self.rows = url, list(rows)
        self.seconds_per_row, self.feedback_delay = seconds_per_row, feedback_delay
        self.concurrency, self.timeout, self.transport = concurrency, timeout, transport
        self.records = [
            RequestRecord(i, str(unit), int(label), i * seconds_per_row)
            for i, (label, unit) in enumerate(zip(labels, units, strict=True))
        ]
        self.t0: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ---- running ----------------------------------------------------------------------------------
    def run(self, t0: float | None = None) -> list[RequestRecord]:
        """Play every row (blocking) and return the records. ``t0``: the ``time.monotonic()`` the
        schedule starts at (default now)."""
        self.t0 = time.monotonic() if t0 is None else t0
        asyncio.run(self._play())
        return self.records

    def start(self, t0: float | None = None) -> TrafficPlayer:
        """Play in a background thread; ``join`` waits for it."""
        self.t0 = time.monotonic() if t0 is None else t0

        def play() -> None:
            try:
                asyncio.run(self._play())
            except BaseException as err:  # reported by join, in the caller's thread
                self.error = err

        self._thread = threading.Thread(target=play, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Send no more requests; those in flight finish (their feedback is not sent)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background play; True when it has finished. Raises what the player raised."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self.error is not None:
            raise self.error
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def now(self) -> float:
        """Seconds since the schedule's start."""
        return time.monotonic() - (self.t0 if self.t0 is not None else time.monotonic())

    # ---- results ----------------------------------------------------------------------------------
    def sent(self) -> list[RequestRecord]:
        return [r for r in self.records if r.sent is not None]

    def failures(self) -> dict[str, int]:
        """Failed /predict and /feedback calls so far."""
        records = list(self.records)
        return {
            "predict": sum(r.failed for r in records),
            "feedback": sum(r.feedback_failed for r in records),
        }

    def first_errors(self, n: int = 3) -> list[str]:
        """What went wrong with the first ``n`` failures, for the terminal."""
        out = []
        for r in self.records:
            if r.failed:
                out.append(f"/predict of row {r.index}: {r.status or 'no answer'} {r.error or ''}".strip())
            if r.feedback_failed:
                out.append(
                    f"/feedback of row {r.index}: {r.feedback_status or 'no answer'} {r.feedback_error}"
                )
            if len(out) >= n:
                break
        return out[:n]

    # ---- the play ---------------------------------------------------------------------------------
    async def _play(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=self.timeout, limits=limits, transport=self.transport
        ) as client:
            slots = asyncio.Semaphore(self.concurrency)
            tasks: set[asyncio.Task] = set()
            for record, row in zip(self.records, self.rows, strict=True):
                while not self._stop.is_set() and (wait := record.due - self.now()) > 0:
                    await asyncio.sleep(min(wait, 0.25))  # wakes to notice a stop
                if self._stop.is_set():
                    break
                task = asyncio.create_task(self._one(client, slots, record, row))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

    async def _one(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, record: RequestRecord, row: Mapping
    ) -> None:
        async with slots:
            record.sent = self.now()
            start = time.perf_counter()
            answer = await self._post(client, "/predict", {"unit": record.unit, "rows": [row]})
            record.latency_ms = 1e3 * (time.perf_counter() - start)
        status, body, error = answer
        if status == 200:
            try:
                record.request_id = str(body["request_id"])
                record.version, record.arm = body.get("version"), body.get("arm")
                record.prediction = int(body["predictions"][0])
            except (KeyError, IndexError, TypeError, ValueError) as err:
                error = f"an answer without a prediction: {type(err).__name__}: {err}"
        record.error, record.status, record.done = error, status, True
        if not record.answered:
            return
        await asyncio.sleep(self.feedback_delay)
        if self._stop.is_set():
            return
        async with slots:
            record.feedback_sent = self.now()
            status, body, error = await self._post(
                client, "/feedback", {"request_id": record.request_id, "label": record.label}
            )
        if status == 200 and isinstance(body, dict):
            record.rollout = body.get("rollout")
        record.feedback_error, record.feedback_status, record.feedback_done = error, status, True

    @staticmethod
    async def _post(client: httpx.AsyncClient, path: str, body: dict) -> tuple[int | None, Any, str | None]:
        """(status, JSON answer, error text): status None when no answer came."""
        try:
            response = await client.post(path, json=body)
        except (httpx.HTTPError, OSError) as err:
            return None, None, f"{type(err).__name__}: {err}"
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200:
            return response.status_code, answer, response.text[:300]
        return 200, answer, None
