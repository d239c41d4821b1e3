"""``perennial-report``: one table and two plots across the jobs of a run or multirun directory, and
the jobs that did not finish named (docs/report.md)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from perennial.report.sweep import COMPUTE, OUTPUTS, collect, print_report, write_outputs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perennial-report",
        description="Compare the perennial-run jobs of a run or Hydra multirun directory: "
        f"writes {', '.join(OUTPUTS.values())}.",
    )
    parser.add_argument(
        "dir", type=Path, metavar="DIR", help="a perennial-run directory, or a multirun directory of them"
    )
    parser.add_argument("--out", type=Path, help="where to write the report (default: DIR)")
    parser.add_argument(
        "--compute",
        choices=list(COMPUTE),
        default="samples_processed",
        help="the training-compute figure on screen and on the accuracy-against-compute plot "
        "(default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `perennial-report DIR | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = _parser().parse_args(argv)
    try:
        report = collect(args.dir)
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"perennial-report: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.dir
    try:
        written = write_outputs(report, out, compute=args.compute)
    except OSError as err:  # --out names a file, or a directory the user may not write to
        print(f"perennial-report: error: cannot write the report to {out}: {err}", file=sys.stderr)
        return 2
    print_report(report, written, compute=args.compute)
    # A sweep in which no job finished is a failure a calling script must see.
    return 0 if report.finished else 1


if __name__ == "__main__":
    sys.exit(main())
