"""The unit of data that flows through perennial: one period's examples, and the streams that yield them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Window:
    """The labelled examples that arrived in one period, in time order.

    ``x`` is float32 with shape ``(n, *stream.feature_shape)``; ``y`` holds int64 class ids
    (indices into ``stream.classes``), or for a regression stream float32 target values;
    ``time`` holds one timestamp (or row position) per example.
    """

    index: int
    start: object
    end: object
    x: np.ndarray
    y: np.ndarray
    time: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.time)):
            raise ValueError(
                f"window {self.index}: x, y and time differ in length "
                f"({len(self.x)}, {len(self.y)}, {len(self.time)})"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def label(self) -> str:
        """A short human name for the period, used in tables and plots."""
        return f"{self.start}..{self.end}"


def has_label(y: np.ndarray) -> np.ndarray:
    """Which rows carry a label: a class id >= 0 (-1 marks one not landed yet), or for a regression
    target a value that is not NaN (NaN marks one not landed yet).

    >>> has_label(np.array([0, -1, 2])).tolist(), has_label(np.array([0.5, np.nan], np.float32)).tolist()
    ([True, False, True], [True, False])
    """
    return ~np.isnan(y) if y.dtype.kind == "f" else y >= 0


def window_seed(seed: int, window: int) -> int:
    """Each window draws from its own seed, so a resumed run repeats an uninterrupted one exactly."""
    return seed * 1_000_003 + window


def holdout_split(
    n_rows: int, index: int, holdout_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions ``(train, hold)`` of window ``index`` (``n_rows`` long), cut as the loop cuts it.

    The loop holds these rows out of all training (the gate's fresh data and the accuracy matrix),
    and :func:`perennial.data.avalanche.to_avalanche` makes the same cut, so numbers compare.
    A window of one row is all training; any longer window holds out at least one row.

    >>> train, hold = holdout_split(10, index=0)
    >>> len(train), len(hold), sorted([*train, *hold]) == list(range(10))
    (8, 2, True)
    """
    order = np.random.default_rng(window_seed(seed, index)).permutation(n_rows)
    n_hold = max(1, round(n_rows * holdout_fraction)) if n_rows > 1 else 0
    return order[n_hold:], order[:n_hold]


def present_features(x: np.ndarray, rows: bool = False) -> int | np.ndarray:
    """How many leading feature columns every row of ``x`` carries: the width, less the trailing
    columns that are missing (NaN). A stream's columns only grow: one that appears mid-stream comes
    after the others and is NaN in the windows from before. ``rows=True`` counts per row. Inputs
    that are not flat rows (images) always carry all their features.

    >>> nan = float("nan")
    >>> present_features(np.array([[1.0, 2.0, 5.0], [3.0, 4.0, nan]]))
    2
    >>> present_features(np.array([[1.0, 2.0, 5.0], [3.0, 4.0, nan]]), rows=True).tolist()
    [3, 2]
    """
    if x.ndim != 2:
        width = int(np.prod(x.shape[1:], dtype=np.int64))
        return np.full(len(x), width) if rows else width
    trailing_missing = np.cumprod(np.isnan(x)[:, ::-1], axis=1).sum(1)
    per_row = x.shape[1] - trailing_missing
    return per_row if rows else int(per_row.min(initial=x.shape[1]))


@dataclass(frozen=True)
class DataIssue:
    """One problem found in the input that the loop could go on from (a bad row, an empty window)."""

    kind: str  # "bad_row" | "empty_window"
    source: str  # file path or stream name
    message: str
    row: int | None = None
    column: str | None = None
    window: int | None = None


class DataError(ValueError):
    """Input the loop cannot go on from. The message names the file, the column and the row."""


@dataclass
class Stream(ABC):
    """A source of time windows. Subclasses set ``name``, ``feature_shape`` and ``classes``, and
    ``task``: ``"classification"`` (``y`` holds class ids) or ``"regression"`` (``y`` holds finite
    float32 values and ``classes`` is empty).

    Rows that had to be set aside go to ``quarantine`` (a DataFrame of the original rows with a
    ``reason`` column), and every such event is listed in ``issues``; nothing is dropped silently.
    """

    name: str = field(init=False, default="stream")
    feature_shape: tuple[int, ...] = field(init=False, default=())
    classes: list = field(init=False, default_factory=list)
    task: str = field(init=False, default="classification")
    issues: list[DataIssue] = field(init=False, default_factory=list)
    quarantine: pd.DataFrame = field(init=False, default_factory=pd.DataFrame)
    # How late each window's labels land: a number of windows, or a duration such as "30D" after the
    # window ends (data.label_delay). Predictions are served at once; nothing uses labels before.
    # Keyword-only, so that every stream takes it after its own arguments.
    label_delay: int | str = field(default=0, kw_only=True)

    # How many windows poll() has handed out; part of state_dict().
    polled: int = field(init=False, default=0, repr=False)
    # A source that grows (partitions landing) may have more windows tomorrow: too few today means
    # "wait", where a finished history with too few is an error.
    growing: ClassVar[bool] = False

    @abstractmethod
    def windows(self) -> list[Window]:
        """All windows in time order. Empty windows are skipped and reported in ``issues``."""

    def __iter__(self) -> Iterator[Window]:
        return iter(self.windows())

    def __len__(self) -> int:
        return len(self.windows())

    # ---- what the loop reads: a source that may keep growing ------------------------------------
    # The loop never asks for "all windows". It polls for the windows that became complete since the
    # last poll, re-reads an earlier one when it needs it (late labels, the gate's past windows, a
    # retrain on history), and checkpoints the source with its own state, in one transaction. A
    # finished history is complete at once: the first poll gives every window, later polls none.
    # A source that grows (perennial.data.partitions) overrides all four.

    def poll(self) -> list[Window]:
        """The windows that became complete since the last poll, in order, their indices continuing
        from ``polled``."""
        new = self.windows()[self.polled :]
        self.polled += len(new)
        return new

    def window_at(self, index: int) -> Window:
        """Window ``index`` (one already polled) again; a lazy source reads it again."""
        windows = self.windows()
        if not 0 <= index < len(windows):
            raise IndexError(f"stream {self.name!r} has no window {index} ({len(windows)} windows)")
        return windows[index]

    def land_labels(self, index: int) -> Window:
        """Window ``index`` with the labels that have landed for it (``label_delay`` after it was
        served): a source whose labels arrive apart from its inputs gives class id -1 to rows still
        without one, and keeps to what it gave, so that reading the window again gives the same.
        Here labels come with the inputs."""
        return self.window_at(index)

    @property
    def records_landings(self) -> bool:
        """Whether ``land_labels`` changes the source's state (labels that arrive apart from the
        inputs), so that the loop saves it after landings too, not only after polls."""
        return False

    def state_dict(self) -> dict:
        """What the source has handed out, as plain JSON."""
        return {"polled": self.polled}

    def load_state_dict(self, state: dict) -> None:
        self.polled = int(state["polled"])

    def input_report(self) -> dict:
        """Counts a growing source keeps about its input (rows that landed after their window was
        processed, files set aside), for summary.json; a finished history has none."""
        return {}

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """The width of a model's output for this stream: one score per class, or one value."""
        return 1 if self.task == "regression" else len(self.classes)

    @property
    def quarantined_rows(self) -> int:
        return len(self.quarantine)

    @property
    def preprocessing(self) -> dict | None:
        """How raw rows became ``x`` (fitted scalings, category lists), as plain JSON that the loop
        stores with every version; None for streams whose inputs need no fitted preprocessing."""
        return None


def check_label_delay(delay: object) -> int | str:
    """``data.label_delay`` as a window count (int >= 0) or a pandas duration string ("30D")."""
    bad = DataError(f"data.label_delay must be a window count >= 0 or a duration like '30D', got {delay!r}")
    if isinstance(delay, bool) or delay is None:
        raise bad
    if isinstance(delay, int):
        if delay < 0:
            raise bad
        return delay
    try:
        negative = pd.Timedelta(str(delay)) < pd.Timedelta(0)
    except ValueError:
        raise bad from None
    if negative:
        raise bad
    return str(delay)


def label_arrivals(windows: list[Window], first: int, delay: int | str) -> dict[int, list[int]]:
    """For each step, the windows (from ``first`` on) whose labels land then: ``delay`` windows
    after their own, or at the first window that ends ``delay`` (a duration) after theirs ends.
    Labels due after the last window never land."""
    arrivals: dict[int, list[int]] = {}
    for w in range(first, len(windows)):
        if isinstance(delay, int):
            step = w + delay
        else:
            end = windows[w].end
            if not isinstance(end, pd.Timestamp | np.datetime64):
                raise DataError(
                    f"data.label_delay={delay!r} is a duration, but stream windows end at row positions "
                    f"({end!r}), not times; give a number of windows"
                )
            due = pd.Timestamp(end) + pd.Timedelta(delay)
            later = (s for s in range(w, len(windows)) if pd.Timestamp(windows[s].end) >= due)
            step = next(later, len(windows))
        if step < len(windows):
            arrivals.setdefault(step, []).append(w)
    return arrivals


class WindowFeed(Stream):
    """A source the caller pushes windows into (``ContinuousDeployment.process``), for users with their
    own scheduler. Windows are numbered from 0 in the order pushed; they stay in memory, so a new
    process pushes its history again from window 0 and the loop takes what it already processed as
    history. ``classes`` and ``feature_shape`` describe every window to come.

    >>> feed = WindowFeed("orders", feature_shape=(2,), classes=[0, 1])
    >>> x, y, t = np.zeros((3, 2), np.float32), np.array([0, 1, 0]), np.arange(3)
    >>> feed.push(Window(0, 0, 2, x, y, t))
    >>> [w.index for w in feed.poll()], feed.poll()
    ([0], [])
    """

    growing: ClassVar[bool] = True

    def __init__(
        self, name: str, feature_shape: Sequence[int], classes: Sequence, label_delay: int | str = 0
    ):
        self.name, self.feature_shape, self.classes = name, tuple(feature_shape), list(classes)
        self.issues, self.quarantine, self.label_delay = [], pd.DataFrame(), label_delay
        self.polled, self._pushed = 0, []
        if not self.feature_shape or not self.classes:
            raise ValueError("a WindowFeed needs the feature_shape and the classes of the windows to come")

    def push(self, *windows: Window) -> None:
        """Add the next windows; each must continue the numbering and match the feed's shape."""
        for window in windows:
            if window.index < len(self._pushed):
                continue  # history pushed again by a new process: kept as it was
            if window.index != len(self._pushed):
                raise DataError(f"window {window.index} pushed where window {len(self._pushed)} was due")
            if tuple(window.x.shape[1:]) != self.feature_shape:
                raise DataError(
                    f"window {window.index} has rows of shape {window.x.shape[1:]}; the feed's is "
                    f"{self.feature_shape}"
                )
            if len(window) and (window.y.min() < 0 or window.y.max() >= len(self.classes)):
                raise DataError(f"window {window.index} has labels outside 0..{len(self.classes) - 1}")
            self._pushed.append(window)

    def windows(self) -> list[Window]:
        return list(self._pushed)
