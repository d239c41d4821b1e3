"""`perennial-run` on a schedule: daily partitions landing one at a time, and the same command run each
night with the same ``resume=PATH``, give the registry and summary.json of one run over all of them.
Nights with too little data, or nothing new, change nothing; a broken partition stops its night with
exit status 2, naming the file, and the run goes on once the file is fixed."""

from __future__ import annotations

import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perennial.cli.run import main as perennial_run_main
from perennial.loop import CHECKPOINT_KEY
from perennial.registry import Registry
from perennial.report.compare import differences, run_view

DAYS = 6
ROWS_A_DAY = 100
FIRST_DAY = pd.Timestamp("2024-03-01")
BROKEN_DAY = 5  # lands half-written first, then whole


def drifting_table(seed: int = 0) -> pd.DataFrame:
    """Orders over ``DAYS`` days: two numbers, a shop, and whether the order churned; the weight of
    ``x2`` in the label drifts from day to day."""
    rng = np.random.default_rng(seed)
    n = DAYS * ROWS_A_DAY
    day = np.repeat(np.arange(DAYS), ROWS_A_DAY)
    seconds = rng.uniform(0, 86_400, n)
    when = FIRST_DAY + pd.to_timedelta(day * 86_400 + seconds, unit="s")
    x1, x2 = rng.normal(size=n).round(4), rng.normal(size=n).round(4)
    shop = rng.choice(["north", "south", "east"], n)
    score = x1 + np.cos(day / 2) * x2 + 0.8 * (shop == "east") + rng.normal(0, 0.4, n)
    churned = np.where(score > 0.4, "yes", "no")
    frame = pd.DataFrame({"when": when, "x1": x1, "x2": x2, "shop": shop, "churned": churned})
    return frame.sort_values("when", kind="stable").reset_index(drop=True)


def land(landing: Path, table: pd.DataFrame, day: int, half: bool = False) -> Path:
    """Day ``day``'s partition (1-based), as a producer writes it; ``half``: cut off mid-row, as a
    copy still running or a crashed writer leaves it."""
    rows = table[table["when"].dt.normalize() == FIRST_DAY + pd.Timedelta(days=day - 1)]
    path = landing / f"part-{(FIRST_DAY + pd.Timedelta(days=day - 1)):%Y-%m-%d}.csv"
    text = rows.to_csv(index=False)
    path.write_text(text[: len(text) // 2] if half else text)
    return path


@dataclass
class Night:
    code: int
    stderr: str


def perennial_run(landing: Path, run_dir: Path) -> Night:
    """One nightly ``perennial-run`` with the same command every night, in this process (a process
    a night would spend most of its time importing torch)."""
    argv = [
        "perennial-run",
        "data=table",
        f"data.path={landing}",
        "data.time_column=when",
        "data.target=churned",
        "data.window=1D",
        f"resume={run_dir}",
        "loop.warmup_windows=2",
        "loop.initial_epochs=3",
        "update.epochs=2",
        "logger=none",
        "progress=false",
    ]
    err, saved = StringIO(), sys.argv
    sys.argv = argv
    try:
        with redirect_stdout(StringIO()), redirect_stderr(err):
            perennial_run_main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved
    return Night(code, err.getvalue())


def same(a: object, b: object) -> None:
    """``a == b`` all the way down, tensors bit for bit; a difference is named by its path."""
    assert differences(a, b) == []


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A nightly schedule over ``DAYS`` partitions, one landing before each night (one of them broken
    at first, then fixed), a night with nothing new, and one run over all of them."""
    root = tmp_path_factory.mktemp("nightly")
    landing, nightly, table = root / "landing", root / "runs" / "prod", drifting_table()
    landing.mkdir()
    record: dict = {"nights": [], "landing": landing, "nightly": nightly}
    for day in range(1, DAYS + 1):
        if day == BROKEN_DAY:
            broken = land(landing, table, day, half=True)
            before = run_view(nightly)
            record["broken"] = (broken, perennial_run(landing, nightly), before, run_view(nightly))
        land(landing, table, day)
        record["nights"].append(perennial_run(landing, nightly))
        if day == 1:
            record["first"] = sorted(p.relative_to(nightly).as_posix() for p in nightly.rglob("*"))
            with Registry(nightly / "registry", create=False) as registry:
                record["first_registry"] = (registry.versions(), registry.get_state(CHECKPOINT_KEY))
    record["last"] = run_view(nightly)
    record["nothing_new"] = (perennial_run(landing, nightly), run_view(nightly))
    record["whole_night"] = perennial_run(landing, root / "runs" / "whole")
    record["whole"] = run_view(root / "runs" / "whole")
    return record


def test_every_night_exits_0_and_the_first_ones_wait_for_data(nights):
    assert [n.code for n in nights["nights"]] == [0] * DAYS, [n.stderr[-2000:] for n in nights["nights"]]
    # Day 1 completes no window yet (a day is complete once a later row shows it is over), day 2
    # completes one: v1 needs loop.warmup_windows=2, so both nights wait, and store no model.
    for night in nights["nights"][:2]:
        assert "waiting for data" in night.stderr and "Traceback" not in night.stderr
    assert "summary.json" not in nights["first"] and "windows.csv" not in nights["first"]
    assert nights["first_registry"] == ([], None)


def test_nightly_runs_give_the_registry_and_summary_of_one_run_over_all_partitions(nights):
    assert nights["whole_night"].code == 0, nights["whole_night"].stderr[-2000:]
    nightly, whole = nights["last"], nights["whole"]
    assert nightly["summary.json"]["windows"] == DAYS - 1  # the last day is not over yet
    assert len(nightly["versions"]) >= 3 and nightly["summary.json"]["evaluated_windows"] == DAYS - 3
    same(nightly, whole)


def test_a_night_with_no_new_partition_changes_nothing(nights):
    night, after = nights["nothing_new"]
    assert night.code == 0, night.stderr[-2000:]
    same(after, nights["last"])


def test_a_half_written_partition_stops_the_night_naming_it_and_the_next_run_goes_on(nights):
    broken, night, before, after = nights["broken"]
    assert night.code == 2
    assert str(broken) in night.stderr and "Traceback" not in night.stderr
    same(after, before)  # nothing committed before it is lost, nothing of it is taken in
    # Once the file is whole, the same command processes what the broken night could not; the run
    # still ends equal to one over all the partitions (the test above).
    assert nights["nights"][BROKEN_DAY - 1].code == 0
