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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from perennial.data.window import DataError

OTHER = "(other)"  # the bucket's name in feature names: airport=(other)
FORMAT = "perennial.table-encoding/1"


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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "categorical", "categories": list(self.categories), "other": OTHER}


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
