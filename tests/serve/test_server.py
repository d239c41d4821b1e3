"""perennial-serve over real HTTP on a loopback port: routing, feedback, rollouts, hot swaps under load,
admin auth, input validation, and a log that survives kill -9."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from omegaconf import OmegaConf

from perennial.cli.common import stream_and_builder
from perennial.registry import Registry, VersionRecord
from perennial.rollout.router import Router
from perennial.serve import ServeSettings, analyze, create_app

from .stored import pipeline_extra

TOKEN = "test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
DATA = {
    "_target_": "perennial.data.SyntheticStream",
    "kind": "none",
    "n_samples": 2000,
    "window": 500,
    "n_features": 6,
    "noise": 0.1,
    "seed": 0,
}
MODEL = {"_target_": "perennial.learn.MLP", "_partial_": True, "hidden": [16]}
REPO = Path(__file__).resolve().parents[2]


def _train(build, x, y, seed: int):
    torch.manual_seed(seed)
    module = build()
    opt = torch.optim.Adam(module.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()
        opt.step()
    return module


@pytest.fixture(scope="module")
def rows():
    stream, _ = stream_and_builder(OmegaConf.create({"data": DATA, "model": MODEL}))
    windows = stream.windows()
    return np.concatenate([w.x for w in windows]), np.concatenate([w.y for w in windows])


@pytest.fixture(scope="module")
def base_registry(tmp_path_factory, rows):
    """v1 (champion) and v2 learned the labels; v3 learned them inverted, so it is almost always wrong."""
    stream, build = stream_and_builder(OmegaConf.create({"data": DATA, "model": MODEL}))
    x, y = rows
    root = tmp_path_factory.mktemp("serve") / "registry"
    config = {"data": DATA, "model": MODEL}
    with Registry(root) as reg:
        for seed, labels in ((0, y), (1, y), (2, 1 - y)):
            module = _train(build, x, labels, seed)
            reg.add(
                VersionRecord(reg.next_id("stateless", None), None, "stateless", config=config),
                module.state_dict(),
                pipeline_extra(stream),
            )
        reg.promote("v1", reason="test")
    return root


@pytest.fixture
def registry(base_registry, tmp_path):
    root = tmp_path / "registry"
    shutil.copytree(base_registry, root)
    return root


class Running:
    """A uvicorn server in a thread on a free loopback port, and an httpx client for it."""

    def __init__(self, settings: ServeSettings) -> None:
        self.app = create_app(settings)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def model_server(self):
        return self.app.state.server

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def serve(registry):
    running = []

    def start(**kw):
        running.append(Running(ServeSettings(registry=registry, token=kw.pop("token", TOKEN), **kw)))
        return running[-1]

    yield start
    for r in running:
        r.stop()


def test_predict_serves_the_champion_and_logs_before_answering(serve, rows):
    s = serve()
    x, y = rows
    one = s.client.post("/predict", json={"unit": "user-1", "features": x[0].tolist()}).json()
    assert (one["arm"], one["version"]) == ("v1", "v1")
    assert len(one["predictions"]) == 1 and abs(sum(one["probabilities"][0]) - 1) < 1e-5
    batch = s.client.post("/predict", json={"unit": 7, "rows": x[:50].tolist()}).json()
    assert np.mean(np.array(batch["predictions"]) == y[:50]) > 0.75  # the trained champion answers
    logged = s.model_server.log.request(batch["request_id"])  # committed before the answer came
    assert logged["predictions"] == batch["predictions"] and logged["unit"] == "7"


def test_ab_routes_by_the_salted_router_and_units_stay(serve, rows):
    s = serve()
    started = s.client.post(
        "/rollout",
        headers=ADMIN,
        json={"kind": "ab", "candidate": "v2", "settings": {"share": 0.3, "salt": "t"}},
    )
    assert started.status_code == 200, started.text
    assert started.json()["shares"] == {"v1": pytest.approx(0.7), "v2": pytest.approx(0.3)}
    x = rows[0][0].tolist()
    units = [f"user-{i}" for i in range(400)]
    arms = {u: s.client.post("/predict", json={"unit": u, "features": x}).json()["arm"] for u in units}
    router = Router({"v1": 0.7, "v2": 0.3}, control="v1", salt="t")
    assert arms == {u: router.route(u) for u in units}
    assert 0.22 < np.mean([a == "v2" for a in arms.values()]) < 0.38
    again = {u: s.client.post("/predict", json={"unit": u, "features": x}).json()["arm"] for u in units[:50]}
    assert all(again[u] == arms[u] for u in again)  # sticky


def test_feedback_joins_the_logged_request(serve, rows):
    s = serve()
    x, y = rows
    r = s.client.post("/predict", json={"unit": "u", "rows": x[:4].tolist()}).json()
    fb = s.client.post("/feedback", json={"request_id": r["request_id"], "labels": y[:4].tolist()})
    assert fb.status_code == 200 and fb.json()["correct"] == int((np.array(r["predictions"]) == y[:4]).sum())
    again = s.client.post("/feedback", json={"request_id": r["request_id"], "labels": y[:4].tolist()})
    assert again.status_code == 409
    unknown = s.client.post("/feedback", json={"request_id": "nope-123", "label": 1})
    assert unknown.status_code == 404 and "nope-123" in unknown.json()["error"]
    short = s.client.post("/predict", json={"unit": "u", "features": x[0].tolist()}).json()
    wrong_count = s.client.post("/feedback", json={"request_id": short["request_id"], "labels": [0, 1]})
    assert wrong_count.status_code == 422 and "1 row" in wrong_count.json()["error"]
    metrics = s.client.get("/metrics").text
    assert 'perennial_serve_requests_total{arm="v1"} 2.0' in metrics
    assert "perennial_serve_feedback_total 1.0" in metrics and 'perennial_serve_accuracy{arm="v1"}' in metrics
    assert "perennial_serve_latency_seconds_bucket" in metrics


def _traffic(s: Running, rows, n: int, start: int = 0) -> list[dict]:
    x, y = rows
    out = []
    for i in range(start, start + n):
        r = s.client.post("/predict", json={"unit": f"user-{i}", "features": x[i % len(x)].tolist()}).json()
        fb = s.client.post("/feedback", json={"request_id": r["request_id"], "label": int(y[i % len(x)])})
        assert fb.status_code == 200, fb.text
        out.append(r | {"feedback": fb.json()})
    return out


def test_canary_rolls_back_on_live_feedback_and_the_log_agrees(serve, rows, registry):
    s = serve()
    settings = {"steps": [0.5, 1.0], "min_samples": 200, "salt": "c"}
    r = s.client.post(
        "/rollout", headers=ADMIN, json={"kind": "canary", "candidate": "v3", "settings": settings}
    )
    assert r.status_code == 200, r.text
    served = _traffic(s, rows, 400)
    status = s.client.get("/status").json()
    assert status["rollout"] is None and status["shares"] == {"v1": 1.0}  # rolled back, everyone on v1
    assert any(x["arm"] == "v3" for x in served)
    rolled_back_at = next(i for i, x in enumerate(served) if x["feedback"].get("rollout") == "reject")
    assert all(x["arm"] == "v1" for x in served[rolled_back_at + 1 :])
    with Registry(registry, create=False) as reg:
        assert reg.get("v3").status == "rejected" and reg.champion() == "v1"
    report = analyze(s.model_server.log.path)
    canary = report["rollouts"][0]
    assert canary["kind"] == "canary" and canary["outcome"] == "rejected"
    assert canary["status"] == "rolled_back" and canary["timeline"][-1]["event"] == "rollback"


def test_shadow_predicts_off_the_request_path(serve, rows):
    s = serve()
    r = s.client.post("/rollout", headers=ADMIN, json={"kind": "shadow", "candidate": "v2", "settings": {}})
    assert r.status_code == 200, r.text
    served = _traffic(s, rows, 40)
    assert {x["arm"] for x in served} == {"v1"}
    shadow = s.client.get("/status").json()["rollout"]
    assert shadow["kind"] == "shadow" and shadow["labelled"] == 40
    assert shadow["agreement"] > 0.8
    logged = s.model_server.log.request(served[0]["request_id"])
    assert list(logged["shadow"]) == ["v2"]
    assert analyze(s.model_server.log.path)["rollouts"][0]["labelled"] == 40


def test_hot_swaps_under_concurrent_requests_drop_nothing(serve, rows):
    s = serve()
    x = rows[0][:2].tolist()
    stop, failures, versions = threading.Event(), [], set()

    def hammer(worker: int) -> int:
        n = 0
        with httpx.Client(base_url=s.url, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/predict", json={"unit": f"w{worker}-{n}", "rows": x})
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    versions.add(r.json()["version"])
                n += 1
        return n

    with ThreadPoolExecutor(4) as pool:
        counts = [pool.submit(hammer, i) for i in range(4)]
        admin = []
        try:
            for _ in range(3):
                for path, body in (
                    ("/rollout", {"kind": "ab", "candidate": "v2", "settings": {"share": 0.5}}),
                    ("/promote", {"version": "v2", "override": True}),
                    ("/rollback", {"reason": "test"}),
                ):
                    admin.append(s.client.post(path, headers=ADMIN, json=body))
                    time.sleep(0.05)
        finally:
            stop.set()
        total = sum(c.result() for c in counts)
    assert [r.status_code for r in admin] == [200] * 9, [r.text for r in admin if r.status_code != 200]
    assert failures == [] and total > 50
    assert versions == {"v1", "v2"}
    assert s.client.get("/status").json()["swaps"] == 9


def test_admin_needs_the_token(serve):
    s = serve()
    body = {"version": "v2"}
    missing = s.client.post("/promote", json=body)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]
    wrong = s.client.post("/promote", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "wrong admin token" in wrong.json()["error"]
    unknown = s.client.post("/promote", json={"version": "v9"}, headers=ADMIN)
    assert unknown.status_code == 404 and "v9" in unknown.json()["error"]
    bad_kind = s.client.post("/rollout", json={"kind": "blue-green", "candidate": "v2"}, headers=ADMIN)
    assert bad_kind.status_code == 422 and "blue-green" in bad_kind.json()["error"]


def test_admin_is_disabled_without_a_token(serve, monkeypatch):
    monkeypatch.delenv("PERENNIAL_SERVE_TOKEN", raising=False)
    s = serve(token=None)
    r = s.client.post("/rollback", json={}, headers=ADMIN)
    assert r.status_code == 403 and "PERENNIAL_SERVE_TOKEN" in r.json()["error"]


GOOD = [0.0] * 6


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"unit": "u", "features": [0, 0', 400, "malformed JSON"),
        (b'{"unit": "u", "features": [NaN, 0, 0, 0, 0, 0]}', 422, "NaN"),
        (b'{"unit": "u", "features": [Infinity, 0, 0, 0, 0, 0]}', 422, "Infinity"),
        (b'{"unit": "u", "features": [1e999, 0, 0, 0, 0, 0]}', 422, "finite"),
        (b'{"unit": "u", "features": [1e39, 0, 0, 0, 0, 0]}', 422, "finite float32"),
        (json.dumps({"unit": "u", "features": [0.0] * 5}).encode(), 422, "takes 6"),
        (json.dumps({"unit": "u", "features": ["a", *GOOD[1:]]}).encode(), 422, "features.0"),
        (json.dumps({"unit": "u", "rows": [GOOD, GOOD[:3]]}).encode(), 422, "row 1 has 3"),
        (json.dumps({"features": GOOD}).encode(), 422, "unit"),
        (json.dumps({"unit": "u", "features": GOOD, "rows": [GOOD]}).encode(), 422, "exactly one"),
        (json.dumps([1, 2]).encode(), 422, "JSON object"),
        (json.dumps({"unit": "u", "features": GOOD, "extra": 1}).encode(), 422, "extra"),
        (json.dumps({"unit": "u", "rows": [GOOD] * 3000}).encode(), 413, "limit"),
    ],
)
def test_bad_input_is_refused_with_a_message(serve, body, status, words):
    s = serve(max_body_bytes=50_000)
    r = s.client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_bad_feedback_is_refused(serve):
    s = serve()
    for body, words in (
        ({"request_id": "x", "label": -1}, "greater than or equal to 0"),
        ({"request_id": "x", "label": 1.5}, "label"),
        ({"request_id": "x"}, "exactly one"),
    ):
        r = s.client.post("/feedback", json=body)
        assert r.status_code == 422 and words in r.json()["error"], r.text


def test_rank_interleaves_champion_and_candidate_and_clicks_decide(serve, rows):
    s = serve()
    x, y = rows
    plain = s.client.post("/rank", json={"unit": "u", "features": x[0].tolist(), "k": 2}).json()
    assert plain["teams"] == ["v1", "v1"] and sorted(plain["ranking"]) == [0, 1]
    r = s.client.post(
        "/rollout",
        headers=ADMIN,
        json={"kind": "interleave", "candidate": "v3", "settings": {"min_impressions": 40}},
    )
    assert r.status_code == 200, r.text
    heads, decision = set(), "continue"
    for i in range(300):
        shown = s.client.post("/rank", json={"unit": f"user-{i}", "features": x[i].tolist(), "k": 2}).json()
        assert sorted(shown["teams"]) == ["v1", "v3"] and shown["arm"] == shown["teams"][0]
        heads.add(shown["arm"])
        clicked = [shown["ranking"].index(int(y[i]))]  # the user clicks the true class
        fb = s.client.post("/feedback", json={"request_id": shown["request_id"], "clicks": clicked})
        assert fb.status_code == 200, fb.text
        decision = fb.json()["rollout"]
        if decision != "continue":
            break
    assert heads == {"v1", "v3"}  # a coin decides which model heads each list
    assert decision == "reject"  # v3 ranks the true class last, so v1 gets the clicks
    assert s.client.get("/status").json()["rollout"] is None  # decided: the rollout has ended
    replayed = analyze(s.model_server.log.path)["rollouts"][0]
    assert replayed["outcome"] == "rejected" and replayed["decision"] == "reject"
    assert replayed["wins_champion"] > 5 * replayed["wins_candidate"]
    with Registry(s.model_server.store.root, create=False, readonly=True) as registry:
        (record,) = registry.rollouts.all()
        assert record.evidence["wins_champion"] == replayed["wins_champion"]


def test_bad_rank_requests_and_clicks_are_refused(serve, rows):
    s = serve()
    x = rows[0][0].tolist()
    too_many = s.client.post("/rank", json={"unit": "u", "features": x, "k": 5})
    assert too_many.status_code == 422 and "ranks only 2 classes" in too_many.json()["error"]
    shown = s.client.post("/rank", json={"unit": "u", "features": x, "k": 2}).json()
    for clicks, words in (([2], "0..1"), ([0, 0], "distinct")):
        r = s.client.post("/feedback", json={"request_id": shown["request_id"], "clicks": clicks})
        assert r.status_code == 422 and words in r.json()["error"], r.text
    labels = s.client.post("/feedback", json={"request_id": shown["request_id"], "label": 1})
    assert labels.status_code == 422 and "send clicks" in labels.json()["error"]
    predicted = s.client.post("/predict", json={"unit": "u", "features": x}).json()
    clicks = s.client.post("/feedback", json={"request_id": predicted["request_id"], "clicks": [0]})
    assert clicks.status_code == 422 and "send labels" in clicks.json()["error"]
    both = s.client.post("/feedback", json={"request_id": "x", "label": 1, "clicks": [0]})
    assert both.status_code == 422 and "exactly one" in both.json()["error"]
    no_click = s.client.post("/feedback", json={"request_id": shown["request_id"], "clicks": []})
    assert no_click.status_code == 200 and no_click.json()["clicks"] == 0


def test_batched_serving_answers_concurrent_requests_as_one_at_a_time_does(serve, rows):
    s = serve(batching="on")
    x = rows[0][:64]
    alone = [s.model_server.store.load("v1").predict(row[None])[0].tolist() for row in x]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda i: s.client.post("/predict", json={"unit": f"u{i}", "features": x[i].tolist()}).json(),
                range(len(x)),
            )
        )
    assert [a["predictions"] for a in answers] == alone
    status = s.client.get("/status").json()
    assert status["batching"] is True and status["device"] == "cpu"
    metrics = s.client.get("/metrics").text
    passes = float(re.search(r"^perennial_serve_forward_passes_total (\S+)$", metrics, re.M).group(1))
    assert 1 <= passes <= len(x)
    with pytest.raises(ValueError, match=r"serve\.batching must be one of"):
        serve(batching="sometimes")
    with pytest.raises(ValueError, match=r"serve\.device must be cpu, cuda, cuda:N or auto, got 'tpu'"):
        serve(device="tpu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_after_kill_9_the_log_holds_every_acknowledged_request(registry, rows, tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "perennial.cli.serve", f"serve.registry={registry}", f"serve.port={port}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url, x = f"http://127.0.0.1:{port}", rows[0][:3].tolist()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                httpx.get(f"{url}/status", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        acked: list[str] = []
        lock = threading.Lock()

        def client(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=10) as c:
                for i in range(10_000):
                    try:
                        r = c.post("/predict", json={"unit": f"{worker}-{i}", "rows": x})
                    except httpx.TransportError:
                        return  # the server died under this request: not acknowledged
                    with lock:
                        acked.append(r.json()["request_id"])

        threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 300:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-traffic: requests are in flight
        for t in threads:
            t.join()
    finally:
        proc.kill()
        proc.wait()
    report = analyze(registry / "serve-log.sqlite")
    logged = sum(a["requests"] for a in report["arms"].values())
    import sqlite3

    with sqlite3.connect(registry / "serve-log.sqlite") as conn:
        ids = {row[0] for row in conn.execute("SELECT request_id FROM requests")}
    assert len(acked) >= 300 and set(acked) <= ids and logged == len(ids)

    out = subprocess.run(
        [sys.executable, "-m", "perennial.cli.serve", f"serve.registry={registry}", "serve.analyze=true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(out.stdout)["arms"]["v1"]["requests"] == len(ids)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ([], "serve.registry=PATH is required"),
        (["serve.registry=/nonexistent/registry"], "no registry at /nonexistent/registry"),
    ],
)
def test_cli_user_errors_exit_2_with_a_message(overrides, words, capsys):
    from hydra import compose, initialize_config_dir

    from perennial.cli.common import CONF_DIR, user_errors
    from perennial.cli.serve import serve as serve_cli

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="serve", overrides=overrides)
    with pytest.raises(SystemExit) as exited, user_errors("perennial-serve"):
        serve_cli(cfg)
    assert exited.value.code == 2 and words in capsys.readouterr().err


# ---- the request edge: bad requests are refused alone, unexpected errors are counted JSON -------------
SURROGATE_BODY = b'{"unit": "\\ud800", "features": [0, 0, 0, 0, 0, 0]}'


def test_invalid_text_is_refused_and_fails_no_one_else(serve, rows):
    s = serve()
    x = rows[0][:2].tolist()
    stop, failures, refused = threading.Event(), [], []

    def good(worker: int) -> int:
        n = 0
        with httpx.Client(base_url=s.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post("/predict", json={"unit": f"w{worker}-{n}", "rows": x})
                    if r.status_code != 200:
                        failures.append(r.text)
                except httpx.TransportError as err:  # a reset kept-alive connection
                    failures.append(repr(err))
                n += 1
        return n

    with ThreadPoolExecutor(3) as pool:
        counts = [pool.submit(good, i) for i in range(3)]
        try:
            with httpx.Client(base_url=s.url, timeout=30) as client:
                for _ in range(60):
                    r = client.post(
                        "/predict", content=SURROGATE_BODY, headers={"content-type": "application/json"}
                    )
                    refused.append((r.status_code, r.json()["error"]))
        finally:
            stop.set()
        total = sum(c.result() for c in counts)
    assert failures == [] and total > 20
    assert {code for code, _ in refused} == {422}
    assert "invalid text" in refused[0][1] and "surrogate" in refused[0][1]
    assert 'perennial_serve_errors_total{code="500"}' not in s.client.get("/metrics").text


def _raw_exchange(url: str, requests: list[bytes]) -> list[bytes]:
    """Each request sent on one TCP connection after the previous answer: a closed connection shows."""
    host, port = url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for request in requests:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"content-length: (\d+)", data.split(b"\r\n\r\n", 1)[0], re.I).group(1)
            ):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            answers.append(data)
    return answers


def test_an_unexpected_error_is_a_counted_json_500_and_the_connection_stays(serve, monkeypatch, caplog):
    s = serve()

    async def broken(unit, rows):
        raise RuntimeError("boom")

    monkeypatch.setattr(s.model_server, "predict", broken)
    body = json.dumps({"unit": "u", "features": GOOD}).encode()
    post = (
        b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    status = b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n"
    with caplog.at_level("ERROR", logger="perennial.serve"):
        failed, after = _raw_exchange(s.url, [post, status])
    head, payload = failed.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 500") and b"application/json" in head
    assert "RuntimeError" in json.loads(payload)["error"]
    assert after.startswith(b"HTTP/1.1 200")  # the same kept-alive connection answered again
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)  # with its traceback
    assert 'perennial_serve_errors_total{code="500"} 1.0' in s.client.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"unit": "u", "features": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"unit": 1' + b"0" * 5000 + b', "features": [0, 0, 0, 0, 0, 0]}', "too large"),
        (b'{"unit": "\xff", "features": [0, 0, 0, 0, 0, 0]}', "invalid text"),
        (
            json.dumps({"unit": "u", "features": [0] * 150_000}, separators=(",", ":")).encode(),
            "at most 6 items",
        ),
        (json.dumps({"unit": "u" * 600, "features": GOOD}).encode(), "at most 512 characters"),
        (json.dumps({"unit": "u", "rows": [GOOD, [0] * 7]}).encode(), "rows.1: List should have at most 6"),
    ],
)
def test_pathological_bodies_get_a_4xx_naming_the_problem(serve, body, words):
    s = serve()
    r = s.client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]


def test_a_label_outside_the_served_versions_classes_is_refused(serve, rows):
    s = serve()
    served = s.client.post("/predict", json={"unit": "u", "rows": rows[0][:2].tolist()}).json()
    for labels in ([0, 2], [2**63, 0]):
        r = s.client.post("/feedback", json={"request_id": served["request_id"], "labels": labels})
        assert r.status_code == 422, r.text
        assert (
            f"label {labels[0] or labels[1]}" in r.json()["error"]
            and "has 2 classes, 0..1" in r.json()["error"]
        )
    ok = s.client.post("/feedback", json={"request_id": served["request_id"], "labels": [0, 1]})
    assert ok.status_code == 200  # the refusals recorded nothing


def test_the_bearer_scheme_is_case_insensitive(serve):
    s = serve()
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = s.client.post("/rollout", json={"kind": "none"}, headers={"Authorization": f"{scheme} {TOKEN}"})
        assert r.status_code == 409 and "no rollout" in r.json()["error"], (scheme, r.text)  # authorized
    missing = s.client.post("/rollback", json={})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    basic = s.client.post("/rollback", json={}, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401


def test_metrics_are_typed_counters_and_a_latency_histogram_per_endpoint(serve, rows):
    from prometheus_client.parser import text_string_to_metric_families

    s = serve()
    other = serve()  # a second app in the same process: its own registry, its own counts
    x = rows[0][0].tolist()
    for _ in range(3):
        s.client.post("/predict", json={"unit": "u", "features": x})
    s.client.post("/rank", json={"unit": "u", "features": x, "k": 2})
    s.client.post("/predict", json={"unit": "u"})
    s.client.post("/rollout", headers=ADMIN, json={"kind": "ab", "candidate": "v2", "settings": {}})
    families = {f.name: f for f in text_string_to_metric_families(s.client.get("/metrics").text)}
    for name in ("swaps", "log_commits", "forward_passes", "batched_rows", "requests", "errors"):
        assert families[f"perennial_serve_{name}"].type == "counter", name
    assert families["perennial_serve_accuracy"].type == "gauge"
    latency = families["perennial_serve_latency_seconds"]
    counts = {s.labels["endpoint"]: s.value for s in latency.samples if s.name.endswith("_count")}
    assert counts["/predict"] == 4 and counts["/rank"] == 1 and counts["/rollout"] == 1
    assert "perennial_serve_swaps_total 1.0" in s.client.get("/metrics").text
    assert 'perennial_serve_requests_total{arm="v1"}' not in other.client.get("/metrics").text


def test_a_failing_shadow_is_counted_and_logged(serve, rows, monkeypatch, caplog):
    s = serve()
    r = s.client.post("/rollout", headers=ADMIN, json={"kind": "shadow", "candidate": "v2", "settings": {}})
    assert r.status_code == 200, r.text

    def broken(x):
        raise RuntimeError("shadow boom")

    monkeypatch.setattr(s.model_server.deployment.candidate.module, "forward", broken)
    with caplog.at_level("ERROR", logger="perennial.serve"):
        answer = s.client.post("/predict", json={"unit": "u", "features": rows[0][0].tolist()})
        assert answer.status_code == 200  # the request itself never waits for or fails with its shadow
        s.model_server.shadow.wait(answer.json()["request_id"])
    assert "perennial_serve_shadow_errors_total 1.0" in s.client.get("/metrics").text
    assert any(r.exc_info and "shadow boom" in str(r.exc_info[1]) for r in caplog.records)


def test_every_serve_setting_is_settable_from_conf_serve_yaml(tmp_path):
    """Each ServeSettings field has a key in conf/serve.yaml and reaches the server's settings."""
    from dataclasses import MISSING, fields

    from hydra import compose, initialize_config_dir

    from perennial.cli.common import CONF_DIR
    from perennial.cli.serve import settings as serve_settings

    chosen = {}
    for f in fields(ServeSettings):
        if f.name == "fallback":  # built from the data/model groups, not a key
            continue
        default = None if f.default is MISSING else f.default
        if f.name == "registry":
            chosen[f.name] = str(tmp_path)
        elif isinstance(default, bool) or default is None or isinstance(default, str):
            chosen[f.name] = f"set-{f.name}"
        else:
            chosen[f.name] = type(default)(default + 3)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        base = compose(config_name="serve")
        missing = [name for name in chosen if name not in base.serve]
        assert missing == [], f"ServeSettings fields missing from conf/serve.yaml: {missing}"
        cfg = compose(config_name="serve", overrides=[f"serve.{k}={v}" for k, v in chosen.items()])
    built = serve_settings(cfg)
    for name, value in chosen.items():
        got = getattr(built, name)
        assert (str(got) if name in ("registry", "log") else got) == value, name
    assert built.fallback is not None
