"""One report across many `perennial-run` jobs: every job's summary.json in one table, two comparison
plots, and the jobs that did not finish named, for a single run directory or a Hydra multirun."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from matplotlib.ticker import MaxNLocator
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from perennial.registry import atomic_write_text
from perennial.report.figures import figure, save

OUTPUTS = {
    "csv": "report.csv",
    "markdown": "report.md",
    # Prefixed, so that a report on a single run directory never replaces the run's own plots.
    "compute_plot": "report_accuracy_vs_compute.png",
    "time_plot": "report_accuracy_over_time.png",
}
# The training-compute figures a summary.json carries (summary["compute"]): heading, axis label.
COMPUTE = {
    "samples_processed": ("samples trained", "samples trained on (rows x epochs, v1 and every update)"),
    "train_seconds": ("train s", "training seconds (v1 and every update)"),
}
NOT_FINISHED = "no summary.json: the job failed, was killed or is still running"
# Above this ratio between the most and least compute, a linear axis squeezes the cheap jobs together.
LOG_SCALE_RATIO = 10


@dataclass
class Job:
    """One `perennial-run` job directory, finished or not."""

    path: Path
    name: str  # path relative to the report's root: "." when the root is itself the job
    overrides: dict[str, str]
    summary: dict | None = None  # flattened; None when the job did not finish
    problem: str = ""  # why the job counts as not finished
    windows: pd.DataFrame | None = None

    @property
    def finished(self) -> bool:
        return self.summary is not None


@dataclass
class SweepReport:
    """The jobs under one directory, and which of their overrides tell them apart."""

    root: Path
    jobs: list[Job]
    swept: list[str]  # the override keys whose values tell the jobs apart, one table column each

    @property
    def finished(self) -> list[Job]:
        return [j for j in self.jobs if j.finished]

    @property
    def unfinished(self) -> list[Job]:
        return [j for j in self.jobs if not j.finished]

    def settings(self, job: Job) -> str:
        """The job's values of the swept keys, e.g. ``strategy=naive``."""
        return ", ".join(f"{k}={job.overrides[k]}" for k in self.swept if k in job.overrides)

    def label(self, job: Job) -> str:
        """A job's name in the plots: its swept settings, or its path where they do not tell it apart."""
        settings = self.settings(job)
        if not settings:
            # A lone run without overrides is "." relative to itself: its directory's name says more.
            return job.path.resolve().name if job.name == "." else job.name
        twins = [j for j in self.jobs if self.settings(j) == settings]
        return settings if len(twins) == 1 else f"{job.name}: {settings}"

    @property
    def metric(self) -> str:
        """The headline metric of the finished jobs: accuracy, or mse for a sweep of regressors."""
        regression = any("served_mse" in (j.summary or {}) for j in self.finished)
        return "mse" if regression else "accuracy"

    @property
    def figures(self) -> list[str]:
        """HEADLINE's headings for this sweep: the metric's columns, and the rest."""
        other = "mse" if self.metric == "accuracy" else "acc"
        return [f for f in HEADLINE if not f.endswith(f" {other}")]

    def table(self) -> pd.DataFrame:
        """One row per finished job: its path, its swept settings and every flattened summary field."""
        rows = [
            {"job": j.name, **{k: j.overrides.get(k, "") for k in self.swept}, **(j.summary or {})}
            for j in self.finished
        ]
        # With no finished job the CSV still gets its header, so a stale report.csv is not left behind.
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["job", *self.swept])


# ---- reading the jobs -------------------------------------------------------------------------


def collect(root: str | Path) -> SweepReport:
    """Every job under ``root`` (``root`` itself when it is one run), read and ordered by path.

    Raises FileNotFoundError when ``root`` does not exist or holds no job, NotADirectoryError when it
    is a file.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory; give a run or multirun directory")
    jobs = [read_job(path, root) for path in sorted(find_job_dirs(root), key=lambda p: _natural(p, root))]
    if not jobs:
        raise FileNotFoundError(
            f"no perennial-run job under {root}: found no summary.json, windows.csv, .hydra/ or registry/"
        )
    return SweepReport(root, jobs, swept_keys([j.overrides for j in jobs]))


def find_job_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` that a `perennial-run` job wrote to, finished or not."""
    found = []
    for here, dirs, _ in os.walk(root):
        path = Path(here)
        if _is_job(path):
            found.append(path)
            dirs[:] = []  # a job's registry and checkpoint folders are its own, never other jobs
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # .hydra, .submitit: launcher files
    return found


def _is_job(path: Path) -> bool:
    # summary.json and windows.csv are written when a job ends; .hydra/ when Hydra starts it; the
    # registry holds the loop's checkpoint from the first window on, also when run outside Hydra.
    return (
        (path / "summary.json").is_file()
        or (path / "windows.csv").is_file()
        or (path / ".hydra").is_dir()
        or (path / "registry" / "index.sqlite").is_file()
    )


def _natural(path: Path, root: Path) -> list[tuple[int, int | str]]:
    # Hydra numbers a sweep's jobs 0, 1, ..., 10: job 10 sorts after job 9, not after job 1.
    parts = re.split(r"(\d+)", path.relative_to(root).as_posix())
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]


def read_job(path: Path, root: Path) -> Job:
    """A job's overrides, flattened summary and per-window rows; a job whose summary.json is missing or
    unreadable comes back not finished, with the reason."""
    name = path.relative_to(root).as_posix()
    job = Job(path, name, _read_overrides(path / ".hydra" / "overrides.yaml"))
    try:
        summary = json.loads((path / "summary.json").read_text())
    except FileNotFoundError:
        job.problem = NOT_FINISHED
        return job
    except (OSError, UnicodeDecodeError, ValueError) as err:
        job.problem = f"summary.json unreadable: {err}"
        return job
    if not isinstance(summary, dict) or not {"served_accuracy", "served_mse"} & set(summary):
        # e.g. a perennial-freshness study, which writes a summary.json of another shape
        job.problem = "summary.json is not a perennial-run summary (no served_accuracy or served_mse)"
        return job
    job.summary = flatten(summary)
    job.windows = _read_windows(path / "windows.csv")
    return job


def _read_windows(path: Path) -> pd.DataFrame | None:
    try:
        rows = pd.read_csv(path)
    except (OSError, ValueError):  # missing, empty or garbled: the job stays in the table, off the plot
        return None
    served = {"served_accuracy", "served_mse"} & set(rows.columns)
    return rows if "window" in rows.columns and served else None


def _read_overrides(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        lines = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # garbled: report the job without its overrides
        return {}
    return parse_overrides([str(line) for line in lines]) if isinstance(lines, list) else {}


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """Hydra's command-line overrides as ``{key: value}``, read with Hydra's own grammar so that one
    value always reads the same: a multirun writes ``progress=False`` where a single run keeps
    ``progress=false``. A ``~`` deletion reads as ``(deleted)``; ``+``/``++`` (add) leave the key.

    >>> parse_overrides(["strategy=naive", "progress=False", "++trigger.every=5", "~rollout"])
    {'strategy': 'naive', 'progress': 'false', 'trigger.every': '5', 'rollout': '(deleted)'}
    """
    parser = OverridesParser.create()
    overrides = {}
    for line in lines:
        key, _, value = line.partition("=")
        try:
            override = parser.parse_override(line)
        except HydraException:  # not Hydra's syntax, e.g. a file written by hand: keep the text as it is
            overrides[key.lstrip("+~")] = value
            continue
        key = override.key_or_group + (f"@{override.package}" if override.package else "")
        if override.is_delete():
            overrides[key] = "(deleted)"
            continue
        parsed = override.value()
        if parsed is None or isinstance(parsed, bool | int | float):
            overrides[key] = json.dumps(parsed)  # true/false/null and numbers as a command line takes them
        else:
            overrides[key] = value  # text, lists and sweeps as written
    return overrides


def swept_keys(overrides: Sequence[dict[str, str]]) -> list[str]:
    """The keys whose values differ between jobs, in the order they were first given. A single job has
    nothing to differ from: all its overrides tell it apart from the defaults.

    >>> swept_keys([{"strategy": "naive", "seed": "0"}, {"strategy": "replay", "seed": "0"}])
    ['strategy']
    >>> swept_keys([{"update": "stateless", "trigger.every": "5"}])
    ['update', 'trigger.every']
    """
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    if len(overrides) == 1:
        return keys
    return [k for k in keys if len({o.get(k) for o in overrides}) > 1]


def flatten(summary: dict, prefix: str = "") -> dict:
    """A summary's fields as one level of scalars: nested fields joined with dots, and a list by its
    length, since every list in a summary holds records (versions, rollouts, empty windows) and how
    many there are is what compares across jobs.

    >>> flatten({"served_accuracy": 0.8, "recent": {"windows": 10, "served_accuracy": 0.7},
    ...          "versions": [{"id": "v1"}, {"id": "v1.1"}]})
    {'served_accuracy': 0.8, 'recent.windows': 10, 'recent.served_accuracy': 0.7, 'versions': 2}
    """
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = len(value) if isinstance(value, list) else value
    return flat


# ---- the table on screen and in markdown ------------------------------------------------------


def _field(key: str, spec: str) -> Callable[[dict], str]:
    def cell(summary: dict) -> str:
        value = summary.get(key)
        if value is None:  # a field this job's summary lacks is left empty
            return ""
        try:
            return spec.format(value)
        except (TypeError, ValueError):  # a summary from another perennial version: show it as it is
            return str(value)

    return cell


def _promoted_rejected(summary: dict) -> str:
    promoted, rejected = _field("promoted", "{:d}")(summary), _field("rejected", "{:d}")(summary)
    return f"{promoted} / {rejected}" if promoted or rejected else ""


HEADLINE: dict[str, Callable[[dict], str]] = {  # heading -> its cell from a flattened summary
    "served acc": _field("served_accuracy", "{:.3f}"),
    "recent served acc": _field("recent.served_accuracy", "{:.3f}"),
    "static acc": _field("static_accuracy", "{:.3f}"),
    "served mse": _field("served_mse", "{:.4g}"),
    "recent served mse": _field("recent.served_mse", "{:.4g}"),
    "static mse": _field("static_mse", "{:.4g}"),
    "updates": _field("updates", "{:d}"),
    "promoted / rejected": _promoted_rejected,
    "versions": _field("versions", "{:d}"),
    "forgetting": _field("forgetting", "{:.3f}"),
    "BWT": _field("backward_transfer", "{:+.3f}"),
    "train s": _field("compute.train_seconds", "{:.1f}"),
    "samples trained": _field("compute.samples_processed", "{:,}"),
}
# On screen, the figures that compare methods, and the chosen compute figure: with a few swept keys the
# table still fits an 80-column terminal.
SCREEN = ("served acc", "recent served acc", "forgetting")


def cells(report: SweepReport, job: Job, figures: Sequence[str] | None = None) -> list[str]:
    """A finished job's row: its path, its swept settings and the ``figures`` named (HEADLINE's keys;
    by default the report's)."""
    summary = job.summary or {}
    figures = report.figures if figures is None else figures
    return [
        job.name,
        *(job.overrides.get(k, "") for k in report.swept),
        *(HEADLINE[f](summary) for f in figures),
    ]


def markdown(report: SweepReport, plots: Sequence[Path] = ()) -> str:
    lines = [
        f"# perennial report: {report.root}",
        "",
        f"{len(report.finished)} of {len(report.jobs)} jobs finished. "
        f"Every summary field, one row per job, is in {OUTPUTS['csv']}.",
        "",
        *(
            _markdown_table(
                ["job", *report.swept, *report.figures], [cells(report, j) for j in report.finished]
            )
            if report.finished
            else ["No job finished."]
        ),
    ]
    if report.unfinished:
        lines += [
            "",
            "## Not finished",
            "",
            *_markdown_table(
                ["job", "settings", "why"],
                [[j.name, report.settings(j), j.problem] for j in report.unfinished],
            ),
        ]
    if plots:
        lines += ["", "## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots)]
        off = [j.name for j in report.finished if j.windows is None]
        if off:
            lines += [
                "",
                f"Left out of the accuracy-over-time plot (no readable windows.csv): {', '.join(off)}",
            ]
    return "\n".join([*lines, ""])


def _markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    return [line(head), "|" + "---|" * len(head), *(line(r) for r in rows)]


def print_report(
    report: SweepReport,
    written: Sequence[Path],
    compute: str = "samples_processed",
    console: Console | None = None,
) -> None:
    console = console or Console()
    screen = SCREEN if report.metric == "accuracy" else ("served mse", "recent served mse", "forgetting")
    figures = (*screen, COMPUTE[compute][0])
    # Text cells: a job path or override value with brackets in it is not rich markup.
    table = Table(
        title=f"perennial report: {report.root}",
        caption=f"every figure: {OUTPUTS['markdown']}",
        box=box.SIMPLE_HEAD,
    )
    # When the table is too wide, paths and settings fold onto more lines; the figures never shrink.
    for heading in ["job", *report.swept]:
        table.add_column(heading, overflow="fold")
    for heading in figures:  # a word a line keeps the figures' columns narrow
        table.add_column(heading.replace(" ", "\n"), justify="right", no_wrap=True)
    for job in report.finished:
        table.add_row(*(Text(c) for c in cells(report, job, figures)))
    if report.finished:
        console.print(table)
    if report.unfinished:
        missing = Table(
            title=f"not finished: {len(report.unfinished)} of {len(report.jobs)} jobs", box=box.SIMPLE_HEAD
        )
        for heading in ("job", "settings", "why"):
            missing.add_column(heading, overflow="fold")
        for job in report.unfinished:
            missing.add_row(Text(job.name), Text(report.settings(job)), Text(job.problem))
        console.print(missing)
    if written:
        console.print(Text(f"outputs in {written[0].parent}: {', '.join(p.name for p in written)}"))


# ---- outputs ----------------------------------------------------------------------------------


def write_outputs(report: SweepReport, out: Path, compute: str = "samples_processed") -> list[Path]:
    """report.csv, the two plots when a job finished, and report.md in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    csv = out / OUTPUTS["csv"]
    atomic_write_text(csv, report.table().to_csv(index=False))
    plots = []
    if report.finished:
        plots = [
            plot_accuracy_vs_compute(report, out / OUTPUTS["compute_plot"], compute),
            plot_accuracy_over_time(report, out / OUTPUTS["time_plot"]),
        ]
    md = out / OUTPUTS["markdown"]
    atomic_write_text(md, markdown(report, plots))
    return [csv, md, *plots]


def plot_accuracy_vs_compute(report: SweepReport, path: Path, compute: str) -> Path:
    """Each finished job's served accuracy against the training compute it spent, labelled."""
    if compute not in COMPUTE:
        raise ValueError(f"compute={compute!r}; choose one of {', '.join(COMPUTE)}")
    points: dict[tuple[float, float], list[str]] = {}
    for job in report.finished:
        summary = job.summary or {}
        x, y = summary.get(f"compute.{compute}"), summary.get(f"served_{report.metric}")
        if _is_number(x) and _is_number(y):
            points.setdefault((x, y), []).append(report.label(job))
    fig, ax = figure(8, 5)
    for (x, y), labels in points.items():
        ax.scatter([x], [y], s=40, zorder=3)
        # Jobs that land on one point (same data, same outcome) share one label instead of overprinting.
        ax.annotate("\n".join(labels), (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    xs = [x for x, _ in points]
    if xs and min(xs) > 0 and max(xs) / min(xs) > LOG_SCALE_RATIO:
        ax.set_xscale("log")
    ax.margins(x=0.25, y=0.1)  # room for the labels of the rightmost and topmost points
    name = "MSE" if report.metric == "mse" else "accuracy"
    ax.set(
        xlabel=COMPUTE[compute][1],
        ylabel=f"served {name} (mean over evaluated windows)",
        title=f"Served {name} against training compute",
    )
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_accuracy_over_time(report: SweepReport, path: Path) -> Path:
    """Served accuracy on each new window, before its labels, one line per finished job."""
    fig, ax = figure(10, 4.5)
    column, name = f"served_{report.metric}", "MSE" if report.metric == "mse" else "accuracy"
    for job in report.finished:
        if job.windows is not None and column in job.windows:
            ax.plot(job.windows["window"], job.windows[column], lw=1.5, label=report.label(job))
    ax.set(xlabel="window", ylabel=f"served {name}", title=f"Served {name} over time")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # windows are counted, never fractional
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="best", fontsize=8)
    return save(fig, path)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
