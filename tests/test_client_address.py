"""Per client address, against real uvicorn processes (SPEC §0 "The client address" and
"Unauthenticated streams"): who a request comes from — the socket peer, or behind a trusted
proxy the rightmost X-Forwarded-For hop that is not one — the failed-auth limit counted per that
address whatever the headers say, and the player streams one address may hold open."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import GUILD, VOICE
from server import Server, cli, free_port, spawn
from services import RedisServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import xenon_elixir as xe

FAILED_AUTH_LIMIT = xe.RATE_LIMITS["auth_failures"][0]  # 100 per 60 s
STREAMS = xe.Config.max_streams_per_address  # 64


class Serving:
    """A server process started as a user would (``serve`` with flags, or a bare uvicorn)."""

    def __init__(self, command: list[str], db: str, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = spawn([*command, "--port", str(self.port)], self.port, log, {"XE_DB": db, **env})

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


@pytest.fixture
def start(db_path: str, tmp_path: Path) -> Iterator[Callable[..., Serving]]:
    started: list[Serving] = []

    def run(*flags: str, how: str = "serve", **env: str) -> Serving:
        command = (
            [sys.executable, "-m", "xenon_elixir", "serve", *flags]
            if how == "serve"
            else [sys.executable, "-m", "uvicorn", "xenon_elixir:app", *flags]
        )
        started.append(Serving(command, db_path, tmp_path / f"server{len(started)}.log", env))
        return started[-1]

    yield run
    for serving in started:
        serving.stop()


def failed_auths(
    urls: list[str], forwarded: Callable[[int], str], count: int = 150, local: str = "127.0.0.1"
) -> list[int]:
    """The statuses of ``count`` requests with a bad token, the i-th with ``X-Forwarded-For:
    forwarded(i)``, sent from ``local`` to each server of ``urls`` in turn."""
    clients = [
        httpx.Client(base_url=url, timeout=10, transport=httpx.HTTPTransport(local_address=local))
        for url in urls
    ]
    try:
        return [
            clients[i % len(clients)]
            .get(
                "/api/mappers?target=1&source=2",
                headers={"Authorization": "not-a-token", "X-Forwarded-For": forwarded(i)},
            )
            .status_code
            for i in range(count)
        ]
    finally:
        for client in clients:
            client.close()


def other(i: int) -> str:
    """A different documentation address for each ``i`` (RFC 5737)."""
    return f"198.51.{100 + i // 250}.{i % 250 + 1}"


LIMITED = [401] * FAILED_AUTH_LIMIT + [429] * 50


@pytest.mark.parametrize("how", ["serve", "uvicorn"])
def test_a_forged_x_forwarded_for_does_not_escape_the_failed_auth_limit(
    start: Callable[..., Serving], how: str
) -> None:
    """The issue's attack: 150 bad tokens, each with another X-Forwarded-For, from 127.0.0.1 —
    under `serve`, and under a bare `uvicorn xenon_elixir:app`, whose default proxy headers trust
    loopback and rewrite the client before the app sees it."""
    serving = start(how=how)
    assert failed_auths([serving.url], other) == LIMITED
    if how == "uvicorn":  # the rewrite is noticed, and the log says what to do
        assert "--no-proxy-headers" in serving.log.read_text()


def test_forged_headers_do_not_escape_the_limit_shared_through_redis(
    start: Callable[..., Serving], db_path: str, redis_fresh: RedisServer
) -> None:
    """Two processes on one database and one Redis: bad tokens alternate between them."""
    servers = [start(XE_REDIS_URL=redis_fresh.url) for _ in range(2)]
    assert failed_auths([s.url for s in servers], other) == LIMITED


@pytest.mark.parametrize("named", ["env", "flag"])
def test_behind_a_trusted_proxy_the_forwarded_client_is_the_address(
    start: Callable[..., Serving], named: str
) -> None:
    serving = (
        start(XE_TRUSTED_PROXIES="127.0.0.1") if named == "env" else start("--trusted-proxies", "127.0.0.1")
    )
    assert failed_auths([serving.url], other) == [401] * 150  # 150 clients, one failure each
    assert failed_auths([serving.url], lambda i: "203.0.113.7") == LIMITED  # one client
    assert "203.0.113.7 - - [" in serving.log.read_text()  # the access log names the client too


def test_a_forged_leftmost_hop_cannot_choose_the_address(start: Callable[..., Serving]) -> None:
    """The client writes what it likes left of its own hop; the proxies each append the peer they
    saw, here another proxy of the trusted network each time: the rightmost untrusted hop is the
    client, and it is the same in every request."""
    serving = start(XE_TRUSTED_PROXIES="127.0.0.1,10.0.0.0/8")
    chain = lambda i: f"{other(i)}, 203.0.113.7, 10.0.{i // 200}.{i % 200 + 1}"  # noqa: E731
    assert failed_auths([serving.url], chain) == LIMITED


def test_a_peer_that_is_not_a_trusted_proxy_is_the_address_whatever_it_forwards(
    start: Callable[..., Serving],
) -> None:
    serving = start(XE_TRUSTED_PROXIES="127.0.0.1")
    assert failed_auths([serving.url], other, local="127.0.0.2") == LIMITED


# A bad XE_TRUSTED_PROXIES or XE_MAX_STREAMS_PER_ADDRESS (or --trusted-proxies) stops the start
# with one line, before any file: test_server.py::test_a_bad_setting_stops_the_server_with_one_line_naming_it


# -- the player streams one address may hold open ------------------------------------------


@pytest.fixture
def server(db_path: str, tmp_path: Path) -> Iterator[Server]:
    cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
    running = Server(db_path, tmp_path / "server.log", XE_ACCESS_LOG="0")
    yield running
    running.stop()


async def follow(server: Server, local: str = "127.0.0.1") -> ClientConnection:
    """A player stream from ``local``, once it has had the state; raises ``ConnectionClosed`` if
    the server closed it instead."""
    ws = await connect(f"{server.ws_url}/api/v1/{GUILD}/player", local_addr=(local, 0), open_timeout=10)
    try:
        json.loads(await asyncio.wait_for(ws.recv(), 10))
    except BaseException:
        await ws.close()
        raise
    return ws


async def refused(server: Server, local: str = "127.0.0.1") -> Any:
    """The close of a stream the server refuses: its code and its JSON reason."""
    with pytest.raises(ConnectionClosed) as closed:
        await follow(server, local)
    received = closed.value.rcvd
    assert received is not None
    return received.code, json.loads(received.reason)


async def follow_soon(server: Server, local: str = "127.0.0.1") -> ClientConnection:
    """A stream, as soon as the server has counted the ones just closed (it hears of a close a
    moment after the client)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return await follow(server, local)
        except ConnectionClosed:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_an_address_holds_at_most_64_player_streams_and_gets_4029_past_them(server: Server) -> None:
    async def scenario() -> None:
        for _ in range(STREAMS + 1):  # a refused handshake holds nothing either
            with pytest.raises(InvalidStatus) as bad:
                await connect(f"{server.ws_url}/api/v1/123/player", open_timeout=10)
            assert bad.value.response.status_code == 400
        streams = [await follow(server) for _ in range(STREAMS)]
        code, reason = await refused(server)
        assert code == 4029
        assert reason["message"] == f"Too many open streams from this address (at most {STREAMS} at once)."
        assert set(reason) == {"timestamp", "message"}  # the Elixir error shape
        # Another address has a count of its own.
        elsewhere = [await follow(server, "127.0.0.2") for _ in range(3)]
        # Closed ones are given back: as many new ones are accepted, and no more.
        for ws in streams[:3]:
            await ws.close()
        streams[:3] = [await follow_soon(server) for _ in range(3)]
        assert (await refused(server))[0] == 4029
        # A client that vanishes without a close handshake is given back too.
        for ws in streams[3:13]:
            ws.transport.abort()
        streams[3:13] = [await follow_soon(server) for _ in range(10)]
        assert (await refused(server))[0] == 4029
        for ws in streams + elsewhere:
            await ws.close()

    asyncio.run(scenario())
    log = server.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log


def test_the_count_keeps_no_address_without_an_open_stream() -> None:
    """The table of open streams holds only addresses with one open: it cannot grow with the
    addresses that came and went."""
    streams = xe.OpenStreams(2)
    assert streams.take("a") and streams.take("a") and not streams.take("a")
    assert streams.take("b")
    assert len(streams) == 2
    streams.give_back("a")
    assert streams.take("a") and not streams.take("a")
    for address in ("a", "a", "b"):
        streams.give_back(address)
    assert len(streams) == 0
