"""How often should a model be retrained? Replays a stream's history with stateless retraining at
several cadences and training-window lengths, and scores each on the stream's most recent windows.

A model retrained every ``every`` windows on the last ``history`` labelled windows serves until the
next retrain. For a served window ``t`` the model in service was trained at the last update point
``u <= t - 1`` (window ``t``'s labels arrive after it is served). Averaged over every phase of the
schedule, window ``t`` is served once by each of the models trained at ``t - 1, ..., t - every``, and
a model trained at ``(u, history)`` is the same whatever the cadence, so each is trained once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from perennial.data.window import Stream, Window, window_seed
from perennial.evaluate.metrics import evaluate
from perennial.learn.fit import fit, make_fabric
from perennial.learn.module import ClassifierModule
from perennial.registry import atomic_write_text
from perennial.report.figures import figure, save

History = int | str  # a count of recent windows, or "all"


def cadences(every: int | Sequence[int]) -> list[int]:
    """``freshness.every`` as sorted distinct window counts; a single value is a grid of one.

    >>> cadences(4), cadences([8, 1, 2, 1])
    ([4], [1, 2, 8])
    >>> cadences([1, 0])
    Traceback (most recent call last):
    ValueError: freshness.every must be whole window counts >= 1, got 0
    """
    values = list(every) if isinstance(every, Sequence) and not isinstance(every, str) else [every]
    if not values:
        raise ValueError("freshness.every must name at least one window count >= 1, got an empty list")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"freshness.every must be whole window counts >= 1, got {v!r}")
    return sorted(set(values))


def histories(history: History | Sequence[History]) -> list[History]:
    """``freshness.history`` as sorted distinct window counts, then ``"all"``; one value is a grid of one.

    >>> histories("all"), histories([4, "all", 1])
    (['all'], [1, 4, 'all'])
    >>> histories([4, -1])
    Traceback (most recent call last):
    ValueError: freshness.history must be window counts >= 1 or 'all', got -1
    """
    values = list(history) if isinstance(history, Sequence) and not isinstance(history, str) else [history]
    if not values:
        raise ValueError(
            "freshness.history must name at least one window count >= 1 or 'all', got an empty list"
        )
    for v in values:
        if v != "all" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"freshness.history must be window counts >= 1 or 'all', got {v!r}")
    counts = sorted({v for v in values if v != "all"})
    return [*counts, *(["all"] if "all" in values else [])]


@dataclass
class FreshnessSettings:
    """The grid to study (``every`` x ``history``), how many recent windows score it, and how each
    retrain trains; ``tolerance`` is how much accuracy the recommendation may give up for less compute."""

    every: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    history: list[History] = field(default_factory=lambda: [1, 4, "all"])
    eval_windows: int = 10
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    tolerance: float = 0.01

    def __post_init__(self) -> None:
        self.every, self.history = cadences(self.every), histories(self.history)
        for name in ("eval_windows", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"freshness.{name} must be a whole number >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"freshness.lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"freshness.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.tolerance <= 1:
            raise ValueError(
                f"freshness.tolerance is an accuracy difference in [0, 1], got {self.tolerance!r}"
            )

    def windows_needed(self) -> int:
        """Windows a stream needs: the scored ones, the ``max(every)`` update points before the first
        of them, and enough windows behind the earliest update point for the longest numeric history."""
        counts = [h for h in self.history if h != "all"]
        return self.eval_windows + max(self.every) + max(counts, default=1) - 1


@dataclass
class FreshnessResult:
    """What the study found. ``table`` has one row per ``every`` x ``history``; ``by_age`` is the
    accuracy of a model ``staleness`` windows after its training, per ``history``."""

    stream: str
    n_windows: int
    evaluated: list[int]
    settings: FreshnessSettings
    table: pd.DataFrame
    by_age: pd.DataFrame
    trainings: int
    train_seconds: float
    samples_processed: int
    seconds: float

    def best(self) -> pd.Series:
        return self.table.loc[self.table["served_accuracy"].idxmax()]

    def recommendation(self) -> pd.Series:
        """The cheapest setting (fewest samples processed per window) within ``tolerance`` of the best."""
        near = self.table[
            self.table["served_accuracy"] >= self.best()["served_accuracy"] - self.settings.tolerance
        ]
        return near.sort_values(["samples_per_window", "served_accuracy"], ascending=[True, False]).iloc[0]

    def recommendation_line(self) -> str:
        rec, best, tolerance = self.recommendation(), self.best(), self.settings.tolerance
        setting = (
            f"Recommendation: retrain every {_windows(rec['every'])} on {_history_words(rec['history'])}"
        )
        if rec.name == best.name:
            return (
                f"{setting}. It serves the best accuracy, {best['served_accuracy']:.3f}, and no cheaper "
                f"setting comes within {tolerance:.3f} of it."
            )
        share = rec["samples_per_window"] / best["samples_per_window"]
        return (
            f"{setting}. It serves {rec['served_accuracy']:.3f} accuracy, within {tolerance:.3f} of the "
            f"best ({best['served_accuracy']:.3f}: every {_windows(best['every'])} on "
            f"{_history_words(best['history'])}), for {share:.0%} of its compute."
        )

    def summary(self) -> dict:
        settings = self.settings
        return {
            "stream": self.stream,
            "windows": self.n_windows,
            "evaluated_windows": self.evaluated,
            "every": settings.every,
            "history": settings.history,
            "epochs": settings.epochs,
            "tolerance": settings.tolerance,
            "trainings": self.trainings,
            "compute": {
                "train_seconds": round(self.train_seconds, 3),
                "samples_processed": self.samples_processed,
            },
            "seconds": round(self.seconds, 3),
            "best": _records(self.best().to_frame().T)[0],
            "recommendation": {
                **_records(self.recommendation().to_frame().T)[0],
                "line": self.recommendation_line(),
            },
            "settings": _records(self.table),
            "staleness": _records(self.by_age),
        }


class FreshnessStudy:
    """Retrains a fresh model from ``build`` at each update point and history length the grid needs,
    scores it on the windows it would serve, and aggregates the scores per setting.

    >>> from perennial.data import SyntheticStream
    >>> from perennial.learn import MLP
    >>> stream = SyntheticStream(n_samples=1200, window=100, n_features=4, seed=0)
    >>> build = lambda: ClassifierModule(MLP(in_shape=(4,), n_classes=2, hidden=[8]), n_classes=2)
    >>> settings = FreshnessSettings(every=[1, 2], history=[1], eval_windows=3, epochs=1)
    >>> result = FreshnessStudy(stream, build, settings).run()
    >>> result.trainings  # update points 7, 8, 9, 10 serve windows 9, 10, 11
    4
    >>> result.table[["every", "mean_staleness", "updates_per_window"]].to_dict("list")
    {'every': [1, 2], 'mean_staleness': [1.0, 1.5], 'updates_per_window': [1.0, 0.5]}
    """

    def __init__(
        self,
        stream: Stream,
        build: Callable[[], ClassifierModule],
        settings: FreshnessSettings | None = None,
        seed: int = 0,
        trainer: Mapping | None = None,
    ) -> None:
        self.stream, self.build, self.seed = stream, build, seed
        self.settings = settings or FreshnessSettings()
        self.trainer = dict(trainer or {})
        make_fabric(self.trainer)  # a trainer setting this machine cannot use fails now, not mid-study
        self.windows: list[Window] = stream.windows()
        need, have = self.settings.windows_needed(), len(self.windows)
        if have < need:
            s = self.settings
            counts = [h for h in s.history if h != "all"]
            parts = f"eval_windows={s.eval_windows} + max every={max(s.every)}"
            if counts:
                parts += f" + max history={max(counts)} - 1"
            most = have - need + s.eval_windows
            fewer = f"freshness.eval_windows <= {most}, " if most >= 1 else ""
            raise ValueError(
                f"stream {stream.name!r} has {have} windows; this study needs {need} ({parts}). Use "
                f"{fewer}a smaller freshness.every or freshness.history, or more windows (data.window)"
            )

    def run(self, progress: bool = False) -> FreshnessResult:
        start = time.perf_counter()
        s, n = self.settings, len(self.windows)
        evaluated = list(range(n - s.eval_windows, n))
        correct, cost = self._train_and_score(evaluated, progress)
        rows = {t: len(self.windows[t]) for t in evaluated}

        def accuracy(pairs: list[tuple[int, int]], h: History) -> float:
            """Rows right over rows served, for models trained at ``u`` serving window ``t``."""
            return sum(correct[u, h, t] for u, t in pairs) / sum(rows[t] for _, t in pairs)

        table = []
        for every in s.every:
            # Over all `every` phases, window t is served once by each model trained at t-1 .. t-every.
            pairs = [(t - k, t) for t in evaluated for k in range(1, every + 1)]
            retrains = range(n - s.eval_windows - every, n - 1)  # the update points serving them
            for h in s.history:
                table.append(
                    {
                        "every": every,
                        "history": h,
                        "served_accuracy": accuracy(pairs, h),
                        "mean_staleness": float(np.mean([t - u for u, t in pairs])),
                        "updates_per_window": 1 / every,
                        "samples_per_window": float(np.mean([cost[u, h][0] for u in retrains])) / every,
                        "train_seconds_per_window": float(np.mean([cost[u, h][1] for u in retrains])) / every,
                    }
                )
        by_age = [
            {
                "history": h,
                "staleness": k,
                "accuracy": accuracy([(t - k, t) for t in evaluated], h),
                "rows": sum(rows.values()),
            }
            for h in s.history
            for k in range(1, max(s.every) + 1)
        ]
        return FreshnessResult(
            stream=self.stream.name,
            n_windows=n,
            evaluated=evaluated,
            settings=s,
            table=pd.DataFrame(table),
            by_age=pd.DataFrame(by_age),
            trainings=len(cost),
            train_seconds=sum(c[1] for c in cost.values()),
            samples_processed=sum(c[0] for c in cost.values()),
            seconds=time.perf_counter() - start,
        )

    def _train_and_score(
        self, evaluated: list[int], progress: bool
    ) -> tuple[dict[tuple[int, History, int], int], dict[tuple[int, History], tuple[int, float]]]:
        """Train each (update point, history) model once and count the rows it gets right on every
        scored window it could serve; returns those counts by (u, history, t) and each model's
        (samples processed, train seconds) by (u, history)."""
        oldest = max(self.settings.every)
        points = range(evaluated[0] - oldest, evaluated[-1])
        # torch warns on read-only arrays, and a stream's windows may be views of one
        scored = {t: (self.windows[t].x, np.require(self.windows[t].y, requirements="W")) for t in evaluated}
        correct, cost = {}, {}
        with _progress_bar(progress) as bar:
            task = bar.add_task("training", total=len(points) * len(self.settings.history), model="")
            for u in points:
                for h in self.settings.history:
                    bar.update(task, model=f"update point {u}, history {h}")
                    module, samples, seconds = self._train(u, h)
                    cost[u, h] = samples, seconds
                    for t, (x, y) in scored.items():
                        if 1 <= t - u <= oldest:
                            correct[u, h, t] = int(evaluate(module, x, y).correct.sum())
                    bar.advance(task)
        return correct, cost

    def _train(self, u: int, history: History) -> tuple[ClassifierModule, int, float]:
        """A fresh model trained on the labelled windows up to ``u``: all of them, or the last ``history``.

        Every history length at ``u`` starts from the same seed, so they differ only in their data.
        """
        first = 0 if history == "all" else u - int(history) + 1
        train = self.windows[first : u + 1]
        data = {"x": np.concatenate([w.x for w in train]), "y": np.concatenate([w.y for w in train])}
        seed = window_seed(self.seed, u)
        L.seed_everything(seed, workers=False, verbose=False)  # the fresh backbone's init is seeded too
        module = self.build()
        module.lr, module.weight_decay = self.settings.lr, self.settings.weight_decay
        fitted = fit(
            module,
            data,
            epochs=self.settings.epochs,
            batch_size=self.settings.batch_size,
            seed=seed,
            trainer=self.trainer,
        )
        return module, fitted.samples_processed, fitted.seconds


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[model]}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


# ---- outputs ----------------------------------------------------------------------------------

COLUMNS = {  # table column -> heading in freshness.md and on screen
    "every": "every",
    "history": "history",
    "served_accuracy": "served accuracy",
    "mean_staleness": "mean staleness",
    "updates_per_window": "updates / window",
    "samples_per_window": "samples / window",
    "train_seconds_per_window": "train s / window",
}


def write_outputs(result: FreshnessResult, out: Path) -> list[Path]:
    """freshness.csv, freshness.md, staleness.csv, freshness.png and summary.json in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / n for n in ("freshness.csv", "freshness.md", "staleness.csv", "summary.json")]
    atomic_write_text(paths[0], result.table.to_csv(index=False))
    atomic_write_text(paths[1], markdown(result))
    atomic_write_text(paths[2], result.by_age.to_csv(index=False))
    atomic_write_text(paths[3], json.dumps(result.summary(), indent=2) + "\n")
    paths.append(plot_freshness(result, out / "freshness.png"))
    return paths


def markdown(result: FreshnessResult) -> str:
    lines = [
        f"# Freshness on {result.stream}",
        "",
        f"Stateless retraining ({result.settings.epochs} epochs), served accuracy on windows "
        f"{result.evaluated[0]}-{result.evaluated[-1]} of {result.n_windows}, averaged over every phase "
        f"of each schedule. {result.trainings} models trained.",
        "",
        "| " + " | ".join([*COLUMNS.values(), "note"]) + " |",
        "|" + "---|" * len(COLUMNS) + "---|",
    ]
    lines += [
        "| " + " | ".join([*_cells(row), _note(result, i)]) + " |" for i, row in result.table.iterrows()
    ]
    return "\n".join([*lines, "", result.recommendation_line(), ""])


def print_result(result: FreshnessResult, out: Path, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"freshness on {result.stream}: last {len(result.evaluated)} of {result.n_windows} windows",
        caption="* best, > recommended: the cheapest within freshness.tolerance of the best",
    )
    for heading in COLUMNS.values():  # two-line headings keep the table inside 80 columns
        two_lines = heading.replace(" / ", "\n/ ") if " / " in heading else heading.replace(" ", "\n")
        table.add_column(two_lines, justify="left" if heading == "history" else "right")
    table.add_column("")
    best, recommended = result.best().name, result.recommendation().name
    for i, row in result.table.iterrows():
        mark = ("*" if i == best else "") + (">" if i == recommended else "")
        table.add_row(*_cells(row), mark, style="bold" if i == recommended else None)
    console.print(table)
    console.print(result.recommendation_line())
    console.print(
        f"{result.trainings} trainings in {result.seconds:.1f} s; outputs in {out}: freshness.csv, "
        "freshness.md, staleness.csv, freshness.png, summary.json"
    )


def plot_freshness(result: FreshnessResult, path: Path) -> Path:
    """Served accuracy against mean staleness and against compute per window, a line per history."""
    table, tolerance = result.table, result.settings.tolerance
    fig, axes = figure(11, 4.6, ncols=2, sharey=True)
    panels = dict(zip(("mean_staleness", "samples_per_window"), axes, strict=True))
    for h in result.settings.history:
        rows = table[table["history"] == h].sort_values("every")
        color = None
        for x, ax in panels.items():
            (line,) = ax.plot(
                rows[x],
                rows["served_accuracy"],
                marker="o",
                color=color,
                label=f"history: {_history_words(h)}",
            )
            color = line.get_color()
            for _, r in rows.iterrows():
                ax.annotate(
                    f"every {r['every']}",
                    (r[x], r["served_accuracy"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    rec = result.recommendation()
    for x, ax in panels.items():
        ax.axhline(
            result.best()["served_accuracy"] - tolerance, color="grey", ls=":", lw=1, label="best - tolerance"
        )
        ax.scatter(
            [rec[x]],
            [rec["served_accuracy"]],
            marker="*",
            s=180,
            color="gold",
            edgecolor="black",
            zorder=3,
            label="recommended: the cheapest setting above the dotted line",
        )
        ax.grid(alpha=0.3)
    by_staleness, by_compute = axes
    by_staleness.set(
        xlabel="mean staleness (windows since the serving model's newest training window)",
        ylabel="served accuracy",
        title="Accuracy by staleness",
    )
    by_compute.set(xscale="log", xlabel="samples processed per window (log)", title="Accuracy by compute")
    fig.suptitle(f"{result.stream}: stateless retraining, scored on the last {len(result.evaluated)} windows")
    fig.legend(*by_staleness.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    return save(fig, path, rect=(0, 0.1, 1, 1))  # room below for the shared legend


def _cells(row: pd.Series) -> list[str]:
    return [
        str(row["every"]),
        str(row["history"]),
        f"{row['served_accuracy']:.3f}",
        f"{row['mean_staleness']:.1f}",
        f"{row['updates_per_window']:.3f}",
        f"{row['samples_per_window']:,.0f}",
        f"{row['train_seconds_per_window']:.3f}",
    ]


def _note(result: FreshnessResult, i) -> str:
    notes = ["best"] if i == result.best().name else []
    return ", ".join([*notes, "recommended"] if i == result.recommendation().name else notes)


def _windows(n: int) -> str:
    return "window" if n == 1 else f"{n} windows"


def _history_words(h: History) -> str:
    return "all history" if h == "all" else f"the last {_windows(int(h))}"


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain JSON values (numpy ints and floats are not JSON)."""
    return json.loads(frame.to_json(orient="records"))
