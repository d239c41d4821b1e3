"""What a run leaves behind: summary.json, windows.csv, quarantine.csv, plots and a table on screen."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from perennial.evaluate.matrix import backward_transfer, forgetting
from perennial.registry import Registry, atomic_write_text
from perennial.report.figures import figure, save

ROLLOUT_COLUMNS = ("rollout", "rollout_candidate", "rollout_decision", "rollout_p_value")
ROW_COLUMNS = ("window", "n", "n_labelled", "champion", "served_accuracy", "static_accuracy", "decision")


def headline(rows: pd.DataFrame | dict) -> str:
    """The run's headline metric, from its windows.csv columns or its summary: accuracy, or mse
    for a regressor."""
    return "mse" if "served_mse" in rows else "accuracy"


def task_scores(rows: pd.DataFrame) -> dict:
    """The served and static means of the task's scores over the labelled windows."""
    if headline(rows) == "mse":
        names = ("served_mse", "static_mse", "served_mae", "static_mae", "served_r2")
        return {"task": "regression", **{n: _mean(rows[n]) for n in names}}
    return {
        "task": "classification",
        "served_accuracy": _mean(rows["served_accuracy"]),
        "static_accuracy": _mean(rows["static_accuracy"]),
        # Accuracy hides a model that never finds a rare class; balanced accuracy does not.
        "served_balanced_accuracy": _mean(rows.get("served_balanced_accuracy", pd.Series(dtype=float))),
    }


def summarize(state: dict, registry: Registry, matrix: pd.DataFrame, stream, recent: int = 10) -> dict:
    """The run's headline numbers, from the loop's per-window rows, the registry and the accuracy matrix
    (a regressor's: R²)."""
    # A run that has served no window yet (only its warm-up has landed) still has every column.
    rows = pd.DataFrame(state["rows"], columns=None if state["rows"] else _empty_columns(stream))
    metric = headline(rows)
    versions = registry.versions()
    champions = [h["version"] for h in registry.champion_history()]
    # Rows of the matrix in the order versions held the champion role, for forgetting and BWT.
    # The matrix covers the newest loop.matrix_windows windows, and the champions that served them.
    order = [v for i, v in enumerate(champions) if v not in champions[:i] and v in matrix.index]
    first = int(matrix.columns[0]) if len(matrix.columns) else 0
    # A version trained on none of the run's windows (a champion the run adopted, trained elsewhere)
    # counts as trained before the first: forgetting and backward transfer then leave it out.
    trained = [max(registry.get(v).trained_on_windows, default=first - 1) - first for v in order]
    m = matrix.loc[order].to_numpy(dtype=float)
    tail = rows.tail(recent)
    # A candidate that passed the gate into a live rollout is decided by it, windows later.
    live = rows["rollout_decision"] if "rollout_decision" in rows else pd.Series(dtype=object)
    return {
        "stream": stream.name,
        "windows": state.get("windows", len(rows)),
        "evaluated_windows": len(rows),
        "versions": [
            {
                "id": v.id,
                "parent": v.parent,
                "kind": v.kind,
                "status": v.status,
                "trained_on_windows": v.trained_on_windows,
            }
            for v in versions
        ],
        "champion": registry.champion(),
        **task_scores(rows),
        "recent": {
            "windows": len(tail),
            f"served_{metric}": _mean(tail[f"served_{metric}"]),
            f"static_{metric}": _mean(tail[f"static_{metric}"]),
        },
        "forgetting": forgetting(m, trained) if order else float("nan"),
        "backward_transfer": backward_transfer(m, trained) if order else float("nan"),
        "updates": int((rows["decision"] != "").sum()),
        "promoted": int((rows["decision"] == "promoted").sum() + (live == "promote").sum()),
        "rejected": int((rows["decision"] == "rejected").sum() + (live == "reject").sum()),
        # Model iteration: the challenger line's candidates, decided by the same gate.
        "challengers": {
            d: int((rows.get("challenger_decision", pd.Series(dtype=object)) == d).sum())
            for d in ("promoted", "rejected")
        },
        "rollouts": [
            {k: r[k] for k in ("window", *ROLLOUT_COLUMNS)}
            for r in state["rows"]
            if r.get("rollout_decision") in ("promote", "reject")
        ],
        # Served evidence: promoted versions rolled back after their first window, and checks that
        # could not run (a corrupt version to return to).
        "rollbacks": state.get("rollbacks", []),
        "rollback_failures": state.get("rollback_failures", []),
        # The served line against v1 never updated over the last loop.guard_windows windows.
        "guard": state.get("guard_report"),
        # Windows between the newest window the serving model trained on and the window it served.
        "freshness_lag": freshness_lag(rows, registry),
        # A candidate trained at the end of the stream, still waiting for a window to judge it.
        "awaiting": state.get("awaiting"),
        "compute": {k: round(v, 3) if isinstance(v, float) else v for k, v in state["compute"].items()},
        "quarantined_rows": int(stream.quarantined_rows),
        # With data.label_delay, accuracy counts the windows whose labels landed before the stream
        # ended; a sweep over the delay (perennial-report) shows what the wait costs.
        "label_delay": getattr(stream, "label_delay", 0),
        "unlabelled_windows": int(rows[f"served_{metric}"].isna().sum()),
        # Rows of labelled windows whose own label never landed (labels arriving apart from inputs).
        "unlabelled_rows": _unlabelled_rows(rows),
        # Windows the screen set aside as poisoned, with the checks that flagged them.
        "quarantined_windows": [
            {"window": q["window"], "flagged": q["flagged"], "reason": q["reason"]}
            for q in state.get("quarantined", [])
        ],
        "empty_windows": [i.message for i in stream.issues if i.kind == "empty_window"],
        # A growing source's account of its input: rows that landed after their window was processed,
        # files set aside (perennial.data.partitions).
        "input": state.get("input", {}),
    }


def freshness_lag(rows: pd.DataFrame, registry: Registry) -> float:
    """Mean over evaluated windows of (window - the newest window its server was trained on): 1 when
    every window is served by a model trained through the window before."""
    if rows.empty:
        return float("nan")
    newest = {v.id: max(v.trained_on_windows, default=-1) for v in registry.versions()}
    lags = [r.window - newest[r.champion] for r in rows.itertuples() if r.champion in newest]
    return round(float(np.mean(lags)), 3) if lags else float("nan")


def guard_line(summary: dict) -> str:
    """One plain sentence on whether updating paid off against v1 never updated."""
    guard = summary.get("guard")
    if not guard:
        return ""
    windows = guard["windows"]
    span = f"windows {windows[0]}-{windows[-1]}"
    metric = headline(guard)
    shown = "{:.4g}" if metric == "mse" else "{:.3f}"
    served, static = (shown.format(guard[f"{who}_{metric}"]) for who in ("served", "static"))
    numbers = (
        f"served {metric} {served} vs static {static}, "
        f"diff {guard['diff']:+.3f}, upper bound {guard['upper_bound']:+.3f}, p={guard['p_value']:.3g}"
    )
    if guard["worse"]:
        verdict = "updating hurt: the served line was significantly worse than"
        return f"{verdict} v1 never updated over {span} ({numbers})"
    return f"updating did no significant harm against v1 never updated over {span} ({numbers})"


def _unlabelled_rows(rows: pd.DataFrame) -> int:
    if "n_labelled" not in rows:  # rows from before the column
        return 0
    labelled = rows[rows["n_labelled"].notna()]
    return int((labelled["n"] - labelled["n_labelled"]).sum())


def _empty_columns(stream) -> tuple:
    if getattr(stream, "task", "classification") == "regression":
        return (*ROW_COLUMNS[:4], "served_mse", "static_mse", "decision")
    return ROW_COLUMNS


def _mean(s: pd.Series) -> float:
    value = float(pd.to_numeric(s, errors="coerce").mean())
    return round(value, 6) if not math.isnan(value) else value


def write_outputs(run_dir: Path, summary: dict, state: dict, matrix: pd.DataFrame, stream) -> list[Path]:
    """Write every output file atomically; returns their paths. summary.json goes last: a sweep
    counts a job with one as finished, so a job cut off while plotting is resumed, not skipped."""
    run_dir = Path(run_dir)
    matrix_name = "r2_matrix" if getattr(stream, "task", "") == "regression" else "accuracy_matrix"
    paths = [run_dir / n for n in ("windows.csv", f"{matrix_name}.csv")]
    rows = pd.DataFrame(state["rows"], columns=None if state["rows"] else _empty_columns(stream))
    atomic_write_text(paths[0], rows.to_csv(index=False))
    atomic_write_text(paths[1], matrix.to_csv(index_label="version"))
    quarantine = stream.quarantine
    if getattr(stream, "growing", False) and (run_dir / "quarantine.csv").exists():
        # A growing source sets aside the rows of the files it read in this process; the rows of
        # earlier runs' files are in the file already, and stay there.
        earlier = pd.read_csv(run_dir / "quarantine.csv", dtype={"_source": str})
        if "_source" in quarantine:
            quarantine = quarantine.astype({"_source": str})
        quarantine = pd.concat([earlier, quarantine], ignore_index=True)
        quarantine = quarantine.drop_duplicates(subset=["_source", "_row"], keep="last")
    if len(quarantine):
        paths.append(run_dir / "quarantine.csv")
        atomic_write_text(paths[-1], quarantine.to_csv(index=False))
    over_time = "mse_over_time.png" if headline(rows) == "mse" else "accuracy_over_time.png"
    paths.append(plot_accuracy(rows, run_dir / over_time, stream.name))
    paths.append(
        plot_matrix(
            matrix, run_dir / f"{matrix_name}.png", "R²" if matrix_name == "r2_matrix" else "accuracy"
        )
    )
    paths.append(run_dir / "summary.json")
    atomic_write_text(paths[-1], json.dumps(summary, indent=2, default=str) + "\n")
    return paths


def plot_accuracy(rows: pd.DataFrame, path: Path, title: str) -> Path:
    """Served against static accuracy (a regressor's MSE) per window, with a marker at every
    update and its outcome."""
    metric = headline(rows)
    served, static = f"served_{metric}", f"static_{metric}"
    fig, ax = figure(10, 4.2)
    ax.plot(rows["window"], rows[served], label="served (continuously updated champion)", lw=2)
    ax.plot(rows["window"], rows[static], label="static (v1, never updated)", lw=1.5, ls="--")
    for decision, marker, color in (("promoted", "^", "tab:green"), ("rejected", "x", "tab:red")):
        hit = rows[rows["decision"] == decision]
        ax.scatter(
            hit["window"],
            hit[served],
            marker=marker,
            color=color,
            zorder=3,
            label=f"update {decision} ({len(hit)})",
        )
    name = "MSE (lower is better)" if metric == "mse" else "accuracy"
    ax.set(xlabel="window", ylabel=name, title=f"{title}: {name} on each new window before its labels")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left" if metric == "mse" else "lower left", fontsize=8)
    return save(fig, path)


def plot_matrix(matrix: pd.DataFrame, path: Path, metric: str = "accuracy") -> Path:
    """Heatmap of versions x windows held-out accuracy (or R²): forgetting shows as fading to the left."""
    height = min(12, 1.5 + 0.18 * len(matrix))
    fig, ax = figure(10, height)
    im = ax.imshow(
        matrix.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest"
    )
    step = max(1, len(matrix) // 30)
    ax.set_yticks(np.arange(0, len(matrix), step), matrix.index[::step], fontsize=7)
    ax.set(xlabel="window (held-out rows)", ylabel="version", title=f"{metric.capitalize()} matrix")
    fig.colorbar(im, ax=ax, label=metric)
    return save(fig, path)


def print_summary(summary: dict, run_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"perennial run on {summary['stream']}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    recent = summary["recent"]
    metric = headline(summary)
    shown = "{:.4g}" if metric == "mse" else "{:.3f}"
    lines = [
        ("windows (evaluated)", f"{summary['windows']} ({summary['evaluated_windows']})"),
        (f"served {metric}, updated champion", shown.format(summary[f"served_{metric}"])),
        (f"static {metric}, v1 never updated", shown.format(summary[f"static_{metric}"])),
        (
            f"served / static, last {recent['windows']} windows",
            " / ".join(shown.format(recent[f"{who}_{metric}"]) for who in ("served", "static")),
        ),
        ("updates: promoted / rejected", f"{summary['promoted']} / {summary['rejected']}"),
        *(
            [("challengers: promoted / rejected", "{promoted} / {rejected}".format(**summary["challengers"]))]
            if sum(summary.get("challengers", {}).values())
            else []
        ),
        ("rollbacks", str(len(summary.get("rollbacks", [])))),
        ("freshness lag (windows)", f"{summary.get('freshness_lag', float('nan')):.2f}"),
        *([("awaiting judgement", summary["awaiting"]["candidate"])] if summary.get("awaiting") else []),
        ("final champion", str(summary["champion"])),
        ("forgetting (final champion)", f"{summary['forgetting']:.3f}"),
        ("backward transfer", f"{summary['backward_transfer']:+.3f}"),
        ("train seconds", f"{summary['compute']['train_seconds']:.1f}"),
        ("samples processed", f"{summary['compute']['samples_processed']:,}"),
        ("quarantined rows", str(summary["quarantined_rows"])),
    ]
    for k, v in lines:
        table.add_row(k, v)
    console.print(table)
    if line := guard_line(summary):
        console.print(line)
    files = (
        ("mse_over_time.png", "r2_matrix.png")
        if metric == "mse"
        else ("accuracy_over_time.png", "accuracy_matrix.png")
    )
    console.print(f"outputs in {run_dir}: summary.json, windows.csv, {', '.join(files)}")
