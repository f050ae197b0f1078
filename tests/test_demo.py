"""`xenon-elixir serve --demo` on a real server: every printed curl line works as printed, a
WebSocket client sees the simulated load, and seeding is idempotent."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import with_host
from server import free_port
from websockets.asyncio.client import connect

import xenon_elixir as xe


def start_demo(db: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "xenon_elixir", "serve", "--demo", "--db", db, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "XE_STATUS_INTERVAL": "1"},
    )


def read_banner(process: subprocess.Popen[str], timeout: float = 20.0) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "Uvicorn running on" in line:
            return lines
    raise AssertionError("the demo did not start:\n" + "\n".join(lines))


@pytest.mark.skipif(subprocess.run(["which", "curl"], capture_output=True).returncode, reason="needs curl")
def test_every_printed_curl_line_works_and_the_load_is_seen(db_path: str) -> None:
    port = free_port()
    process = start_demo(db_path, port)
    try:
        banner = read_banner(process)
        commands = [line for line in banner if line.startswith("curl ")]
        apis = [re.search(r"/(api/v1|api|admin)/", c)[1] for c in commands]  # type: ignore[index]
        assert (apis.count("api/v1"), apis.count("api"), apis.count("admin")) == (9, 4, 1)
        token = re.search(r"Xenon bot token \(\d+\): (\S+)", "\n".join(banner))
        assert token is not None

        async def watch() -> list[dict[str, object]]:
            async with connect(
                f"ws://127.0.0.1:{port}/api/loaders/ws", additional_headers={"Authorization": token[1]}
            ) as ws:
                events = []
                while not events or events[-1]["event"] != "done":
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
                return events

        events = asyncio.run(watch())
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "status" in kinds
    statuses = [event["data"]["status"] for event in events if event["event"] == "status"]  # type: ignore[index]
    order = list(xe.DEMO_STATUSES)
    assert statuses == sorted(statuses, key=order.index)  # coalesced, but in the original order
    assert events[0]["data"] == {  # type: ignore[comparison-overlap]
        "id": xe.DEMO_TARGET,
        "type": "backup",
        "source_id": xe.DEMO_SOURCE,
        "backup_id": xe.DEMO_BACKUP,
        "user_id": xe.DEMO_CREATOR,
    }


def test_seeding_twice_keeps_one_of_everything_and_fresh_secrets(db_path: str) -> None:
    async def seed_twice(host: xe.Host) -> tuple[str, str]:
        first = await xe.seed_demo(host, "http://127.0.0.1:8000", None)
        second = await xe.seed_demo(host, "http://127.0.0.1:8000", None)
        return first, second

    first, second = with_host(db_path, seed_twice)
    assert first != second  # the token and key are rotated each start: the old ones are not kept
    with sqlite3.connect(db_path) as db:
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("tracks", "playlists", "templates", "backups", "bots", "elixir_keys", "guilds")
        }
    assert counts == {
        "tracks": 30,
        "playlists": 3,
        "templates": 1,
        "backups": 1,
        "bots": 1,
        "elixir_keys": 1,
        "guilds": 1,
    }


def test_the_demo_catalog_has_the_seed_samples() -> None:
    identifiers = {track.identifier for track in xe.demo_tracks()}
    assert {
        "_n1o4D6G_XE",
        "1_zgKRBrT0Y",
        "-zgDXIi1uYw",
        "7kDUspsoYfLkWnZR7qwHZl",
        "6g2BiiVQqY5v1S4HIrM54F",
    } <= identifiers
    assert len(identifiers) >= 30


def test_the_simulated_load_fills_the_mapper(db_path: str) -> None:
    async def simulate(host: xe.Host) -> tuple[list[str], int]:
        await xe.seed_demo(host, "http://x", None)
        subscription = host.subscribe()
        task = asyncio.create_task(xe.simulate_loads(host, interval=0.4, first_after=0))
        kinds: list[str] = []
        async for _, frame in subscription:
            kinds.append(json.loads(frame)["event"])
            if kinds.count("done") == 2:
                break
        task.cancel()
        mapper = await host.get_mapper(xe.DEMO_SOURCE, xe.DEMO_TARGET)
        assert mapper is not None and mapper.loaders == [xe.DEMO_CREATOR]
        return kinds, len(mapper.ids)

    kinds, ids = with_host(db_path, simulate, status_interval=0.01)
    assert kinds[0] == "start" and kinds.count("start") == 2 and "status" in kinds
    assert ids == 13  # the guild itself and 12 roles/channels, newest ids winning


def test_simulated_loads_go_on_when_an_operator_ends_one(
    db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def simulate(host: xe.Host) -> list[str]:
        await xe.seed_demo(host, "http://x", None)
        subscription = host.subscribe()
        task = asyncio.create_task(xe.simulate_loads(host, interval=0.3, first_after=0))
        kinds: list[str] = []
        async for _, frame in subscription:
            kinds.append(json.loads(frame)["event"])
            if kinds == ["start"]:
                await host.loader_done(xe.DEMO_TARGET, ok=False)  # an admin finishes it mid-load
            if kinds.count("start") == 2:
                break
        task.cancel()
        return kinds

    kinds = with_host(db_path, simulate, status_interval=0.01)
    second = kinds.index("start", 1)
    assert kinds[0] == "start" and kinds[1:second].count("done") == 1  # the first ended by the admin
    assert "demo load 1 ended early" in caplog.text


def test_the_demo_never_changes_data_it_did_not_create(db_path: str) -> None:
    """Seeded onto a database that holds the README's ids and catalog: all of it stays as it was."""
    from conftest import CATALOG, CREATOR, GUILD, SOURCE, USER, VOICE

    async def readme_setup(host: xe.Host) -> None:
        await host.put_guild(GUILD, "Music Lounge", [VOICE])
        await host.import_catalog(CATALOG["tracks"], CATALOG["playlists"])
        await host.create_key(GUILD, USER)
        await host.grant_bot("386861188891279362", "Wick")
        await host.create_template("Gaming", SOURCE, CREATOR, template_id="hHGhNE6wyxgF")
        await host.create_backup(SOURCE, CREATOR, backup_id="3zydfwqp0h")

    with_host(db_path, readme_setup)

    def rows() -> set[str]:  # the full-text index's own pages are rewritten by any insert: left out
        with sqlite3.connect(db_path) as db:  # and the counters every write (of a credential) moves
            counted = ("VALUES('commits',", "VALUES('credentials',")
            return {
                line
                for line in db.iterdump()
                if "tracks_fts" not in line and not any(counter in line for counter in counted)
            }

    before = rows()
    with_host(db_path, lambda host: xe.seed_demo(host, "http://127.0.0.1:8000", None))
    after = rows()
    assert before - after == set()  # nothing it found was changed or removed
    assert after - before  # and it did add its own


def test_serve_demo_keeps_its_own_database_file(tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "XE_DB"}
    process = subprocess.Popen(
        [sys.executable, "-m", "xenon_elixir", "serve", "--demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        read_banner(process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    assert (tmp_path / "xenon_elixir_demo.db").exists()
    assert not (tmp_path / "xenon_elixir.db").exists()


def test_a_second_demo_on_the_same_file_is_told_to_give_it_its_own_db_and_port(tmp_path: Path) -> None:
    db, port = str(tmp_path / "xenon_elixir_demo.db"), free_port()
    first = start_demo(db, port)

    def second_demo(port: int) -> str:
        second = subprocess.run(
            [sys.executable, "-m", "xenon_elixir", "serve", "--demo", "--db", db, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        lines = [line for line in (second.stdout + second.stderr).splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "REDIS" not in lines[0]  # not the way to run a second demo
        return lines[0]

    try:
        read_banner(first)
        # as a newcomer runs it again: the same port is in use (said before any file is touched) ...
        assert f"port {port} is in use" in second_demo(port)
        # ... and on another port, the file is the first demo's
        line = second_demo(free_port())
        assert "another server (the demo) serves" in line and "its own --db and --port" in line
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(15)


def test_the_demos_file_is_beside_the_configured_one_and_never_the_deployed_database() -> None:
    assert xe.demo_db("/srv/bot.db") == "/srv/xenon_elixir_demo.db"
    assert (
        xe.demo_db("postgresql://xe@db.internal/xenon") == "xenon_elixir_demo.db"
    )  # a file here, not the URL
