"""The loop's checkpoint: a typed record of where the run stands, saved after every window.

Its size does not grow with the run. What grows (every window's row of windows.csv) lives in the
registry's ``window_rows`` table, written a row at a time; the checkpoint keeps only what the next
window needs: the windows waiting for labels or for an update, the last ``loop.guard_windows``
windows of paired evidence, and the state of each stateful part (trigger, screen, buffer, source).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

CHECKPOINT_KEY = "loop"
# The source's own state (which files it has read, the fitted encoding, the watermark), beside the
# checkpoint: it changes when the source is polled, not with every window, and may be large.
SOURCE_KEY = "source"


def _guard() -> dict:
    return {"since": 0, "first_worse": None, "reverts": []}


def _compute() -> dict:
    return {"train_seconds": 0.0, "samples_processed": 0}


@dataclass
class LoopState:
    """Where a run stands after window ``next_window - 1``. Plain JSON, committed with the registry
    rows of the same window in one transaction (``to_dict`` / ``from_dict``)."""

    next_window: int
    champion: str
    static: str  # v1, never updated: the baseline of the guard and of static_accuracy
    schema: dict  # {"features", "classes"}: how far the labelled data's schema has grown
    config: dict = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)  # labelled windows since the last update
    # Served windows whose labels have not landed yet: [window, its end as text].
    unlabelled: list[list] = field(default_factory=list)
    rollout: dict | None = None  # a live rollout's state, while one runs
    quarantined: list[dict] = field(default_factory=list)  # windows the screen set aside
    compute: dict = field(default_factory=_compute)
    awaiting: dict | None = None  # {"candidate", "pending", "window"}: gate.fresh=next
    watch: dict | None = None  # {"version", "replaced", "window"}: a new champion's first window
    rollbacks: list[dict] = field(default_factory=list)
    rollback_failures: list[dict] = field(default_factory=list)
    # window -> [served only right, v1 only right, rows, v1 right], the last loop.guard_windows only.
    paired: dict[str, list[int]] = field(default_factory=dict)
    guard: dict = field(default_factory=_guard)
    trigger: dict = field(default_factory=dict)
    screen: dict = field(default_factory=dict)
    buffer_file: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> tuple[LoopState, list[dict]]:
        """The state in ``saved``, and the window rows a checkpoint from before the ``window_rows``
        table still carries (to be moved there); fields it lacks start empty."""
        known = {f.name for f in fields(cls)} - {"source"}
        state = cls(**{k: v for k, v in saved.items() if k in known})
        legacy_rows = list(saved.get("rows") or [])
        if legacy_rows and "unlabelled" not in saved:
            # Windows served before the upgrade whose labels had not landed.
            state.unlabelled = [
                [r["window"], r["end"]] for r in legacy_rows if r.get("served_accuracy") is None
            ]
        return state, legacy_rows

    @property
    def quarantined_windows(self) -> list[int]:
        return [q["window"] for q in self.quarantined]

    def keep_paired(self, windows: int) -> None:
        """Keep the paired counts of the newest ``windows`` windows: all the guard ever tests."""
        if len(self.paired) > windows:
            newest = sorted(self.paired, key=int)[-windows:]
            self.paired = {w: self.paired[w] for w in newest}
