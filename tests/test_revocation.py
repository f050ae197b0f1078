"""Revocation is immediate (SPEC §0): once a revoke or a rotate of a bot token or an Elixir key is
acknowledged, every process refuses it from its next request on, on either store, even while
Redis is stalled (a 503 then, never a stale yes), and every open stream the credential opened is
closed with 4001. Two real uvicorn processes on one database and a real Redis server; each test
tries to break the rule the way the outside tester did (use at once after the revoke, in a loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN, ADMIN_TOKEN, CATALOG_FILE, GUILD, OTHER_USER, SOURCE, USER, VOICE
from server import Server, cli
from services import RedisServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

API = "/api/v1"
BOT = "386861188891279362"
TARGET = 496683369665658880
MAPPERS = f"/api/mappers?target={TARGET}&source={SOURCE}"
ROUNDS = 40


TWO_ENV = {"XE_RATE_LIMITS": "off"}
"""The ``two`` fixture's servers (tests/conftest.py) have no rate limits: a loop of uses must not meet a 429."""


def admin(server: Server, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, server.url + path, json=body, headers=ADMIN, timeout=10)


def join(server: Server, key: str, timeout: float = 10) -> int:
    body, auth = {"user": USER, "channel": VOICE}, {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{server.url}{API}/{GUILD}/join", json=body, headers=auth, timeout=timeout).status_code


def mappers(server: Server, token: str, timeout: float = 10) -> int:
    return httpx.get(server.url + MAPPERS, headers={"Authorization": token}, timeout=timeout).status_code


@pytest.fixture
def clients(two: list[Server]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Kept-alive clients of A and of B (admin): a use follows the revoke's answer within a fraction
    of a millisecond, as a busy bot's next request does."""
    with (
        httpx.Client(base_url=two[0].url, timeout=10) as a,
        httpx.Client(base_url=two[1].url, headers=ADMIN, timeout=10) as b,
    ):
        yield a, b


def test_a_key_revoked_through_one_process_is_refused_by_the_other_at_once(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = clients
    body, answers = {"user": USER, "channel": VOICE}, []
    for i in range(ROUNDS):
        made = b.post("/admin/keys", json={"guild": GUILD, "user": USER, "rotate": i > 0})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        auth = {"Authorization": f"Bearer {key}"}
        assert a.post(f"{API}/{GUILD}/join", json=body, headers=auth).status_code == 200
        assert a.post(f"{API}/{GUILD}/join", json=body, headers=auth).status_code == 200  # remembered
        if i % 2:  # revoked, or rotated (which revokes the old key)
            assert b.delete(f"/admin/keys/{GUILD}/{USER}").status_code == 200
        else:
            assert (
                b.post("/admin/keys", json={"guild": GUILD, "user": USER, "rotate": True}).status_code == 201
            )
        answers.append(a.post(f"{API}/{GUILD}/join", json=body, headers=auth).status_code)
    assert answers == [401] * ROUNDS


def test_a_play_is_queued_once_when_another_key_changes_and_refused_once_its_key_is_revoked(
    db_path: str, tmp_path: Path
) -> None:
    """A play with a remembered key is checked by its own transaction on PostgreSQL (no look
    of its own). The CLI beside the server (no Redis: nothing tells the server but the store)
    changes another user's key before each play: the play's transaction finds the credentials
    moved, the play is asked again after a look and queued exactly once. Once its own key is
    revoked, the next play is refused with 401 and queues nothing."""
    cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
    cli(db_path, "import-tracks", str(CATALOG_FILE))
    key = cli(db_path, "genkey", GUILD, USER)
    server = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN, XE_RATE_LIMITS="off")
    plays = 5
    try:
        with httpx.Client(base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {key}"}) as a:
            play = lambda: a.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "magia"})  # noqa: E731
            size = lambda: len(a.get(f"{API}/{GUILD}/queue").json()["queue"]) + 1  # noqa: E731
            assert a.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}).status_code == 200
            answers = []
            for _ in range(plays):
                cli(db_path, "genkey", GUILD, OTHER_USER, "--rotate")  # the credentials counter moves
                answers.append(play().status_code)
            queued = size()
            cli(db_path, "revoke-key", GUILD, USER)
            answers.append(play().status_code)
            assert (answers, queued, size()) == ([200] * plays + [401], plays, plays)
    finally:
        server.stop()


def test_a_bot_token_revoked_through_one_process_is_refused_by_the_other_at_once(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = clients
    answers = []
    for i in range(ROUNDS):
        token = b.post("/admin/bots", json={"id": BOT, "name": "bot"}).json()["token"]
        assert a.get(MAPPERS, headers={"Authorization": token}).status_code == 404, "known (no mapper yet)"
        assert a.get(MAPPERS, headers={"Authorization": token}).status_code == 404  # remembered by A now
        if i % 2:
            assert b.delete(f"/admin/bots/{BOT}").status_code == 200
        else:  # granting again rotates: the old token stops working
            assert b.post("/admin/bots", json={"id": BOT, "name": "bot"}).status_code == 200
        answers.append(a.get(MAPPERS, headers={"Authorization": token}).status_code)
    assert answers == [401] * ROUNDS


def test_with_redis_stalled_a_revoked_credential_is_never_a_stale_yes(
    two: list[Server], redis_fresh: RedisServer
) -> None:
    """Redis frozen (SIGSTOP, as in a partition): the revoke is acknowledged through B, and A, which
    remembered the key and the token, answers 401 or 503 to them, never 200 — and the player is
    not changed by a revoked key."""
    a, b = two
    key = admin(b, "POST", "/admin/keys", {"guild": GUILD, "user": USER}).json()["key"]
    token = admin(b, "POST", "/admin/bots", {"id": BOT, "name": "bot"}).json()["token"]
    assert join(a, key) == 200 and mappers(a, token) == 404
    assert join(a, key) == 200 and mappers(a, token) == 404
    os.kill(redis_fresh.pid, signal.SIGSTOP)
    try:
        assert admin(b, "DELETE", f"/admin/keys/{GUILD}/{USER}").status_code == 200
        assert admin(b, "DELETE", f"/admin/bots/{BOT}").status_code == 200
        answers = [(join(a, key, timeout=20), mappers(a, token, timeout=20)) for _ in range(3)]
    finally:
        os.kill(redis_fresh.pid, signal.SIGCONT)
    assert all(k in (401, 503) and t in (401, 503) for k, t in answers), answers
    assert admin(b, "POST", "/admin/keys", {"guild": GUILD, "user": USER}).status_code == 201  # it was gone


async def _closed_after_revoke(
    follower: Server, revoker: Server, token: str, revoke: Any
) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Follow the loader stream on ``follower``, revoke through ``revoker``, then start a load: what
    the socket received after the revoke, and how it was closed."""
    received: list[dict[str, Any]] = []
    async with connect(
        f"{follower.ws_url}/api/loaders/ws", additional_headers={"Authorization": token}
    ) as ws:
        await asyncio.sleep(0.3)  # subscribed
        assert (await asyncio.to_thread(revoke)).status_code in (200, 201)
        start = {"target_id": str(TARGET), "type": "backup", "source_id": SOURCE}
        assert (await asyncio.to_thread(admin, revoker, "POST", "/admin/loaders", start)).status_code == 201
        try:
            while True:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        except ConnectionClosed:
            pass
        return received, ws.close_code, ws.close_reason


@pytest.mark.parametrize("how", ["revoke", "rotate"])
def test_a_revoked_bots_open_stream_in_another_process_is_closed_with_4001(
    two: list[Server], how: str
) -> None:
    a, b = two
    token = admin(b, "POST", "/admin/bots", {"id": BOT, "name": "bot"}).json()["token"]

    def revoke() -> httpx.Response:
        if how == "revoke":
            return admin(b, "DELETE", f"/admin/bots/{BOT}")
        return admin(b, "POST", "/admin/bots", {"id": BOT, "name": "bot"})

    began = time.monotonic()
    received, code, reason = asyncio.run(_closed_after_revoke(a, b, token, revoke))
    assert received == []  # not the start published after the revoke
    assert (code, reason) == (4001, "Invalid token")
    assert time.monotonic() - began < 4  # closed by the revoke, not by the 5 s wait


def test_a_revoked_bots_open_stream_is_closed_in_its_own_process_too(db_path: str, tmp_path: Path) -> None:
    server = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN)
    try:
        token = admin(server, "POST", "/admin/bots", {"id": BOT, "name": "bot"}).json()["token"]
        other = admin(server, "POST", "/admin/bots", {"id": "235148962103951360", "name": "other"}).json()[
            "token"
        ]

        async def scenario() -> tuple[Any, ...]:
            headers = {"Authorization": other}
            async with connect(f"{server.ws_url}/api/loaders/ws", additional_headers=headers) as kept:
                revoked = await _closed_after_revoke(
                    server, server, token, lambda: admin(server, "DELETE", f"/admin/bots/{BOT}")
                )
                kept_event = json.loads(await asyncio.wait_for(kept.recv(), 5))  # the other bot's goes on
                return revoked, kept_event["event"]

        (received, code, reason), kept_event = asyncio.run(scenario())
    finally:
        server.stop()
    assert received == [] and (code, reason) == (4001, "Invalid token")
    assert kept_event == "start"


def test_a_revoke_by_the_cli_beside_a_server_is_refused_at_once_and_closes_its_streams(
    db_path: str, tmp_path: Path
) -> None:
    """The CLI is another process on the same database (no Redis): the server learns of its
    revokes from the store itself."""
    cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
    key = cli(db_path, "genkey", GUILD, USER)
    token = cli(db_path, "add-bot", BOT, "bot")
    server = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as a:
            body, auth = {"user": USER, "channel": VOICE}, {"Authorization": f"Bearer {key}"}
            assert a.post(f"{API}/{GUILD}/join", json=body, headers=auth).status_code == 200
            assert a.get(MAPPERS, headers={"Authorization": token}).status_code == 404
            cli(db_path, "revoke-key", GUILD, USER)
            assert a.post(f"{API}/{GUILD}/join", json=body, headers=auth).status_code == 401

            def revoke() -> httpx.Response:
                cli(db_path, "revoke-bot", BOT)
                return a.get(MAPPERS, headers={"Authorization": token})

            async def scenario() -> tuple[list[dict[str, Any]], int | None, str | None]:
                headers = {"Authorization": token}
                async with connect(f"{server.ws_url}/api/loaders/ws", additional_headers=headers) as ws:
                    await asyncio.sleep(0.3)
                    assert (await asyncio.to_thread(revoke)).status_code == 401
                    received = []
                    with contextlib.suppress(ConnectionClosed):
                        while True:
                            received.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
                    return received, ws.close_code, ws.close_reason

            assert asyncio.run(scenario()) == ([], 4001, "Invalid token")
    finally:
        server.stop()
