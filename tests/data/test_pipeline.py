"""A version's input pipeline: stored as plain JSON and read back equal, and raw named rows encoded
exactly as the table's training rows were, with a bad row refused by name (its index and column)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perennial.data import DataError, TableStream
from perennial.data.encoding import OTHER, RowError
from perennial.data.pipeline import FORMAT, InputPipeline
from perennial.registry import Registry, VersionRecord


def flights(n_days: int = 40) -> pd.DataFrame:
    """One flight a day: a number, a carrier (one of them, AA, first flies after the first window,
    and one is missing) and whether it was late."""
    rng = np.random.default_rng(0)
    carrier = rng.choice(["UA", "DL"], n_days).astype(object)
    carrier[25:] = rng.choice(["UA", "DL", "AA"], n_days - 25)
    carrier[12] = None
    frame = pd.DataFrame(
        {
            "day": pd.date_range("2024-01-01", periods=n_days, freq="D").strftime("%Y-%m-%d"),
            "temp": rng.normal(10, 5, n_days).round(1),
            "carrier": carrier,
            "late": rng.choice(["no", "yes"], n_days),
        }
    )
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # the file need not be sorted


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "flights.csv"
    flights().to_csv(path, index=False)
    return path


@pytest.fixture
def stream(csv: Path) -> TableStream:
    return TableStream(csv, time_column="day", target="late", window="7D")


def raw_rows(csv: Path, stream: TableStream) -> list[dict]:
    """The file's rows in the stream's order, as a client would send them: JSON objects of the
    feature columns, nothing but JSON types in them."""
    frame = pd.read_csv(csv)
    frame = frame.iloc[np.argsort(pd.to_datetime(frame["day"]).to_numpy(), kind="stable")]
    return json.loads(frame[["temp", "carrier"]].to_json(orient="records"))


def test_a_pipeline_reads_back_equal_from_json_and_from_the_registry(stream, tmp_path):
    pipeline = InputPipeline.of_stream(stream)
    assert pipeline.feature_shape == (4,) and pipeline.classes == ("no", "yes")
    assert pipeline.feature_names == ("temp", "carrier=DL", "carrier=UA", f"carrier={OTHER}")
    stored = pipeline.to_dict()
    assert stored["format"] == FORMAT
    assert InputPipeline.from_dict(json.loads(json.dumps(stored))) == pipeline
    with Registry(tmp_path / "registry") as reg:
        reg.add(VersionRecord("v1", None, "stateless"), {}, {"pipeline": stored})
        assert InputPipeline.from_dict(reg.load_extra("v1", "pipeline")) == pipeline
    numeric = InputPipeline((2, 3), (0, 1))
    assert InputPipeline.from_dict(numeric.to_dict()) == numeric and numeric.encoding is None


def test_the_first_windows_raw_rows_encode_to_the_streams_inputs(csv, stream):
    pipeline = InputPipeline.from_dict(InputPipeline.of_stream(stream).to_dict())  # as a server has it
    first = stream.windows()[0]
    rows = raw_rows(csv, stream)[: len(first)]
    np.testing.assert_array_equal(pipeline.encode_rows(rows), first.x)
    assert pipeline.encode_rows(rows).dtype == np.float32


def test_unknown_and_missing_categories_encode_as_in_training(csv, stream):
    pipeline = InputPipeline.of_stream(stream)
    rows = raw_rows(csv, stream)
    x = np.concatenate([w.x for w in stream.windows()])
    assert {r["carrier"] for r in rows} == {"UA", "DL", "AA", None}  # AA is first seen after window 0
    np.testing.assert_array_equal(pipeline.encode_rows(rows), x)  # every row of every window
    unseen, missing = pipeline.encode_rows([{"temp": 1.0, "carrier": "AA"}, {"temp": 1.0, "carrier": None}])
    assert unseen[1:].tolist() == [0.0, 0.0, 1.0]  # the carrier's (other) column
    assert missing[1:].tolist() == [0.0, 0.0, 0.0]  # all zeros


GOOD = {"temp": 12.5, "carrier": "UA"}


@pytest.mark.parametrize(
    "bad, column, words",
    [
        ({"carrier": "UA"}, "temp", "missing"),
        ({**GOOD, "gate": "B7"}, "gate", "not a column"),
        ({**GOOD, "temp": "12.5"}, "temp", "expected a number, got the text '12.5'"),
        ({**GOOD, "temp": True}, "temp", "expected a number, got the boolean true"),
        ({**GOOD, "temp": None}, "temp", "expected a number, got null"),
        ({**GOOD, "temp": {"value": 1}}, "temp", "got an object"),
        ({**GOOD, "temp": [1.0]}, "temp", "got a list"),
        ({**GOOD, "temp": math.nan}, "temp", "expected a finite number"),
        ({**GOOD, "temp": math.inf}, "temp", "expected a finite number"),
        ({**GOOD, "temp": 10**400}, "temp", "expected a finite number"),
        ({**GOOD, "carrier": 3}, "carrier", "expected text (the column's categories are), got the number 3"),
        ({**GOOD, "carrier": ["UA"]}, "carrier", "got a list"),
        ({**GOOD, "carrier": {"code": "UA"}}, "carrier", "got an object"),
    ],
)
def test_a_bad_row_is_refused_naming_its_index_and_column(stream, bad, column, words):
    pipeline = InputPipeline.of_stream(stream)
    with pytest.raises(RowError) as err:
        pipeline.encode_rows([GOOD, bad])
    assert (err.value.row, err.value.column) == (1, column)
    assert str(err.value).startswith(f"row 1, column {column!r}: ") and words in str(err.value)


def test_a_row_that_is_not_an_object_is_refused(stream):
    with pytest.raises(RowError, match=r"^row 0: expected an object of column: value, got a list"):
        InputPipeline.of_stream(stream).encode_rows([[12.5, "UA"]])


def test_numeric_streams_take_rows_by_feature_name_or_only_arrays():
    named = InputPipeline((2,), (0, 1), ("temp", "wind"))
    rows = [{"temp": 1.5, "wind": 3}, {"wind": 0.25, "temp": -2}]  # any key order
    np.testing.assert_array_equal(named.encode_rows(rows), np.array([[1.5, 3], [-2, 0.25]], np.float32))
    with pytest.raises(RowError, match=r"^row 0, column 'wind': expected a number, got the text 'calm'"):
        named.encode_rows([{"temp": 1.5, "wind": "calm"}])
    with pytest.raises(RowError, match=r"^row 0, column 'wind': not a finite float32"):
        named.encode_rows([{"temp": 1.5, "wind": 1e39}])  # finite, but not as a float32
    images = InputPipeline((1, 2, 2), tuple(range(10)))
    with pytest.raises(DataError, match="takes numeric arrays, not named rows"):
        images.encode_rows([{"pixel": 1.0}])


def test_numeric_arrays_are_checked_against_the_shape():
    images = InputPipeline((1, 2, 2), tuple(range(10)))
    assert images.check_array([[0, 1, 2, 3]]).shape == (1, 1, 2, 2)  # flat rows are reshaped
    assert images.check_array(np.zeros((3, 1, 2, 2))).dtype == np.float32
    with pytest.raises(DataError, match=r"row 1 has 3 feature\(s\); the model takes 4"):
        images.check_array([[0, 1, 2, 3], [0, 1, 2]])
    with pytest.raises(RowError, match=r"^row 0: feature 2 is not a finite float32 number"):
        images.check_array([[0, 1, math.inf, 3]])


@pytest.mark.parametrize(
    "change, words",
    [
        ({"format": "perennial.table-encoding/1"}, "not an input pipeline"),
        ({"classes": "no,yes"}, "classes must be a list"),
        ({"feature_shape": [5], "feature_names": None}, "does not fit the table encoding, which gives 4"),
        ({"feature_shape": [0]}, "sizes >= 1"),
        ({"feature_names": ["a"]}, "feature_names must be 4 strings"),
        ({"classes": [{"name": "no"}]}, "classes must be JSON scalars"),
        ({"encoding": {"format": "x"}}, "bad encoding"),
        ({"preprocessing": None}, "unknown keys ['preprocessing']"),
    ],
)
def test_a_damaged_pipeline_is_refused_naming_what_is_wrong(stream, change, words):
    stored = {**InputPipeline.of_stream(stream).to_dict(), **change}
    with pytest.raises(ValueError) as err:
        InputPipeline.from_dict(stored)
    assert words in str(err.value)
    missing = InputPipeline.of_stream(stream).to_dict()
    del missing["classes"]
    with pytest.raises(ValueError, match=r"missing keys \['classes'\]"):
        InputPipeline.from_dict(missing)
