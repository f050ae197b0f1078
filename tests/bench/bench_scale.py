"""Several processes as one service (XE_REDIS_URL): the app with 2 uvicorn workers and a real
Redis, against bare Litestar with 2 workers, measured in the same run (wrk -t2 -c64, access log
off, rate limits off), with each route's gain over one worker of the app; then two app
processes on one database: publish in one, receipt by a subscriber of the other, and one event
to 1,000 subscribers split over both, against bench_ws.py's raw ASGI floor.

    python tests/bench/bench_scale.py [--rounds 3] [--seconds 5] [--quick] [--postgres] [--only mappers]
    python tests/bench/bench_scale.py --guilds [--rounds 1] [--seconds 5]

With --postgres the app's store is a PostgreSQL server the script starts, as production runs it
(fsync, full_page_writes and synchronous_commit on, its data on the disk), one database per app,
instead of SQLite files.

With --guilds, writes that scale (issue 25): ``play`` spread round-robin over 100 guilds, each
with its own key and player, on 1 process with SQLite, 2 with SQLite and Redis, and 2 and 4 with
PostgreSQL and Redis (fsync, full_page_writes and synchronous_commit on, as production runs it),
each against bare Litestar with as many workers in the same round, each server measured after
a warm-up of its own (:data:`WARM_UP`), which is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from bench_http import BARE_APP, lua, wrk
from bench_ws import RAW_APP, Receipts, p99, subscribe, timed
from common import CHECKOUT, GUILD, SOURCE, TARGET, USER, VOICE, Uvicorn, free_port, seed
from services import PostgresServer, RedisServer

ADMIN_TOKEN = "bench-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Workers:
    """``uvicorn APP --workers N`` in its own process group, stopped with it."""

    def __init__(self, app: str, workers: int, env: dict[str, str], app_dir: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "uvicorn", app, "--port", str(self.port), "--workers", str(workers)]
        command += ["--http", "httptools", "--loop", "uvloop", "--log-level", "warning", "--no-access-log"]
        command += ["--ws-per-message-deflate", "false", "--app-dir", app_dir or CHECKOUT]
        self.process = subprocess.Popen(command, env={**os.environ, **env}, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                httpx.get(self.url + "/", timeout=1)
                time.sleep(1.0)  # every worker up
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{app} did not start")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def cpu_seconds(group: int) -> float:
    """User and system CPU seconds spent so far by the live processes of process group ``group``
    (uvicorn's workers; a wall-clock ratio on a loaded machine is noisy, CPU per request is not)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp; utime and stime are fields 14 and 15 of stat
            total += int(fields[11]) + int(fields[12])
    return total / tick


def routes(secrets: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {
        "nowplaying": (f"/api/v1/{GUILD}/nowplaying", lua()),
        "mappers": (
            f"/api/mappers?target={TARGET}&source={SOURCE}",
            lua(headers={"Authorization": secrets["token"]}),
        ),
        "play": (
            f"/api/v1/{GUILD}/play",
            lua(
                "POST",
                {"Authorization": f"Bearer {secrets['key']}"},
                f'{{"user": "{USER}", "query": "night rain song"}}',
            ),
        ),
    }


def throughput(
    folder: Path,
    redis: RedisServer,
    rounds: int,
    seconds: int,
    postgres: PostgresServer | None = None,
    app_dir: str | None = None,
    only: str = "",
) -> None:
    Path(folder, "bare_app.py").write_text(BARE_APP)
    env = {"XE_ACCESS_LOG": "0", "XE_RATE_LIMITS": "off", "XE_MAX_QUEUE": "1000000"}
    dbs = {name: str(folder / f"{name}.db") for name in ("two", "one")}
    if postgres is not None:
        dbs = {name: postgres.create_database() for name in dbs}
    secrets = {name: seed(db, app_dir=app_dir) for name, db in dbs.items()}
    bare = Workers("bare_app:app", 2, {}, app_dir=str(folder))
    two = Workers("xenon_elixir:app", 2, {**env, "XE_DB": dbs["two"], "XE_REDIS_URL": redis.url}, app_dir)
    one = Workers("xenon_elixir:app", 1, {**env, "XE_DB": dbs["one"]}, app_dir)
    ratios: dict[str, list[float]] = {}
    gains: dict[str, list[float]] = {}
    try:
        for _ in range(rounds):
            for name, (path, script) in routes(secrets["two"]).items():
                if only not in name:
                    continue
                # right before each route: a ratio of two figures taken a route apart is as much
                # the machine's load (other work starting or ending) as the app
                base, _, _ = wrk(bare.url + "/", lua(), seconds, 64, 2)
                rps_two, p99_two, bad = wrk(two.url + path, script, seconds, 64, 2)
                assert bad == 0, f"{bad} non-2xx answers from {name}"
                _, one_script = routes(secrets["one"])[name]
                rps_one, _, _ = wrk(one.url + path, one_script, seconds, 64, 2)
                ratios.setdefault(name, []).append(rps_two / base)
                gains.setdefault(name, []).append(rps_two / rps_one)
                print(
                    f"    {name:<11} 2 workers + Redis {rps_two:8,.0f} req/s (p99 {p99_two:.1f} ms), "
                    f"1 worker {rps_one:8,.0f}, bare 2 workers {base:8,.0f}",
                    flush=True,
                )
    finally:
        for server in (bare, two, one):
            server.stop()
    targets = {"nowplaying": (0.75, 1.6), "mappers": (0.75, 1.6), "play": (0.3, None)}
    if postgres is not None:  # issue 14's targets for PostgreSQL + Redis
        targets = {"nowplaying": (0.7, None), "mappers": (0.7, None), "play": (0.25, None)}
    for name, (ratio_target, gain_target) in targets.items():
        if name not in ratios:
            continue
        ratio, gain = statistics.median(ratios[name]), statistics.median(gains[name])
        verdict = "PASS" if ratio >= ratio_target else "MISS"
        print(f"  {name:<11} vs bare Litestar (2 workers): {ratio:.2f}x (target ≥ {ratio_target}x) {verdict}")
        verdict = "" if gain_target is None else ("PASS" if gain >= gain_target else "MISS")
        shown = f"(target ≥ {gain_target}x) " if gain_target else ""
        print(f"  {name:<11} 2 workers / 1 worker of the app: {gain:.2f}x {shown}{verdict}")


GUILDS = 100
WARM_UP = 2
"""Seconds of load each server takes before it is measured, bare Litestar too: the figures are
a running service's. A server's first seconds cost more (PostgreSQL's connections are opened
and their statements prepared, the keys and the search first read, in every process), and are
printed apart: a fleet of 4 processes on 2 cores pays its warm-up twice over."""
DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
"""PostgreSQL as production runs it, its data on the disk (the tests' own server runs with fsync
off, in memory)."""


class DurablePostgres(PostgresServer):
    """A PostgreSQL server of the benchmark's own with :data:`DURABLE` settings, its data on the
    disk (not the tests' scratch folder in memory, where an fsync costs nothing), removed with it."""

    def __init__(self) -> None:
        self.disk = Path(tempfile.mkdtemp(prefix="xe-bench-postgres-", dir="/var/tmp"))
        self.disk.chmod(0o755)
        (self.disk / "server").mkdir()
        super().__init__(self.disk / "server", settings=DURABLE)

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self.disk, ignore_errors=True)


_SEED_GUILDS = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
import xenon_elixir as xe

async def run(db, guilds):
    keys = {}
    async with xe.Host.open(xe.Config(db=db)) as host:
        track = await host.get_track("youtube", "bench000001")
        for guild, voice in guilds:
            if guild != GUILD:
                await host.put_guild(guild, "Bench " + guild, [voice])
                await host.join(guild, voice)
                await host.enqueue(guild, [track], USER)
            keys[guild] = await host.create_key(guild, USER, rotate=True)
    return keys

print(json.dumps(asyncio.run(run(sys.argv[2], json.loads(sys.argv[3])))))
"""


def seed_guilds(db: str, count: int = GUILDS, app_dir: str | None = None) -> dict[str, str]:
    """``seed(db)``, then ``count`` guilds (the seeded one first), each with a voice channel, a
    player with a track and a key of its own: {guild: key}. By the xenon_elixir of ``app_dir``
    when given."""
    seed(db, app_dir=app_dir)
    guilds = [(str(int(GUILD) + 4096 * i), str(int(VOICE) + 4096 * i)) for i in range(count)]
    code = _SEED_GUILDS.replace("GUILD", repr(GUILD)).replace("USER", repr(USER))
    app_dir = app_dir or str(Path(__file__).parent.parent.parent)
    argv = [sys.executable, "-c", code, app_dir, db, json.dumps(guilds)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def plays_over(keys: dict[str, str]) -> str:
    """wrk's Lua for ``play`` round-robin over the guilds: request i goes to guild i mod n, with
    that guild's path and key (each wrk thread starts at its own guild)."""
    rows = ",\n".join(f'  {{"/api/v1/{guild}/play", "Bearer {key}"}}' for guild, key in keys.items())
    body = f'{{"user": "{USER}", "query": "night rain song"}}'
    return f"""
local guilds = {{
{rows}
}}
local body = [[{body}]]
local i = 0
local threads = 0
function setup(thread)
  thread:set("start", threads * 37)
  threads = threads + 1
end
function init(args)
  i = start or 0
end
function request()
  i = i % #guilds + 1
  local g = guilds[i]
  return wrk.format("POST", g[1], {{["Authorization"] = g[2], ["Content-Type"] = "application/json"}}, body)
end
"""


def plays_over_guilds(folder: Path, rounds: int, seconds: int, app_dir: str | None = None) -> None:
    """The issue's table: plays over 100 guilds, each setup against bare Litestar with as many
    workers, measured in the same round (the xenon_elixir of ``app_dir`` when given)."""
    Path(folder, "bare_app.py").write_text(BARE_APP)
    env = {"XE_ACCESS_LOG": "0", "XE_RATE_LIMITS": "off", "XE_MAX_QUEUE": "1000000"}
    redis = RedisServer()
    postgres = DurablePostgres()
    setups: dict[str, tuple[int, bool, bool]] = {  # workers, Redis, PostgreSQL
        "1 process, SQLite": (1, False, False),
        "2 processes, SQLite + Redis": (2, True, False),
        "2 processes, PostgreSQL + Redis (fsync on)": (2, True, True),
        "4 processes, PostgreSQL + Redis (fsync on)": (4, True, True),
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    cpu: dict[str, list[float]] = {name: [] for name in setups}  # the app's CPU ms per play
    bares: dict[str, list[float]] = {name: [] for name in setups}  # bare Litestar, same workers
    colds: dict[str, list[float]] = {name: [] for name in setups}  # the app's first seconds
    try:
        for _ in range(rounds):
            for name, (workers, with_redis, on_postgres) in setups.items():
                db = (
                    postgres.create_database()
                    if on_postgres
                    else str(folder / f"g{len(figures[name])}{workers}.db")
                )
                keys = seed_guilds(db, app_dir=app_dir)
                app_env = {**env, "XE_DB": db, **({"XE_REDIS_URL": redis.url} if with_redis else {})}
                bare = Workers("bare_app:app", workers, {}, app_dir=str(folder))
                try:
                    wrk(bare.url + "/", lua(), WARM_UP, 64, 2)
                    base, _, _ = wrk(bare.url + "/", lua(), seconds, 64, 2)
                finally:
                    bare.stop()
                app = Workers("xenon_elixir:app", workers, app_env, app_dir=app_dir)
                try:
                    cold, cold_p99, cold_bad = wrk(app.url + "/", plays_over(keys), WARM_UP, 64, 2)
                    colds[name].append(cold)
                    spent = cpu_seconds(app.process.pid)
                    rps, p99_ms, bad = wrk(app.url + "/", plays_over(keys), seconds, 64, 2)
                    spent = cpu_seconds(app.process.pid) - spent
                finally:
                    app.stop()
                assert bad == cold_bad == 0, f"{bad + cold_bad} non-2xx answers from {name}"
                figures[name].append((rps, rps / base))
                bares[name].append(base)
                cpu[name].append(1000 * spent / max(rps * seconds, 1))
                load = os.getloadavg()[0]
                print(
                    f"    {name:<44} {rps:8,.0f} req/s (p99 {p99_ms:.1f} ms), bare {workers} workers "
                    f"{base:8,.0f}: {rps / base:.2f}x, app CPU {cpu[name][-1]:.2f} ms/play; its first "
                    f"{WARM_UP} s {cold:,.0f} req/s (p99 {cold_p99:.0f} ms)  [load {load:.1f}]",
                    flush=True,
                )
                if with_redis:
                    redis.flushall()
    finally:
        redis.close()
        postgres.close()
    print(
        "| setup | plays over 100 guilds | ratio to bare (same workers) | app CPU per play | first seconds |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, runs in figures.items():
        rps, ratio = statistics.median(r for r, _ in runs), statistics.median(q for _, q in runs)
        print(
            f"| {name} | {rps:,.0f} req/s | {ratio:.2f} | {statistics.median(cpu[name]):.2f} ms "
            f"| {statistics.median(colds[name]):,.0f} req/s |"
        )
    two = statistics.median(r for r, _ in figures["2 processes, PostgreSQL + Redis (fsync on)"])
    four = statistics.median(r for r, _ in figures["4 processes, PostgreSQL + Redis (fsync on)"])
    one_sqlite = statistics.median(r for r, _ in figures["1 process, SQLite"])
    two_sqlite = statistics.median(r for r, _ in figures["2 processes, SQLite + Redis"])
    pg_ratio = statistics.median(q for _, q in figures["2 processes, PostgreSQL + Redis (fsync on)"])
    print(
        f"  PostgreSQL + Redis, 2 processes: {pg_ratio:.2f}x bare (target ≥ 0.25x) "
        f"{'PASS' if pg_ratio >= 0.25 else 'MISS'}"
    )
    bare_two = statistics.median(bares["2 processes, PostgreSQL + Redis (fsync on)"])
    bare_four = statistics.median(bares["4 processes, PostgreSQL + Redis (fsync on)"])
    print(
        f"  PostgreSQL + Redis, 4 processes / 2: {four / two:.2f}x (target ≥ 1) {'PASS' if four >= two else 'MISS'}; "
        f"bare Litestar on the same cores, 4 workers / 2: {bare_four / bare_two:.2f}x"
    )
    print(
        f"  SQLite + Redis, 2 processes / 1 process: {two_sqlite / one_sqlite:.2f}x (target ≥ 1) "
        f"{'PASS' if two_sqlite >= one_sqlite else 'MISS'}"
    )


async def across(folder: Path, redis: RedisServer, events: int, subscribers: int) -> None:
    db = str(folder / "across.db")
    seed(db)
    env = {
        "XE_DB": db,
        "XE_REDIS_URL": redis.url,
        "XE_ACCESS_LOG": "0",
        "XE_RATE_LIMITS": "off",
        "XE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    Path(folder, "raw_app.py").write_text(RAW_APP)
    first, second = Uvicorn("xenon_elixir:app", env=env), Uvicorn("xenon_elixir:app", env=env)
    raw = Uvicorn("raw_app:app", app_dir=str(folder))
    try:
        token = httpx.post(
            first.url + "/admin/bots", json={"id": "386861188891279362", "name": "b"}, headers=ADMIN
        ).json()["token"]
        ws = lambda server: server.url.replace("http", "ws", 1)  # noqa: E731
        # publish through the first, a subscriber of the second
        one = Receipts(1)
        sockets = await subscribe(ws(second) + "/api/loaders/ws", 1, {"Authorization": token}, one)
        await asyncio.sleep(0.5)
        delays: list[float] = []
        async with httpx.AsyncClient(base_url=first.url, headers=ADMIN, timeout=30) as http:
            for i in range(events):
                target = str(496683369665658880 + i)
                start = {"target_id": target, "type": "backup", "source_id": SOURCE}
                delays.append(await timed(one, lambda: http.post("/admin/loaders", json=start)))
                one.arm()
                await http.post(f"/admin/loaders/{target}/done")
                await asyncio.wait_for(one.all_in.wait(), 10)
        for socket in sockets:
            await socket.close()
        print(
            f"  publish in one process -> receipt in the other: p50 {statistics.median(delays):.1f} ms, "
            f"p99 {p99(delays):.1f} ms over {events} events (target p99 ≤ 10 ms) "
            f"{'PASS' if p99(delays) <= 10 else 'MISS'}",
            flush=True,
        )
        # one event to 1,000 subscribers split over both processes, against the raw floor
        split = Receipts(subscribers)
        sockets = await subscribe(
            ws(first) + "/api/loaders/ws", subscribers // 2, {"Authorization": token}, split
        )
        sockets += await subscribe(
            ws(second) + "/api/loaders/ws", subscribers - subscribers // 2, {"Authorization": token}, split
        )
        floor = Receipts(subscribers)
        raw_sockets = await subscribe(ws(raw) + "/", subscribers, {}, floor)
        await asyncio.sleep(2)
        app_times, raw_times = [], []
        async with httpx.AsyncClient(timeout=30) as http:
            for i in range(23):
                raw_times.append(await timed(floor, lambda: http.post(raw.url + "/publish")))
                target = str(596683369665658880 + i)
                start = {"target_id": target, "type": "backup", "source_id": SOURCE}
                app_times.append(
                    await timed(
                        split, lambda: http.post(first.url + "/admin/loaders", json=start, headers=ADMIN)
                    )
                )
                split.arm()
                await http.post(f"{first.url}/admin/loaders/{target}/done", headers=ADMIN)
                await asyncio.wait_for(split.all_in.wait(), 30)
        for socket in sockets + raw_sockets:
            await socket.close()
        app_p99, raw_p99 = p99(app_times[3:]), p99(raw_times[3:])
        print(
            f"  one event to {subscribers:,} subscribers over 2 processes: p99 {app_p99:.1f} ms; raw ASGI floor "
            f"(1 process) {raw_p99:.1f} ms; ratio {app_p99 / raw_p99:.2f}x",
            flush=True,
        )
    finally:
        for server in (first, second, raw):
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round of 3 s, fewer events")
    parser.add_argument("--postgres", action="store_true", help="the store on PostgreSQL (throughput only)")
    parser.add_argument(
        "--guilds", action="store_true", help="only plays over 100 guilds, the issue 25 table"
    )
    parser.add_argument("--only", help="throughput of the routes whose name contains this, nothing else")
    parser.add_argument(
        "--app-dir", help="serve the xenon_elixir.py of this folder (before/after): --guilds and throughput"
    )
    args = parser.parse_args()
    rounds, seconds = (1, 3) if args.quick else (args.rounds, args.seconds)
    if args.guilds:
        with tempfile.TemporaryDirectory() as folder:
            print(
                f"plays over {GUILDS} guilds, wrk -t2 -c64, {seconds} s; {os.cpu_count()} cores", flush=True
            )
            plays_over_guilds(Path(folder), rounds, seconds, args.app_dir)
        return
    redis = RedisServer()
    postgres = DurablePostgres() if args.postgres else None
    try:
        with tempfile.TemporaryDirectory() as folder:
            store = "PostgreSQL" if postgres else "SQLite"
            print(
                f"throughput: 2 workers with Redis on {store}, against bare Litestar with 2 workers (wrk -t2 -c64)",
                flush=True,
            )
            throughput(Path(folder), redis, rounds, seconds, postgres, args.app_dir, args.only or "")
            if postgres is None and not args.only:
                redis.flushall()
                print("across processes", flush=True)
                asyncio.run(across(Path(folder), redis, 100 if args.quick else 300, 1000))
    finally:
        redis.close()
        if postgres is not None:
            postgres.close()


if __name__ == "__main__":
    main()
