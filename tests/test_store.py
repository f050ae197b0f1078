"""The SQLite store: schema, WAL, versioning, hashed secrets, all-or-nothing writes."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, BOT, GUILD, SOURCE, TARGET, USER, VOICE, bearer, grant_bot, run_load, with_host

import xenon_elixir as xe

ROOT = Path(__file__).resolve().parent.parent


def test_schema_file_is_identical_to_the_module_schema() -> None:
    assert (ROOT / "schema.sql").read_text() == xe.SCHEMA


def test_database_is_a_wal_file_with_the_schema_version(db_path: str) -> None:
    async def run() -> None:
        async with xe.Host.open(xe.Config(db=db_path)):
            pass

    asyncio.run(run())
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (xe.SCHEMA_VERSION,)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"elixir_keys", "guilds", "voice_channels", "tracks", "playlists", "players", "queue"} <= tables


def test_opening_twice_keeps_data(db_path: str) -> None:
    async def run() -> int:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            await host.put_guild(10**17, "Kept", [10**17 + 1])
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            guild = await host.get_guild(str(10**17))
            assert guild is not None
            return len(guild.voice_channels)

    assert asyncio.run(run()) == 1


def test_a_database_from_a_newer_version_is_refused(db_path: str) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute(f"PRAGMA user_version = {xe.SCHEMA_VERSION + 1}")

    async def run() -> None:
        async with xe.Host.open(xe.Config(db=db_path)):
            pass

    with pytest.raises(xe.StoreError, match="schema version"):
        asyncio.run(run())


def test_an_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    async def run() -> None:
        async with xe.Host.open(xe.Config(db=str(tmp_path / "missing" / "dir" / "x.db"))):
            pass

    with pytest.raises(xe.StoreError, match="cannot use database"):
        asyncio.run(run())


@pytest.mark.parametrize(
    ("create", "table", "row"),
    [
        (
            lambda host: host.create_key(766045633697021973, "460177285954142208"),
            "elixir_keys",
            ("766045633697021973", "460177285954142208"),
        ),
        (lambda host: host.grant_bot(386861188891279362, "Wick"), "bots", ("386861188891279362", "Wick")),
    ],
    ids=["elixir key", "bot token"],
)
def test_secrets_are_stored_only_as_sha256(
    db_path: str, create: Any, table: str, row: tuple[str, ...]
) -> None:
    secret = with_host(db_path, create)
    columns = {"elixir_keys": "key_hash, guild_id, user_id", "bots": "token_hash, bot_id, name"}[table]
    with sqlite3.connect(db_path) as db:
        rows = db.execute(f"SELECT {columns} FROM {table}").fetchall()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert rows == [(hashlib.sha256(secret.encode()).hexdigest(), *row)]
    for path in Path(db_path).parent.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_a_failed_import_writes_nothing(db_path: str) -> None:
    track = {
        "source": "youtube",
        "identifier": "abc",
        "title": "A",
        "author": "B",
        "length": 1000,
        "uri": "https://www.youtube.com/watch?v=abc",
    }
    playlist = {"source": "youtube", "identifier": "PL1", "name": "P", "tracks": ["abc", "missing"]}

    async def run() -> tuple[object, object]:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            with pytest.raises(xe.ApiError, match="unknown track youtube/missing"):
                await host.import_catalog([track], [playlist])
            return await host.get_track("youtube", "abc"), await host.get_playlist_tracks("youtube", "PL1")

    assert asyncio.run(run()) == (None, [])


def test_concurrent_transactions_do_not_interleave(db_path: str) -> None:
    async def run() -> list[str]:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            guilds = [str(10**17 + i) for i in range(40)]
            await asyncio.gather(
                *(host.put_guild(g, f"g{i}", [int(g) + 1, int(g) + 2]) for i, g in enumerate(guilds))
            )
            found = [await host.get_guild(g) for g in guilds]
            return [f"{g.name}:{len(g.voice_channels)}" for g in found if g]

    assert asyncio.run(run()) == [f"g{i}:2" for i in range(40)]


def test_remembered_answers_follow_writes_from_another_process(db_path: str, make_client: Any) -> None:
    """Token, key, search and mapper answers are remembered between requests; a change made
    meanwhile through another connection to the file (the CLI, another process) is seen within
    a millisecond, so by the next request here."""
    client = make_client()
    token = grant_bot(client)
    client.put(f"/admin/guilds/{GUILD}", json={"name": "Lounge", "voice_channels": [VOICE]}, headers=ADMIN)
    key = client.post("/admin/keys", json={"guild": GUILD, "user": USER}, headers=ADMIN).json()["key"]
    play = lambda query: client.post(
        f"/api/v1/{GUILD}/play", json={"user": USER, "query": query}, headers=bearer(key)
    )
    assert (
        client.post(
            f"/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key)
        ).status_code
        == 200
    )
    run_load(client, {"410520361789161472": "754098965649162251"})
    mapper = f"/api/mappers?target={TARGET}&source={SOURCE}"
    for _ in range(2):  # the second answer of each comes from memory
        assert (
            client.get(mapper, headers={"Authorization": token}).json()["ids"]["410520361789161472"]
            == "754098965649162251"
        )
        assert play("elsewhere tune").status_code == 404

    track = {
        "source": "youtube",
        "identifier": "elsewhere01",
        "title": "Elsewhere Tune",
        "author": "Other Process",
        "length": 1000,
        "uri": "https://www.youtube.com/watch?v=elsewhere01",
    }
    with_host(db_path, lambda host: host.import_catalog([track]))
    assert play("elsewhere tune").json()["identifier"] == "elsewhere01"
    with_host(
        db_path, lambda host: host.merge_ids(SOURCE, TARGET, {"410520361789161472": "754098999999999999"})
    )
    assert (
        client.get(mapper, headers={"Authorization": token}).json()["ids"]["410520361789161472"]
        == "754098999999999999"
    )

    with_host(db_path, lambda host: host.revoke_bot(BOT))
    assert client.get(mapper, headers={"Authorization": token}).json() == {"error": "Invalid token"}
    with_host(db_path, lambda host: host.revoke_key(GUILD, USER))
    assert play("elsewhere tune").status_code == 401


def test_this_processs_own_commits_forget_remembered_answers_at_once(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the look at other processes' commits (pushed an hour away here), the app's own
    writes still reach the next request: each commit forgets the answers it changes."""
    monkeypatch.setattr(xe.SqliteDatabase, "foreign_commits_seen_within", 3600)
    client = make_client()
    token = grant_bot(client)
    mapper = f"/api/mappers?target={TARGET}&source={SOURCE}"
    run_load(client, {"410520361789161472": "754098965649162251"})
    assert client.get(mapper, headers={"Authorization": token}).status_code == 200
    run_load(client, {"410520361789161472": "754098999999999999"})
    assert (
        client.get(mapper, headers={"Authorization": token}).json()["ids"]["410520361789161472"]
        == "754098999999999999"
    )
    assert client.delete(f"/admin/bots/{BOT}", headers=ADMIN).status_code == 200
    assert client.get(mapper, headers={"Authorization": token}).json() == {"error": "Invalid token"}


def test_an_answer_outlives_this_processs_unrelated_commit_even_before_the_loop_hears_of_it(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader may see this process's commit before the event loop is told of it (the writer
    thread has committed, its answer not yet delivered). That commit is not another process's:
    it must not forget every answer, only the ones it names (none here)."""
    monkeypatch.setattr(xe.SqliteDatabase, "foreign_commits_seen_within", 0)  # look at every read

    async def run() -> list[str]:
        database = await xe.SqliteDatabase(db_path).open()
        reads: list[str] = []

        async def read() -> str:
            reads.append("read")
            return "answer"

        remember = lambda: xe.run_now(database.remembered(("kept",), (), read))
        try:
            remember()
            write = xe._Write(
                lambda tx: tx.run("INSERT INTO counters (name, value) VALUES ('probe', 1)"),
                asyncio.get_running_loop().create_future(),
                (),
                None,
            )
            writer = database._writer
            await asyncio.get_running_loop().run_in_executor(writer._executor, writer._commit, [write])
            remember()  # the commit is visible to the reader; the loop has not settled it
            return reads
        finally:
            await database.close()

    assert asyncio.run(run()) == ["read"]


def test_an_answer_outlives_this_processs_commit_seen_the_instant_it_lands(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that looks right after the writer thread's COMMIT, before the writer has noted
    the new counter, sees this process's commit, not another's: it forgets nothing (a 100k-id
    mapper rebuilt on the loop after every unrelated write was the p99 of 180 ms)."""
    monkeypatch.setattr(xe.SqliteDatabase, "foreign_commits_seen_within", 0)

    class Connection:  # the writer's connection, looking in from a reader the moment it commits
        def __init__(self, real: Any, look: Any) -> None:
            self.real, self.look = real, look

        def execute(self, sql: str, *args: Any) -> Any:
            done = self.real.execute(sql, *args)
            if sql == "COMMIT":
                self.look()
            return done

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    async def run() -> list[str]:
        database = await xe.SqliteDatabase(db_path).open()
        reads: list[str] = []

        async def read() -> str:
            reads.append("read")
            return "answer"

        remember = lambda: xe.run_now(database.remembered(("kept",), (), read))
        try:
            remember()
            writer = database._writer
            writer._conn = Connection(writer._conn, remember)
            await database.write(lambda tx: tx.run("INSERT INTO counters (name, value) VALUES ('probe', 1)"))
            remember()
            return reads
        finally:
            await database.close()

    assert asyncio.run(run()) == ["read"]


def test_a_player_is_read_from_one_commit_even_when_a_track_end_lands_mid_read(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A player's row and its queue are two queries. A commit landing between them (a track's end
    dropping the front of the queue, from another process or the writer thread) must not give a
    player whose row is from before it and whose queue is from after it."""
    tracks = [
        xe.Track(
            source="youtube",
            identifier=f"track{i:06d}",
            title=f"Song {i}",
            author="A",
            length=60_000,
            uri=f"https://y.com/{i}",
        )
        for i in range(3)
    ]
    read_queue = xe.SqlitePlayers.load_front.__func__  # type: ignore[attr-defined]

    async def load_front_after_a_track_end(cls: Any, tx: Any, player: Any, count: Any) -> None:
        with sqlite3.connect(db_path) as other:  # the first track ends, and is written, right now
            other.execute("DELETE FROM queue WHERE entry_id = (SELECT min(entry_id) FROM queue)")
            other.execute("UPDATE players SET position = 0, anchor = anchor + 60, size = size - 1")
        await read_queue(cls, tx, player, count)

    async def run() -> list[str]:
        async with xe.Host.open(xe.Config(db=db_path, clock=lambda: 1000.0)) as host:
            await host.put_guild(GUILD, "Guild", [VOICE])
            await host.join(GUILD, VOICE)
            await host.enqueue(GUILD, tracks, USER)
            database = host._services.stores.database
            database.answers.clear()
            monkeypatch.setattr(xe.SqlitePlayers, "load_front", classmethod(load_front_after_a_track_end))
            player = await host._services.stores.players.get(str(GUILD))
            assert player is not None
            return [entry.track.identifier for entry in player.queue]

    # the snapshot before the track's end: all three; a torn read would give the last two
    assert asyncio.run(run()) == ["track000000", "track000001", "track000002"]


def test_a_big_import_lets_other_writes_in_between_its_chunks(db_path: str) -> None:
    """An import is written in chunks, each its own transaction: a write that arrives during it
    waits for one chunk, not for the whole import (nor does another process's)."""
    tracks = [
        xe.Track(
            source="youtube",
            identifier=f"id{i}",
            title=f"Song {i}",
            author="A",
            length=1000,
            uri=f"https://y.com/{i}",
        )
        for i in range(4 * 5000)
    ]

    async def body(host: xe.Host) -> list[str]:
        finished: list[str] = []

        async def importing() -> None:
            await host.import_catalog(tracks)
            finished.append("import")

        async def writing() -> None:
            await asyncio.sleep(0)  # the import's first chunk is under way
            await host.create_key(GUILD, USER)
            finished.append("key")

        await asyncio.gather(importing(), writing())
        return finished

    assert with_host(db_path, body) == ["key", "import"]


def test_a_version_1_file_is_upgraded_in_place(db_path: str) -> None:
    async def touch(host: xe.Host) -> None:
        await host.create_key(GUILD, USER)

    with_host(db_path, touch)
    with sqlite3.connect(db_path) as db:  # as version 1 left it: no staging table
        db.execute("DROP TABLE loader_ids")
        db.execute("PRAGMA user_version = 1")
    assert with_host(db_path, lambda host: host.revoke_key(GUILD, USER)) is True  # the key was kept
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (xe.SCHEMA_VERSION,)
        assert db.execute("SELECT count(*) FROM loader_ids").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM elixir_keys").fetchone() == (0,)  # the data is still used


def test_a_version_4_file_numbers_each_guild_above_the_one_old_sequence(db_path: str) -> None:
    """Version 4 numbered every guild's player changes in one sequence; a guild's own numbers
    start above it, so a follower's frames go on increasing across the upgrade."""

    async def join(host: xe.Host) -> None:
        await host.put_guild(GUILD, "G", [VOICE])
        await host.join(GUILD, VOICE)

    with_host(db_path, join)
    with sqlite3.connect(db_path) as db:  # as version 4 left it, 40 changes in
        db.execute("DROP TABLE player_seqs")
        db.execute("UPDATE counters SET value = 40 WHERE name = 'player_seq'")
        db.execute("PRAGMA user_version = 4")

    async def change(host: xe.Host) -> tuple[int, int]:
        before = (await host.player_state(GUILD)).seq
        await host.set_volume(GUILD, 30)
        return before, (await host.player_state(GUILD)).seq

    assert with_host(db_path, change) == (40, 41)
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (xe.SCHEMA_VERSION,)


def test_a_version_5_file_gains_the_follower_lease_and_keeps_its_numbers(db_path: str) -> None:
    """Version 5 had no follower lease in player_seqs: the column is added in place, the guild's
    number kept, and a lease taken and changes made on it as on a new file."""

    async def join(host: xe.Host) -> None:
        await host.put_guild(GUILD, "G", [VOICE])
        await host.join(GUILD, VOICE)

    with_host(db_path, join)
    with sqlite3.connect(db_path) as db:  # as version 5 left it
        db.execute("ALTER TABLE player_seqs DROP COLUMN followed_until")
        db.execute("PRAGMA user_version = 5")

    async def change(host: xe.Host) -> int:
        await host._services.stores.players.follow(GUILD, 123.0)
        await host.set_volume(GUILD, 30)
        return (await host.player_state(GUILD)).seq

    assert with_host(db_path, change) == 2
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (xe.SCHEMA_VERSION,)
        assert db.execute("SELECT seq, followed_until FROM player_seqs").fetchall() == [(2, 123.0)]
