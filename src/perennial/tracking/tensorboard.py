"""``logger=tensorboard``: a run's metrics as TensorBoard scalars in ``<run dir>/tensorboard/``, the
window index as the step; versions and decisions as scalars and text at the window they happened.

Watch a run as it goes with ``tensorboard --logdir runs/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perennial.registry import VersionRecord
from perennial.tracking.base import FINISHED, RunHistory, RunLogger, finite, metrics_of, require


class TensorBoardLogger(RunLogger):
    """Writes a run's window metrics, versions and decisions with ``torch.utils.tensorboard``."""

    def __init__(self, subdir: str = "tensorboard", flush_secs: int = 30) -> None:
        # Imported now, so that a missing tensorboard stops the job before its first window.
        self._summary_writer = require("torch.utils.tensorboard", "tensorboard", "tensorboard").SummaryWriter
        if not subdir:
            raise ValueError(f"logger.subdir must name a directory inside the run directory, got {subdir!r}")
        if flush_secs <= 0:
            raise ValueError(f"logger.flush_secs must be > 0, got {flush_secs}")
        self.subdir, self.flush_secs = subdir, flush_secs
        self._writer: Any = None

    def start(self, history: RunHistory) -> None:
        self.close()
        # Event files cannot be rewritten, but TensorBoard hides every event of an earlier file at a
        # step >= purge_step: purging from step 0 and replaying the committed history leaves each
        # window and event once, whatever a crash left in the older files.
        self._writer = self._summary_writer(
            log_dir=str(history.run_dir / self.subdir), purge_step=0, flush_secs=self.flush_secs
        )
        self.replay(history)
        self._writer.flush()

    def log_window(self, row: Mapping[str, Any]) -> None:
        step = int(row["window"])
        for name, value in finite(metrics_of(row)).items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()  # a window takes seconds to minutes: show it now, not at flush_secs

    def log_version(self, record: VersionRecord) -> None:
        step = record.created_window or 0
        numbers = {"n_samples": record.n_samples, "train_seconds": record.train_seconds, **record.metrics}
        for name, value in finite(numbers).items():
            self._writer.add_scalar(f"version/{name}", value, step)
        trigger = (record.trigger or {}).get("name", "")
        self._writer.add_text(
            "versions",
            f"**{record.id}** ({record.kind}, parent {record.parent or '-'}, trigger {trigger or '-'}): "
            f"{record.n_samples:,} samples, {record.train_seconds:.1f} s",
            step,
        )

    def log_decision(
        self, version: str, window: int | None, decision: str, numbers: Mapping[str, Any]
    ) -> None:
        reason = numbers.get("reason", "")
        self._writer.add_text("decisions", f"**{version}** {decision}: {reason}", window or 0)

    def close(self, status: str = FINISHED) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
