"""Image streams for class- and domain-incremental learning: scikit-learn digits and Fashion-MNIST."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from perennial.data.window import DataError, Stream, Window

SCENARIOS = ("class_incremental", "rotated", "permuted")
ROTATION_STEP = 30.0  # degrees added per window in the "rotated" scenario: 0, 30, 60, ...
FASHION_MNIST_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def scenario_windows(
    images: np.ndarray,
    labels: np.ndarray,
    scenario: str,
    classes_per_window: int,
    n_windows: int,
    seed: int,
    max_per_window: int | None = None,
    scale: float = 1.0,
    rotation_step: float = ROTATION_STEP,
) -> list[Window]:
    """Cut images (n, H, W) into the windows of a continual-learning scenario (pixels/``scale`` in [0, 1]).

    - ``class_incremental``: window k holds classes ``k*classes_per_window ...`` (rows shuffled);
      ``n_windows`` is ignored, there are ``ceil(n_classes / classes_per_window)`` windows.
    - ``rotated``: ``n_windows`` disjoint random shares of the data, window k rotated by
      ``k * rotation_step`` degrees (30 by default).
    - ``permuted``: the same shares, window k with a fixed random pixel permutation (window 0 unpermuted).

    ``max_per_window`` keeps a seeded random subset of each window. ``time`` is the row position in the
    stream, and ``start``/``end`` the first/last row position of the window.
    """
    check_scenario(scenario, classes_per_window, n_windows)
    rng = np.random.default_rng(seed)
    if scenario == "class_incremental":
        group = labels // classes_per_window
        shares = [rng.permutation(np.flatnonzero(group == g)) for g in range(int(group.max()) + 1)]
    else:
        shares = np.array_split(rng.permutation(len(labels)), n_windows)
    if max_per_window is not None:
        shares = [share[:max_per_window] for share in shares]  # shares are already in random order

    height, width = images.shape[1:]
    windows, offset = [], 0
    for k, rows in enumerate(shares):
        x = images[rows].astype(np.float32) / np.float32(scale)
        if scenario == "rotated" and k > 0:
            x = ndimage.rotate(x, k * rotation_step, axes=(1, 2), reshape=False, order=1, mode="constant")
            x = np.clip(x, 0.0, 1.0)
        elif scenario == "permuted" and k > 0:
            x = x.reshape(len(x), -1)[:, rng.permutation(height * width)].reshape(-1, height, width)
        time = np.arange(offset, offset + len(rows))
        y = labels[rows].astype(np.int64)
        windows.append(Window(k, offset, offset + len(rows) - 1, x[:, None], y, time))
        offset += len(rows)
    return windows


def check_scenario(scenario: str, classes_per_window: int, n_windows: int) -> None:
    """Fail at construction, before any data is read, on a scenario that cannot be built."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}; got {scenario!r}")
    if classes_per_window < 1 or n_windows < 1:
        raise ValueError(
            f"classes_per_window and n_windows must be positive; got {classes_per_window}, {n_windows}"
        )


def _read_idx(path: Path) -> np.ndarray:
    """The values of a gzipped IDX file as flat uint8 (image files have a 16-byte header, label files 8)."""
    with gzip.open(path) as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=16 if "images" in path.name else 8)


@dataclass
class DigitsStream(Stream):
    """scikit-learn's 1,797 handwritten digits (8x8, scaled to [0, 1]) as a continual-learning stream.

    Small enough for tests. See :func:`scenario_windows` for the scenarios.

    >>> [sorted(set(w.y.tolist())) for w in DigitsStream("class_incremental")][:2]
    [[0, 1], [2, 3]]
    """

    scenario: str = "class_incremental"
    classes_per_window: int = 2
    n_windows: int = 5
    seed: int = 0
    rotation_step: float = ROTATION_STEP  # degrees per window, "rotated" only: how fast it drifts
    _windows: list[Window] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        check_scenario(self.scenario, self.classes_per_window, self.n_windows)
        self.name = f"digits-{self.scenario}"
        self.feature_shape = (1, 8, 8)
        self.classes = list(range(10))

    def windows(self) -> list[Window]:
        if self._windows is None:
            from sklearn.datasets import load_digits  # ships inside scikit-learn: no network

            digits = load_digits()
            self._windows = scenario_windows(
                digits.images,
                digits.target,
                self.scenario,
                self.classes_per_window,
                self.n_windows,
                self.seed,
                scale=16.0,
                rotation_step=self.rotation_step,
            )
        return self._windows


@dataclass
class FashionMNISTStream(Stream):
    """Fashion-MNIST (28x28, scaled to [0, 1]), train and test images together (70,000), as a stream.

    Read from the Debian package ``dataset-fashion-mnist`` under ``root``; where it is missing,
    torchvision downloads the data to ``download_root``. ``max_per_window`` subsamples each window
    (seeded) for speed. Classes are the ids 0..9 (names in ``FASHION_MNIST_NAMES``). See
    :func:`scenario_windows` for the scenarios.
    """

    scenario: str = "class_incremental"
    classes_per_window: int = 2
    n_windows: int = 5
    root: str = "/usr/share/datasets/fashion-mnist"
    download_root: str = "~/.cache/perennial/fashion-mnist"
    max_per_window: int | None = None
    seed: int = 0
    _images: np.ndarray = field(init=False, repr=False)
    _labels: np.ndarray = field(init=False, repr=False)
    _windows: list[Window] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        check_scenario(self.scenario, self.classes_per_window, self.n_windows)
        if self.max_per_window is not None and self.max_per_window < 1:
            raise ValueError(f"max_per_window must be positive or None; got {self.max_per_window}")
        self._images, self._labels = self._load()
        self.name = f"fashion_mnist-{self.scenario}"
        self.feature_shape = (1, 28, 28)
        self.classes = list(range(10))

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (70000, 28, 28) and labels: from the Debian package, else torchvision's download."""
        root = Path(self.root).expanduser()
        kinds = ("images-idx3", "labels-idx1")
        files = [root / f"{part}-{kind}-ubyte.gz" for part in ("train", "t10k") for kind in kinds]
        if all(f.is_file() for f in files):
            train_images, train_labels, test_images, test_labels = (_read_idx(f) for f in files)
            images = np.concatenate([train_images, test_images]).reshape(-1, 28, 28)
            return images, np.concatenate([train_labels, test_labels]).astype(np.int64)
        download = Path(self.download_root).expanduser()
        try:
            from torchvision.datasets import FashionMNIST

            sets = [FashionMNIST(str(download), train=train, download=True) for train in (True, False)]
        except Exception as err:
            raise DataError(
                f"fashion_mnist: no data files under {root} and the download to {download} failed ({err}); "
                f"install them with `apt-get install dataset-fashion-mnist`, or go online"
            ) from err
        return (
            np.concatenate([s.data.numpy() for s in sets]),
            np.concatenate([s.targets.numpy() for s in sets]).astype(np.int64),
        )

    def windows(self) -> list[Window]:
        if self._windows is None:
            self._windows = scenario_windows(
                self._images,
                self._labels,
                self.scenario,
                self.classes_per_window,
                self.n_windows,
                self.seed,
                self.max_per_window,
                scale=255.0,
            )
        return self._windows
