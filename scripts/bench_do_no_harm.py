"""Does updating ever serve worse than never updating? Served minus static accuracy, with intervals, on
streams with lasting and with transient drift, under the same-window gate and the temporal one.

Every run is the real job, ``perennial-run`` with overrides, one after another; each stream runs
under (a) today's same-window gate, (b) the temporal gate, (c) the temporal gate with rollback, (e)
with the guard's revert too, all four at the earlier gate tolerance 0.02, and (d) the defaults
(temporal gate, rollback, guard revert, tolerance 0); ``SETTINGS`` has the overrides.
The per-window differences come from each run's windows.csv:

    .venv/bin/python scripts/bench_do_no_harm.py            # about 45 min on 2 cores
    .venv/bin/python scripts/bench_do_no_harm.py --quick    # synthetic only; writes only with --out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from rich.console import Console

from bench_update import add_out_argument, command, load_average, machine, replace_section
from perennial.cli.run import CONF_DIR
from perennial.data import WeatherStream

SECTION = "bench_do_no_harm"
RECENT = 10  # conf/run.yaml recent_windows
LEVEL = 0.95
RECENT_GAIN = 0.15  # weather yearly, last 10 windows: the default keeps at least +15 points
SYNTHETIC_WINDOWS, SYNTHETIC_ROWS = 30, 2000  # rows per window
RECURRING_EVERY = 6  # windows each concept of the recurring stream holds
QUICK = {"windows": 12, "rows": 500, "epochs": ["update.epochs=2", "loop.initial_epochs=2"]}


@dataclass(frozen=True)
class StreamSpec:
    key: str
    title: str
    overrides: list[str]


def stream_specs(windows: int, rows: int) -> dict[str, StreamSpec]:
    size = [f"data.n_samples={windows * rows}", f"data.window={rows}"]
    points = ",".join(str(k * rows) for k in range(RECURRING_EVERY, windows, RECURRING_EVERY))
    specs = [
        StreamSpec("weather_yearly", "weather, 365-day windows (the default job)", []),
        StreamSpec("synthetic_abrupt", "synthetic abrupt", ["data=synthetic", "data.kind=abrupt", *size]),
        StreamSpec(
            "synthetic_transient",
            "synthetic transient",
            ["data=synthetic_transient", *size, f"data.width={rows}"],
        ),
        StreamSpec(
            "synthetic_recurring",
            "synthetic recurring",
            ["data=synthetic", "data.kind=recurring", *size, f"data.drift_points=[{points}]"],
        ),
        # last: its 605 windows make it the slowest (the accuracy matrix of ~600 versions)
        StreamSpec("weather_30d", "weather, 30-day windows", ["data=weather_monthly"]),
    ]
    return {s.key: s for s in specs}


STREAMS = stream_specs(SYNTHETIC_WINDOWS, SYNTHETIC_ROWS)
SETTINGS = {
    # (a)-(e) keep the gate's earlier tolerance, 0.02, so that (d), the defaults (tolerance 0), shows
    # what the tolerance alone changes against (e).
    "a": (
        "today's gate",
        ["gate.fresh=holdout", "gate.tolerance=0.02", "loop.rollback=false", "loop.guard=off"],
    ),
    "b": ("temporal gate", ["gate.fresh=next", "gate.tolerance=0.02", "loop.rollback=false"]),
    "c": (
        "temporal gate + rollback",
        ["gate.fresh=next", "gate.tolerance=0.02", "loop.rollback=true", "loop.guard=warn"],
    ),
    "d": ("defaults", []),
    "e": ("temporal gate + rollback + guard revert", ["gate.tolerance=0.02", "loop.guard=revert"]),
}


@dataclass(frozen=True)
class Interval:
    diff: float
    low: float
    high: float

    @property
    def worse(self) -> bool:
        return self.high < 0

    def __str__(self) -> str:
        return f"{self.diff * 100:+.1f} [{self.low * 100:+.1f}, {self.high * 100:+.1f}]"


@dataclass(frozen=True)
class Result:
    stream: StreamSpec
    setting: str
    label: str
    overrides: list[str]
    summary: dict
    windows: pd.DataFrame
    all: Interval
    recent: Interval
    wall_seconds: float
    reused: bool
    loads: tuple[float, float] | None  # 1-minute load average as the job started and ended

    @property
    def rolled_back(self) -> int:
        return len(self.summary.get("rollbacks") or [])

    @property
    def promoted_at_a_loss(self) -> str:
        """Promoted candidates the gate saw doing worse than their champion on its fresh rows (yet within
        tolerance), and their summed difference: small losses that compound from one promotion to the next."""
        diffs = self.windows.loc[self.windows["decision"] == "promoted", "fresh_diff"].dropna()
        lost = diffs[diffs < 0]
        return f"{len(lost)} / {len(diffs)} ({lost.sum() * 100:+.1f})"


def composed(overrides: list[str]) -> dict:
    """The job's config as perennial-run composes it, unresolved (hydra's own section left out)."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return OmegaConf.to_container(compose("run", overrides=overrides))


def settings_to_run(wanted: list[str]) -> dict[str, tuple[str, list[str]]]:
    """(d) runs only when the defaults differ from (c); otherwise (c) is labelled as the defaults."""
    out = {k: SETTINGS[k] for k in wanted}
    if "c" in out and "d" in out and composed(SETTINGS["c"][1]) == composed([]):
        del out["d"]
        out["c"] = (f"{SETTINGS['c'][0]} (= defaults)", SETTINGS["c"][1])
    return out


def default_key(results: list[Result], stream: str) -> str | None:
    keys = [r.setting for r in results if r.stream.key == stream]
    return "d" if "d" in keys else ("c" if "c" in keys else None)


def bootstrap(windows: pd.DataFrame, resamples: int, seed: int) -> Interval:
    """Row-weighted mean of served minus static over ``windows``, and a percentile interval from
    resampling whole windows with replacement (a window's rows share its champion and its drift)."""
    diff = (windows["served_accuracy"] - windows["static_accuracy"]).to_numpy(float)
    rows = windows["n"].to_numpy(float)
    point = float(np.sum(diff * rows) / np.sum(rows))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = np.sum(diff[pick] * rows[pick], axis=1) / np.sum(rows[pick], axis=1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(point, float(low), float(high))


def run_job(spec: StreamSpec, key: str, label: str, overrides: list[str], workdir: Path, args) -> Result:
    run_dir = workdir / f"{spec.key}-{key}"
    exe = Path(sys.executable).parent / "perennial-run"
    every = [*spec.overrides, *overrides, *args.extra, f"seed={args.seed}", "progress=false"]
    cmd = [str(exe), *every, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    timing = run_dir / "wall_seconds.txt"
    if timing.exists():  # finished in an earlier call with the same --workdir
        done, wall = None, float(timing.read_text())
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # a run cut short in an earlier call
        start, load = time.perf_counter(), os.getloadavg()[0]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "load_average.txt").write_text(f"{load:.1f} {os.getloadavg()[0]:.1f}")
    if done is not None and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    timing.write_text(f"{wall:.1f}")
    summary = json.loads((run_dir / "summary.json").read_text())
    windows = pd.read_csv(run_dir / "windows.csv")
    # windows whose labels never came or were quarantined have no served accuracy to compare
    windows = windows.dropna(subset=["served_accuracy", "static_accuracy"])
    return Result(
        spec,
        key,
        label,
        every,
        summary,
        windows,
        bootstrap(windows, args.resamples, args.seed),
        bootstrap(windows.tail(RECENT), args.resamples, args.seed),
        wall,
        done is None,
        tuple(map(float, loads.read_text().split()))
        if (loads := run_dir / "load_average.txt").exists()
        else None,
    )


# ---- what each stream's drift is --------------------------------------------------------------
def weather_seasons() -> str:
    """Measured: how much 30-day windows of the weather stream differ, and how the seasons recur."""
    stream = WeatherStream(window=30)
    full = [w for w in stream if len(w) == 30]
    rain = np.array([w.y.mean() for w in full])
    means = np.stack([w.x.mean(axis=0) for w in full])
    within = np.mean([w.x.std(axis=0) for w in full], axis=0)
    temp = stream.feature_names.index("temperature")
    t = means[:, temp] - means[:, temp].mean()
    r = rain - rain.mean()

    def lag(v: np.ndarray, k: int) -> float:
        return float(np.corrcoef(v[:-k], v[k:])[0, 1])

    labels = np.concatenate([w.y for w in stream])
    day = np.arange(len(labels)) % 365
    by_month = [labels[(day // 31) == m].mean() for m in range(12)]
    return (
        f"{len(stream)} windows of 30 days (24 rows to train on, 6 held out). The seasons make it a "
        f"transient, recurring drift: the rain rate of a 30-day window ranges {rain.min():.2f} to "
        f"{rain.max():.2f} (mean {rain.mean():.2f}, sd {rain.std():.2f}); by 31-day slice of the year "
        f"it runs from {min(by_month):.2f} to {max(by_month):.2f}. Window means of the z-scored "
        f"temperature vary with sd {t.std():.2f} against a within-window sd of {within[temp]:.2f}; they "
        f"correlate {lag(t, 12):+.2f} with the window 12 later (one year) and {lag(t, 6):+.2f} with the "
        f"one 6 later (half a year), and the rain rate {lag(r, 12):+.2f} and {lag(r, 6):+.2f}: each "
        "month differs from the last and the "
        "same month comes back a year later. The long drift of the yearly stream (from about year 33) lies "
        "under it."
    )


def stream_drift(spec: StreamSpec, args) -> str:
    if spec.key == "weather_yearly":
        return (
            "50 windows of 365 days (73 rows of each held out). Seasons average out within a window; the "
            "drift is the slow one from about year 33, lasting, not transient (README)."
        )
    if spec.key == "weather_30d":
        return weather_seasons()
    data = composed([*spec.overrides, *args.extra])["data"]
    stream = instantiate(data)
    at = [p // data["window"] for p in stream.drift_points]
    shape = (
        f"{len(stream)} windows of {data['window']:,} rows, {data['n_features']} features, "
        f"noise {data['noise']}"
    )
    if data["kind"] == "abrupt":
        return f"{shape}; a new concept from rows {stream.drift_points} on (windows {at}), lasting."
    if data["kind"] == "recurring":
        return (
            f"{shape}; two concepts alternate, A B A B ..., switching at rows {stream.drift_points} "
            f"(windows {at}): each concept holds {at[0]} windows and comes back."
        )
    return (
        f"{shape}; a base concept with one-window excursions (width {data['width']:,} rows) in windows "
        f"{at} (the seeded 20%, never two in a row), each a concept of its own; the base returns after each."
    )


# ---- the report ------------------------------------------------------------------------------
def table(results: list[Result]) -> str:
    head = (
        "| stream | setting | served / static | served − static, all (pts, 95% CI) "
        f"| last {RECENT} (pts, 95% CI) | promoted / rejected / rolled back "
        "| promoted at a fresh-data loss (pts) | train s | samples processed "
        "| freshness lag | wall s | significantly worse than static |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in results:
        s = r.summary
        worse = [span for span, i in (("all", r.all), (f"last {RECENT}", r.recent)) if i.worse]
        lag = s.get("freshness_lag")
        lines.append(
            f"| {r.stream.title} | ({r.setting}) {r.label} "
            f"| {s['served_accuracy']:.3f} / {s['static_accuracy']:.3f} | {r.all} | {r.recent} "
            f"| {s['promoted']} / {s['rejected']} / {r.rolled_back} | {r.promoted_at_a_loss} "
            f"| {s['compute']['train_seconds']:.1f} "
            f"| {int(s['compute']['samples_processed']):,} | {'n/a' if lag is None else f'{lag:.2f}'} "
            f"| {r.wall_seconds:.0f} | {'**yes: ' + ', '.join(worse) + '**' if worse else 'no'} |"
        )
    return "\n".join(lines)


def aims(results: list[Result]) -> list[str]:
    out = []
    streams = list(dict.fromkeys(r.stream.key for r in results))
    worse_all, worse_recent, checked = [], [], []
    for key in streams:
        d = default_key(results, key)
        r = next((r for r in results if r.stream.key == key and r.setting == d), None)
        if r is None:
            continue
        checked.append(r)
        if r.all.worse:
            worse_all.append(r)
        if r.recent.worse:
            worse_recent.append(r)
    if checked:
        listed = "; ".join(f"{r.stream.title} {r.all} (last {RECENT}: {r.recent})" for r in checked)
        line = (
            f"- On no stream is the default significantly worse than static (95% interval over all evaluated "
            f"windows entirely below 0): {'**MISS**' if worse_all else '**PASS**'}. Default served − static, "
            f"points: {listed}"
        )
        if worse_all:
            line += f". Significantly worse: {', '.join(r.stream.title for r in worse_all)}"
        if worse_recent:
            line += (
                f". Over the last {RECENT} windows the default is significantly worse than static on "
                f"{', '.join(r.stream.title for r in worse_recent)}"
            )
        out.append(line)
    for r in worse_all:
        revert = next((x for x in results if x.stream.key == r.stream.key and x.setting == "e"), None)
        line = (
            f"- {r.stream.title}: the default serves significantly worse than v1 never updated, "
            f"{r.all} points over all windows ({r.recent} over the last {RECENT})"
        )
        if revert is not None:
            line += (
                f"; with `loop.guard=revert` {revert.all} ({revert.recent}), "
                f"{'still significantly worse' if revert.all.worse else 'not significantly worse'}"
            )
        out.append(line)
    d = default_key(results, "weather_yearly")
    r = next((r for r in results if r.stream.key == "weather_yearly" and r.setting == d), None)
    if r is not None:
        ok = r.recent.diff >= RECENT_GAIN
        out.append(
            f"- Weather yearly, the default keeps at least +{RECENT_GAIN * 100:.0f} points over the last "
            f"{RECENT} windows: {r.recent.diff * 100:+.1f} points (95% CI {r.recent.low * 100:+.1f} to "
            f"{r.recent.high * 100:+.1f}): {'**PASS**' if ok else '**MISS**'}"
        )
    return out


def load_text(results: list[Result], at_start: float) -> str:
    """How busy the machine was while the jobs ran, from what each job recorded."""
    loads = [x for r in results if r.loads for x in r.loads]
    missing = sum(r.loads is None for r in results)
    if not loads and missing and any(r.reused for r in results):
        return f"1-minute load average not recorded for the {missing} run(s) read back from an earlier call"
    if not loads:
        return load_average(at_start)
    text = f"1-minute load average {min(loads):.1f} to {max(loads):.1f} at the jobs' starts and ends"
    return text + (f"; not recorded for {missing} run(s)" if missing else "")


def section(
    results: list[Result], specs: dict[str, StreamSpec], settings: dict, args, seconds: float, load: str
) -> str:
    quick = "\n**Quick run: smoke-test numbers, not the benchmark.**\n" if args.quick else ""
    streams = list(dict.fromkeys(r.stream.key for r in results))
    drift = "\n".join(
        f"- {specs[k].title} (`{' '.join(specs[k].overrides) or 'no overrides'}`): "
        f"{stream_drift(specs[k], args)}"
        for k in streams
    )
    listed = "\n".join(
        f"- ({k}) {title}: `{' '.join(o) or 'no overrides'}`" for k, (title, o) in settings.items()
    )
    extra = f" `{' '.join(args.extra)}`," if args.extra else ""
    n_reused = sum(r.reused for r in results)
    reused = (
        f"\n{n_reused} of the {len(results)} runs were read back from an earlier call with the same "
        "`--workdir` (same runs and settings; their wall s are from that call)."
        if n_reused
        else ""
    )
    return f"""## Do no harm: served vs static under transient drift (scripts/bench_do_no_harm.py)
{quick}
Command: `{command()}` (run time: {seconds / 60:.1f} min, the jobs' wall seconds summed){reused}
Date: {datetime.now(UTC).date().isoformat()}. Machine: {machine()}.

Every run is `perennial-run` with the stream's and the setting's overrides,{extra} `seed={args.seed}
progress=false` and its own `hydra.run.dir`, one at a time, with OMP_NUM_THREADS={args.threads}.
Everything else is the default job: model `mlp`, `update=stateful` (20 epochs unless set above),
`strategy=replay`, `trigger=every_window`, `gate=default` (alpha 0.05; tolerance 0 unless the
setting says 0.02), 3 warm-up windows, 20% of each window held out.

Streams and the drift in each:

{drift}

Settings:

{listed}

Served − static is the row-weighted mean over the evaluated windows of windows.csv of (served accuracy −
static accuracy), the champion of the moment against v1 never updated, in accuracy points; "last
{RECENT}" is the same over the last {RECENT} evaluated windows. The 95% interval is a percentile
bootstrap over windows ({args.resamples:,} resamples of whole windows with replacement, seed {args.seed},
the row-weighted mean recomputed each time); a row is **significantly worse than static** when its
interval lies entirely below 0. Promoted / rejected / rolled back, train seconds, samples processed
(v1's training included) and freshness lag (mean windows between a serving model's newest training
window and the window it serves) are summary.json's. Promoted at a fresh-data loss counts the
promoted candidates whose `fresh_diff` in windows.csv (candidate minus champion on the gate's fresh
rows) was below 0, out of all promoted, with those differences summed: the gate promotes a candidate
shown at most 2 points worse, and such small losses can add up from one promotion to the next. Wall
s is the whole job, process start to outputs written. Other work can share this machine ({load}),
so seconds are indicative.

{table(results)}

Aims:

{chr(10).join(aims(results))}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", nargs="+", choices=list(STREAMS), default=list(STREAMS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        metavar="STREAM=a,c",
        help="run only these settings on that stream (e.g. weather_30d=a,c: its runs are the slowest)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="synthetic streams only, 12 windows of 500 rows, 2 epochs"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples of windows")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every job")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep every run here (default: a temporary folder); a run already finished there is reused",
    )
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.streams = [s for s in args.streams if s.startswith("synthetic")]
        args.extra = [*QUICK["epochs"], *args.extra]
    elif args.out is None:
        args.out = Path("docs/benchmarks.md")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # as in every job (OMP_NUM_THREADS), so machine() says so
    specs = stream_specs(QUICK["windows"], QUICK["rows"]) if args.quick else STREAMS
    settings = settings_to_run(args.settings)
    console = Console()
    load_start = os.getloadavg()[0]
    only = {s: set(keys.split(",")) for s, keys in (o.split("=", 1) for o in args.only)}
    jobs = [(specs[s], k) for s in args.streams for k in settings if k in only.get(s, settings)]
    results = []
    with tempfile.TemporaryDirectory(prefix="perennial-do-no-harm-") as tmp:
        workdir = args.workdir or Path(tmp)
        for i, (spec, key) in enumerate(jobs, 1):
            label, overrides = settings[key]
            console.rule(f"[bold][{i}/{len(jobs)}] {spec.title} · ({key}) {label}")
            r = run_job(spec, key, label, overrides, workdir, args)
            results.append(r)
            console.print(
                f"served − static {r.all} pts, last {RECENT} {r.recent} pts, promoted/rejected/rolled back "
                f"{r.summary['promoted']}/{r.summary['rejected']}/{r.rolled_back}, {r.wall_seconds:.0f} s"
            )
    seconds = sum(r.wall_seconds for r in results)
    console.print(table(results))
    for line in aims(results):
        console.print(line)
    if args.out is not None:
        body = section(results, specs, settings, args, seconds, load_text(results, load_start))
        replace_section(args.out, SECTION, body)
        console.print(f"wrote the {SECTION} section of {args.out} ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
