"""Run ``xenon-elixir serve`` as a real process on a free loopback port, for tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from services import free_port


def cli(db: str, *argv: str) -> str:
    """Run ``xenon-elixir ARGV --db DB`` as an operator would; its output, or an error with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", *argv, "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def spawn(command: list[str], port: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a server process (any way of running the app) and wait until /health answers."""
    output = log.open("ab")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **env})
    output.close()  # the child holds its own copy
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"the server did not start:\n{log.read_text()}") from None
            time.sleep(0.05)


class Server:
    """A ``python -m xenon_elixir serve`` child process; its output goes to ``log``."""

    def __init__(
        self,
        db: str,
        log: Path,
        overrides: dict[str, object] | None = None,
        *,
        memory_report: Path | None = None,
        **env: str,
    ) -> None:
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
        self.memory_report = memory_report
        if (
            memory_report is not None
        ):  # tests/mem_probe.py: the same serve, under tracemalloc, answering SIGUSR1
            probe = Path(__file__).with_name("mem_probe.py")
            command = [sys.executable, "-X", "tracemalloc=1", str(probe), *command[3:]]
            env["XE_MEM_REPORT"] = str(memory_report)
        self.process = subprocess.Popen(
            command,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        self._wait_ready(60.0 if memory_report is not None else 20.0)  # tracemalloc slows the imports

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

    def memory(
        self, settled: Callable[[dict[str, Any]], bool] = lambda figures: True, timeout: float = 20.0
    ) -> dict[str, Any]:
        """The server's memory figures (see tests/mem_probe.py), asked for again every 0.25 s until
        ``settled`` accepts them or ``timeout`` runs out (then the last ones)."""
        assert self.memory_report is not None, "start the server with memory_report="
        deadline = time.monotonic() + timeout
        while True:
            self.memory_report.unlink(missing_ok=True)
            self.process.send_signal(signal.SIGUSR1)
            while not self.memory_report.exists():
                if time.monotonic() > deadline + 30:
                    raise AssertionError("the server wrote no memory report")
                time.sleep(0.02)
            figures = json.loads(self.memory_report.read_text())
            if settled(figures) or time.monotonic() > deadline:
                return figures
            time.sleep(0.25)

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
