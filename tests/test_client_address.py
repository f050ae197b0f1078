"""Per client address, against real uvicorn processes (SPEC §0 "The client address"): who a
request comes from — the socket peer, or behind a trusted proxy the rightmost X-Forwarded-For
hop that is not one — and the failed-auth limit counted per that address whatever the headers
say."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from server import free_port, spawn
from services import RedisServer

import xenon_elixir as xe

FAILED_AUTH_LIMIT = xe.RATE_LIMITS["auth_failures"][0]  # 100 per 60 s


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


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("XE_TRUSTED_PROXIES", "*"),
        ("XE_TRUSTED_PROXIES", "proxy.example"),
        ("XE_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/33"),
        ("--trusted-proxies", "10.0.0.0/8,nope"),
    ],
)
@pytest.mark.parametrize("how", ["serve", "uvicorn"])
def test_a_bad_address_setting_stops_the_start_with_one_line_naming_it(
    db_path: str, how: str, variable: str, value: str
) -> None:
    if how == "uvicorn" and variable.startswith("--"):
        pytest.skip("a flag of serve")
    command = (
        [sys.executable, "-m", "xenon_elixir", "serve", "--db", db_path, "--port", str(free_port())]
        if how == "serve"
        else [sys.executable, "-m", "uvicorn", "xenon_elixir:app", "--port", str(free_port())]
    )
    env = {**os.environ, "XE_DB": db_path}
    if variable.startswith("--"):
        command += [variable, value]
    else:
        env[variable] = value
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    named = "XE_TRUSTED_PROXIES" if variable.startswith("--") else variable
    assert len(lines) == 1 and named in lines[0], done.stderr
    assert not Path(db_path).exists()
