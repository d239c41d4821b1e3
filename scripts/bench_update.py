"""Benchmark of perennial's update modes on real streams, written to a section of docs/benchmarks.md.

Stateful fine-tuning with a replay buffer, naive fine-tuning, and stateless retraining on all history
run through the same loop (seed, model, trigger EveryWindow, default PromotionGate) on the NOAA weather
stream and on class-incremental Fashion-MNIST. One process runs them one after another:

    .venv/bin/python scripts/bench_update.py                # the full run, about 12 minutes on 2 cores
    .venv/bin/python scripts/bench_update.py --quick        # a smoke run; writes nothing unless --out
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from perennial.data import FashionMNISTStream, Stream, WeatherStream, Window
from perennial.evaluate import PromotionGate
from perennial.learn import (
    MLP,
    ClassifierModule,
    ReplayBuffer,
    ReservoirBuffer,
    SmallCNN,
    StatefulUpdate,
    StatelessUpdate,
    Update,
)
from perennial.loop import ContinuousDeployment, LoopSettings
from perennial.registry import Registry, atomic_write_text
from perennial.report.run import summarize
from perennial.triggers import EveryWindow, Trigger

SECTION = "bench_update"
# The defaults of conf/update/*.yaml, conf/strategy/replay.yaml, conf/trainer/cpu.yaml and conf/run.yaml.
EPOCHS = 20
BATCH_SIZE = 64
LR = 1e-3
CAPACITY = 1000
REPLAY_FRACTION = 0.5
TRAINER = {"accelerator": "cpu", "devices": 1, "precision": "32-true", "deterministic": True}
RECENT = 10
# Aims from the issue.
RECENT_GAIN = 0.15  # weather, last 10 years: served >= static + 0.15
ACCURACY_SHARE = 0.97  # stateful+replay served >= 97% of stateless-all-history's ...
SAMPLES_SHARE = 0.25  # ... with <= 25% of its samples processed
HEADER = "# Benchmarks\n\nMeasured numbers; each section says how to rerun it.\n"
MODES = ("stateful+replay", "stateful naive", "stateless all-history")


@dataclass
class FirstWindows(Stream):
    """The first ``n`` windows of another stream, for quick runs."""

    inner: Stream = field(default=None)  # type: ignore[assignment]
    n: int = 0

    def __post_init__(self) -> None:
        self.name, self.feature_shape, self.classes = (
            self.inner.name,
            self.inner.feature_shape,
            self.inner.classes,
        )

    def windows(self) -> list[Window]:
        return self.inner.windows()[: self.n]


@dataclass(frozen=True)
class Bench:
    """One stream and how every mode is run on it."""

    title: str
    stream: Stream
    model: str
    backbone: Callable[..., torch.nn.Module]
    settings: LoopSettings


@dataclass(frozen=True)
class Result:
    stream: str
    mode: str
    summary: dict
    final_average_accuracy: float
    wall_seconds: float

    @property
    def samples(self) -> int:
        return int(self.summary["compute"]["samples_processed"])

    @property
    def train_seconds(self) -> float:
        return float(self.summary["compute"]["train_seconds"])


def make_update(mode: str, epochs: int, seed: int) -> tuple[Update, ReplayBuffer | None]:
    common = {"epochs": epochs, "batch_size": BATCH_SIZE, "lr": LR}
    if mode == "stateful+replay":
        return StatefulUpdate(replay_fraction=REPLAY_FRACTION, **common), ReservoirBuffer(CAPACITY, seed=seed)
    if mode == "stateful naive":
        return StatefulUpdate(replay_fraction=0.0, **common), None
    if mode == "stateless all-history":
        return StatelessUpdate(history="all", **common), None
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def build_module(backbone: Callable[..., torch.nn.Module], in_shape, n_classes: int) -> ClassifierModule:
    return ClassifierModule(backbone(in_shape=in_shape, n_classes=n_classes), n_classes)


@dataclass(frozen=True)
class LoopRun:
    """One finished loop run: its state (rows per window), summary and accuracy matrix."""

    state: dict
    summary: dict
    matrix: pd.DataFrame
    champion: str
    wall_seconds: float


def run_loop(
    bench: Bench,
    mode: str,
    epochs: int,
    workdir: Path,
    trigger: Trigger | None = None,
    label: str | None = None,
    recent_windows: int | None = None,
) -> LoopRun:
    """The real loop on ``bench`` with update ``mode``, the default gate and ``trigger`` (every window
    by default); ``label`` names the run in its directory and config."""
    update, buffer = make_update(mode, epochs, bench.settings.seed)
    if recent_windows is not None:
        update.recent_windows = recent_windows
    stream, label = bench.stream, label or mode
    run_dir = workdir / f"{stream.name}-{''.join(c if c.isalnum() else '_' for c in label)}"
    registry = Registry(run_dir / "registry")
    loop = ContinuousDeployment(
        stream=stream,
        build=partial(build_module, bench.backbone, tuple(stream.feature_shape), stream.n_classes),
        update=update,
        trigger=trigger or EveryWindow(),
        gate=PromotionGate(seed=bench.settings.seed),
        buffer=buffer,
        registry=registry,
        run_dir=run_dir,
        settings=bench.settings,
        trainer=TRAINER,
        config={"bench": SECTION, "stream": stream.name, "run": label, "model": bench.model},
        progress=True,
    )
    start = time.perf_counter()
    state = loop.run()
    wall = time.perf_counter() - start
    matrix = loop.accuracy_matrix()
    summary = summarize(state, registry, matrix, stream, recent=RECENT)
    champion = registry.champion()
    registry.close()
    return LoopRun(state, summary, matrix, champion, wall)


def run_mode(bench: Bench, mode: str, epochs: int, workdir: Path) -> Result:
    run = run_loop(bench, mode, epochs, workdir)
    final = float(run.matrix.loc[run.champion].mean())
    return Result(bench.stream.name, mode, run.summary, final, run.wall_seconds)


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """``--out``: the markdown file a benchmark rewrites its section of."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file to update (default docs/benchmarks.md; none with --quick)",
    )


# ---- the report -------------------------------------------------------------------------------
def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**PASS**" if ok else "**MISS**")


def results_table(results: list[Result]) -> str:
    head = (
        "| stream | mode | served acc | served / static, last 10 | forgetting | BWT | final avg acc "
        "| promoted / rejected | train s | samples processed | wall s |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        s, recent = r.summary, r.summary["recent"]
        last = (
            f"{fmt(recent['served_accuracy'])} / {fmt(recent['static_accuracy'])}"
            if r.stream == "weather"
            else "-"
        )
        lines.append(
            f"| {r.stream} | {r.mode} | {fmt(s['served_accuracy'])} | {last} | {fmt(s['forgetting'])} "
            f"| {s['backward_transfer']:+.3f} | {fmt(r.final_average_accuracy)} "
            f"| {s['promoted']} / {s['rejected']} | {r.train_seconds:.1f} | {r.samples:,} "
            f"| {r.wall_seconds:.1f} |"
        )
    return "\n".join(lines)


def aims(results: list[Result]) -> list[str]:
    """One line per aim and stream, PASS or MISS from the numbers, never adjusted."""
    by = {(r.stream, r.mode): r for r in results}
    out = []
    for mode in MODES:
        r = by.get(("weather", mode))
        if r is None:
            continue
        recent = r.summary["recent"]
        gain = recent["served_accuracy"] - recent["static_accuracy"]
        out.append(
            f"- Weather, last {recent['windows']} years, {mode}: served {fmt(recent['served_accuracy'])} vs "
            f"static {fmt(recent['static_accuracy'])}, gain {gain:+.3f} (aim ≥ +{RECENT_GAIN:.2f}): "
            f"{verdict(gain >= RECENT_GAIN)}"
        )
    for stream in dict.fromkeys(r.stream for r in results):
        replay, full = by.get((stream, "stateful+replay")), by.get((stream, "stateless all-history"))
        if replay is None or full is None:
            continue
        samples = ratio(replay.samples, full.samples)
        served = ratio(replay.summary["served_accuracy"], full.summary["served_accuracy"])
        # Either half failing is a miss; an undefined accuracy ratio with the samples half met is n/a.
        if samples > SAMPLES_SHARE:
            served_ok: bool | None = False
        else:
            served_ok = None if math.isnan(served) else served >= ACCURACY_SHARE
        line = (
            f"- {stream}, stateful+replay vs stateless all-history: served accuracy ratio {fmt(served)} "
            f"(aim ≥ {ACCURACY_SHARE:.2f}), samples processed ratio {fmt(samples)} "
            f"(aim ≤ {SAMPLES_SHARE:.2f}), train seconds ratio "
            f"{fmt(ratio(replay.train_seconds, full.train_seconds))}: {verdict(served_ok)}"
        )
        if math.isnan(served):
            line += (
                ". Stateless all-history serves accuracy 0 here (in a class-incremental stream each window "
                "brings classes no model has seen yet), so the accuracy ratio is undefined"
            )
        if samples > SAMPLES_SHARE:
            line += f". {why_samples(replay, full)}"
        final = ratio(replay.final_average_accuracy, full.final_average_accuracy)
        final_ok = final >= ACCURACY_SHARE and samples <= SAMPLES_SHARE
        line += (
            f". Same aim on final average accuracy: ratio {fmt(final)} with samples ratio {fmt(samples)}: "
            f"{verdict(final_ok)}"
        )
        out.append(line)
    return out


def why_samples(replay: Result, full: Result) -> str:
    """How much history the retrains saw, which decides the samples ratio."""
    retrains = [v for v in full.summary["versions"] if v["id"] != "v1"]
    tuned = [v for v in replay.summary["versions"] if v["id"] != "v1"]
    mean = sum(len(v["trained_on_windows"]) for v in retrains) / max(1, len(retrains))
    return (
        f"Each of the {len(tuned)} stateful updates trains on one new window plus as many replayed rows, "
        f"each of the {len(retrains)} retrains on {mean:.1f} windows on average: the ratio only falls as "
        "the history grows"
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln]
        cpu = names[0] if names else cpu
    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()}-core CPU ({cpu}), {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"
    )


def load_average(at_start: float) -> str:
    """The 1-minute load average at the start and the end, to show how busy the machine was."""
    return f"1-minute load average {at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"


def command() -> str:
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):  # a python outside the repository keeps its full path
        exe = exe.relative_to(Path.cwd())
    return f"{exe} {shlex.join(sys.argv)}"


def replace_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between this benchmark's markers in ``path``, keeping every other section as it is."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + block + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def section(
    results: list[Result], benches: list[Bench], args: argparse.Namespace, seconds: float, load: str
) -> str:
    setups = "\n".join(
        f"- {b.title}: {len(b.stream.windows())} windows, model {b.model}, "
        f"warm-up {b.settings.warmup_windows} window(s), hold-out {b.settings.holdout_fraction}"
        for b in benches
    )
    quick = "\n**Quick run: smoke-test numbers, not the benchmark.**\n" if args.quick else ""
    return f"""## Update modes (scripts/bench_update.py)
{quick}
Command: `{command()}` (run time after imports: {seconds / 60:.1f} min)
Date: {datetime.now(UTC).date().isoformat()}. Machine: {machine()}.

Every mode runs the same loop with seed {args.seed}, trigger EveryWindow, the default PromotionGate,
the trainer of conf/trainer/cpu.yaml, batch size {BATCH_SIZE}, learning rate {LR}, and {args.epochs} epochs
for v1 and for every update (the default of conf/update/stateful.yaml and stateless.yaml). Modes:
stateful+replay is StatefulUpdate with ReservoirBuffer(capacity={CAPACITY}) and replay_fraction
{REPLAY_FRACTION} (conf/strategy/replay.yaml); stateful naive has no buffer and replay_fraction 0;
stateless all-history is StatelessUpdate(history="all").

{setups}

Served accuracy is each window's accuracy for the champion of the moment, before its labels are used,
averaged over the evaluated windows (those after the warm-up); static is v1, never updated. Forgetting
and BWT come from `perennial.report.run.summarize` over the accuracy matrix. Final avg acc is the final
champion's mean accuracy over every window's held-out rows. Train seconds and samples processed
(examples x epochs) include v1's training, which every mode shares; wall s is the whole `loop.run()`
(training, gate, registry, checkpoints), not counting the accuracy matrix. A rejected candidate never
serves: the final champion is the last promoted version. Other work can share this machine ({load}),
so seconds are indicative; samples processed are exact.

{results_table(results)}

Aims:

{chr(10).join(aims(results))}
"""


def print_results(console: Console, results: list[Result]) -> None:
    table = Table(title="update modes")
    for col in (
        "stream",
        "mode",
        "served",
        "last-10 served/static",
        "final avg",
        "train s",
        "samples",
        "wall s",
    ):
        table.add_column(col)
    for r in results:
        recent = r.summary["recent"]
        table.add_row(
            r.stream,
            r.mode,
            fmt(r.summary["served_accuracy"]),
            f"{fmt(recent['served_accuracy'])} / {fmt(recent['static_accuracy'])}",
            fmt(r.final_average_accuracy),
            f"{r.train_seconds:.1f}",
            f"{r.samples:,}",
            f"{r.wall_seconds:.1f}",
        )
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="8 weather windows, 300 images a window, 2 epochs"
    )
    parser.add_argument(
        "--streams", nargs="+", choices=("weather", "fashion"), default=["weather", "fashion"]
    )
    parser.add_argument("--weather-windows", type=int, default=None, help="use only the first N years")
    parser.add_argument(
        "--fashion-per-window", type=int, default=1000, help="images kept per class-incremental window"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"epochs for v1 and updates (default {EPOCHS})"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1, as in the tests: small models, shared CPU)"
    )
    parser.add_argument(
        "--trainer", choices=("cpu", "gpu"), default="cpu", help="conf/trainer/<name>.yaml for every update"
    )
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.weather_windows = args.weather_windows or 8
        args.fashion_per_window = 300
        args.epochs = args.epochs or 2
    args.epochs = args.epochs or EPOCHS
    if args.out is None and not args.quick:
        args.out = Path("docs/benchmarks.md")
    return args


def benches(args: argparse.Namespace) -> list[Bench]:
    out = []
    if "weather" in args.streams:
        stream: Stream = WeatherStream(window=365)
        if args.weather_windows:
            stream = FirstWindows(inner=stream, n=args.weather_windows)
        out.append(
            Bench(
                "NOAA weather, 365-day windows",
                stream,
                "MLP hidden [64, 64]",
                partial(MLP, hidden=(64, 64)),
                LoopSettings(warmup_windows=3, initial_epochs=args.epochs, seed=args.seed),
            )
        )
    if "fashion" in args.streams:
        out.append(
            Bench(
                f"Fashion-MNIST class-incremental, 2 classes a window, {args.fashion_per_window} images "
                "a window (seeded subset)",
                FashionMNISTStream(
                    scenario="class_incremental", max_per_window=args.fashion_per_window, seed=args.seed
                ),
                "SmallCNN channels [16, 32], hidden 64",
                partial(SmallCNN, channels=(16, 32), hidden=64),
                # Every class has an output from v1, as in the runs recorded in docs/benchmarks.md.
                LoopSettings(warmup_windows=1, initial_epochs=args.epochs, seed=args.seed, head="full"),
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.trainer != "cpu":  # every run_loop reads TRAINER
        TRAINER.clear()
        TRAINER.update(OmegaConf.to_container(OmegaConf.load(f"conf/trainer/{args.trainer}.yaml")))
    console = Console()
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    todo = benches(args)
    results = []
    jobs = [(b, m) for b in todo for m in MODES]
    with tempfile.TemporaryDirectory(prefix="perennial-bench-") as tmp:
        for i, (bench, mode) in enumerate(jobs, 1):
            console.rule(f"[bold][{i}/{len(jobs)}] {bench.stream.name} · {mode}")
            results.append(run_mode(bench, mode, args.epochs, Path(tmp)))
            r = results[-1]
            console.print(
                f"served {fmt(r.summary['served_accuracy'])}, final avg {fmt(r.final_average_accuracy)}, "
                f"{r.samples:,} samples, {r.wall_seconds:.1f} s"
            )
    seconds = time.perf_counter() - start
    print_results(console, results)
    for line in aims(results):
        console.print(line)
    if args.out is not None:
        replace_section(args.out, SECTION, section(results, todo, args, seconds, load_average(load_start)))
        console.print(f"wrote the {SECTION} section of {args.out} ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()
