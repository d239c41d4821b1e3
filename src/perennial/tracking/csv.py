"""``logger=csv``: a run's metrics and events as two CSV files in its directory, appended as it goes.

``metrics.csv`` holds one line per window (the step) with the window's numeric metrics;
``events.csv`` one line per new version and per decision about one. When the loop starts or resumes,
both files are rewritten from what the run has committed, then appended to: after a crash, a
resumed run's files hold each window and each event exactly once.

>>> import tempfile
>>> from pathlib import Path
>>> run = Path(tempfile.mkdtemp())
>>> logger = CSVLogger()
>>> logger.start(RunHistory(run, run / "registry" / "versions"))
>>> logger.log_window({"window": 1, "champion": "v1", "served_accuracy": 0.75, "p_value": None})
>>> logger.log_decision("v1.1", 1, "promoted", {"reason": "better on fresh data", "p_value": 0.01})
>>> logger.close()
>>> print((run / "metrics.csv").read_text().strip())
window,served_accuracy,p_value
1,0.75,
>>> print((run / "events.csv").read_text().strip())
window,event,version,parent,kind,trigger,n_samples,train_seconds,reason,details
1,promoted,v1.1,,,,,,better on fresh data,"{""p_value"": 0.01}"
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from perennial.registry import VersionRecord, atomic_write_text
from perennial.tracking.base import FINISHED, Decision, RunHistory, RunLogger, metrics_of

EVENT_COLUMNS = (
    "window",
    "event",
    "version",
    "parent",
    "kind",
    "trigger",
    "n_samples",
    "train_seconds",
    "reason",
    "details",
)


class CSVLogger(RunLogger):
    """Appends window metrics to ``<run dir>/<metrics>``, versions and decisions to ``<run dir>/<events>``."""

    def __init__(self, metrics: str = "metrics.csv", events: str = "events.csv") -> None:
        for setting, name in (("metrics", metrics), ("events", events)):
            if not name or Path(name).name != name:
                raise ValueError(
                    f"logger.{setting} must be a file name inside the run directory, got {name!r}"
                )
        if metrics == events:
            raise ValueError(f"logger.metrics and logger.events must differ, both are {metrics!r}")
        self.metrics_name, self.events_name = metrics, events
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, csv.DictWriter] = {}
        self._dir = Path()

    def start(self, history: RunHistory) -> None:
        self.close()
        self._dir = history.run_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        # Rewritten whole from the committed history, never patched: whatever a crash left (a window
        # logged but not committed, one committed but not logged, a torn last line) is gone.
        rows = [_metric_row(row) for row in history.rows]
        self._rewrite(self.metrics_name, rows)
        self._rewrite(self.events_name, [_event_row(e) for e in history.events()], EVENT_COLUMNS)

    def log_window(self, row: Mapping[str, Any]) -> None:
        self._append(self.metrics_name, _metric_row(row))

    def log_version(self, record: VersionRecord) -> None:
        self._append(self.events_name, _event_row(record), EVENT_COLUMNS)

    def log_decision(
        self, version: str, window: int | None, decision: str, numbers: Mapping[str, Any]
    ) -> None:
        self._append(
            self.events_name, _event_row(Decision(version, window, decision, numbers)), EVENT_COLUMNS
        )

    def close(self, status: str = FINISHED) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()
        self._writers.clear()

    def _rewrite(self, name: str, rows: list[dict[str, Any]], columns: Iterable[str] | None = None) -> None:
        path = self._dir / name
        if not rows and columns is None:
            # The columns come from the first row; the file appears with it.
            path.unlink(missing_ok=True)
            return
        out = io.StringIO()
        writer = csv.DictWriter(out, list(columns or rows[0]), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, out.getvalue())

    def _append(self, name: str, row: dict[str, Any], columns: Iterable[str] | None = None) -> None:
        if name not in self._writers:
            path = self._dir / name
            fresh = not path.is_file() or path.stat().st_size == 0
            file = self._files[name] = path.open("a", newline="", encoding="utf-8")
            if fresh:
                self._writers[name] = csv.DictWriter(
                    file, list(columns or row), restval="", extrasaction="ignore"
                )
                self._writers[name].writeheader()
            else:  # the header the rewrite at start() gave it
                with path.open(newline="", encoding="utf-8") as existing:
                    header = next(csv.reader(existing))
                self._writers[name] = csv.DictWriter(file, header, restval="", extrasaction="ignore")
        self._writers[name].writerow(row)
        self._files[name].flush()  # a user tailing the file sees each window as it ends


def _metric_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"window": row["window"], **{k: _cell(v) for k, v in metrics_of(row).items()}}


def _event_row(event: VersionRecord | Decision) -> dict[str, Any]:
    if isinstance(event, Decision):
        numbers = dict(event.numbers)
        reason = numbers.pop("reason", "")
        return {
            "window": event.window,
            "event": event.decision,
            "version": event.version,
            "reason": reason,
            "details": _json(numbers),
        }
    trigger = event.trigger or {}
    return {
        "window": event.created_window,
        "event": "version",
        "version": event.id,
        "parent": event.parent or "",
        "kind": event.kind,
        "trigger": trigger.get("name", ""),
        "n_samples": event.n_samples,
        "train_seconds": round(event.train_seconds, 3),
        "reason": trigger.get("reason", ""),
        "details": _json(event.metrics),
    }


def _cell(value: Any) -> Any:
    # An empty cell, not "nan" or "None": what a spreadsheet and pandas both read as missing.
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _json(values: Mapping[str, Any]) -> str:
    if not values:
        return ""
    return json.dumps({k: _finite_or_none(v) for k, v in values.items()}, default=str)


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
