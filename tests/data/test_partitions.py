"""Partitions landing day by day: the same windows as the whole table read at once, each handed out
once complete, late rows counted and never added, a new process continuing where the last stopped
(from a compact state), and bad partitions stopping a poll with the file named and nothing lost.
Labels landing apart from the inputs, later: a window keeps the labels it was given, late ones are
counted, and a loop run night by night ends as one run over everything."""

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from perennial.cli.common import CONF_DIR
from perennial.data import DataError, PartitionedTable, TableStream, Window, open_table
from perennial.registry import Registry
from tests.conftest import make_loop

from .test_table import sales

DAY = pd.Timedelta("1D")


def days(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The table cut into one partition a day, in time order."""
    frame = frame.sort_values("when", kind="stable")
    return [(day, part) for day, part in frame.groupby(frame["when"].dt.strftime("%Y-%m-%d"), sort=True)]


def land(root: Path, day: str, part: pd.DataFrame, fmt: str = "csv", hive: bool = False) -> Path:
    """Write one day's partition as a producer would: ``day=2024-03-01.csv`` or
    ``date=2024-03-01/part-0.parquet``."""
    path = root / f"date={day}" / f"part-0.{fmt}" if hive else root / f"day={day}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        part.to_parquet(path, index=False)
    else:
        part.to_csv(path, index=False)
    return path


@pytest.fixture
def landed(tmp_path: Path) -> Path:
    """60 days of sales, one CSV a day."""
    root = tmp_path / "sales"
    for day, part in days(sales()):
        land(root, day, part)
    return root


def assert_same(a: Window, b: Window) -> None:
    assert (a.index, a.start, a.end) == (b.index, b.start, b.end)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.time, b.time)


def stream(root: Path, **options) -> PartitionedTable:
    return PartitionedTable(root, time_column="when", target="label", **{"window": "7D", **options})


@pytest.mark.parametrize(("fmt", "hive"), [("csv", False), ("parquet", False), ("parquet", True)])
def test_partitions_give_the_windows_of_the_whole_table(tmp_path: Path, fmt: str, hive: bool):
    root = tmp_path / "sales"
    parts = days(sales())
    for day, part in parts:
        land(root, day, part, fmt, hive)
    whole = tmp_path / "sales.csv"
    pd.concat(part for _, part in parts).to_csv(whole, index=False)  # the partitions, in path order
    once = TableStream(whole, time_column="when", target="label", window="7D").windows()

    source = stream(root)
    assert source.feature_shape == (6,) and source.classes == ["buy", "skip"]  # known before a poll
    windows = source.poll()
    # 60 days are 8 full weeks and 4 days: the ninth week is not complete, so it waits
    assert len(windows) == 8 and len(once) == 9
    for a, b in zip(once, windows, strict=False):
        assert_same(a, b)
    assert source.feature_names == TableStream(whole, "when", "label").feature_names
    assert source.preprocessing == TableStream(whole, "when", "label").preprocessing
    assert len(source.poll()) == 0  # nothing new
    assert source.input_report()["files"] == 60 and source.input_report()["late_rows"] == 0


def test_a_hive_folder_gives_the_time_to_files_without_it(tmp_path: Path):
    root = tmp_path / "sales"
    for day, part in days(sales()):
        land(root, day, part.drop(columns="when"), "parquet", hive=True)  # date=2024-03-01/part-0.parquet
    source = PartitionedTable(root, time_column="date", target="label", window="7D")
    windows = source.poll()
    assert [len(w) for w in windows] == [14] * 8
    assert windows[0].time[0] == np.datetime64("2024-03-01") and windows[0].time[-1] == np.datetime64(
        "2024-03-07"
    )
    assert source.feature_names[:2] == ["price", "qty"]  # the folder's key is the time, not a feature


def test_each_poll_hands_out_exactly_the_windows_completed_since(tmp_path: Path):
    root = tmp_path / "sales"
    parts = days(sales())
    land(root, *parts[0])
    source = stream(root)  # one day landed: the first week is not complete
    assert source.feature_shape == () and len(source.poll()) == 0
    handed: list[Window] = []
    emitted_at = {}
    for number, (day, part) in enumerate(parts[1:], start=1):
        land(root, day, part)
        new = list(source.poll())
        assert [w.index for w in new] == list(range(len(handed), len(handed) + len(new)))
        for w in new:
            emitted_at[w.index] = number
        handed += new
    # week k is complete once a row at or after its end has landed: the first row of day 7k + 7
    assert emitted_at == {k: 7 * k + 7 for k in range(8)}
    assert source.polled == 8
    whole = stream(root).poll()
    for a, b in zip(whole, handed, strict=True):
        assert_same(a, b)


def test_allowed_lateness_holds_a_window_until_the_watermark_passes(tmp_path: Path):
    root = tmp_path / "sales"
    parts = days(sales())
    for day, part in parts[:8]:  # day 7 (2024-03-08) starts week 1: week 0 is complete
        land(root, day, part)
    assert [len(w) for w in stream(root).poll()] == [14]
    patient = stream(root, allowed_lateness="36h")
    assert len(patient.poll()) == 0  # the newest time less 36h is before the end of week 0
    straggler = sales().iloc[:3].assign(when=pd.Timestamp("2024-03-04 07:00"))
    land(root, "2024-03-04-straggler", straggler)  # in time: week 0 was held back for it
    land(root, *parts[8])  # day 8 ends at 12:00, 36h after week 0 ends
    assert [len(w) for w in patient.poll()] == [17]
    land(root, "2024-03-04-too-late", straggler)
    assert len(patient.poll()) == 0 and patient.input_report()["late_rows_by_window"] == {"0": 3}


def test_empty_periods_are_skipped_and_reported_and_open_ones_wait(tmp_path: Path):
    root = tmp_path / "sales"
    parts = days(sales())
    for day, part in [*parts[:10], parts[30]]:
        land(root, day, part)
    source = stream(root, allowed_lateness="3D")
    # day 30 12:00 less 3 days is in week 3: weeks 0 and 1 are handed out, week 2 passed empty
    assert [w.index for w in source.poll()] == [0, 1]
    land(root, *parts[22])  # week 3 is still open: on time, not late
    land(root, *parts[45])  # weeks 3 to 5 are complete now; week 5 has no rows
    windows = list(source.poll())
    assert [(w.index, w.start, len(w)) for w in windows] == [
        (2, pd.Timestamp("2024-03-22"), 2),
        (3, pd.Timestamp("2024-03-29"), 2),
    ]
    assert source.input_report()["late_rows"] == 0
    [gap] = [i for i in source.issues if i.kind == "empty_window"]
    assert "no rows from 2024-03-15 00:00:00 to 2024-03-22 00:00:00 (1 empty period" in gap.message


def test_late_rows_are_counted_and_reported_never_added(landed: Path, tmp_path: Path):
    source = stream(landed)
    before = [source.window_at(k) for k in range(len(source.poll()))]
    late = sales().iloc[:5].assign(when=pd.Timestamp("2024-03-02 06:00"))  # day 1: week 0
    land(landed, "2024-03-02-resent", late)
    backwards = sales().iloc[:3].assign(when=pd.Timestamp("2024-02-01"))  # older than anything
    land(landed, "2024-02-01", backwards)
    gap = sales().iloc[:2].assign(when=pd.Timestamp("2024-03-09 01:00"))  # week 1
    land(landed, "2024-03-09-resent", gap)

    assert len(source.poll()) == 0
    for k, window in enumerate(before):
        assert_same(source.window_at(k), window)
    report = source.input_report()
    assert report["late_rows"] == 10
    assert report["late_rows_by_window"] == {"0": 5, "1": 2}
    assert report["late_rows_outside_windows"] == 3
    issues = {i.source: i for i in source.issues if i.kind == "late_rows"}
    assert set(issues) == {"day=2024-03-02-resent.csv", "day=2024-02-01.csv", "day=2024-03-09-resent.csv"}
    assert "5 rows" in issues["day=2024-03-02-resent.csv"].message
    assert issues["day=2024-03-02-resent.csv"].window == 0
    assert "before the first window" in issues["day=2024-02-01.csv"].message
    assert json.loads(json.dumps(report)) == report


def test_a_new_process_reads_every_window_again_and_continues(tmp_path: Path):
    root = tmp_path / "sales"
    parts = days(sales())
    for day, part in parts[:30]:
        land(root, day, part)
    first = stream(root)
    handed = list(first.poll())
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON, as the loop's checkpoint keeps it
    for day, part in parts[30:]:
        land(root, day, part)

    second = stream(root)
    second.load_state_dict(state)
    assert second.polled == len(handed) == 4
    assert second.preprocessing == first.preprocessing and second.classes == first.classes
    for window in handed:
        assert_same(second.window_at(window.index), window)
    continued = list(second.poll())
    assert [w.index for w in continued] == [4, 5, 6, 7]
    for a, b in zip(continued, first.poll(), strict=True):
        assert_same(a, b)
    with pytest.raises(IndexError):
        second.window_at(8)


def test_a_backlog_is_read_again_on_access_not_held(landed: Path, monkeypatch: pytest.MonkeyPatch):
    from perennial.data import partitions

    monkeypatch.setattr(partitions, "KEEP_BYTES", 1000)  # keeps no window of 14 rows x 6 features
    windows = stream(landed).poll()
    assert len(windows) == 8 and windows[-1].index == 7 and [w.index for w in windows[2:4]] == [2, 3]
    monkeypatch.setattr(partitions, "KEEP_BYTES", 1 << 30)
    for a, b in zip(stream(landed).poll(), windows, strict=True):
        assert_same(a, b)


def test_bad_rows_are_quarantined_naming_file_and_row(tmp_path: Path):
    root = tmp_path / "sales"
    parts = days(sales())
    for day, part in parts:
        part = part.astype({"price": float, "label": object})
        if day == "2024-03-10":
            part.iloc[1, part.columns.get_loc("price")] = np.nan
        if day == "2024-03-20":
            part.iloc[0, part.columns.get_loc("label")] = "maybe"  # not a class of the first window
        if day == "2024-03-21":
            part.iloc[1, part.columns.get_loc("when")] = None
        land(root, day, part)
    source = stream(root)
    windows = source.poll()
    assert source.quarantined_rows == 3 and sum(len(w) for w in windows) == 8 * 14 - 3
    reasons = source.quarantine.set_index("_source")["reason"]
    assert "'price'" in reasons[str(root / "day=2024-03-10.csv")]
    assert (
        "label 'maybe' is not one of the classes ['buy', 'skip']" in reasons[str(root / "day=2024-03-20.csv")]
    )
    assert reasons[str(root / "day=2024-03-21.csv")] == "missing time"
    rows = {(i.source, i.row) for i in source.issues if i.kind == "bad_row"}
    assert rows == {
        (str(root / "day=2024-03-10.csv"), 1),
        (str(root / "day=2024-03-20.csv"), 0),
        (str(root / "day=2024-03-21.csv"), 1),
    }


def poll_fails(source: PartitionedTable, match: str) -> None:
    """The poll raises a DataError matching ``match``, and the source is as it was before it."""
    state = json.dumps(source.state_dict())
    with pytest.raises(DataError, match=match):
        source.poll()
    assert json.dumps(source.state_dict()) == state


def test_a_partition_without_a_feature_column_stops_the_poll_until_fixed(tmp_path: Path):
    root = tmp_path / "sales"
    parts = days(sales())
    for day, part in parts[:20]:
        land(root, day, part)
    source = stream(root)
    assert len(source.poll()) == 2
    land(root, parts[20][0], parts[20][1].drop(columns="qty"))
    poll_fails(source, r"day=2024-03-21\.csv: column 'qty' \(features\) not found; the file has columns")
    land(root, *parts[20])  # fixed
    assert [w.index for w in source.poll()] == []
    land(root, *parts[21])
    assert [w.index for w in source.poll()] == [2]


def test_a_numeric_column_that_turns_to_text_is_a_type_change(tmp_path: Path):
    root = tmp_path / "sales"
    parts = days(sales())
    for day, part in parts[:15]:
        land(root, day, part)
    source = stream(root)
    assert len(source.poll()) == 2
    land(root, parts[15][0], parts[15][1].assign(price=["cheap", "dear"]))
    for day, part in parts[16:22]:
        land(root, day, part)
    poll_fails(
        source, r"day=2024-03-16\.csv: column 'price' was numeric .* holds 'cheap' at row 0 .*type changed"
    )


def test_corrupt_parquet_and_unreadable_csv_are_named(landed: Path):
    source = stream(landed)
    source.poll()
    (landed / "day=2024-05-01.parquet").write_bytes(b"PAR1 not really")
    poll_fails(source, r"day=2024-05-01\.parquet: cannot read the file as parquet")
    (landed / "day=2024-05-01.parquet").unlink()
    (landed / "day=2024-05-02.csv").write_text(
        "when,store,price,qty,label\n2024-05-02,north,1,2,buy,extra,fields\n"
    )
    poll_fails(source, r"day=2024-05-02\.csv: cannot read the file as csv")
    (landed / "day=2024-05-02.csv").write_bytes(b"when,store,price,qty,label\n2024-05-02\xff,n,1,2,buy\n")
    poll_fails(source, r"day=2024-05-02\.csv: cannot read the file as csv")
    (landed / "day=2024-05-02.csv").write_text("")
    poll_fails(source, r"day=2024-05-02\.csv: the file is empty")
    (landed / "day=2024-05-02.csv").write_text("when,store,price,qty,label\nsoon,north,1,2,buy\n")
    poll_fails(source, r"day=2024-05-02\.csv: column 'when': cannot parse 'soon' at row 0")
    (landed / "day=2024-05-02.csv").unlink()
    assert len(source.poll()) == 0  # fixed: nothing was lost, nothing new


def test_a_partition_that_disappears_is_reported_and_named_when_needed(landed: Path):
    source = stream(landed)
    source.poll()
    (landed / "day=2024-03-09.csv").unlink()  # backs window 1
    assert len(source.poll()) == 0
    [issue] = [i for i in source.issues if i.kind == "missing_file"]
    assert issue.source == "day=2024-03-09.csv" and "windows [1]" in issue.message
    assert source.input_report()["missing_files"] == ["day=2024-03-09.csv"]
    source.window_at(0)
    with pytest.raises(DataError, match=r"day=2024-03-09\.csv: window 1 .* no longer there; restore it"):
        source.window_at(1)


def test_a_changed_file_reads_as_before_and_its_new_rows_are_late(landed: Path):
    source = stream(landed)
    window = source.poll()[0]
    path = landed / "day=2024-03-02.csv"
    extra = sales().iloc[:2].assign(when=pd.Timestamp("2024-03-02 18:00"))
    extra.to_csv(path, mode="a", header=False, index=False)  # appended: the old rows are as they were
    source.poll()
    assert_same(source.window_at(0), window)
    assert source.input_report()["late_rows_by_window"] == {"0": 2}
    assert any(i.kind == "changed_file" and i.source == "day=2024-03-02.csv" for i in source.issues)
    edited = pd.read_csv(path).assign(qty=99)  # rows of window 0 rewritten
    edited.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"day=2024-03-02\.csv: window 0 .* reads differently"):
        source.window_at(0)


def test_other_files_are_set_aside_and_markers_ignored(landed: Path):
    (landed / "README.txt").write_text("daily sales")
    (landed / "_SUCCESS").write_text("")
    (landed / ".day=2024-05-01.csv.tmp").write_text("half a file")
    source = stream(landed)
    assert len(source.poll()) == 8
    assert source.input_report()["set_aside_files"] == [
        {"file": "README.txt", "reason": "unsupported file type '.txt'; accepted: .csv, .tsv, .parquet, .pq"}
    ]
    assert [i.source for i in source.issues if i.kind == "set_aside"] == ["README.txt"]


def test_a_glob_reads_only_the_files_it_matches(landed: Path):
    (landed / "notes.csv").write_text("nothing,to,see\n1,2,3\n")
    source = PartitionedTable(str(landed / "day=*.csv"), "when", "label", "7D")
    assert len(source.poll()) == 8 and source.input_report()["files"] == 60


def test_options_that_cannot_work_on_partitions_are_refused(landed: Path):
    with pytest.raises(ValueError, match=r"window=500: partitions are cut into periods of time"):
        stream(landed, window=500)
    with pytest.raises(ValueError, match=r"allowed_lateness must be a duration >= 0"):
        stream(landed, allowed_lateness="-1h")
    with pytest.raises(ValueError, match=r"is one file: read it with TableStream"):
        stream(landed / "day=2024-03-01.csv")
    with pytest.raises(DataError, match=r"nowhere: no such directory"):
        stream(landed / "nowhere")


def test_open_table_picks_the_source_a_path_needs(landed: Path, tmp_path: Path):
    one = tmp_path / "one.csv"
    sales().to_csv(one, index=False)
    assert isinstance(open_table(one, "when", "label", allowed_lateness="0s"), TableStream)
    assert isinstance(open_table(landed, "when", "label"), PartitionedTable)
    assert isinstance(open_table(f"{landed}/*.csv", "when", "label"), PartitionedTable)
    with pytest.raises(ValueError, match=r"allowed_lateness='1D' applies to a directory of partitions"):
        open_table(one, "when", "label", allowed_lateness="1D")


def test_table_config_reads_a_directory_of_partitions(landed: Path):
    config = OmegaConf.load(Path(CONF_DIR) / "data" / "table.yaml")
    source = instantiate(config, path=str(landed), time_column="when", target="label", window="14D")
    assert isinstance(source, PartitionedTable) and [len(w) for w in source.poll()] == [28] * 4
    assert source.allowed_lateness == "0s"


def test_the_state_lists_each_file_once_and_windows_by_runs_of_file_numbers(landed: Path):
    source = stream(landed)
    source.poll()
    state = json.loads(json.dumps(source.state_dict()))
    files = state["files"]
    number = files["name"].index("day=2024-03-05.csv")
    stat = os.stat(landed / "day=2024-03-05.csv")
    assert (files["size"][number], files["mtime_ns"][number], files["rows"][number]) == (
        stat.st_size,
        stat.st_mtime_ns,
        2,
    )
    assert files["name"][:7] == [f"day=2024-03-0{d}.csv" for d in range(1, 8)]  # numbered as first seen
    assert state["windows"][0]["files"] == [[0, 6, 2]]  # files 0..6 gave 2 rows each
    # a time range only where a window to come may read the file: the four days of the open week
    assert sorted(files["name"][int(i)] for i in files["first"]) == [
        f"day=2024-04-{d:02d}.csv" for d in range(26, 30)
    ]
    # the same windows, read again in a new process from the compact state
    again = stream(landed)
    again.load_state_dict(state)
    for k in range(8):
        assert_same(again.window_at(k), source.window_at(k))
    assert again.state_dict() == state


def test_a_state_saved_before_files_were_numbered_still_loads(landed: Path):
    source = stream(landed)
    source.poll()
    ledger = asdict(source._ledger)
    old = {k: v for k, v in ledger.items() if not k.startswith("label")}
    for window in old["windows"]:
        del window["labels"], window["labelled"], window["labels_digest"], window["keys"], window["unkeyed"]
    old = {"format": "perennial.partitioned-table/1", "polled": 8, **old}
    again = stream(landed)
    again.load_state_dict(json.loads(json.dumps(old)))
    assert_same(again.window_at(3), source.window_at(3))
    assert again.state_dict() == source.state_dict()


# -- labels that land apart from the inputs -------------------------------------------------------------


def orders(n_days: int = 60, per_day: int = 2) -> pd.DataFrame:
    """A shop's orders in time order, each named by its ``order`` id; ``label`` follows price and qty."""
    rng = np.random.default_rng(0)
    n = n_days * per_day
    when = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(n) * 24 / per_day, unit="h")
    price, qty = rng.normal(10, 2, n).round(2), rng.integers(0, 20, n)
    label = np.where(price + 0.2 * qty + rng.normal(0, 1, n) > 12, "buy", "skip")
    store = rng.choice(["north", "south"], n)
    ids = [f"o{i:05d}" for i in range(n)]
    return pd.DataFrame(
        {"when": when, "order": ids, "store": store, "price": price, "qty": qty, "label": label}
    )


def land_inputs(root: Path, frame: pd.DataFrame, first: int, last: int) -> None:
    """Days ``first..last-1`` of ``frame``, a CSV a day, without the label."""
    for day, part in days(frame)[first:last]:
        land(root, day, part.drop(columns="label"))


def land_labels(folder: Path, name: str, rows: pd.DataFrame) -> Path:
    """A label file: each row's key and label."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.suffix == ".parquet":
        rows[["order", "label"]].to_parquet(path, index=False)
    else:
        rows[["order", "label"]].to_csv(path, index=False)
    return path


def apart(root: Path, labels: Path, **options) -> PartitionedTable:
    options = {"window": "7D", "labels": labels, "key": "order", "classes": ["buy", "skip"], **options}
    return PartitionedTable(root, time_column="when", target="label", **options)


def week(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    start = pd.Timestamp("2024-03-01") + k * 7 * DAY
    return frame[(frame["when"] >= start) & (frame["when"] < start + 7 * DAY)]


def labelled_as(frame: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """The class ids a window of ``frame``'s rows has once ``rows`` are labelled: -1 for the others."""
    ids = np.where(frame["label"] == "buy", 0, 1)
    return np.where(frame["order"].isin(rows["order"]), ids, -1)


def test_labels_that_land_later_label_their_window_once_and_for_good(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "sales", tmp_path / "labels"
    labels.mkdir()
    land_inputs(inputs, frame, 0, 22)  # weeks 0 to 2 are complete
    source = apart(inputs, labels)
    windows = list(source.poll())
    assert [len(w) for w in windows] == [14, 14, 14]
    assert all((w.y == -1).all() for w in windows)  # served before their labels land
    assert source.feature_names[:2] == ["price", "qty"]  # the key is not a feature
    for day, part in days(frame)[:22]:  # the same rows with their labels
        land(tmp_path / "whole", day, part)
    whole = PartitionedTable(tmp_path / "whole", "when", "label", "7D", features=["store", "price", "qty"])
    truth = whole.poll()
    np.testing.assert_array_equal(windows[0].x, truth[0].x)

    w0, w1 = week(frame, 0), week(frame, 1)
    land_labels(labels, "a.csv", pd.concat([w0.iloc[:10], w1.iloc[:5]]))  # 10 of week 0, 5 of week 1
    landed = source.land_labels(0)
    np.testing.assert_array_equal(landed.y, labelled_as(w0, w0.iloc[:10]))
    assert_same(source.window_at(0), landed)
    report = source.input_report()
    assert (report["labelled_rows"], report["unlabelled_rows"], report["labels_waiting"]) == (10, 4, 5)

    # the rest of week 0 lands after its labels did: late, counted, never applied
    land_labels(labels, "b.parquet", pd.concat([w0.iloc[10:], w1.iloc[5:]]))
    np.testing.assert_array_equal(source.land_labels(1).y, truth[1].y)  # 5 from a.csv, 9 from b
    assert_same(source.window_at(0), landed)
    assert_same(source.land_labels(0), landed)  # landed once: kept to
    report = source.input_report()
    assert report["late_labels"] == 4 and report["late_labels_by_window"] == {"0": 4}
    [late] = [i for i in source.issues if i.kind == "late_labels"]
    assert late.source == "b.parquet" and late.window == 0 and "4 labels landed after" in late.message
    assert (source.window_at(2).y == -1).all()  # its labels have not landed

    # a new process reads the labelled windows again, and continues
    state = json.loads(json.dumps(source.state_dict()))
    land_labels(labels, "c.csv", week(frame, 2))
    again = apart(inputs, labels)
    again.load_state_dict(state)
    for k in (0, 1):
        assert_same(again.window_at(k), source.window_at(k))
    assert_same(again.land_labels(2), source.land_labels(2))
    np.testing.assert_array_equal(again.window_at(2).y, truth[2].y)
    assert again.input_report() == source.input_report()


def test_labels_for_windows_to_come_wait_for_them(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "sales", tmp_path / "labels"
    land_labels(labels, "all.csv", frame)  # every label, before any row
    land_inputs(inputs, frame, 0, 8)
    source = apart(inputs, labels)
    source.poll()
    np.testing.assert_array_equal(source.land_labels(0).y, labelled_as(week(frame, 0), frame))
    assert source.input_report()["labels_waiting"] == len(frame) - 14
    state = json.loads(json.dumps(source.state_dict()))
    land_inputs(inputs, frame, 8, 15)
    again = apart(inputs, labels)  # a new process: the waiting labels are read again from their file
    again.load_state_dict(state)
    assert [w.index for w in again.poll()] == [1]
    np.testing.assert_array_equal(again.land_labels(1).y, labelled_as(week(frame, 1), frame))
    assert again.input_report()["labels_waiting"] == len(frame) - 28
    assert again.state_dict()["label_files"]["waiting"] == {"0": [[28, 119]]}  # rows, as spans


def test_one_label_file_that_grows_in_the_partitions_folder(tmp_path: Path):
    frame, inputs = orders(), tmp_path / "sales"
    land_inputs(inputs, frame, 0, 15)
    labels = land_labels(inputs / "labels", "labels.csv", week(frame, 0))  # not read as a partition
    source = apart(inputs, labels)
    assert len(source.poll()) == 2 and source.input_report()["files"] == 15
    first = source.land_labels(0)
    week(frame, 1)[["order", "label"]].to_csv(labels, mode="a", header=False, index=False)
    np.testing.assert_array_equal(source.land_labels(1).y, labelled_as(week(frame, 1), frame))
    assert_same(source.window_at(0), first)  # read from the file's first 14 rows, as then
    assert source.state_dict()["windows"][1]["labels"] == [[0, 0, 28]]
    by_glob = apart(inputs, str(inputs / "labels" / "*.csv"))  # a glob of label files in there too
    assert len(by_glob.poll()) == 2 and by_glob.input_report()["files"] == 15


def label_fails(source: PartitionedTable, index: int, match: str) -> None:
    """Landing window ``index``'s labels raises a DataError matching ``match``, changing nothing."""
    state = json.dumps(source.state_dict())
    with pytest.raises(DataError, match=match):
        source.land_labels(index)
    assert json.dumps(source.state_dict()) == state


def test_bad_label_files_stop_the_landing_until_fixed(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "sales", tmp_path / "labels"
    land_inputs(inputs, frame, 0, 15)
    w0, w1 = week(frame, 0), week(frame, 1)
    land_labels(labels, "a.csv", w0)
    source = apart(inputs, labels)
    source.poll()

    land_labels(labels, "again.csv", w0.iloc[3:4])  # a key labelled twice: both files named
    label_fails(source, 0, r"again\.csv: key 'o00003' at row 0 is labelled already, in .*a\.csv row 3")
    (labels / "again.csv").unlink()
    w1[["label"]].to_csv(labels / "b.csv", index=False)
    label_fails(source, 0, r"b\.csv: label file without the column 'order' \(key\)")
    w1[["order"]].to_csv(labels / "b.csv", index=False)
    label_fails(source, 0, r"b\.csv: label file without the column 'label' \(target\)")
    (labels / "b.csv").unlink()
    (labels / "b.parquet").write_bytes(b"PAR1 not really")
    label_fails(source, 0, r"b\.parquet: cannot read the file as parquet")
    (labels / "b.parquet").unlink()
    (labels / "b.csv").write_text("")
    label_fails(source, 0, r"b\.csv: the file is empty")
    (labels / "b.csv").unlink()
    (labels / "notes.txt").write_text("labels come on Mondays")

    np.testing.assert_array_equal(source.land_labels(0).y, labelled_as(w0, w0))  # fixed
    assert source.input_report()["label_files_set_aside"][0]["file"] == "notes.txt"
    land_labels(labels, "again.csv", w0.iloc[3:4])  # after its window landed: still labelled twice
    label_fails(source, 1, r"again\.csv: key 'o00003' at row 0 is labelled already, in .*a\.csv")
    (labels / "again.csv").unlink()
    land_labels(labels, "a.csv", w0.iloc[:5])  # rewritten, shorter: the labels of window 0 are gone
    label_fails(source, 1, r"a\.csv: label file had 14 rows and has 5 now")


def test_a_label_file_gone_or_edited_is_named_when_its_window_is_read_again(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "sales", tmp_path / "labels"
    land_inputs(inputs, frame, 0, 15)
    land_labels(labels, "a.csv", week(frame, 0))
    land_labels(labels, "b.csv", week(frame, 1))
    source = apart(inputs, labels)
    source.poll()
    source.land_labels(0)
    (labels / "a.csv").unlink()
    # window 1's keys are outside window 0's key range: landing it does not need window 0's labels
    assert (source.land_labels(1).y >= 0).all()
    assert source.input_report()["missing_label_files"] == ["a.csv"]
    with pytest.raises(DataError, match=r"a\.csv: the labels of window 0 were read from this label file"):
        source.window_at(0)
    flipped = week(frame, 1).assign(label=lambda f: np.where(f["label"] == "buy", "skip", "buy"))
    land_labels(labels, "b.csv", flipped)
    with pytest.raises(DataError, match=r"b\.csv: the labels of window 1 read differently"):
        source.window_at(1)


def test_labels_outside_the_classes_leave_their_rows_unlabelled_and_are_reported(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "sales", tmp_path / "labels"
    land_inputs(inputs, frame, 0, 8)
    rows = week(frame, 0).astype({"label": object})
    rows.iloc[3, rows.columns.get_loc("label")] = "maybe"
    rows.iloc[5, rows.columns.get_loc("order")] = None
    land_labels(labels, "a.csv", rows)
    source = apart(inputs, labels)
    source.poll()
    y = source.land_labels(0).y
    assert y[3] == -1 and y[5] == -1 and (np.delete(y, [3, 5]) >= 0).all()
    assert source.input_report()["bad_labels"] == 2
    [issue] = [i for i in source.issues if i.kind == "bad_labels"]
    assert issue.source == "a.csv"
    assert "row 3 (label 'maybe' is not one of the classes ['buy', 'skip'])" in issue.message
    assert "row 5 (no key)" in issue.message


def test_a_key_that_names_two_rows_labels_neither(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "sales", tmp_path / "labels"
    frame.loc[frame.index[[2, 4]], "order"] = "twice"  # in window 0
    frame.loc[frame.index[20], "order"] = frame["order"].iloc[1]  # window 1 repeats a key of window 0
    land_inputs(inputs, frame, 0, 15)
    land_labels(labels, "a.csv", frame.drop_duplicates("order").iloc[:40])
    source = apart(inputs, labels)
    source.poll()
    y0, y1 = source.land_labels(0).y, source.land_labels(1).y
    assert y0[2] == y0[4] == -1 and (np.delete(y0, [2, 4]) >= 0).all()
    assert y1[20 - 14] == -1 and (np.delete(y1, 6) >= 0).all()
    issues = [i for i in source.issues if i.kind == "duplicate_key"]
    assert [i.window for i in issues] == [0, 1] and "'o00001' (window 0)" in issues[1].message
    assert_same(source.window_at(1), source.land_labels(1))


def test_options_for_labels_apart_are_checked(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "sales", tmp_path / "labels"
    labels.mkdir()
    land_inputs(inputs, frame, 0, 8)
    with pytest.raises(ValueError, match=r"cannot define the class ids: declare classes"):
        apart(inputs, labels, classes=None)
    with pytest.raises(ValueError, match=r"give key, the column of both"):
        apart(inputs, labels, key=None)
    with pytest.raises(ValueError, match=r"key='order' joins labels that land apart .* give labels"):
        PartitionedTable(inputs, "when", "label", key="order")
    with pytest.raises(ValueError, match=r"is the folder of the partitions"):
        apart(inputs, inputs)
    with pytest.raises(DataError, match=r"column 'id' \(key\) not found"):
        apart(inputs, labels, key="id")
    land(inputs, "2024-03-09", week(frame, 1).iloc[:2])  # with its label column
    with pytest.raises(DataError, match=r"day=2024-03-09\.csv: has the target column 'label', .*one source"):
        apart(inputs, labels)
    one = tmp_path / "one.csv"
    frame.drop(columns="order").to_csv(one, index=False)
    with pytest.raises(ValueError, match=r"labels=.* applies to a directory of partitions"):
        open_table(one, "when", "label", labels=str(labels), key="order")
    assert isinstance(open_table(one, "when", "label", labels=None, key=None), TableStream)


def test_table_config_passes_labels_apart_through(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "sales", tmp_path / "labels"
    land_inputs(inputs, frame, 0, 8)
    land_labels(labels, "a.csv", week(frame, 0))
    config = OmegaConf.load(Path(CONF_DIR) / "data" / "table.yaml")
    assert config.labels is None and config.key is None
    options = {"time_column": "when", "target": "label", "classes": ["buy", "skip"]}
    source = instantiate(config, path=str(inputs), labels=str(labels), key="order", **options)
    source.poll()
    assert (source.land_labels(0).y >= 0).all()


def test_the_loop_scores_windows_once_their_labels_land_as_one_run_over_everything(tmp_path: Path):
    frame = orders(n_days=43, per_day=12)  # six complete weeks of 84 rows
    halves = {(k, h): week(frame, k).iloc[42 * h : 42 * h + 42] for k in range(6) for h in (0, 1)}
    halves[(2, 1)] = halves[(2, 1)].iloc[3:]  # three labels of week 2 never land

    def source(root: Path) -> PartitionedTable:
        return apart(root / "in", root / "labels", label_delay=1)

    def run(root: Path) -> dict:
        loop = make_loop(root / "run", stream=source(root))  # a new process each time
        result = loop.run(resume=True)
        loop.registry.close()
        return result

    steps = tmp_path / "steps"
    (steps / "labels").mkdir(parents=True)
    for k in range(6):
        # week k lands (with the first day of week k + 1, which completes it), the second half of
        # week k - 1's labels, and the first half of week k's: its labels are all in before they are
        # due at window k + 1
        land_inputs(steps / "in", frame, 7 * k, 7 * k + 8)
        for part in [(k - 1, 1), (k, 0)] if k else [(0, 0), (0, 1)]:
            land_labels(steps / "labels", f"week{part[0]}-{part[1]}.csv", halves[part])
        result = run(steps)
        scored = {r["window"]: r["n_labelled"] for r in result["rows"] if r["served_accuracy"] is not None}
        assert scored == {w: 84 - 3 * (w == 2) for w in range(1, k)}  # labelled one window later

    once = tmp_path / "once"
    land_inputs(once / "in", frame, 0, 43)
    for (k, h), part in halves.items():
        land_labels(once / "labels", f"week{k}-{h}.csv", part)
    whole = run(once)

    assert result["rows"] == whole["rows"] and len(whole["rows"]) == 5
    assert result["input"]["late_labels"] == whole["input"]["late_labels"] == 0
    a, b = Registry(steps / "run" / "registry"), Registry(once / "run" / "registry")
    assert comparable(a) == comparable(b)
    assert whole["input"]["unlabelled_rows"] == 3


def comparable(registry: Registry) -> tuple:
    versions = [
        (v.id, v.parent, v.kind, v.status, v.trained_on_windows, v.n_samples, v.metrics)
        for v in registry.versions()
    ]
    decisions = [(d["version"], d["window"], d["decision"], d["numbers"]) for d in registry.decisions()]
    weights = {
        v.id: {k: t.numpy().tolist() for k, t in registry.load_weights(v.id).items()}
        for v in registry.versions()
    }
    registry.close()
    return versions, decisions, weights
