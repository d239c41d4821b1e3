"""Error rates of the offline gate's fresh-data rule, simulated: how often a candidate with a known
true accuracy difference is rejected, under the rules before (McNemar "worse than 0" plus a point
estimate below -tolerance; bootstrap "worse than -tolerance") and under the non-inferiority rule
(promote only when the one-sided 95% lower bound of the difference is above -tolerance: Tango's
score bound, ``gate.test=score``, or the paired-bootstrap percentile bound, ``gate.test=bootstrap``).

Each trial draws one paired table: n fresh rows, a share ``discordance`` on which the models
disagree, split so that (gained - lost) / n has the true difference as its mean. A bootstrap
resample of paired rows is a multinomial draw from the observed table, so it is drawn that way.

    .venv/bin/python scripts/bench_gate.py          # about 2 minutes on 2 cores
    .venv/bin/python scripts/bench_gate.py --quick  # smoke run; writes only with --out
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import stats

from bench_update import command, load_average, machine, replace_section
from perennial.stats.paired import min_detectable_drop, score_lower_bound

SECTION = "bench_gate"
MDD_HEAD = (
    "| fresh rows | discordance | minimum detectable drop | equal candidate promoted (score) "
    "| 2 pts worse promoted (score) |\n|---|---|---|---|---|"
)
TOLERANCE, ALPHA, BOOTSTRAP = 0.02, 0.05, 2000  # the defaults of conf/gate/default.yaml
DIFFERENCES = (0.0, -0.01, -0.02, -0.03, -0.04, -0.06, 0.02)
# (fresh rows, discordance): the case, more disagreement, and the loop's real fresh sets:
# one 365-day weather window holds out 73 rows, five of them 365.
SETTINGS = ((800, 0.10), (800, 0.20), (73, 0.10), (73, 0.20), (365, 0.10), (3000, 0.10))
RULES = {
    "mcnemar_old": "before: McNemar p < alpha and diff < -tolerance",
    "bootstrap_old": "before: bootstrap P(diff >= -tolerance) < alpha",
    "score": "now: score lower bound <= -tolerance (`test=score`)",
    "bootstrap": "now: bootstrap lower bound <= -tolerance (`test=bootstrap`)",
}


def rejections(n: int, discordance: float, difference: float, trials: int, seed: int) -> dict[str, float]:
    """Share of ``trials`` tables each rule rejects."""
    rng = np.random.default_rng(seed)
    p_gained, p_lost = (discordance + difference) / 2, (discordance - difference) / 2
    tables = rng.multinomial(n, [p_gained, p_lost, 1 - p_gained - p_lost], size=trials)
    gained, lost = tables[:, 0], tables[:, 1]
    diff = (gained - lost) / n
    mcnemar = np.where(gained + lost > 0, stats.binom.sf(lost - 1, gained + lost, 0.5), 1.0)
    old_boot, new_boot = np.empty(trials, bool), np.empty(trials, bool)
    for i, table in enumerate(tables):
        means = rng.multinomial(n, table / n, size=BOOTSTRAP) @ np.array([1, -1, 0]) / n
        # before: (resamples at or above -tolerance + 1) / (B + 1) < alpha rejected
        old_boot[i] = (np.sum(means >= -TOLERANCE) + 1) / (BOOTSTRAP + 1) < ALPHA
        # now: rejected unless the alpha percentile is above -tolerance, i.e. unless fewer than
        # alpha of the resamples lie at or below it (perennial.stats.paired.bootstrap_lower_bound)
        new_boot[i] = not np.mean(means <= -TOLERANCE) < ALPHA
    return {
        "mcnemar_old": float(np.mean((diff < -TOLERANCE) & (mcnemar < ALPHA))),
        "bootstrap_old": float(np.mean(old_boot)),
        "score": float(np.mean(~(score_lower_bound(gained, lost, n, ALPHA) > -TOLERANCE))),
        "bootstrap": float(np.mean(new_boot)),
    }


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000, help="seeded tables per cell")
    parser.add_argument("--quick", action="store_true", help="200 trials, nothing written unless --out")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default docs/benchmarks.md)")
    args = parser.parse_args()
    trials = 200 if args.quick else args.trials
    out = args.out or (None if args.quick else Path("docs/benchmarks.md"))
    load, start = os.getloadavg()[0], time.perf_counter()
    columns = " | ".join(f"{100 * d:+.0f} pts" for d in DIFFERENCES)
    head = f"| fresh rows, discordance | rule | {columns} |"
    lines = [head, "|" + "---|" * (len(DIFFERENCES) + 2)]
    detectable = []
    for k, (n, discordance) in enumerate(SETTINGS):
        rates = {rule: [] for rule in RULES}
        for j, difference in enumerate(DIFFERENCES):
            for rule, rate in rejections(n, discordance, difference, trials, 1000 * k + j).items():
                rates[rule].append(rate)
        for rule, row in rates.items():
            lines.append(f"| {n}, {discordance:.0%} | {RULES[rule]} | {' | '.join(map(percent, row))} |")
            print(lines[-1], flush=True)
        mdd = min_detectable_drop(n, discordance, ALPHA, 0.8)
        equal = 1 - rates["score"][0]
        detectable.append(
            f"| {n} | {discordance:.0%} | {mdd:.3f} | {percent(equal)} | {percent(1 - rates['score'][2])} |"
        )
    minutes = (time.perf_counter() - start) / 60
    quick = "\n**Quick run: smoke-test numbers, not the benchmark.**\n" if args.quick else ""
    body = f"""## The offline gate's error rates (scripts/bench_gate.py)
{quick}
Command: `{command()}` (run time: {minutes:.1f} min)
Date: {datetime.now(UTC).date().isoformat()}. Machine: {machine()}; {load_average(load)}.

P(reject) of a candidate whose true accuracy differs from the champion's by the column's points,
{trials} seeded paired tables per cell, tolerance {TOLERANCE}, alpha {ALPHA}, {BOOTSTRAP} bootstrap
resamples. Each table: n fresh rows, a share of them discordant (one model right, the other wrong),
split so that the expected difference is the column's. Under the rule now, the error alpha bounds is
promoting a candidate {100 * TOLERANCE:.0f} points worse or more: P(reject) at -2 pts and below should be
at least {1 - ALPHA:.0%}. The price is P(reject) of an equal or better candidate, which only more rows
(or fewer disagreements) bring down.

{chr(10).join(lines)}

Minimum detectable drop (`perennial.stats.paired.min_detectable_drop`, what the gate reports as
`min_detectable_drop` and windows.csv as `gate_min_detectable_drop`): the smallest tolerance at
which an equal candidate with this discordance passes the score rule 80% of the time; equivalently,
the smallest drop these rows tell apart from no change at error rates {ALPHA} and 20%. Computed
exactly over every (gained, lost) table; the promotion rates are from the simulation above.

{MDD_HEAD}
{chr(10).join(detectable)}
"""
    if out is not None:
        replace_section(out, SECTION, body)
        print(f"wrote the section to {out}")
    else:
        print(body)


if __name__ == "__main__":
    main()
