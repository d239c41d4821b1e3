"""perennial-serve as real processes on one registry: a server killed with kill -9 mid-traffic loses no
acknowledged request and its successor continues the live rollout from the registry; two servers
follow a promotion by hand and share one rollout's feedback, each recorded once."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from perennial.registry import Registry
from tests.closed_loop_helpers import CANARY, make_registry, rollout_state, rows

BIN = Path(sys.executable).parent
STARTUP_S = 90  # a cold torch import on a busy machine
FOLLOW_S = 60  # many polls of serve.poll_s=0.2: a bound on a hang, not a speed requirement


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A ``perennial-serve`` process on a free loopback port, its output in a file."""

    def __init__(self, root: Path, log: Path, out: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = out
        command = [
            str(BIN / "perennial-serve"),
            f"serve.registry={root}",
            f"serve.port={self.port}",
            f"serve.log={log}",
            "serve.poll_s=0.2",
        ]
        with open(out, "ab") as sink:
            self.proc = subprocess.Popen(
                command,
                cwd=out.parent,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert self.proc.poll() is None, f"perennial-serve exited:\n{out.read_text()}"
            try:
                httpx.get(f"{self.url}/status", timeout=2)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"perennial-serve did not answer:\n{out.read_text()}"
                time.sleep(0.2)

    def status(self) -> dict:
        return httpx.get(f"{self.url}/status", timeout=10).json()

    def wait_for(self, what: str, ready) -> dict:
        """This server's /status once ``ready(status)`` holds; fails naming ``what`` if it never does."""
        deadline = time.monotonic() + FOLLOW_S
        while not ready(status := self.status()):
            assert time.monotonic() < deadline, (
                f"port {self.port}: {what} did not happen within {FOLLOW_S} s; its /status: {status}"
            )
            time.sleep(0.1)
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def started(tmp_path):
    running: list[Server] = []

    def start(root: Path, log: Path) -> Server:
        running.append(Server(root, log, tmp_path / f"serve-{len(running)}.out"))
        return running[-1]

    yield start
    for server in running:
        server.kill()


def _labelled(log: Path, rollout_id: int) -> int:
    """Labelled rows of the rollout's requests in the log."""
    with sqlite3.connect(log) as conn:
        return conn.execute(
            "SELECT count(*) FROM feedback f JOIN requests r ON r.request_id = f.request_id"
            " WHERE r.rollout = ?",
            (rollout_id,),
        ).fetchone()[0]


def _ids(log: Path, table: str) -> set[str]:
    with sqlite3.connect(log) as conn:
        return {row[0] for row in conn.execute(f"SELECT request_id FROM {table}")}


@pytest.mark.slow
def test_kill_9_mid_traffic_loses_no_acknowledged_request_and_the_rollout_goes_on(tmp_path, started):
    root, log = make_registry(tmp_path / "registry"), tmp_path / "serve-log.sqlite"
    with Registry(root, create=False) as registry:
        rollout_id = registry.rollouts.request("canary", "v1", "v2", {**CANARY, "min_samples": 10**6}).id
    first = started(root, log)
    first.wait_for("starting the registry's rollout", lambda s: (s["rollout"] or {}).get("id") == rollout_id)

    x = rows(8)
    acked: dict[str, list[str]] = {"requests": [], "feedback": []}
    lock = threading.Lock()

    def client(worker: int) -> None:
        with httpx.Client(base_url=first.url, timeout=10) as c:
            for i in range(100_000):
                try:
                    answer = c.post("/predict", json={"unit": f"{worker}-{i}", "features": x[i % 8]})
                    assert answer.status_code == 200, answer.text
                    served = answer.json()
                    with lock:
                        acked["requests"].append(served["request_id"])
                    body = {"request_id": served["request_id"], "label": served["predictions"][0]}
                    feedback = c.post("/feedback", json=body)
                    assert feedback.status_code == 200, feedback.text
                    with lock:
                        acked["feedback"].append(body["request_id"])
                except httpx.TransportError:
                    return  # the server died under this request: not acknowledged

    threads = [threading.Thread(target=client, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + FOLLOW_S
    while len(acked["feedback"]) < 150:
        assert all(t.is_alive() for t in threads), "a client stopped before the kill"
        assert time.monotonic() < deadline, f"only {len(acked['feedback'])} feedbacks acknowledged"
        time.sleep(0.02)
    counted_before = first.status()["rollout"]["units"]
    first.kill()  # mid-traffic: requests and feedback are in flight
    for t in threads:
        t.join(30)
        assert not t.is_alive()

    assert set(acked["requests"]) <= _ids(log, "requests")  # every 200 was committed first
    assert set(acked["feedback"]) <= _ids(log, "feedback")
    in_log = _labelled(log, rollout_id)
    saved = rollout_state(root)
    assert saved["status"] == "running" and counted_before <= saved["summary"]["units"] <= in_log

    second = started(root, log)  # same registry, same log
    status = second.wait_for(
        "recording the feedback logged before the kill",
        lambda s: (s["rollout"] or {}).get("units") == in_log,
    )
    assert status["rollout"]["id"] == rollout_id and status["champion"] == "v1"
    assert rollout_state(root)["summary"]["units"] == in_log  # each labelled row once, none lost
    time.sleep(1.0)  # several more polls: nothing is recorded twice
    assert second.status()["rollout"]["units"] == in_log == rollout_state(root)["summary"]["units"]


@pytest.mark.slow
def test_two_server_processes_follow_a_promotion_and_share_a_rollout(tmp_path, started):
    root, log = make_registry(tmp_path / "registry"), tmp_path / "serve-log.sqlite"
    servers = [started(root, log), started(root, log)]
    assert [s.status()["champion"] for s in servers] == ["v1", "v1"]

    promoted = subprocess.run(
        [str(BIN / "perennial-registry"), str(root), "promote", "v2"], capture_output=True, text=True
    )
    assert promoted.returncode == 0, promoted.stderr
    for server in servers:
        status = server.wait_for("following the promotion of v2", lambda s: s["champion"] == "v2")
        assert status["registry_champion"] == "v2" and status["follow"]["note"] is None
        answer = httpx.post(f"{server.url}/predict", json={"unit": "u", "features": rows(1)[0]}).json()
        assert answer["version"] == "v2"

    # A rollout the loop asks for: both start it, and feedback through either is recorded once.
    with Registry(root, create=False) as registry:
        rollout_id = registry.rollouts.request("canary", "v2", "v3", {**CANARY, "min_samples": 10**6}).id
    for server in servers:
        server.wait_for("starting the rollout", lambda s: (s["rollout"] or {}).get("id") == rollout_id)
    x = rows(40)
    for i in range(40):
        predict_on, feedback_on = servers[i % 2], servers[(i // 2) % 2]
        answer = httpx.post(f"{predict_on.url}/predict", json={"unit": f"user-{i}", "features": x[i]}).json()
        body = {"request_id": answer["request_id"], "label": answer["predictions"][0]}
        assert httpx.post(f"{feedback_on.url}/feedback", json=body).status_code == 200
    assert rollout_state(root)["summary"]["units"] == 40 == _labelled(log, rollout_id)
    for server in servers:
        server.wait_for("catching up with the other's feedback", lambda s: s["rollout"]["units"] == 40)
