"""`xenon-elixir migrate --to postgresql://...`: an SQLite deployment moved into PostgreSQL, every
answer the same afterwards, numbering going on where it stopped."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    ADMIN,
    ADMIN_TOKEN,
    GUILD,
    SOURCE,
    TARGET,
    USER,
    VOICE,
    FakeClock,
    bearer,
    grant_bot,
    run_load,
)
from litestar.testing import TestClient
from server import Server, cli, free_port
from stored import rows

import xenon_elixir as xe

API = "/api/v1"
OTHER_TARGET = "496683369665658881"
BIG = 25_000  # more than one chunk of the copy (20,000): its progress is shown


def migrate(db: str, url: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xenon_elixir", "migrate", "--db", db, "--to", url, *more],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def answers(client: TestClient, key: str, token: str, template: str) -> dict[str, Any]:
    """What the APIs answer about everything the deployment holds."""
    xenon = {"Authorization": token}
    got = {
        "nowplaying": client.get(f"{API}/{GUILD}/nowplaying").json(),
        "queue": client.get(f"{API}/{GUILD}/queue").json(),
        "mapper": client.get(f"/api/mappers?target={TARGET}&source={SOURCE}", headers=xenon).json(),
        "template": client.get(f"/api/templates/{template}", headers=xenon).json(),
        "key works": client.post(
            f"{API}/{GUILD}/volume", json={"user": USER, "volume": 40}, headers=bearer(key)
        )
        .json()
        .get("message"),
        "search": [client.blocking_portal.call(_resolved, client, q) for q in QUERIES],
    }
    for kind in xe.LISTINGS:
        got[kind] = client.get(f"/admin/{kind}", headers=ADMIN).json()
    return got


QUERIES = ("magia", "CAFE", "night morning", "narcos")


async def _resolved(client: TestClient, query: str) -> str | None:
    found = await xe.host_of(client.app).resolve(query)
    return found.identifier if isinstance(found, xe.Track) else None


def test_a_deployment_moves_into_postgresql_whole(
    client: TestClient,
    world: dict[str, str],
    db_path: str,
    postgres_db: str,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    key = world["key"]
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key))
    for query in ("magia", "narcos", "magia"):
        client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": query}, headers=bearer(key))
    clock.advance(3)
    token = grant_bot(client)
    template = client.post(
        "/admin/templates",
        json={"name": "T", "source_id": SOURCE, "creator_id": USER},
        headers=ADMIN,
    ).json()["id"]
    client.put(f"/admin/templates/{template}/bots/386861188891279362", headers=ADMIN)
    client.post("/admin/backups", json={"source_id": SOURCE, "creator_id": USER}, headers=ADMIN)
    big = {str(500000000000000000 + i): str(700000000000000000 + i) for i in range(BIG)}
    for start in range(0, BIG, 10_000):
        chunk = dict(list(big.items())[start : start + 10_000])
        run_load(client, chunk)
    # a load still running, with ids staged: it goes on after the move
    running = {"target_id": OTHER_TARGET, "type": "backup", "source_id": SOURCE, "user_id": USER}
    assert client.post("/admin/loaders", json=running, headers=ADMIN).status_code == 201
    staged = {"410520361789161472": "754098965649162251"}
    assert (
        client.post(f"/admin/loaders/{OTHER_TARGET}/ids", json={"ids": staged}, headers=ADMIN).status_code
        == 200
    )
    before = answers(client, key, token, template)
    events = client.blocking_portal.call(
        xe.host_of(client.app)._services.stores.loaders.events_since, 0, 1000
    )
    client.__exit__(None, None, None)

    moved = migrate(db_path, postgres_db)
    assert moved.returncode == 0, moved.stderr
    assert f"mapper_ids: 20,000 of {BIG + 1:,} rows" in moved.stderr  # the big table's progress
    assert f"mapper_ids {BIG + 1:,}" in moved.stdout and "tracks" in moved.stdout
    assert "postgres@" in moved.stdout

    on_postgres = TestClient(
        xe.create_app(
            xe.Config(db=postgres_db, admin_token=ADMIN_TOKEN, clock=clock, monotonic=clock, timers=clock)
        )
    )
    with on_postgres:
        after = answers(on_postgres, key, token, template)
        assert after == before
        assert after["queue"]["queue"] and after["mapper"]["ids"]  # not two empty answers
        replayed = on_postgres.blocking_portal.call(
            xe.host_of(on_postgres.app)._services.stores.loaders.events_since, 0, 1000
        )
        assert replayed == events
        done = on_postgres.post(f"/admin/loaders/{OTHER_TARGET}/done", headers=ADMIN)
        assert done.status_code == 200 and done.json()["seq"] == events[1] + 1  # numbering goes on
        mapper = on_postgres.get(
            f"/api/mappers?target={OTHER_TARGET}&source={SOURCE}", headers={"Authorization": token}
        ).json()
        assert mapper["ids"] == {SOURCE: OTHER_TARGET, **staged}
        played = on_postgres.post(
            f"{API}/{GUILD}/play", json={"user": USER, "query": "magia"}, headers=bearer(key)
        )
        assert played.status_code == 200
    # the queue's next entry took a new id after the copied ones
    (newest,) = rows(postgres_db, "SELECT max(entry_id) FROM queue")[0]
    assert newest > max(e for (e,) in rows(db_path, "SELECT entry_id FROM queue"))


def test_a_target_that_holds_anything_is_refused_unless_replaced(
    client: TestClient, world: dict[str, str], db_path: str, postgres_db: str
) -> None:
    client.__exit__(None, None, None)  # the world's guild, catalog and key, on SQLite, served no more
    assert migrate(db_path, postgres_db).returncode == 0
    again = migrate(db_path, postgres_db)
    assert again.returncode == 1
    assert "is not empty (elixir_keys, guilds, voice_channels, tracks" in again.stderr
    assert rows(postgres_db, "SELECT count(*) FROM tracks") == rows(db_path, "SELECT count(*) FROM tracks")
    replaced = migrate(db_path, postgres_db, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert rows(postgres_db, "SELECT count(*) FROM guilds") == [(1,)]  # replaced, not added to


def test_migrate_says_what_it_needs(db_path: str, tmp_path: Path) -> None:
    wrong = migrate(str(tmp_path / "missing.db"), "postgresql://127.0.0.1:1/x")
    assert wrong.returncode == 1 and "missing.db does not exist" in wrong.stderr
    not_a_url = migrate(db_path, "/tmp/other.db")
    assert not_a_url.returncode == 1 and "--to must be a postgresql:// URL" in not_a_url.stderr


@pytest.mark.parametrize("with_redis", [False, True], ids=["plain", "redis"])
def test_migrate_refuses_while_a_server_serves_the_file(
    db_path: str, postgres_db: str, tmp_path: Path, request: pytest.FixtureRequest, with_redis: bool
) -> None:
    env = {"XE_REDIS_URL": request.getfixturevalue("redis_fresh").url} if with_redis else {}
    server = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN, **env)
    try:
        bot = {"id": "386861188891279362", "name": "Wick"}
        assert httpx.post(server.url + "/admin/bots", json=bot, headers=ADMIN).status_code == 201
        refused = migrate(db_path, postgres_db)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.splitlines() == [
            f"xenon-elixir: a server serves {db_path}: stop it first, "
            "or what it writes during the copy stays behind"
        ]
        assert httpx.get(server.url + "/health").json()["status"] == "ok"  # it serves on
    finally:
        server.stop()
    moved = migrate(db_path, postgres_db)  # once it has stopped
    assert moved.returncode == 0, moved.stderr
    assert rows(postgres_db, "SELECT bot_id FROM bots") == [("386861188891279362",)]


@pytest.mark.parametrize("side", ["file", "target", "another migrate"])
def test_no_server_nor_migrate_starts_on_the_file_or_the_target_while_migrate_copies(
    client: TestClient, world: dict[str, str], db_path: str, postgres_db: str, tmp_path: Path, side: str
) -> None:
    client.__exit__(None, None, None)  # the world's guild, catalog and key, on SQLite, served no more
    db = db_path if side == "file" else postgres_db
    refusal = f"xenon-elixir migrate is copying {xe.masked_url(db)}: start the server once it has finished"
    command = ["serve", "--db", db, "--port", str(free_port())]
    if side == "another migrate":  # of another file, into the same target
        other = str(tmp_path / "other.db")
        cli(other, "add-guild", GUILD, "--name", "Other", "--voice", VOICE)
        command = ["migrate", "--db", other, "--to", postgres_db, "--replace"]
        refusal = f"another xenon-elixir migrate is copying {xe.masked_url(db)}: let it finish first"
    starts: list[subprocess.CompletedProcess[str]] = []

    def progress(table: str, done: int, total: int) -> None:  # between two tables' copies
        if not starts:
            starts.append(
                subprocess.run(
                    [sys.executable, "-m", "xenon_elixir", *command],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            )

    asyncio.run(xe.migrate_to_postgres(db_path, postgres_db, progress=progress))
    (start,) = starts
    assert start.returncode == 1
    assert start.stderr.splitlines() == [f"xenon-elixir: {refusal}"]
    assert rows(postgres_db, "SELECT count(*) FROM guilds") == [(1,)]  # the copy went on


@pytest.mark.parametrize("with_redis", [False, True], ids=["plain", "redis"])
def test_migrate_refuses_while_a_server_serves_the_target_and_leaves_it_be(
    client: TestClient,
    world: dict[str, str],
    db_path: str,
    postgres_db: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    with_redis: bool,
) -> None:
    """A server on the PostgreSQL target (alone, or one of a Redis fleet): even ``--replace`` is
    refused with one line, and what the server serves is untouched (not emptied under it)."""
    client.__exit__(None, None, None)  # the world's guild, catalog and key, on SQLite, served no more
    env = {"XE_REDIS_URL": request.getfixturevalue("redis_fresh").url} if with_redis else {}
    server = Server(postgres_db, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN, **env)
    try:
        bot = {"id": "386861188891279362", "name": "Wick"}
        assert httpx.post(server.url + "/admin/bots", json=bot, headers=ADMIN).status_code == 201
        refused = migrate(db_path, postgres_db, "--replace")
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.splitlines() == [
            f"xenon-elixir: a server serves {xe.masked_url(postgres_db)}: stop it first, "
            "or the copy would be mixed with what it writes"
        ]
        assert httpx.get(server.url + "/admin/bots", headers=ADMIN).json()["items"][0]["name"] == "Wick"
    finally:
        server.stop()
    assert rows(postgres_db, "SELECT bot_id FROM bots") == [("386861188891279362",)]
    moved = migrate(db_path, postgres_db, "--replace")  # once it has stopped
    assert moved.returncode == 0, moved.stderr
    replaced = "SELECT (SELECT count(*) FROM bots), (SELECT count(*) FROM guilds)"
    assert rows(postgres_db, replaced) == [(0, 1)]  # the file's, the server's bot gone
