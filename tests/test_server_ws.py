"""WS /api/loaders/ws against a real uvicorn process, with the `websockets` client: the refused
handshake as that client sees it, live events, replay, and slow or stalled subscribers."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import SOURCE
from server import Server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

ADMIN_TOKEN = "ws-test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BOTS = [str(386861188891279362 + i) for i in range(3)]


def grant(http: httpx.Client, bot_id: str) -> str:
    return http.post("/admin/bots", json={"id": bot_id, "name": "bot"}, headers=ADMIN).json()["token"]


def load(http: httpx.Client, target: int, *, status: str | None = None) -> None:
    start = {"target_id": str(target), "type": "backup", "source_id": SOURCE, "backup_id": "3zydfwqp0h"}
    assert http.post("/admin/loaders", json=start, headers=ADMIN).status_code == 201
    if status:
        http.post(f"/admin/loaders/{target}/status", json={"status": status}, headers=ADMIN)
    assert http.post(f"/admin/loaders/{target}/done", headers=ADMIN).status_code == 200


@pytest.fixture
def server(db_path: str, tmp_path: Path) -> Iterator[Server]:
    running = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN, XE_STATUS_INTERVAL="0.2")
    yield running
    running.stop()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


async def refused(url: str, headers: dict[str, str]) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers=headers, open_timeout=5):
            pass
    return caught.value


@pytest.mark.sqlite_only  # HTTP and WebSocket handling, the same on any store
def test_refused_handshakes_answer_http_401_and_close_4029_when_rate_limited(
    server: Server, http: httpx.Client
) -> None:
    token = grant(http, BOTS[0])
    url = f"{server.ws_url}/api/loaders/ws"

    async def scenario() -> None:
        missing = await refused(url, {})
        assert missing.response.status_code == 401
        assert json.loads(missing.response.body) == {"error": "Unauthorized"}
        invalid = await refused(url, {"Authorization": "not-a-token"})
        assert json.loads(invalid.response.body) == {"error": "Invalid token"}
        async with connect(url, additional_headers={"Authorization": token}):
            # accepted, then closed at once: a reconnect loop survives it (an HTTP 429 would end it)
            async with connect(url, additional_headers={"Authorization": f"Bot {token}"}) as limited:
                with pytest.raises(ConnectionClosedError) as closed:
                    await asyncio.wait_for(limited.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4029
        reason = json.loads(closed.value.rcvd.reason)
        assert reason["error"] == "You got ratelimited" and 0 < reason["retry_after"] <= 1000

    asyncio.run(scenario())


@pytest.mark.sqlite_only  # HTTP and WebSocket handling, the same on any store
def test_a_reconnect_loop_backs_off_on_4029_and_then_follows_the_stream(
    server: Server, http: httpx.Client
) -> None:
    """Two shards of one bot connect within the same second, as bots do; the README's loop."""
    token = grant(http, BOTS[0])
    url = f"{server.ws_url}/api/loaders/ws"

    async def shard(events: list[str], limited: list[int]) -> None:
        async for ws in connect(url, additional_headers={"Authorization": token}):
            try:
                async for frame in ws:
                    events.append(json.loads(frame)["event"])
                    if len(events) == 2:
                        return
            except ConnectionClosedError as closed:
                if closed.rcvd is None or closed.rcvd.code != 4029:
                    raise
                limited.append(closed.rcvd.code)
                await asyncio.sleep(json.loads(closed.rcvd.reason)["retry_after"] / 1000)

    async def scenario() -> tuple[list[list[str]], list[int]]:
        events: list[list[str]] = [[], []]
        limited: list[int] = []
        shards = [asyncio.create_task(shard(events[i], limited)) for i in range(2)]
        await asyncio.sleep(2.0)  # both are connected by now, one of them after a back-off
        await asyncio.to_thread(load, http, 496683369665658880)
        await asyncio.wait_for(asyncio.gather(*shards), 10)
        return events, limited

    events, limited = asyncio.run(scenario())
    assert limited == [4029]
    assert events == [["start", "done"], ["start", "done"]]


def test_live_events_reach_every_subscriber_in_order(server: Server, http: httpx.Client) -> None:
    tokens = [grant(http, bot) for bot in BOTS]

    async def scenario() -> list[list[tuple[str, int]]]:
        sockets = [
            await connect(f"{server.ws_url}/api/loaders/ws", additional_headers={"Authorization": t})
            for t in tokens
        ]
        await asyncio.to_thread(
            lambda: [load(http, 496683369665658880 + i, status="loading roles") for i in range(5)]
        )
        seen = []
        for ws in sockets:
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(15)]
            seen.append([(f["event"], f["seq"]) for f in frames])
            await ws.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen[0] == seen[1] == seen[2]
    assert [event for event, _ in seen[0]] == ["start", "status", "done"] * 5
    assert [seq for _, seq in seen[0]] == list(range(1, 16))


def test_replay_across_a_disconnect(server: Server, http: httpx.Client) -> None:
    token = grant(http, BOTS[0])
    auth = {"Authorization": token}

    async def scenario() -> tuple[list[int], list[int]]:
        async with connect(f"{server.ws_url}/api/loaders/ws", additional_headers=auth) as ws:
            await asyncio.to_thread(load, http, 496683369665658880)
            first = [json.loads(await ws.recv())["seq"] for _ in range(2)]
        await asyncio.to_thread(lambda: [load(http, 496683369665658881 + i, status="x") for i in range(3)])
        await asyncio.sleep(1.0)  # the handshake limit is 1 per second per bot
        async with connect(
            f"{server.ws_url}/api/loaders/ws?since={first[-1]}", additional_headers=auth
        ) as ws:
            missed = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(6)]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)  # nothing more: statuses are not replayed
        return first, [f["seq"] for f in missed if f["event"] in ("start", "done")]

    first, missed = asyncio.run(scenario())
    assert first == [1, 2]
    assert missed == [3, 5, 6, 8, 9, 11]  # starts and dones; 4, 7 and 10 were statuses


@pytest.mark.sqlite_only  # HTTP and WebSocket handling, the same on any store
def test_a_stalled_subscriber_does_not_delay_another(server: Server, http: httpx.Client) -> None:
    reader_token, stalled_token = grant(http, BOTS[0]), grant(http, BOTS[1])

    async def scenario() -> tuple[int, float]:
        # A client that reads nothing: a tiny receive buffer, and websockets stops reading from
        # the socket once its own one-message queue is full.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", server.port))
        stalled = await connect(
            f"{server.ws_url}/api/loaders/ws",
            sock=raw,
            max_queue=1,
            additional_headers={"Authorization": stalled_token},
        )
        reader = await connect(
            f"{server.ws_url}/api/loaders/ws", additional_headers={"Authorization": reader_token}
        )
        received, worst = 0, 0.0
        for i in range(300):
            began = time.monotonic()
            await asyncio.to_thread(load, http, 100000000000000000 + i)
            for _ in range(2):
                await asyncio.wait_for(reader.recv(), 5)
                received += 1
            worst = max(worst, time.monotonic() - began)
        await reader.close()
        stalled.transport.abort()
        return received, worst

    received, worst = asyncio.run(scenario())
    assert received == 600
    assert worst < 2.0  # every load reached the reader promptly while the other read nothing


def readme_follow(port: int, seen: list[tuple[str, dict[str, object]]]) -> object:
    """The README's WebSocket client, as printed there, pointed at this server; what it prints is kept."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    (code,) = [b for b in blocks if "async def follow(token: str)" in b]
    code = code.replace("localhost:8000", f"127.0.0.1:{port}").replace('asyncio.run(follow("<token>"))', "")
    namespace: dict[str, object] = {"print": lambda kind, data: seen.append((kind, data))}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README, as printed
    return namespace["follow"]


@pytest.mark.sqlite_only  # HTTP and WebSocket handling, the same on any store
def test_the_readmes_client_backs_off_on_4029_and_stops_on_a_bad_token(
    server: Server, http: httpx.Client
) -> None:
    token = grant(http, BOTS[0])

    async def scenario() -> tuple[list[tuple[str, dict[str, object]]], list[tuple[str, dict[str, object]]]]:
        first: list[tuple[str, dict[str, object]]] = []
        second: list[tuple[str, dict[str, object]]] = []
        shards = [asyncio.create_task(readme_follow(server.port, seen)(token)) for seen in (first, second)]  # type: ignore[operator]
        await asyncio.sleep(2.0)  # one of the two was refused with 4029 and came back after retry_after
        await asyncio.to_thread(load, http, 496683369665658880)
        for _ in range(100):
            if len(first) >= 2 and len(second) >= 2:
                break
            await asyncio.sleep(0.05)
        for shard in shards:
            shard.cancel()
        await asyncio.gather(*shards, return_exceptions=True)
        return first, second

    first, second = asyncio.run(scenario())
    assert [kind for kind, _ in first] == [kind for kind, _ in second] == ["start", "done"]
    with pytest.raises(
        Exception, match="Invalid token"
    ) as stopped:  # a bad token: it stops, it does not retry
        asyncio.run(asyncio.wait_for(readme_follow(server.port, [])("not-a-token"), 10))  # type: ignore[operator]
    assert type(stopped.value).__name__ == "Refused" and str(stopped.value) == '{"error":"Invalid token"}'
