"""The demo's child processes (the server, the loop, one-off commands), each in a process group of its
own, so that stopping it stops everything it started, and a registry of them that stops them all.

>>> import sys
>>> with Processes() as procs:
...     child = procs.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
...     child.alive
True
>>> child.alive, child.returncode is not None
(False, True)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ProcessFailed(RuntimeError):
    """A child that exited when it should not have, or with a failing status; names its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it; a race with another program is possible,
    and then the server's start fails with a message naming the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ManagedProcess:
    """One child process in its own session (process group), its output in ``log``.

    ``stop`` sends SIGTERM to the whole group and SIGKILL after ``timeout`` seconds; ``kill`` sends
    SIGKILL at once (a crash, as a benchmark wants). Ctrl-C in the terminal reaches only the demo,
    which then stops its children in order, instead of all of them at once."""

    def __init__(
        self,
        name: str,
        command: Sequence[str | os.PathLike],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = [str(c) for c in command]
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(self.command)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,  # its own process group: signals reach its children too
            )
        self.pid = self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 20) -> str:
        """The last lines of its output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def failed(self, what: str) -> ProcessFailed:
        return ProcessFailed(
            f"{self.name} {what} (exit status {self.returncode}); the end of {self.log}:\n{self.tail()}"
        )

    def wait_ready(self, ready: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
        """Wait until ``ready()`` is true; the seconds it took. Raises ProcessFailed if the process
        exits first or ``timeout`` passes."""
        start = time.monotonic()
        while True:
            if not self.alive:
                raise self.failed("exited before it was ready")
            with contextlib.suppress(Exception):  # not listening yet, a half-written file: not ready
                if ready():
                    return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise self.failed(f"was not ready after {timeout:.0f} s")
            time.sleep(interval)

    def wait(self, timeout: float | None = None, check: bool = True) -> int:
        """Wait for it to exit; its status. ``check``: a non-zero status raises ProcessFailed. On
        timeout the process is stopped and ProcessFailed raised."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise self.failed(f"did not finish within {timeout:.0f} s and was stopped") from None
        if check and code != 0:
            raise self.failed("failed")
        return code

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)  # the group id is the child's pid (start_new_session)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to its group, then SIGKILL if it has not exited after ``timeout`` seconds; its
        status. The group is killed in any case, so no grandchild outlives it."""
        if not self.alive:
            # Never signalled once reaped long ago: its process group id may belong to someone else now.
            return self.popen.poll()
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.popen.wait()
        # Whatever of its group is left (a worker it forked): the id stays the group's while any
        # member lives, so this reaches only what this process started.
        self._signal_group(signal.SIGKILL)
        return self.popen.poll()

    def kill(self) -> int | None:
        """SIGKILL to its group now, as a crash would; its status."""
        if self.alive:
            self._signal_group(signal.SIGKILL)
        return self.popen.wait()


class Processes:
    """Every child the demo started; ``stop_all`` (and leaving the ``with`` block, however it is
    left) stops those still running, the newest first."""

    def __init__(self, stop_timeout: float = 30.0) -> None:
        self.stop_timeout = stop_timeout
        self.started: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        command: Sequence[str | os.PathLike],
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        if log is None:
            log = Path(os.devnull)
        process = ManagedProcess(name, command, log, env=env, cwd=cwd)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop(self.stop_timeout)

    def alive(self) -> list[ManagedProcess]:
        return [p for p in self.started if p.alive]

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
