"""The closed loop's picture (``perennial-demo``): accuracy served on live traffic, year by year,
against the never-updated v1 on the same requests, each version's time in the canary and its
decision, and the share of traffic the canary had. Drawn from demo.json's summary alone, so it can
be drawn again from the file.

>>> import tempfile, pathlib
>>> summary = {"settings": {"seconds_per_year": 10.0, "years": 2}, "requests": 730, "failed": 0,
...            "accuracy": {"served": 0.81, "v1": 0.79},
...            "years": [{"year": 1953, "index": 0, "served_accuracy": 0.8, "v1_accuracy": 0.8},
...                      {"year": 1954, "index": 1, "served_accuracy": 0.82, "v1_accuracy": 0.78}],
...            "canaries": [{"id": "v1.1", "canary_at": 11.0, "decided_at": 16.0, "outcome": "promoted"}],
...            "canary_timeline": [{"t": 12.0, "share": 0.25}, {"t": 15.0, "share": 0.5}]}
>>> plot_closed_loop(summary, pathlib.Path(tempfile.mkdtemp()) / "demo.png").stat().st_size > 0
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from perennial.report.figures import save

OUTCOME_STYLE = {  # decision -> (span colour, marker, marker colour)
    "promoted": ("tab:green", "^", "tab:green"),
    "rolled back": ("tab:red", "x", "tab:red"),
}
UNDECIDED = ("tab:gray", "o", "tab:gray")


def plot_closed_loop(summary: dict[str, Any], path: Path) -> Path:
    """Served against v1 accuracy per played year (top) and the canary's share of the traffic
    (bottom), with a span for each version's canary coloured by its decision; failed requests and
    the overall figures in the title."""
    per_year = float(summary["settings"]["seconds_per_year"])
    years = summary.get("years") or []
    fig = Figure(figsize=(10, 5.8))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    centres = [y["index"] + 0.5 for y in years]
    top.plot(
        centres,
        [_nan(y["served_accuracy"]) for y in years],
        marker="o",
        lw=2,
        label="served (the closed loop's champion and canaries)",
    )
    top.plot(
        centres,
        [_nan(y["v1_accuracy"]) for y in years],
        marker="s",
        lw=1.5,
        ls="--",
        label="v1, never updated (same requests)",
    )
    seen: set[str] = set()
    canaries = summary.get("canaries") or []
    starts = [_start(c) / per_year for c in canaries]
    # A canary that began as the traffic ended still shows, as a sliver past the last year.
    end = max([len(years)] + [c["t"] / per_year for c in summary.get("canary_timeline") or []])
    end = max([end] + [s + 0.3 for s in starts])
    for canary, start in zip(canaries, starts, strict=True):
        outcome = canary.get("outcome")
        colour, marker, marker_colour = OUTCOME_STYLE.get(outcome, UNDECIDED)
        stop = canary["decided_at"] / per_year if canary.get("decided_at") is not None else end
        word = outcome or "undecided"
        for ax in (top, bottom):
            ax.axvspan(start, stop, color=colour, alpha=0.12, lw=0)
        # At the top of the axes whatever the accuracies' range: x in data, y in axes fractions.
        top.scatter(
            [stop],
            [0.95],
            marker=marker,
            color=marker_colour,
            zorder=3,
            transform=top.get_xaxis_transform(),
            label=f"canary {word}" if word not in seen else None,
        )
        seen.add(word)
        top.annotate(
            canary["id"],
            (start, 0.95),
            xycoords=("data", "axes fraction"),
            xytext=(2, -12),
            textcoords="offset points",
            fontsize=7,
        )
    timeline = summary.get("canary_timeline") or []
    bottom.step(
        [c["t"] / per_year for c in timeline], [c["share"] for c in timeline], where="mid", color="tab:purple"
    )
    bottom.set(ylabel="canary share", ylim=(0, 1.05), xlabel="played year")
    if years:
        bottom.set_xticks(centres, [str(y["year"]) for y in years], fontsize=8)
    accuracy = summary.get("accuracy") or {}
    top.set(
        ylabel="accuracy",
        title=(
            f"Closed loop: {summary.get('requests', 0):,} requests, {summary.get('failed', 0)} failed; "
            f"served {_fmt(accuracy.get('served'))} vs v1 never updated {_fmt(accuracy.get('v1'))}"
        ),
    )
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.set_xlim(0, max(end, 1))
    # Below the axes: any corner of the top axes hides some year's points.
    fig.legend(*top.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    return save(fig, path, rect=(0, 0.05, 1, 1))


def _start(canary: dict[str, Any]) -> float:
    """When a canary began: its first answer, or when it was seen to start (a poll later) if earlier."""
    first = canary.get("first_answer_at")
    return canary["canary_at"] if first is None else min(first, canary["canary_at"])


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
