"""`perennial-recommend`: keep a recommender fresh on a stream of interactions, window by window, into a
registry that `perennial-serve serve.mode=recommender` serves; a Hydra app configured from
conf/recommend.yaml (docs/recommend.md).

Two kinds: `recommender=matrix_factorization` (the default) and `recommender=session` (a GRU session
model). The session model's registry is continued where it stopped: run it on a schedule with
`ratings.source=serve_log` and each run learns the windows of the server's log that closed since."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from perennial.cli.common import CONFIG_PATH, user_errors
from perennial.data.movielens import MovieLensWindows, RatingsWindow, load_ratings
from perennial.recommend import ContinualRecommender
from perennial.recommend.session_continual import SessionUpdater
from perennial.registry import Registry, atomic_write_text

RANKERS = ("matrix_factorization", "session")


def recommend(cfg: DictConfig) -> list[dict]:
    """Cut the interactions into windows, update the recommender on each window it has not learned yet,
    write and print the outcomes."""
    out = Path(HydraConfig.get().runtime.output_dir)
    settings = OmegaConf.to_container(cfg.recommender, resolve=True)
    ranker = settings.pop("ranker", None)
    if ranker not in RANKERS:
        raise ValueError(f"recommender.ranker must be one of {', '.join(RANKERS)}, got {ranker!r}")
    path = Path(cfg.registry) if cfg.registry else out / "registry"
    existing = (path / "index.sqlite").exists()
    if existing and ranker != "session":
        raise RuntimeError(
            f"{path} already holds versions and the {ranker} recommender does not resume: "
            "start a new run directory (recommender=session continues its registry)"
        )
    windows = load_windows(cfg.ratings)
    registry = Registry(path)
    if ranker == "session":
        updater = SessionUpdater.resume(registry, seed=cfg.seed, **settings)
        last = -1 if updater.last_window is None else updater.last_window
    else:
        updater, last = ContinualRecommender(registry, seed=cfg.seed, **settings), -1
    todo = [w for w in windows if w.index > last]
    outcomes = []
    columns = (TextColumn("[bold]windows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not cfg.progress) as bar:
        for window in bar.track(todo):
            outcome = asdict(updater.update(window.ratings, window.index))
            outcomes.append({**outcome, "start": str(window.start), "end": str(window.end)})
    frame = pd.DataFrame(outcomes)
    if not frame.empty:
        updates = out / "updates.csv"
        if updates.exists():  # a scheduled run writing into one directory adds to what is there
            frame = pd.concat([pd.read_csv(updates), frame], ignore_index=True)
        atomic_write_text(updates, frame.to_csv(index=False))
    print_outcomes(frame, registry, path, len(windows) - len(todo))
    registry.close()
    return outcomes


def load_windows(source: DictConfig) -> list[RatingsWindow]:
    """The interactions cut into windows: ``n_windows`` of equal size, or periods of ``window``."""
    if source.source == "serve_log":
        if not source.path:
            raise ValueError("ratings.source=serve_log needs ratings.path: the server's serve-log.sqlite")
        if not source.window:
            raise ValueError("ratings.source=serve_log needs ratings.window, a period such as '1h' or '1D'")
        return log_windows(log_ratings(Path(source.path), source.click_rating), source.window)
    ratings = load_ratings(source.source, source.path)
    if source.window:
        return MovieLensWindows(duration=source.window, ratings=ratings).windows()
    return MovieLensWindows(n_windows=source.n_windows, ratings=ratings).windows()


def log_ratings(path: Path, click_rating: float) -> pd.DataFrame:
    """The interactions the server logged, as ratings: a click is worth ``click_rating``; a shown-and-skipped
    item is not an interaction and is left out."""
    from perennial.serve.log import read_interactions

    logged = read_interactions(path)
    clicked = logged["click"].fillna(False).to_numpy(bool)
    skipped = logged["click"].notna().to_numpy() & ~clicked
    rating = np.where(clicked, float(click_rating), logged["rating"].to_numpy(np.float64))
    frame = pd.DataFrame(
        {
            "user": logged["user"].to_numpy(np.int64),
            "item": logged["item"].to_numpy(np.int64),
            "rating": rating,
            "timestamp": pd.to_datetime(logged["timestamp"].to_numpy(np.float64), unit="s"),
        }
    )
    return frame[~skipped].reset_index(drop=True)


def log_windows(ratings: pd.DataFrame, window: str, now: pd.Timestamp | None = None) -> list[RatingsWindow]:
    """The log's interactions by period of ``window`` that has ended by ``now``. A window's index is its
    period's number since the Unix epoch, so it never changes as the log grows, later periods always
    have larger indices (a registry first trained on MovieLens windows 0..7 continues after them),
    and the open period waits until it has closed."""
    try:
        period = pd.Timedelta(window)
    except (TypeError, ValueError) as err:
        raise ValueError(f"ratings.window must be a period such as '1h' or '1D', got {window!r}") from err
    if period <= pd.Timedelta(0):
        raise ValueError(f"ratings.window must be a positive period, got {window!r}")
    now = pd.Timestamp.now() if now is None else now
    slots = (ratings["timestamp"] - pd.Timestamp(0)) // period
    current = (now - pd.Timestamp(0)) // period
    return [
        RatingsWindow(
            int(slot), group["timestamp"].iloc[0], group["timestamp"].iloc[-1], group.reset_index(drop=True)
        )
        for slot, group in ratings[slots < current].groupby(slots[slots < current], sort=True)
    ]


def print_outcomes(frame: pd.DataFrame, registry: Registry, path: Path, skipped: int) -> None:
    console = Console()
    if skipped:
        console.print(f"{skipped} windows were learned by an earlier run; continuing after them")
    if frame.empty:
        console.print(f"no new window has closed; champion {registry.champion()} in {path}")
        return
    session = "candidate_ndcg" in frame
    metric = "NDCG@k" if session else "HR@k"
    table = Table(title="perennial-recommend")
    for name in ("window", "version", "decision", f"{metric} candidate", f"{metric} champion", "train s"):
        table.add_column(name, justify="right")
    for row in frame.itertuples():
        values = (row.candidate_ndcg, row.champion_ndcg) if session else (row.candidate_hr, row.champion_hr)
        shown = [("n/a" if math.isnan(v) else f"{v:.3f}") for v in values]
        table.add_row(str(row.window), row.version, row.decision, *shown, f"{row.seconds:.1f}")
    console.print(table)
    console.print(f"champion {registry.champion()}; the registry is {path}")
    console.print(f"serve it: perennial-serve serve.registry={path} serve.mode=recommender")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="recommend")
def main(cfg: DictConfig) -> None:
    with user_errors("perennial-recommend"):
        recommend(cfg)


if __name__ == "__main__":
    main()
