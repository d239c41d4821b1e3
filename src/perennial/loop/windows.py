"""The windows the loop reads: through its source, with the few in use kept at hand.

The loop never holds the whole stream. It asks the source for each new window, keeps the last
``KEEP`` windows it touched (and their train/held-out cut), and reads an older one from the source
again when it needs it: late labels, the gate's past windows, a retrain on history, a drift
reference. So memory is bounded by the windows in use, and a run continued in a new process (the
next night) reads what it needs from the same source.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from perennial.data.window import DataError, Stream, Window, has_label, holdout_split, present_features

# Windows kept in memory: more than the gate's past windows, a drift trigger's sliding reference and
# a few windows of label delay, which is what a step usually touches.
KEEP = 32


@dataclass(frozen=True)
class Split:
    """A window cut once, by a seeded permutation, into rows to train on and rows held out."""

    train: tuple[np.ndarray, np.ndarray]
    holdout: tuple[np.ndarray, np.ndarray]


class WindowData:
    """Window ``w`` of ``source``, its cut and its schema, read on demand with an LRU of ``KEEP``."""

    def __init__(self, source: Stream, holdout_fraction: float, seed: int) -> None:
        self.source, self.holdout_fraction, self.seed = source, holdout_fraction, seed
        self._windows: OrderedDict[int, Window] = OrderedDict()
        self._splits: OrderedDict[int, Split] = OrderedDict()
        self._present: dict[int, int] = {}  # one number a window: kept for the run
        self._reference: tuple[tuple, np.ndarray] = ((), np.empty(0))

    @property
    def width(self) -> int:
        """The feature columns the stream has; columns only grow, at the end (present_features).
        Read when needed: a growing source knows it from its first window."""
        return math.prod(self.source.feature_shape) if self.source.feature_shape else 0

    def add(self, window: Window) -> None:
        """A window just polled from the source."""
        self._keep(self._windows, window.index, window)

    def __getitem__(self, w: int) -> Window:
        if w in self._windows:
            self._windows.move_to_end(w)
            return self._windows[w]
        window = self.source.window_at(w)
        if window.index != w:
            raise DataError(f"source {self.source.name!r} returned window {window.index} for window {w}")
        self._keep(self._windows, w, window)
        return window

    @staticmethod
    def _keep(cache: OrderedDict, key: int, value: object) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > KEEP:
            cache.popitem(last=False)

    def land(self, w: int) -> Window:
        """Window ``w``'s labels land: the source hands over the window with the labels it has now
        (and keeps to them, so a re-read gives the same); rows still without one are not used."""
        window = self.source.land_labels(w)
        if window.index != w:
            raise DataError(f"source {self.source.name!r} returned window {window.index} for window {w}")
        self._keep(self._windows, w, window)
        self._splits.pop(w, None)
        return self.labelled(w)

    def labelled(self, w: int) -> Window:
        """Window ``w``'s rows that have a label (``has_label``): all of them, unless the source's
        labels arrive separately from its inputs and some never landed."""
        window = self[w]
        known = has_label(window.y)
        if known.all():
            return window
        return replace(window, x=window.x[known], y=window.y[known], time=window.time[known])

    def xy(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        window = self.labelled(w)
        return window.x, window.y

    def split(self, w: int) -> Split:
        if w in self._splits:
            self._splits.move_to_end(w)
            return self._splits[w]
        window = self.labelled(w)
        train, hold = holdout_split(len(window), w, self.holdout_fraction, self.seed)
        split = Split((window.x[train], window.y[train]), (window.x[hold], window.y[hold]))
        self._keep(self._splits, w, split)
        return split

    def train_splits(self, upto: int, skip: Sequence[int] = ()) -> TrainSplits:
        """Training rows of every window up to ``upto``, except ``skip`` (quarantined windows), read
        only when an update asks for them: a fine-tune reads its new windows, not the whole history."""
        return TrainSplits(self, upto, skip)

    def present(self, w: int) -> int:
        """The leading feature columns every row of window ``w`` carries."""
        if w not in self._present:
            self._present[w] = present_features(self[w].x)
        return self._present[w]

    def columns(self, w: int) -> int | None:
        """``present(w)`` as a model's ``n_features``: None when that is all of the stream's."""
        return None if self.present(w) >= self.width else self.present(w)

    def reference_rows(self, positions: Sequence[int], max_rows: int) -> np.ndarray:
        """Training rows of the windows at ``positions``, at most ``max_rows`` of them, drawn without
        replacement by a generator seeded with the run seed and the windows, so a resumed run and an
        uninterrupted one test against the same rows."""
        key = (tuple(positions), max_rows)
        if self._reference[0] != key:
            parts = [self.split(i).train[0] for i in positions]
            x = np.concatenate(parts) if parts else np.empty((0, *self.source.feature_shape), np.float32)
            if len(x) > max_rows:
                rng = np.random.default_rng([self.seed, *positions])
                x = x[np.sort(rng.choice(len(x), max_rows, replace=False))]
            self._reference = (key, x)
        return self._reference[1]


class TrainSplits(Mapping):
    """Window -> its training rows ``(x, y)``, for windows ``0..upto`` less ``skip``, read on access."""

    def __init__(self, data: WindowData, upto: int, skip: Sequence[int]) -> None:
        skipped = set(skip)
        self._data, self._keys = data, [w for w in range(upto + 1) if w not in skipped]
        self._known = set(self._keys)

    def __getitem__(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        if w not in self._known:
            raise KeyError(w)
        return self._data.split(w).train

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def load_trusted(path: str | Path, stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """A trusted reference set from a ``.npz`` file with arrays ``x`` (rows shaped like the stream's
    features) and ``y`` (class ids); read without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"gate.trusted file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name in ("x", "y")}
    except (ValueError, OSError) as err:
        raise DataError(f"gate.trusted file {path} is not a readable .npz without pickles: {err}") from None
    if set(arrays) != {"x", "y"}:
        raise DataError(f"gate.trusted file {path} needs arrays 'x' and 'y'; it has {sorted(arrays)}")
    x, y = arrays["x"].astype(np.float32), arrays["y"]
    shape = tuple(stream.feature_shape)
    if x.shape[1:] != shape or len(x) != len(y) or not len(y):
        raise DataError(
            f"gate.trusted file {path}: x has shape {x.shape} and y {y.shape}; "
            f"expected (n, {', '.join(map(str, shape))}) and (n,) with n > 0"
        )
    if not np.isfinite(x).all():
        raise DataError(f"gate.trusted file {path}: x holds NaN or infinite values")
    if getattr(stream, "task", "classification") == "regression":
        if y.dtype.kind not in "iuf" or not np.isfinite(y).all():
            raise DataError(f"gate.trusted file {path}: y must be finite target values")
        return x, y.astype(np.float32)
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(stream.classes):
        raise DataError(f"gate.trusted file {path}: y must be class ids in 0..{len(stream.classes) - 1}")
    return x, y.astype(np.int64)
