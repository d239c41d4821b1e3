"""What a run is set to: the loop's settings and the challenger line of model iteration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from perennial.learn.module import ClassifierModule

GUARDS = ("warn", "revert", "off")


@dataclass(frozen=True)
class LoopSettings:
    """``warmup_windows`` train v1; each window keeps ``holdout_fraction`` of its rows unseen by
    training, for the gate and the accuracy matrix; ``initial_epochs`` trains v1 from scratch.
    ``head``: ``grow`` gives a model outputs for the classes seen so far and widens them when new
    ones arrive; ``full`` gives every model an output for each of the stream's classes from v1.

    Do no harm (docs/design.md): with ``rollback``, a newly promoted version whose first served window
    shows it significantly worse than the version it replaced is rolled back; ``guard`` compares the
    served line with v1 never updated over the last ``guard_windows`` labelled windows: ``warn``
    reports a significant loss, ``revert`` also makes v1 the champion again, ``off`` does neither."""

    warmup_windows: int = 3
    holdout_fraction: float = 0.2
    initial_epochs: int = 20
    seed: int = 0
    head: str = "grow"
    rollback: bool = True
    guard: str = "revert"
    guard_windows: int = 10
    # The accuracy matrix (accuracy_matrix.csv, forgetting) covers the newest this many windows, so
    # the work of writing it stays the same however long the run.
    matrix_windows: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.rollback, bool):
            raise ValueError(f"loop.rollback must be true or false, got {self.rollback!r}")
        if self.guard not in GUARDS:
            raise ValueError(f"loop.guard must be one of {', '.join(GUARDS)}; got {self.guard!r}")
        windows = self.guard_windows
        if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
            raise ValueError(f"loop.guard_windows must be a window count >= 1, got {self.guard_windows!r}")
        matrix = self.matrix_windows
        if isinstance(matrix, bool) or not isinstance(matrix, int) or matrix < 1:
            raise ValueError(f"loop.matrix_windows must be a window count >= 1, got {self.matrix_windows!r}")
        if self.warmup_windows < 1:
            raise ValueError(f"loop.warmup_windows must be >= 1, got {self.warmup_windows}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"loop.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.head not in ("grow", "full"):
            raise ValueError(f"loop.head must be 'grow' or 'full', got {self.head!r}")


@dataclass(frozen=True)
class Challenger:
    """Model iteration: another architecture's line. At every ``every``-th update a model that
    ``build`` makes is also retrained from scratch on all history, a new major version, and weighed
    against the champion by the same gate; if it wins, fine-tunes continue its line."""

    build: Callable[..., ClassifierModule]
    name: str = "challenger"
    every: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"challenger.every must be an update count >= 1, got {self.every!r}")

    def make(self, **schema) -> ClassifierModule:
        module = self.build(**schema) if schema else self.build()
        module.architecture = "challenger"
        return module
