"""Embedding (SPEC §4): mounted under a prefix in a parent Litestar app and in a plain ASGI
router with the lifespan run, the host API used from the parent, uvicorn.Server inside a bot's
event loop; the health route; the access log."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import ADMIN, ADMIN_TOKEN, CATALOG, GUILD, USER, VOICE, bearer, grant_bot
from litestar import Litestar, Request, asgi, post
from litestar.testing import TestClient
from litestar.types import Receive, Scope, Send
from server import free_port

import xenon_elixir as xe


def parent_litestar_app(child: Litestar) -> Litestar:
    @asgi("/music", is_mount=True, copy_scope=True)
    async def music(scope: Scope, receive: Receive, send: Send) -> None:
        await child(scope, receive, send)

    @post("/setup-guild")
    async def setup_guild(request: Request) -> dict[str, str]:
        host = xe.host_of(child)  # the parent's own routes feed the embedded app
        await host.put_guild(GUILD, "Embedded", [VOICE])
        return {"key": await host.create_key(GUILD, USER)}

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with child.lifespan():  # the embedded app's lifespan must run: it opens the database
            yield

    return Litestar([music, setup_guild], lifespan=[lifespan])


def plain_asgi_router(child: Litestar, prefix: str = "/music") -> Any:
    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await child(scope, receive, send)  # the child speaks the lifespan protocol itself
            return
        if scope["path"].startswith(prefix + "/"):
            inner = {
                **scope,
                "path": scope["path"][len(prefix) :],
                "root_path": scope.get("root_path", "") + prefix,
            }
            await child(inner, receive, send)  # type: ignore[arg-type]
            return
        await send(
            {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"not here"})

    return router


def drive_elixir(client: TestClient, prefix: str, key: str) -> None:
    joined = client.post(
        f"{prefix}/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key)
    )
    assert joined.status_code == 200, joined.text
    missing = client.get(f"{prefix}/api/v1/{GUILD}/nowplaying")
    assert missing.status_code == 410 and set(missing.json()) == {"timestamp", "message"}
    unknown = client.get(f"{prefix}/api/v1/{GUILD}/lyrics")
    assert unknown.status_code == 404 and set(unknown.json()) == {"timestamp", "message"}
    assert client.get(f"{prefix}/health").json()["status"] == "ok"


def test_mounted_in_a_parent_litestar_app(db_path: str) -> None:
    child = xe.create_app(db=db_path, admin_token=ADMIN_TOKEN)
    with TestClient(parent_litestar_app(child)) as client:
        key = client.post("/setup-guild").json()["key"]
        drive_elixir(client, "/music", key)
        granted = client.post(
            "/music/admin/bots", json={"id": "386861188891279362", "name": "W"}, headers=ADMIN
        )
        assert granted.status_code == 201
        mapper = client.get(
            "/music/api/mappers?target=496683369665658880&source=410488579140354049",
            headers={"Authorization": granted.json()["token"]},
        )
        assert mapper.json() == {"error": "No id translator found"}
    with pytest.raises(RuntimeError):
        xe.host_of(child)  # stopped with the parent


def test_mounted_in_a_plain_asgi_router(db_path: str) -> None:
    child = xe.create_app(db=db_path)
    with TestClient(plain_asgi_router(child)) as client:
        host = xe.host_of(child)

        async def feed() -> str:
            await host.put_guild(GUILD, "Embedded", [VOICE])
            await host.import_catalog(CATALOG["tracks"])
            return await host.create_key(GUILD, USER)

        key = client.blocking_portal.call(feed)
        drive_elixir(client, "/music", key)
        assert client.get("/elsewhere").status_code == 404


def test_uvicorn_server_inside_a_bots_event_loop(db_path: str) -> None:
    async def bot_main() -> tuple[int, str]:
        app = xe.create_app(db=db_path)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())  # alongside the bot's own tasks
        try:
            while not server.started:
                await asyncio.sleep(0.02)
            await xe.host_of(app).put_guild(GUILD, "From the bot", [VOICE])
            key = await xe.host_of(app).create_key(GUILD, USER)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                joined = await http.post(
                    f"/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key)
                )
            return joined.status_code, (await xe.host_of(app).player(GUILD)).channel_id  # type: ignore[union-attr]
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)

    assert asyncio.run(bot_main()) == (200, VOICE)


def test_a_process_served_whole_freezes_its_heap_while_it_serves_and_an_embedding_ones_is_left_alone(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``uvicorn xenon_elixir:app`` (and ``serve``) own their process: once up, what they hold
    from the start is taken out of the cyclic collector's scans (``gc.freeze``), whose full
    collections had been the p99 of a play, until the lifespan ends (a second run keeps nothing
    of the first). An app a program embeds leaves that program's heap as it is, and so does the
    sandbox, whose reset replaces its services."""
    monkeypatch.setenv("XE_DB", db_path)
    gc.unfreeze()
    try:
        with TestClient(xe.create_app(db=db_path)) as embedded:
            assert embedded.get("/health").status_code == 200
            assert gc.get_freeze_count() == 0
        for _ in range(2):
            monkeypatch.delitem(vars(xe), "app", raising=False)
            with TestClient(xe.app) as served:  # the module's own app, built from the environment
                assert served.get("/health").status_code == 200
                assert gc.get_freeze_count() > 1000  # the modules, the app, the store
            assert gc.get_freeze_count() == 0  # collectable again once it ends
        monkeypatch.delitem(vars(xe), "app", raising=False)
        monkeypatch.setenv("XE_SANDBOX", "1")
        with TestClient(xe.app) as sandbox:
            assert sandbox.get("/health").status_code == 200
            assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
        vars(xe).pop("app", None)


def test_health_says_ok_with_the_version(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": xe.__version__, "database": "ok", "subscribers": 0}
    assert response.headers["cache-control"] == "no-store"


def test_health_is_503_when_the_database_does_not_answer(client: TestClient, db_path: str) -> None:
    os.remove(db_path)  # the file is gone from under the server: what it would answer is no longer kept
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "version": xe.__version__,
        "database": "unreachable",
        "subscribers": 0,
    }


def test_one_access_log_line_per_request_and_no_secrets(
    client: TestClient, caplog: pytest.LogCaptureFixture, world: dict[str, str]
) -> None:
    token = grant_bot(client)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="xenon_elixir.access"):
        client.get(
            "/api/mappers?target=496683369665658880&source=410488579140354049",
            headers={"Authorization": token},
        )
        client.post(
            f"/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(world["key"])
        )
        client.get(
            f"/api/v1/{GUILD}/nowplaying?access_token=leaked-in-query&x=1&K%65Y=leaked-2&Api_Key=leaked-3"
        )
        client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    lines = [r.getMessage() for r in caplog.records if r.name == "xenon_elixir.access"]
    assert len(lines) == 4
    assert '"GET /api/mappers?target=496683369665658880&source=410488579140354049 HTTP/1.1" 404' in lines[0]
    assert '"POST /api/v1/766045633697021973/join HTTP/1.1" 200' in lines[1]
    assert "access_token=***&x=1&K%65Y=***&Api_Key=***" in lines[2]
    for line in lines:
        assert line.startswith("testclient - - [")
        for secret in (token, world["key"], ADMIN_TOKEN, "leaked-"):
            assert secret not in line


def test_the_access_log_can_be_turned_off(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(access_log=False)
    with caplog.at_level(logging.INFO, logger="xenon_elixir.access"):
        client.get("/health")
    assert not [r for r in caplog.records if r.name == "xenon_elixir.access"]


@pytest.mark.parametrize("variable", ["XE_ACCESS_LOG", "XE_REQUEST_METRICS"])
def test_an_on_off_setting_takes_the_eight_words_in_any_case(variable: str) -> None:
    field = variable.removeprefix("XE_").lower()
    for word, on in [("1", True), ("true", True), ("Yes", True), ("ON", True), ("0", False)]:
        assert getattr(xe.Config.from_env({variable: word}), field) is on
    for word in ["false", "No", " off "]:
        assert getattr(xe.Config.from_env({variable: word}), field) is False
    assert getattr(xe.Config.from_env({variable: ""}), field) is True  # empty is unset: the default
    assert getattr(xe.Config.from_env({}), field) is True


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("XE_ACCESS_LOG", "flase"),
        ("XE_REQUEST_METRICS", "nope"),
        ("XE_ACCESS_LOG", "2"),
        ("XE_ACCESS_LOG", "y"),
    ],
)
def test_any_other_on_off_value_stops_the_start_naming_the_setting(variable: str, value: str) -> None:
    with pytest.raises(xe.ConfigError) as refused:
        xe.Config.from_env({variable: value})
    assert str(refused.value) == f"{variable} must be one of 1/0/true/false/yes/no/on/off, not {value!r}"


@pytest.mark.parametrize(
    ("keyword", "value", "named"),
    [
        ("access_log", "flase", "XE_ACCESS_LOG"),
        ("access_log", "off", "XE_ACCESS_LOG"),
        ("request_metrics", 0, "XE_REQUEST_METRICS"),
        ("demo", "yes", "demo"),
    ],
)
def test_an_on_off_keyword_takes_a_bool(tmp_path: Path, keyword: str, value: object, named: str) -> None:
    with pytest.raises(xe.ConfigError) as refused:
        xe.create_app(db=str(tmp_path / "xe.db"), **{keyword: value})
    assert str(refused.value) == f"{named} must be True or False, not {value!r}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mount", ["litestar", "asgi"])
def test_mounted_docs_name_the_prefix_and_load_their_assets_under_it(db_path: str, mount: str) -> None:
    child = xe.create_app(db=db_path)
    parent = parent_litestar_app(child) if mount == "litestar" else plain_asgi_router(child)
    with TestClient(parent) as client:
        document = client.get("/music/schema/openapi.json")
        assert document.status_code == 200 and document.json()["servers"] == [{"url": "/music"}]
        assert int(document.headers["content-length"]) == len(document.content)
        page = client.get("/music/schema").text
        assert '"servers":[{"url":"/music"}]' in page.replace(" ", "")
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
            assert f'"/music/schema/assets/{asset}"' in page
            assert client.get(f"/music/schema/assets/{asset}").status_code == 200
    with TestClient(xe.create_app(db=db_path)) as client:  # not mounted: the document says /
        assert client.get("/schema/openapi.json").json()["servers"] == [{"url": "/"}]
