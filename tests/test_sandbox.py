"""The sandbox (SPEC §7, issue 24): fixed credentials, faults, the clock, the record and a reset,
through the HTTP routes and the Python API, on a real uvicorn server in a thread; on SQLite and
on PostgreSQL. One server per store for the module, reset before each test (as the pytest
fixture does)."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from conftest import ADMIN, ADMIN_TOKEN, with_host
from litestar.testing import TestClient
from server import free_port, spawn
from services import PostgresServer, new_database
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import xenon_elixir as xe

CREDENTIALS = xe.SandboxCredentials(xe.SANDBOX_ADMIN_TOKEN)
SANDBOX_ADMIN = {"Authorization": f"Bearer {xe.SANDBOX_ADMIN_TOKEN}"}
BOT = {"Authorization": xe.SANDBOX_BOT_TOKEN}
KEY = {"Authorization": f"Bearer {xe.SANDBOX_KEY}"}
MAPPERS = f"/api/mappers?target={xe.DEMO_TARGET}&source={xe.DEMO_SOURCE}"
PLAY = f"/api/v1/{xe.DEMO_GUILD}/play"
NOWPLAYING = f"/api/v1/{xe.DEMO_GUILD}/nowplaying"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        databases = new_database(server)
        db = next(databases)
    else:
        databases, db = iter(()), str(tmp_path_factory.mktemp("sandbox") / "sandbox.db")
    with xe.sandbox(db=db) as sandbox:
        yield sandbox
    next(databases, None)


@pytest.fixture
def sandbox(running: Any) -> Iterator[Any]:
    running.reset()
    with httpx.Client(base_url=running.url, timeout=30) as client:
        running.http = client
        yield running


def arm(sandbox: Any, **fault: Any) -> dict[str, Any]:
    answer = sandbox.http.post("/admin/faults", json=fault, headers=SANDBOX_ADMIN)
    assert answer.status_code == 201, answer.text
    return answer.json()


def join_and_play(sandbox: Any, query: str) -> None:
    body = {"user": xe.DEMO_USER, "channel": xe.DEMO_VOICE[0]}
    assert sandbox.http.post(f"/api/v1/{xe.DEMO_GUILD}/join", json=body, headers=KEY).status_code == 200
    answer = sandbox.http.post(PLAY, json={"user": xe.DEMO_USER, "query": query}, headers=KEY)
    assert answer.status_code == 200, answer.text


def test_the_demo_data_answers_under_the_fixed_credentials(sandbox: Any) -> None:
    assert sandbox.credentials == CREDENTIALS
    mapper = sandbox.http.get(MAPPERS, headers=BOT)
    assert mapper.status_code == 200
    assert mapper.json()["ids"][xe.DEMO_SOURCE] == xe.DEMO_TARGET
    join_and_play(sandbox, "tuyo narcos")
    assert sandbox.http.get(NOWPLAYING).json()["title"] == "Tuyo (Narcos Theme)"


def test_the_sandbox_routes_need_the_admin_token(sandbox: Any) -> None:
    for method, path in [("GET", "/admin/faults"), ("POST", "/admin/clock"), ("GET", "/admin/requests")]:
        assert sandbox.http.request(method, path).status_code == 401
        assert sandbox.http.request(method, path, headers=BOT).status_code == 401


@pytest.mark.parametrize(
    "path", ["/admin/faults", "/admin/faults/f1", "/admin/clock", "/admin/requests", "/admin/reset"]
)
def test_a_normal_server_answers_the_sandbox_routes_404(path: str, tmp_path: Path) -> None:
    app = xe.create_app(db=str(tmp_path / "xe.db"), admin_token=ADMIN_TOKEN)
    assert isinstance(app.asgi_handler, xe.FrontLayer)  # no sandbox layer: nothing to pay
    with TestClient(app) as client:
        for method in ("GET", "POST", "DELETE"):
            answer = client.request(method, path, headers=ADMIN)
            assert (answer.status_code, answer.json()) == (404, {"error": "Not Found"})


def test_credentials_survive_a_restart_and_explicit_settings_win(tmp_path: Path) -> None:
    db = str(tmp_path / "kept.db")
    for _ in range(2):
        with xe.sandbox(db=db) as sandbox, httpx.Client(base_url=sandbox.url) as client:
            assert client.get(MAPPERS, headers=BOT).status_code == 200
            assert client.get("/admin/faults", headers=SANDBOX_ADMIN).status_code == 200
    with xe.sandbox(db=db, admin_token="mine-0123456789", rate_limits="mappers=1/10") as sandbox:
        with httpx.Client(base_url=sandbox.url) as client:
            assert client.get("/admin/faults", headers=SANDBOX_ADMIN).status_code == 401
            assert client.get(
                "/admin/faults", headers={"Authorization": "Bearer mine-0123456789"}
            ).json() == {"faults": []}
            assert client.get(MAPPERS, headers=BOT).status_code == 200
            assert client.get(MAPPERS, headers=BOT).status_code == 429


def test_a_429_fault_is_the_originals_answer_and_fires_its_times(sandbox: Any) -> None:
    fault = arm(sandbox, match="GET /api/mappers", times=2, retry_after_ms=2500)
    assert fault == {
        "id": fault["id"],
        "match": "GET /api/mappers",
        "credential": None,
        "times": 2,
        "status": 429,
        "retry_after_ms": 2500,
        "body": None,
        "delay_ms": 0,
        "drop": False,
        "fired": 0,
    }
    for _ in range(2):
        answer = sandbox.http.get(MAPPERS, headers=BOT)
        assert answer.status_code == 429
        assert answer.json() == {"error": "You got ratelimited", "retry_after": 2500.0}
        assert answer.headers["retry-after"] == "3"
    assert sandbox.http.get(MAPPERS, headers=BOT).status_code == 200
    assert [f["fired"] for f in sandbox.faults.list()] == [2]


def test_a_fault_on_an_elixir_route_answers_in_the_elixir_shape(sandbox: Any) -> None:
    arm(sandbox, match="POST /api/v1/{guild_id}/play", status=503, retry_after_ms=1000)
    answer = sandbox.http.post(PLAY, json={"user": xe.DEMO_USER, "query": "tuyo"}, headers=KEY)
    assert answer.status_code == 503
    assert set(answer.json()) == {"timestamp", "message"}
    assert answer.headers["retry-after"] == "1"
    arm(sandbox, match="*", status=429)
    limited = sandbox.http.get(NOWPLAYING).json()
    assert limited["message"] == "You got ratelimited" and limited["retry_after"] == 5000.0


def test_a_fault_by_group_by_credential_and_with_a_body(sandbox: Any) -> None:
    arm(sandbox, match="mappers", credential="another-bots-token", status=500)
    assert sandbox.http.get(MAPPERS, headers=BOT).status_code == 200  # not this bot's
    arm(sandbox, match="mappers", credential=xe.SANDBOX_BOT_TOKEN, status=418, body={"teapot": True})
    answer = sandbox.http.get(MAPPERS, headers=BOT)
    assert (answer.status_code, answer.json()) == (418, {"teapot": True})
    listed = sandbox.faults.list()
    assert [f["credential"] for f in listed] == ["***", "***"]  # a secret is never answered
    assert xe.SANDBOX_BOT_TOKEN not in json.dumps(listed)


def test_delay_alone_delays_the_real_answer_and_drop_closes_without_one(sandbox: Any) -> None:
    assert arm(sandbox, match="GET /api/mappers", delay_ms=30)["status"] is None
    assert sandbox.http.get(MAPPERS, headers=BOT).status_code == 200
    arm(sandbox, match="GET /api/mappers", drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        sandbox.http.get(MAPPERS, headers=BOT)
    assert sandbox.http.get(MAPPERS, headers=BOT).status_code == 200
    assert [r["status"] for r in sandbox.requests.list()] == [200, None, 200]


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        ({"match": "GET /api/nothing"}, "match"),
        ({"match": "*", "times": 0}, "$.times"),
        ({"match": "*", "status": 99}, "$.status"),
        ({"match": "*", "colour": "red"}, "colour"),
        ({"stream": "radio"}, "$.stream"),
        ({"stream": "loaders", "close": None}, "close"),
        ({"match": "*", "id": "f9"}, "id"),
        ({"stream": "loaders", "close": 1006}, "$.close"),  # only ever reported, never sent
        ({"stream": "player", "close": 1015}, "$.close"),
        ({"stream": "player", "close": 2500}, "$.close"),  # reserved
        ({"match": "*", "status": 200}, "$.body"),  # a success answers its own body
        ({"match": "*", "status": 204, "body": {}}, "$.body"),
    ],
)
def test_a_bad_fault_is_a_400_naming_the_field(sandbox: Any, fault: dict[str, Any], named: str) -> None:
    answer = sandbox.http.post("/admin/faults", json=fault, headers=SANDBOX_ADMIN)
    assert answer.status_code == 400
    assert named in answer.json()["error"]


def test_faults_are_removed_one_or_all(sandbox: Any) -> None:
    first, second = arm(sandbox, match="*"), arm(sandbox, match="mappers")
    assert sandbox.http.delete(f"/admin/faults/{first['id']}", headers=SANDBOX_ADMIN).status_code == 200
    assert [f["id"] for f in sandbox.faults.list()] == [second["id"]]
    assert sandbox.http.delete(f"/admin/faults/{first['id']}", headers=SANDBOX_ADMIN).json() == {
        "error": "Unknown fault"
    }
    assert sandbox.http.delete("/admin/faults", headers=SANDBOX_ADMIN).status_code == 200
    assert sandbox.faults.list() == []


async def _frames(url: str, count: int, **headers: str) -> tuple[list[dict[str, Any]], int | None]:
    """Read ``count`` frames (or until the stream closes); the frames and the close code."""
    frames: list[dict[str, Any]] = []
    async with connect(url, additional_headers=headers, open_timeout=10) as socket:
        try:
            while len(frames) < count:
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
        except ConnectionClosed as closed:
            return frames, closed.rcvd.code if closed.rcvd else None
        return frames, None


def test_a_stream_fault_closes_the_loader_stream_after_its_events(sandbox: Any) -> None:
    arm(sandbox, stream="loaders", close=1013, after=1)

    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        reading = asyncio.create_task(_frames(sandbox.loaders_ws_url, 10, Authorization=xe.SANDBOX_BOT_TOKEN))
        while not any(r["status"] == 101 for r in sandbox.requests.list()):  # connected first
            await asyncio.sleep(0.01)
        await asyncio.to_thread(sandbox.load_backup, statuses=())
        return await reading

    frames, code = asyncio.run(scenario())
    assert [f["event"] for f in frames] == ["start"] and code == 1013
    assert sandbox.faults.list()[0]["fired"] == 1
    sandbox.clock.advance(1)  # the real limit: one connect a second per bot
    later, code = asyncio.run(
        _frames(f"{sandbox.loaders_ws_url}?since=0", 2, Authorization=xe.SANDBOX_BOT_TOKEN)
    )
    assert code is None and [f["event"] for f in later] == ["start", "done"]  # the next stream is whole


def test_a_stream_fault_closes_the_player_stream_at_once(sandbox: Any) -> None:
    arm(sandbox, stream="player", close=4000)
    frames, code = asyncio.run(_frames(sandbox.player_ws_url, 1))
    assert (frames, code) == ([], 4000)
    frames, code = asyncio.run(_frames(sandbox.player_ws_url, 1))
    assert len(frames) == 1 and code is None


def test_a_rate_limited_stream_handshake_is_accepted_then_closed_4029(sandbox: Any) -> None:
    arm(sandbox, match="loaders_ws", retry_after_ms=750)
    frames, code = asyncio.run(_frames(sandbox.loaders_ws_url, 1, Authorization=xe.SANDBOX_BOT_TOKEN))
    assert (frames, code) == ([], 4029)


def test_the_clock_ends_tracks_and_moves_positions(sandbox: Any) -> None:
    join_and_play(sandbox, "https://www.youtube.com/playlist?list=PLlatinoHits")
    first = sandbox.http.get(NOWPLAYING).json()
    before = sandbox.clock.now_ms
    answer = sandbox.http.post("/admin/clock", json={"advance_ms": 60_000}, headers=SANDBOX_ADMIN)
    assert answer.json()["now_ms"] >= before + 60_000
    moved = sandbox.http.get(NOWPLAYING).json()
    assert moved["title"] == first["title"] and moved["position"] >= first["position"] + 60_000
    sandbox.end_track()
    assert sandbox.http.get(NOWPLAYING).json()["title"] != first["title"]
    sandbox.clock.advance(3600)  # past every track of the playlist, each ending in turn
    assert sandbox.http.get(NOWPLAYING).status_code == 410


def test_the_clock_moves_rate_limit_windows(tmp_path: Path) -> None:
    with xe.sandbox(db=str(tmp_path / "xe.db"), rate_limits="mappers=1/10") as sandbox:
        with httpx.Client(base_url=sandbox.url) as client:
            assert client.get(MAPPERS, headers=BOT).status_code == 200
            limited = client.get(MAPPERS, headers=BOT)
            assert limited.status_code == 429
            sandbox.clock.advance(ms=math.ceil(limited.json()["retry_after"]))
            assert client.get(MAPPERS, headers=BOT).status_code == 200


def test_the_record_keeps_what_the_apis_received_with_secrets_masked(sandbox: Any) -> None:
    sandbox.http.get(MAPPERS + "&token=hunter2", headers=BOT)
    sandbox.http.post(PLAY, json={"user": xe.DEMO_USER, "query": "tuyo", "api_key": "hunter3"}, headers=KEY)
    sandbox.http.get("/health")  # not an API route
    answer = sandbox.http.get("/admin/requests", headers=SANDBOX_ADMIN)
    recorded = answer.json()["requests"]
    assert [(r["method"], r["path"]) for r in recorded] == [
        ("GET", "/api/mappers"),
        ("POST", PLAY),
    ]
    assert recorded[0]["query"].endswith("&token=***") and recorded[0]["status"] == 200
    assert recorded[1]["body"] == {"user": xe.DEMO_USER, "query": "tuyo", "api_key": "***"}
    for secret in ("hunter2", "hunter3", xe.SANDBOX_KEY, xe.SANDBOX_BOT_TOKEN):
        assert secret not in answer.text
    assert sandbox.http.delete("/admin/requests", headers=SANDBOX_ADMIN).status_code == 200
    assert sandbox.requests.list() == []


def test_a_reset_gives_fresh_state(sandbox: Any) -> None:
    join_and_play(sandbox, "tuyo narcos")
    assert sandbox.http.get(NOWPLAYING).status_code == 200
    arm(sandbox, match="*", times=100, status=500)
    assert (
        sandbox.http.post(
            "/admin/keys", json={"guild": xe.DEMO_GUILD, "user": "460177285954142208"}, headers=SANDBOX_ADMIN
        ).status_code
        == 201
    )
    assert sandbox.http.post("/admin/reset", headers=SANDBOX_ADMIN).status_code == 200
    assert sandbox.faults.list() == [] and sandbox.requests.list() == []
    assert sandbox.http.get(NOWPLAYING).status_code == 410  # the player is gone
    keys = sandbox.http.get("/admin/keys", headers=SANDBOX_ADMIN).json()["items"]
    assert [(k["guild"], k["user"]) for k in keys] == [(xe.DEMO_GUILD, xe.DEMO_USER)]
    assert sandbox.http.get(MAPPERS, headers=BOT).status_code == 200


def test_the_async_context_manager_runs_the_same_sandbox(tmp_path: Path) -> None:
    async def main() -> int:
        async with xe.sandbox(db=str(tmp_path / "xe.db")) as sandbox:
            async with httpx.AsyncClient(base_url=sandbox.url) as client:
                return (await client.get(MAPPERS, headers=BOT)).status_code

    assert asyncio.run(main()) == 200


def test_a_stall_holds_the_streams_frames(sandbox: Any) -> None:
    fault = arm(sandbox, stream="player", stall_ms=800)
    assert (fault["close"], fault["after"], fault["stall_ms"]) == (None, 0, 800)

    async def frames() -> tuple[bool, dict[str, Any]]:
        async with connect(sandbox.player_ws_url, open_timeout=10) as socket:
            try:  # the state frame sent on connect is held ...
                await asyncio.wait_for(socket.recv(), 0.15)
                held = False
            except TimeoutError:
                held = True
            return held, json.loads(await asyncio.wait_for(socket.recv(), 10))  # ... then sent

    held, frame = asyncio.run(frames())
    assert held and frame["guild"] == xe.DEMO_GUILD
    assert sandbox.faults.list()[0]["fired"] == 1


def test_the_clock_moves_status_windows(sandbox: Any) -> None:
    admin = sandbox.http
    target = xe.DEMO_TARGET
    body = {"target_id": target, "type": "backup", "source_id": xe.DEMO_SOURCE, "backup_id": xe.DEMO_BACKUP}

    async def statuses() -> list[str]:
        async with connect(sandbox.loaders_ws_url, additional_headers=BOT, open_timeout=10) as socket:
            await asyncio.to_thread(admin.post, "/admin/loaders", json=body, headers=SANDBOX_ADMIN)
            for status in ("one", "two", "three"):  # one window: the first at once, the newest at its end
                await asyncio.to_thread(
                    admin.post,
                    f"/admin/loaders/{target}/status",
                    json={"status": status},
                    headers=SANDBOX_ADMIN,
                )
            heard = [json.loads(await asyncio.wait_for(socket.recv(), 10)) for _ in range(2)]
            await asyncio.to_thread(sandbox.clock.advance, 5)
            heard.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
            return [h["data"].get("status", h["event"]) for h in heard]

    assert asyncio.run(statuses()) == ["start", "one", "three"]


def test_the_record_is_bounded(sandbox: Any) -> None:
    assert xe._RECORDED == 1000
    state = sandbox.app.state.sandbox
    assert state.requests.maxlen == xe._RECORDED


def test_xe_sandbox_is_an_on_off_setting() -> None:
    assert xe.Config.from_env({"XE_SANDBOX": "1"}).sandbox is True
    assert xe.Config.from_env({}).sandbox is False
    with pytest.raises(xe.ConfigError, match="XE_SANDBOX"):
        xe.Config.from_env({"XE_SANDBOX": "maybe"})


def test_the_sandbox_routes_are_documented_under_their_tag(tmp_path: Path) -> None:
    app = xe.create_app(db=str(tmp_path / "xe.db"), sandbox=True)
    with TestClient(app) as client:
        document = client.get("/schema/openapi.json").json()
    operations = [
        operation
        for path, item in document["paths"].items()
        if path.startswith("/admin/")
        for operation in item.values()
        if "Sandbox" in operation.get("tags", ())
    ]
    assert sorted(o["operationId"] for o in operations) == sorted(
        [
            "arm_fault",
            "list_faults",
            "clear_faults",
            "remove_fault",
            "advance_clock",
            "read_clock",
            "list_requests",
            "clear_requests",
            "reset_sandbox",
        ]
    )
    assert all(o["summary"] and o["description"] for o in operations)


def test_the_scenario_helpers_play_end_tracks_and_load_backups(sandbox: Any) -> None:
    with pytest.raises(xe.ApiError) as nothing:
        sandbox.end_track()
    assert nothing.value.status_code == 410
    queued = sandbox.play("https://www.youtube.com/playlist?list=PLlatinoHits")
    assert len(queued) == 4
    sandbox.end_track()
    assert sandbox.http.get(NOWPLAYING).json()["identifier"] == queued[1]["identifier"]
    old = str(int(xe.DEMO_SOURCE) + 1)
    assert sandbox.load_backup(ids={old: "1187426354298199999"}) == xe.DEMO_TARGET
    mapper = sandbox.http.get(MAPPERS, headers=BOT).json()
    assert mapper["ids"][old] == "1187426354298199999" and mapper["loaders"] == [xe.DEMO_CREATOR]


@pytest.mark.parametrize("how", ["cli", "serve", "uvicorn"])
def test_the_sandbox_serves_from_the_command_line_and_from_the_environment(how: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    if how == "cli":
        command = [sys.executable, "-m", "xenon_elixir", "sandbox", "--port", str(port)]
        process = spawn(command, port, log, {"XE_ACCESS_LOG": "0"})
    elif how == "serve":  # XE_SANDBOX=1 with serve: the same banner as the sandbox command
        command = [sys.executable, "-m", "xenon_elixir", "serve", "--port", str(port)]
        process = spawn(command, port, log, {"XE_SANDBOX": "1", "XE_ACCESS_LOG": "0"})
    else:
        command = [sys.executable, "-m", "uvicorn", "xenon_elixir:app", "--port", str(port)]
        process = spawn(command, port, log, {"XE_SANDBOX": "1", "XE_ACCESS_LOG": "0"})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get(MAPPERS, headers=BOT).status_code == 200
            assert client.get("/admin/faults", headers=SANDBOX_ADMIN).json() == {"faults": []}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it handled
    output = log.read_text()
    if how != "uvicorn":  # the banner names the credentials
        assert (
            xe.SANDBOX_BOT_TOKEN in output and xe.SANDBOX_KEY in output and xe.SANDBOX_ADMIN_TOKEN in output
        )
    database = re.search(r"database (\S+xenon_elixir_sandbox_\S+\.db)", output)
    if how != "uvicorn":  # the throwaway file it names is gone with the server
        assert database is not None
        assert not [p for p in Path(database[1]).parent.glob(Path(database[1]).name + "*")]  # -wal, .server


def test_a_reset_closes_open_streams_with_1012(sandbox: Any) -> None:
    async def closed_by_reset(url: str, **headers: str) -> int | None:
        async with connect(url, additional_headers=headers, open_timeout=10) as socket:
            await asyncio.to_thread(sandbox.reset)
            try:
                while True:
                    await asyncio.wait_for(socket.recv(), 10)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

    assert asyncio.run(closed_by_reset(sandbox.loaders_ws_url, Authorization=xe.SANDBOX_BOT_TOKEN)) == 1012
    assert asyncio.run(closed_by_reset(sandbox.player_ws_url)) == 1012


def test_a_clock_the_embedding_program_gives_is_its_own(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    with xe.sandbox(db=str(tmp_path / "xe.db"), clock=lambda: now[0]) as sandbox:
        with httpx.Client(base_url=sandbox.url) as client:
            answer = client.post("/admin/clock", json={"advance_ms": 1000}, headers=SANDBOX_ADMIN)
            assert answer.status_code == 409 and "Config.clock" in answer.json()["error"]


def test_an_auth_failures_fault_meets_every_api_route(sandbox: Any) -> None:
    arm(sandbox, match="auth_failures", times=2)
    assert sandbox.http.get(NOWPLAYING).status_code == 429
    assert sandbox.http.get(MAPPERS, headers=BOT).status_code == 429
    assert sandbox.http.get(MAPPERS, headers=BOT).status_code == 200


def test_installing_registers_the_pytest_plugin() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"xenon_elixir": "xenon_elixir"}
    assert "examples/bot/tests" in project["tool"]["pytest"]["ini_options"]["testpaths"]


def test_any_status_is_answered_and_head_gets_no_body(sandbox: Any) -> None:
    arm(sandbox, match="GET /api/v1/{guild_id}/nowplaying", status=432, times=2)
    answer = sandbox.http.get(NOWPLAYING)
    assert answer.status_code == 432 and answer.json()["message"] == "Error"
    head = sandbox.http.head(NOWPLAYING)
    assert head.status_code == 432 and head.content == b""
    arm(sandbox, match="GET /api/v1/{guild_id}/nowplaying", status=200, body={})
    arm(sandbox, match="GET /api/v1/{guild_id}/nowplaying", status=204)
    success = sandbox.http.get(NOWPLAYING)
    assert (success.status_code, success.json()) == (200, {})
    empty = sandbox.http.get(NOWPLAYING)
    assert (empty.status_code, empty.content) == (204, b"")


def _grant_a_bot(db_path: str) -> None:
    async def grant(host: xe.Host) -> None:
        await host.grant_bot("386861188891279362", "Wick")

    with_host(db_path, grant)


def _bots(db_path: str) -> list[str]:
    async def listed(host: xe.Host) -> list[str]:
        return [bot.id for bot in (await host.list("bots")).items]

    return cast(list[str], with_host(db_path, listed))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_a_database_no_sandbox_made_is_refused_and_left_as_it_is(db_path: str) -> None:
    _grant_a_bot(db_path)  # a real server's database, named by XE_DB
    with pytest.raises(xe.ConfigError) as refused:
        xe.sandbox(db=db_path).__enter__()
    said = str(refused.value)
    assert xe.masked_url(db_path) in said and "no sandbox made" in said and "\n" not in said
    assert "XE_DB" in said and "empty database" in said  # and how to proceed
    app = xe.create_app(db=db_path, sandbox=True)  # XE_SANDBOX=1 under uvicorn: its lifespan refuses
    with pytest.raises(BaseExceptionGroup) as failed, TestClient(app):
        pass
    assert failed.value.subgroup(lambda exc: isinstance(exc, xe.ConfigError)) is not None
    assert _bots(db_path) == ["386861188891279362"]  # nothing emptied, nothing seeded


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_an_empty_database_becomes_the_sandboxs_own(db_path: str) -> None:
    for _ in range(2):  # empty, then marked by the sandbox that emptied and seeded it
        with xe.sandbox(db=db_path) as sandbox, httpx.Client(base_url=sandbox.url) as client:
            assert client.get(MAPPERS, headers=BOT).status_code == 200
            sandbox.reset()
    assert _bots(db_path) == [xe.DEMO_BOT]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_a_sandboxs_database_that_a_real_server_then_used_is_refused(db_path: str) -> None:
    with xe.sandbox(db=db_path):  # empty: marked as the sandbox's own
        pass
    _grant_a_bot(db_path)  # then a real server or bot opens it: the mark comes off
    with pytest.raises(xe.ConfigError) as refused:
        xe.sandbox(db=db_path).__enter__()
    assert "no sandbox made" in str(refused.value)
    assert "386861188891279362" in _bots(db_path)  # nothing emptied


def test_the_sandbox_command_refuses_a_database_no_sandbox_made_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "bot.db")
    _grant_a_bot(db)
    assert xe.main(["sandbox", "--db", db, "--port", str(free_port())]) == 1
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and db in said and "no sandbox made" in said
    assert _bots(db) == ["386861188891279362"]


def test_the_sandbox_help_names_its_throwaway_database(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        xe.main(["sandbox", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "else a throwaway file" in said and "./xenon_elixir.db" not in said


def test_a_reset_brings_the_clock_back_to_real_time(sandbox: Any) -> None:
    moved = sandbox.clock.advance(3600)
    assert moved >= time.time() * 1000 + 3_500_000
    sandbox.reset()
    now = sandbox.clock.now_ms  # a property
    assert now < time.time() * 1000 + 60_000  # not an hour on
    queued = sandbox.play("https://www.youtube.com/playlist?list=PLlatinoHits")  # timers at real time
    playing = sandbox.http.get(NOWPLAYING).json()
    assert playing["identifier"] == queued[0]["identifier"] and playing["position"] < 60_000
    sandbox.end_track()
    assert sandbox.http.get(NOWPLAYING).json()["identifier"] == queued[1]["identifier"]


@pytest.mark.parametrize(
    ("match", "meant"),
    [
        (f"GET /api/v1/{xe.DEMO_GUILD}/player", "GET /api/v1/{guild_id}/player"),  # an id in the path
        ("/api/loaders/ws", "GET /api/loaders/ws"),  # no method
        ("POST /api/v1/{guild}/play", "POST /api/v1/{guild_id}/play"),
        ("mapers", "mappers"),
    ],
)
def test_an_unknown_match_says_how_routes_are_spelt(sandbox: Any, match: str, meant: str) -> None:
    answer = sandbox.http.post("/admin/faults", json={"match": match}, headers=SANDBOX_ADMIN)
    said = answer.json()["error"]
    assert answer.status_code == 400 and said.startswith("match: ")
    assert f"did you mean {meant!r}?" in said
    assert '"GET /api/loaders/ws" and "GET /api/v1/{guild_id}/player"' in said  # the streams' spellings


def test_the_helpers_requests_are_kept_out_of_the_record_and_of_faults(sandbox: Any) -> None:
    arm(sandbox, match="*", status=500)
    assert len(sandbox.play("https://www.youtube.com/playlist?list=PLlatinoHits")) == 4
    sandbox.end_track()
    assert sandbox.requests.list() == []
    assert sandbox.faults.list()[0]["fired"] == 0
    assert sandbox.http.get(NOWPLAYING).status_code == 500  # the test's own request meets it


def test_a_stall_then_a_close(sandbox: Any) -> None:
    arm(sandbox, stream="player", stall_ms=50, close=4000)
    assert asyncio.run(_frames(sandbox.player_ws_url, 1)) == ([], 4000)  # held, then closed unsent


def test_injected_answers_are_in_the_access_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="xenon_elixir.access")
    with xe.sandbox(db=str(tmp_path / "xe.db"), access_log=True) as sandbox:
        with httpx.Client(base_url=sandbox.url) as client:
            sandbox.faults.arm(match="GET /api/mappers", status=503)
            sandbox.faults.arm(match="GET /api/mappers", drop=True)
            sandbox.faults.arm(match="loaders_ws")
            assert client.get(MAPPERS, headers=BOT).status_code == 503
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(MAPPERS, headers=BOT)
            assert asyncio.run(_frames(sandbox.loaders_ws_url, 1, Authorization=xe.SANDBOX_BOT_TOKEN)) == (
                [],
                4029,
            )
            wanted = [
                f'"GET {MAPPERS} HTTP/1.1" 503 ',
                f'"GET {MAPPERS} HTTP/1.1" 499 ',  # dropped: as a client that left
                '"WEBSOCKET /api/loaders/ws HTTP/1.1" 101 ',  # accepted, then closed 4029
            ]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # written once each answer is done
                lines = [r.getMessage() for r in caplog.records if r.name == "xenon_elixir.access"]
                if all(any(w in line for line in lines) for w in wanted):
                    break
                time.sleep(0.01)
            for w in wanted:
                assert sum(w in line for line in lines) == 1, (w, lines)
            metrics = client.get("/metrics").text
    assert 'xe_requests_total{route="/api/mappers",status="503"} 1' in metrics


def test_a_generated_client_arms_a_stream_fault(sandbox: Any, tmp_path: Path) -> None:
    document = sandbox.http.get("/schema/openapi.json").json()
    body = document["paths"]["/admin/faults"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {
        "oneOf": [
            {"$ref": "#/components/schemas/RequestFaultIn"},
            {"$ref": "#/components/schemas/StreamFaultIn"},
        ]
    }
    schemas = document["components"]["schemas"]
    assert not {"id", "fired"} & (
        set(schemas["RequestFaultIn"]["properties"]) | set(schemas["StreamFaultIn"]["properties"])
    )
    assert "GET /api/v1/{guild_id}/player" in schemas["RequestFaultIn"]["properties"]["match"]["description"]
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    (tmp_path / "config.yaml").write_text("post_hooks: []\n")
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(tmp_path / "openapi.json")]
        + ["--meta", "none", "--config", str(tmp_path / "config.yaml")]
        + ["--output-path", str(tmp_path / "xe_sandbox_client")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        client = importlib.import_module("xe_sandbox_client.client").AuthenticatedClient(
            base_url=sandbox.url, token=xe.SANDBOX_ADMIN_TOKEN
        )
        models = importlib.import_module("xe_sandbox_client.models")
        arm_fault = importlib.import_module("xe_sandbox_client.api.sandbox.arm_fault")
        armed = arm_fault.sync(
            client=client, body=models.StreamFaultIn(stream=models.StreamFaultInStream.PLAYER, close=4000)
        )
        assert isinstance(armed, models.StreamFault) and armed.close == 4000 and armed.fired == 0
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == "xe_sandbox_client"]:
            del sys.modules[name]
    assert asyncio.run(_frames(sandbox.player_ws_url, 1)) == ([], 4000)


def test_the_sandbox_refuses_redis_in_one_line_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sandbox is one process: its clock moves its rate-limit windows (which would live in
    Redis, on Redis's clock), and a fleet's Redis would hear its events. XE_REDIS_URL, left over
    from a production shell, is refused before anything opens, from the command line as from
    Python."""
    monkeypatch.setenv("XE_REDIS_URL", "redis://127.0.0.1:1/0")
    db = tmp_path / "sandbox.db"
    assert xe.main(["sandbox", "--db", str(db), "--port", str(free_port())]) == 1
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "the sandbox is one process" in said and "unset XE_REDIS_URL" in said
    assert not db.exists()
    with pytest.raises(xe.ConfigError, match="unset XE_REDIS_URL"):
        xe.create_app(sandbox=True, db=str(db))
