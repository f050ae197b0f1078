"""The bad-input matrix (issue: failure modes): every route x malformed JSON, wrong types,
missing fields, ids that are not snowflakes, oversized bodies, unicode and control characters,
odd auth schemes. Each is a 4xx with a clear message in its API's shape, none a 5xx, and the
database is exactly as before."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from conftest import ADMIN, CREATOR, GUILD, SOURCE, TARGET, USER, VOICE, bearer, grant_bot
from litestar.testing import TestClient
from stored import dump

BAD_IDS: list[Any] = [
    "12345",  # too short
    "123456789012345678901",  # too long
    "-460177285954142208",
    -460177285954142208,
    4.6e17,
    "4.6e17",
    99999999999999999999,  # 20 digits, past 64 bits
    18446744073709551616,  # 2**64
    "0460177285954142208",  # leading zero
    "４６０１７７２８５９５４１４２２０８",  # fullwidth digits
    " 460177285954142208",
    "460177285954142208\n",
    True,
    None,
    [],
    {},
    "",
]
MALFORMED = [b"{", b"{'user': 1}", b'{"user": }', b"[1, 2", b"\xff\xfe{}", b'{"user": "1"}}', b"nul\x00l"]
WRONG_TOPS = [b"[]", b'"text"', b"42", b"true", b"null"]
ODD_AUTH: list[Any] = [
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer  ",
    "Digest realm=x",
    "Bearer a b",
    "\u00e9\u00e9".encode("latin-1"),  # raw non-ASCII bytes on the wire
    "Bot",
    "x" * 5000,
]


def snapshot(db_path: str) -> list[str]:
    """Every row the store holds (see ``stored.dump``)."""
    return dump(db_path)


def route_bodies(key: str, token: str) -> list[tuple[str, str, dict[str, Any], dict[str, str], str]]:
    """(method, path, a valid body of required fields only, headers, api) for every route that takes a body."""
    elixir = {"Authorization": f"Bearer {key}"}
    xenon = {"Authorization": token}
    rows: list[tuple[str, str, dict[str, Any], dict[str, str], str]] = [
        ("POST", f"/api/v1/{GUILD}/{action}", body, elixir, "elixir")
        for action, body in [
            ("join", {"user": USER, "channel": VOICE}),
            ("volume", {"user": USER, "volume": 5}),
            ("play", {"user": USER, "query": "magia"}),
            ("stop", {"user": USER}),
            ("skip", {"user": USER}),
            ("pause", {"user": USER}),
            ("resume", {"user": USER}),
        ]
    ]
    rows += [
        ("POST", "/api/templates/hHGhNE6wyxgF/bots", {"user": CREATOR}, xenon, "xenon"),
        ("DELETE", "/api/templates/hHGhNE6wyxgF/bots", {"user": CREATOR}, xenon, "xenon"),
        ("POST", "/admin/keys", {"guild": GUILD, "user": "946443578849243156"}, ADMIN, "xenon"),
        ("PUT", f"/admin/guilds/{GUILD}", {"name": "G"}, ADMIN, "xenon"),
        ("POST", "/admin/bots", {"id": "235148962103951360", "name": "B"}, ADMIN, "xenon"),
        (
            "POST",
            "/admin/templates",
            {"name": "T", "source_id": SOURCE, "creator_id": CREATOR},
            ADMIN,
            "xenon",
        ),
        ("POST", "/admin/backups", {"source_id": SOURCE, "creator_id": CREATOR}, ADMIN, "xenon"),
        (
            "POST",
            "/admin/loaders",
            {"target_id": TARGET, "type": "backup", "source_id": SOURCE},
            ADMIN,
            "xenon",
        ),
        (
            "POST",
            "/admin/playlists",
            {"source": "youtube", "identifier": "PLx", "name": "P", "tracks": ["_n1o4D6G_XE"]},
            ADMIN,
            "xenon",
        ),
    ]
    return rows


def assert_clear_4xx(response: Any, api: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    if api == "elixir":
        assert set(body) - {"retry_after"} == {"timestamp", "message"}, body
        message = body["message"]
    else:
        assert set(body) - {"retry_after"} == {"error"}, body
        message = body["error"]
    assert isinstance(message, str) and 3 <= len(message) <= 600 and "Traceback" not in message


@pytest.fixture
def client(make_client: Any) -> TestClient:
    return make_client(rate_limits="off")  # this is about input, not limits (test_xenon covers those)


def partners_and_a_player(
    client: TestClient, world: dict[str, str], creator: str = CREATOR
) -> dict[str, str]:
    """A bot with its token, the template it may attach to, and a player joined in the world's guild."""
    token = grant_bot(client)
    client.post(
        "/admin/templates",
        json={"id": "hHGhNE6wyxgF", "name": "T", "source_id": SOURCE, "creator_id": creator},
        headers=ADMIN,
    )
    client.post(f"/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(world["key"]))
    return {"key": world["key"], "token": token}


@pytest.fixture
def setup(client: TestClient, world: dict[str, str], db_path: str) -> dict[str, Any]:
    return {**partners_and_a_player(client, world), "before": snapshot(db_path)}


def test_the_bad_input_matrix(client: TestClient, setup: dict[str, Any], db_path: str) -> None:
    tried: Counter[str] = Counter()
    for method, path, valid, headers, api in route_bodies(setup["key"], setup["token"]):
        send = {**headers, "Content-Type": "application/json"}
        attempts: list[tuple[str, bytes | None, Any]] = []
        attempts += [("malformed", raw, None) for raw in MALFORMED]
        attempts += [("wrong top-level type", raw, None) for raw in WRONG_TOPS]
        for field in valid:
            missing = {k: v for k, v in valid.items() if k != field}
            if field != "user" or api == "elixir":
                attempts.append(("missing field", None, missing))
            attempts.append(("wrong type", None, {**valid, field: {"nested": [1]}}))
            if field in ("user", "channel", "guild", "id", "source_id", "creator_id", "target_id"):
                attempts += [("bad id", None, {**valid, field: bad}) for bad in BAD_IDS]
        for body_kind, raw, data in attempts:
            if data is not None and data == {} and path.endswith("/bots"):
                continue  # an empty object is a valid attach/detach body
            if api == "xenon" and path.endswith("/bots") and body_kind == "missing field":
                continue  # user is optional there
            response = client.request(
                method, path, content=raw, json=data if raw is None else None, headers=send
            )
            if response.status_code == 200 and body_kind == "bad id" and None in data.values():
                continue  # a null optional id (attach's user) is the same as leaving it out
            assert_clear_4xx(response, api)
            tried[body_kind] += 1
    # unicode and control characters in queries and names
    for text in [
        "\x00",
        "\u202e\u0645\u0631\u062d\u0628\u0627",
        "\U0001f3b5" * 200,
        "a\r\nSet-Cookie: x=1",
        "%00%ff",
        "\t" * 600,
    ]:
        response = client.post(
            f"/api/v1/{GUILD}/play", json={"user": USER, "query": text}, headers=bearer(setup["key"])
        )
        assert response.status_code in (400, 404), (text, response.text)
        tried["unicode query"] += 1
        response = client.put(
            f"/admin/guilds/{GUILD}", json={"name": text * 200, "voice_channels": [VOICE]}, headers=ADMIN
        )
        assert_clear_4xx(response, "xenon")
        tried["unicode name"] += 1
    # odd auth schemes on every API
    for authorization in ODD_AUTH:
        for method, path, valid, _, api in route_bodies(setup["key"], setup["token"]):
            response = client.request(method, path, json=valid, headers={"Authorization": authorization})
            assert_clear_4xx(response, api)
            assert response.status_code in (401, 429)
            tried["odd auth"] += 1
    # oversized bodies
    for method, path, _, headers, api in route_bodies(setup["key"], setup["token"]):
        limit = 64 * 1024 * 1024 if path.startswith("/admin") else 1024 * 1024
        response = client.request(method, path, content=b"[" + b" " * limit + b"]", headers=headers)
        assert response.status_code == 413, (path, response.status_code)
        assert_clear_4xx(response, api)
        tried["oversized"] += 1
    # ids in paths that are not snowflakes
    for bad in ["12345", "-1", "4.6e17", "99999999999999999999", "%20", "abc", "1" * 300]:
        for method, path, api in [
            ("GET", f"/api/v1/{bad}/nowplaying", "elixir"),
            ("POST", f"/api/v1/{bad}/stop", "elixir"),
            ("DELETE", f"/admin/keys/{bad}/{USER}", "xenon"),
            ("DELETE", f"/admin/guilds/{bad}", "xenon"),
            ("POST", f"/admin/loaders/{bad}/done", "xenon"),
            ("GET", f"/api/mappers?target={bad}&source={SOURCE}", "xenon"),
        ]:
            headers = (
                ADMIN
                if path.startswith("/admin")
                else bearer(setup["key"])
                if api == "elixir"
                else {"Authorization": setup["token"]}
            )
            response = client.request(method, path, json={"user": USER}, headers=headers)
            assert_clear_4xx(response, api)
            tried["bad path id"] += 1
    assert snapshot(db_path) == setup["before"]  # nothing written by any of it
    print(f"\nbad inputs tried: {sum(tried.values())} {dict(tried)}")
    kinds = [
        "malformed",
        "wrong top-level type",
        "missing field",
        "wrong type",
        "bad id",
        "unicode query",
        "unicode name",
        "odd auth",
        "oversized",
        "bad path id",
    ]
    assert all(tried[kind] for kind in kinds) and sum(tried.values()) >= 700  # the matrix really ran
