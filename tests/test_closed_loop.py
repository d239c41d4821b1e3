"""The closed loop, in process: the loop asks the registry for a live rollout, every server following
the registry runs it on live traffic and records each feedback once whichever replica took it, a
restarted server continues it, a candidate that cannot serve fails it, and the loop adopts the
servers' decision (or fails the rollout nobody ran)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from perennial.cli.common import stream_and_builder
from perennial.cli.registry import main as registry_cli
from perennial.data import WindowFeed
from perennial.evaluate import PromotionGate, evaluate
from perennial.registry import Registry, UnknownVersion, VersionRecord
from perennial.report.run import summarize
from perennial.rollout.live import Canary
from perennial.serve import ServeSettings, create_app
from perennial.serve.app import ModelServer
from perennial.serve.rollouts import engine
from perennial.triggers import EveryWindow
from tests.closed_loop_helpers import CANARY, CONFIG, damage, make_registry, rollout_state, rows
from tests.conftest import make_loop, small_stream

# The offline gate passes every candidate: only the live rollout decides.
ALWAYS = PromotionGate(tolerance=1.0, forgetting_tolerance=1.0, fresh="holdout")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_registry(tmp_path / "registry")


class Servers:
    """Servers on one registry and one request log (outside the registry directory), polled by
    hand: ``follow_registry()`` is each one's poll."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log, self.running = root, log, []

    def start(self) -> tuple[ModelServer, TestClient]:
        server = ModelServer(ServeSettings(registry=self.root, log=self.log, token="t", follow=False))
        self.running.append(server)
        # No ``with``: the app's lifespan would close the server; these close it themselves.
        return server, TestClient(create_app(server))

    def close(self, server: ModelServer) -> None:
        self.running.remove(server)
        server.close()


@pytest.fixture
def servers(root, tmp_path):
    made = Servers(root, tmp_path / "serve-log.sqlite")
    yield made
    for server in list(made.running):
        made.close(server)


def _request(root: Path, kind: str, candidate: str, settings: dict) -> int:
    """A rollout request written to the registry, as the loop writes one."""
    with Registry(root, create=False) as registry:
        return registry.rollouts.request(kind, "v1", candidate, settings, by="loop").id


def _exchange(predict_on: TestClient, feedback_on: TestClient, unit: str, row: list[float]) -> dict:
    """One request and its feedback, each to the server given; every answer is right."""
    answer = predict_on.post("/predict", json={"unit": unit, "features": row})
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    label = answer["predictions"][0]
    feedback = feedback_on.post("/feedback", json={"request_id": answer["request_id"], "label": label})
    assert feedback.status_code == 200, feedback.text
    return answer | {"feedback": feedback.json()}


# ---- 1. the registry's rollouts --------------------------------------------------------------------
def test_a_rollout_request_is_refused_for_an_unknown_version_a_second_one_or_a_stale_champion(root):
    with Registry(root, create=False) as registry:
        rollouts = registry.rollouts
        with pytest.raises(UnknownVersion, match="unknown version 'v9'"):
            rollouts.request("ab", "v1", "v9", {"share": 0.5})
        with pytest.raises(UnknownVersion, match="unknown version 'v8'"):
            rollouts.request("ab", "v8", "v2", {"share": 0.5})
        with pytest.raises(ValueError, match="cannot roll out v3 against v2: the champion is v1 now"):
            rollouts.request("ab", "v2", "v3", {"share": 0.5})
        with pytest.raises(ValueError, match="v1 is already the champion"):
            rollouts.request("ab", "v1", "v1", {"share": 0.5})
        first = rollouts.request("ab", "v1", "v2", {"share": 0.5})
        with pytest.raises(ValueError, match=rf"a ab rollout of v2 \(id {first.id}\) is requested"):
            rollouts.request("canary", "v1", "v3", {})
        assert [r.id for r in rollouts.all()] == [first.id]  # the refused ones left nothing behind
        assert rollouts.open() == first and first.requested_by == "loop" and first.salt


def test_a_rollout_is_decided_once(root):
    with Registry(root, create=False) as registry:
        rollouts = registry.rollouts
        record = rollouts.request("ab", "v1", "v2", {"share": 0.5})
        assert rollouts.decide(record.id, "rejected", {"p_value": 0.01}, "worse on live traffic")
        # A second server, or the loop's deadline, comes second: nothing changes.
        assert not rollouts.decide(record.id, "promoted", {"p_value": 0.02}, "better")
        assert not rollouts.advance(record.id, {"units": 1}, 99)
        decided = rollouts.get(record.id)
        assert (decided.status, decided.reason, decided.evidence) == (
            "rejected",
            "worse on live traffic",
            {"p_value": 0.01},
        )
        assert decided.seq == 0 and decided.state is None and rollouts.open() is None
        assert [d["decision"] for d in registry.decisions("v2")] == ["rejected"]
        assert registry.get("v2").status == "rejected" and registry.champion() == "v1"


@pytest.mark.parametrize(
    ("status", "v2_becomes", "champion", "logged"),
    [
        ("promoted", "champion", "v2", "promoted"),
        ("rejected", "rejected", "v1", "rejected"),
        ("failed", "rejected", "v1", "rejected"),
        ("stopped", "candidate", "v1", "rollout_stopped"),
    ],
)
def test_a_decision_acts_on_the_candidate(root, status, v2_becomes, champion, logged):
    with Registry(root, create=False) as registry:
        record = registry.rollouts.request("canary", "v1", "v2", CANARY)
        assert registry.rollouts.decide(record.id, status, {"units": 7}, "test", window=3)
        assert registry.get("v2").status == v2_becomes and registry.champion() == champion
        (decision,) = registry.decisions("v2")
        assert decision["decision"] == logged and decision["window"] == 3
        assert decision["numbers"] == {"reason": "test", "rollout": record.id, "kind": "canary", "units": 7}


def test_a_promotion_that_fails_halfway_leaves_the_rollout_open_and_the_champion_as_it_was(root):
    with Registry(root, create=False) as registry:
        record = registry.rollouts.request("canary", "v1", "v2", CANARY)

        def crash(*args, **kwargs):
            raise KeyboardInterrupt("killed after the promotion, before its decision row")

        registry.record_decision = crash
        with pytest.raises(KeyboardInterrupt):
            registry.rollouts.decide(record.id, "promoted", {}, "test")
    with Registry(root, create=False, readonly=True) as registry:
        assert registry.champion() == "v1" and registry.get("v2").status == "candidate"
        assert registry.rollouts.open().id == record.id and registry.decisions("v2") == []


def test_a_promotion_after_the_champion_changed_by_hand_stops_the_rollout(root):
    with Registry(root, create=False) as registry:
        record = registry.rollouts.request("ab", "v1", "v2", {"share": 0.5})
        registry.promote("v3", reason="a person's call")
        assert registry.rollouts.decide(record.id, "promoted", {}, "better")
        decided = registry.rollouts.get(record.id)
        assert decided.status == "stopped" and "the champion changed from v1 to v3" in decided.reason
        assert registry.champion() == "v3" and registry.get("v2").status == "candidate"


# ---- 2. two servers, one registry, one log --------------------------------------------------------
def test_two_servers_run_one_rollout_and_record_every_feedback_once(root, servers):
    a, client_a = servers.start()
    b, client_b = servers.start()
    rollout_id = _request(root, "canary", "v2", CANARY)
    assert a.status()["rollout"] is None and b.status()["rollout"] is None  # until their next poll
    a.follow_registry()
    b.follow_registry()
    for server in (a, b):
        status = server.status()
        assert status["rollout"]["id"] == rollout_id and status["rollout"]["candidate"] == "v2"
    assert rollout_state(root)["status"] == "running"

    # A unit's arm is the rollout's, not the server's: the same on both, and what the registry says.
    units = [f"sticky-{i}" for i in range(60)]
    x = rows(400)
    arms_a = [client_a.post("/predict", json={"unit": u, "features": x[0]}).json()["arm"] for u in units]
    arms_b = [client_b.post("/predict", json={"unit": u, "features": x[0]}).json()["arm"] for u in units]
    with Registry(root, create=False, readonly=True) as registry:
        expected = list(engine(registry.rollouts.get(rollout_id)).assign(units))
    assert arms_a == arms_b == expected and {"v1", "v2"} <= set(arms_a)

    # Requests and their feedback split between the servers, every way round.
    ways = [(client_a, client_a), (client_a, client_b), (client_b, client_a), (client_b, client_b)]
    served = [_exchange(*ways[i % 4], f"user-{i}", x[i]) for i in range(60)]
    assert {s["arm"] for s in served} == {"v1", "v2"}
    assert all(s["feedback"]["rollout"] == "continue" for s in served)  # 80 canary units complete it
    assert rollout_state(root)["summary"]["units"] == 60  # each labelled row once, whoever took it
    a.follow_registry()
    b.follow_registry()
    assert a.status()["rollout"]["units"] == b.status()["rollout"]["units"] == 60

    # Traffic goes on until a feedback completes the canary on one of the servers.
    sent = 60
    for i in range(60, 400):
        served.append(_exchange(*ways[i % 4], f"user-{i}", x[i]))
        sent += 1
        if served[-1]["feedback"]["rollout"] != "continue":
            break
    assert served[-1]["feedback"]["rollout"] == "promote", "the canary did not complete in 400 requests"
    final = rollout_state(root)
    assert final["status"] == "promoted" and final["summary"]["units"] == sent
    deciding, other = (a, b) if ways[(sent - 1) % 4][1] is client_a else (b, a)
    assert deciding.status()["champion"] == "v2" and deciding.status()["rollout"] is None
    assert other.status()["champion"] == "v1" and other.status()["rollout"]["id"] == rollout_id
    other.follow_registry()  # its next poll: the rollout was decided elsewhere
    for client in (client_a, client_b):
        status = client.get("/status").json()
        assert (status["champion"], status["registry_champion"], status["rollout"]) == ("v2", "v2", None)
        answer = client.post("/predict", json={"unit": "after", "features": x[0]}).json()
        assert (answer["arm"], answer["version"]) == ("v2", "v2")
    assert rollout_state(root)["summary"]["units"] == sent  # the late polls recorded nothing again


# ---- 3. restart -------------------------------------------------------------------------------------
def test_a_restarted_server_continues_the_rollout_and_loses_no_feedback(root, servers):
    settings = {**CANARY, "min_samples": 10_000}  # it runs on for the whole test
    rollout_id = _request(root, "canary", "v2", settings)
    first, client = servers.start()
    first.follow_registry()
    x = rows(60)
    for i in range(30):
        _exchange(client, client, f"user-{i}", x[i])
    before = rollout_state(root)
    assert before["summary"]["units"] == 30
    # One more request whose feedback reaches the log, but the server dies before advancing the
    # rollout with it.
    answer = client.post("/predict", json={"unit": "late", "features": x[30]}).json()
    first.log.write_feedback(answer["request_id"], answer["predictions"])
    servers.close(first)
    assert rollout_state(root)["summary"]["units"] == 30

    second, client = servers.start()
    second.follow_registry()
    assert second.deployment.rollout_id == rollout_id
    assert second.deployment.rollout.summary()["units"] >= 30  # continued, not begun again
    second.follow_registry()
    after = rollout_state(root)
    assert after["status"] == "running" and after["summary"]["units"] == 31 and after["seq"] > before["seq"]
    assert second.status()["rollout"]["units"] == 31
    second.follow_registry()  # nothing new in the log: nothing recorded twice
    assert rollout_state(root)["summary"]["units"] == 31
    for i in range(31, 36):
        _exchange(client, client, f"user-{i}", x[i])
    assert rollout_state(root)["summary"]["units"] == 36


def test_feedback_does_not_wait_for_a_busy_registry_and_nothing_is_lost(root, servers):
    settings = {**CANARY, "min_samples": 10_000}
    _request(root, "canary", "v2", settings)
    server, client = servers.start()
    server.follow_registry()
    x = rows(10)
    _exchange(client, client, "user-0", x[0])
    writer = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the loop committing a window, say
    try:
        busy = _exchange(client, client, "user-1", x[1])
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert busy["feedback"]["rollout"] == "pending"  # answered; its label waits in the log
    assert rollout_state(root)["summary"]["units"] == 1
    _exchange(client, client, "user-2", x[2])  # the next advance records both
    assert rollout_state(root)["summary"]["units"] == 3


# ---- 4. a candidate that cannot serve ----------------------------------------------------------------
def test_a_rollout_of_a_candidate_that_cannot_serve_fails_and_the_champion_goes_on(root, servers):
    server, client = servers.start()
    damage(root, "v3")
    rollout_id = _request(root, "canary", "v3", CANARY)
    server.follow_registry()
    failed = rollout_state(root)
    assert failed["id"] == rollout_id and failed["status"] == "failed"
    assert "the candidate cannot serve" in failed["reason"] and "version v3 cannot serve" in failed["reason"]
    with Registry(root, create=False, readonly=True) as registry:
        assert registry.get("v3").status == "rejected" and registry.champion() == "v1"
    status = client.get("/status").json()
    assert status["champion"] == "v1" and status["rollout"] is None
    assert f"rollout {rollout_id} failed" in status["follow"]["note"]
    for i, row in enumerate(rows(5)):
        answer = client.post("/predict", json={"unit": f"user-{i}", "features": row})
        assert answer.status_code == 200 and answer.json()["version"] == "v1"
    server.follow_registry()  # decided: not tried again
    assert rollout_state(root)["status"] == "failed" and server.deployment.rollout is None


# ---- 5. a registry replaced at the same path ----------------------------------------------------------
def test_a_server_does_not_follow_a_registry_replaced_at_its_path(root, servers, tmp_path):
    server, client = servers.start()
    x = rows(20)
    before = client.post("/predict", json={"unit": "u", "rows": x}).json()["probabilities"]
    old = tmp_path / "old-registry"
    shutil.move(root, old)
    with Registry(old, create=False) as moved, moved.export("v2", root) as replacement:
        # The new registry's v1 is the old v2; its own v2 (the old v3) becomes its champion.
        replacement.add(
            VersionRecord(replacement.next_id("stateless", None), None, "stateless", config=CONFIG),
            moved.load_weights("v3"),
            {"pipeline": moved.load_extra("v3", "pipeline")},
        )
        replacement.promote("v2", reason="a new registry")
        replacement.rollouts.request("ab", "v2", "v1", {"share": 0.5})
    server.follow_registry()
    server.follow_registry()
    status = client.get("/status").json()
    assert status["champion"] == "v1" and status["rollout"] is None
    assert "was replaced" in status["follow"]["note"] and "restart the server" in status["follow"]["note"]
    assert "perennial_serve_follow_refused_total 2.0" in server.metrics_text()
    after = client.post("/predict", json={"unit": "u", "rows": x}).json()
    assert after["version"] == "v1"
    assert np.allclose(after["probabilities"], before, atol=1e-6)  # the old registry's v1 still answers
    with Registry(root, create=False, readonly=True) as replacement:
        new_v1 = build_like(replacement, "v1")
    with torch.no_grad():
        theirs = new_v1(torch.tensor(x)).softmax(1).numpy()
    assert not np.allclose(theirs, before, atol=1e-3)  # the new registry's v1 would answer otherwise


def test_a_server_whose_registry_is_deleted_goes_on_serving_and_says_so(root, servers, tmp_path):
    server, client = servers.start()
    shutil.rmtree(root / "versions")
    (root / "index.sqlite").unlink()
    server.poll_registry()  # what the follower thread does every poll_s: never raises
    status = client.get("/status")
    assert status.status_code == 200
    assert status.json()["follow"]["note"].startswith("cannot read the registry: FileNotFoundError")
    answer = client.post("/predict", json={"unit": "u", "rows": rows(3)})
    assert answer.status_code == 200 and answer.json()["version"] == "v1"


def build_like(registry: Registry, version: str) -> torch.nn.Module:
    """``version``'s model, built from its stored config and weights."""
    _, build = stream_and_builder(OmegaConf.create(registry.get(version).config))
    module = build()
    module.load_state_dict(registry.load_weights(version))
    return module.eval()


# ---- 6. the loop hands its candidate to the servers -------------------------------------------------
STREAM = partial(small_stream, n_samples=4000)  # 8 windows of 500, drift at window 3


def _feed() -> WindowFeed:
    stream = STREAM()
    return WindowFeed(stream.name, stream.feature_shape, stream.classes)


def _server_loop(run_dir: Path, max_windows: int = 2):
    # EveryWindow: an update would start at every window that is not held back.
    canary = Canary(on="server", max_windows=max_windows)
    return make_loop(run_dir, stream=_feed(), trigger=EveryWindow(), gate=ALWAYS, rollout=canary)


WINDOWS = STREAM().windows()
KEYS = ("window", "champion", "trained", "candidate", "decision", "rollout_candidate", "rollout_decision")


def _row(result: dict, window: int) -> dict:
    return next(r for r in result["rows"] if r["window"] == window)


def _as_a_server(run_dir: Path, decision: str | None) -> None:
    """What a server does with the loop's request: starts it (running), and decides it if told."""
    with Registry(run_dir / "registry", create=False) as registry:
        record = registry.rollouts.open()
        assert registry.rollouts.advance(record.id, engine(record).state_dict(), 0)
        if decision is not None:
            assert registry.rollouts.decide(record.id, decision, {"p_value": 0.01}, "test")


def test_a_candidate_the_gate_passes_waits_for_the_servers_decision(tmp_path):
    loop = _server_loop(tmp_path)
    result = loop.process(WINDOWS[:2])  # v1 from window 0; window 1 trains v1.1, and the gate passes it
    assert _row(result, 1)["decision"] == "rollout" and _row(result, 1)["candidate"] == "v1.1"
    record = loop.registry.rollouts.open()
    assert (record.status, record.requested_by, record.kind) == ("requested", "loop", "canary")
    assert (record.champion, record.candidate, record.window) == ("v1", "v1.1", 1)
    assert loop.registry.champion() == "v1" and loop.registry.get("v1.1").status == "candidate"

    _as_a_server(tmp_path, "promoted")
    result = loop.process(WINDOWS[:4])
    adopting, next_one = _row(result, 2), _row(result, 3)
    assert adopting["rollout_decision"] == "promote" and adopting["rollout_p_value"] == 0.01
    assert adopting["trained"] == ""  # no update while the rollout waited
    assert adopting["champion"] == "v1" and next_one["champion"] == "v1.1"  # it serves from the next one
    assert result["champion"] == "v1.1" and loop.registry.champion() == "v1.1"
    assert [d["decision"] for d in loop.registry.decisions("v1.1")] == ["rollout", "promoted"]
    assert next_one["trained"] and loop.registry.get(next_one["trained"]).parent == "v1.1"


def test_a_rollout_no_server_started_fails_after_max_windows(tmp_path):
    loop = _server_loop(tmp_path, max_windows=2)
    result = loop.process(WINDOWS[:4])  # requested at window 1; windows 2 and 3 wait
    assert [_row(result, w)["rollout_decision"] for w in (2, 3)] == ["continue", "failed"]
    assert [_row(result, w)["trained"] for w in (2, 3)] == ["", ""]  # no update while it waited
    record = loop.registry.rollouts.all()[-1]
    assert record.status == "failed" and "no server started it within rollout.max_windows=2" in record.reason
    # Never promoted on the offline gate alone.
    assert loop.registry.get("v1.1").status == "rejected" and loop.registry.champion() == "v1"
    assert [d["decision"] for d in loop.registry.decisions("v1.1")] == ["rollout", "rejected"]
    assert _row(loop.process(WINDOWS[:5]), 4)["trained"]  # updates go on once it is decided


def test_a_candidate_queues_behind_a_persons_rollout_and_the_run_goes_on(tmp_path):
    loop = _server_loop(tmp_path, max_windows=3)
    loop.process(WINDOWS[:1])  # v1
    with Registry(tmp_path / "registry", create=False) as registry:
        registry.add(VersionRecord("v2", None, "stateless"), registry.load_weights("v1"))
        registry.rollouts.request("shadow", "v1", "v2", {}, by="admin")  # a person's, on the servers
    result = loop.process(WINDOWS[:3])  # window 1 trains v1.1, which passes the gate: it queues
    assert _row(result, 2)["rollout_decision"] == "queued"
    _as_a_server(tmp_path, "stopped")  # the person's rollout ends
    result = loop.process(WINDOWS[:4])
    record = loop.registry.rollouts.all()[-1]
    assert record.candidate == "v1.1" and record.requested_by == "loop" and record.is_open
    assert _row(result, 3)["rollout_decision"] == "continue"


def test_a_rollout_a_server_ran_but_never_decided_ends_with_on_timeout(tmp_path):
    loop = _server_loop(tmp_path, max_windows=2)
    loop.process(WINDOWS[:2])
    _as_a_server(tmp_path, None)
    result = loop.process(WINDOWS[:4])
    assert [_row(result, w)["rollout_decision"] for w in (2, 3)] == ["continue", "promote"]
    record = loop.registry.rollouts.all()[-1]
    assert record.status == "promoted" and "rollout.on_timeout" in record.reason  # Canary's: promote
    assert loop.registry.champion() == "v1.1"


def test_a_run_killed_while_a_server_rollout_waits_resumes_to_the_same_rows(tmp_path):
    def run(path: Path, crash_at: int | None) -> list:
        loop = _server_loop(path, max_windows=4)
        loop.process(WINDOWS[:2])  # the request, at window 1
        if crash_at is not None:
            real = loop.checkpoint

            def checkpoint(state, t):
                if t == crash_at:
                    raise KeyboardInterrupt("killed before the waiting window committed")
                return real(state, t)

            loop.checkpoint = checkpoint
            with pytest.raises(KeyboardInterrupt):
                loop.process(WINDOWS[:3])
            loop.registry.close()
            loop = _server_loop(path, max_windows=4)
            assert loop.process(WINDOWS[:2])["next_window"] == 2  # window 2 was not committed
        waiting = loop.process(WINDOWS[:3])
        assert _row(waiting, 2)["rollout_decision"] == "continue"
        assert loop.registry.rollouts.open().status == "requested"  # still the same request
        _as_a_server(path, "promoted")
        return loop.process(WINDOWS[:5])["rows"]

    whole = run(tmp_path / "whole", None)
    resumed = run(tmp_path / "crashed", crash_at=2)
    assert [[r[k] for k in (*KEYS, "served_accuracy")] for r in resumed] == [
        [r[k] for k in (*KEYS, "served_accuracy")] for r in whole
    ]
    adopted = next(r for r in resumed if r["rollout_decision"] == "promote")
    assert adopted["window"] == 3 and adopted["rollout_candidate"] == "v1.1"
    assert _row({"rows": resumed}, 4)["champion"] == "v1.1"


# ---- 7. a loop over a registry that already serves ---------------------------------------------------
def test_a_loop_over_an_exported_champion_starts_from_it_at_window_0(tmp_path):
    trained = make_loop(tmp_path / "trained", stream=small_stream(n_samples=2000, drift_points=[1000]))
    source = trained.run()["champion"]
    with trained.registry.export(source, tmp_path / "serving" / "registry"):
        pass
    loop = make_loop(tmp_path / "serving", stream=small_stream(n_samples=2000))
    result = loop.run()
    assert result["static"] == "v1" and result["rows"][0]["window"] == 0
    first = result["rows"][0]
    assert first["champion"] == "v1"
    x, y = loop.xy(0)
    served = evaluate(trained.load(source), x, y).accuracy  # the source run's champion, as it was
    assert first["served_accuracy"] == pytest.approx(served)
    v1 = loop.registry.get("v1")
    assert v1.trained_on_windows == [] and v1.trigger["name"] == "export"  # nothing trained on warm-up
    later = [v for v in loop.registry.versions() if v.id != "v1"]
    assert later and all(v.id.startswith("v1.") for v in later)  # every update descends from it
    assert [d["decision"] for d in loop.registry.decisions("v1")] == ["promoted", "adopted"]
    assert len(result["rows"]) == len(small_stream(n_samples=2000).windows())
    # The run's summary takes an adopted champion trained on none of its windows.
    report = summarize(result, loop.registry, loop.accuracy_matrix(), loop.stream)
    assert report["evaluated_windows"] == len(result["rows"])


# ---- 8. the registry CLI -------------------------------------------------------------------------------
def test_registry_export_and_rollouts_commands(root, tmp_path, capsys):
    target = tmp_path / "exported"
    assert registry_cli([str(root), "export", "v2", "--to", str(target)]) == 0
    assert f"exported v2 to {target} as v1" in capsys.readouterr().out
    with Registry(target, create=False, readonly=True) as exported, Registry(root, readonly=True) as origin:
        assert exported.champion() == "v1" and [v.id for v in exported.versions()] == ["v1"]
        ours, theirs = exported.load_weights("v1"), origin.load_weights("v2")
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert exported.identity != origin.identity

    assert registry_cli([str(root), "export", "v1", "--to", str(target)]) == 1
    assert f"{target} already holds a registry" in capsys.readouterr().err
    assert registry_cli([str(root), "export", "v9", "--to", str(tmp_path / "other")]) == 2
    assert "unknown version 'v9'" in capsys.readouterr().err
    assert not (tmp_path / "other" / "index.sqlite").exists()

    assert registry_cli([str(root), "rollouts"]) == 0
    assert capsys.readouterr().out.strip() == "(no rollouts)"
    rollout_id = _request(root, "ab", "v2", {"share": 0.5})
    with Registry(root, create=False) as registry:
        registry.rollouts.decide(rollout_id, "rejected", {"p_value": 0.004}, "worse live")
    _request(root, "canary", "v3", CANARY)
    assert registry_cli([str(root), "rollouts"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        f"{rollout_id}  ab  v2 vs v1  rejected  p=0.004  worse live",
        f"{rollout_id + 1}  canary  v3 vs v1  requested",
    ]
    assert registry_cli([str(root), "rollouts", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["candidate"], r["status"], r["requested_by"]) for r in records] == [
        ("v2", "rejected", "loop"),
        ("v3", "requested", "loop"),
    ]
