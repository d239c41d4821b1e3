"""perennial-demo, the closed loop on one machine: its traffic counts every failure a client would
see, the processes it starts are gone when it ends, and a short real run serves, canaries and
decides with no failed request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from perennial.demo import ClosedLoop, DemoSettings, Processes, TrafficPlayer
from perennial.serve.app import ServeSettings, create_app
from perennial.serve.log import RequestLog

from .serve.stored import raw_rows, table_registry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def request_json(request: httpx.Request) -> dict:
    return json.loads(request.content)


def test_traffic_player_counts_every_failure_a_client_sees():
    """A 500, a dropped connection and a refused feedback are each one failure; the rest are answered,
    judged against their label, and each label goes out no sooner than the feedback delay."""
    answered_at: dict[str, float] = {}
    feedback_at: dict[str, float] = {}

    def server(request: httpx.Request) -> httpx.Response:
        body = request.read().decode()
        if request.url.path == "/predict":
            unit = int(request_json(request)["unit"].split("-")[1])
            if unit == 3:
                return httpx.Response(500, json={"error": "internal error"})
            if unit == 5:
                raise httpx.ConnectError("connection refused", request=request)
            rid = f"r{unit}"
            answered_at[rid] = time.monotonic()
            return httpx.Response(
                200, json={"request_id": rid, "arm": "v1", "version": "v1", "predictions": [unit % 2]}
            )
        rid = request_json(request)["request_id"]
        feedback_at[rid] = time.monotonic()
        if rid == "r7":
            return httpx.Response(409, json={"error": "feedback already given"})
        assert '"label"' in body
        return httpx.Response(
            200, json={"request_id": rid, "arm": "v1", "correct": True, "rollout": "continue"}
        )

    n = 10
    player = TrafficPlayer(
        "http://demo",
        [{"x": float(i)} for i in range(n)],
        [1] * n,
        [f"client-{i}" for i in range(n)],
        seconds_per_row=0.01,
        feedback_delay=0.2,
        transport=httpx.MockTransport(server),
    )
    records = player.run()
    assert player.failures() == {"predict": 2, "feedback": 1}
    assert [r.index for r in records if r.failed] == [3, 5]
    assert records[3].status == 500 and records[5].status is None and "ConnectError" in records[5].error
    assert records[7].feedback_status == 409 and records[7].feedback_failed
    assert [r.correct for r in records if r.answered] == [i % 2 == 1 for i in (0, 1, 2, 4, 6, 7, 8, 9)]
    assert all(feedback_at[rid] - answered_at[rid] >= 0.19 for rid in feedback_at)
    assert all(r.sent >= r.due - 1e-3 for r in records)


def test_traffic_player_against_the_server_logs_every_request_and_label(tmp_path):
    """Raw named rows played against the real app: none fails, and the server's log holds every
    answered request with the label the player sent for it."""
    root, csv, stream, _ = table_registry(tmp_path)
    rows = raw_rows(csv, stream)[:40]
    app = create_app(ServeSettings(registry=root, follow=False))
    player = TrafficPlayer(
        "http://serve",
        rows,
        [i % 2 for i in range(len(rows))],
        [f"client-{i % 7}" for i in range(len(rows))],
        seconds_per_row=0.005,
        feedback_delay=0.05,
        concurrency=3,
        transport=httpx.ASGITransport(app=app),
    )
    try:
        records = player.run()
    finally:
        app.state.server.close()
    assert player.failures() == {"predict": 0, "feedback": 0}, player.first_errors()
    assert all(r.answered and r.feedback_status == 200 and r.version == "v1" for r in records)
    log = RequestLog(root / "serve-log.sqlite")
    try:
        assert log.feedback_count() == len(rows)
        for r in records:
            assert log.request(r.request_id)["unit"] == r.unit
    finally:
        log.close()


def test_stopping_a_process_stops_its_whole_group(tmp_path):
    """A child that ignores SIGTERM and has a grandchild: both are gone after stop (SIGKILL after the
    timeout), and a Processes block left by an exception stops what it started."""
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(RuntimeError, match="boom"), Processes(stop_timeout=1.0) as procs:
        parent = procs.start("stubborn", [sys.executable, str(script)], tmp_path / "stubborn.log")
        parent.wait_ready(lambda: len(parent.log.read_text().splitlines()) > 1, timeout=30)
        grandchild = int(parent.log.read_text().splitlines()[1])
        assert _alive(grandchild)
        raise RuntimeError("boom")
    assert parent.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


@pytest.mark.slow
def test_closed_loop_end_to_end(tmp_path):
    """Five played years at 8 s a year: no request fails, a candidate of the loop enters the canary
    on the server and is decided, the outputs are written and no process is left."""
    settings = DemoSettings(years=5, seconds_per_year=8.0, label_deadline=3.0, settle=1.0, loop_poll=1.0)
    lines: list[str] = []
    demo = ClosedLoop(tmp_path / "demo", settings, say=lines.append)
    with demo:
        demo.prepare()
        demo.start_server()
        demo.start_loop()
        demo.play()
        demo.drain()
        assert demo.stop_loop() == 0, demo.loop.tail()
    pids = [p.pid for p in demo.processes.started]
    paths = demo.write_outputs()
    summary = demo.summary()
    assert not [pid for pid in pids if _alive(pid)]
    assert summary["requests"] == 5 * 365 and summary["failed"] == 0, summary["first_errors"]
    assert paths["plot"].stat().st_size > 0 and paths["summary"].is_file()
    assert summary["canaries"], "\n".join(lines)
    assert summary["decided"] >= 1, "\n".join(lines)
    decided = [c for c in summary["canaries"] if c["outcome"]]
    assert decided[0]["outcome"] in ("promoted", "rolled back")
    assert any("enters the canary" in line for line in lines)


def test_cli_stops_everything_on_sigterm(tmp_path):
    """SIGTERM to perennial-demo while it trains v1: it stops its child and exits with 130."""
    out = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "perennial.cli.demo", "--out", str(out), "--years", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = out / "logs" / "bootstrap.log"
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert log.exists(), demo.stdout.read() if demo.poll() is not None else "no bootstrap started"
    time.sleep(0.5)
    demo.send_signal(signal.SIGTERM)
    output, _ = demo.communicate(timeout=60)
    assert demo.returncode == 130, output
    assert "interrupted" in output
    assert not _alive_children_named(str(out))


def _alive_children_named(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the demo's out directory): its children."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found
