"""Regression through the loop, written to a section of docs/benchmarks.md: the default regression
stream (``data=weather_temperature``: tomorrow's maximum temperature from today's weather, 50 yearly
windows) run with perennial-run's defaults (stateful fine-tuning with replay, the default gate, every
window) against stateless retraining on all history and against v1 never updated.

    .venv/bin/python scripts/bench_regression.py --write   # about 8 minutes on 2 cores
    .venv/bin/python scripts/bench_regression.py --quick   # 12 windows, prints only
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import perennial as pn
from bench_update import command, load_average, machine, replace_section

SECTION = "bench_regression"
RECENT = 10
MODES = {
    "stateful+replay (default)": {},
    "stateless all-history": {"update": lambda: pn.StatelessUpdate(history="all"), "buffer": None},
}


class FirstWindows(pn.WeatherStream):
    """The regression stream cut to its first ``n`` windows, for a quick run."""

    keep: int = 50

    def windows(self):
        return super().windows()[: FirstWindows.keep]


def run(mode: str, parts: dict, stream: pn.WeatherStream, workdir: Path) -> dict:
    made = {k: v() if callable(v) else v for k, v in parts.items()}
    loop = pn.deploy(stream, run_dir=workdir / mode.split()[0], progress=True, **made)
    start = time.perf_counter()
    result = loop.run()
    wall = time.perf_counter() - start
    recent = result.recent(RECENT)
    table = result.table()
    return {
        "mode": mode,
        "served_mse": result.served_mse,
        "static_mse": result.static_mse,
        "recent_served": recent.served_mse,
        "recent_static": recent.static_mse,
        "recent_r2": float(table["served_r2"].tail(RECENT).mean()),
        "promoted": int((table["decision"] == "promoted").sum()),
        "rejected": int((table["decision"] == "rejected").sum()),
        "reverts": len(result["guard"]["reverts"]),
        "samples": int(result["compute"]["samples_processed"]),
        "train_seconds": float(result["compute"]["train_seconds"]),
        "wall": wall,
    }


def report(rows: list[dict], windows: int, seconds: float, load: str) -> str:
    lines = [
        f"Command: `{command()}` (run time {seconds / 60:.1f} min)",
        f"Date: {datetime.now(UTC):%Y-%m-%d}. Machine: {machine()}. {load}",
        "",
        f"`data=weather_temperature` ({windows} windows of 365 days; the target is z-scored, so an MSE",
        "of 1 is predicting the mean), the MLP of `model=mlp`, every part at perennial-run's default",
        "(`gate=default`: tolerance 0 on the relative MSE, Fieller's paired t; `loop.guard=revert`),",
        "seed 0. Served is the MSE of the champion of the moment on each window before its labels are",
        "used; static is v1, trained on the 3 warm-up years and never updated. Lower is better.",
        "",
        f"| mode | served MSE | static MSE | served / static, last {RECENT} | served R², last {RECENT} "
        "| promoted / rejected | guard reverts | samples processed | train s | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['served_mse']:.4f} | {r['static_mse']:.4f} | "
            f"{r['recent_served']:.4f} / {r['recent_static']:.4f} | {r['recent_r2']:.3f} | "
            f"{r['promoted']} / {r['rejected']} | {r['reverts']} | {r['samples']:,} | "
            f"{r['train_seconds']:.1f} | {r['wall']:.1f} |"
        )
    stateful, stateless = rows
    lines += [
        "",
        f"- Served against static over the last {RECENT} windows, default: "
        f"{stateful['recent_served']:.4f} against {stateful['recent_static']:.4f}, "
        f"{stateful['recent_served'] / stateful['recent_static']:.2f}x v1's error.",
        f"- Stateful+replay against stateless all-history: served MSE ratio "
        f"{stateful['served_mse'] / stateless['served_mse']:.3f} over the run "
        f"({stateful['recent_served'] / stateless['recent_served']:.3f} over the last {RECENT}), "
        f"samples processed ratio {stateful['samples'] / stateless['samples']:.3f}, train seconds ratio "
        f"{stateful['train_seconds'] / stateless['train_seconds']:.3f}.",
        "- The two runs go one after another, and other work may share the machine (the load average",
        "  above): the samples ratio is exact, the seconds ratio indicative only.",
        "- Two days whose sea-level pressure holds a missing-value code (94 standard deviations out) are",
        "  set aside by the stream (`quarantined_rows` 2): one such day made a window's MSE about 45 times",
        "  its neighbours' and drove the guard's comparison.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 windows; prints only")
    parser.add_argument("--write", action="store_true", help="rewrite the section of docs/benchmarks.md")
    args = parser.parse_args()
    FirstWindows.keep = 12 if args.quick else 50
    stream = FirstWindows(window=365, target="maximum_temperature", horizon=1)
    load_at_start = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(mode, parts, stream, Path(tmp)) for mode, parts in MODES.items()]
    text = report(rows, len(stream.windows()), time.perf_counter() - start, load_average(load_at_start))
    print(text)
    if args.write and not args.quick:
        title = f"## Regression through the loop (scripts/{Path(__file__).name})"
        replace_section(Path("docs/benchmarks.md"), SECTION, f"{title}\n\n{text}")


if __name__ == "__main__":
    main()
