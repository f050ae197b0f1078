"""Costs that do not grow with the data: each figure measured at a small size and a large one, in
the same run, on real servers on loopback (wrk -t1 -c16, access log off), and printed as a ratio
with its target.

    python tests/bench/bench_growth.py [--quick] [--seconds 5]

* play with a common-word search: 2k tracks against 1M tracks;
* a 100k-id mapper with and without 10 unrelated writes a second;
* GET /health while five replays of a 10k-event log run at once;
* startup with 100 and with 20k connected players (20-track queues): time and memory;
* one start+done with an event log of 0-2k and of 8-10k events, and the prune's query plan;
* a 1M-track import through the admin API (JSON lines) and the CLI, and the longest a write
  waits meanwhile;
* ``migrate`` of the 1M-track database into PostgreSQL, against ``backup`` of it (SQLite's own
  copy), and the same search answers from both stores afterwards; a search's time on each
  (``--only migrate``; a PostgreSQL server of its own, fsync off).

``--quick`` divides the large sizes by 10 (a minute, not ten).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from bench_http import lua, wrk
from common import GUILD, SOURCE, TARGET, USER, VOICE, Uvicorn

import xenon_elixir as xe

ADMIN_TOKEN = "growth-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BOT = "386861188891279362"
WORDS = "night drive blue summer rain city heart fire dream ocean gold wild".split()
ENV = {
    "XE_ACCESS_LOG": "0",
    "XE_RATE_LIMITS": "off",
    "XE_MAX_QUEUE": "1000000",
    "XE_ADMIN_TOKEN": ADMIN_TOKEN,
}
rows: list[tuple[str, str, str, str]] = []
RAW_ANSWER = """
with open(ANSWER, "rb") as file:
    BODY = file.read()
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))],
}


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send(START)
        await send({"type": "http.response.body", "body": BODY})
"""
"""An ASGI app that answers every request with one file's bytes: the floor of a big answer."""


def report(figure: str, value: str, target: str, met: bool | None) -> None:
    verdict = "" if met is None else ("PASS" if met else "MISS")
    rows.append((figure, value, target, verdict))
    print(f"  {figure:<66} {value:<30} {target:<14} {verdict}", flush=True)


def track(i: int) -> dict[str, Any]:
    title = f"{WORDS[i % 12]} {WORDS[i // 12 % 12]} song {i}" + (" love" if i % 25 == 0 else "")
    return {
        "source": "youtube",
        "identifier": f"g{i:08d}",
        "title": title,
        "author": f"Artist {i % 997}",
        "length": 180_000 + i % 60_000,
        "uri": f"https://www.youtube.com/watch?v=g{i:08d}",
    }


def base(db: str, tracks: int) -> dict[str, str]:
    """A database with the schema, a guild, a key, a bot, and ``tracks`` tracks (4% say "love")."""

    async def run() -> dict[str, str]:
        async with xe.Host.open(xe.Config(db=db)) as host:
            await host.put_guild(GUILD, "Growth", [VOICE])
            key = await host.create_key(GUILD, USER, rotate=True)
            token = await host.grant_bot(BOT, "Growth")
            return {"key": key, "token": token}

    made = asyncio.run(run())
    with sqlite3.connect(db) as connection:  # straight into the table; its triggers fill the index
        for start in range(0, tracks, 50_000):
            chunk = [track(i) for i in range(start, min(start + 50_000, tracks))]
            connection.executemany(
                "INSERT INTO tracks (source, identifier, title, author, length, uri, is_stream) "
                "VALUES (:source, :identifier, :title, :author, :length, :uri, 0)",
                chunk,
            )
    return made


def play(server: Uvicorn, key: str, query: str, seconds: int) -> tuple[float, float]:
    httpx.post(
        f"{server.url}/api/v1/{GUILD}/join",
        json={"user": USER, "channel": VOICE},
        headers={"Authorization": f"Bearer {key}"},
    )
    script = lua("POST", {"Authorization": f"Bearer {key}"}, f'{{"user": "{USER}", "query": "{query}"}}')
    rps, p99, bad = wrk(f"{server.url}/api/v1/{GUILD}/play", script, seconds, 16, 1)
    assert bad == 0, f"{bad} non-2xx answers to play"
    return rps, p99


def catalog_growth(folder: Path, large: int, seconds: int) -> None:
    print(f"play, a common word, 2,000 against {large:,} tracks", flush=True)
    figures = {}
    for size in (2_000, large):
        db = str(folder / f"catalog{size}.db")
        began = time.monotonic()
        secrets = base(db, size)
        built = time.monotonic() - began
        server = Uvicorn("xenon_elixir:app", env={**ENV, "XE_DB": db})
        try:
            figures[size] = {
                q: play(server, secrets["key"], q, seconds) for q in ("love", "rain song", "song 1234")
            }
        finally:
            server.stop()
        print(
            f"    {size:>9,} tracks (built in {built:.0f} s): "
            + ", ".join(f"{q!r} {r:,.0f} req/s p99 {p:.1f} ms" for q, (r, p) in figures[size].items()),
            flush=True,
        )
    for query in ("love", "rain song", "song 1234"):
        ratio = figures[large][query][0] / figures[2_000][query][0]
        target = "≥ 0.5x" if query == "love" else ""
        report(
            f"play {query!r}: {large:,} tracks / 2,000 tracks, req/s",
            f"{ratio:.2f}x",
            target,
            ratio >= 0.5 if query == "love" else None,
        )


def mapper_growth(folder: Path, ids: int, seconds: int) -> None:
    print(f"a {ids:,}-id mapper, alone and beside 10 unrelated writes a second", flush=True)
    db = str(folder / "mapper.db")
    secrets = base(db, 100)

    async def load() -> None:
        async with xe.Host.open(xe.Config(db=db)) as host:
            await host.start_loader(TARGET, "backup", SOURCE, backup_id="growth0001")
            for start in range(0, ids, 10_000):
                await host.loader_ids(
                    TARGET,
                    {str(10**17 + i): str(2 * 10**17 + i) for i in range(start, min(start + 10_000, ids))},
                )
            await host.loader_done(TARGET, ok=True)

    asyncio.run(load())
    server = Uvicorn("xenon_elixir:app", env={**ENV, "XE_DB": db})
    url = f"{server.url}/api/mappers?target={TARGET}&source={SOURCE}"
    script = lua(headers={"Authorization": secrets["token"]})
    stop = threading.Event()
    waits: list[float] = []

    def writes() -> None:
        with httpx.Client(base_url=server.url, headers=ADMIN) as client:
            n = 0
            while not stop.wait(0.1):  # 10 a second, none of them about the mapper
                n += 1
                began = time.perf_counter()
                client.put(
                    f"/admin/guilds/{300000000000000000 + n % 50}",
                    json={"name": f"w{n}", "voice_channels": []},
                )
                waits.append(time.perf_counter() - began)

    try:
        wrk(url, script, 2, 16, 1)  # warm: the answer is remembered
        answer = httpx.get(url, headers={"Authorization": secrets["token"]}).content
        alone = wrk(url, script, seconds, 16, 1)
        writer = threading.Thread(target=writes)
        writer.start()
        try:
            busy = wrk(url, script, seconds, 16, 1)
        finally:
            stop.set()
            writer.join()
    finally:
        server.stop()
    # The floor: the same bytes from a raw ASGI app on the same uvicorn, in the same run. A 100k-id
    # answer is 4 MB, and its tail is mostly the kernel copying it (twice, on 2 shared cores).
    Path(folder, "answer.json").write_bytes(answer)
    Path(folder, "raw_answer.py").write_text(RAW_ANSWER.replace("ANSWER", repr(str(folder / "answer.json"))))
    raw = Uvicorn("raw_answer:app", app_dir=str(folder))
    try:
        floor = wrk(raw.url + "/", lua(), seconds, 16, 1)
    finally:
        raw.stop()
    print(
        f"    alone {alone[0]:,.0f} req/s p99 {alone[1]:.1f} ms; with writes {busy[0]:,.0f} req/s p99 "
        f"{busy[1]:.1f} ms; {len(waits)} writes, longest {max(waits) * 1000:.1f} ms; the same "
        f"{len(answer) / 1e6:.1f} MB from a raw ASGI app {floor[0]:,.0f} req/s p99 {floor[1]:.1f} ms "
        f"[load {os.getloadavg()[0]:.1f}]",
        flush=True,
    )
    report(
        f"mapper of {ids:,} ids under 10 writes/s / alone, req/s",
        f"{busy[0] / alone[0]:.2f}x",
        "≥ 0.9x",
        busy[0] / alone[0] >= 0.9,
    )
    report(f"mapper of {ids:,} ids under 10 writes/s, p99", f"{busy[1]:.1f} ms", "≤ 50 ms", busy[1] <= 50)
    report("the same answer from a raw ASGI app (the floor), p99", f"{floor[1]:.1f} ms", "—", None)


def replay_stall(folder: Path, events: int) -> None:
    print(f"GET /health every 5 ms while five replays of {events:,} events run at once", flush=True)
    db = str(folder / "replay.db")
    secrets = base(db, 10)

    async def fill() -> None:
        async with xe.Host.open(xe.Config(db=db, event_log_size=events)) as host:
            for i in range(events // 2):
                await host.start_loader(10**17 + i, "backup", SOURCE, backup_id="growth0001")
                await host.loader_done(10**17 + i)

    asyncio.run(fill())
    server = Uvicorn("xenon_elixir:app", env={**ENV, "XE_DB": db})

    async def health_while(task: Callable[[], Any] | None) -> list[float]:
        waits: list[float] = []
        async with httpx.AsyncClient(base_url=server.url) as client:
            running = asyncio.create_task(task()) if task else None
            deadline = time.monotonic() + 1.5
            while (running and not running.done()) or (not running and time.monotonic() < deadline):
                began = time.perf_counter()
                await client.get("/health")
                waits.append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(0.005)
            if running:
                await running
        return waits

    async def replays() -> None:
        from websockets.asyncio.client import connect

        async def one(i: int) -> None:
            await asyncio.sleep(1.05 * i)  # one handshake a second per bot, unless limits are off
            async with connect(
                f"{server.ws_url}/api/loaders/ws?since=0",
                additional_headers={"Authorization": secrets["token"]},
                max_size=None,
            ) as ws:
                for _ in range(events):
                    await ws.recv()

        await asyncio.gather(*(one(0) for _ in range(5)))

    server.ws_url = server.url.replace("http", "ws")  # type: ignore[attr-defined]
    try:
        quiet = asyncio.run(health_while(None))
        busy = asyncio.run(health_while(replays))
    finally:
        server.stop()
    print(
        f"    /health alone: max {max(quiet):.1f} ms; during the replays: max {max(busy):.1f} ms, "
        f"p99 {statistics.quantiles(busy, n=100)[98]:.1f} ms over {len(busy)} polls",
        flush=True,
    )
    report(
        f"/health during five {events:,}-event replays, longest wait",
        f"{max(busy):.1f} ms",
        "≤ 50 ms",
        max(busy) <= 50,
    )


def players_startup(folder: Path, many: int) -> None:
    print(f"startup with 100 and with {many:,} connected players (20-track queues)", flush=True)
    figures = {}
    for count in (100, many):
        db = str(folder / f"players{count}.db")
        base(db, 0)
        with sqlite3.connect(db) as connection:
            connection.executemany(
                "INSERT INTO players (guild_id, channel_id, volume, paused, position, anchor, ends_at, size) "
                "VALUES (?, ?, 100, 0, 0, ?, ?, 20)",
                [(str(10**17 + g), VOICE, time.time(), time.time() + 180 + g % 600) for g in range(count)],
            )
            connection.executemany(
                "INSERT INTO queue (guild_id, source, identifier, title, author, length, uri, thumbnail, "
                "is_stream, requested_by) VALUES (?, 'youtube', ?, ?, 'Artist', 180000, ?, NULL, 0, ?)",
                [
                    (str(10**17 + g), f"q{g}x{n}", f"Track {n}", f"https://y.com/q{g}x{n}", USER)
                    for g in range(count)
                    for n in range(20)
                ],
            )
        began = time.monotonic()
        server = Uvicorn("xenon_elixir:app", env={**ENV, "XE_DB": db})
        while httpx.get(server.url + "/health").status_code != 200:
            time.sleep(0.01)
        figures[count] = (time.monotonic() - began, server.rss_kib() / 1024)
        server.stop()
        print(
            f"    {count:>7,} players: ready in {figures[count][0]:.2f} s, {figures[count][1]:.0f} MiB",
            flush=True,
        )
    report(f"startup with {many:,} players", f"{figures[many][0]:.2f} s", "≤ 1 s", figures[many][0] <= 1)
    report(
        f"memory with {many:,} players", f"{figures[many][1]:.0f} MiB", "≤ 150 MiB", figures[many][1] <= 150
    )


def publish_cost(folder: Path, events: int) -> None:
    print(f"one start+done at a log of 0-2k events and of {events - 2000:,}-{events:,}", flush=True)
    db = str(folder / "publish.db")
    base(db, 0)

    async def run() -> tuple[float, float]:
        async with xe.Host.open(xe.Config(db=db, event_log_size=events)) as host:

            async def pairs(n: int, first: int) -> float:
                began = time.perf_counter()
                for i in range(n):
                    await host.start_loader(10**17 + first + i, "backup", SOURCE, backup_id="growth0001")
                    await host.loader_done(10**17 + first + i)
                return (time.perf_counter() - began) / n * 1000

            small = await pairs(1000, 0)
            await pairs((events - 4000) // 2, 10_000)
            large = await pairs(1000, 10**6)
            return small, large

    small, large = asyncio.run(run())
    with sqlite3.connect(db) as connection:
        plan = connection.execute("EXPLAIN QUERY PLAN " + xe.LoaderStore.events_older, (0,)).fetchall()
    steps = "; ".join(row[-1] for row in plan)
    print(
        f"    {small:.2f} ms per pair at 0-2k, {large:.2f} ms at {events - 2000:,}-{events:,}; prune plan: {steps}",
        flush=True,
    )
    report(
        "start+done at a full log / at an empty one", f"{large / small:.2f}x", "≤ 1.2x", large / small <= 1.2
    )
    report(
        "the prune finds its cut by an index",
        "yes" if "INDEX" in steps and "SCAN events" not in steps else steps,
        "an index",
        "INDEX" in steps,
    )


def big_import(folder: Path, tracks: int) -> None:
    print(f"importing {tracks:,} tracks through the admin API (JSON lines) and the CLI", flush=True)
    lines = folder / "tracks.ndjson"
    with lines.open("w") as out:
        for i in range(tracks):
            out.write(json.dumps(track(i)) + "\n")
    array = folder / "tracks.json"
    array.write_text("[" + ",".join(lines.read_text().splitlines()) + "]")
    for door in ("admin", "cli"):
        db = str(folder / f"import-{door}.db")
        secrets = base(db, 0)
        server = Uvicorn("xenon_elixir:app", env={**ENV, "XE_DB": db})
        auth = {"Authorization": f"Bearer {secrets['key']}"}
        httpx.post(f"{server.url}/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=auth)
        waits: list[float] = []
        done = threading.Event()

        def writes() -> None:
            with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
                while not done.wait(0.05):
                    began = time.perf_counter()
                    client.post(f"/api/v1/{GUILD}/volume", json={"user": USER, "volume": 50})
                    waits.append(time.perf_counter() - began)

        writer = threading.Thread(target=writes)
        writer.start()
        began = time.monotonic()
        try:
            if door == "admin":
                with lines.open("rb") as body:
                    answer = httpx.post(
                        f"{server.url}/admin/tracks",
                        content=body,
                        timeout=600,
                        headers={**ADMIN, "Content-Type": "application/x-ndjson"},
                    )
                assert answer.json() == {"count": tracks}, answer.text
            else:
                subprocess.run(
                    [sys.executable, "-m", "xenon_elixir", "import-tracks", str(array), "--db", db],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=900,
                )
            took = time.monotonic() - began
        finally:
            done.set()
            writer.join()
            rss = server.rss_kib() / 1024
            server.stop()
        longest = max(waits) * 1000
        print(
            f"    {door}: {took:.0f} s ({tracks / took:,.0f} tracks/s); {len(waits)} writes meanwhile, "
            f"longest {longest:.0f} ms; server RSS after {rss:.0f} MiB",
            flush=True,
        )
        report(
            f"{tracks:,}-track import ({door}): longest wait of a write meanwhile",
            f"{longest:.0f} ms",
            "< 1 s",
            longest < 1000,
        )


def migrate_cost(folder: Path, tracks: int) -> None:
    from services import PostgresServer

    db = str(folder / "big.db")
    base(db, tracks)
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "xenon_elixir", "backup", str(folder / "copy.db"), "--db", db], check=True
    )
    backup = time.perf_counter() - began
    postgres = PostgresServer()
    try:
        url = postgres.create_database()
        began = time.perf_counter()
        command = [sys.executable, "-m", "xenon_elixir", "migrate", "--db", db, "--to", url]
        subprocess.run(command, check=True, capture_output=True)
        migrate = time.perf_counter() - began
        queries = ["night drive", "love", "summer rain song 12345", "artist 7", "ocean gold wild love"]

        async def answers(store: str) -> tuple[list[str | None], float]:
            async with xe.Host.open(xe.Config(db=store)) as host:
                found, took = [], []
                for query in queries:
                    began = time.perf_counter()
                    track = await host.resolve(query)
                    took.append(time.perf_counter() - began)
                    found.append(track.identifier if isinstance(track, xe.Track) else None)
                return found, statistics.median(took)

        on_sqlite, sqlite_time = asyncio.run(answers(db))
        on_postgres, postgres_time = asyncio.run(answers(url))
    finally:
        postgres.close()
    report(
        f"migrate of {tracks:,} tracks into PostgreSQL / backup of the file",
        f"{migrate:.1f} s / {backup:.1f} s ({migrate / backup:.1f}x)",
        "—",
        None,
    )
    report(
        f"the same search answers on both stores ({len(queries)} queries)",
        "yes" if on_sqlite == on_postgres else f"no: {on_sqlite} != {on_postgres}",
        "yes",
        on_sqlite == on_postgres,
    )
    report(
        "a search's time, PostgreSQL / SQLite (median, not remembered)",
        f"{postgres_time * 1000:.1f} ms / {sqlite_time * 1000:.1f} ms ({postgres_time / sqlite_time:.1f}x)",
        "—",
        None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the large sizes divided by 10")
    parser.add_argument("--seconds", type=int, default=5, help="per wrk measurement")
    parser.add_argument("--only", help="run only the parts whose name contains this")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    parts = {
        "catalog": lambda folder: catalog_growth(folder, 1_000_000 // scale, args.seconds),
        "mapper": lambda folder: mapper_growth(folder, 100_000 // scale, args.seconds),
        "replay": lambda folder: replay_stall(folder, 10_000 // scale),
        "players": lambda folder: players_startup(folder, 20_000 // scale),
        "publish": lambda folder: publish_cost(folder, 10_000),
        "import": lambda folder: big_import(folder, 1_000_000 // scale),
        "migrate": lambda folder: migrate_cost(folder, 1_000_000 // scale),
    }
    began = time.monotonic()
    for name, part in parts.items():
        if args.only and args.only not in name:
            continue
        with tempfile.TemporaryDirectory() as folder:
            part(Path(folder))
    print(
        f"\nmachine: 2 cores; wrk -t1 -c16, {args.seconds} s per figure; {time.monotonic() - began:.0f} s in all"
    )
    for row in rows:
        print(" | ".join(row))


if __name__ == "__main__":
    main()
