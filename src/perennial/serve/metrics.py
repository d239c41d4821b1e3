"""The server's Prometheus metrics (``GET /metrics``): counters that only grow, gauges that go both ways,
and a latency histogram per endpoint, in a registry of the server's own.

Each server instance has its own ``CollectorRegistry``, not prometheus_client's global one, so several
apps in one process (tests, a recommender beside a classifier) never collide over metric names.

>>> m = Metrics()
>>> m.served("v1", rows=3)
>>> m.error(422)
>>> m.watch("swaps", "counter", "Changes of what serves", lambda: 2)
>>> text = m.text()
>>> 'perennial_serve_requests_total{arm="v1"} 1.0' in text, "perennial_serve_swaps_total 2.0" in text
(True, True)
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

PREFIX = "perennial_serve"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
KINDS = ("counter", "gauge")


class _Watched:
    """Values that live elsewhere (the log's commit count, the batcher's passes, session counts), read
    when Prometheus scrapes rather than copied on every change."""

    def __init__(self) -> None:
        self.reads: dict[str, tuple[str, str, Callable[[], float]]] = {}

    def collect(self):
        for name, (kind, help_text, read) in self.reads.items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"{PREFIX}_{name}", help_text, value=float(read()))


class Metrics:
    """Requests, rows, feedback, accuracy (a regressor's squared error), errors, shadow drops and
    failures, latency per endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r, p = self.registry, PREFIX
        self.requests = Counter(
            f"{p}_requests", "Requests answered, by the arm that answered", ["arm"], registry=r
        )
        self.rows = Counter(f"{p}_rows", "Rows answered, by arm", ["arm"], registry=r)
        self.feedback = Counter(f"{p}_feedback", "Labelled feedback requests recorded", registry=r)
        self.feedback_rows = Counter(f"{p}_feedback_rows", "Labelled rows, by arm", ["arm"], registry=r)
        self.correct_rows = Counter(
            f"{p}_correct_rows", "Labelled rows answered right, by arm", ["arm"], registry=r
        )
        self.accuracy = Gauge(
            f"{p}_accuracy", "Accuracy on labelled feedback so far, by arm", ["arm"], registry=r
        )
        # A regressor's counterparts of correct rows and accuracy; Prometheus divides them as it likes.
        self.squared_error = Counter(
            f"{p}_squared_error",
            "Sum of the squared errors of labelled rows a regressor answered, by arm",
            ["arm"],
            registry=r,
        )
        self.mse = Gauge(
            f"{p}_mse",
            "Mean squared error on a regressor's labelled feedback so far, by arm",
            ["arm"],
            registry=r,
        )
        self.errors = Counter(
            f"{p}_errors", "Requests refused or failed, by HTTP status", ["code"], registry=r
        )
        self.shadow_dropped = Counter(
            f"{p}_shadow_dropped", "Shadow predictions dropped because the shadow queue was full", registry=r
        )
        self.shadow_errors = Counter(
            f"{p}_shadow_errors", "Shadow batches that failed (logged with their traceback)", registry=r
        )
        self.follow_refused = Counter(
            f"{p}_follow_refused",
            "Registry polls refused because the registry was replaced by another at the same path",
            registry=r,
        )
        self.latency = Histogram(
            f"{p}_latency_seconds",
            "Time from a request's handler start to its answer (log commit included), by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._lock = threading.Lock()  # labelled and correct move together, for the accuracy gauge
        self._labelled: dict[str, int] = defaultdict(int)
        self._correct: dict[str, int] = defaultdict(int)
        self._value_rows: dict[str, int] = defaultdict(int)
        self._squared_error: dict[str, float] = defaultdict(float)
        self._watched = _Watched()
        r.register(self._watched)

    def served(self, arm: str, rows: int) -> None:
        self.requests.labels(arm).inc()
        self.rows.labels(arm).inc(rows)

    def labelled_feedback(self, arm: str, rows: int, correct: int) -> None:
        self.feedback.inc()
        self.feedback_rows.labels(arm).inc(rows)
        self.correct_rows.labels(arm).inc(correct)
        with self._lock:
            self._labelled[arm] += rows
            self._correct[arm] += correct
            self.accuracy.labels(arm).set(self._correct[arm] / self._labelled[arm])

    def labelled_values(self, arm: str, rows: int, squared_error: float) -> None:
        """Feedback on ``rows`` rows a regressor answered, whose squared errors sum to ``squared_error``."""
        self.feedback.inc()
        self.feedback_rows.labels(arm).inc(rows)
        self.squared_error.labels(arm).inc(squared_error)
        with self._lock:
            self._value_rows[arm] += rows
            self._squared_error[arm] += squared_error
            self.mse.labels(arm).set(self._squared_error[arm] / self._value_rows[arm])

    def error(self, status: int) -> None:
        self.errors.labels(str(status)).inc()

    def watch(self, name: str, kind: str, help_text: str, read: Callable[[], float]) -> None:
        """Expose ``read()`` as ``perennial_serve_<name>`` (``_total`` added for a counter) at each scrape."""
        if kind not in KINDS:
            raise ValueError(f"a watched metric is one of {list(KINDS)}, got {kind!r}")
        self._watched.reads[name] = (kind, help_text, read)

    def text(self) -> str:
        return generate_latest(self.registry).decode()
