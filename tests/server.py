"""Run ``xenon-elixir serve`` as a real process on a free loopback port, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Server:
    """A ``python -m xenon_elixir serve`` child process; its output goes to ``log``."""

    def __init__(self, db: str, log: Path, overrides: dict[str, object] | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log = log
        self._output = log.open("ab")
        command = [sys.executable, "-m", "xenon_elixir", "serve", "--db", db, "--port", str(self.port)]
        if overrides:  # settings without an environment variable: run uvicorn on create_app(**overrides)
            code = (
                "import sys, uvicorn, xenon_elixir as xe; "
                f"uvicorn.run(xe.create_app(db=sys.argv[1], **{overrides!r}), host='127.0.0.1', port={self.port})"
            )
            command = [sys.executable, "-c", code, db]
        self.process = subprocess.Popen(
            command,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                httpx.get(f"{self.url}/api/v1/100000000000000000/queue", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as a process manager would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._output.close()
        return self.process.returncode
