"""Per-window cost of the loop as a run grows: the loop's own work (everything but training) at window
100 against window ``--windows`` of one run over a synthetic stream of small windows, side by side
in one process. Before the loop kept its rows in the registry and its checkpoint bounded, 4 times
the windows cost 9.9 times the time. The figures of docs/benchmarks.md, "Loop overhead".

    .venv/bin/python scripts/bench_loop_overhead.py                  # 5,000 windows: about 15 minutes
    .venv/bin/python scripts/bench_loop_overhead.py --windows 1000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench_update import command, load_average, machine, replace_section
from perennial.data import SyntheticStream
from perennial.evaluate import PromotionGate
from perennial.learn import MLP, ReservoirBuffer, StatefulUpdate
from perennial.learn.module import build_model
from perennial.loop import CHECKPOINT_KEY, ContinuousDeployment, LoopSettings
from perennial.registry import Registry
from perennial.triggers import EveryWindow

ROWS = 25  # rows a window: small windows, so that the loop's own work is what is measured
AROUND = 25  # windows each side of a point whose median is reported


def build_loop(root: Path, windows: int) -> ContinuousDeployment:
    stream = SyntheticStream(
        kind="gradual",
        n_samples=windows * ROWS,
        window=ROWS,
        n_features=8,
        drift_points=[windows * ROWS // 2],
    )
    return ContinuousDeployment(
        stream=stream,
        build=partial(
            build_model, partial(MLP, hidden=(16,)), tuple(stream.feature_shape), stream.n_classes
        ),
        update=StatefulUpdate(epochs=1, replay_fraction=0.5),
        trigger=EveryWindow(),
        gate=PromotionGate(),  # the defaults: the temporal gate, rollback, the guard
        buffer=ReservoirBuffer(capacity=200, seed=0),
        registry=Registry(root / "registry"),
        run_dir=root,
        settings=LoopSettings(warmup_windows=3, initial_epochs=2),
        config={"bench": "loop_overhead"},
        progress=False,
    )


def measure(windows: int) -> dict:
    """CPU seconds of each window's step, and of the training in it, for one run over ``windows``
    windows. CPU time of this process, not wall time: the early and the late windows run minutes
    apart, and other work on a shared machine would otherwise show up as growth."""
    with tempfile.TemporaryDirectory(prefix="bench_loop_overhead-") as tmp:
        loop = build_loop(Path(tmp), windows)
        step, train, timings, training = loop.step, loop.update.run, {}, [0.0]

        def timed_train(*args, **kwargs):
            start = time.process_time()
            try:
                return train(*args, **kwargs)
            finally:
                training[0] += time.process_time() - start

        def timed(t, state, champion, static):
            trained, start = training[0], time.process_time()
            out = step(t, state, champion, static)
            timings[t] = (time.process_time() - start, training[0] - trained)
            return out

        loop.step, loop.update.run = timed, timed_train
        start = time.perf_counter()
        loop.run()
        total = time.perf_counter() - start
        checkpoint = len(json.dumps(loop.registry.get_state(CHECKPOINT_KEY)))
        versions = len(loop.registry.ids())
        loop.registry.close()
    return {"timings": timings, "total": total, "checkpoint_bytes": checkpoint, "versions": versions}


def around(timings: dict, centre: int) -> tuple[float, float]:
    """Median step and median overhead (step less training) over the windows around ``centre``."""
    near = [timings[t] for t in range(centre - AROUND, centre + AROUND + 1) if t in timings]
    steps = np.array([s for s, _ in near])
    overhead = np.array([s - trained for s, trained in near])
    return float(np.median(steps)), float(np.median(overhead))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=5000)
    parser.add_argument("--write", action="store_true", help="put the results in docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = __import__("os").getloadavg()[0]
    started = time.perf_counter()
    result = measure(args.windows)
    late = args.windows - AROUND - 1
    step_early, over_early = around(result["timings"], 100)
    step_late, over_late = around(result["timings"], late)
    minutes = (time.perf_counter() - started) / 60
    lines = [
        "## Loop overhead as a run grows (scripts/bench_loop_overhead.py)",
        "",
        f"Command: `{command()}` ({minutes:.1f} min; {machine()}; {load_average(load)}; "
        f"{datetime.now(UTC):%Y-%m-%d})",
        "",
        f"One run of {args.windows:,} windows of {ROWS} rows (synthetic, gradual drift), the defaults: an "
        "update every window (1 epoch, replay), the temporal gate, rollback and the guard. Medians over "
        f"the {2 * AROUND + 1} windows around each point; overhead is a step's CPU time less its training's "
        "(CPU time of the process, so that other work on a shared machine does not show up as growth).",
        "",
        "| around window | step (CPU ms) | loop overhead (CPU ms) |",
        "|---|---|---|",
        f"| 100 | {step_early * 1e3:.1f} | {over_early * 1e3:.1f} |",
        f"| {late:,} | {step_late * 1e3:.1f} | {over_late * 1e3:.1f} |",
        "",
        f"Overhead ratio, window {late:,} against window 100: **{over_late / over_early:.2f}** "
        f"(the aim: at most 1.2). The run made {result['versions']:,} versions; its checkpoint is "
        f"{result['checkpoint_bytes']:,} bytes at the end, whatever the length of the run; the whole run "
        f"took {result['total'] / 60:.1f} min.",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        replace_section(Path("docs/benchmarks.md"), "bench_loop_overhead", body)


if __name__ == "__main__":
    main()
