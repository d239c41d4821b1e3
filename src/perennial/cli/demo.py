"""``perennial-demo``: the closed loop on one machine in about four minutes. A v1 trained on four
years of the weather data serves the following years as live HTTP traffic (``perennial-serve``),
labels come back through ``/feedback``, and ``perennial-run`` follows the server's request log and
sends every candidate that passes its offline gate into a canary on that traffic. Prints each event
and a line per played year; writes demo.json and demo.png. Every process it starts is stopped when it
ends, on Ctrl-C and on SIGTERM too."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from perennial.demo.closed_loop import ClosedLoop, DemoSettings
from perennial.demo.processes import ProcessFailed


def _parser() -> argparse.ArgumentParser:
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(
        prog="perennial-demo",
        description="Run the closed loop (server, live traffic with feedback, the loop and its canaries) "
        "and show what it does.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the directory for everything it writes (default: runs/demo/<date_time>)",
    )
    parser.add_argument(
        "--years",
        type=int,
        default=defaults.years,
        help=f"years of traffic to play after v1's history (default {defaults.years})",
    )
    parser.add_argument(
        "--seconds-per-year",
        type=float,
        default=defaults.seconds_per_year,
        help="wall-clock seconds a played year takes, one window of the loop "
        f"(default {defaults.seconds_per_year:g})",
    )
    parser.add_argument(
        "--history-years",
        type=int,
        default=defaults.history_years,
        help=f"years of history the served model is trained on (default {defaults.history_years})",
    )
    parser.add_argument(
        "--skip-years",
        type=int,
        default=defaults.skip_years,
        help="years of the data left out before v1's history (28: v1 learns 1978-81 and the traffic "
        "plays the drift from 1982, the default; 0: v1 learns 1950-53)",
    )
    parser.add_argument("--port", type=int, default=None, help="the server's port (default: a free one)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the runs and the traffic")
    return parser


class Interrupted(Exception):
    """SIGTERM, turned into an exception so that the cleanup runs as it does for Ctrl-C."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handle(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _shielded() -> Iterator[None]:
    """Another Ctrl-C or SIGTERM while the children are being stopped would leave some running:
    ignored until they are all stopped (each has a bounded time before SIGKILL)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = args.out or Path("runs/demo") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        settings = DemoSettings(
            years=args.years,
            seconds_per_year=args.seconds_per_year,
            history_years=args.history_years,
            skip_years=args.skip_years,
            port=args.port,
            seed=args.seed,
        )
    except ValueError as err:
        print(f"perennial-demo: error: {err}", file=sys.stderr)
        return 2
    start = time.monotonic()
    demo = ClosedLoop(out, settings)
    try:
        demo.traffic_table()
    except ValueError as err:
        print(f"perennial-demo: error: {err}", file=sys.stderr)
        return 2
    print(f"perennial-demo: everything goes to {demo.out} (logs of each process in {demo.logs})", flush=True)
    code = 0
    try:
        with _sigterm_raises():
            demo.prepare()
            demo.start_server()
            print(f"server up at {demo.url} (serving {demo.baseline})", flush=True)
            demo.start_loop()
            demo.play()
            print("traffic done; waiting for the loop to commit the last window ...", flush=True)
            demo.drain()
    except (KeyboardInterrupt, Interrupted) as err:
        print(f"perennial-demo: interrupted ({type(err).__name__} {err}); stopping", file=sys.stderr)
        code = 130
    except (ProcessFailed, ValueError, RuntimeError) as err:
        print(f"perennial-demo: error: {err}", file=sys.stderr)
        code = 1
    finally:
        with _shielded():
            if demo.loop is not None:
                if demo.loop.alive:
                    print("stopping the loop (SIGTERM: it finishes the window in hand) ...", flush=True)
                demo.stop_loop()  # its exit status, also when it had ended by itself
            demo.close()
    if demo.player is None:
        return code
    demo.seconds["total"] = round(time.monotonic() - start, 1)
    paths = demo.write_outputs()
    summary = demo.summary()
    _print_summary(summary)
    left = [p.name for p in demo.processes.alive()]
    print(f"processes left running: {', '.join(left) or 'none'}")
    print(f"summary: {paths['summary']}\nplot:    {paths['plot']}")
    if demo.loop_exit not in (0, None):
        print(
            f"perennial-demo: the loop (perennial-run) ended with status {demo.loop_exit}; "
            f"the end of {demo.loop.log}:\n{demo.loop.tail(5)}",
            file=sys.stderr,
        )
        code = code or 1
    if summary["failed"]:
        print(
            f"perennial-demo: {summary['failed']} request(s) failed: {summary['first_errors']}",
            file=sys.stderr,
        )
        code = code or 1
    return code


def _print_summary(summary: dict) -> None:
    accuracy = summary["accuracy"]
    served, v1 = accuracy["served"], accuracy["v1"]
    figures = "-" if served is None or v1 is None else f"{served:.3f} vs {v1:.3f} ({served - v1:+.3f})"
    print(
        f"\n{summary['requests']:,} requests, {summary['failed']} failed "
        f"(predict {summary['failures']['predict']}, feedback {summary['failures']['feedback']}); "
        f"latency p50 {_ms(summary['latency_ms']['p50'])}, p99 {_ms(summary['latency_ms']['p99'])}"
    )
    print(f"served accuracy vs v1 never updated, same requests: {figures}")
    canaries = summary["canaries"]
    print(f"versions into the canary: {len(canaries)}, decided {summary['decided']}")
    for c in canaries:
        when = (
            f"{c['outcome']} at {c['decided_at']:.1f} s"
            if c["outcome"]
            else "undecided when the traffic ended"
        )
        figures = ""
        if c["canary_answers"]:
            figures = (
                f"; in its canary it answered {c['canary_answers']} requests, accuracy "
                f"{_num(c['accuracy'])} (v1 on the same: {_num(c['v1_accuracy'])})"
            )
        print(f"  {c['id']}: entered at {c['canary_at']:.1f} s, {when}{figures}")
    print(
        f"champion at the end: {summary['champion']}; loop windows committed: {summary['loop']['windows']}"
        f" (exit {summary['loop']['exit']}); seconds: {summary['seconds']}"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
