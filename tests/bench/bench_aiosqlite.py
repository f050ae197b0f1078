"""The SQLite writes of a play and of a mapper ingest, done by the module's writer thread
(``SqliteWriter``: a write is a transaction function run whole on its thread, in one hop, and
the writes that arrive while one commits are committed together) and by aiosqlite as a
straightforward store would use it (one connection, each write its own ``BEGIN IMMEDIATE`` ...
``COMMIT``, each statement awaited, an ``asyncio.Lock`` so that two writes' statements never
interleave on the one connection). Both run the module's own code for the write (its
statements, its rules), only the database's ``write`` differing, with the same PRAGMAs, each on
its own fresh copy of one seeded file, in one process on uvloop; aiosqlite is the figure, the
writer thread the baseline of the same round.

    python tests/bench/bench_aiosqlite.py [--rounds 5] [--plays 3200] [--batches 1000] [--batch 100] [--big 100000]

A play (``POST /api/v1/{guild}/play`` on a connected player nobody follows, past the search):
``PlayerStore.change`` with the play's change (``Player.enqueue``), committed by
``SqlitePlayers.commit``: the player and the front of its queue read (``PlayerStore.read``), the
change applied (``apply_change``), the track appended and the player written, the change
numbered, and the commit counted (``SqliteWriter._commit``); from one coroutine, and from 64
coroutines each playing in a guild of its own. An ingest (``POST /admin/loaders/{target}/ids``):
``LoadStore.stage_ids``, the loader checked and the ids staged (``SqliteLoads.stage``), the
commit counted; batches of 100 ids one after the other, as a loader sends them, and batches of
100,000.
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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent.parent))  # this checkout's xenon_elixir
from common import SOURCE, USER, VOICE

import xenon_elixir as xe

T = TypeVar("T")
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
MAX_QUEUE = 1_000_000
PRAGMAS = (  # SqliteFile.open's, with SQLite's own busy handler waiting up to write_wait (5 s)
    "busy_timeout = 5000",
    "synchronous = NORMAL",
    "foreign_keys = ON",
    "journal_mode = WAL",
)


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
    (started,) = db.execute(xe.SqliteLoads.loader_get, (TARGET,)).fetchone()[-1:]
    db.close()
    return started


def play(player: xe.Player | None) -> xe.Player:
    """The change of a play of TRACK (``Music.enqueue``'s)."""
    if player is None:
        raise xe.Invalid("not connected", xe.NOT_CONNECTED)
    player.enqueue([TRACK], USER, time.time(), MAX_QUEUE)
    return player


# The same writes through aiosqlite: a Database whose write is an aiosqlite transaction ------------


class AioTransaction:
    """``xe.Transaction`` on an aiosqlite connection: each statement one hop to its thread,
    awaited (``execute_fetchall`` for a row, ``execute`` for a change, ``executemany``)."""

    __slots__ = ("conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def one(self, sql: str, *args: Any) -> Any:
        rows = list(await self.conn.execute_fetchall(sql, args))
        return rows[0] if rows else None

    async def value(self, sql: str, *args: Any) -> Any:
        row = await self.one(sql, *args)
        return None if row is None else row[0]

    async def all(self, sql: str, *args: Any) -> list[Any]:
        return list(await self.conn.execute_fetchall(sql, args))

    async def run(self, sql: str, *args: Any) -> int:
        return (await self.conn.execute(sql, args)).rowcount

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    number = xe.SqliteTransaction.number  # the module's counter statement, on this one's value


class AioWrites:
    """What ``SqlitePlayers.commit`` and ``LoadStore.stage_ids`` use of a ``SqliteDatabase``
    (``write``, ``scratch``, ``answers``), with ``write`` as a straightforward aiosqlite store
    does it: under a lock, ``BEGIN IMMEDIATE``, ``run``'s statements each awaited, the commit
    counted as ``SqliteWriter._commit`` counts it, ``COMMIT``; the tags forgotten and ``after``
    run in commit order. ``counts`` is the writer whose commit counters it keeps (a server's, so
    that its reads do not take these commits for another process's)."""

    commits = committing = before = -1
    on_commit: Callable[[float], None] | None = None

    def __init__(self, conn: aiosqlite.Connection, answers: xe.Answers, counts: Any = None) -> None:
        self.conn = conn
        self.tx = AioTransaction(conn)
        self.answers = answers
        self.counts = self if counts is None else counts
        self.lock = asyncio.Lock()

    @classmethod
    async def connect(cls, path: str, answers: xe.Answers, counts: Any = None) -> AioWrites:
        conn = await aiosqlite.connect(path, isolation_level=None)
        for pragma in PRAGMAS:
            await conn.execute(f"PRAGMA {pragma}")
        return cls(conn, answers, counts)

    async def close(self) -> None:
        await self.conn.close()

    def scratch(self, area: str) -> dict[Any, Any]:
        return {}  # every write is a transaction of its own: nothing is left for the next

    async def write(
        self,
        run: Callable[[Any], Awaitable[T]],
        *,
        forgets: xe.Tags = (),
        after: Callable[[T], None] | None = None,
    ) -> T:
        run = xe.moving_credentials(run, forgets)
        conn, counts = self.conn, self.counts
        async with self.lock:
            began = time.perf_counter()
            await conn.execute("BEGIN IMMEDIATE")
            try:
                try:
                    value = await run(self.tx)
                except sqlite3.IntegrityError as exc:
                    raise xe.Conflict("conflict", str(exc))
                commits = await self.tx.value(xe._COUNT_COMMIT)
                counts.committing, counts.before = commits, counts.commits
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
            foreign, counts.commits = commits != counts.commits + 1, commits
            if counts.on_commit is not None:
                counts.on_commit(time.perf_counter() - began)
            if foreign:
                self.answers.clear()
            self.answers.forget_all(forgets)
            if after is not None:
                after(value)
            return value


# The two stores -----------------------------------------------------------------------------------


class Writer:
    """The module's writer thread: ``SqlitePlayers`` and ``SqliteLoads`` on a ``SqliteDatabase``."""

    name = "writer thread"

    async def open(self, path: str) -> None:
        self.db: Any = await xe.SqliteDatabase(path).open()
        self.areas()

    def areas(self) -> None:
        self.players = xe.SqlitePlayers(self.db)
        self.loads = xe.SqliteLoads(self.db, time.time, 1000, 3600)

    async def close(self) -> None:
        await self.db.close()

    async def play(self, guild: str) -> xe.Player | None:
        return await self.players.change(guild, play, time.time())

    async def ids(self, started: int, ids: dict[str, str]) -> None:
        await self.loads.stage_ids(TARGET, started, ids)


class Aiosqlite(Writer):
    """The same areas, the same code, on ``AioWrites``: every statement awaited, a transaction per write."""

    name = "aiosqlite"

    async def open(self, path: str) -> None:
        self.db = await AioWrites.connect(path, xe.Answers())
        self.areas()


# End to end: the server with every player change through aiosqlite -------------------------------


class AioPlayers(xe.SqlitePlayers):
    """``SqlitePlayers`` whose ``commit`` (the module's, unchanged) writes through aiosqlite: its
    reads stay the database's, on the loop."""

    def __init__(self, db: xe.SqliteDatabase) -> None:
        super().__init__(db)
        self.sqlite = db.aio  # type: ignore[attr-defined]


def install() -> None:
    """Make every player change of this process (a play's among them) an aiosqlite write: the
    database opens an aiosqlite connection beside its own, with the writer's PRAGMAs, and keeps
    its writer's commit counters with it."""
    opened, closed = xe.SqliteDatabase.open, xe.SqliteDatabase.close

    async def open_(self: xe.SqliteDatabase) -> xe.SqliteDatabase:
        await opened(self)
        self.aio = await AioWrites.connect(self.path, self.answers, self._writer)  # type: ignore[attr-defined]
        return self

    async def close(self: xe.SqliteDatabase) -> None:
        if getattr(self, "aio", None) is not None:
            await self.aio.close()  # type: ignore[attr-defined]
        await closed(self)

    xe.SqliteDatabase.open, xe.SqliteDatabase.close = open_, close  # type: ignore[method-assign]
    xe.SqliteDatabase.players = AioPlayers


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
    sent = [
        {str(500000000000000000 + b * size + i): str(800000000000000000 + i) for i in range(size)}
        for b in range(batches)
    ]
    began = time.perf_counter()
    for batch in sent:
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
