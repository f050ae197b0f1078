"""No 500 and no silent loss (SPEC §0): hostile input of any depth or length, a database that
another process keeps locked, a database file removed under the server, and writes that fail.
Every one is a clear 4xx, or a 503 with Retry-After, in the API's shape."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

import pytest
from conftest import ADMIN, GUILD, SOURCE, TARGET, USER, VOICE, bearer, with_host
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient
from test_bad_input import assert_clear_4xx, partners_and_a_player, route_bodies, snapshot

import xenon_elixir as xe

API = "/api/v1"
DEEP = "[" * 3000 + "]" * 3000


@pytest.fixture
def client(make_client: Any) -> TestClient:
    return make_client(rate_limits="off", write_wait=0.2)


@pytest.fixture
def setup(client: TestClient, world: dict[str, str], db_path: str) -> dict[str, Any]:
    seeded = partners_and_a_player(client, world, creator=USER)
    client.post(
        "/admin/loaders", json={"target_id": TARGET, "type": "backup", "source_id": SOURCE}, headers=ADMIN
    )
    return {**seeded, "before": snapshot(db_path)}


def test_json_nested_thousands_deep_is_a_400_on_every_route_with_a_body(
    client: TestClient, setup: dict[str, Any], db_path: str
) -> None:
    routes = route_bodies(setup["key"], setup["token"])
    routes += [
        ("POST", f"/admin/loaders/{TARGET}/done", {"ok": False}, ADMIN, "xenon"),
        ("POST", f"/admin/loaders/{TARGET}/ids", {"ids": {}}, ADMIN, "xenon"),
        ("POST", f"/admin/loaders/{TARGET}/status", {"status": "x"}, ADMIN, "xenon"),
        ("POST", "/admin/tracks", {}, ADMIN, "xenon"),
    ]
    for method, path, valid, headers, api in routes:
        for field in ("x", *valid):  # an unknown key, and each known one
            prefix = "[" if path == "/admin/tracks" else ""
            raw = prefix + '{"' + field + '": ' + DEEP + ("}]" if prefix else "}")
            if field != "x":
                raw = raw.replace(
                    "{",
                    "{"
                    + ", ".join(
                        f'"{k}": "{v}"' for k, v in valid.items() if k != field and isinstance(v, str)
                    )
                    + (", " if len(valid) > 1 else ""),
                    1,
                )
            response = client.request(
                method, path, content=raw, headers={**headers, "Content-Type": "application/json"}
            )
            assert response.status_code == 400, (path, field, response.text)
            assert_clear_4xx(response, api)
    assert snapshot(db_path) == setup["before"]


@pytest.mark.parametrize(
    "query", ["http://[x", "https://[::1", "http://[v1.x]/a", "https://www.youtube.com:99999999/watch?v=x"]
)
def test_a_play_query_that_is_not_a_url_is_a_400(
    client: TestClient, setup: dict[str, Any], query: str
) -> None:
    response = client.post(
        f"{API}/{GUILD}/play", json={"user": USER, "query": query}, headers=bearer(setup["key"])
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"] in ("Invalid query.", xe.UNSUPPORTED_LINK)


def test_digit_strings_of_any_length_are_a_400_never_a_500(client: TestClient, setup: dict[str, Any]) -> None:
    key = bearer(setup["key"])
    for volume in ["9" * 5000, "0" * 5000 + "1000", "1" + "0" * 4400]:
        response = client.post(f"{API}/{GUILD}/volume", json={"user": USER, "volume": volume}, headers=key)
        assert (
            response.status_code == 400 and response.json()["message"] == "Volume must be between 0 and 100."
        )
    leading_zeros = client.post(
        f"{API}/{GUILD}/volume", json={"user": USER, "volume": "0" * 5000 + "45"}, headers=key
    )
    assert leading_zeros.json()["message"] == "Successfully changed the volume to 45."
    for raw in ['{"user": ' + "4" * 5000 + "}", '{"user": "' + "4" * 5000 + '"}']:
        response = client.post(
            f"{API}/{GUILD}/stop", content=raw, headers={**key, "Content-Type": "application/json"}
        )
        assert response.status_code in (400, 401) and "Traceback" not in response.text
    assert client.get(f"{API}/{'4' * 5000}/nowplaying").status_code == 400
    assert (
        client.get(
            f"/api/mappers?target={'4' * 5000}&source={SOURCE}", headers={"Authorization": setup["token"]}
        ).status_code
        == 400
    )
    with pytest.raises(WebSocketDisconnect) as refused:  # accepted, then closed with 4000 and the reason
        with client.websocket_connect(
            f"/api/loaders/ws?since={'4' * 5000}", headers={"Authorization": setup["token"]}
        ) as ws:
            ws.receive_text()
    assert (refused.value.code, refused.value.detail) == (
        4000,
        "Invalid since: expected an event number (0 or more)",
    )
    with pytest.raises(ValueError, match="Invalid guild"):
        xe.snowflake(10**5000, "guild")  # the host API's ids


def test_a_write_that_cannot_get_the_lock_in_time_is_a_503(
    client: TestClient, setup: dict[str, Any], db_path: str
) -> None:
    """Another process (a big CLI import, any BEGIN IMMEDIATE) holds the write lock past the wait."""
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for method, path, body, headers, api in [
            ("POST", f"{API}/{GUILD}/volume", {"user": USER, "volume": 5}, bearer(setup["key"]), "elixir"),
            ("POST", "/admin/keys", {"guild": GUILD, "user": "946443578849243156"}, ADMIN, "xenon"),
            ("POST", "/api/templates/hHGhNE6wyxgF/bots", None, {"Authorization": setup["token"]}, "xenon"),
        ]:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "1"
            shape = {"timestamp", "message"} if api == "elixir" else {"error"}
            assert set(response.json()) == shape
        assert client.get(f"{API}/{GUILD}/queue").status_code == 200  # reads go on
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert snapshot(db_path) == setup["before"]  # nothing acknowledged, nothing written
    assert (
        client.post(
            f"{API}/{GUILD}/volume", json={"user": USER, "volume": 5}, headers=bearer(setup["key"])
        ).status_code
        == 200
    )


def test_a_status_refused_with_503_takes_no_window_so_its_retry_goes_out_at_once(
    client: TestClient, setup: dict[str, Any], db_path: str
) -> None:
    """SPEC §1: the first status of a quiet loader goes out at once. One refused with 503 (the
    write lock held past the wait) did not go out: the producer's retry is still the first, and
    reaches the subscriber before the done that follows (it was held for the window's end,
    then dropped by the done)."""
    with client.websocket_connect("/api/loaders/ws", headers={"Authorization": setup["token"]}) as ws:
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            refused = client.post(f"/admin/loaders/{TARGET}/status", json={"status": "x"}, headers=ADMIN)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        sent = client.post(f"/admin/loaders/{TARGET}/status", json={"status": "loading roles"}, headers=ADMIN)
        assert sent.status_code == 200
        assert client.post(f"/admin/loaders/{TARGET}/done", headers=ADMIN).status_code == 200
        events: list[dict[str, Any]] = []
        while not events or events[-1]["event"] != "done":
            events.append(json.loads(ws.receive_text(timeout=5)))
    assert [(e["event"], e["data"].get("status")) for e in events] == [
        ("status", "loading roles"),
        ("done", None),
    ]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_removed_under_the_server_is_noticed(
    client: TestClient, setup: dict[str, Any], db_path: str, how: str
) -> None:
    assert client.get("/health").status_code == 200
    os.remove(db_path)
    if how == "replaced":
        sqlite3.connect(db_path).close()  # a new, empty file at the same path
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    response = client.post(
        f"{API}/{GUILD}/volume", json={"user": USER, "volume": 5}, headers=bearer(setup["key"])
    )
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    response = client.post("/admin/bots", json={"id": "235148962103951360", "name": "B"}, headers=ADMIN)
    assert response.status_code == 503 and set(response.json()) == {"error"}


def test_a_failed_stop_leaves_the_player_as_the_file_has_it(
    client: TestClient, setup: dict[str, Any], db_path: str
) -> None:
    key = bearer(setup["key"])
    client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "magia"}, headers=key)
    holder = sqlite3.connect(db_path, isolation_level=None)  # another process keeps the write lock
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert client.post(f"{API}/{GUILD}/stop", json={"user": USER}, headers=key).status_code == 503
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # every answer agrees with the file: still connected and playing, here and after a restart
    assert client.get(f"{API}/{GUILD}/nowplaying").status_code == 200
    client.__exit__(None, None, None)

    async def reloaded(host: xe.Host) -> Any:
        return await host.player(GUILD)

    assert with_host(db_path, reloaded) is not None


def test_a_queue_holds_at_most_max_queue_waiting_tracks(make_client: Any, world: dict[str, str]) -> None:
    client = make_client(max_queue=3)
    key = bearer(world["key"])
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=key)
    playlist = "https://www.youtube.com/playlist?list=PLlatinoHits"  # 3 tracks
    assert (
        client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": playlist}, headers=key).status_code
        == 200
    )
    assert (
        client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "magia"}, headers=key).status_code
        == 200
    )
    assert len(client.get(f"{API}/{GUILD}/queue").json()["queue"]) == 3  # one plays, three wait
    full = client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "magia"}, headers=key)
    assert full.status_code == 400 and full.json()["message"] == "The queue is full."
    refused = client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": playlist}, headers=key)
    assert refused.status_code == 400  # refused whole: nothing of it added
    assert len(client.get(f"{API}/{GUILD}/queue").json()["queue"]) == 3


def test_the_default_queue_bound_is_1000(make_client: Any, world: dict[str, str]) -> None:
    assert xe.Config().max_queue == 1000
    assert xe.Config.from_env({"XE_MAX_QUEUE": "25"}).max_queue == 25


def test_waits_after_failures_grow_to_two_seconds_and_stay_there_however_long_the_outage() -> None:
    """The broker, the revocation watcher and the claim wait this long after failures in a row:
    a half-hour outage (over a thousand failures) must not end them with an OverflowError."""
    assert [xe.backing_off(n) for n in (1, 2, 3, 4, 5, 6, 1_024, 10**6)] == [
        0.2,
        0.4,
        0.8,
        1.6,
        2.0,
        2.0,
        2.0,
        2.0,
    ]
