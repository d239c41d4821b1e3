"""Do no harm: the temporal gate (gate.fresh=next), rollback on served evidence, and the guard
against v1 never updated, on a stream whose drift is transient."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from perennial.data.window import Stream, Window
from perennial.evaluate import PromotionGate
from perennial.learn import StatefulUpdate
from perennial.registry import CorruptVersion
from perennial.report.run import guard_line, summarize
from tests.conftest import kill_mid_window, make_loop

ROWS = 400
FLIPPED = 3  # the one window whose concept flips, and flips back after it


@dataclass
class Transient(Stream):
    """Windows of y = [x0 > 0]; window ``FLIPPED`` alone has the opposite concept."""

    n_windows: int = 7
    name: str = field(init=False, default="transient")

    def __post_init__(self) -> None:
        self.feature_shape, self.classes = (4,), [0, 1]

    def windows(self) -> list[Window]:
        out = []
        for i in range(self.n_windows):
            rng = np.random.default_rng(i)
            x = rng.normal(size=(ROWS, 4)).astype(np.float32)
            y = (x[:, 0] > 0).astype(np.int64)
            if i == FLIPPED:
                y = 1 - y
            span = np.arange(i * ROWS, (i + 1) * ROWS)
            out.append(Window(i, int(span[0]), int(span[-1]), x, y, span))
        return out


def transient_loop(path, fresh="next", always=False, forgetting=0.05, **settings):
    loose = (
        {"tolerance": 1.0, "forgetting_tolerance": 1.0} if always else {"forgetting_tolerance": forgetting}
    )
    return make_loop(
        path,
        stream=Transient(),
        update=StatefulUpdate(epochs=15, replay_fraction=0.0),
        buffer=None,
        gate=PromotionGate(fresh=fresh, **loose),
        **{"warmup_windows": 2, "initial_epochs": 20, **settings},
    )


def rows_of(state: dict) -> dict[int, dict]:
    return {r["window"]: r for r in state["rows"]}


def summary_of(loop, state: dict) -> dict:
    return summarize(state, loop.registry, loop.accuracy_matrix(), loop.stream)


def test_the_temporal_gate_judges_on_the_next_window_and_serves_only_after(tmp_path):
    loop = transient_loop(tmp_path, always=True)
    state = loop.run()
    rows = rows_of(state)
    for version in loop.registry.versions()[1:]:
        decisions = [
            d for d in loop.registry.decisions(version.id) if d["decision"] in ("promoted", "rejected")
        ]
        if not decisions:
            assert state["awaiting"]["candidate"] == version.id  # trained on the last window
            continue
        judged = decisions[0]
        trained_through = max(version.trained_on_windows)
        # every row of the next window, none of which it trained on
        assert judged["numbers"]["fresh_window"] == trained_through + 1 == judged["window"]
        assert judged["numbers"]["n_fresh"] == len(loop.data[trained_through + 1]) == ROWS
        served = [w for w, r in rows.items() if r["champion"] == version.id]
        assert all(w > judged["window"] for w in served)  # it serves only from the window after
    summary = summary_of(loop, state)
    assert summary["awaiting"]["candidate"] == loop.registry.versions()[-1].id
    assert summary["freshness_lag"] >= 1.5  # one window of freshness paid for the judgement


def test_a_transient_drift_fools_the_holdout_gate_but_not_the_temporal_gate(tmp_path):
    # The forgetting check would also catch a concept this flipped; drift that is transient but
    # milder passes it, and the fresh rows alone must then decide: so it is off in both runs.
    holdout = transient_loop(tmp_path / "holdout", fresh="holdout", rollback=False, forgetting=1.0)
    h_rows = rows_of(holdout.run())
    fooled = h_rows[FLIPPED]["trained"]
    assert h_rows[FLIPPED]["decision"] == "promoted" and h_rows[FLIPPED]["candidate"] == fooled
    after = h_rows[FLIPPED + 1]
    assert after["champion"] == fooled and after["served_accuracy"] < after["static_accuracy"] - 0.2

    temporal = transient_loop(tmp_path / "next", forgetting=1.0)
    t_rows = rows_of(temporal.run())
    flipped = t_rows[FLIPPED]["trained"]
    judged = next(r for r in t_rows.values() if r["candidate"] == flipped)
    assert judged["window"] == FLIPPED + 1 and judged["decision"] == "rejected"
    assert all(r["champion"] != flipped for r in t_rows.values())
    served = np.mean([r["served_accuracy"] for r in t_rows.values()])
    static = np.mean([r["static_accuracy"] for r in t_rows.values()])
    assert served > static - 0.02  # do no harm


def test_a_champion_that_serves_worse_is_rolled_back_with_its_evidence(tmp_path):
    loop = transient_loop(tmp_path, fresh="holdout", always=True)
    state = loop.run()
    rows = rows_of(state)
    bad = rows[FLIPPED]["trained"]
    row = rows[FLIPPED + 1]
    assert row["champion"] == bad and row["rollback"] == bad and row["rollback_p_value"] < 0.05
    assert loop.registry.get(bad).status == "rolled_back"
    decision = loop.registry.decisions(bad)[-1]
    assert decision["decision"] == "rolled_back" and decision["window"] == FLIPPED + 1
    summary = summary_of(loop, state)
    [rollback] = summary["rollbacks"]
    restored = rows[FLIPPED]["champion"]
    assert rollback["version"] == bad and rollback["restored"] == restored and rollback["n"] == ROWS
    assert rollback["diff"] < rollback["upper_bound"] < 0 and rollback["p_value"] < 0.05
    history = loop.registry.champion_history()
    assert any(h["action"] == "rollback" and h["version"] == restored for h in history)
    # the next window is served by the restored version's line, not the rolled-back one
    assert rows[FLIPPED + 2]["champion"] != bad


def test_a_run_killed_at_the_rollback_resumes_to_the_same_rollback(tmp_path):
    whole = transient_loop(tmp_path / "whole", fresh="holdout", always=True)
    whole_state = whole.run()
    kill_mid_window(transient_loop(tmp_path / "crashed", fresh="holdout", always=True), window=FLIPPED + 1)
    resumed = transient_loop(tmp_path / "crashed", fresh="holdout", always=True)
    assert resumed.registry.get_state("loop")["next_window"] == FLIPPED + 1
    resumed_state = resumed.run(resume=True)
    assert whole_state["rows"] == resumed_state["rows"]
    assert whole_state["rollbacks"] == resumed_state["rollbacks"] != []
    strip = [(d["version"], d["window"], d["decision"], d["numbers"]) for d in whole.registry.decisions()]
    again = [(d["version"], d["window"], d["decision"], d["numbers"]) for d in resumed.registry.decisions()]
    assert strip == again


def test_the_temporal_gate_resumes_an_awaiting_candidate_exactly(tmp_path):
    whole_state = transient_loop(tmp_path / "whole").run()
    kill_mid_window(transient_loop(tmp_path / "crashed"), window=FLIPPED + 1)
    resumed = transient_loop(tmp_path / "crashed")
    assert resumed.registry.get_state("loop")["awaiting"] is not None  # judged after the restart
    assert resumed.run(resume=True)["rows"] == whole_state["rows"]


def test_a_corrupt_rollback_target_is_recorded_not_a_crash(tmp_path):
    loop = transient_loop(tmp_path, fresh="holdout", always=True)

    real = loop.registry.verify

    def corrupt(version):  # v1.1, trained on window 2, is what the flipped candidate replaces
        if version == "v1.1":
            raise CorruptVersion(version, "weights.safetensors does not match its checksum")
        return real(version)

    loop.registry.verify = corrupt
    state = loop.run()
    rows = rows_of(state)
    bad = rows[FLIPPED]["trained"]
    assert rows[FLIPPED + 1]["rollback"].startswith("failed")
    assert rows[FLIPPED]["champion"] == "v1.1"
    assert state["rollbacks"] == [] and state["rollback_failures"][-1]["version"] == bad
    assert loop.registry.decisions(bad)[-1]["decision"] == "rollback_failed"
    assert "checksum" in loop.registry.decisions(bad)[-1]["numbers"]["reason"]
    assert loop.registry.get(bad).status != "rolled_back"


@pytest.mark.parametrize("guard", ["warn", "revert"])
def test_the_guard_warns_or_reverts_when_updating_hurts(tmp_path, guard):
    loop = transient_loop(
        tmp_path, fresh="holdout", always=True, rollback=False, guard=guard, guard_windows=2
    )
    state = loop.run()
    rows = rows_of(state)
    summary = summary_of(loop, state)
    assert summary["guard"]["first_window_worse"] == FLIPPED + 1
    assert rows[FLIPPED + 1]["guard"] == ("worse" if guard == "warn" else "reverted")
    if guard == "warn":
        assert all(d["decision"] != "reverted" for d in loop.registry.decisions())
        assert rows[FLIPPED + 2]["champion"] != "v1"
    else:
        [revert] = summary["guard"]["reverts"]
        assert revert["restored"] == "v1" and revert["upper_bound"] < 0
        assert loop.registry.decisions("v1")[-1]["decision"] == "reverted"
        assert rows[FLIPPED + 2]["champion"] != rows[FLIPPED]["trained"]
    assert "v1 never updated" in guard_line(summary)


def test_the_guard_reports_the_whole_run_when_updating_hurts(tmp_path):
    loop = transient_loop(tmp_path, fresh="holdout", always=True, rollback=False, guard_windows=10)
    summary = summary_of(loop, loop.run())
    assert summary["guard"]["worse"] and summary["guard"]["diff"] < 0
    assert guard_line(summary).startswith("updating hurt")


def test_a_stream_with_no_window_to_judge_on_reports_the_awaiting_candidate(tmp_path):
    loop = transient_loop(tmp_path, warmup_windows=6)
    state = loop.run()
    summary = summary_of(loop, state)
    assert summary["awaiting"]["candidate"] == "v1.1" and summary["champion"] == "v1"
    assert loop.registry.get("v1.1").status == "candidate" and summary["promoted"] == 0


def test_bad_settings_are_named(tmp_path):
    from perennial.loop import Challenger, LoopSettings
    from tests.conftest import build_mlp

    with pytest.raises(ValueError, match=r"gate\.fresh must be one of next, holdout"):
        PromotionGate(fresh="tomorrow")
    with pytest.raises(ValueError, match=r"loop\.guard must be one of warn, revert, off"):
        LoopSettings(guard="panic")
    with pytest.raises(ValueError, match=r"gate\.fresh=holdout"):
        make_loop(tmp_path, challenger=Challenger(build_mlp))
