"""The SQLite writes of a play and of a mapper ingest, done by the module's writer thread
(``SqliteWriter``: a write is a function run whole on its thread, in one hop, and the writes
that arrive while one commits are committed together) and by aiosqlite as a straightforward
store would use it (one connection, each write its own ``BEGIN IMMEDIATE`` ... ``COMMIT``,
each statement awaited, an ``asyncio.Lock`` so that two writes' statements never interleave on
the one connection). Both run the same SQL statements as the module, with the same PRAGMAs,
each on its own fresh copy of one seeded file, in one process on uvloop; aiosqlite is the
figure, the writer thread the baseline of the same round.

    python tests/bench/bench_aiosqlite.py [--rounds 5] [--plays 3200] [--batches 1000] [--batch 100] [--big 100000]

A play (``POST /api/v1/{guild}/play`` on a connected player nobody follows, past the search):
the player and the front of its queue read, the track appended, the player written, the change
numbered (``SqlitePlayers.change``), and the commit counted (``SqliteWriter._commit``); from one
coroutine, and from 64 coroutines each playing in a guild of its own. An ingest
(``POST /admin/loaders/{target}/ids``): the loader checked, the ids staged
(``SqliteLoads.stage_ids``), the commit counted; batches of 100 ids one after the other, as a
loader sends them, and batches of 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent.parent))  # this checkout's xenon_elixir
from common import SOURCE, USER, VOICE

import xenon_elixir as xe

GUILDS = [str(766045633697021000 + i) for i in range(100)]
TARGET = "496683369665658880"
TRACK = xe.Track(
    source="youtube",
    identifier="bench000001",
    title="night drive song 1",
    author="Artist 1",
    length=180_000,
    uri="https://www.youtube.com/watch?v=bench000001",
)
ROW = xe._track_row(TRACK)
PRAGMAS = (  # SqliteWriter._open's, with SQLite's own busy handler waiting up to write_wait (5 s)
    "busy_timeout = 5000",
    "synchronous = NORMAL",
    "foreign_keys = ON",
    "journal_mode = WAL",
)
Players, Loads = xe.SqlitePlayers, xe.SqliteLoads


def seed(path: str) -> int:
    """100 guilds with a connected, idle player each, and a loader running on TARGET: its start seq."""

    async def run() -> None:
        async with xe.Host.open(xe.Config(db=path)) as host:
            await host.import_catalog([TRACK])
            for guild in GUILDS:
                await host.put_guild(guild, "Bench", [VOICE])
                await host.join(guild, VOICE)
            await host.start_loader(TARGET, "backup", SOURCE, backup_id="bench")

    asyncio.run(run())
    db = sqlite3.connect(path)
    (started,) = db.execute("SELECT start_seq FROM loaders WHERE target_id = ?", (TARGET,)).fetchone()
    db.close()
    return started


# The writes, as the module's store runs them (on the writer thread, in one hop each) ------------


def play_run(guild: str) -> Callable[[sqlite3.Connection], int]:
    def run(db: sqlite3.Connection) -> int:
        channel, volume, paused, position, anchor, size = db.execute(xe._PLAYER_GET, (guild,)).fetchone()
        db.execute(xe._QUEUE_FRONT, (guild, 2, 0)).fetchall()
        entry_id = db.execute(Players.queue_append, (guild, *ROW, USER)).lastrowid
        db.execute(Players.upsert, (guild, channel, volume, paused, position, anchor, None, size + 1))
        db.execute(Players.seq_next).fetchone()
        return entry_id

    return run


def ids_run(started: int, rows: list[tuple[str, str, str]]) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        if db.execute(Loads.loader_is, (TARGET, started)).fetchone() is None:
            raise xe.NotFound("loader", "no loader")
        db.executemany(Loads.ids_stage, rows)

    return run


class Writer:
    """The module's writer thread (through ``SqliteDatabase.write``, as the stores call it)."""

    name = "writer thread"

    async def open(self, path: str) -> None:
        self.db = await xe.SqliteDatabase(path).open()

    async def close(self) -> None:
        await self.db.close()

    async def play(self, guild: str) -> int:
        return await self.db.write(play_run(guild), forgets=[("player", guild)])

    async def ids(self, started: int, rows: list[tuple[str, str, str]]) -> None:
        await self.db.write(ids_run(started, rows))


# The same writes through aiosqlite --------------------------------------------------------------


class Aiosqlite:
    """aiosqlite as a straightforward store uses it: every statement awaited, a transaction per write."""

    name = "aiosqlite"

    async def open(self, path: str) -> None:
        self.db = await aiosqlite.connect(path, isolation_level=None)
        for pragma in PRAGMAS:
            await self.db.execute(f"PRAGMA {pragma}")
        self.lock = asyncio.Lock()

    async def close(self) -> None:
        await self.db.close()

    async def _transaction(self, body: Callable[[aiosqlite.Connection], Awaitable[Any]]) -> Any:
        async with self.lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                value = await body(db)
                await db.execute_fetchall(xe._COUNT_COMMIT)
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            return value

    async def play(self, guild: str) -> int:
        async def body(db: aiosqlite.Connection) -> int:
            ((channel, volume, paused, position, anchor, size),) = await db.execute_fetchall(
                xe._PLAYER_GET, (guild,)
            )
            await db.execute_fetchall(xe._QUEUE_FRONT, (guild, 2, 0))
            entry_id = (await db.execute(Players.queue_append, (guild, *ROW, USER))).lastrowid
            await db.execute(
                Players.upsert, (guild, channel, volume, paused, position, anchor, None, size + 1)
            )
            await db.execute_fetchall(Players.seq_next)
            return entry_id

        return await self._transaction(body)

    async def ids(self, started: int, rows: list[tuple[str, str, str]]) -> None:
        async def body(db: aiosqlite.Connection) -> None:
            if not await db.execute_fetchall(Loads.loader_is, (TARGET, started)):
                raise xe.NotFound("loader", "no loader")
            await db.executemany(Loads.ids_stage, rows)

        await self._transaction(body)


# End to end: the server with a play's write done through aiosqlite -----------------------------


async def _load_front(db: aiosqlite.Connection, player: xe.Player, count: int) -> None:
    """``xe.load_front`` through aiosqlite."""
    offset = player.dropped + len(player.queue)
    rows = await db.execute_fetchall(xe._QUEUE_FRONT, (player.guild_id, count, offset))
    player.queue.extend(xe.QueueEntry(r[0], xe._track_of(r[1:10]), r[10]) for r in rows)
    player.more = max(player.more - len(rows), 0)


async def _change(
    self: xe.SqlitePlayers,
    guild_id: str,
    change: Callable[[xe.Player | None], xe.Player | None],
    now: float,
    after: Callable[[xe.Player | None, int], None] | None = None,
    front: int = 2,
) -> xe.Player | None:
    """``SqlitePlayers.change`` written for aiosqlite: the same statements, each awaited, in a
    transaction of its own (no group commit), the commit counted as the writer thread counts it."""
    database, writer = self.db, self.db._writer
    db: aiosqlite.Connection = database.aio  # type: ignore[attr-defined]
    async with database.aio_lock:  # type: ignore[attr-defined]
        await db.execute("BEGIN IMMEDIATE")
        try:
            player = None
            for channel, volume, paused, position, anchor, size in await db.execute_fetchall(
                xe._PLAYER_GET, (guild_id,)
            ):
                player = xe.Player(guild_id, channel, volume, bool(paused), position, anchor, more=size)
                await _load_front(db, player, front)
            if player is not None:
                while True:
                    player.settle(now)
                    if player.queue or not player.more:
                        break
                    await _load_front(db, player, xe.PLAYER_FRONT)
                if len(player.queue) < front and player.more:
                    await _load_front(db, player, front - len(player.queue))
            changed = change(player)
            if changed is not None and len(changed.queue) < front and changed.more:
                await _load_front(db, changed, front - len(changed.queue))
            if changed is None:
                await db.execute(Players.queue_clear, (guild_id,))
                await db.execute(Players.delete, (guild_id,))
            else:
                if changed.dropped:
                    await db.execute(Players.queue_drop_front, (guild_id, changed.dropped))
                for entry in changed.appended:
                    row = (guild_id, *xe._track_row(entry.track), entry.requested_by)
                    entry.entry_id = (await db.execute(Players.queue_append, row)).lastrowid
                row = (guild_id, changed.channel_id, changed.volume, int(changed.paused), changed.position)
                await db.execute(Players.upsert, (*row, changed.anchor, changed.ends_at, changed.size))
                changed.dropped, changed.appended = 0, []
            ((seq,),) = await db.execute_fetchall(Players.seq_next)
            ((commits,),) = await db.execute_fetchall(xe._COUNT_COMMIT)
            writer.committing, writer.before = commits, writer.commits  # not another process's
            await db.execute("COMMIT")
            writer.commits = commits
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
    database.answers.forget(("player", guild_id))
    if (player is None) != (changed is None):
        database.answers.forget(("connected", guild_id))
    if after is not None:
        after(changed, seq)
    return changed


def install() -> None:
    """Make every player change of this process (a play's among them) an aiosqlite write: the
    database opens an aiosqlite connection beside its own, with the writer's PRAGMAs."""
    opened, closed = xe.SqliteDatabase.open, xe.SqliteDatabase.close

    async def open_(self: xe.SqliteDatabase) -> xe.SqliteDatabase:
        await opened(self)
        self.aio = await aiosqlite.connect(self.path, isolation_level=None)  # type: ignore[attr-defined]
        for pragma in PRAGMAS:
            await self.aio.execute(f"PRAGMA {pragma}")  # type: ignore[attr-defined]
        self.aio_lock = asyncio.Lock()  # type: ignore[attr-defined]
        return self

    async def close(self: xe.SqliteDatabase) -> None:
        if getattr(self, "aio", None) is not None:
            await self.aio.close()  # type: ignore[attr-defined]
        await closed(self)

    xe.SqliteDatabase.open, xe.SqliteDatabase.close = open_, close  # type: ignore[method-assign]
    xe.SqlitePlayers.change = _change  # type: ignore[method-assign]


LAUNCHER = """
import sys
sys.path.insert(0, {here!r})
import bench_aiosqlite
{install}
from xenon_elixir import app
"""


def http(folder: str, rounds: int, seconds: int) -> list[tuple[float, float, float, float]]:
    """(writer thread req/s, p99 ms; aiosqlite req/s, p99 ms) of ``POST /api/v1/{guild}/play`` with
    wrk -t1 -c64, as bench_http measures it, per round: a server of each kind, each on its own
    copy of one seeded file."""
    from bench_http import lua, wrk
    from common import GUILD, Uvicorn
    from common import seed as seed_http

    here = str(Path(__file__).parent)
    db = str(Path(folder, "http.db"))
    secrets = seed_http(db, app_dir=str(Path(here).parent.parent))
    script = lua(
        "POST",
        {"Authorization": f"Bearer {secrets['key']}"},
        f'{{"user": "{USER}", "query": "night rain song"}}',
    )
    servers = {}
    for kind, install in (("writer", ""), ("aiosqlite", "bench_aiosqlite.install()")):
        Path(folder, f"{kind}_app.py").write_text(LAUNCHER.format(here=here, install=install))
        shutil.copyfile(db, f"{db}.{kind}")
        env = {"XE_DB": f"{db}.{kind}", "XE_RATE_LIMITS": "off", "XE_MAX_QUEUE": "1000000"}
        servers[kind] = Uvicorn(f"{kind}_app:app", app_dir=folder, env={**env, "XE_ACCESS_LOG": "0"})
    url = {kind: f"{server.url}/api/v1/{GUILD}/play" for kind, server in servers.items()}
    figures = []
    try:
        for kind in servers:  # warm-up
            wrk(url[kind], script, 2, 64, 1)
        for round_ in range(rounds):
            order = ("writer", "aiosqlite") if round_ % 2 == 0 else ("aiosqlite", "writer")
            got = {kind: wrk(url[kind], script, seconds, 64, 1) for kind in order}
            assert not got["writer"][2] and not got["aiosqlite"][2], f"non-2xx answers: {got}"
            figures.append((*got["writer"][:2], *got["aiosqlite"][:2]))
    finally:
        for server in servers.values():
            server.stop()
    return figures


# The measurements ---------------------------------------------------------------------------------


async def plays(store: Writer | Aiosqlite, count: int, concurrency: int) -> float:
    """Plays per second: ``count`` plays from ``concurrency`` coroutines, each in guilds of its own."""

    async def player(first: int) -> None:
        mine = GUILDS[first::concurrency] if concurrency < len(GUILDS) else [GUILDS[first]]
        for i in range(count // concurrency):
            await store.play(mine[i % len(mine)])

    began = time.perf_counter()
    await asyncio.gather(*(player(i) for i in range(concurrency)))
    return count // concurrency * concurrency / (time.perf_counter() - began)


async def ingest(store: Writer | Aiosqlite, started: int, batches: int, size: int) -> float:
    """Ids per second: ``batches`` batches of ``size`` new ids, one after the other."""
    rows = [
        [(TARGET, str(500000000000000000 + b * size + i), str(800000000000000000 + i)) for i in range(size)]
        for b in range(batches)
    ]
    began = time.perf_counter()
    for batch in rows:
        await store.ids(started, batch)
    return batches * size / (time.perf_counter() - began)


async def measure(
    kind: type[Writer] | type[Aiosqlite], template: str, folder: str, what: Callable[..., Awaitable[float]]
) -> float:
    """``what(store)`` on a fresh copy of the seeded file."""
    path = str(Path(folder, f"{kind.name.replace(' ', '-')}.db"))
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    shutil.copyfile(template, path)
    store = kind()
    await store.open(path)
    try:
        return await what(store)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="each round measures both, in turn first")
    parser.add_argument("--plays", type=int, default=3200, help="plays per figure")
    parser.add_argument("--batches", type=int, default=1000, help="batches of ids per figure")
    parser.add_argument("--batch", type=int, default=100, help="ids per batch")
    parser.add_argument("--seconds", type=int, default=5, help="per HTTP figure (wrk -t1 -c64)")
    parser.add_argument("--no-http", action="store_true", help="the statements only, not the servers")
    parser.add_argument("--big", type=int, default=100_000, help="ids of each of 3 big batches")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        template = str(Path(folder, "seeded.db"))
        started = seed(template)
        figures: dict[str, Callable[[Writer | Aiosqlite], Awaitable[float]]] = {
            "play, 1 at a time (plays/s)": lambda store: plays(store, args.plays, 1),
            "play, 64 at once, 64 guilds (plays/s)": lambda store: plays(store, args.plays, 64),
            f"ingest, {args.batches:,} batches of {args.batch} ids (ids/s)": lambda store: ingest(
                store, started, args.batches, args.batch
            ),
            f"ingest, 3 batches of {args.big:,} ids (ids/s)": lambda store: ingest(
                store, started, 3, args.big
            ),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in figures}

        async def run() -> None:
            for kind in (Writer, Aiosqlite):  # warm-up
                await measure(kind, template, folder, lambda store: plays(store, 200, 8))
            for round_ in range(args.rounds):
                for name, what in figures.items():
                    order = (Writer, Aiosqlite) if round_ % 2 == 0 else (Aiosqlite, Writer)
                    got = {kind: await measure(kind, template, folder, what) for kind in order}
                    results[name].append((got[Writer], got[Aiosqlite]))

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
        served = [] if args.no_http else http(folder, args.rounds, args.seconds)

    print(
        f"machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"aiosqlite {aiosqlite.__version__}, uvloop; WAL, synchronous=NORMAL; {args.rounds} rounds"
    )
    print(
        "each ratio is aiosqlite's figure against the writer thread's in the same round; the median is shown"
    )
    for name, runs in results.items():
        ratios = [a / w for w, a in runs]
        print(
            f"{name:48} writer thread {statistics.median(w for w, _ in runs):9.0f}   "
            f"aiosqlite {statistics.median(a for _, a in runs):9.0f}   ratio {statistics.median(ratios):4.2f}x"
        )
        print(f"{'':48} rounds: {', '.join(f'{r:.2f}x' for r in ratios)}")
    if served:
        print(
            f"end to end: POST /api/v1/{{guild}}/play (search in 2,000 tracks + the write), wrk -t1 -c64, "
            f"{args.seconds} s per figure, uvicorn httptools+uvloop, 1 worker, access log off; aiosqlite: every "
            "player change of the server through aiosqlite (bench_aiosqlite.install)"
        )
        rps = [a / w for w, _, a, _ in served]
        p99 = [a / w for _, w, _, a in served]
        columns = [statistics.median(run[i] for run in served) for i in range(4)]
        print(
            f"{'play over HTTP (req/s; p99)':48} writer thread {columns[0]:9.0f}   aiosqlite {columns[2]:9.0f}   "
            f"ratio {statistics.median(rps):4.2f}x; p99 {columns[1]:.1f} / {columns[3]:.1f} ms, "
            f"{statistics.median(p99):4.2f}x"
        )
        print(f"{'':48} rounds: {', '.join(f'{r:.2f}x/{q:.2f}x' for r, q in zip(rps, p99, strict=True))}")


if __name__ == "__main__":
    main()
