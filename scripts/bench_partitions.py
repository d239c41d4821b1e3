"""Peak memory of reading a table window by window from daily partitions (PartitionedTable: poll
everything, go through the windows, drop each) against reading the same rows as one CSV file
(TableStream, which holds the whole table). Each reading runs in a child process of its own, which
reports its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).

    .venv/bin/python scripts/bench_partitions.py                         # 1M and 10M rows (~1 GB of CSV)
    .venv/bin/python scripts/bench_partitions.py --rows 100000 --keep    # a quick look; keep the files

The table is synthetic: a timestamp, eight numeric columns, a count, a store code (20 values) and a
binary label, 10,000 rows a day (``--rows-per-day``), one CSV a day (``--format parquet`` for
Parquet partitions) and the same rows, in the same order, as one CSV. Windows are 7 days.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2020-01-01")
STORES = np.array([f"store_{i:02d}" for i in range(20)])


def day_rows(day: int, n: int) -> pd.DataFrame:
    """One day's rows, seeded by the day, in time order."""
    rng = np.random.default_rng(day)
    seconds = np.sort(rng.integers(0, 86_400, n))
    numbers = rng.normal(0, 1, (n, 8)).round(4)
    store = rng.integers(0, len(STORES), n)
    logit = numbers[:, 0] - 0.5 * numbers[:, 1] + (store % 3 - 1) * 0.7
    frame = pd.DataFrame(numbers, columns=[f"x{i}" for i in range(8)])
    frame.insert(0, "when", START + pd.Timedelta(days=day) + pd.to_timedelta(seconds, unit="s"))
    frame["count"] = rng.poisson(3, n)
    frame["store"] = STORES[store]
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def make_table(workdir: Path, rows: int, per_day: int, fmt: str) -> tuple[Path, Path]:
    """``parts/`` with one file a day and ``all.csv`` with the same rows in the same order, written a
    day at a time so that making them never holds the table."""
    parts, whole = workdir / "parts", workdir / "all.csv"
    parts.mkdir(parents=True)
    days = -(-rows // per_day)
    with open(whole, "w", newline="") as out:
        for day in range(days):
            frame = day_rows(day, min(per_day, rows - day * per_day))
            name = parts / f"part-{(START + pd.Timedelta(days=day)):%Y-%m-%d}.{fmt}"
            if fmt == "parquet":
                frame.to_parquet(name, index=False)
            else:
                frame.to_csv(name, index=False)
            frame.to_csv(out, index=False, header=day == 0)
    return parts, whole


def child(kind: str, path: str, window: str) -> None:
    """Read ``path`` window by window and print rows, windows, seconds and peak RSS as JSON."""
    from perennial.data import PartitionedTable, TableStream

    began = time.perf_counter()
    rows = windows = 0
    if kind == "imports":
        pass
    elif kind == "one":
        for w in TableStream(path, "when", "label", window):  # holds every window: it read the whole file
            rows, windows = rows + len(w), windows + 1
    else:
        source = PartitionedTable(path, "when", "label", window)
        for w in source.poll():  # read again from the files past the first 64 MB of windows
            rows, windows = rows + len(w), windows + 1
            del w
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    seconds = time.perf_counter() - began
    print(json.dumps({"rows": rows, "windows": windows, "seconds": seconds, "peak_mb": peak_kb / 1024}))


def measure(kind: str, path: Path, window: str) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--path", str(path), "--window", window]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} on {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rows-per-day", type=int, default=10_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", help="of the partitions")
    parser.add_argument("--window", default="7D")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the tables go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the tables written")
    parser.add_argument("--write", action="store_true", help="put the results in docs/benchmarks.md")
    parser.add_argument("--child", choices=("imports", "one", "partitioned"), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.path, args.window)
        return

    load, started = os.getloadavg()[0], time.perf_counter()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench_partitions-"))
    imports = measure("imports", base, args.window)["peak_mb"]
    lines = [
        "| rows | CSV size | partitions | peak RSS one file | peak RSS partitioned | ratio "
        "| seconds one file | seconds partitioned |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in args.rows:
        workdir = base / f"rows-{rows}"
        shutil.rmtree(workdir, ignore_errors=True)
        began = time.perf_counter()
        parts, whole = make_table(workdir, rows, args.rows_per_day, args.format)
        print(f"wrote {rows:,} rows in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        one = measure("one", whole, args.window)
        partitioned = measure("partitioned", parts, args.window)
        size, files = whole.stat().st_size / 2**20, len(list(parts.iterdir()))
        ratio = one["peak_mb"] / partitioned["peak_mb"]
        lines.append(
            f"| {rows:,} | {size:,.0f} MB | {files:,} {args.format} | {one['peak_mb']:,.0f} MB "
            f"| {partitioned['peak_mb']:,.0f} MB | {ratio:.1f}x | {one['seconds']:.0f} "
            f"| {partitioned['seconds']:.0f} |"
        )
        print(
            f"one file: {one['windows']} windows, {one['rows']:,} rows; partitioned: "
            f"{partitioned['windows']} windows, {partitioned['rows']:,} rows",
            file=sys.stderr,
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(workdir)
    lines.append(f"\nA child that only imports perennial.data peaks at {imports:,.0f} MB.")
    print("\n".join(lines))
    if args.write:
        # Imported here, not at the top: the children run this file too, and must import only perennial.data.
        from bench_update import command, load_average, machine, replace_section

        minutes = (time.perf_counter() - started) / 60
        header = [
            "## Reading a partitioned table window by window (scripts/bench_partitions.py)",
            "",
            f"Command: `{command()}` ({minutes:.1f} min; {machine()}; {load_average(load)}; "
            f"{datetime.now(UTC):%Y-%m-%d})",
            "",
            f"Peak resident memory (`ru_maxrss` of a child process) reading every {args.window} window of a "
            f"synthetic table ({args.rows_per_day:,} rows a day), once as one CSV file (`TableStream`, which "
            "loads it whole) and once as one partition a day (`PartitionedTable`, which reads the windows "
            "in use). The partitioned peak stays near the cost of the imports whatever the size of the data.",
            "",
        ]
        replace_section(Path("docs/benchmarks.md"), "bench_partitions", "\n".join(header + lines))
    if not args.keep and args.workdir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
