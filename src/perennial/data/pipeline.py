"""What a version needs besides its weights to answer a client: how raw inputs become the model's
inputs, and what its class ids name. Stored with every version as plain JSON (the registry's
``pipeline`` extra), so that a server builds a served model from the registry alone, and raw rows
are encoded by the code that encoded the training rows (no train/serve skew).

>>> from perennial.data.encoding import CategoricalColumn, NumericColumn, TableEncoding
>>> encoding = TableEncoding((NumericColumn("fare", 20.0, 10.0), CategoricalColumn("airport", ("LHR",))))
>>> pipeline = InputPipeline((3,), ("no", "yes"), tuple(encoding.feature_names), encoding)
>>> pipeline.row_columns
['fare', 'airport']
>>> pipeline.encode_rows([{"fare": 30.0, "airport": "CDG"}]).tolist()  # CDG was never seen: (other)
[[1.0, 0.0, 1.0]]
>>> pipeline.encode_rows([{"fare": 30.0}])
Traceback (most recent call last):
...
perennial.data.encoding.RowError: row 0, column 'airport': missing; a row has the columns ['fare', 'airport']
>>> InputPipeline.from_dict(pipeline.to_dict()) == pipeline
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perennial.data.encoding import NumericColumn, RowError, TableEncoding
from perennial.data.window import DataError

FORMAT = "perennial.input-pipeline/1"
_KEYS = ("format", "feature_shape", "classes", "feature_names", "encoding")
# Optional keys: a pipeline stored before they existed reads as their default.
_OPTIONAL = {"task": "classification"}
TASKS = ("classification", "regression")


@dataclass(frozen=True)
class InputPipeline:
    """A version's inputs and outputs: the shape of one input (``feature_shape``), its feature names
    (or None), the class names in class-id order (``classes``: JSON scalars), and the fitted table
    encoding of raw rows (``encoding``; None for streams whose inputs are already numeric arrays,
    such as images or the weather stream's columns), and the ``task``: ``classification`` (the
    model answers classes) or ``regression`` (it answers a value; ``classes`` is empty)."""

    feature_shape: tuple[int, ...]
    classes: tuple = ()
    feature_names: tuple[str, ...] | None = None
    encoding: TableEncoding | None = None
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.task == "regression" and self.classes:
            raise ValueError(f"a regression pipeline has no classes, got {self.classes!r}")
        shape = self.feature_shape
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"feature_shape must be a non-empty tuple of sizes >= 1, got {shape!r}")
        for name in ("feature_shape", "classes", "feature_names"):  # frozen: no list inside
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        bad = [c for c in self.classes if isinstance(c, float) and not math.isfinite(c)]
        if bad or not all(isinstance(c, str | int | float | bool) for c in self.classes):
            raise ValueError(f"classes must be JSON scalars (text, numbers, booleans), got {self.classes!r}")
        names = self.feature_names
        if names is not None and (
            len(names) != math.prod(shape) or not all(isinstance(n, str) for n in names)
        ):
            raise ValueError(
                f"feature_names must be {math.prod(shape)} strings, one per feature of shape {shape}, "
                f"got {len(names)}"
            )
        if self.encoding is not None:
            if shape != (self.encoding.width,):
                raise ValueError(
                    f"feature_shape {shape} does not fit the table encoding, which gives "
                    f"{self.encoding.width} features"
                )
            if names is not None and list(names) != self.encoding.feature_names:
                raise ValueError("feature_names differ from the table encoding's feature names")

    @classmethod
    def of_stream(cls, stream: Any) -> InputPipeline:
        """The pipeline of a stream (a :class:`~perennial.data.window.Stream`): its feature shape,
        classes, feature names if it has them, and its fitted ``preprocessing`` if any."""
        if not tuple(stream.feature_shape) or stream.classes is None:
            # A growing source (perennial.data.partitions) fits its inputs on its first complete window.
            raise ValueError(
                f"stream {getattr(stream, 'name', stream)!r} has no feature shape or classes yet "
                f"(feature_shape={tuple(stream.feature_shape)}, classes={stream.classes}): take its "
                "pipeline once it has handed out a window"
            )
        names = getattr(stream, "feature_names", None) or None
        preprocessing = getattr(stream, "preprocessing", None)
        return cls(
            tuple(int(s) for s in stream.feature_shape),
            tuple(_scalar(c) for c in stream.classes),
            None if names is None else tuple(str(n) for n in names),
            None if preprocessing is None else TableEncoding.from_dict(dict(preprocessing)),
            getattr(stream, "task", "classification"),
        )

    @property
    def n_features(self) -> int:
        return math.prod(self.feature_shape)

    @property
    def row_columns(self) -> list[str] | None:
        """The names a raw row (a JSON object) must have, or None when this version takes only
        numeric arrays: a table's raw columns, or else the feature names of flat numeric inputs."""
        if self.encoding is not None:
            return self.encoding.raw_columns
        if self.feature_names is not None and len(self.feature_shape) == 1:
            return list(self.feature_names)
        return None

    def encode_rows(self, rows: Sequence[object]) -> np.ndarray:
        """Raw named rows (``[{"temp": 12.3, "carrier": "UA"}, ...]``) as model inputs of shape
        ``(n, *feature_shape)``, float32.

        A table's rows go through its fitted encoding (:meth:`TableEncoding.transform_records`): every
        raw column, no other; numbers finite; a category never seen goes to the column's ``(other)``
        column, a null category is all zeros, as in training. Without an encoding, a row names each
        feature (``feature_names``) with a finite number, taken as it is. Any other row raises a
        :class:`~perennial.data.encoding.RowError` naming the row and the column; a version that
        takes only numeric arrays raises :class:`~perennial.data.window.DataError`.
        """
        if self.encoding is not None:
            return self.encoding.transform_records(rows)
        names = self.row_columns
        if names is None:
            raise DataError(
                "this version takes numeric arrays, not named rows: its inputs have shape "
                f"{self.feature_shape} and no column names; send each row as a list of numbers"
            )
        # Flat numeric features checked as a table's numeric columns are, then taken as they are.
        identity = TableEncoding(tuple(NumericColumn(n, 0.0, 1.0) for n in names))
        for row, record in enumerate(rows):
            identity.check_record(row, record)
        x = np.array([[float(record[n]) for n in names] for record in rows], dtype=np.float64)  # type: ignore[index]
        return self._finite_float32(x.reshape(len(rows), len(names)))

    def check_array(self, x: Any) -> np.ndarray:
        """Numeric rows ``x`` (an array or nested lists: ``(n, *feature_shape)``, or ``(n, n_features)``
        flattened) as float32 model inputs, or a :class:`~perennial.data.window.DataError` naming
        the first row of the wrong length or the first value that is not a finite float32."""
        if not isinstance(x, np.ndarray):
            n = self.n_features
            bad = [i for i, row in enumerate(x) if len(row) != n]
            if bad:
                raise DataError(f"row {bad[0]} has {len(x[bad[0]])} feature(s); the model takes {n}")
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            x = np.asarray(x, dtype=np.float64)
        rows = len(x)
        if x.shape[1:] not in (self.feature_shape, (self.n_features,)):
            raise DataError(
                f"rows of shape {x.shape[1:]}; the model takes {self.feature_shape} "
                f"(or {self.n_features} numbers a row)"
            )
        return self._finite_float32(x.reshape(rows, self.n_features))

    def _finite_float32(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            x32 = x.astype(np.float32)
        if not np.isfinite(x32).all():  # e.g. 1e999 parses to inf, and float32 overflows past 3.4e38
            row, col = (int(i) for i in np.argwhere(~np.isfinite(x32))[0])
            if self.feature_names is None:
                raise RowError(row, None, f"feature {col} is not a finite float32 number")
            raise RowError(row, self.feature_names[col], "not a finite float32 number")
        return x32.reshape(len(x32), *self.feature_shape)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, stored with every version (the registry's ``pipeline`` extra)."""
        return {
            "format": FORMAT,
            "feature_shape": list(self.feature_shape),
            "classes": list(self.classes),
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "encoding": None if self.encoding is None else self.encoding.to_dict(),
            "task": self.task,
        }

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> InputPipeline:
        """The pipeline :meth:`to_dict` wrote, or a ValueError naming the key that is wrong."""
        if not isinstance(stored, Mapping):
            raise ValueError(f"an input pipeline is a JSON object, got {type(stored).__name__}")
        if stored.get("format") != FORMAT:
            raise ValueError(f"not an input pipeline: format {stored.get('format')!r}, expected {FORMAT!r}")
        unknown = sorted(set(stored) - set(_KEYS) - set(_OPTIONAL), key=str)
        missing = [k for k in _KEYS if k not in stored]
        if unknown or missing:
            raise ValueError(
                f"input pipeline: missing keys {missing}, unknown keys {unknown}; expected {list(_KEYS)}"
            )
        shape, classes, names = stored["feature_shape"], stored["classes"], stored["feature_names"]
        if not isinstance(shape, list | tuple):
            raise ValueError(f"input pipeline: feature_shape must be a list of sizes, got {shape!r}")
        if not isinstance(classes, list | tuple):
            raise ValueError(f"input pipeline: classes must be a list, got {classes!r}")
        if names is not None and not isinstance(names, list | tuple):
            raise ValueError(f"input pipeline: feature_names must be a list or null, got {names!r}")
        encoding = stored["encoding"]
        if encoding is not None:
            try:
                encoding = TableEncoding.from_dict(dict(encoding))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"input pipeline: bad encoding: {type(err).__name__}: {err}") from None
        try:
            task = stored.get("task", _OPTIONAL["task"])
            return cls(tuple(shape), tuple(classes), None if names is None else tuple(names), encoding, task)
        except ValueError as err:
            raise ValueError(f"input pipeline: {err}") from None


def _scalar(value: object) -> object:
    """A class label as JSON: numpy scalars as Python ones, anything else not a scalar as its text."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, str | int | float | bool) else str(value)
