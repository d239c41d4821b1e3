"""A window the screen quarantines while a candidate is live: its labels feed no rollout evidence,
and a schema change waiting for an update still waits until the rollout is decided, so a second
candidate never replaces the one on live traffic."""

from __future__ import annotations

import dataclasses

import numpy as np

from perennial.data import NewColumnsStream
from perennial.evaluate import PromotionGate, WindowScreen
from perennial.learn import StatefulUpdate
from perennial.rollout.live import Canary
from perennial.triggers import TimeTrigger
from tests.conftest import make_loop, small_stream

# The offline gate passes everything, at the window each candidate is trained.
ALWAYS = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout")
POISONED = 6


def run_with_a_quarantine_mid_rollout(path):
    """v1.1 is made at window 3 and is live from window 4; window 5 brings two new feature columns
    (a schema change, held back by the rollout); window 6's labels are poisoned."""
    stream = NewColumnsStream(small_stream(kind="none", n_samples=6000, window=500), columns=2, at=5)
    # min_samples too high to finish a step: the canary runs until max_windows, then promotes.
    canary = Canary(steps=[0.5, 1.0], min_samples=10**6, max_windows=4, on_timeout="promote")
    loop = make_loop(
        path,
        stream=stream,
        update=StatefulUpdate(epochs=10),
        trigger=TimeTrigger(every=3),
        gate=ALWAYS,
        rollout=canary,
        screen=WindowScreen(),
        initial_epochs=40,  # a confident champion: the screen judges labels where it is sure
    )
    windows = stream.windows()  # the stream's own list, which the loop reads
    w = windows[POISONED]
    flip = np.random.default_rng(0).random(len(w)) < 0.4
    windows[POISONED] = dataclasses.replace(w, y=np.where(flip, 1 - w.y, w.y))
    return loop, loop.run()


def test_a_quarantined_window_holds_the_rollout_and_the_schema_update_waits_for_its_decision(tmp_path):
    loop, state = run_with_a_quarantine_mid_rollout(tmp_path)
    rows = {r["window"]: r for r in state["rows"]}
    assert rows[3]["candidate"] == "v1.1" and rows[3]["decision"] == "rollout"
    held = rows[POISONED]
    assert held["screen"].startswith("quarantined:")
    assert held["candidate"] == "" and held["trigger"] == ""  # no update starts on a quarantined window
    assert (held["rollout_candidate"], held["rollout_decision"]) == ("v1.1", "held")

    # v1.1's rollout ran to its end: four windows of evidence, the quarantined one not among them.
    live = [r["window"] for r in state["rows"] if r["rollout_candidate"] == "v1.1"]
    assert live == [4, 5, 6, 7, 8] and rows[8]["rollout_decision"] == "promote"
    assert loop.registry.get("v1.1").status in ("champion", "retired")
    numbers = loop.registry.decisions("v1.1")[-1]["numbers"]
    assert numbers["units"] == sum(len(loop.data[w]) for w in (4, 5, 7, 8))

    # The new columns start their major version only once the rollout is decided.
    v2 = loop.registry.get("v2")
    assert (v2.trigger["name"], v2.created_window) == ("schema", 9)
    assert "window 5 brings new feature columns x4, x5" in v2.trigger["reason"]
    assert POISONED not in v2.trained_on_windows
    assert [r["rollout_candidate"] for r in state["rows"] if r["window"] <= 8 and r["rollout"]] == [
        "v1.1"
    ] * 5
