"""How a table's raw columns become a model's inputs: fitted once on the first window, kept as plain
JSON with every version, and applied again to raw rows to give exactly the inputs the model saw.

Numeric columns are standardised. A text column keeps its frequent values, each as a one-hot column,
and sends every other value (rare in the fitting window, or first seen later) to one ``(other)``
column, so the input width is fixed for the life of the model line. A missing value is all zeros.

>>> import pandas as pd
>>> rows = pd.DataFrame({"fare": [10.0, 30.0, 20.0], "airport": ["LHR", "LHR", "CDG"]})
>>> encoding = TableEncoding(
...     (NumericColumn("fare", mean=20.0, scale=10.0), CategoricalColumn("airport", ("LHR",)))
... )
>>> encoding.feature_names
['fare', 'airport=LHR', 'airport=(other)']
>>> encoding.transform(rows).tolist()
[[-1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
>>> TableEncoding.from_dict(encoding.to_dict()) == encoding
True

Raw rows sent as JSON objects (a server's clients) are checked strictly, then encoded by the same code:

>>> encoding.transform_records([{"fare": 30, "airport": "JFK"}]).tolist()  # unknown: (other)
[[1.0, 0.0, 1.0]]
>>> encoding.transform_records([{"fare": "30", "airport": "LHR"}])
Traceback (most recent call last):
...
perennial.data.encoding.RowError: row 0, column 'fare': expected a number, got the text '30'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from perennial.data.window import DataError

OTHER = "(other)"  # the bucket's name in feature names: airport=(other)
FORMAT = "perennial.table-encoding/1"


class RowError(DataError):
    """A raw row that cannot be encoded: the message names the row (its position in the batch) and
    the column."""

    def __init__(self, row: int, column: str | None, problem: str) -> None:
        where = f"row {row}" if column is None else f"row {row}, column {column!r}"
        super().__init__(f"{where}: {problem}")
        self.row, self.column, self.problem = row, column, problem


def _described(value: object) -> str:
    """A raw value as a client would recognise it in an error, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def category_keys(raw: pd.Series) -> pd.Series:
    """Values as they are matched against stored categories: JSON scalars (str, int, float, bool).

    Dates and other objects become their text, so that a stored category list is plain JSON and a
    raw row read back later matches it."""
    if isinstance(raw.dtype, pd.CategoricalDtype):
        raw = raw.astype(object)
    if ptypes.is_datetime64_any_dtype(raw) or ptypes.is_timedelta64_dtype(raw):
        return raw.map(str, na_action="ignore").astype(object)
    return raw.map(_json_scalar, na_action="ignore")


def _json_scalar(value: object) -> object:
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, str | int | float | bool) else str(value)


def frequent_categories(raw: pd.Series, min_frequency: int, max_categories: int) -> tuple:
    """The values of ``raw`` seen at least ``min_frequency`` times, at most ``max_categories`` of them
    (the most frequent; ties go to the value that sorts first), in sorted order.

    >>> frequent_categories(pd.Series(["b", "a", "b", "c", "a", "b"]), min_frequency=2, max_categories=5)
    ('a', 'b')
    >>> frequent_categories(pd.Series(["b", "a", "b", "c", "a", "b"]), min_frequency=1, max_categories=1)
    ('b',)
    """
    counts = category_keys(raw).dropna().value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], _sort_key(item[0])))
    kept = [value for value, count in ranked[:max_categories] if count >= min_frequency]
    return tuple(sorted(kept, key=_sort_key))


def _sort_key(value: object) -> tuple:
    # Mixed types (1 and "a") cannot be compared; group by type name, then by value.
    return (type(value).__name__, value)


@dataclass(frozen=True)
class NumericColumn:
    """A number, standardised: ``(value - mean) / scale``. Missing stays NaN (the quarantine's business)."""

    name: str
    mean: float
    scale: float

    @property
    def feature_names(self) -> list[str]:
        return [self.name]

    def transform(self, raw: pd.Series) -> np.ndarray:
        if ptypes.is_numeric_dtype(raw) and not ptypes.is_bool_dtype(raw):
            numbers = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        else:  # numbers written as text
            numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            unreadable = np.flatnonzero(np.isnan(numbers) & raw.notna().to_numpy())
            if len(unreadable):
                value = raw.iloc[unreadable[0]]
                raise DataError(
                    f"column {self.name!r}: {value!r} at row {unreadable[0]} is not a number "
                    f"({len(unreadable)} such value(s)); the column was numeric when the encoding was fitted"
                )
        return ((numbers - self.mean) / self.scale)[:, None]

    def check_value(self, value: object) -> str | None:
        """What is wrong with ``value`` as this column's raw value in a JSON row, or None.

        Stricter than :meth:`transform` on a file: a row without the number would have been set
        aside in training, and text or a boolean is a client's mistake, not a number to guess."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {_described(value)}"
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer past float's range
            finite = False
        if not finite or not math.isfinite(float(value)):
            return f"expected a finite number, got {_described(value)}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "numeric", "mean": self.mean, "scale": self.scale}


@dataclass(frozen=True)
class CategoricalColumn:
    """A text (or declared categorical) column: one-hot over ``categories``, then the ``(other)`` column."""

    name: str
    categories: tuple

    @property
    def feature_names(self) -> list[str]:
        return [f"{self.name}={c}" for c in self.categories] + [f"{self.name}={OTHER}"]

    def transform(self, raw: pd.Series) -> np.ndarray:
        keys = category_keys(raw)
        codes = pd.Index(self.categories, dtype=object).get_indexer(keys)
        codes[codes < 0] = len(self.categories)  # not kept: the other column
        codes[keys.isna().to_numpy()] = -1  # missing: all zeros
        block = np.zeros((len(raw), len(self.categories) + 1), dtype=np.float64)
        present = np.flatnonzero(codes >= 0)
        block[present, codes[present]] = 1.0
        return block

    @property
    def value_kind(self) -> str | None:
        """The JSON type every kept category has ("text", "boolean" or "number"); None when they
        are of mixed types, or when none was kept, and any scalar is taken."""
        kinds = {_kind(c) for c in self.categories}
        return kinds.pop() if len(kinds) == 1 else None

    def check_value(self, value: object) -> str | None:
        """What is wrong with ``value`` as this column's raw value in a JSON row, or None.

        null is a missing value (all zeros, as in training) and a value never seen goes to
        ``(other)``; but a value of another JSON type than the categories (the number 3 where they
        are text) is refused: a file never mixes them in one column, so it is a client's mistake that
        would otherwise land in ``(other)`` unseen."""
        if value is None:
            return None
        kind = _kind(value)
        if kind is None:
            return f"expected a category ({self.value_kind or 'a JSON scalar'}), got {_described(value)}"
        if kind == "number" and not math.isfinite(float(value)):
            return f"expected a category, got {_described(value)}"
        if self.value_kind is not None and kind != self.value_kind:
            return f"expected {self.value_kind} (the column's categories are), got {_described(value)}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "categorical", "categories": list(self.categories), "other": OTHER}


def _kind(value: object) -> str | None:
    if isinstance(value, bool):  # before int: bool is an int to Python, and True would match 1
        return "boolean"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float):
        return "number"
    return None


@dataclass(frozen=True)
class TableEncoding:
    """The columns a model reads, in the order it reads them."""

    columns: tuple[NumericColumn | CategoricalColumn, ...]

    @property
    def feature_names(self) -> list[str]:
        return [name for column in self.columns for name in column.feature_names]

    @property
    def width(self) -> int:
        return len(self.feature_names)

    @property
    def raw_columns(self) -> list[str]:
        """The raw columns a row must have, by name, in the order they are read."""
        return [c.name for c in self.columns]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows (the file's columns, by name) as float32 model inputs of shape ``(n, width)``."""
        missing = [c.name for c in self.columns if c.name not in frame.columns]
        if missing:
            raise DataError(
                f"columns {missing} of the encoding are not in the rows; they have {list(frame.columns)}"
            )
        if not self.columns:
            return np.empty((len(frame), 0), dtype=np.float32)
        return np.hstack([c.transform(frame[c.name]) for c in self.columns]).astype(np.float32)

    def check_record(self, row: int, record: object) -> None:
        """Refuse raw row number ``row`` (a JSON object: column name to value) with a
        :class:`RowError` naming the row and the column: exactly :attr:`raw_columns`, none missing,
        none extra, each value of its column's type (see ``check_value``)."""
        if not isinstance(record, Mapping):
            raise RowError(row, None, f"expected an object of column: value, got {_described(record)}")
        for column in self.columns:
            if column.name not in record:
                raise RowError(row, column.name, f"missing; a row has the columns {self.raw_columns}")
            problem = column.check_value(record[column.name])
            if problem is not None:
                raise RowError(row, column.name, problem)
        if len(record) != len(self.columns):
            known = set(self.raw_columns)
            extra = next(str(name) for name in record if name not in known)
            raise RowError(
                row, extra, f"not a column of the model's input; a row has the columns {self.raw_columns}"
            )

    def transform_records(self, records: Sequence[object]) -> np.ndarray:
        """Raw rows as JSON objects (``[{"fare": 30.0, "airport": "LHR"}, ...]``), checked by
        :meth:`check_record`, then encoded by :meth:`transform`: the code that encoded the training
        rows, so a served row gets the inputs a file's row got (an unknown category: ``(other)``)."""
        for row, record in enumerate(records):
            self.check_record(row, record)
        # Numbers as float64, as a numeric file column is read; categories as objects, so each value
        # keeps its JSON type for category_keys, as a text, bool or category file column does.
        frame = pd.DataFrame(
            {
                c.name: pd.Series(
                    [record[c.name] for record in records],  # type: ignore[index]
                    dtype=np.float64 if isinstance(c, NumericColumn) else object,
                )
                for c in self.columns
            },
            index=pd.RangeIndex(len(records)),
        )
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            x = self.transform(frame)
        if not np.isfinite(x).all():  # a finite number too large once standardised (1e39 as float32)
            row, feature = np.argwhere(~np.isfinite(x))[0]
            column = [c.name for c in self.columns for _ in c.feature_names][feature]
            value = records[row][column]  # type: ignore[index]
            problem = f"{_described(value)} is too large: as an input it is not a finite float32 number"
            raise RowError(int(row), column, problem)
        return x

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: stored with every version (the ``preprocessing`` extra of the registry)."""
        return {
            "format": FORMAT,
            "columns": [c.to_dict() for c in self.columns],
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> TableEncoding:
        if stored.get("format") != FORMAT:
            raise ValueError(f"not a table encoding: format {stored.get('format')!r}, expected {FORMAT!r}")
        columns: list[NumericColumn | CategoricalColumn] = []
        for column in stored["columns"]:
            if column["kind"] == "numeric":
                columns.append(NumericColumn(column["name"], float(column["mean"]), float(column["scale"])))
            elif column["kind"] == "categorical":
                columns.append(CategoricalColumn(column["name"], tuple(column["categories"])))
            else:
                raise ValueError(
                    f"column {column['name']!r} has kind {column['kind']!r}; expected numeric or categorical"
                )
        return cls(tuple(columns))
