"""Model iteration: a challenger line of another architecture, retrained from scratch and weighed
against the champion by the same gate, beside the champion's own line in the registry."""

from __future__ import annotations

from functools import partial

import pytest
from torch import nn

from perennial.evaluate import PromotionGate
from perennial.learn import HybridUpdate
from perennial.loop import Challenger
from perennial.rollout.live import AB
from tests.conftest import build_mlp, kill_mid_window, make_loop, small_stream

ALWAYS = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout")


def widths(module) -> list[int]:
    return [m.out_features for m in module.backbone.modules() if isinstance(m, nn.Linear)]


def challenger_loop(path, every=1, swap=False, **kwargs):
    stream = small_stream()
    shape = tuple(stream.feature_shape)
    # The champion's architecture is crippled (one hidden unit), so the challenger's line wins;
    # ``swap`` gives the challenger the crippled one instead.
    tiny = partial(build_mlp, shape, stream.n_classes, hidden=(1,))
    wide = partial(build_mlp, shape, stream.n_classes, hidden=(64,))
    if swap:
        build, rival = wide, Challenger(tiny, "tiny", every)
    else:
        build, rival = tiny, Challenger(wide, "wide", every)
    return make_loop(path, stream=stream, gate=ALWAYS, build=build, challenger=rival, **kwargs)


def test_a_better_challenger_architecture_takes_over_and_its_line_is_fine_tuned(tmp_path):
    loop = challenger_loop(tmp_path / "run")
    state = loop.run()
    records = {v.id: v for v in loop.registry.versions()}
    assert records["v1.1"].parent == "v1" and records["v1.1"].kind == "stateful"
    v2 = records["v2"]
    assert (v2.kind, v2.parent, v2.trigger["name"]) == ("stateless", None, "challenger")
    assert v2.trigger["extra"] == {"model": "wide"} and v2.trained_on_windows == [0, 1]
    assert loop.registry.window_rows()[0]["challenger"] == "v2"
    # Once it won, the champion's fine-tunes continue the challenger's line, in its architecture.
    assert records["v2.1"].parent == "v2"
    assert widths(loop.load("v2.1")) == [64, 2] and widths(loop.load("v1.1")) == [1, 2]
    assert loop.registry.load_extra("v2.1", "schema") == {"architecture": "challenger"}
    assert "challenger model=wide" in loop.registry.lineage_tree()
    assert widths(loop.load(state["champion"])) == [64, 2]
    decisions = {d["version"]: d for d in loop.registry.decisions()}
    challengers = [v for v in records.values() if v.trigger["name"] == "challenger"]
    assert len(challengers) == 5  # one at each update
    for v in challengers[1:]:  # later challengers face a champion of their own architecture
        if decisions[v.id]["decision"] == "rejected":
            assert "does not beat the champion" in decisions[v.id]["numbers"]["reason"]


def test_a_challenger_that_is_not_better_is_rejected_and_the_line_goes_on(tmp_path):
    loop = challenger_loop(tmp_path / "run", swap=True)
    loop.run()
    roots = [v for v in loop.registry.versions() if v.trigger["name"] == "challenger"]
    assert roots and all(v.status == "rejected" for v in roots)
    assert loop.registry.champion() == "v1.5"  # the fine-tuned line kept the champion role


def test_the_challenger_trains_at_every_kth_update_and_composes_with_hybrid(tmp_path):
    loop = challenger_loop(tmp_path / "run", every=2, update=HybridUpdate(epochs=2, retrain_every=3))
    loop.run()
    by_window: dict[int, list[str]] = {}
    for v in loop.registry.versions():
        by_window.setdefault(v.created_window, []).append(v.trigger["name"])
    assert [("challenger" in by_window[w]) for w in range(1, 6)] == [False, True, False, True, False]


def test_a_run_with_a_challenger_resumes_exactly(tmp_path):
    whole = challenger_loop(tmp_path / "whole")
    whole.run()
    kill_mid_window(challenger_loop(tmp_path / "crashed"), window=3)
    resumed = challenger_loop(tmp_path / "crashed")
    state = resumed.run(resume=True)
    ids = lambda registry: [(v.id, v.status) for v in registry.versions()]  # noqa: E731
    assert ids(resumed.registry) == ids(whole.registry)
    assert state["rows"] == whole.registry.window_rows()


def test_bad_challenger_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"challenger\.every must be an update count >= 1, got 0"):
        Challenger(build_mlp, every=0)
    with pytest.raises(ValueError, match=r"use rollout=none with challenger\.model"):
        make_loop(tmp_path / "ab", rollout=AB(), challenger=Challenger(build_mlp))
    loop = challenger_loop(tmp_path / "run")
    loop.run()
    loop.challenger = None  # e.g. resumed without challenger.model
    with pytest.raises(ValueError, match=r"v2 is of a challenger line: run with the same challenger\.model"):
        loop.load("v2")
