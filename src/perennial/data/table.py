"""Windows from a user's own CSV or Parquet table: checked, encoded and cut by time period or row count."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from perennial.data.encoding import CategoricalColumn, NumericColumn, TableEncoding, frequent_categories
from perennial.data.window import DataError, DataIssue, Stream, Window

SEPARATORS = {".csv": ",", ".tsv": "\t", ".parquet": None, ".pq": None}
BAD_ROW_POLICIES = ("quarantine", "error")
# What the target holds: class labels (y: class ids), or numbers to predict (y: float32 values).
TASKS = ("classification", "regression")
# A text column where this share of rows hold a value found in no other row is an id or free text: no
# value comes back, so there is nothing to learn from it. Judged only with enough rows to tell.
ID_SHARE = 0.9
ID_MIN_ROWS = 20
NUMERIC_SHARE = 0.9  # a text column this numeric is a numeric column with typos
MAX_QUARANTINED_SHARE = 0.5  # beyond this the file is wrong, not a few rows


def windows_by_count(x: np.ndarray, y: np.ndarray, time: np.ndarray, size: int) -> list[Window]:
    """Cut rows already in time order into windows of ``size`` consecutive rows (the last may be shorter).

    Shared by every stream whose windows are row counts; ``start``/``end`` are the first/last time.
    """
    windows = []
    for k, start in enumerate(range(0, len(y), size)):
        rows = slice(start, start + size)
        times = time[rows]
        windows.append(Window(k, _scalar(times[0]), _scalar(times[-1]), x[rows], y[rows], times))
    return windows


def _scalar(value: object) -> object:
    # numpy scalars print badly in window labels; plain Python values and Timestamps do not
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value)
    return value.item() if isinstance(value, np.generic) else value


def sorted_values(values: Sequence) -> list:
    """Distinct values in a stable order; mixed types (``1`` and ``"a"``) fall back to text order."""
    distinct = list(pd.unique(pd.Series(values).dropna()))
    distinct = [v.item() if isinstance(v, np.generic) else v for v in distinct]
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=str)


def parse_window(window: str | int) -> int | pd.Timedelta:
    """A row count (``500``, ``"500"``) or a fixed duration (``"7D"``, ``"1h"``, ``"30min"``)."""
    if isinstance(window, str) and window.strip().isdigit():
        window = int(window)
    if isinstance(window, int) and not isinstance(window, bool):
        if window < 1:
            raise ValueError(f"window must be a positive row count or a duration like '7D'; got {window!r}")
        return window
    try:
        period = pd.Timedelta(window)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"window must be a row count (e.g. 500) or a fixed duration (e.g. '7D', '1h', '30min'); "
            f"got {window!r}"
        ) from err
    if period <= pd.Timedelta(0):
        raise ValueError(f"window must be a positive duration; got {window!r}")
    return period


@dataclass(frozen=True)
class RowOrigin:
    """Where each row of a frame was read, so that a message names the file and the row: row ``i`` is
    data row ``row[i]`` (0-based) of ``paths[file[i]]``. ``lines``: also give the line in the file,
    for text files read with their blank lines kept (line 1 is the header)."""

    paths: tuple[str, ...]
    file: np.ndarray
    row: np.ndarray
    lines: bool = False

    @classmethod
    def of_file(cls, path: str | Path, n_rows: int, lines: bool = False, first: int = 0) -> RowOrigin:
        """``n_rows`` consecutive data rows of one file, from row ``first``."""
        return cls((str(path),), np.zeros(n_rows, np.int64), np.arange(first, first + n_rows), lines)

    @property
    def name(self) -> str:
        """The file these rows came from, for messages about a whole column."""
        more = len(set(self.file.tolist())) - 1 if len(self.file) else 0
        first = self.paths[int(self.file[0])] if len(self.file) else self.paths[0]
        return first if more < 1 else f"{first} (and {more} more file{'s' if more > 1 else ''})"

    def path(self, i: int) -> str:
        return self.paths[int(self.file[i])]

    def at(self, i: int) -> str:
        """Where row ``i`` is, in words a user can find in the file."""
        row = int(self.row[i])
        return f"row {row} (line {row + 2} of the file)" if self.lines else f"row {row}"


@dataclass(frozen=True)
class TableChecks:
    """What a table's columns mean and the checks its raw rows go through before they become a window:
    times parsed, labels matched to classes, feature kinds judged, bad rows set aside with a reason,
    and the encoding fitted on the first window. One implementation for :class:`TableStream` (one
    file) and :class:`perennial.data.partitions.PartitionedTable` (a directory that grows).

    Every message names the file and the row (through a :class:`RowOrigin`)."""

    time_column: str
    target: str
    window: str | int  # as the user wrote it, for messages
    features: Sequence[str] | None = None
    categorical: Sequence[str] | None = None
    on_bad_rows: str = "quarantine"
    min_frequency: int = 1
    max_categories: int = 1000
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.on_bad_rows not in BAD_ROW_POLICIES:
            raise ValueError(f"on_bad_rows must be one of {BAD_ROW_POLICIES}; got {self.on_bad_rows!r}")
        if self.task not in TASKS:
            raise ValueError(f"data.task must be one of {TASKS}; got {self.task!r}")
        for name in ("min_frequency", "max_categories"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1; got {value!r}")

    @classmethod
    def of(cls, source: object) -> TableChecks:
        """The checks of a table source, from its options of the same names."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def check_classes(self, classes: Sequence | None) -> None:
        """``classes`` as declared: at least one, and none for a regression target (it has no classes)."""
        if self.regression and classes is not None:
            raise ValueError(
                f"data.classes must be null with data.task='regression': a numeric target has no classes; "
                f"got classes={list(classes)!r}"
            )
        if classes is not None and len(classes) == 0:
            raise ValueError("classes, when given, must list at least one class")

    # -- columns ------------------------------------------------------------------------------------

    def feature_columns(self, columns: Sequence[str], source: str) -> tuple[list[str], set[str]]:
        """The feature columns (declared, or every column but the time and the target) and the declared
        categorical ones, checked against the ``columns`` a file has."""
        features = (
            list(self.features)
            if self.features is not None
            else [c for c in columns if c not in (self.time_column, self.target)]
        )
        categorical = list(self.categorical or [])
        self.check_columns(columns, source, features)
        for column in (self.time_column, self.target):
            if column in features:
                raise ValueError(f"{source}: column {column!r} cannot be a feature and the time or target")
        for column in categorical:
            if column not in features:
                raise ValueError(f"{source}: categorical {column!r} is not in the features {features}")
        if not features:
            raise DataError(f"{source}: no feature columns; the file has columns {list(columns)}")
        return features, set(categorical)

    def check_columns(self, columns: Sequence[str], source: str, features: Sequence[str]) -> None:
        """DataError naming the first column a file lacks, with its role and the columns it has."""
        roles = [(self.time_column, "time_column"), (self.target, "target")]
        roles += [(c, "features") for c in features] + [(c, "categorical") for c in self.categorical or []]
        for column, role in roles:
            if column not in columns:
                raise DataError(
                    f"{source}: column {column!r} ({role}) not found; the file has columns {list(columns)}"
                )

    # -- times and labels ---------------------------------------------------------------------------

    def parse_time(
        self, raw: pd.Series, period: int | pd.Timedelta, origin: RowOrigin
    ) -> tuple[np.ndarray, np.ndarray]:
        """Times as a numpy array (datetime64, or numbers for row-count windows) and the missing ones."""
        column = self.time_column
        missing = raw.isna().to_numpy()
        if ptypes.is_numeric_dtype(raw) and not ptypes.is_bool_dtype(raw):
            if isinstance(period, pd.Timedelta):
                raise DataError(
                    f"{origin.name}: column {column!r} holds numbers, not dates, so it cannot be cut into "
                    f"periods of {self.window!r}; use a row-count window (e.g. window=500) or store dates"
                )
            if missing.any():  # NaN (quarantined below) rather than pd.NA, which numpy cannot sort
                return raw.to_numpy(dtype=np.float64, na_value=np.nan), missing
            return raw.to_numpy(), missing
        if ptypes.is_datetime64_any_dtype(raw):
            parsed = raw
        else:
            parsed = _to_datetime(raw)
            retry = parsed.isna() & raw.notna()
            if retry.any():  # rows written in another format than the first one
                parsed[retry] = _to_datetime(raw[retry], format="mixed")
            bad = np.flatnonzero((parsed.isna() & raw.notna()).to_numpy())
            if len(bad):
                value, where = _scalar(raw.iloc[bad[0]]), origin.at(bad[0])
                raise DataError(
                    f"{origin.path(bad[0])}: column {column!r}: cannot parse {value!r} at {where} as a "
                    f"date/time ({_rows(len(bad))}); accepted: anything pandas.to_datetime reads, such as "
                    f"'2024-01-31' or '2024-01-31 13:45:00'"
                )
        if getattr(parsed.dtype, "tz", None) is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        return parsed.to_numpy(), missing

    def labels(self, raw: pd.Series, origin: RowOrigin) -> tuple[pd.Series, np.ndarray]:
        """The target column as class labels, and the rows where it is missing. Labels read as floats
        only because of missing values are whole numbers again; continuous values are refused."""
        missing = raw.isna().to_numpy()
        if ptypes.is_float_dtype(raw):
            values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
            fractional = np.flatnonzero(~missing & (values != np.round(values)))
            if len(fractional):
                example = float(values[fractional[0]])
                raise DataError(
                    f"{origin.path(fractional[0])}: target {self.target!r} holds continuous values "
                    f"({example!r} at {origin.at(fractional[0])}); a classification target must hold "
                    f"class labels: set data.task='regression' to predict the number"
                )
            raw = raw.astype("Int64")
        return raw, missing

    def targets(self, raw: pd.Series, origin: RowOrigin) -> tuple[np.ndarray, np.ndarray]:
        """A regression target as float32 values, and the rows where it is missing (NaN, empty). Values
        beyond float32's range are infinite, like ±inf: :meth:`row_checks` sets both aside. A value
        that is not a number is a DataError naming the file, the row and the value."""
        kind = raw.dtype
        times = ptypes.is_datetime64_any_dtype(kind) or ptypes.is_timedelta64_dtype(kind)
        if times or ptypes.is_bool_dtype(kind):
            raise DataError(
                f"{origin.name}: target {self.target!r} holds {kind} values; a regression target "
                f"(data.task='regression') must hold numbers"
            )
        if ptypes.is_numeric_dtype(kind):
            values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        else:  # text (numbers with typos, or a column of labels), read as numbers where it can be
            raw = raw.astype(object)
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            present = raw.notna().to_numpy()
            blank = raw.astype(str).str.strip().str.lower().isin(("", "nan")).to_numpy()
            bad = np.flatnonzero(present & ~blank & np.isnan(values))
            if len(bad):
                raise DataError(
                    f"{origin.path(bad[0])}: target {self.target!r} holds {_scalar(raw.iloc[bad[0]])!r} at "
                    f"{origin.at(bad[0])} ({_rows(len(bad))}), not a number; a regression target "
                    f"(data.task='regression') must hold numbers: fix those values"
                )
        with np.errstate(over="ignore"):  # beyond float32's range: inf, set aside as such
            return values.astype(np.float32), np.isnan(values)

    def class_ids(
        self, labels: pd.Series, missing: np.ndarray, classes: list, origin: RowOrigin, unknown: str = "error"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class ids (-1 where the label is missing or unknown) and the rows whose label is not one of
        ``classes``: a DataError with ``unknown="error"``, returned for the quarantine otherwise."""
        y = pd.Index(classes).get_indexer(labels)
        outside = (y < 0) & ~missing
        stray = np.flatnonzero(outside)
        if len(stray) and unknown == "error":
            raise DataError(
                f"{origin.path(stray[0])}: target {self.target!r}: label {_scalar(labels.iloc[stray[0]])!r} "
                f"at {origin.at(stray[0])} is not one of the declared classes {classes} ({_rows(len(stray))})"
            )
        return y.astype(np.int64), outside

    # -- features -----------------------------------------------------------------------------------

    def feature_kinds(
        self, frame: pd.DataFrame, features: list[str], categorical: set[str], origin: RowOrigin
    ) -> tuple[np.ndarray, list[str], list[str]]:
        """Numeric columns as float64 (NaN/inf kept for the quarantine) with their names, and the names
        of the columns to one-hot encode, each list in ``features`` order."""
        numeric: list[np.ndarray] = []
        numeric_cols: list[str] = []
        text_cols: list[str] = []
        for column in features:
            raw = frame[column]
            declared = column in categorical
            if not declared and ptypes.is_numeric_dtype(raw) and not ptypes.is_bool_dtype(raw):
                numeric.append(raw.to_numpy(dtype=np.float64, na_value=np.nan))
                numeric_cols.append(column)
                continue
            if not declared and (ptypes.is_datetime64_any_dtype(raw) or ptypes.is_timedelta64_dtype(raw)):
                raise DataError(
                    f"{origin.name}: feature column {column!r} holds {raw.dtype} values; accepted feature "
                    f"columns are numeric, text, category or bool: leave it out with `features`"
                )
            is_category = isinstance(raw.dtype, pd.CategoricalDtype)
            if not declared and not ptypes.is_bool_dtype(raw) and not is_category:
                as_number = self._numeric_text(raw, column, origin)
                if as_number is not None:
                    numeric.append(as_number)
                    numeric_cols.append(column)
                    continue
                self._refuse_ids(raw, column, origin)
            text_cols.append(column)
        numeric_matrix = np.column_stack(numeric) if numeric else np.empty((len(frame), 0))
        return numeric_matrix, numeric_cols, text_cols

    def numeric_values(
        self, frame: pd.DataFrame, numeric_cols: Sequence[str], origin: RowOrigin
    ) -> np.ndarray:
        """The numeric columns of rows read after the encoding was fitted, as float64. A value that is
        not a number means the column's type changed: a DataError naming the file, the row and the value."""
        numeric = np.empty((len(frame), len(numeric_cols)))
        for j, column in enumerate(numeric_cols):
            raw = frame[column]
            if ptypes.is_numeric_dtype(raw) or ptypes.is_bool_dtype(raw):
                numeric[:, j] = raw.to_numpy(dtype=np.float64, na_value=np.nan)
                continue
            numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.flatnonzero(np.isnan(numbers) & raw.notna().to_numpy())
            if len(bad):
                raise DataError(
                    f"{origin.path(bad[0])}: column {column!r} was numeric when the encoding was fitted on "
                    f"the first window, but holds {_scalar(raw.iloc[bad[0]])!r} at {origin.at(bad[0])} "
                    f"({_rows(len(bad))}): its type changed; fix the file, or leave the column out with "
                    f"`features` (a new model line)"
                )
            numeric[:, j] = numbers
        return numeric

    def _refuse_ids(self, raw: pd.Series, column: str, origin: RowOrigin) -> None:
        """A text column whose values nearly never repeat (an order id, a free-text comment) cannot be
        learned from: every new row brings a value no model has seen. Many distinct values that do
        repeat (airport codes) are fine; the encoding caps them."""
        values = raw.dropna()
        if len(values) < ID_MIN_ROWS:
            return
        counts = values.value_counts()
        unique_share = (counts == 1).sum() / len(values)
        if unique_share >= ID_SHARE:
            raise DataError(
                f"{origin.name}: column {column!r} looks like an id or free text: {len(counts)} distinct "
                f"values in {len(values)} rows, {unique_share:.0%} of rows hold a value no other row has "
                f"(e.g. {[_scalar(v) for v in counts.index[:3]]}), so there is nothing to learn from it; "
                f"leave it out by listing the other columns in `features`, or declare it in `categorical` "
                f"to encode it anyway"
            )

    def _numeric_text(self, raw: pd.Series, column: str, origin: RowOrigin) -> np.ndarray | None:
        """A text column holding numbers, as floats; None if it is categorical; DataError if it has typos."""
        present = raw.notna().to_numpy()
        if not present.any():
            return None
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        parsed = ~np.isnan(numbers)
        share = parsed[present].mean()
        if share == 1.0:
            return numbers
        if share >= NUMERIC_SHARE:
            bad = np.flatnonzero(present & ~parsed)
            raise DataError(
                f"{origin.path(bad[0])}: column {column!r} is numeric in {share:.0%} of rows but holds "
                f"non-numeric {_scalar(raw.iloc[bad[0]])!r} at {origin.at(bad[0])} ({_rows(len(bad))}); fix "
                f"those values, or leave the column out with `features`, or declare it in `categorical`"
            )
        return None

    # -- bad rows -----------------------------------------------------------------------------------

    def bad_rows(
        self,
        frame: pd.DataFrame,
        checks: Sequence[tuple[np.ndarray, str | np.ndarray, str | None]],
        origin: RowOrigin,
        scope: str,
        window: int | None = None,
    ) -> tuple[np.ndarray, pd.DataFrame, list[DataIssue]]:
        """Rows the loop cannot learn from, with a reason each: ``checks`` are ``(mask, reason, column)``,
        a reason being one text or one per row. Returns the mask of bad rows, those rows (the original
        columns plus ``reason``, ``_row`` and ``_source``) and one issue each. With
        ``on_bad_rows="error"``, or when more than half of the rows are bad (then the file is wrong, or
        the column choice, not a few rows), raises a DataError naming ``scope`` and the first bad row."""
        blank = frame.isna().all(axis=1).to_numpy()
        reasons = np.full(len(frame), "", dtype=object)
        first_column = np.full(len(frame), None, dtype=object)
        for mask, reason, column in [
            (blank, "blank line", None),
            *((m & ~blank, r, c) for m, r, c in checks),
        ]:
            if isinstance(reason, np.ndarray):
                reason = reason[mask]
            fresh = mask & (reasons == "")
            first_column[fresh] = column
            reasons[mask] = np.where(reasons[mask] == "", reason, reasons[mask] + "; " + reason)
        bad = reasons != ""
        rows = np.flatnonzero(bad)
        if not len(rows):
            return bad, pd.DataFrame(), []
        first = f"{origin.at(rows[0])}: {reasons[rows[0]]}"
        if self.on_bad_rows == "error":
            raise DataError(f"{scope}: {len(rows)} bad rows (on_bad_rows='error'); first at {first}")
        if len(rows) > MAX_QUARANTINED_SHARE * len(frame):
            common = pd.Series(reasons[rows]).value_counts().index[0]
            raise DataError(
                f"{scope}: {len(rows)} of {len(frame)} rows would be quarantined (most often: {common}; "
                f"first at {first}); this looks like a problem with the file or with the column choice, "
                f"not a few bad rows"
            )
        sources = [origin.path(r) for r in rows]
        quarantine = frame.iloc[rows].assign(reason=reasons[rows], _row=origin.row[rows], _source=sources)
        issues = [
            DataIssue(
                "bad_row",
                source,
                f"{origin.at(r)}: {reasons[r]}",
                row=int(origin.row[r]),
                column=first_column[r],
                window=window,
            )
            for r, source in zip(rows, sources, strict=True)
        ]
        return bad, quarantine, issues

    def row_checks(
        self,
        missing_time: np.ndarray,
        missing_target: np.ndarray,
        finite: np.ndarray,
        numeric_cols: Sequence[str],
        targets: np.ndarray | None = None,
    ) -> list[tuple[np.ndarray, str, str | None]]:
        """The checks every row goes through, for :meth:`bad_rows`; ``targets``: a regression target's
        values (:meth:`targets`), whose infinite ones are bad too."""
        checks: list[tuple[np.ndarray, str, str | None]] = [
            (missing_time, "missing time", self.time_column),
            (missing_target, "missing target", self.target),
        ]
        if targets is not None:
            checks.append((~missing_target & ~np.isfinite(targets), "infinite target", self.target))
        checks += [
            (~finite[:, j], f"missing or infinite value in column {c!r}", c)
            for j, c in enumerate(numeric_cols)
        ]
        return checks

    # -- the encoding -------------------------------------------------------------------------------

    def fit_encoding(
        self,
        rows: pd.DataFrame,
        numeric: np.ndarray,
        numeric_cols: list[str],
        text_cols: list[str],
        window_of: np.ndarray,
        late: Sequence[int] = (),
    ) -> TableEncoding:
        """Fit on the first window only, so no window sees the future: the standardisation of each
        numeric column (one that appears mid-stream, listed in ``late``: on the window it appears in)
        and the categories of each text column. ``rows`` and ``numeric`` are the kept rows, in time
        order, and ``window_of`` the window each falls in."""
        scaled = {}
        for j, column in enumerate(numeric_cols):
            present = np.isfinite(numeric[:, j])
            first = present & (window_of == window_of[np.argmax(present)]) if present.any() else present
            mean, std = (numeric[first, j].mean(), numeric[first, j].std()) if first.any() else (0.0, 1.0)
            scaled[j] = NumericColumn(column, float(mean), float(std) if std > 0 else 1.0)
        first_window = rows[window_of == 0]
        cap = {"min_frequency": self.min_frequency, "max_categories": self.max_categories}
        onehot = [CategoricalColumn(c, frequent_categories(first_window[c], **cap)) for c in text_cols]
        # Columns that appear mid-stream go last, in the order they appear: a stream's columns only
        # grow at the end (perennial.data.window.present_features), which is what lets a model keep
        # reading the columns it was trained on.
        early = [scaled[j] for j in range(len(numeric_cols)) if j not in late]
        return TableEncoding((*early, *onehot, *(scaled[j] for j in late)))


def empty_periods(
    source: str,
    before: int,
    after: int,
    origin: object,
    period: pd.Timedelta,
    window: object,
    time_column: str,
) -> DataIssue:
    """The issue for the empty periods between period ``before`` and period ``after`` (both with rows)."""
    step = period.to_timedelta64()
    gap_start = pd.Timestamp(np.datetime64(origin) + (before + 1) * step)
    gap_end = pd.Timestamp(np.datetime64(origin) + after * step)
    return DataIssue(
        "empty_window",
        source,
        f"no rows from {gap_start} to {gap_end} ({after - before - 1} empty period(s) of {window!r}, periods "
        f"{before + 1}..{after - 1} counted from {pd.Timestamp(origin)}); skipped",
        column=time_column,
        window=int(before + 1),
    )


@dataclass
class TableStream(Stream):
    """Any CSV, TSV or Parquet file with a time column and a target column, as a stream of windows.

    Features are every column but ``time_column`` and ``target`` (or just ``features``). Numeric columns
    are standardised with the mean and std of the first window only (no look-ahead). Text, category and
    bool columns (or those listed in ``categorical``) are one-hot encoded over the values seen at least
    ``min_frequency`` times in the first window, at most ``max_categories`` per column (the most
    frequent); every other value, rare or first seen later, goes to the column's ``(other)`` column, so
    ``feature_shape`` never changes however many values a column has. A missing value is all zeros.
    A text column whose values nearly never repeat (an id, free text) is refused unless declared in
    ``categorical``. ``encoding`` holds what was fitted; ``preprocessing`` is it as JSON, which the
    loop stores with every version. Timezone-aware times are converted to UTC.

    ``window`` is a duration (``"7D"``: consecutive periods from the first timestamp; empty periods
    are skipped and reported, one ``empty_window`` issue per run of empty periods) or a row count.
    ``classes`` defaults to the sorted distinct targets of the whole file.

    ``task="regression"``: the target holds numbers to predict; ``y`` holds them as float32, the
    stream has no ``classes`` (declaring some is an error), and a value that is not a number is a
    :class:`DataError` naming the row and the value.

    Rows without a time or a target, blank lines, and rows with NaN/inf in a numeric feature or a
    regression target are set aside in ``quarantine`` with a reason (``on_bad_rows="error"`` raises
    instead). Anything else wrong with the file raises :class:`DataError` naming the file, the column
    and the row; rows are 0-based data rows, and for text files the line number in the file is given too.

    A directory of partitions that keeps growing is :class:`perennial.data.partitions.PartitionedTable`;
    :func:`open_table` picks the one a path needs.

    >>> stream = TableStream("sales.csv", time_column="date", target="churned", window="7D")  # doctest: +SKIP
    """

    path: str | Path
    time_column: str
    target: str
    window: str | int = "7D"
    _: KW_ONLY
    features: Sequence[str] | None = None
    categorical: Sequence[str] | None = None
    classes: list | None = None  # overrides Stream.classes so the user may declare them
    on_bad_rows: str = "quarantine"
    # Every value of the first window by default: a value seen once there still gets trained by the
    # updates on the later windows where it comes back (scripts/bench_categoricals.py measured the
    # caps against this); raise min_frequency or lower max_categories to bound the width.
    min_frequency: int = 1
    max_categories: int = 1000
    task: str = "classification"  # or "regression": overrides Stream.task so the user may set it
    feature_names: list[str] = field(init=False, default_factory=list)
    encoding: TableEncoding | None = field(init=False, repr=False, default=None)
    _windows: list[Window] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        self.name = self.path.stem
        period = parse_window(self.window)
        checks = TableChecks.of(self)
        checks.check_classes(self.classes)

        frame = self._read()
        origin = RowOrigin.of_file(
            self.path, len(frame), lines=SEPARATORS[self.path.suffix.lower()] is not None
        )
        features, categorical = checks.feature_columns(list(frame.columns), str(self.path))
        times, missing_time = checks.parse_time(frame[self.time_column], period, origin)
        targets = None
        if checks.regression:
            targets, missing_target = checks.targets(frame[self.target], origin)
            y, self.classes = targets, []
        else:
            labels, missing_target = checks.labels(frame[self.target], origin)
            self.classes = list(self.classes) if self.classes is not None else sorted_values(labels)
            y, _ = checks.class_ids(labels, missing_target, self.classes, origin)
        numeric, numeric_cols, text_cols = checks.feature_kinds(frame, features, categorical, origin)

        no_target = missing_target | (~np.isfinite(targets) if targets is not None else False)
        usable = ~(missing_time | no_target | frame.isna().all(axis=1).to_numpy())
        late = self._late_columns(numeric, times, usable, period)
        finite = np.isfinite(numeric)
        for j, appeared in late.items():  # missing before the column appeared is not a bad row
            finite[:, j] |= ~missing_time & (times < appeared)
        bad, self.quarantine, issues = checks.bad_rows(
            frame,
            checks.row_checks(missing_time, missing_target, finite, numeric_cols, targets),
            origin,
            str(self.path),
        )
        self.issues += issues
        keep = np.flatnonzero(~bad)
        order = keep[np.argsort(times[keep], kind="stable")]
        times, y, numeric = times[order], y[order], numeric[order]
        rows = frame.iloc[order].reset_index(drop=True)

        window_of = self._window_numbers(times, period)
        self.encoding = checks.fit_encoding(rows, numeric, numeric_cols, text_cols, window_of, list(late))
        x = self.encoding.transform(rows)  # the same code that re-encodes raw rows from a stored version
        self.feature_names = self.encoding.feature_names
        self.feature_shape = (x.shape[1],)
        if isinstance(period, int):
            self._windows = windows_by_count(x, y, times, period)
        else:
            self._windows = self._windows_by_period(x, y, times, period)

    def windows(self) -> list[Window]:
        return self._windows

    @property
    def preprocessing(self) -> dict:
        """The fitted encoding as plain JSON (:meth:`TableEncoding.to_dict`); the loop stores it with
        every version, and :meth:`TableEncoding.from_dict` applies it to raw rows again."""
        assert self.encoding is not None  # fitted in __post_init__
        return self.encoding.to_dict()

    @staticmethod
    def _window_numbers(times: np.ndarray, period: int | pd.Timedelta) -> np.ndarray:
        """The window each row of ``times`` (in time order) falls in."""
        if isinstance(period, int):
            return np.arange(len(times)) // period
        return (times - times[0]) // period.to_timedelta64() if len(times) else np.zeros(0, np.int64)

    def _late_columns(
        self, numeric: np.ndarray, times: np.ndarray, usable: np.ndarray, period: int | pd.Timedelta
    ) -> dict[int, object]:
        """Numeric columns that appear mid-stream: missing in every usable row before a time after the
        first window, present from then on. Their missing values before that time are not bad rows.
        Returns ``{column: the time it appears}``, in the order they appear."""
        rows = np.flatnonzero(usable)
        if not len(rows) or not numeric.shape[1]:
            return {}
        rows = rows[np.argsort(times[rows], kind="stable")]
        window_of = self._window_numbers(times[rows], period)
        late = {}
        for j in range(numeric.shape[1]):
            present = np.isfinite(numeric[rows, j])
            if not present.any() or present[0]:
                continue
            first = int(np.argmax(present))
            if window_of[first] > 0:  # absent from the whole first window, at least
                late[j] = times[rows[first]]
        return dict(sorted(late.items(), key=lambda item: (item[1], item[0])))

    def _read(self) -> pd.DataFrame:
        suffix = self.path.suffix.lower()
        if suffix not in SEPARATORS:
            raise DataError(
                f"{self.path}: unsupported file type {suffix or '(no suffix)'!r}; "
                f"accepted: {', '.join(SEPARATORS)}"
            )
        if not self.path.is_file():
            raise DataError(f"{self.path}: file not found")
        try:
            if SEPARATORS[suffix] is None:
                frame = pd.read_parquet(self.path)
            else:
                # blank lines kept as empty rows so that row numbers map to line numbers
                frame = pd.read_csv(
                    self.path, sep=SEPARATORS[suffix], skip_blank_lines=False, low_memory=False
                )
        except Exception as err:
            raise DataError(f"{self.path}: cannot read the file as {suffix[1:]}: {err}") from err
        if not isinstance(frame.index, pd.RangeIndex):  # Parquet written from a frame indexed by time
            frame = frame.reset_index()
        if frame.empty:
            raise DataError(f"{self.path}: the file has no data rows")
        return frame.reset_index(drop=True)

    def _windows_by_period(
        self, x: np.ndarray, y: np.ndarray, times: np.ndarray, period: pd.Timedelta
    ) -> list[Window]:
        """Consecutive periods from the first timestamp (not calendar boundaries); empty ones are reported."""
        step = period.to_timedelta64()
        origin = times[0]
        number = (times - origin) // step
        periods, first = np.unique(number, return_index=True)
        last = [*first[1:], len(y)]
        windows = []
        for k, (p, s, e) in enumerate(zip(periods, first, last, strict=True)):
            start = pd.Timestamp(origin + p * step)
            windows.append(Window(k, start, start + period, x[s:e], y[s:e], times[s:e]))
        for before, after in itertools.pairwise(periods):
            if after - before > 1:
                self.issues.append(
                    empty_periods(
                        str(self.path), before, after, origin, period, self.window, self.time_column
                    )
                )
        return windows


def _rows(count: int) -> str:
    return f"{count} such row" if count == 1 else f"{count} such rows"


def _to_datetime(raw: pd.Series, **kwargs: object) -> pd.Series:
    try:
        return pd.to_datetime(raw, errors="coerce", **kwargs)
    except ValueError:  # mixed UTC offsets: one common timezone is the only way to order them
        return pd.to_datetime(raw, errors="coerce", utc=True, **kwargs)
