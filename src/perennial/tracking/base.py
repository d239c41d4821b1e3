"""What every experiment logger receives from the loop, and the run history a logger catches up from.

The loop calls a logger once per event: ``log_window`` once a window's labels are in and the step
that brought them has committed (at once without ``data.label_delay``), ``log_version`` when
a candidate is stored, ``log_decision`` when the gate or a rollout decides about it. Before the
first window, ``start`` hands it the history the run has committed so far (none but v1 for a new
run), so a logger that missed events, or saw events of a window that a crash never committed,
reconciles with the registry instead of logging a window twice or never.

The base class logs nothing: it is ``logger=none``.

>>> logger = RunLogger()
>>> logger.log_window({"window": 3, "served_accuracy": 0.8})
>>> metrics_of({"window": 3, "champion": "v1.2", "n": 500, "served_accuracy": 0.8, "p_value": None})
{'n': 500, 'served_accuracy': 0.8, 'p_value': None}
>>> finite({"n": 500, "served_accuracy": 0.8, "p_value": None, "fresh_diff": float("nan")})
{'n': 500.0, 'served_accuracy': 0.8}
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from perennial.registry import Registry, VersionRecord

# How a run ended, for the loggers that record it (MLflow's run status).
FINISHED, FAILED, KILLED = "finished", "failed", "killed"


@dataclass(frozen=True)
class Decision:
    """What the gate or a rollout decided about ``version`` at ``window``: "promoted", "rejected" or
    "rollout" (passed offline, now on live traffic), with the numbers it decided on, ``reason`` too."""

    version: str
    window: int | None
    decision: str
    numbers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunHistory:
    """What a run has committed when the loop starts or resumes: its window rows, the registry's
    versions and decisions, and where each version's files are."""

    run_dir: Path
    versions_dir: Path
    config: Mapping[str, Any] = field(default_factory=dict)
    rows: Sequence[Mapping[str, Any]] = ()
    versions: Sequence[VersionRecord] = ()
    decisions: Sequence[Decision] = ()

    @classmethod
    def of(cls, run_dir: str | Path, registry: Registry, state: Mapping[str, Any]) -> RunHistory:
        """The history of the loop whose checkpoint is ``state`` and whose versions are in ``registry``."""
        return cls(
            run_dir=Path(run_dir),
            versions_dir=registry.versions_dir,
            config=state.get("config", {}),
            # A window reaches the loggers once its labels are in (data.label_delay): its scores
            # are set then; windows.csv lists every window served.
            rows=[r for r in state.get("rows", []) if r.get("served_accuracy") is not None],
            versions=registry.versions(),
            decisions=[
                Decision(d["version"], d["window"], d["decision"], d["numbers"]) for d in registry.decisions()
            ],
        )

    @property
    def name(self) -> str:
        """The run's name (``name`` in the config), or "perennial" when it has none."""
        return str(self.config.get("name") or "perennial")

    def events(self) -> Iterator[VersionRecord | Decision]:
        """Versions and decisions in the order the loop made them: by window, a version before the
        decisions about it."""
        # sorted() is stable: versions keep version order, decisions the order they were recorded in.
        tagged = [(r.created_window, 0, r) for r in self.versions]
        tagged += [(d.window, 1, d) for d in self.decisions]
        for _, _, event in sorted(tagged, key=lambda e: (-1 if e[0] is None else e[0], e[1])):
            yield event

    def champion(self) -> str | None:
        return next((r.id for r in self.versions if r.status == "champion"), None)


class RunLogger:
    """Receives a run's progress as the loop makes it; this base logs nothing (``logger=none``).

    A subclass checks in ``__init__`` whatever can fail before the run (a package, a server), so a
    bad logger stops the job before its first window, not in the middle of it.
    """

    def start(self, history: RunHistory) -> None:
        """Called before the first window of a run or of a resumption; catch up with ``history``."""

    def log_window(self, row: Mapping[str, Any]) -> None:
        """One window's row (the loop's windows.csv row), once its labels are in and committed."""

    def log_version(self, record: VersionRecord) -> None:
        """A new candidate version, just stored in the registry."""

    def log_decision(
        self, version: str, window: int | None, decision: str, numbers: Mapping[str, Any]
    ) -> None:
        """A decision about ``version``: "promoted", "rejected" or "rollout", as the registry records it."""

    def close(self, status: str = FINISHED) -> None:
        """The run has ended (``status``: finished, failed or killed); flush and release everything."""

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if error is None:
            self.close(FINISHED)
        else:
            self.close(KILLED if isinstance(error, KeyboardInterrupt) else FAILED)

    def replay(self, history: RunHistory) -> None:
        """Log every committed event of ``history`` again, in order: rows after versions and decisions."""
        for event in history.events():
            if isinstance(event, Decision):
                self.log_decision(event.version, event.window, event.decision, event.numbers)
            else:
                self.log_version(event)
        for row in history.rows:
            self.log_window(row)


def metrics_of(row: Mapping[str, Any]) -> dict[str, float | int | None]:
    """The numeric fields of a window's row, None where the window measured nothing; the window index
    (the step) and text fields (version ids, reasons, dates) are left out."""
    return {
        k: v
        for k, v in row.items()
        if k != "window" and (v is None or (isinstance(v, int | float) and not isinstance(v, bool)))
    }


def finite(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are finite numbers, as floats: what a metric store can hold."""
    out = {}
    for k, v in values.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def require(module: str, logger: str, extra: str) -> ModuleType:
    """Import ``module`` for ``logger=<logger>``, or fail with the install command that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        # RuntimeError: perennial-run reports it as a one-line user error, without a traceback.
        raise RuntimeError(
            f"logger={logger} needs the {extra} package, which is not installed ({err}); "
            f"install it with: pip install -e '.[{extra}]'"
        ) from err
