"""`perennial-recommend`: keep a recommender fresh on a ratings stream, window by window, into a
registry that `perennial-serve serve.mode=recommender` serves; a Hydra app configured from
conf/recommend.yaml (docs/recommend.md)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from perennial.cli.common import CONFIG_PATH, user_errors
from perennial.data.movielens import MovieLensWindows, load_ratings
from perennial.recommend import ContinualRecommender
from perennial.registry import Registry, atomic_write_text


def recommend(cfg: DictConfig) -> list[dict]:
    """Cut the ratings into windows, update the recommender on each, write and print the outcomes."""
    out = Path(HydraConfig.get().runtime.output_dir)
    if (out / "registry" / "index.sqlite").exists():
        raise RuntimeError(f"{out / 'registry'} already holds versions; start a new run directory")
    source = cfg.ratings
    ratings = load_ratings(source.source, source.path)
    windows = MovieLensWindows(n_windows=source.n_windows, ratings=ratings).windows()
    registry = Registry(out / "registry")
    settings = OmegaConf.to_container(cfg.recommender, resolve=True)
    updater = ContinualRecommender(registry, seed=cfg.seed, **settings)
    outcomes = []
    columns = (TextColumn("[bold]windows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not cfg.progress) as bar:
        for window in bar.track(windows):
            outcome = asdict(updater.update(window.ratings, window.index))
            outcomes.append({**outcome, "start": str(window.start), "end": str(window.end)})
    frame = pd.DataFrame(outcomes)
    atomic_write_text(out / "updates.csv", frame.to_csv(index=False))
    print_outcomes(frame, registry, out)
    registry.close()
    return outcomes


def print_outcomes(frame: pd.DataFrame, registry: Registry, out: Path) -> None:
    table = Table(title="perennial-recommend")
    for name in ("window", "version", "decision", "HR@k candidate", "HR@k champion", "train s"):
        table.add_column(name, justify="right")
    for row in frame.itertuples():
        hr = [("n/a" if math.isnan(v) else f"{v:.3f}") for v in (row.candidate_hr, row.champion_hr)]
        table.add_row(str(row.window), row.version, row.decision, *hr, f"{row.seconds:.1f}")
    console = Console()
    console.print(table)
    console.print(f"champion {registry.champion()}; updates.csv and the registry are in {out}")
    console.print(f"serve it: perennial-serve serve.registry={out / 'registry'} serve.mode=recommender")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="recommend")
def main(cfg: DictConfig) -> None:
    with user_errors("perennial-recommend"):
        recommend(cfg)


if __name__ == "__main__":
    main()
