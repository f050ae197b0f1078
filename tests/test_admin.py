"""The admin HTTP API for the Elixir side (SPEC §3): keys, guild registry, catalog."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from conftest import (
    ADMIN,
    ADMIN_TOKEN,
    CATALOG,
    CATALOG_FILE,
    GUILD,
    OTHER_USER,
    USER,
    VOICE,
    VOICE_2,
    admin_key,
    bearer,
)
from litestar.testing import TestClient

import xenon_elixir as xe

API = "/api/v1"
TRACK = CATALOG["tracks"][0]


def xenon_error(response: Any, status: int, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    if message is not None:
        assert body["error"] == message


def test_admin_is_off_without_a_token(make_client: Any) -> None:
    client = make_client(admin_token=None)
    xenon_error(client.post("/admin/keys", json={"guild": GUILD, "user": USER}, headers=ADMIN), 404)
    client = make_client(admin_token="")
    xenon_error(client.put(f"/admin/guilds/{GUILD}", json={"name": "x"}, headers=ADMIN), 404)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", ADMIN_TOKEN, f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x"],
)
def test_admin_needs_the_bearer_token(client: TestClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.post("/admin/keys", json={"guild": GUILD, "user": USER}, headers=headers)
    xenon_error(response, 401, "Unauthorized")


def test_admin_token_scheme_is_case_insensitive(client: TestClient) -> None:
    response = client.post(
        "/admin/keys", json={"guild": GUILD, "user": USER}, headers={"Authorization": f"bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 201


# Keys ---------------------------------------------------------------------


def test_create_key_is_201_with_64_lowercase_hex(client: TestClient) -> None:
    response = client.post("/admin/keys", json={"guild": int(GUILD), "user": USER}, headers=ADMIN)
    assert response.status_code == 201
    body = response.json()
    assert body["guild"] == GUILD and body["user"] == USER
    assert re.fullmatch(r"[0-9a-f]{64}", body["key"])


def test_a_second_key_for_the_same_pair_is_409_unless_rotated(client: TestClient) -> None:
    first = admin_key(client, GUILD, USER)
    response = client.post("/admin/keys", json={"guild": GUILD, "user": USER}, headers=ADMIN)
    xenon_error(response, 409)
    rotated = client.post("/admin/keys", json={"guild": GUILD, "user": USER, "rotate": True}, headers=ADMIN)
    assert rotated.status_code == 201
    second = rotated.json()["key"]
    assert second != first
    client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    join = {"user": USER, "channel": VOICE}
    assert client.post(f"{API}/{GUILD}/join", json=join, headers=bearer(first)).status_code == 401
    assert client.post(f"{API}/{GUILD}/join", json=join, headers=bearer(second)).status_code == 200


def test_rotate_without_an_existing_key_creates_one(client: TestClient) -> None:
    response = client.post("/admin/keys", json={"guild": GUILD, "user": USER, "rotate": True}, headers=ADMIN)
    assert response.status_code == 201


def test_keys_of_different_users_are_independent(client: TestClient) -> None:
    assert admin_key(client, GUILD, USER) != admin_key(client, GUILD, OTHER_USER)


def test_revoke_key_is_200_and_idempotent(client: TestClient) -> None:
    key = admin_key(client, GUILD, USER)
    assert client.delete(f"/admin/keys/{GUILD}/{USER}", headers=ADMIN).json() == {}
    assert client.delete(f"/admin/keys/{GUILD}/{USER}", headers=ADMIN).status_code == 200
    client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    response = client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key))
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"guild": "abc", "user": USER}, "Invalid guild"),
        ({"guild": GUILD}, "missing required field `user`"),
        ({"guild": GUILD, "user": USER, "rotate": "yes"}, "$.rotate"),
    ],
)
def test_bad_key_requests_are_400(client: TestClient, body: dict[str, Any], fragment: str) -> None:
    response = client.post("/admin/keys", json=body, headers=ADMIN)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_revoke_with_a_bad_id_is_400(client: TestClient) -> None:
    xenon_error(client.delete(f"/admin/keys/{GUILD}/nope", headers=ADMIN), 400)


# Guild registry ------------------------------------------------------------------


def test_put_guild_answers_the_guild_and_replaces_its_channels(client: TestClient) -> None:
    response = client.put(
        f"/admin/guilds/{GUILD}",
        json={"name": "Lounge", "voice_channels": [VOICE_2, int(VOICE), VOICE_2]},
        headers=ADMIN,
    )
    assert response.status_code == 200
    assert response.json() == {"id": GUILD, "name": "Lounge", "voice_channels": [VOICE_2, VOICE]}
    response = client.put(
        f"/admin/guilds/{GUILD}", json={"name": "Renamed", "voice_channels": [VOICE]}, headers=ADMIN
    )
    assert response.json() == {"id": GUILD, "name": "Renamed", "voice_channels": [VOICE]}
    key = admin_key(client, GUILD, USER)
    response = client.post(
        f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE_2}, headers=bearer(key)
    )
    assert response.json()["message"] == "Voice channel not found."


@pytest.mark.parametrize(
    ("guild", "body"),
    [
        ("12", {"name": "x"}),
        (GUILD, {"name": ""}),
        (GUILD, {"name": "x" * 101}),
        (GUILD, {"name": "x", "voice_channels": ["nope"]}),
        (GUILD, {"voice_channels": []}),
        (GUILD, {"name": 5}),
    ],
)
def test_bad_guilds_are_400_and_not_written(client: TestClient, guild: str, body: dict[str, Any]) -> None:
    xenon_error(client.put(f"/admin/guilds/{guild}", json=body, headers=ADMIN), 400)
    key = admin_key(client, GUILD, USER)
    response = client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key))
    assert response.json()["message"] == "Guild not found."


def test_deleting_a_guild_keeps_its_keys(client: TestClient) -> None:
    client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    key = admin_key(client, GUILD, USER)
    assert client.delete(f"/admin/guilds/{GUILD}", headers=ADMIN).json() == {}
    assert client.delete(f"/admin/guilds/{GUILD}", headers=ADMIN).status_code == 200
    join = {"user": USER, "channel": VOICE}
    response = client.post(f"{API}/{GUILD}/join", json=join, headers=bearer(key))
    assert (response.status_code, response.json()["message"]) == (400, "Guild not found.")
    client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    assert client.post(f"{API}/{GUILD}/join", json=join, headers=bearer(key)).status_code == 200


# Catalog ---------------------------------------------------------------------


def test_import_tracks_counts_and_upserts(client: TestClient) -> None:
    response = client.post("/admin/tracks", json=CATALOG["tracks"], headers=ADMIN)
    assert (response.status_code, response.json()) == (200, {"count": len(CATALOG["tracks"])})
    renamed = {**TRACK, "title": "Magia (Live)"}
    assert client.post("/admin/tracks", json=[renamed], headers=ADMIN).json() == {"count": 1}
    client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    key = admin_key(client, GUILD, USER)
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key))
    played = client.post(
        f"{API}/{GUILD}/play", json={"user": USER, "query": "magia live"}, headers=bearer(key)
    )
    assert played.json()["title"] == "Magia (Live)"
    # the old title is gone from the search index too
    gone = client.post(
        f"{API}/{GUILD}/play", json={"user": USER, "query": "Sebastián Yatra"}, headers=bearer(key)
    )
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"uri": "ftp://x/y"}, "Invalid uri"),
        ({"thumbnail": "javascript:alert(1)"}, "Invalid uri or thumbnail"),
        ({"length": -1}, "Invalid length"),
        ({"length": "203000"}, "$[1].length"),
        ({"source": "YouTube"}, "Invalid source"),
        ({"title": ""}, "Invalid title"),
        ({"identifier": ""}, "Invalid identifier"),
    ],
)
def test_a_bad_track_refuses_the_whole_import(
    client: TestClient, change: dict[str, Any], fragment: str
) -> None:
    good = {**TRACK, "identifier": "goodOne"}
    response = client.post("/admin/tracks", json=[good, {**TRACK, **change}], headers=ADMIN)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    playlist = {"source": "youtube", "identifier": "PL", "name": "P", "tracks": ["goodOne"]}
    assert (
        client.post("/admin/playlists", json=playlist, headers=ADMIN).status_code == 400
    )  # nothing was written


def test_playlists_are_upserted_in_order(client: TestClient) -> None:
    client.post("/admin/tracks", json=CATALOG["tracks"], headers=ADMIN)
    playlist = {
        "source": "youtube",
        "identifier": "PLmine",
        "name": "Mine",
        "tracks": ["-zgDXIi1uYw", "_n1o4D6G_XE"],
    }
    response = client.post("/admin/playlists", json=playlist, headers=ADMIN)
    assert (response.status_code, response.json()) == (200, playlist)
    playlist["tracks"] = ["1_zgKRBrT0Y"]
    client.post("/admin/playlists", json=playlist, headers=ADMIN)
    client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    key = admin_key(client, GUILD, USER)
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(key))
    played = client.post(
        f"{API}/{GUILD}/play",
        json={"user": USER, "query": "https://www.youtube.com/playlist?list=PLmine"},
        headers=bearer(key),
    )
    assert [t["identifier"] for t in played.json()] == ["1_zgKRBrT0Y"]


def test_a_playlist_naming_an_unknown_track_is_400(client: TestClient) -> None:
    playlist = {"source": "spotify", "identifier": "x1", "name": "X", "tracks": ["nope"]}
    xenon_error(
        client.post("/admin/playlists", json=playlist, headers=ADMIN),
        400,
        "Playlist x1: unknown track spotify/nope",
    )


def test_admin_bodies_may_exceed_one_mebibyte(client: TestClient) -> None:
    tracks = [{**TRACK, "identifier": f"id{i:06d}", "title": f"Track {i} " + "x" * 300} for i in range(4000)]
    response = client.post("/admin/tracks", json=tracks, headers=ADMIN)
    assert (response.status_code, response.json()) == (200, {"count": 4000})


def test_admin_errors_use_the_error_shape(client: TestClient) -> None:
    xenon_error(client.post("/admin/keys", content=b"{oops", headers=ADMIN), 400)
    xenon_error(client.post("/admin/keys", headers=ADMIN), 400, "No body provided.")
    xenon_error(client.patch("/admin/keys", headers=ADMIN), 405)


# Xenon side ------------------------------------------------------------------------

XENON_BOT = "386861188891279362"
SOURCE = "410488579140354049"
CREATOR = "647737109494497281"
TARGET = "496683369665658880"


def test_grant_bot_is_201_then_rotates_with_200(client: TestClient) -> None:
    first = client.post("/admin/bots", json={"id": int(XENON_BOT), "name": "Wick"}, headers=ADMIN)
    assert first.status_code == 201
    assert first.json()["id"] == XENON_BOT and first.json()["name"] == "Wick"
    assert len(first.json()["token"]) >= 40
    again = client.post("/admin/bots", json={"id": XENON_BOT, "name": "Wick 2"}, headers=ADMIN)
    assert again.status_code == 200 and again.json()["token"] != first.json()["token"]


@pytest.mark.parametrize(
    "body", [{"id": "abc", "name": "x"}, {"id": XENON_BOT, "name": ""}, {"id": XENON_BOT}]
)
def test_bad_bots_are_400(client: TestClient, body: dict[str, Any]) -> None:
    xenon_error(client.post("/admin/bots", json=body, headers=ADMIN), 400)


def test_revoke_bot_is_idempotent(client: TestClient) -> None:
    client.post("/admin/bots", json={"id": XENON_BOT, "name": "Wick"}, headers=ADMIN)
    assert client.delete(f"/admin/bots/{XENON_BOT}", headers=ADMIN).json() == {}
    assert client.delete(f"/admin/bots/{XENON_BOT}", headers=ADMIN).status_code == 200
    xenon_error(client.delete("/admin/bots/bad", headers=ADMIN), 400)


@pytest.mark.parametrize("how", ["revoke", "rotate"])
def test_a_used_credential_revoked_through_another_app_is_refused_at_once(
    make_client: Any, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps on one database, as two processes: A remembers a key and a token it has answered
    yes to; B revokes (or rotates) them; A's very next use is 401. So that only the
    ``credentials`` counter can tell A, the uses read nothing else (a refused body, a bad
    query): on PostgreSQL without Redis any other read forgets all; and on SQLite the commits
    counter is made slow to look at."""
    monkeypatch.setattr(xe.SqliteDatabase, "foreign_commits_seen_within", 3600.0)
    a, b = make_client(), make_client()
    key = bearer(admin_key(b, GUILD, USER))
    grant = b.post("/admin/bots", json={"id": XENON_BOT, "name": "W"}, headers=ADMIN)
    token = {"Authorization": grant.json()["token"]}
    no_channel, bad_target = {"user": USER}, "/api/mappers?target=abc"
    for _ in range(2):  # the second use is answered from what A remembers
        assert a.post(f"{API}/{GUILD}/join", json=no_channel, headers=key).status_code == 400
        assert a.get(bad_target, headers=token).status_code == 400
    if how == "revoke":
        assert b.delete(f"/admin/keys/{GUILD}/{USER}", headers=ADMIN).status_code == 200
        assert b.delete(f"/admin/bots/{XENON_BOT}", headers=ADMIN).status_code == 200
    else:
        rotate = {"guild": GUILD, "user": USER, "rotate": True}
        assert b.post("/admin/keys", json=rotate, headers=ADMIN).status_code == 201
        assert b.post("/admin/bots", json={"id": XENON_BOT, "name": "W"}, headers=ADMIN).status_code == 200
    assert a.post(f"{API}/{GUILD}/join", json=no_channel, headers=key).status_code == 401
    assert a.get(bad_target, headers=token).status_code == 401


def test_templates_get_generated_or_given_ids(client: TestClient) -> None:
    made = client.post(
        "/admin/templates", json={"name": "T", "source_id": SOURCE, "creator_id": CREATOR}, headers=ADMIN
    )
    assert made.status_code == 201
    assert re.fullmatch(r"[A-Za-z0-9]{12}", made.json()["id"])
    assert made.json() == {
        "id": made.json()["id"],
        "name": "T",
        "source_id": SOURCE,
        "creator_id": CREATOR,
        "bots": [],
    }
    given = {"id": "hHGhNE6wyxgF", "name": "T", "source_id": SOURCE, "creator_id": CREATOR}
    assert client.post("/admin/templates", json=given, headers=ADMIN).json()["id"] == "hHGhNE6wyxgF"
    xenon_error(
        client.post("/admin/templates", json=given, headers=ADMIN),
        409,
        "Template hHGhNE6wyxgF already exists",
    )
    xenon_error(client.post("/admin/templates", json={**given, "id": "short"}, headers=ADMIN), 400)


def test_backups_get_generated_or_given_lowercase_ids(client: TestClient) -> None:
    made = client.post("/admin/backups", json={"source_id": SOURCE, "creator_id": CREATOR}, headers=ADMIN)
    assert made.status_code == 201 and re.fullmatch(r"[0-9a-z]{10}", made.json()["id"])
    given = client.post(
        "/admin/backups", json={"id": "3ZYDFWQP0H", "source_id": SOURCE, "creator_id": CREATOR}, headers=ADMIN
    )
    assert given.json() == {"id": "3zydfwqp0h", "source_id": SOURCE, "creator_id": CREATOR}
    again = client.post(
        "/admin/backups", json={"id": "3zydfwqp0h", "source_id": SOURCE, "creator_id": CREATOR}, headers=ADMIN
    )
    xenon_error(again, 409)


def test_loader_lifecycle_through_the_admin_api(client: TestClient) -> None:
    start = {
        "target_id": TARGET,
        "type": "backup",
        "source_id": SOURCE,
        "backup_id": "3zydfwqp0h",
        "user_id": CREATOR,
    }
    started = client.post("/admin/loaders", json=start, headers=ADMIN)
    assert started.status_code == 201
    assert started.json() == {
        "event": "start",
        "seq": 1,
        "data": {
            "id": TARGET,
            "type": "backup",
            "source_id": SOURCE,
            "backup_id": "3zydfwqp0h",
            "user_id": CREATOR,
        },
    }
    xenon_error(client.post("/admin/loaders", json=start, headers=ADMIN), 409)
    assert (
        client.post(f"/admin/loaders/{TARGET}/status", json={"status": "loading roles"}, headers=ADMIN).json()
        == {}
    )
    ids = {"410520361789161472": "754098965649162251", "410533472055066624": 754098969658916895}
    assert client.post(f"/admin/loaders/{TARGET}/ids", json={"ids": ids}, headers=ADMIN).json() == {
        "count": 2
    }
    done = client.post(f"/admin/loaders/{TARGET}/done", json={"ok": False}, headers=ADMIN)
    assert done.status_code == 200
    assert done.json()["event"] == "done" and done.json()["data"]["ok"] is False and done.json()["seq"] == 3


@pytest.mark.parametrize("action", ["status", "ids", "done"])
def test_loader_calls_without_a_running_loader_are_404(client: TestClient, action: str) -> None:
    body = {"status": {"status": "x"}, "ids": {"ids": {}}, "done": {}}[action]
    xenon_error(
        client.post(f"/admin/loaders/{TARGET}/{action}", json=body, headers=ADMIN),
        404,
        f"No loader is running on guild {TARGET}",
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/loaders", {"target_id": TARGET, "type": "snapshot", "source_id": SOURCE}),
        ("/admin/loaders", {"target_id": TARGET, "type": "backup"}),
        ("/admin/loaders", {"target_id": TARGET, "type": "backup", "source_id": SOURCE, "backup_id": "x!"}),
        (f"/admin/loaders/{TARGET}/ids", {"ids": {"1": "754098965649162251"}}),
        (f"/admin/loaders/{TARGET}/ids", {"ids": ["x"]}),
        (f"/admin/loaders/{TARGET}/status", {"status": ""}),
        (f"/admin/loaders/{TARGET}/status", {"status": "x" * 201}),
        (f"/admin/loaders/{TARGET}/done", {"ok": "yes"}),
        ("/admin/loaders/abc/done", {}),
    ],
)
def test_bad_loader_requests_are_400_and_change_nothing(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    start = {"target_id": TARGET, "type": "backup", "source_id": SOURCE}
    if not path.endswith("/loaders"):
        client.post("/admin/loaders", json=start, headers=ADMIN)
    xenon_error(client.post(path, json=body, headers=ADMIN), 400)
    if path.endswith("/loaders"):
        assert client.post("/admin/loaders", json=start, headers=ADMIN).status_code == 201
    else:
        assert client.post(f"/admin/loaders/{TARGET}/done", headers=ADMIN).json()["seq"] == 2


def test_ten_thousand_ids_in_one_call(client: TestClient) -> None:
    client.post(
        "/admin/loaders", json={"target_id": TARGET, "type": "backup", "source_id": SOURCE}, headers=ADMIN
    )
    ids = {str(500000000000000000 + i): str(600000000000000000 + i) for i in range(10_000)}
    assert client.post(f"/admin/loaders/{TARGET}/ids", json={"ids": ids}, headers=ADMIN).json() == {
        "count": 10_000
    }
    client.post(f"/admin/loaders/{TARGET}/done", headers=ADMIN)
    token = client.post("/admin/bots", json={"id": XENON_BOT, "name": "W"}, headers=ADMIN).json()["token"]
    mapper = client.get(
        f"/api/mappers?target={TARGET}&source={SOURCE}", headers={"Authorization": token}
    ).json()
    assert len(mapper["ids"]) == 10_001


# Listing: what an operator has, a page at a time, never a secret ---------------------------------


def test_every_kind_is_listed_in_id_order_a_page_at_a_time_without_secrets(client: TestClient) -> None:
    from conftest import CREATOR, SOURCE, TARGET, grant_bot

    users = sorted(str(460177285954142208 + i) for i in range(5))
    keys = [admin_key(client, GUILD, user) for user in users]
    token = grant_bot(client)
    grant_bot(client, "235148962103951360", "Other")
    client.delete("/admin/bots/235148962103951360", headers=ADMIN)
    client.put(
        f"/admin/guilds/{GUILD}", json={"name": "Lounge", "voice_channels": [VOICE, VOICE_2]}, headers=ADMIN
    )
    client.post(
        "/admin/templates",
        json={"id": "hHGhNE6wyxgF", "name": "T", "source_id": SOURCE, "creator_id": CREATOR},
        headers=ADMIN,
    )
    client.post(
        "/admin/backups", json={"id": "3zydfwqp0h", "source_id": SOURCE, "creator_id": CREATOR}, headers=ADMIN
    )
    client.post(
        "/admin/loaders",
        json={"target_id": TARGET, "type": "template", "source_id": SOURCE, "template_id": "hHGhNE6wyxgF"},
        headers=ADMIN,
    )

    seen, after = [], None
    while True:  # two at a time
        page = client.get(
            "/admin/keys", params={"limit": 2, **({"after": after} if after else {})}, headers=ADMIN
        ).json()
        seen += page["items"]
        after = page["next"]
        if after is None:
            break
    assert [item["user"] for item in seen] == users and {item["guild"] for item in seen} == {GUILD}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["created_at"]) for item in seen)

    bots = client.get("/admin/bots", headers=ADMIN).json()
    assert [(b["id"], b["name"], b["active"]) for b in bots["items"]] == [
        ("235148962103951360", "Other", False),
        ("386861188891279362", "Wick", True),
    ]
    assert client.get("/admin/guilds", headers=ADMIN).json() == {
        "items": [{"id": GUILD, "name": "Lounge", "voice_channels": [VOICE, VOICE_2]}],
        "next": None,
    }
    template = client.get("/admin/templates", headers=ADMIN).json()["items"][0]
    assert {k: template[k] for k in ("id", "name", "source_id", "creator_id")} == {
        "id": "hHGhNE6wyxgF",
        "name": "T",
        "source_id": SOURCE,
        "creator_id": CREATOR,
    }
    assert client.get("/admin/backups", headers=ADMIN).json()["items"][0]["id"] == "3zydfwqp0h"
    loader = client.get("/admin/loaders", headers=ADMIN).json()["items"][0]
    assert {k: v for k, v in loader.items() if k != "started_at"} == {
        "target_id": TARGET,
        "type": "template",
        "source_id": SOURCE,
        "template_id": "hHGhNE6wyxgF",
    }

    everything = "".join(
        client.get(f"/admin/{kind}", headers=ADMIN).text
        for kind in ("bots", "guilds", "keys", "templates", "backups", "loaders")
    )
    for secret in (token, *keys, ADMIN_TOKEN):
        assert secret not in everything
    assert "hash" not in everything


@pytest.mark.parametrize(
    "query",
    ["limit=", "limit=0", "limit=1001", "limit=ten", "limit=00001999999", "after=" + "x" * 101],
)
def test_a_bad_page_request_is_400(client: TestClient, query: str) -> None:
    xenon_error(client.get(f"/admin/keys?{query}", headers=ADMIN), 400)


def test_listings_need_the_admin_token(client: TestClient) -> None:
    xenon_error(client.get("/admin/keys"), 401, "Unauthorized")


def test_tracks_stream_in_as_json_lines_past_the_body_limit(make_client: Any) -> None:
    """A catalog of any size: one track per line, written a chunk at a time as it arrives, with
    no body limit (a JSON array stays capped and checked whole)."""
    client = make_client(admin_max_body_size=64 * 1024)
    sample = CATALOG["tracks"][0]
    lines = [json.dumps({**sample, "identifier": f"line{i:06d}"}) for i in range(12_000)]
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) > 64 * 1024
    as_array = client.post(
        "/admin/tracks", content=f"[{','.join(lines)}]", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert as_array.status_code == 413
    streamed = client.post(
        "/admin/tracks",
        content=iter([body[:100_000], body[100_000:]]),
        headers={**ADMIN, "Content-Type": "application/x-ndjson"},
    )
    assert streamed.status_code == 200 and streamed.json() == {"count": 12_000}
    last = client.post(
        "/admin/tracks", content=lines[-1].encode(), headers={**ADMIN, "Content-Type": "application/x-ndjson"}
    )
    assert last.json() == {"count": 1}  # a last line without its newline counts


def test_the_readme_ndjson_sample_is_the_test_catalog_one_track_a_line(client: TestClient) -> None:
    sample = CATALOG_FILE.with_name("catalog.ndjson")
    readme = (CATALOG_FILE.parent.parent / "README.md").read_text()
    assert "-H 'Content-Type: application/x-ndjson' --data-binary @tests/catalog.ndjson" in readme
    assert [json.loads(line) for line in sample.read_text().splitlines()] == CATALOG["tracks"]
    answer = client.post(
        "/admin/tracks",
        content=sample.read_bytes(),
        headers={**ADMIN, "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200 and answer.json() == {"count": len(CATALOG["tracks"])}


@pytest.mark.parametrize(
    ("kind", "body"),
    [("application/x-ndjson", b""), ("application/x-ndjson", b"\n \n"), ("application/json", b"")],
)
def test_an_import_without_a_track_is_400(client: TestClient, kind: str, body: bytes) -> None:
    """``curl --data-binary @a-missing-file`` sends an empty body: that is no import of nothing."""
    answer = client.post("/admin/tracks", content=body, headers={**ADMIN, "Content-Type": kind})
    xenon_error(answer, 400, "No body provided.")


def test_a_bad_json_line_stops_the_stream_there_and_says_which(make_client: Any) -> None:
    client = make_client()
    sample = CATALOG["tracks"][0]
    lines = [json.dumps({**sample, "identifier": f"line{i:06d}"}) for i in range(6_000)]
    lines[5_500] = json.dumps({**sample, "length": -1})
    answer = client.post(
        "/admin/tracks", content="\n".join(lines), headers={**ADMIN, "Content-Type": "application/x-ndjson"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("Invalid track on line 5501: Invalid length")
    assert answer.json()["error"].endswith("(5000 imported before it)")


def test_guild_pages_carry_each_guilds_own_channels_in_the_order_given(client: TestClient) -> None:
    """A page of guilds reads its guilds' channels in one query on either store (issue 22: the
    listing once took a SQLite database and was given none on PostgreSQL): each guild gets its
    own channels, in the order they were put, a guild without any gets none, and pages split
    anywhere."""
    guilds = {
        "700000000000000001": ["900000000000000003", "900000000000000001"],
        "700000000000000002": [],
        "700000000000000003": ["900000000000000002"],
        "700000000000000004": ["900000000000000009", "900000000000000004", "900000000000000006"],
        "700000000000000005": ["900000000000000005"],
    }
    for guild, channels in reversed(guilds.items()):
        body = {"name": f"G{guild[-1]}", "voice_channels": channels}
        assert client.put(f"/admin/guilds/{guild}", json=body, headers=ADMIN).status_code == 200
    for limit in (1, 2, 3, 5):
        seen, after = [], None
        while True:
            params = {"limit": limit, **({"after": after} if after else {})}
            page = client.get("/admin/guilds", params=params, headers=ADMIN).json()
            assert len(page["items"]) <= limit
            seen += page["items"]
            if (after := page["next"]) is None:
                break
        assert [(g["id"], g["voice_channels"]) for g in seen] == list(guilds.items()), limit
