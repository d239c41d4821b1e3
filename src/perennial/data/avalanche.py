"""Avalanche interop: a perennial stream as an Avalanche benchmark, and an Avalanche benchmark as a stream.

Import it as ``from perennial.data.avalanche import AvalancheStream, to_avalanche``; ``perennial.data``
does not import it, because importing Avalanche takes seconds and pulls in torchvision and wandb.
"""

from __future__ import annotations

import warnings
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from perennial.data.window import DataError, DataIssue, Stream, Window, holdout_split

with warnings.catch_warnings():
    # Avalanche imports qpsolvers for GEM and warns when no solver is installed; nothing here needs one.
    warnings.filterwarnings("ignore", message="no QP solver found")
    from avalanche.benchmarks.scenarios import CLScenario, benchmark_from_datasets, with_task_labels
    from avalanche.benchmarks.utils import ConstantSequence, TaskLabels, as_classification_dataset
    from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset

if TYPE_CHECKING:
    from avalanche.benchmarks.utils import AvalancheDataset

SPLITS = ("train", "test", "both")
LOAD_BATCH = 4096  # rows per DataLoader batch when materialising an experience


def to_avalanche(stream: Stream, holdout_fraction: float = 0.2, seed: int = 0) -> CLScenario:
    """An Avalanche benchmark with one experience per window of ``stream``, split as perennial's loop splits.

    Experience k of ``train_stream`` holds window k's training rows and experience k of ``test_stream``
    its held-out rows (see :func:`holdout_split`; ``seed`` is the loop's ``loop.seed``). Targets are
    perennial's class ids (indices into ``stream.classes``), and every sample carries task label 0, as
    Avalanche's own class- and domain-incremental benchmarks do (its accuracy and loss metrics need one).

    >>> from perennial.data import SyntheticStream
    >>> benchmark = to_avalanche(SyntheticStream(n_samples=300, window=100))
    >>> len(benchmark.train_stream), [len(e.dataset) for e in benchmark.test_stream]
    (3, [20, 20, 20])
    """
    if not isinstance(stream, Stream):
        raise TypeError(
            "to_avalanche needs a perennial Stream (e.g. DigitsStream, TableStream); "
            f"got {type(stream).__name__}"
        )
    if not 0 < holdout_fraction < 1:
        raise ValueError(
            f"holdout_fraction must be in (0, 1), as loop.holdout_fraction; got {holdout_fraction}"
        )
    windows = stream.windows()
    if not windows:
        raise DataError(f"stream {stream.name!r} has no windows to turn into experiences")
    train, test = [], []
    for k, w in enumerate(windows):  # k, not w.index: the loop seeds each split by list position
        train_rows, hold_rows = holdout_split(len(w), k, holdout_fraction, seed)
        train.append(_classification_dataset(w.x[train_rows], w.y[train_rows]))
        test.append(_classification_dataset(w.x[hold_rows], w.y[hold_rows]))
    return with_task_labels(benchmark_from_datasets(train=train, test=test))


def _classification_dataset(x: np.ndarray, y: np.ndarray) -> AvalancheDataset:
    data = TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))
    data.targets = y.tolist()
    # An empty ConstantSequence breaks with_task_labels (it reads element 0), so empty sets get a list.
    tasks = ConstantSequence(0, len(y)) if len(y) else []
    labelled = as_classification_dataset(data).update_data_attribute("targets_task_labels", TaskLabels(tasks))
    # Task-aware, because Avalanche's LwF (and others) read `task_set` from every experience's dataset.
    return TaskAwareSupervisedClassificationDataset([labelled])


@dataclass
class AvalancheStream(Stream):
    """An Avalanche benchmark as a perennial stream: window k is experience k, in stream order.

    ``split`` picks the experiences of ``benchmark.train_stream``, of ``test_stream``, or ``"both"``
    (experience k's training rows, then its test rows). ``classes`` are the labels found in the targets
    of every experience of every stream, sorted; window labels ``y`` index into them, so train and test
    views of one benchmark share class ids. Samples are read through each dataset's eval transforms (no
    augmentation), as float32 of the dataset's sample shape. ``time`` is the row position in this
    stream, ``start``/``end`` the experience index. Empty experiences are skipped and listed in ``issues``.

    >>> from perennial.data import SyntheticStream
    >>> stream = AvalancheStream(to_avalanche(SyntheticStream(n_samples=300, window=100)), split="both")
    >>> [len(w) for w in stream], stream.classes, stream.feature_shape
    ([100, 100, 100], [0, 1], (10,))
    """

    benchmark: CLScenario
    split: str = "train"
    _: KW_ONLY
    name: str | None = None  # overrides Stream.name so the user may name it
    _experiences: list = field(init=False, repr=False, default_factory=list)
    _windows: list[Window] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.benchmark, CLScenario):
            raise TypeError(
                "AvalancheStream needs an Avalanche benchmark (an avalanche.benchmarks.scenarios.CLScenario "
                "with train_stream and test_stream, e.g. from to_avalanche, benchmark_from_datasets or "
                f"SplitMNIST); got {type(self.benchmark).__name__}"
            )
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {self.split!r}")
        # Read each stream once: an Avalanche stream may be a generator.
        streams = {name: list(s) for name, s in self.benchmark.streams.items()}
        wanted = ("train", "test") if self.split == "both" else (self.split,)
        missing = [s for s in wanted if s not in streams]
        if missing:
            raise DataError(
                f"split={self.split!r} needs the benchmark's {' and '.join(missing)} stream; "
                f"it has {sorted(streams)}"
            )
        if len({len(streams[s]) for s in wanted}) > 1:
            raise DataError(
                f"split='both' pairs experience k of train_stream with experience k of test_stream, but they "
                f"have {len(streams['train'])} and {len(streams['test'])} experiences"
            )
        self._experiences = list(zip(*(streams[s] for s in wanted), strict=True))
        self.name = self.name or f"avalanche-{self.split}"
        self.classes = self._labels(streams)
        self.feature_shape = self._sample_shape()

    @staticmethod
    def _labels(streams: dict[str, list]) -> list:
        labels: set = set()
        for name, experiences in streams.items():
            for k, exp in enumerate(experiences):
                targets = getattr(exp.dataset, "targets", None)
                if targets is None:
                    raise DataError(
                        f"experience {k} of the benchmark's {name}_stream has no targets; AvalancheStream "
                        f"reads classification benchmarks (datasets with a targets attribute)"
                    )
                labels.update(int(t) for t in targets.uniques)
        return sorted(labels)

    def _sample_shape(self) -> tuple[int, ...]:
        for datasets in self._experiences:
            for exp in datasets:
                if len(exp.dataset):
                    return tuple(np.shape(exp.dataset.eval()[0][0]))
        return ()

    def windows(self) -> list[Window]:
        if self._windows is None:
            self._windows = self._read()
        return self._windows

    def _read(self) -> list[Window]:
        classes = np.asarray(self.classes, dtype=np.int64)
        windows: list[Window] = []
        offset = 0
        for k, exps in enumerate(self._experiences):
            parts = [self._load(exp.dataset, k) for exp in exps]
            x = np.concatenate([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
            if len(y) == 0:
                self.issues.append(
                    DataIssue(
                        "empty_window",
                        self.name,
                        f"experience {k} of the benchmark's {self.split} stream(s) has no rows; skipped",
                        window=k,
                    )
                )
                continue
            unknown = np.setdiff1d(y, classes)
            if len(unknown):
                raise DataError(
                    f"{self.name}: experience {k} yields labels {unknown.tolist()} that are not in its "
                    f"datasets' targets {self.classes} (a target transform?); the two must agree"
                )
            time = np.arange(offset, offset + len(y))
            windows.append(Window(len(windows), k, k, x, np.searchsorted(classes, y), time))
            offset += len(y)
        return windows

    def _load(self, dataset: AvalancheDataset, k: int) -> tuple[np.ndarray, np.ndarray]:
        """All samples of one experience's dataset as (float32 x, int64 labels), in dataset order."""
        xs, ys = [np.empty((0, *self.feature_shape), np.float32)], [np.empty(0, np.int64)]
        try:
            for batch in DataLoader(dataset.eval(), batch_size=LOAD_BATCH, shuffle=False, num_workers=0):
                xs.append(np.asarray(batch[0], dtype=np.float32))
                ys.append(np.asarray(batch[1], dtype=np.int64))
        except (TypeError, ValueError, RuntimeError) as err:  # default_collate on PIL images, ragged shapes
            raise DataError(
                f"{self.name}: experience {k} has samples that are not same-shape arrays with integer labels "
                f"({err}); give its dataset a transform such as ToTensor()"
            ) from err
        shapes = {x.shape[1:] for x in xs}
        if len(shapes) > 1:
            raise DataError(
                f"{self.name}: experience {k} has samples of shape {sorted(shapes - {self.feature_shape})}, "
                f"not {self.feature_shape} as the first sample of the benchmark"
            )
        return np.concatenate(xs), np.concatenate(ys)
