"""A nightly schedule, measured: daily partitions of a drifting table land one at a time, and after each
one the same ``perennial-run ... resume=RUN_DIR`` command runs as a new process, as cron would start
it. At the end, one more run over all the partitions in a fresh directory. The nightly run's registry
(every version's record, weights bit for bit and extras, decisions, champion changes, window rows, the
checkpoint), summary.json, windows.csv and accuracy_matrix.csv are compared with the single run's,
less wall-clock times. Then three more nights with nothing new, which must change nothing. The figures
of docs/benchmarks.md, "Nightly runs".

    .venv/bin/python scripts/bench_nightly.py            # 30 days of 300 rows: about 8 minutes on 2 cores
    .venv/bin/python scripts/bench_nightly.py --days 8   # a quick look

The table is synthetic: a timestamp ``when``, four numbers, a shop (five values) and ``churned``
(yes/no), whose relation to the numbers changes abruptly halfway. Partitions are cut and landed
with scripts/make_partitions.py (one Parquet file a day, written under a hidden name and renamed).
The run uses the defaults of conf/run.yaml (stateful updates with replay, the temporal gate, warm-up 3
windows) with ``data.window=1D``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench_update import command, load_average, machine, replace_section
from make_partitions import partition_path, periods, write
from perennial.loop import CHECKPOINT_KEY
from perennial.registry import Registry
from perennial.report.compare import differences, run_view

START = pd.Timestamp("2024-03-01")
SHOPS = np.array(["north", "south", "east", "west", "online"])
SECTION = "bench_nightly"
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1"
IDLE_NIGHTS = 3


def drifting_table(days: int, per_day: int, seed: int = 0) -> pd.DataFrame:
    """``days`` days of ``per_day`` orders at random times; from the middle day on, the label follows
    other columns than before (an abrupt drift), so that updates have something to find."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    day = np.repeat(np.arange(days), per_day)
    when = START + pd.to_timedelta(day * 86_400 + rng.uniform(0, 86_400, n), unit="s")
    x = rng.normal(size=(n, 4)).round(4)
    shop = rng.integers(0, len(SHOPS), n)
    before = x[:, 0] + 0.5 * x[:, 1] + 0.6 * (shop == 2)
    after = x[:, 2] - 0.5 * x[:, 0] + 0.6 * (shop == 4)
    score = np.where(day < days // 2, before, after) + rng.normal(0, 0.5, n)
    frame = pd.DataFrame(x, columns=["x1", "x2", "x3", "x4"])
    frame.insert(0, "when", when)
    frame["shop"] = SHOPS[shop]
    frame["churned"] = np.where(score > 0.3, "yes", "no")
    return frame.sort_values("when", kind="stable").reset_index(drop=True)


@dataclass
class Night:
    """One ``perennial-run`` process: its exit status, wall time, and the last line it wrote to stderr."""

    landed: int  # partitions in the landing directory when it ran
    code: int
    seconds: float
    trained: float  # of which training (the run's train_seconds before and after)
    said: str


def perennial_run(args: list[str], landed: int, run_dir: Path) -> Night:
    exe = Path(sys.executable).with_name("perennial-run")
    before = train_seconds(run_dir)
    start = time.perf_counter()
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    # The last line it wrote, less Hydra's closing hint after an error.
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith(HYDRA_HINT)]
    trained = train_seconds(run_dir) - before
    return Night(landed, done.returncode, seconds, trained, lines[-1] if lines else "")


def train_seconds(run_dir: Path) -> float:
    """The run's training time so far, from its checkpoint (0 before v1)."""
    if not (run_dir / "registry" / "index.sqlite").exists():
        return 0.0
    with Registry(run_dir / "registry", create=False) as registry:
        state = registry.get_state(CHECKPOINT_KEY)
    return float(state["compute"]["train_seconds"]) if state else 0.0


def run_args(landing: Path, run_dir: Path, extra: list[str]) -> list[str]:
    return [
        "data=table",
        f"data.path={landing}",
        "data.time_column=when",
        "data.target=churned",
        "data.window=1D",
        f"resume={run_dir}",
        "logger=none",
        "progress=false",
        *extra,
    ]


def median_update_seconds(run_dir: Path) -> float:
    """The median training time of the versions after v1, from their records."""
    with Registry(run_dir / "registry", create=False) as registry:
        seconds = [v.train_seconds for v in registry.versions() if v.parent is not None]
    return statistics.median(seconds) if seconds else float("nan")


def measure(days: int, per_day: int, extra: list[str], workdir: Path) -> dict:
    table = drifting_table(days, per_day)
    parts = list(periods(table, "when", pd.Timedelta("1D")))
    landing, nightly, single = workdir / "landing", workdir / "runs" / "nightly", workdir / "runs" / "single"
    nights = []
    for number, (label, rows) in enumerate(parts, start=1):
        write(rows, partition_path(landing, label, "parquet", "flat", "when"), "parquet")
        nights.append(perennial_run(run_args(landing, nightly, extra), number, nightly))
        print(f"night {number}: exit {nights[-1].code}, {nights[-1].seconds:.1f} s", file=sys.stderr)
    nightly_view = run_view(nightly)
    whole = perennial_run(run_args(landing, single, extra), len(parts), single)
    found = (
        ["the single run failed"]
        if whole.code
        else differences(nightly_view, run_view(single), "run", ("nightly", "single"))
    )
    # Nights with nothing new, a few, for a steadier figure of a night's fixed cost.
    idle = [perennial_run(run_args(landing, nightly, extra), len(parts), nightly) for _ in range(IDLE_NIGHTS)]
    failed = any(night.code for night in idle)
    changed = (
        ["a night failed"]
        if failed
        else differences(run_view(nightly), nightly_view, "run", ("after", "before"))
    )
    summary = nightly_view["summary.json"]
    return {
        "update_seconds": {
            "nightly": median_update_seconds(nightly),
            "single": median_update_seconds(single),
        },
        "nights": nights,
        "whole": whole,
        "idle": idle,
        "differences": found,
        "idle_changes": changed,
        "rows": len(table),
        "windows": summary["windows"],
        "evaluated": summary["evaluated_windows"],
        "versions": len(nightly_view["versions"]),
        "promoted": summary["promoted"],
        "rejected": summary["rejected"],
        "served": summary["served_accuracy"],
        "static": summary["static_accuracy"],
    }


def section(result: dict, args: argparse.Namespace, extra: list[str], minutes: float, load: str) -> str:
    nights, whole, idle = result["nights"], result["whole"], result["idle"]
    seconds, trained = [n.seconds for n in nights], [n.trained for n in nights]
    failed = [n for n in nights if n.code != 0]
    waited = [n.landed for n in nights if n.code == 0 and "waiting for data" in n.said]
    example = shlex.join(["perennial-run", *run_args(Path("LANDING"), Path("RUN_DIR"), extra)])
    found, changed, updates = result["differences"], result["idle_changes"], result["update_seconds"]
    verdict = (
        "**equal**: every version (record, weights bit for bit, extras), decision, champion change, "
        "window row and the checkpoint; summary.json, windows.csv and accuracy_matrix.csv"
        if not found
        else f"**not equal**: {len(found)} difference(s), the first ones:\n\n"
        + "\n".join(f"- `{d}`" for d in found[:12])
    )
    lines = [
        "## Nightly runs (scripts/bench_nightly.py)",
        "",
        f"Command: `{command()}` ({minutes:.1f} min; {machine()}; {load}; {datetime.now(UTC):%Y-%m-%d})",
        "",
        f"{len(nights)} daily partitions of a drifting synthetic table ({args.rows} rows a day, "
        f"{result['rows']:,} in all; one Parquet file a day) land one at a time; after each, a new "
        "process runs the same command:",
        "",
        f"    {example}",
        "",
        f"and at the end one process runs it over all {len(nights)} partitions with a fresh RUN_DIR. "
        f"Partitions make {result['windows']} windows: a day's window is complete once a later row "
        f"shows the day is over, so the last day waits for tomorrow. {result['evaluated']} windows "
        f"served after the {result['windows'] - result['evaluated']} warm-up ones; {result['versions']} "
        f"versions, {result['promoted']} promoted, {result['rejected']} rejected; served accuracy "
        f"{result['served']:.3f} against {result['static']:.3f} for v1 never updated.",
        "",
        f"Nightly against single run, less wall-clock times: {verdict}.",
        "",
        f"Nights that waited for data (exit 0, nothing stored): {', '.join(map(str, waited)) or 'none'}. "
        + (
            "Every night exited 0."
            if not failed
            else "Nights that did not exit 0: "
            + "; ".join(f"night {n.landed}: exit {n.code}, `{n.said}`" for n in failed)
            + "."
        ),
        "",
        "| | wall time | of which training |",
        "|---|---|---|",
        f"| {len(nights)} nightly runs, in all | {sum(seconds):.1f} s | {sum(trained):.1f} s |",
        f"| a night, median (min, max) | {statistics.median(seconds):.1f} s "
        f"({min(seconds):.1f}, {max(seconds):.1f}) | {statistics.median(trained):.1f} s |",
        f"| one run over all {len(nights)} partitions | {whole.seconds:.1f} s | {whole.trained:.1f} s |",
        f"| a night with nothing new, median of {len(idle)} | "
        f"{statistics.median(n.seconds for n in idle):.1f} s | {sum(n.trained for n in idle):.1f} s |",
        "",
        "A night's fixed cost is starting the process (importing torch and Lightning, composing the "
        "config, reading the checkpoint) and writing the outputs again (summary, plots, the accuracy "
        "matrix of every version); a night with nothing new pays only that. An update's training took a "
        f"median {updates['nightly']:.2f} s in the nightly runs, each the first training of its process, "
        f"and {updates['single']:.2f} s in the single run (the versions' train_seconds). The nights with "
        "nothing new "
        + (
            "changed nothing (the same comparison)."
            if not changed
            else f"changed {len(changed)} thing(s), first: `{changed[0]}`."
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=30, help="partitions, one a day (default: 30)")
    parser.add_argument("--rows", type=int, default=300, help="rows a day (default: 300)")
    parser.add_argument("--keep", type=Path, help="a new directory to work in and keep")
    parser.add_argument("--write", action="store_true", help="put the results in docs/benchmarks.md")
    parser.add_argument("overrides", nargs="*", help="more perennial-run overrides, e.g. update.epochs=5")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
        result = measure(args.days, args.rows, args.overrides, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_nightly-") as tmp:
            result = measure(args.days, args.rows, args.overrides, Path(tmp))
    body = section(result, args, args.overrides, (time.perf_counter() - started) / 60, load_average(load))
    print(body)
    if args.write:
        replace_section(Path("docs/benchmarks.md"), SECTION, body)
    if result["differences"] or result["idle_changes"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
