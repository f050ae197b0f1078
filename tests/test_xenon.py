"""The Xenon partner API (SPEC §1): token auth, rate limits, mappers, templates."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import pytest
from conftest import (
    ADMIN,
    BOT,
    CREATOR,
    GUILD,
    OTHER_BOT,
    SOURCE,
    TARGET,
    USER,
    VOICE,
    FakeClock,
    admin_key,
    bearer,
    both_ways,
    grant_bot,
    run_load,
)
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

import xenon_elixir as xe

MAPPER = f"/api/mappers?target={TARGET}&source={SOURCE}"


def xenon_error(response: Any, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": message}


@pytest.fixture
def token(client: TestClient) -> str:
    return grant_bot(client)


@pytest.fixture
def template(client: TestClient) -> str:
    response = client.post(
        "/admin/templates", json={"name": "Gaming", "source_id": SOURCE, "creator_id": CREATOR}, headers=ADMIN
    )
    return response.json()["id"]


# Auth ---------------------------------------------------------------------------


def test_missing_token_is_401_unauthorized(client: TestClient, token: str) -> None:
    xenon_error(client.get(MAPPER), 401, "Unauthorized")
    xenon_error(client.post("/api/templates/hHGhNE6wyxgF/bots"), 401, "Unauthorized")


@pytest.mark.parametrize("authorization", ["nope", "Bearer {token}", "Bot", "{token}x"])
def test_unknown_token_is_401_invalid_token(client: TestClient, token: str, authorization: str) -> None:
    response = client.get(MAPPER, headers={"Authorization": authorization.format(token=token)})
    xenon_error(response, 401, "Invalid token")


@pytest.mark.parametrize("authorization", ["{token}", "Bot {token}", "bot {token}", " {token} "])
def test_raw_token_and_bot_prefix_are_accepted(client: TestClient, token: str, authorization: str) -> None:
    response = client.get(MAPPER, headers={"Authorization": authorization.format(token=token)})
    xenon_error(response, 404, "No id translator found")  # authorized: got past the guard


def test_rotating_a_token_revokes_the_old_one(client: TestClient, token: str) -> None:
    rotated = client.post("/admin/bots", json={"id": BOT, "name": "Wick"}, headers=ADMIN)
    assert rotated.status_code == 200
    xenon_error(client.get(MAPPER, headers={"Authorization": token}), 401, "Invalid token")
    xenon_error(
        client.get(MAPPER, headers={"Authorization": rotated.json()["token"]}), 404, "No id translator found"
    )


def test_a_revoked_token_is_invalid(client: TestClient, token: str) -> None:
    assert client.delete(f"/admin/bots/{BOT}", headers=ADMIN).json() == {}
    xenon_error(client.get(MAPPER, headers={"Authorization": token}), 401, "Invalid token")


# Mappers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (f"source={SOURCE}", "Missing query parameter: target"),
        (f"target=&source={SOURCE}", "Missing query parameter: target"),
        (f"target=abc&source={SOURCE}", "Invalid target: expected a snowflake id (15-20 digits)"),
        (f"target={TARGET}", "Missing query parameter: source or backup"),
        (f"target={TARGET}&source=12", "Invalid source: expected a snowflake id (15-20 digits)"),
        (f"target={TARGET}&backup={'a' * 33}", "Invalid backup: expected 1-32 letters or digits"),
        (f"target={TARGET}&backup=3zydfwqp0!", "Invalid backup: expected 1-32 letters or digits"),
    ],
)
def test_bad_mapper_queries_are_400_naming_the_parameter(
    client: TestClient, token: str, query: str, message: str
) -> None:
    xenon_error(client.get(f"/api/mappers?{query}", headers={"Authorization": token}), 400, message)


def test_unknown_backup_is_404(client: TestClient, token: str) -> None:
    response = client.get(f"/api/mappers?target={TARGET}&backup=3zydfwqp0h", headers={"Authorization": token})
    xenon_error(response, 404, "Unknown backup")


def test_an_unknown_backup_falls_back_to_source(client: TestClient, token: str) -> None:
    run_load(client, {"410520361789161472": "754098965649162251"})
    auth = {"Authorization": token}
    by_source = client.get(f"/api/mappers?target={TARGET}&source={SOURCE}", headers=auth)
    fallback = client.get(f"/api/mappers?target={TARGET}&backup=nosuchbackup&source={SOURCE}", headers=auth)
    assert fallback.status_code == 200 and fallback.json() == by_source.json()


@pytest.mark.parametrize("legacy", ["Ab12Cd34Ef56Gh78", "x", "a" * 32, SOURCE])
def test_any_backup_id_of_1_to_32_letters_or_digits_is_looked_up(
    client: TestClient, token: str, legacy: str
) -> None:
    """Legacy 16-character ids, and guild ids that a bot passes as backup."""
    created = client.post(
        "/admin/backups", json={"id": legacy, "source_id": SOURCE, "creator_id": CREATOR}, headers=ADMIN
    )
    assert created.status_code == 201 and created.json()["id"] == legacy.lower()
    run_load(client, {"410520361789161472": "754098965649162251"})
    mapper = client.get(
        f"/api/mappers?target={TARGET}&backup={legacy.upper()}", headers={"Authorization": token}
    )
    assert mapper.status_code == 200 and mapper.json()["source_id"] == SOURCE


def test_no_mapping_for_the_pair_is_404(client: TestClient, token: str) -> None:
    run_load(client, {"410520361789161472": "754098965649162251"})
    response = client.get(f"/api/mappers?target={SOURCE}&source={TARGET}", headers={"Authorization": token})
    xenon_error(response, 404, "No id translator found")


def test_mapper_answers_ids_including_the_guild_itself(client: TestClient, token: str) -> None:
    run_load(client, {"410520361789161472": "754098965649162251", "410533472055066624": "754098969658916895"})
    response = client.get(MAPPER, headers={"Authorization": token})
    assert response.status_code == 200
    assert response.json() == {
        "source_id": SOURCE,
        "target_id": TARGET,
        "ids": {
            SOURCE: TARGET,
            "410520361789161472": "754098965649162251",
            "410533472055066624": "754098969658916895",
        },
        "loaders": [CREATOR],
    }


def test_loaders_are_left_out_when_empty(client: TestClient, token: str) -> None:
    run_load(client, {"410520361789161472": "754098965649162251"}, user=None)
    body = client.get(MAPPER, headers={"Authorization": token}).json()
    assert "loaders" not in body
    assert body["ids"] == {SOURCE: TARGET, "410520361789161472": "754098965649162251"}


def test_a_mapper_accumulates_over_loads(client: TestClient, token: str) -> None:
    run_load(client, {"410520361789161472": "754098965649162251", "410533472055066624": "754098969658916895"})
    run_load(
        client,
        {"410533472055066624": "754098999999999999", "419932531828457473": "754098968748752987"},
        user=USER,
    )
    run_load(client, {}, user=CREATOR)
    body = client.get(MAPPER, headers={"Authorization": token}).json()
    assert body["ids"] == {
        SOURCE: TARGET,
        "410520361789161472": "754098965649162251",
        "410533472055066624": "754098999999999999",  # the newer new id wins
        "419932531828457473": "754098968748752987",
    }
    assert body["loaders"] == [CREATOR, USER]  # a set, in first-seen order


def test_an_id_sent_again_within_a_load_keeps_its_place_and_takes_its_last_new_id(
    client: TestClient, token: str
) -> None:
    start = {"target_id": TARGET, "type": "backup", "source_id": SOURCE}
    assert client.post("/admin/loaders", json=start, headers=ADMIN).status_code == 201
    for ids in (
        {"410520361789161472": "754098965649162251", "410533472055066624": "754098969658916895"},
        {"419932531828457473": "754098968748752987", "410520361789161472": "754098999999999999"},
    ):
        assert (
            client.post(f"/admin/loaders/{TARGET}/ids", json={"ids": ids}, headers=ADMIN).status_code == 200
        )
    assert client.post(f"/admin/loaders/{TARGET}/done", headers=ADMIN).status_code == 200
    body = client.get(MAPPER, headers={"Authorization": token}).json()
    assert list(body["ids"].items()) == [
        (SOURCE, TARGET),
        ("410520361789161472", "754098999999999999"),  # where it first came, as it was last sent
        ("410533472055066624", "754098969658916895"),
        ("419932531828457473", "754098968748752987"),
    ]


def test_the_source_guild_always_maps_to_the_target(client: TestClient, token: str) -> None:
    run_load(client, {SOURCE: "754098965649162251"})
    assert client.get(MAPPER, headers={"Authorization": token}).json()["ids"] == {SOURCE: TARGET}


def test_backup_ids_are_case_insensitive_and_win_over_source(client: TestClient, token: str) -> None:
    backup = client.post(
        "/admin/backups", json={"id": "3ZYDFWQP0H", "source_id": SOURCE, "creator_id": CREATOR}, headers=ADMIN
    ).json()
    assert backup["id"] == "3zydfwqp0h"
    run_load(client, {"410520361789161472": "754098965649162251"}, backup_id="3zydfwqp0h")
    auth = {"Authorization": token}
    by_backup = client.get(f"/api/mappers?target={TARGET}&backup=3ZydFWqp0h", headers=auth)
    assert by_backup.json()["source_id"] == SOURCE
    # both given: the backup wins, so a wrong source is not even looked at
    both = client.get(
        f"/api/mappers?target={TARGET}&backup=3zydfwqp0h&source=999999999999999999", headers=auth
    )
    assert both.json() == by_backup.json()


def test_a_found_mapper_is_cacheable_and_errors_are_not(
    client: TestClient, token: str, clock: FakeClock
) -> None:
    run_load(client, {})
    response = client.get(MAPPER, headers={"Authorization": token})
    assert response.headers["cache-control"] == "max-age=60"
    assert response.headers["expires"] == response.headers["expiration"]
    expires = email.utils.parsedate_to_datetime(response.headers["expires"]).timestamp()
    assert abs(expires - (clock.now + 60)) < 5  # by the app's clock
    assert response.headers["expires"].endswith(" GMT")
    missing = client.get(f"/api/mappers?target={SOURCE}&source={TARGET}", headers={"Authorization": token})
    assert missing.status_code == 404
    for header in ("cache-control", "expires", "expiration"):
        assert header not in missing.headers


def test_cache_seconds_is_configurable(make_client: Any, clock: FakeClock) -> None:
    client = make_client(cache_seconds=5)
    token = grant_bot(client)
    run_load(client, {})
    clock.advance(0.5)  # Expires counts from the whole second the answer was given in
    headers = client.get(MAPPER, headers={"Authorization": token}).headers
    assert headers["cache-control"] == "max-age=5"
    expires = email.utils.parsedate_to_datetime(headers["expires"]).timestamp()
    assert expires == int(clock.now) + 5  # by the app's clock, with the setting, not the default 60
    assert headers["expiration"] == headers["expires"]


# Templates ----------------------------------------------------------------------


def test_attach_is_idempotent_and_listed(client: TestClient, token: str, template: str) -> None:
    url = f"/api/templates/{template}/bots"
    for _ in range(2):
        response = client.post(url, headers={"Authorization": token})
        assert (response.status_code, response.json()) == (200, {})
    assert client.get(url).json() == {"bots": [BOT]}


@pytest.mark.parametrize(
    "content", [b"", b"{}", b'{"user": "647737109494497281"}', b'{"user": 647737109494497281}']
)
def test_attach_body_is_optional(client: TestClient, token: str, template: str, content: bytes) -> None:
    response = client.post(
        f"/api/templates/{template}/bots", content=content, headers={"Authorization": token}
    )
    assert (response.status_code, response.json()) == (200, {})


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_user_who_is_not_the_creator_is_403(
    client: TestClient, token: str, template: str, method: str
) -> None:
    response = client.request(
        method, f"/api/templates/{template}/bots", json={"user": USER}, headers={"Authorization": token}
    )
    xenon_error(response, 403, "User is not the creator")


@pytest.mark.parametrize("template_id", ["hHGhNE6wyxgF", "short", "not-an-id-at-all"])
@pytest.mark.parametrize("method", ["POST", "DELETE", "GET"])
def test_unknown_templates_are_404(client: TestClient, token: str, template_id: str, method: str) -> None:
    response = client.request(method, f"/api/templates/{template_id}/bots", headers={"Authorization": token})
    xenon_error(response, 404, "Unknown template")
    xenon_error(client.get(f"/api/templates/{template_id}"), 404, "Unknown template")


@pytest.mark.parametrize("content", [b"{nope", b"[]", b'{"user": "abc"}', b'{"user": true}'])
def test_malformed_attach_bodies_are_400(
    client: TestClient, token: str, template: str, content: bytes
) -> None:
    response = client.post(
        f"/api/templates/{template}/bots", content=content, headers={"Authorization": token}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_detach_removes_only_the_calling_bot(client: TestClient, token: str, template: str) -> None:
    other = grant_bot(client, OTHER_BOT, "Bender")
    url = f"/api/templates/{template}/bots"
    client.post(url, headers={"Authorization": token})
    client.post(url, headers={"Authorization": other})
    assert client.get(url).json() == {"bots": [BOT, OTHER_BOT]}
    for _ in range(2):
        response = client.delete(url, headers={"Authorization": other})
        assert (response.status_code, response.json()) == (200, {})
    assert client.get(url).json() == {"bots": [BOT]}


def test_template_details_page_data(client: TestClient, token: str, template: str) -> None:
    client.post(f"/api/templates/{template}/bots", json={"user": CREATOR}, headers={"Authorization": token})
    assert client.get(f"/api/templates/{template}").json() == {
        "id": template,
        "name": "Gaming",
        "source_id": SOURCE,
        "creator_id": CREATOR,
        "bots": [{"id": BOT, "name": "Wick"}],
    }


def test_template_ids_are_case_sensitive(client: TestClient, token: str) -> None:
    client.post(
        "/admin/templates",
        json={"id": "hHGhNE6wyxgF", "name": "T", "source_id": SOURCE, "creator_id": CREATOR},
        headers=ADMIN,
    )
    assert client.get("/api/templates/hHGhNE6wyxgF").status_code == 200
    assert client.get("/api/templates/HHGHNE6WYXGF").status_code == 404


# Rate limits --------------------------------------------------------------------


def test_mappers_allow_30_per_10_seconds_with_an_exact_retry_after(
    client: TestClient, token: str, clock: FakeClock
) -> None:
    auth = {"Authorization": token}
    for _ in range(30):
        assert client.get(MAPPER, headers=auth).status_code == 404
        clock.advance(0.1)  # the first hit was at t0; now t0 + 3.0
    limited = client.get(MAPPER, headers=auth)
    assert limited.status_code == 429
    assert limited.json() == {"error": "You got ratelimited", "retry_after": pytest.approx(7000.0)}
    assert limited.headers["retry-after"] == "7"
    clock.advance(6.99)
    assert client.get(MAPPER, headers=auth).status_code == 429
    clock.advance(0.02)  # the first hit left the window
    assert client.get(MAPPER, headers=auth).status_code == 404
    assert client.get(MAPPER, headers=auth).status_code == 429  # the second hit is still in it


def test_retry_after_header_rounds_up(client: TestClient, token: str, clock: FakeClock) -> None:
    auth = {"Authorization": token}
    for _ in range(30):
        client.get(MAPPER, headers=auth)
    clock.advance(9.5)
    limited = client.get(MAPPER, headers=auth)
    assert limited.json()["retry_after"] == pytest.approx(500.0)
    assert limited.headers["retry-after"] == "1"


def test_limits_are_per_bot_and_per_group(client: TestClient, token: str, template: str) -> None:
    other = grant_bot(client, OTHER_BOT, "Bender")
    for _ in range(30):
        client.get(MAPPER, headers={"Authorization": token})
    assert client.get(MAPPER, headers={"Authorization": token}).status_code == 429
    assert client.get(MAPPER, headers={"Authorization": other}).status_code == 404
    attach = client.post(f"/api/templates/{template}/bots", headers={"Authorization": token})
    assert attach.status_code == 200  # the templates group has its own budget


def test_templates_allow_30_per_10_seconds(client: TestClient, token: str, template: str) -> None:
    url = f"/api/templates/{template}/bots"
    statuses = [
        client.request("POST" if i % 2 else "DELETE", url, headers={"Authorization": token}).status_code
        for i in range(31)
    ]
    assert statuses == [200] * 30 + [429]
    assert client.get(url).status_code == 200  # the public GETs are not limited


def test_an_invalid_token_does_not_spend_a_bots_budget(client: TestClient, token: str) -> None:
    for _ in range(50):
        client.get(MAPPER, headers={"Authorization": "not-a-token"})
    assert client.get(MAPPER, headers={"Authorization": token}).status_code == 404


def test_rate_limits_can_be_turned_off_or_changed(make_client: Any) -> None:
    client = make_client(rate_limits="off")
    token = grant_bot(client)
    assert {client.get(MAPPER, headers={"Authorization": token}).status_code for _ in range(40)} == {404}
    client = make_client(rate_limits="mappers=2/60, templates=off")
    token = grant_bot(client)
    statuses = [client.get(MAPPER, headers={"Authorization": token}).status_code for _ in range(3)]
    assert statuses == [404, 404, 429]


@pytest.mark.parametrize(
    "spec", ["mapper=30/10", "mappers=30", "mappers=x/10", "mappers=0/10", "mappers=5/0"]
)
def test_bad_rate_limit_settings_fail_at_startup(db_path: str, spec: str) -> None:
    with pytest.raises(ValueError, match="XE_RATE_LIMITS"):
        xe.create_app(xe.Config(db=db_path, rate_limits=spec))


def test_the_environment_configures_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XE_STATUS_INTERVAL", "0.5")
    monkeypatch.setenv("XE_CACHE_SECONDS", "30")
    monkeypatch.setenv("XE_RATE_LIMITS", "off")
    monkeypatch.setenv("XE_ADMIN_TOKEN", "")
    config = xe.Config.from_env()
    assert (config.status_interval, config.cache_seconds, config.admin_token) == (0.5, 30, None)
    assert set(config.rate_limit_table().values()) == {None}
    monkeypatch.setenv("XE_CACHE_SECONDS", "soon")
    with pytest.raises(ValueError, match="XE_CACHE_SECONDS must be a number"):
        xe.Config.from_env()


def test_failed_auth_is_limited_per_address_on_every_api(client: TestClient, token: str) -> None:
    for _ in range(100):
        assert client.get(MAPPER, headers={"Authorization": "wrong"}).status_code == 401
    xenon = client.get(MAPPER, headers={"Authorization": "wrong"})
    assert xenon.status_code == 429
    assert set(xenon.json()) == {"error", "retry_after"} and xenon.headers["retry-after"] == "60"
    elixir = client.post(
        f"/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer("a" * 64)
    )
    assert elixir.status_code == 429
    assert set(elixir.json()) == {"timestamp", "message", "retry_after"}
    admin = client.post(
        "/admin/keys", json={"guild": GUILD, "user": USER}, headers={"Authorization": "Bearer no"}
    )
    assert admin.status_code == 429 and set(admin.json()) == {"error", "retry_after"}
    # a valid token still works: only failures are limited
    assert client.get(MAPPER, headers={"Authorization": token}).status_code == 404


def test_the_limiter_evicts_idle_keys() -> None:
    clock = FakeClock(0.0)
    limiter = xe.RateLimiter(3, 10.0, clock=clock)
    for i in range(50_000):
        assert limiter.hit(f"key-{i}") is None
        clock.advance(0.001)  # 50 s in all: keys older than 10 s are idle
    assert len(limiter) <= 10_001
    clock.advance(10)
    limiter.hit("fresh")
    assert len(limiter) == 1


def test_idle_keys_are_swept_though_no_hit_comes() -> None:
    """After a burst of callers, a quiet server lets go of them (the app sweeps every 10 s)."""
    clock = FakeClock(0.0)
    limiter = xe.RateLimiter(30, 10.0, clock=clock)
    for i in range(20_000):
        limiter.hit(f"key-{i}")
    limiter.sweep()
    assert len(limiter) == 20_000  # all still inside their window
    clock.advance(10.0)
    limiter.sweep()
    assert len(limiter) == 0


def test_the_limiter_caps_its_keys_even_when_none_is_idle() -> None:
    limiter = xe.RateLimiter(1, 3600.0, clock=FakeClock(0.0), max_keys=1000)
    for i in range(5000):
        limiter.hit(str(i))
    assert len(limiter) == 1000


# The WebSocket handshake, in process (no denial-response extension: accept, then close) ----


@pytest.mark.parametrize(
    ("headers", "code", "reason"),
    [({}, 4001, "Unauthorized"), ({"Authorization": "wrong"}, 4001, "Invalid token")],
)
def test_refused_handshake_closes_with_the_reason(
    client: TestClient, token: str, headers: dict[str, str], code: int, reason: str
) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect("/api/loaders/ws", headers=headers) as ws,
    ):
        ws.receive_text()
    assert (closed.value.code, closed.value.detail) == (code, reason)


def test_rate_limited_handshake_closes_with_4029(client: TestClient, token: str, clock: FakeClock) -> None:
    with client.websocket_connect("/api/loaders/ws", headers={"Authorization": token}):
        pass
    # accepted (this enter fails if not: a real server would answer HTTP 403), then closed
    with client.websocket_connect("/api/loaders/ws", headers={"Authorization": token}) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text(timeout=5)
    assert closed.value.code == 4029  # the reason is the error body, retry_after exact
    assert json.loads(closed.value.detail) == {"error": "You got ratelimited", "retry_after": 1000.0}
    clock.advance(1.0)
    with client.websocket_connect("/api/loaders/ws", headers={"Authorization": token}):
        pass


def test_past_max_streams_per_address_a_player_stream_is_accepted_then_closed_with_4029(
    make_client: Any,
) -> None:
    """Accepted first, then closed with 4029 and the Elixir error as the reason: a close before the
    accept would be an HTTP 403 through a real server, which reconnect loops do not retry. (The
    test client raises the same WebSocketDisconnect for both, so the accept is asserted apart.)"""
    client = make_client(max_streams_per_address=2)
    url = f"/api/v1/{GUILD}/player"
    with client.websocket_connect(url) as first, client.websocket_connect(url) as second:
        first.receive_json(timeout=5), second.receive_json(timeout=5)  # the state on connect
        with client.websocket_connect(url) as refused:  # this enter fails if it was not accepted
            with pytest.raises(WebSocketDisconnect) as closed:
                refused.receive_text(timeout=5)
        assert closed.value.code == 4029
        reason = json.loads(closed.value.detail)
        assert set(reason) == {"timestamp", "message"}  # the Elixir error shape
        assert reason["message"] == "Too many open streams from this address (at most 2 at once)."


def test_a_bad_since_is_refused(client: TestClient, token: str) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect("/api/loaders/ws?since=-1", headers={"Authorization": token}) as ws,
    ):
        ws.receive_text()
    assert closed.value.code == 4000 and "since" in closed.value.detail


def test_plain_http_to_the_websocket_route_is_a_clear_error(client: TestClient) -> None:
    response = client.get("/api/loaders/ws")
    assert response.status_code == 426
    assert set(response.json()) == {"error"}


def test_keys_and_tokens_do_not_cross_apis(client: TestClient, token: str) -> None:
    key = admin_key(client, GUILD, USER)
    xenon_error(client.get(MAPPER, headers={"Authorization": key}), 401, "Invalid token")
    response = client.post(
        f"/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=bearer(token)
    )
    assert response.status_code == 401


def test_a_cached_mapper_answer_follows_every_new_load(client: TestClient, token: str) -> None:
    auth = {"Authorization": token}
    run_load(client, {"410520361789161472": "754098965649162251"}, user=CREATOR)
    assert client.get(MAPPER, headers=auth).json()["loaders"] == [CREATOR]  # now cached
    run_load(client, {"410520361789161472": "754098999999999999"}, user=USER)
    after = client.get(MAPPER, headers=auth).json()
    assert after["ids"]["410520361789161472"] == "754098999999999999"
    assert after["loaders"] == [CREATOR, USER]
    client.post(
        "/admin/loaders", json={"target_id": TARGET, "type": "backup", "source_id": SOURCE}, headers=ADMIN
    )
    client.post(
        f"/admin/loaders/{TARGET}/ids",
        json={"ids": {"419932531828457473": "754098968748752987"}},
        headers=ADMIN,
    )
    assert "419932531828457473" not in client.get(MAPPER, headers=auth).json()["ids"]  # staged until done
    client.post(f"/admin/loaders/{TARGET}/done", json={"ok": True}, headers=ADMIN)
    assert "419932531828457473" in client.get(MAPPER, headers=auth).json()["ids"]  # the merge invalidates


def test_a_failed_load_changes_no_mapper(client: TestClient, token: str) -> None:
    """Staged ids are merged, and the user added to loaders, only by done with ok: true."""
    auth = {"Authorization": token}
    failed = {"target_id": TARGET, "type": "backup", "source_id": SOURCE, "user_id": USER}
    assert client.post("/admin/loaders", json=failed, headers=ADMIN).status_code == 201
    client.post(f"/admin/loaders/{TARGET}/ids", json={"ids": {"410520361789161472": "1" * 18}}, headers=ADMIN)
    assert (
        client.post(f"/admin/loaders/{TARGET}/done", json={"ok": False}, headers=ADMIN).json()["data"]["ok"]
        is False
    )
    xenon_error(client.get(MAPPER, headers=auth), 404, "No id translator found")  # no mapper was created

    run_load(client, {"410520361789161472": "754098965649162251"}, user=CREATOR)
    before = client.get(MAPPER, headers=auth).json()
    assert client.post("/admin/loaders", json=failed, headers=ADMIN).status_code == 201
    client.post(
        f"/admin/loaders/{TARGET}/ids",
        json={"ids": {"410520361789161472": "2" * 18, "419932531828457473": "3" * 18}},
        headers=ADMIN,
    )
    client.post(f"/admin/loaders/{TARGET}/done", json={"ok": False}, headers=ADMIN)
    assert client.get(MAPPER, headers=auth).json() == before  # an existing mapper is untouched
    assert before["loaders"] == [CREATOR]  # and the failed load's user gained no permission

    run_load(
        client, {"419932531828457473": "754098968748752987"}, user=USER
    )  # the next good load starts clean
    after = client.get(MAPPER, headers=auth).json()
    assert after["ids"] == {**before["ids"], "419932531828457473": "754098968748752987"}
    assert after["loaders"] == [CREATOR, USER]


def test_the_mapper_answers_the_short_way_as_the_framework_does(make_client: Any) -> None:
    client = make_client(rate_limits="off")
    token = grant_bot(client)
    run_load(client, {"410520361789161472": "754098965649162251"})
    queries = [
        f"?target={TARGET}&source={SOURCE}",
        f"?source={SOURCE}",
        f"?target=&source={SOURCE}",
        f"?target=nope&source={SOURCE}",
        f"?target=1&target={TARGET}&source={SOURCE}",
        f"?targ%65t={TARGET}&source={SOURCE}&extra=1",
        f"?target={TARGET}&backup=b4ckup",
        f"?target={TARGET}&backup=not-a-backup!",
        "",
    ]
    for headers in ({"Authorization": token}, {}, {"Authorization": "x" * 40}):
        for query in queries:
            both_ways(client, "GET", f"/api/mappers{query}", headers=headers)
    assert both_ways(client, "GET", MAPPER, headers={"Authorization": token})[0] == 200
