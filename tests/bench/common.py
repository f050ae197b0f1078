"""Shared pieces of the benchmarks: a uvicorn server on a free loopback port, and a seeded database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

import xenon_elixir as xe

sys.path.insert(0, str(Path(__file__).parent.parent))  # tests/: the helpers the test suites use
from server import free_port, rss_kib

GUILD = "766045633697021973"
VOICE = "766045633697021978"
USER = "460177285954142208"
SOURCE = "410488579140354049"
TARGET = "496683369665658880"
CHECKOUT = str(Path(__file__).parent.parent.parent)
"""The checkout these benchmarks belong to: its xenon_elixir.py is the one they serve and seed with."""
UVICORN = [
    "--http",
    "httptools",
    "--loop",
    "uvloop",
    "--workers",
    "1",
    "--log-level",
    "warning",
    "--no-access-log",
]


class Uvicorn:
    """``uvicorn APP`` in a child process with the benchmark settings."""

    def __init__(
        self,
        app: str,
        *,
        app_dir: str | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The checkout's own module by default, as the benchmark imports it: uvicorn's default
        # (the working directory, else the venv's install) may be another checkout's, whose answer
        # to a database this one made is not this one's.
        command = [sys.executable, "-m", "uvicorn", app, "--port", str(self.port), *UVICORN]
        command += ["--app-dir", app_dir or CHECKOUT]
        output = None if log is None else log.open("w")
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                httpx.get(self.url + "/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()  # not left running (and holding its database) after a benchmark gave up on it
        raise RuntimeError(f"{app} did not start (exit status {self.process.returncode})")

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)


def seed(db: str, *, tracks: int = 2000, mapper_ids: int = 200, app_dir: str | None = None) -> dict[str, str]:
    """A guild with a key, a catalog of ``tracks`` tracks, a bot, a mapper of ``mapper_ids`` ids,
    and a track playing: what the benchmarked routes need. Seeded by the xenon_elixir of
    ``app_dir`` when given (another version's database must be that version's)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); import common; "
        "print(json.dumps(common._seed(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))"
    )
    here = str(Path(__file__).parent)
    argv = [
        sys.executable,
        "-c",
        code,
        app_dir or CHECKOUT,
        here,
        db,
        str(tracks),
        str(mapper_ids),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _seed(db: str, tracks: int, mapper_ids: int) -> dict[str, str]:
    async def run() -> dict[str, str]:
        async with xe.Host.open(xe.Config(db=db)) as host:
            await host.put_guild(GUILD, "Bench", [VOICE])
            words = ["night", "drive", "blue", "summer", "rain", "city", "heart", "fire", "dream", "ocean"]
            await host.import_catalog(
                [
                    {
                        "source": "youtube",
                        "identifier": f"bench{i:06d}",
                        "title": f"{words[i % 10]} {words[i // 10 % 10]} song {i}",
                        "author": f"Artist {i % 97}",
                        "length": 180_000 + i,
                        "uri": f"https://www.youtube.com/watch?v=bench{i:06d}",
                    }
                    for i in range(tracks)
                ]
            )
            key = await host.create_key(GUILD, USER, rotate=True)
            token = await host.grant_bot("386861188891279362", "Bench")
            # this version's host API, or an older one's (benchmarks compare versions)
            merge = getattr(host, "merge_ids", None) or host.store.merge_ids
            get_track = getattr(host, "get_track", None) or host.store.get_track
            join = getattr(host, "join", None) or host.players.join
            enqueue = getattr(host, "enqueue", None) or host.players.enqueue
            await merge(
                SOURCE,
                TARGET,
                {str(500000000000000000 + i): str(600000000000000000 + i) for i in range(mapper_ids - 1)},
            )
            await join(GUILD, VOICE)
            track = await get_track("youtube", "bench000001")
            assert track is not None
            await enqueue(GUILD, [track], USER)
            return {"key": key, "token": token}

    return asyncio.run(run())
