"""Each endpoint's body limit: worked out from what a valid request can hold (rows x the served model's
features x serve.body_number_bytes + overhead, at most serve.max_body_bytes), refused with 413 on the
declared length before the body is read (or once a streamed body passes it), never parsed; never
refusing a valid request however it is formatted; following a swap to a model with more features."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import uvicorn
from omegaconf import OmegaConf

import perennial.serve.edge as edge
from perennial.cli.common import stream_and_builder
from perennial.registry import Registry, VersionRecord
from perennial.serve import ServeSettings, create_app
from perennial.serve.edge import REST_BYTES, ROW_BYTES, BodyLimits

from .stored import pipeline_extra

TOKEN = "t"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
NARROW, WIDE = 6, 60  # v1's features, v2's
LONGEST = -2.2250738585072014e-308  # one of the longest float64 reprs: 24 characters
UNIT = "\U0001f600" * edge.MAX_UNIT_CHARS  # 12 bytes a character as JSON escapes (ensure_ascii)


def config(n_features: int) -> dict:
    return {
        "data": {
            "_target_": "perennial.data.SyntheticStream",
            "kind": "none",
            "n_samples": 200,
            "window": 100,
            "n_features": n_features,
            "seed": 0,
        },
        "model": {"_target_": "perennial.learn.MLP", "_partial_": True, "hidden": [8]},
    }


@pytest.fixture(scope="module")
def base_registry(tmp_path_factory) -> Path:
    """v1 (champion) over NARROW features and v2 over WIDE: untrained but sound MLPs."""
    root = tmp_path_factory.mktemp("limits") / "registry"
    with Registry(root) as reg:
        for n in (NARROW, WIDE):
            stream, build = stream_and_builder(OmegaConf.create(config(n)))
            torch.manual_seed(n)
            reg.add(
                VersionRecord(reg.next_id("stateless", None), None, "stateless", config=config(n)),
                build().state_dict(),
                pipeline_extra(stream),
            )
        reg.promote("v1", reason="test")
    return root


@pytest.fixture
def registry(base_registry, tmp_path) -> Path:
    """A copy per test: a test may promote v2."""
    root = tmp_path / "registry"
    shutil.copytree(base_registry, root)
    return root


class Running:
    """A uvicorn server in a thread on a free loopback port (real HTTP: bodies arrive in pieces)."""

    def __init__(self, settings: ServeSettings) -> None:
        import httpx

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
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def serve(registry, tmp_path):
    running = []

    def start(**kw):
        log = tmp_path / f"log{len(running)}.sqlite"
        running.append(Running(ServeSettings(registry=registry, log=log, token=TOKEN, follow=False, **kw)))
        return running[-1]

    yield start
    for r in running:
        r.stop()


@pytest.fixture
def parses(monkeypatch) -> list[int]:
    """The sizes of the bodies handed to pydantic: a refused body must never get there."""
    sizes: list[int] = []
    real = edge.validate_json

    def spy(schema, body):
        sizes.append(len(body))
        return real(schema, body)

    monkeypatch.setattr(edge, "validate_json", spy)
    return sizes


def answer(sock: socket.socket) -> tuple[int, dict]:
    """One HTTP answer read off ``sock``: its status and JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, payload = data.split(b"\r\n\r\n", 1)
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(payload) < length:
        payload += sock.recv(65536)
    return int(head.split()[1]), json.loads(payload)


def limits(**kw) -> BodyLimits:
    return BodyLimits.of(ServeSettings(registry=".", **kw))


# ---- the rule ---------------------------------------------------------------------------------------
def test_the_limit_is_what_a_valid_body_can_hold_within_max_body_bytes():
    rule = limits()
    assert rule.predict(10).bytes == 1024 * (10 * 48 + ROW_BYTES) + REST_BYTES
    assert rule.rank(10).bytes == 10 * 48 + ROW_BYTES + REST_BYTES
    assert rule.feedback().bytes == 1024 * 48 + ROW_BYTES + REST_BYTES
    assert "serve.max_rows=1024 rows x (10 features" in rule.predict(10).rule
    assert rule.predict(10_000).bytes == 1 << 20  # more than the ceiling: the ceiling
    assert rule.predict(10_000).rule.startswith("serve.max_body_bytes, the ceiling: a valid /predict body")
    assert limits(body_number_bytes=64).predict(10).bytes > rule.predict(10).bytes
    with pytest.raises(ValueError, match=r"serve\.body_number_bytes must be an integer >= 1"):
        limits(body_number_bytes=0)
    with pytest.raises(ValueError, match=r"serve\.body_number_bytes"):  # refused before a server starts
        create_app(ServeSettings(registry="/nonexistent", body_number_bytes=-1))


@pytest.mark.parametrize("indent", [None, 0, 2, 4, "\t"])
def test_ordinary_json_of_a_maximal_request_fits_its_limit(indent):
    """json.dumps of the longest float64 reprs and the longest unit as escapes, compact or pretty."""
    rule = limits()
    n = 10
    predict = {"unit": UNIT, "rows": [[LONGEST] * n] * 1024}
    rank = {"unit": UNIT, "features": [LONGEST] * n, "k": 1000}
    labels = {"request_id": "f" * 64, "labels": [2**63 - 1] * 1024}
    clicks = {"request_id": "f" * 64, "clicks": [2**63 - 1] * 1000}
    for body, limit in (
        (predict, rule.predict(n)),
        (rank, rule.rank(n)),
        (labels, rule.feedback()),
        (clicks, rule.feedback()),
    ):
        assert len(json.dumps(body, indent=indent).encode()) <= limit.bytes, (list(body), indent)


# ---- over HTTP ----------------------------------------------------------------------------------------
def test_an_oversized_declared_length_is_refused_before_the_body_is_read(serve, parses):
    s = serve()
    limit = BodyLimits.of(s.app.state.server.settings).predict(NARROW)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        # Only the head: a server that waited for the body would never answer (the socket times out).
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (limit.bytes + 1)
        )
        status, body = answer(sock)
    assert status == 413, body
    error = body["error"]
    assert f"{limit.bytes + 1:,} bytes is over the limit of {limit.bytes:,} bytes" in error
    assert f"serve.max_rows=1024 rows x ({NARROW} features of the served model x 48 bytes" in error
    assert parses == []
    assert 'perennial_serve_errors_total{code="413"} 1.0' in s.client.get("/metrics").text


def test_a_streamed_body_is_refused_once_past_the_limit(serve, parses):
    """Chunked, no Content-Length: refused once the bytes read pass the limit, before the body ends."""
    s = serve()
    limit = BodyLimits.of(s.app.state.server.settings).rank(NARROW).bytes
    piece = b"0," * 8192
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(
            b"POST /rank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        sock.sendall(b'20\r\n{"unit": "u", "features": [0,0,0\r\n')
        for _ in range(limit // len(piece) + 1):  # just past the limit, and the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, body = answer(sock)
    assert status == 413, body
    assert f"request body is over the limit of {limit:,} bytes" in body["error"]
    assert "features of the served model" in body["error"]
    assert parses == []


def test_valid_maximal_requests_pretty_printed_are_accepted(serve, parses):
    s = serve()
    headers = {"content-type": "application/json"}
    rows = [[LONGEST] * NARROW] * 1024
    body = json.dumps({"unit": UNIT, "rows": rows}, indent=2).encode()
    r = s.client.post("/predict", content=body, headers=headers)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["predictions"]) == 1024
    labels = {"request_id": r.json()["request_id"], "labels": [0] * 1024}
    r = s.client.post("/feedback", content=json.dumps(labels, indent=4).encode(), headers=headers)
    assert r.status_code == 200, r.text[:300]
    rank = {"unit": UNIT, "features": [LONGEST] * NARROW, "k": 2}
    r = s.client.post("/rank", content=json.dumps(rank, indent=4).encode(), headers=headers)
    assert r.status_code == 200, r.text[:300]
    assert parses[0] == len(body)


def test_the_limit_follows_a_swap_to_a_wider_model(serve, parses):
    s = serve(max_rows=200)
    body = json.dumps({"unit": "u", "rows": [[0.123456789] * WIDE] * 200}).encode()
    narrow = BodyLimits.of(s.app.state.server.settings).predict(NARROW).bytes
    assert len(body) > narrow  # too big for v1's rows: it cannot be valid while v1 serves
    headers = {"content-type": "application/json"}
    r = s.client.post("/predict", content=body, headers=headers)
    assert r.status_code == 413 and f"{NARROW} features" in r.json()["error"]
    assert parses == []
    r = s.client.post("/promote", json={"version": "v2", "override": True}, headers=ADMIN)
    assert r.status_code == 200, r.text
    r = s.client.post("/predict", content=body, headers=headers)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["version"] == "v2" and len(r.json()["predictions"]) == 200


def test_a_low_max_body_bytes_is_the_ceiling_and_says_so(serve):
    s = serve(max_body_bytes=20_000)
    r = s.client.post("/predict", json={"unit": "u", "rows": [[0.5] * NARROW] * 1000})
    assert r.status_code == 413
    assert "over the limit of 20,000 bytes (serve.max_body_bytes, the ceiling" in r.json()["error"]


def test_a_long_row_within_the_limit_is_still_refused_while_parsing(serve, parses):
    s = serve()
    headers = {"content-type": "application/json"}
    limit = BodyLimits.of(s.app.state.server.settings).predict(NARROW).bytes
    for n, status, words in ((150_000, 422, f"at most {NARROW} items"), (500_000, 413, "over the limit")):
        body = json.dumps({"unit": "u", "features": [0] * n}, separators=(",", ":")).encode()
        assert (len(body) > limit) == (status == 413)
        r = s.client.post("/predict", content=body, headers=headers)
        assert r.status_code == status and words in r.json()["error"], r.text
    assert parses == [len(json.dumps({"unit": "u", "features": [0] * 150_000}, separators=(",", ":")))]
