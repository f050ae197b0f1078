"""What only the PostgreSQL store has: its schema (created, printed, a newer one refused), a
server lost, failed over to read-only and back (503 with Retry-After, then recovery with no
restart). The API suites run on it too (conftest's BOTH_BACKENDS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN, ADMIN_TOKEN, CATALOG_FILE, GUILD, SOURCE, TARGET, USER, VOICE, bearer, with_host
from server import Server, cli
from services import PostgresServer, free_port
from stored import rows

import xenon_elixir as xe


def test_an_empty_database_gets_the_schema_and_the_cli_prints_it(postgres_db: str) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", "schema", "--postgres"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == xe.PG_SCHEMA
    cli(postgres_db, "add-guild", GUILD, "--name", "G", "--voice", VOICE)  # the first use creates it
    tables = {
        name for (name,) in rows(postgres_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert tables >= {"tracks", "players", "queue", "events", "counters", "mapper_ids", "search_words"}
    assert rows(postgres_db, "SELECT value FROM counters WHERE name = 'schema'") == [(xe.PG_SCHEMA_VERSION,)]


def test_a_database_of_a_newer_version_is_refused(postgres_db: str, postgres_server: PostgresServer) -> None:
    cli(postgres_db, "add-guild", GUILD, "--name", "G")
    name = postgres_db.rsplit("/", 1)[1]
    postgres_server.execute(
        f"UPDATE counters SET value = {xe.PG_SCHEMA_VERSION + 1} WHERE name = 'schema'", name
    )
    refused = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", "list", "guilds", "--db", postgres_db],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert (
        f"has schema version {xe.PG_SCHEMA_VERSION + 1}; this xenon_elixir knows up to {xe.PG_SCHEMA_VERSION}"
        in refused.stderr
    )
    assert "postgres@127.0.0.1" in refused.stderr


def test_an_unreachable_server_is_one_line_not_a_traceback() -> None:
    port = free_port()  # nothing listens there
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "xenon_elixir",
            "list",
            "guilds",
            "--db",
            f"postgresql://xe:secret@127.0.0.1:{port}/xe",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        f"xenon-elixir: cannot use database postgresql://xe:***@127.0.0.1:{port}/xe: "
    )
    assert "Traceback" not in refused.stderr and "secret" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_version_1_database_numbers_each_guild_above_the_one_old_sequence(
    postgres_db: str, postgres_server: PostgresServer
) -> None:
    """Version 1 numbered every guild's player changes in one sequence; a guild's own numbers
    start above it, so a follower's frames go on increasing across the upgrade."""

    async def join(host: xe.Host) -> None:
        await host.put_guild(GUILD, "G", [VOICE])
        await host.join(GUILD, VOICE)

    with_host(postgres_db, join)
    postgres_server.execute(  # as version 1 left it, 40 changes in
        "DROP TABLE player_seqs; UPDATE counters SET value = 40 WHERE name = 'player_seq'; "
        "UPDATE counters SET value = 1 WHERE name = 'schema'",
        postgres_db.rsplit("/", 1)[1],
    )

    async def change(host: xe.Host) -> tuple[int, int]:
        before = (await host.player_state(GUILD)).seq
        await host.set_volume(GUILD, 30)
        return before, (await host.player_state(GUILD)).seq

    assert with_host(postgres_db, change) == (40, 41)
    assert rows(postgres_db, "SELECT value FROM counters WHERE name = 'schema'") == [(xe.PG_SCHEMA_VERSION,)]


def test_a_version_2_database_gains_the_follower_lease_and_keeps_its_numbers(
    postgres_db: str, postgres_server: PostgresServer
) -> None:
    """Version 2 had no follower lease in player_seqs: the column is added, the guild's number
    kept, and a lease taken and changes made on it as on a new database."""

    async def join(host: xe.Host) -> None:
        await host.put_guild(GUILD, "G", [VOICE])
        await host.join(GUILD, VOICE)

    with_host(postgres_db, join)
    postgres_server.execute(  # as version 2 left it
        "ALTER TABLE player_seqs DROP COLUMN followed_until; UPDATE counters SET value = 2 WHERE name = 'schema'",
        postgres_db.rsplit("/", 1)[1],
    )

    async def change(host: xe.Host) -> int:
        await host._services.stores.players.follow(GUILD, 123.0)
        await host.set_volume(GUILD, 30)
        return (await host.player_state(GUILD)).seq

    assert with_host(postgres_db, change) == 2
    assert rows(postgres_db, "SELECT seq, followed_until FROM player_seqs") == [(2, 123.0)]
    assert rows(postgres_db, "SELECT value FROM counters WHERE name = 'schema'") == [(xe.PG_SCHEMA_VERSION,)]


def _answers(http: httpx.Client, key: str) -> list[tuple[str, int, str | None]]:
    """A read and a write of each API and the health check: (what, status, Retry-After)."""
    asked = [
        ("nowplaying", http.get(f"/api/v1/{GUILD}/nowplaying")),
        (
            "volume",
            http.post(f"/api/v1/{GUILD}/volume", json={"user": USER, "volume": 30}, headers=bearer(key)),
        ),
        ("bots", http.get("/admin/bots", headers=ADMIN)),
        ("ids", http.post(f"/admin/loaders/{TARGET}/ids", json={"ids": {"1" * 18: "2" * 18}}, headers=ADMIN)),
        ("health", http.get("/health")),
    ]
    return [(what, response.status_code, response.headers.get("retry-after")) for what, response in asked]


def _until(check: Any, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_a_lost_server_and_a_failover_answer_503_then_the_service_recovers_by_itself(
    make_postgres: Any, tmp_path: Path
) -> None:
    postgres = make_postgres()
    db = postgres.create_database()
    cli(db, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
    cli(db, "import-tracks", str(CATALOG_FILE))
    key = cli(db, "genkey", GUILD, USER)
    server = Server(db, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN, XE_RATE_LIMITS="off")
    try:
        with httpx.Client(base_url=server.url, timeout=15) as http:
            assert http.post(
                f"/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key)
            )
            played = http.post(
                f"/api/v1/{GUILD}/play", json={"user": USER, "query": "magia"}, headers=bearer(key)
            )
            assert played.status_code == 200
            start = {"target_id": TARGET, "type": "backup", "source_id": SOURCE}
            assert http.post("/admin/loaders", json=start, headers=ADMIN).status_code == 201
            assert {status for _, status, _ in _answers(http, key)} == {200}

            postgres.kill()  # the server is lost: every connection cut at once
            lost = _answers(http, key)
            assert [(what, status, after) for what, status, after in lost] == [
                (what, 503, "1") for what, _, _ in lost
            ]
            assert http.get("/health").json()["database"] == "unreachable"

            postgres.start()  # back: the pool reconnects, no restart of the app
            assert _until(lambda: {s for _, s, _ in _answers(http, key)} == {200})

            # a failover to a server that is read-only for now: reads answer, writes are 503s
            postgres.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            postgres.execute("SELECT pg_reload_conf()")
            read_only = dict((what, (status, after)) for what, status, after in _answers(http, key))
            assert read_only["nowplaying"][0] == 200 and read_only["bots"][0] == 200
            assert read_only["volume"] == (503, "1") and read_only["ids"] == (503, "1")
            postgres.execute("ALTER SYSTEM RESET default_transaction_read_only")
            postgres.execute("SELECT pg_reload_conf()")
            assert _until(lambda: {s for _, s, _ in _answers(http, key)} == {200})
    finally:
        server.stop()
    text = server.log.read_text()
    assert "Traceback" not in text and " 500 " not in text, text


def _remembering(reading: Any = lambda: True) -> xe.PostgresDatabase:
    """A PostgreSQL store's remembered answers alone (it is never opened): the fleet's forgets
    reach it while ``reading()`` says so (Redis read), as :meth:`xe.PostgresDatabase.shared` is
    told; each test's reads are its own functions."""
    database = xe.PostgresDatabase("postgresql://unused@127.0.0.1:1/none")
    database.shared(lambda tags: None, lambda: 0 if reading() else None)
    return database


def test_an_answer_read_while_other_tags_are_forgotten_is_remembered_but_not_across_its_own() -> None:
    """A fleet's writes forget tags all the time: an answer whose read spanned the forget of
    another tag is still remembered; one whose own tag was forgotten meanwhile is not."""
    database = _remembering()  # every process's forgets reach this one
    reads: list[str] = []

    def reading(forgotten: tuple[str, ...]) -> Any:
        async def read() -> bool:
            reads.append(forgotten[0])
            await asyncio.sleep(0)
            database.forget([forgotten])  # another guild's play (or this guild's) commits meanwhile
            return True

        return read

    async def scenario() -> None:
        for _ in range(2):
            await database.remembered(("connected", GUILD), (), reading(("player", "1")))
        assert reads == ["player"]  # read once, then remembered
        for _ in range(2):
            await database.remembered(("connected", "2"), (), reading(("connected", "2")))
        assert reads == ["player", "connected", "connected"]  # never kept: it changed while read

    asyncio.run(scenario())


def test_a_read_on_a_connection_the_server_just_cut_is_a_503_never_a_500(postgres_db: str) -> None:
    """A connection the server cuts (a restart, a failover, an operator's pg_terminate_backend)
    fails the next query on it. Mostly asyncpg says the connection is gone; about one time in a
    hundred its protocol is still reading the server's last words and it raises
    ``InternalClientError`` instead (asyncpg issue #784), which had been a 500. Cut 300 times,
    every failure is :class:`xe.Unavailable` (a 503), and the next read answers."""
    import asyncpg

    name = "xenon-elixir-cut-test"

    async def scenario() -> Counter[str]:
        database = await xe.PostgresDatabase(postgres_db, name=name).open()
        admin = await asyncpg.connect(postgres_db)
        outcomes: Counter[str] = Counter()
        try:
            for _ in range(300):
                assert await database.snapshot(lambda tx: tx.one("SELECT 1")) == (1,)
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", name
                )
                try:
                    await database.snapshot(lambda tx: tx.one("SELECT 1"))
                    outcomes["answered"] += 1
                except xe.Unavailable:
                    outcomes["503"] += 1
        finally:
            await admin.close()
            await database.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert set(outcomes) <= {"answered", "503"} and outcomes["503"] > 0, outcomes


def test_a_crowd_asking_for_one_answer_shares_one_read_unless_it_was_forgotten_meanwhile() -> None:
    """Many requests asking for an answer no process remembers (a process's first seconds, or
    the readers of an answer a write has just forgotten) share the one read under way. One that
    asks after a forget of what that read covers reads for itself, and only its answer is kept."""
    database = _remembering()  # every process's forgets reach this one
    tag = ("mapper", SOURCE, TARGET)
    reads: list[asyncio.Event] = []

    async def read() -> str:
        reads.append(asyncio.Event())
        number = len(reads)
        await reads[-1].wait()
        return f"answer {number}"

    async def scenario() -> None:
        ask = lambda: asyncio.create_task(database.remembered(tag, (), read))  # noqa: E731
        crowd = [ask() for _ in range(5)]
        await asyncio.sleep(0)
        assert len(reads) == 1  # one read for the five
        database.forget([tag])  # a write changes it while it is read
        late = ask()
        await asyncio.sleep(0)
        assert len(reads) == 2  # asked after the forget: its own read
        for event in reads:
            event.set()
        assert await asyncio.gather(*crowd) == ["answer 1"] * 5
        assert await late == "answer 2"
        assert await database.remembered(tag, (), read) == "answer 2"  # the later read was kept
        assert len(reads) == 2

    asyncio.run(scenario())


def test_a_shared_read_whose_reader_is_cancelled_is_read_again_and_a_failed_one_fails_all() -> None:
    """The request whose read others share may go (its client closed): they ask again, and one
    of them reads for all, not each for itself (a stalled database makes clients give up just
    when crowds form). A read that fails (the database away) fails every request sharing it
    with the same error, rather than each trying again at once."""
    database = _remembering()
    tag = ("connected", GUILD)
    gate = asyncio.Event()
    reads: list[str] = []

    async def read() -> bool:
        reads.append("read")
        await gate.wait()
        return True

    async def failing() -> bool:
        reads.append("failing")
        await asyncio.sleep(0)
        raise xe.Unavailable(xe.PG_AWAY)

    async def scenario() -> None:
        first = asyncio.create_task(database.remembered(tag, (), read))
        await asyncio.sleep(0)
        sharing = [asyncio.create_task(database.remembered(tag, (), read)) for _ in range(5)]
        await asyncio.sleep(0)
        first.cancel()
        for _ in range(10):  # the cancellation reaches the sharers in a few turns of the loop
            await asyncio.sleep(0)
        assert reads == ["read", "read"]  # one of the five reads again, for all five
        gate.set()
        assert await asyncio.gather(*sharing) == [True] * 5
        with pytest.raises(asyncio.CancelledError):
            await first
        reads.clear()
        tag2 = ("connected", "2")
        crowd = [asyncio.create_task(database.remembered(tag2, (), failing)) for _ in range(3)]
        outcomes = await asyncio.gather(*crowd, return_exceptions=True)
        assert reads == ["failing"]
        assert all(isinstance(outcome, xe.Unavailable) for outcome in outcomes), outcomes

    asyncio.run(scenario())


def test_a_shared_read_asked_again_while_forgets_cannot_reach_this_process_is_not_kept() -> None:
    """Asked again after its reader went, a request takes every step of a first ask: while the
    fleet's forgets cannot reach this process (Redis unread), it reads and remembers nothing."""
    reading = [True]
    database = _remembering(lambda: reading[0])
    tag = ("mapper", SOURCE, TARGET)
    gate = asyncio.Event()
    reads: list[str] = []

    async def read() -> str:
        reads.append("read")
        await gate.wait()
        return f"answer {len(reads)}"

    async def scenario() -> None:
        first = asyncio.create_task(database.remembered(tag, (), read))
        await asyncio.sleep(0)
        sharer = asyncio.create_task(database.remembered(tag, (), read))
        await asyncio.sleep(0)
        reading[0] = False  # the stream stops being read
        first.cancel()
        for _ in range(10):
            await asyncio.sleep(0)
        gate.set()
        assert await sharer == "answer 2"
        reading[0] = True
        gate.clear()
        third = asyncio.create_task(database.remembered(tag, (), read))
        for _ in range(10):
            await asyncio.sleep(0)
        assert reads == ["read", "read", "read"]  # nothing was kept while it could not hear
        gate.set()
        assert await third == "answer 3"
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(scenario())


def test_a_key_read_is_not_shared_across_a_move_of_the_credentials_counter(postgres_db: str) -> None:
    """A request that looked at the ``credentials`` counter after another process moved it (a
    revoke) does not share a key's read begun before the move: its answer could be the key
    before its revoke."""

    async def scenario() -> list[str]:
        database = await xe.PostgresDatabase(postgres_db).open()
        database.shared(lambda tags: None, lambda: 0)
        other = await xe.PostgresDatabase(postgres_db).open()  # another process of the fleet
        gate = asyncio.Event()
        reads: list[str] = []

        async def read() -> str:
            reads.append("read")
            number = len(reads)
            await gate.wait()
            return f"key row {number}"

        try:
            ask = lambda: asyncio.create_task(database.remembered(("keys",), ("hash",), read))  # noqa: E731
            first = ask()
            for _ in range(1000):
                if reads:
                    break
                await asyncio.sleep(0.002)
            before = ask()  # the counter unmoved: shares the read
            await asyncio.sleep(0.05)
            assert reads == ["read"]
            await other.write(lambda tx: tx.run(xe.CREDENTIALS_MOVED))
            after = ask()
            for _ in range(1000):  # its look at the counter is a query: it reads once that is back
                if len(reads) == 2:
                    break
                await asyncio.sleep(0.002)
            gate.set()
            return [await first, await before, await after]
        finally:
            await other.close()
            await database.close()

    assert asyncio.run(scenario()) == ["key row 1", "key row 1", "key row 2"]


def test_a_players_forget_reaches_the_fleet_only_while_some_process_watches_it(
    postgres_db: str, redis_fresh: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every change forgets its guild's player, but the forget is published to the fleet only
    while some process remembers that player (its watch key in Redis): a guild no process reads
    costs the stream nothing; a process that reads it hears every later change; and a watch that
    lapsed forgets what it covered before its next use (a change meanwhile was not published)."""
    import redis.asyncio

    monkeypatch.setattr(xe, "WATCH_LEASE", 1.0)

    async def main() -> list[Any]:
        config = xe.Config(db=postgres_db, redis_url=redis_fresh.url)
        client = redis.asyncio.from_url(redis_fresh.url)
        seen: list[Any] = []  # checked once both have closed (a failure inside would leave them open)

        async def forgotten(host: xe.Host) -> list[Any]:
            """The players' forgets published so far, once a key's (always published) is there:
            the stream is in order, so whatever was published before it is there too."""
            await host.create_key(GUILD, USER, rotate=True)
            for _ in range(500):
                frames = [
                    json.loads(f[b"f"])
                    for _, f in await client.xrange(config.redis_prefix + "events")
                    if f[b"t"] == b"forget"
                ]
                if frames and frames[-1] == [["keys"]]:
                    return [tag for frame in frames for tag in frame if tag[0] == "player"]
                await asyncio.sleep(0.01)
            raise AssertionError("the key's forget was not published")

        async def volume_heard(host: xe.Host, volume: int) -> int:
            for _ in range(200):
                state = await host.player_state(GUILD)
                if state.volume == volume:
                    break
                await asyncio.sleep(0.01)
            return state.volume

        async with xe.Host.open(config) as here, xe.Host.open(config) as there:
            await there.put_guild(GUILD, "G", [VOICE])
            await there.join(GUILD, VOICE)
            await there.set_volume(GUILD, 20)  # no process remembers the player
            seen.append(await forgotten(there))
            seen.append((await here.player_state(GUILD)).volume)  # remembered here, watched
            await there.set_volume(GUILD, 30)
            seen.append(await volume_heard(here, 30))
            seen.append(await forgotten(there))
            await asyncio.sleep(1.2)  # the watch lapses, its key gone from Redis
            await there.set_volume(GUILD, 40)  # so its forget is not published
            seen.append(len(await forgotten(there)))
            seen.append((await here.player_state(GUILD)).volume)  # yet not the remembered 30
        await client.aclose()
        return seen

    assert asyncio.run(main()) == [[], 20, 30, [["player", GUILD]], 1, 40]


def test_a_watch_lost_with_redis_data_is_noticed_and_its_player_read_again(
    postgres_db: str, redis_fresh: Any
) -> None:
    """Redis loses its data without a broken connection (a restart between two stream reads,
    which the client rides over; here, a flush): the watch keys are gone, so another process's
    forget of a watched player is dropped; the stream's next read notices (its mark of Redis's
    data is gone), and the remembered player is read again."""
    import redis.asyncio

    async def main() -> list[Any]:
        config = xe.Config(db=postgres_db, redis_url=redis_fresh.url)
        client = redis.asyncio.from_url(redis_fresh.url)
        seen: list[Any] = []  # checked once both have closed
        async with xe.Host.open(config) as here, xe.Host.open(config) as there:
            await there.put_guild(GUILD, "G", [VOICE])
            await there.join(GUILD, VOICE)
            await there.set_volume(GUILD, 20)
            seen.append((await here.player_state(GUILD)).volume)  # remembered here, watched
            await client.flushall()
            await there.set_volume(GUILD, 30)  # its forget finds no watch key: not published
            for _ in range(300):  # the stream's next read comes within its 1 s block
                volume = (await here.player_state(GUILD)).volume
                if volume == 30:
                    break
                await asyncio.sleep(0.01)
            seen.append(volume)
        await client.aclose()
        return seen

    assert asyncio.run(main()) == [20, 30]


def test_what_was_remembered_before_redis_lost_a_forget_is_read_again_though_no_request_came_meanwhile(
    postgres_db: str, redis_fresh: Any
) -> None:
    """Another process's forget lost with Redis's data (here: its commit's forget dropped, and
    Redis flushed, as a restart that kept nothing would), between two requests of this process:
    no request saw the stream unread, yet the stream's next read notices that Redis was emptied,
    and the search this process remembered from before is read again, not answered stale."""
    import redis.asyncio

    tracks = json.loads(CATALOG_FILE.read_text())["tracks"]

    async def main() -> list[Any]:
        config = xe.Config(db=postgres_db, redis_url=redis_fresh.url)
        client = redis.asyncio.from_url(redis_fresh.url)
        found: list[Any] = []
        async with xe.Host.open(config) as here, xe.Host.open(config) as there:
            found.append(await here.resolve("magia"))  # nothing yet: remembered (a catalog search)
            shared = there._services.stores.database
            share, shared._share = shared._share, lambda tags: None  # its forget is lost
            await there.import_catalog(tracks)
            shared._share = share
            await client.flushall()
            deadline = time.monotonic() + 10  # the stream's next read comes within its 1 s block
            while (track := await here.resolve("magia")) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            found.append(track)
        await client.aclose()
        return found

    first, then = asyncio.run(main())
    assert first is None and then is not None and then.identifier == "_n1o4D6G_XE"


CLAIMS = (
    "SELECT a.pid, a.client_port FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid "
    "WHERE l.locktype = 'advisory' AND a.application_name LIKE 'xenon-elixir serve %'"
)
"""The sessions that hold a server's claim on the database (:class:`xe.PostgresClaim`)."""


def _second_server_refused(db: str, refusal: str) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", "serve", "--db", db, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert second.stderr.startswith(f"xenon-elixir: {refusal} {xe.masked_url(db)}: "), second.stderr


@pytest.mark.parametrize("with_redis", [False, True], ids=["alone", "redis"])
def test_a_claim_a_restart_cut_is_taken_again_so_a_server_started_after_it_is_refused(
    make_postgres: Any, tmp_path: Path, request: pytest.FixtureRequest, with_redis: bool
) -> None:
    """PostgreSQL restarts under an idle server: its claim's connection (and lock) is gone, and
    its pool holds no connection to name it. It takes its claim again as soon as the server
    answers, so a server without Redis started after that is refused, as before the restart."""
    postgres = make_postgres()
    db = postgres.create_database()
    env = {"XE_REDIS_URL": request.getfixturevalue("redis_fresh").url} if with_redis else {}
    first = Server(db, tmp_path / "first.log", **env)
    try:
        postgres.kill()
        postgres.start()
        assert _until(lambda: len(postgres.execute(CLAIMS)) == 1)
        _second_server_refused(
            db, "servers with XE_REDIS_URL serve" if with_redis else "another server process serves"
        )
    finally:
        first.stop()
    assert "the claim on the database was lost and is held again" in first.log.read_text()


class SilencingProxy:
    """A TCP proxy to a PostgreSQL server, on a loopback port of its own, in a thread. Once
    ``silence(port)`` names a connection (by the port of its end towards the server, which the
    server shows as ``client_port``), that connection carries nothing more either way, and its
    end towards the server stays open when the client closes its own: a session the server
    still runs, that no one will ever speak on again (a network partition, a fenced primary)."""

    def __init__(self, upstream: int) -> None:
        self.port = free_port()
        self.silenced: set[int] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(upstream), self._loop).result(10)

    async def _serve(self, upstream: int) -> None:
        self._server = await asyncio.start_server(
            lambda reader, writer: self._pair(reader, writer, upstream), "127.0.0.1", self.port
        )

    async def _pair(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: int) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        towards = up_writer.get_extra_info("sockname")[1]

        async def carry(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while (data := await source.read(65536)) and towards not in self.silenced:
                sink.write(data)
                await sink.drain()
            if towards not in self.silenced:
                sink.close()

        with contextlib.suppress(asyncio.CancelledError):  # (closed: ended as any other task)
            await asyncio.gather(carry(reader, up_writer), carry(up_reader, writer), return_exceptions=True)
        for end in (writer, up_writer):
            end.close()

    def silence(self, port: int) -> None:
        self._loop.call_soon_threadsafe(self.silenced.add, port)

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            pairs = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pairs:
                task.cancel()
            await asyncio.gather(*pairs, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_a_claim_whose_session_goes_silent_is_ended_and_taken_again(
    make_postgres: Any, tmp_path: Path
) -> None:
    """The claim's connection stops carrying anything, its socket open at both ends (a network
    partition): the server's look at it every few seconds goes unanswered, so it drops that
    connection, asks PostgreSQL to end its session (by pid and start), and takes the claim again
    on a new connection once the session is gone; a second server is refused as before."""
    postgres = make_postgres()
    name = postgres.create_database().rsplit("/", 1)[1]
    proxy = SilencingProxy(postgres.port)
    db = f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}"
    first = Server(db, tmp_path / "first.log")
    try:
        ((pid, port),) = postgres.execute(CLAIMS)
        proxy.silence(int(port))
        assert _until(lambda: "is held again" in first.log.read_text(), 30), first.log.read_text()
        alive = f"SELECT count(*) FROM pg_stat_activity WHERE pid = {int(pid)}"
        assert postgres.execute(alive) == [("0",)]  # the silent session was ended
        assert [claim for claim, _ in postgres.execute(CLAIMS)] not in ([], [pid])
        _second_server_refused(db, "another server process serves")
    finally:
        first.stop()
        proxy.close()
