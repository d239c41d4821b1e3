"""Users' own tables: windows by period and by row count, and clear errors on files nobody prepared."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perennial.data import DataError, TableStream

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
    assert stream.feature_shape == (5,)  # price, qty and three stores one-hot
    assert stream.feature_names == ["price", "qty", "store=north", "store=south", "store=west"]
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
    assert stream.feature_names == ["qty", "store=north", "store=south", "store=west"]


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
    assert stream.feature_shape == (5,)


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
