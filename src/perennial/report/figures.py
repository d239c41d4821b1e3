"""Figures drawn and written without pyplot: no global figure registry and no backend switch, so a
report imported into a notebook or a GUI program leaves its matplotlib set-up as it was, and
plotting works on clusters and in CI, where there is no display."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from perennial.registry import atomic_write_bytes


def figure(width: float, height: float, ncols: int = 1, sharey: bool = False):
    """A new figure and its axes (an array of ``ncols`` when there are several)."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols, sharey=sharey)


def save(fig: Figure, path: Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay ``fig`` out (inside ``rect``, a share of the figure, when a legend needs room below) and
    write it as a PNG at ``path`` atomically: a reader never sees half a file."""
    fig.tight_layout(rect=rect)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)  # a Figure without pyplot renders with Agg for PNG
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
