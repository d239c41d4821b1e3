"""Users' own tables: windows by period and by row count, high-cardinality text columns, the encoding
stored with each version, and clear errors on files nobody prepared."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perennial.data import DataError, TableStream
from perennial.data.encoding import TableEncoding
from perennial.evaluate import PromotionGate
from perennial.learn import StatefulUpdate

N_DAYS = 60  # two rows a day, so a 7-day window holds 14 rows


def sales(n_days: int = N_DAYS) -> pd.DataFrame:
    """A small shop log: a datetime, a categorical, two numeric features and a text label."""
    rng = np.random.default_rng(0)
    n = 2 * n_days
    time = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(n) * 12, unit="h")
    frame = pd.DataFrame(
        {
            "when": time,
            "store": rng.choice(["north", "south", "west"], n),
            "price": rng.normal(10, 2, n).round(2),
            "qty": rng.integers(0, 20, n),
            "label": rng.choice(["buy", "skip"], n),
        }
    )
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)  # the file need not be sorted


def write_csv(frame: pd.DataFrame, tmp_path: Path, name: str = "sales.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    return write_csv(sales(), tmp_path)


def test_weekly_windows_from_csv(csv: Path):
    stream = TableStream(csv, time_column="when", target="label", window="7D")
    windows = stream.windows()

    assert stream.name == "sales"
    assert [len(w) for w in windows] == [14] * 8 + [8]  # 60 days = 8 weeks + 4 days
    assert [w.index for w in windows] == list(range(9))
    assert windows[1].start == pd.Timestamp("2024-03-08") and windows[1].end == pd.Timestamp("2024-03-15")
    for w in windows:
        assert (w.time >= np.datetime64(w.start)).all() and (w.time < np.datetime64(w.end)).all()
        assert (np.diff(w.time) >= np.timedelta64(0)).all()
    assert stream.classes == ["buy", "skip"]
    assert stream.feature_shape == (6,)  # price, qty, three stores one-hot and the other stores
    assert stream.feature_names == [
        "price",
        "qty",
        "store=north",
        "store=south",
        "store=west",
        "store=(other)",
    ]
    first = windows[0].x
    assert first.dtype == np.float32 and windows[0].y.dtype == np.int64
    np.testing.assert_allclose(first[:, :2].mean(axis=0), 0, atol=1e-5)  # standardised on window 0 only
    np.testing.assert_allclose(first[:, :2].std(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(first[:, 2:].sum(axis=1), 1)
    assert not stream.issues and stream.quarantined_rows == 0


def test_labels_follow_the_rows_after_sorting(csv: Path):
    stream = TableStream(csv, time_column="when", target="label", window="7D")
    frame = sales().sort_values("when", kind="stable")
    y = np.concatenate([w.y for w in stream])
    np.testing.assert_array_equal(np.array(stream.classes)[y], frame["label"].to_numpy())


def test_row_count_windows_also_from_a_numeric_string(csv: Path):
    for window in (25, "25"):
        stream = TableStream(csv, time_column="when", target="label", window=window)
        assert [len(w) for w in stream] == [25, 25, 25, 25, 20]
        assert stream.windows()[0].start == pd.Timestamp("2024-03-01")


def test_numeric_time_with_row_count_windows(tmp_path: Path):
    frame = sales().assign(when=np.arange(120)[::-1])
    stream = TableStream(write_csv(frame, tmp_path), time_column="when", target="label", window=50)
    assert [len(w) for w in stream] == [50, 50, 20]
    assert stream.windows()[0].start == 0 and stream.windows()[-1].end == 119
    with pytest.raises(DataError, match=r"sales\.csv.*'when'.*row-count window"):
        TableStream(write_csv(frame, tmp_path), time_column="when", target="label", window="7D")


def test_parquet_gives_the_same_windows_as_csv(csv: Path, tmp_path: Path):
    parquet = tmp_path / "sales.parquet"
    sales().to_parquet(parquet)
    from_csv = TableStream(csv, time_column="when", target="label", window="7D")
    from_parquet = TableStream(parquet, time_column="when", target="label", window="7D")
    assert len(from_parquet) == len(from_csv) == 9
    for a, b in zip(from_csv, from_parquet, strict=True):
        np.testing.assert_allclose(a.x, b.x, atol=1e-6)
        np.testing.assert_array_equal(a.y, b.y)
        assert a.start == b.start


def test_declared_classes_and_categorical(csv: Path):
    stream = TableStream(
        csv,
        time_column="when",
        target="label",
        features=["store", "qty"],
        categorical=["store"],
        classes=["skip", "buy", "later"],
    )
    assert stream.classes == ["skip", "buy", "later"]
    assert stream.feature_names == ["qty", "store=north", "store=south", "store=west", "store=(other)"]


def test_empty_periods_are_skipped_and_reported(tmp_path: Path):
    frame = sales()
    frame = frame[(frame["when"] < "2024-03-15") | (frame["when"] >= "2024-04-05")]  # three empty weeks
    stream = TableStream(write_csv(frame, tmp_path), time_column="when", target="label", window="7D")
    windows = stream.windows()
    assert all(len(w) > 0 for w in windows)
    assert [w.index for w in windows] == list(range(len(windows)))
    assert windows[2].start == pd.Timestamp("2024-04-05")
    [issue] = stream.issues
    assert issue.kind == "empty_window"
    assert "3 empty period" in issue.message and "2024-03-15" in issue.message


def test_bad_rows_are_quarantined_with_reasons_not_dropped(tmp_path: Path):
    frame = sales()
    frame["price"] = frame["price"].astype(float)
    frame.loc[3, "price"] = np.nan
    frame.loc[10, "price"] = np.inf
    frame.loc[4, "label"] = None
    path = write_csv(frame, tmp_path)
    stream = TableStream(path, time_column="when", target="label")

    assert stream.quarantined_rows == 3
    assert sum(len(w) for w in stream) == len(frame) - 3
    quarantine = stream.quarantine.set_index("_row")
    assert sorted(quarantine.index) == [3, 4, 10]
    assert "'price'" in quarantine.loc[3, "reason"] and "'price'" in quarantine.loc[10, "reason"]
    assert "target" in quarantine.loc[4, "reason"]
    assert (quarantine["_source"] == str(path)).all()
    assert sorted(i.row for i in stream.issues if i.kind == "bad_row") == [3, 4, 10]
    assert all(np.isfinite(w.x).all() for w in stream)

    with pytest.raises(DataError, match=r"sales\.csv.*3 bad rows.*row 3 \(line 5"):
        TableStream(path, time_column="when", target="label", on_bad_rows="error")


def test_mostly_bad_file_is_an_error_not_a_quarantine(tmp_path: Path):
    frame = sales()
    frame.loc[frame.index[:70], "label"] = None
    with pytest.raises(DataError, match=r"sales\.csv: 70 of 120 rows would be quarantined"):
        TableStream(write_csv(frame, tmp_path), time_column="when", target="label")


@pytest.mark.parametrize(
    ("column", "row", "value", "expected"),
    [
        ("when", 5, "not a date", r"sales\.csv.*'when'.*'not a date'.*row 5 \(line 7 of the file\).*1 such"),
        ("price", 7, "abc", r"sales\.csv.*'price'.*'abc'.*row 7 \(line 9 of the file\).*1 such row"),
        ("label", 2, "maybe", r"sales\.csv.*'label'.*'maybe'.*row 2 \(line 4 of the file\).*\['buy', 'skip'"),
    ],
)
def test_bad_values_name_file_column_and_row(tmp_path: Path, column: str, row: int, value: str, expected):
    frame = sales().astype({column: object})
    frame.loc[row, column] = value
    path = write_csv(frame, tmp_path)
    with pytest.raises(DataError, match=expected):
        TableStream(path, time_column="when", target="label", classes=["buy", "skip"])


def test_missing_column_lists_the_columns_the_file_has(csv: Path):
    with pytest.raises(DataError, match=r"sales\.csv.*'churn' \(target\) not found.*\['when', 'store'"):
        TableStream(csv, time_column="when", target="churn")
    with pytest.raises(DataError, match=r"'colour' \(features\) not found"):
        TableStream(csv, time_column="when", target="label", features=["colour"])


def test_unreadable_inputs(tmp_path: Path):
    with pytest.raises(DataError, match=r"sales\.xlsx.*accepted: \.csv, \.tsv, \.parquet, \.pq"):
        TableStream(tmp_path / "sales.xlsx", time_column="when", target="label")
    with pytest.raises(DataError, match=r"nothing\.csv: file not found"):
        TableStream(tmp_path / "nothing.csv", time_column="when", target="label")
    (tmp_path / "broken.parquet").write_text("this is not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read"):
        TableStream(tmp_path / "broken.parquet", time_column="when", target="label")


def test_id_like_text_column_must_be_left_out_or_declared(tmp_path: Path):
    frame = sales().assign(order_id=[f"o{i}" for i in range(120)])
    path = write_csv(frame, tmp_path)
    with pytest.raises(DataError, match=r"sales\.csv.*'order_id'.*120 distinct.*`features`.*`categorical`"):
        TableStream(path, time_column="when", target="label")
    stream = TableStream(path, time_column="when", target="label", features=["store", "price", "qty"])
    assert stream.feature_names[:2] == ["price", "qty"]
    declared = TableStream(
        path, time_column="when", target="label", categorical=["order_id"], min_frequency=1
    )
    # every id of the first week has a column, and none comes back: later rows are all "other"
    ids = [n for n in declared.feature_names if n.startswith("order_id=")]
    assert len(ids) == 14 + 1
    for w in declared.windows()[1:]:
        np.testing.assert_array_equal(w.x[:, declared.feature_names.index("order_id=(other)")], 1)


N_AIRPORTS = 105


def flights(n_weeks: int = 4, per_week: int = 400, seed: int = 0) -> pd.DataFrame:
    """Flights from 105 airports with Zipf frequencies; the airport sets the odds of a delay, and five
    airports open only in the third week."""
    rng = np.random.default_rng(seed)
    codes = np.array([f"A{i:03d}" for i in range(N_AIRPORTS)])
    weight = 1.0 / np.arange(1, N_AIRPORTS + 1)
    opening = np.isin(
        np.arange(N_AIRPORTS), [3, 4, 5, 6, 7]
    )  # frequent enough to be kept, had they been there
    n = n_weeks * per_week
    week = np.repeat(np.arange(n_weeks), per_week)
    airport = np.concatenate(
        [
            rng.choice(N_AIRPORTS, per_week, p=(p := np.where(opening & (w < 2), 0, weight)) / p.sum())
            for w in range(n_weeks)
        ]
    )
    effect = rng.normal(0, 2, N_AIRPORTS)
    distance = rng.gamma(2.0, 400.0, n).round(0)
    delayed = rng.random(n) < 1 / (1 + np.exp(-(effect[airport] + (distance - 800) / 560)))
    seconds = week * 7 * 86400 + rng.integers(0, 7 * 86400, n)
    return pd.DataFrame(
        {
            "departure": pd.Timestamp("2024-01-01") + pd.to_timedelta(seconds, unit="s"),
            "airport": codes[airport],
            "distance": distance,
            "delayed": np.where(delayed, "late", "on_time"),
        }
    )


def test_a_text_column_with_105_values_is_encoded_with_a_capped_one_hot_not_refused(tmp_path: Path):
    frame = flights()
    path = write_csv(frame, tmp_path, "flights.csv")
    stream = TableStream(path, "departure", "delayed", window="7D", min_frequency=3, max_categories=20)

    first_week = frame[frame["departure"] < pd.Timestamp("2024-01-08")]
    counts = first_week["airport"].value_counts()
    assert (counts >= 3).sum() > 20  # the cap binds
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))  # ties: the first in order
    kept = sorted(airport for airport, _ in ranked[:20])
    assert stream.feature_names == ["distance", *[f"airport={a}" for a in kept], "airport=(other)"]
    assert counts[kept].min() >= counts.drop(kept).max()  # the most frequent ones
    assert stream.feature_shape == (22,)

    # every row is exactly one airport column or the other column; nothing is silently all zeros
    x = np.concatenate([w.x for w in stream])
    np.testing.assert_array_equal(x[:, 1:].sum(axis=1), 1)
    in_time_order = frame.sort_values("departure", kind="stable")["airport"].to_numpy()
    other = x[:, -1] == 1
    np.testing.assert_array_equal(other, ~np.isin(in_time_order, kept))
    # airports that opened in week 3 are "other", though they became frequent
    assert {"A003", "A004", "A005", "A006", "A007"}.isdisjoint(kept)
    assert other[np.isin(in_time_order, ["A003", "A004"])].all()


def test_one_hot_is_fitted_on_the_first_window_only(tmp_path: Path):
    frame = sales()
    late = frame["when"] >= pd.Timestamp("2024-03-15")
    frame.loc[late & (frame.index % 3 == 0), "store"] = "east"  # opens in week 3
    frame.loc[5, "store"] = None
    stream = TableStream(write_csv(frame, tmp_path), time_column="when", target="label", min_frequency=1)
    assert "store=east" not in stream.feature_names
    x = np.concatenate([w.x for w in stream])
    stores = frame.sort_values("when", kind="stable")["store"].to_numpy()
    other = stream.feature_names.index("store=(other)")
    np.testing.assert_array_equal(x[:, other] == 1, stores == "east")
    missing = pd.isna(stores)
    assert missing.sum() == 1 and (x[missing, 2:] == 0).all()  # a missing value is all zeros


@pytest.mark.parametrize("setting", [{"min_frequency": 0}, {"max_categories": -1}, {"max_categories": 2.5}])
def test_bad_encoding_settings_are_named(csv: Path, setting: dict):
    [(name, value)] = setting.items()
    with pytest.raises(ValueError, match=rf"{name} must be a whole number >= 1; got {value!r}"):
        TableStream(csv, time_column="when", target="label", **setting)


def test_each_version_stores_the_encoding_that_reproduces_its_inputs_from_raw_rows(tmp_path: Path):
    from tests.conftest import make_loop

    frame = flights(per_week=200)
    path = write_csv(frame, tmp_path, "flights.csv")
    stream = TableStream(path, "departure", "delayed", window="7D", min_frequency=2, max_categories=30)
    json.dumps(stream.preprocessing)  # plain JSON, no pickles

    always = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0)  # several versions to read back
    update = StatefulUpdate(epochs=1, replay_fraction=0.5)
    loop = make_loop(tmp_path / "run", stream=stream, gate=always, update=update, initial_epochs=1)
    loop.run()
    raw = pd.read_csv(path).assign(departure=lambda f: pd.to_datetime(f["departure"]))
    raw = raw.sort_values("departure", kind="stable")
    versions = loop.registry.versions()
    assert len(versions) == len(stream) >= 3
    for version in versions:
        stored = loop.registry.load_extra(version.id, "preprocessing")
        assert stored == stream.preprocessing
        encoding = TableEncoding.from_dict(stored)
        assert encoding.feature_names == stream.feature_names
        for window in stream:
            rows = raw[(raw["departure"] >= window.start) & (raw["departure"] < window.end)]
            np.testing.assert_array_equal(encoding.transform(rows), window.x)


def test_messy_but_readable_file(tmp_path: Path):
    path = tmp_path / "log.tsv"
    lines = [
        "t\tok\ttemp",
        "2024-01-01 08:00\t1\t20.5",
        "01/02/2024\t0\t21",
        "",
        "2024-01-09T10:00\t\t19",
        "2024-01-03\t1\t18",
    ]
    path.write_text("\n".join(lines) + "\n")  # mixed date formats, a blank line, a missing label
    stream = TableStream(path, time_column="t", target="ok", window="7D")
    assert stream.classes == [0, 1]  # labels read as floats because of the missing one are still ints
    assert [len(w) for w in stream] == [3]
    assert sorted(stream.quarantine["reason"]) == ["blank line", "missing target"]
    assert stream.quarantine["_row"].tolist() == [2, 3]
