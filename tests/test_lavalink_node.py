"""What a real Lavalink v4 node does, handled (SPEC §6): voice lost and found again, a restarted
node, stuck and cleaned-up tracks, refused updates, a lost session, the node's load failures, and
the stand-in's own fidelity (tests/lavalink_standin.py, written from the node's source)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN, ARTIFACTS, GUILD, USER, VOICE, VOICE_2, FakeClock, admin_key, offline_page
from lavalink_standin import LavalinkStandin, decode_track, lavalink_standin
from litestar.testing import TestClient
from server import Server, cli
from test_lavalink import API, BOT_USER, MAGIA, call, give_voice, patches
from websockets.sync.client import connect

import xenon_elixir as xe

CALMA = "https://www.youtube.com/watch?v=1_zgKRBrT0Y"
STUCK = "https://www.youtube.com/watch?v=stuckstream"


def fleet_env(redis_url: str, node_url: str) -> dict[str, str]:
    """A server of a fleet on Redis, on the stand-in, with a 2 s session lease."""
    return {
        "XE_REDIS_URL": redis_url,
        "XE_LAVALINK_URL": node_url,
        "XE_LAVALINK_PASSWORD": "s3cret",
        "XE_LAVALINK_USER_ID": BOT_USER,
        "XE_LAVALINK_LEASE": "2",
    }


@pytest.fixture
def node() -> Iterator[LavalinkStandin]:
    with lavalink_standin(password="s3cret", cleanup_threshold=0.3, stuck_threshold=0.2) as running:
        running.add_track("_n1o4D6G_XE", "Magia", "Andrés Cepeda", 203_000)
        running.add_track("1_zgKRBrT0Y", "Calma", "Pedro Capó", 238_000)
        running.add_track("stuckstream", "Stuck", "Nobody", 0, stream=True, stuck=True)
        yield running


HANDLED: list[dict[str, Any]] = []
"""The node's frames the app has handled so far in this test, in order (see ``handled``)."""


@pytest.fixture(autouse=True)
def handled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Notes each node frame once the in-process app has handled it, so that a test moves the
    app's clock only after the app has heard what the node said before: a ``playerUpdate``
    (position 0 as the track starts) handled after the clock moved 7 s sets the position back
    by 7 s, as it should, and the test would see 0 (it did, once, under CI's load)."""
    original = xe.LavalinkPlayers._message

    async def message(self: Any, frame: dict[str, Any]) -> None:
        await original(self, frame)
        HANDLED.append(frame)

    monkeypatch.setattr(xe.LavalinkPlayers, "_message", message)
    HANDLED.clear()
    yield HANDLED
    HANDLED.clear()


def heard_the_start(guild: str) -> bool:
    """Whether the app has handled the node's last ``TrackStartEvent`` of the guild and the
    ``playerUpdate`` the node sends right after it."""
    frames = [frame for frame in HANDLED if frame.get("guildId") == guild]
    starts = [i for i, frame in enumerate(frames) if frame.get("type") == "TrackStartEvent"]
    return bool(starts) and any(frame.get("op") == "playerUpdate" for frame in frames[starts[-1] :])


@pytest.fixture
def lost() -> list[tuple[str, int | None, str]]:
    return []


@pytest.fixture
def app(make_client: Any, node: LavalinkStandin, lost: list[Any]) -> TestClient:
    client = make_client(
        lavalink_url=node.url, lavalink_password="s3cret", lavalink_user_id=BOT_USER, lavalink_voice_grace=2.0
    )
    node.wait_until(node.connected_session)
    client.put(
        f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE, VOICE_2]}, headers=ADMIN
    )
    xe.host_of(client.app).on_voice_lost(lambda guild, code, reason: lost.append((guild, code, reason)))
    return client


@pytest.fixture
def key(app: TestClient) -> str:
    return admin_key(app, GUILD, USER)


def state(app: TestClient) -> dict[str, Any]:
    """The frame a follower of the guild's player stream gets now."""
    return xe.msgspec.to_builtins(app.blocking_portal.call(xe.host_of(app.app).player_state, GUILD))


def playing_with_voice(app: TestClient, key: str, node: LavalinkStandin, *queries: str) -> dict[str, Any]:
    call(app, key, "join", channel=VOICE)
    give_voice(app)
    for query in queries:
        call(app, key, "play", query=query)
    playing = node.wait_until(
        lambda: (p := node.player(GUILD)) and p["track"] and p["state"]["connected"] and p
    )
    node.wait_until(lambda: heard_the_start(GUILD))  # before the test moves the app's clock
    return playing


def track_patches(node: LavalinkStandin) -> list[dict[str, Any]]:
    return [b for b in patches(node) if "track" in b]


# ---------------------------------------------------------------- voice lost, voice back


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_a_voice_close_holds_the_track_tells_the_host_once_and_fresh_voice_plays_on(
    app: TestClient, node: LavalinkStandin, key: str, clock: FakeClock, lost: list[Any]
) -> None:
    playing_with_voice(app, key, node, MAGIA, CALMA)
    clock.advance(10)  # 10 s into Magia by our clock
    node.close_voice(GUILD, 4014, "Disconnected.")
    assert node.wait_until(lambda: lost) == [(GUILD, 4014, "Disconnected.")]
    held = state(app)
    assert held["channel"] is None
    assert (held["track"]["identifier"], held["track"]["position"], held["paused"]) == (
        "_n1o4D6G_XE",
        10_000,
        False,
    )
    assert [t["identifier"] for t in held["queue"]] == ["1_zgKRBrT0Y"]  # the queue is kept
    clock.advance(300)  # past Magia's end: a held track neither moves nor ends
    assert state(app)["track"]["position"] == 10_000
    node.clear_calls()
    give_voice(app, token="voice-token-2")  # the bot rejoined
    sent = node.wait_until(lambda: track_patches(node))
    assert sent[0]["voice"]["token"] == "voice-token-2" and sent[0]["voice"]["channelId"] == VOICE
    assert decode_track(sent[0]["track"]["encoded"])["identifier"] == "_n1o4D6G_XE"
    assert (sent[0]["position"], sent[0]["paused"]) == (10_000, False)
    node.wait_until(lambda: state(app)["channel"] == VOICE)
    assert node.player(GUILD)["state"]["connected"] is True


def test_a_track_the_user_paused_stays_paused_when_voice_comes_back(
    app: TestClient, node: LavalinkStandin, key: str, lost: list[Any]
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    call(app, key, "pause")
    node.close_voice(GUILD, 4006)
    node.wait_until(lambda: lost)
    node.clear_calls()
    give_voice(app, token="voice-token-2")
    assert node.wait_until(lambda: track_patches(node))[0]["paused"] is True
    assert node.wait_until(lambda: (s := state(app))["channel"] and s)["paused"] is True


@pytest.mark.parametrize(("code", "loses"), [(4006, True), (4009, True), (4015, False), (1000, False)])
def test_every_4xxx_close_but_a_resumable_4015_loses_voice(
    app: TestClient, node: LavalinkStandin, key: str, lost: list[Any], code: int, loses: bool
) -> None:
    playing_with_voice(app, key, node, MAGIA, CALMA)
    node.close_voice(GUILD, code, "closed")
    node.close_voice(GUILD, code, "closed")  # one loss: told once
    node.finish_track(GUILD)  # frames are handled in order: once this one is, the closes were
    node.wait_until(lambda: app.get(f"{API}/{GUILD}/nowplaying").json()["identifier"] == "1_zgKRBrT0Y")
    assert (lost == [(GUILD, code, "closed")]) is loses
    assert (state(app)["channel"] is None) is loses


def test_voice_not_connected_past_the_grace_period_is_lost(
    app: TestClient, node: LavalinkStandin, key: str, clock: FakeClock, lost: list[Any]
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    node.drop_voice(GUILD)  # no close event: playerUpdates say connected false

    def waited() -> bool:
        clock.advance(0.5)  # XE_LAVALINK_VOICE_GRACE is 2 s here
        return bool(lost)

    node.wait_until(waited)
    assert lost == [(GUILD, None, "The voice connection was not connected for 2 s.")]
    assert state(app)["channel"] is None


def test_the_host_callback_may_be_a_coroutine(app: TestClient, node: LavalinkStandin, key: str) -> None:
    told: list[str] = []

    async def rejoin(guild_id: str, code: int | None, reason: str) -> None:
        told.append(guild_id)

    xe.host_of(app.app).on_voice_lost(rejoin)
    playing_with_voice(app, key, node, MAGIA)
    node.close_voice(GUILD, 4006)
    assert node.wait_until(lambda: told) == [GUILD]


# ---------------------------------------------------------------- a restarted node


def test_a_restarted_node_never_gets_stale_voice_and_every_player_comes_back_with_fresh_voice(
    app: TestClient, node: LavalinkStandin, key: str, clock: FakeClock, lost: list[Any]
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    call(app, key, "volume", volume=30)
    node.wait_until(lambda: node.player(GUILD)["volume"] == 30)
    clock.advance(20)
    node.down(forget=True)  # a restarted node: no session, no player
    node.clear_calls()
    node.up()
    node.wait_until(lambda: lost, timeout=15)
    assert lost == [(GUILD, None, "The Lavalink node started a new session (it restarted).")]
    session = node.connected_session()
    node.wait_until(lambda: node.calls("GET", f"/v4/sessions/{session}/players"))
    assert [b for b in patches(node) if "voice" in b] == []  # the old credentials are never sent
    assert state(app)["channel"] is None

    give_voice(app, token="voice-token-2")
    restored = node.wait_until(lambda: (p := node.player(GUILD, session)) and p["track"] and p)
    assert (restored["track"]["info"]["identifier"], restored["volume"], restored["paused"]) == (
        "_n1o4D6G_XE",
        30,
        False,
    )
    assert restored["voice"]["token"] == "voice-token-2"
    assert track_patches(node)[0]["position"] == 20_000


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_a_restarted_app_resumes_its_session_with_its_players_and_voice(
    make_client: Any, app: TestClient, node: LavalinkStandin, key: str, lost: list[Any]
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    session = node.connected_session()
    app.__exit__(None, None, None)  # the app stops; the node keeps the session for its timeout
    node.wait_until(lambda: node.connected_session() is None)
    node.clear_calls()

    again = make_client(lavalink_url=node.url, lavalink_password="s3cret", lavalink_user_id=BOT_USER)
    node.wait_until(node.connected_session)
    assert node.calls("GET", "/v4/websocket")[0]["headers"]["session-id"] == session
    assert node.connected_session() == session and lost == []
    assert call(again, key, "pause").status_code == 200
    node.wait_until(lambda: node.player(GUILD, session)["paused"])
    assert node.player(GUILD, session)["state"]["connected"] is True  # the voice the node kept
    assert [b for b in patches(node) if "voice" in b] == []


# ---------------------------------------------------------------- stuck and cleaned-up tracks


def test_a_stuck_track_advances_the_queue(app: TestClient, node: LavalinkStandin, key: str) -> None:
    playing_with_voice(app, key, node, STUCK, CALMA)
    node.wait_until(lambda: any(f.get("type") == "TrackStuckEvent" for f in node.frames()))
    node.wait_until(lambda: node.player(GUILD)["track"]["info"]["identifier"] == "1_zgKRBrT0Y")
    assert app.get(f"{API}/{GUILD}/nowplaying").json()["identifier"] == "1_zgKRBrT0Y"


def test_a_track_cleaned_up_without_voice_is_sent_again_when_voice_comes(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    call(app, key, "join", channel=VOICE)
    call(app, key, "play", query=MAGIA)
    node.wait_until(lambda: any(f.get("reason") == "cleanup" for f in node.frames()))  # 0.3 s here
    assert node.player(GUILD)["track"] is None
    node.clear_calls()
    give_voice(app)
    again = node.wait_until(lambda: (p := node.player(GUILD)) and p["track"] and p)
    assert again["track"]["info"]["identifier"] == "_n1o4D6G_XE" and again["state"]["connected"]


def test_a_track_cleaned_up_while_voice_is_there_is_sent_again_at_once(
    app: TestClient, node: LavalinkStandin, key: str, clock: FakeClock
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    clock.advance(7)
    node.clear_calls()
    node.finish_track(GUILD, "cleanup")
    again = node.wait_until(lambda: track_patches(node))[0]
    assert decode_track(again["track"]["encoded"])["identifier"] == "_n1o4D6G_XE"
    assert again["position"] == 7_000


# ---------------------------------------------------------------- refused updates, lost sessions


@pytest.mark.parametrize("status", [400, 500, 503])
def test_a_refused_update_is_tried_again_until_the_node_has_it(
    app: TestClient, node: LavalinkStandin, key: str, clock: FakeClock, status: int, caplog: Any
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    node.reject_patches(status, "Failed to connect to voice server")
    assert call(app, key, "pause").status_code == 200
    node.wait_until(lambda: [c for c in node.calls("PATCH") if c["status"] == status])
    assert node.player(GUILD)["paused"] is False

    def retried() -> bool:
        clock.advance(0.5)
        return node.player(GUILD)["paused"]

    node.wait_until(retried)
    assert f"refused ({status}: Failed to connect to voice server): trying again" in caplog.text


def test_a_track_the_node_never_takes_is_skipped_like_a_failed_load(
    app: TestClient, node: LavalinkStandin, key: str, clock: FakeClock, caplog: Any
) -> None:
    """A track without the node's encoding is sent by its uri, which this node cannot load: it
    answers 400 "No matches found for identifier" every time."""
    call(app, key, "join", channel=VOICE)
    give_voice(app)
    gone = xe.Track(
        source="youtube", identifier="gone", title="Gone", author="", length=600_000, uri=MAGIA + "x"
    )
    app.blocking_portal.call(xe.host_of(app.app).enqueue, GUILD, [gone], USER)
    call(app, key, "play", query=CALMA)

    def moved_on() -> Any:
        clock.advance(0.5)
        return (p := node.player(GUILD)) is not None and p["track"] is not None and p

    assert node.wait_until(moved_on)["track"]["info"]["identifier"] == "1_zgKRBrT0Y"
    assert app.get(f"{API}/{GUILD}/nowplaying").json()["identifier"] == "1_zgKRBrT0Y"
    refused = [c for c in node.calls("PATCH") if c["status"] == 400]
    assert len(refused) == 3 and all(c["json"]["track"]["identifier"] == MAGIA + "x" for c in refused)
    assert "is skipped, as a failed load" in caplog.text


def test_a_404_for_the_session_is_a_lost_session_never_a_success(
    app: TestClient, node: LavalinkStandin, key: str, lost: list[Any], caplog: Any
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    old = node.connected_session()
    node.forget_session(old)
    assert call(app, key, "pause").status_code == 200
    new = node.wait_until(lambda: (s := node.connected_session()) != old and s)
    assert f"Lavalink has no session {old} (404" in caplog.text
    node.wait_until(lambda: lost)  # the new session has no voice: the bot is told
    give_voice(app, token="voice-token-2")
    back = node.wait_until(lambda: (p := node.player(GUILD, new)) and p["track"] and p)
    assert back["paused"] is True  # the pause the 404 answered is on the node now


def test_the_players_are_brought_in_line_even_when_the_session_update_fails(
    app: TestClient, node: LavalinkStandin, key: str, caplog: Any
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    node.down()
    node.clear_calls()
    node.reject_patches(500, "Internal Server Error", session=True)
    node.up()
    session = node.wait_until(node.connected_session, timeout=15)
    node.wait_until(lambda: node.calls("GET", f"/v4/sessions/{session}/players"))
    assert [c["status"] for c in node.calls("PATCH", f"/v4/sessions/{session}")] == [500]
    assert f"Lavalink session {session} not made resumable" in caplog.text


# ---------------------------------------------------------------- loads and voice updates


@pytest.mark.parametrize(("severity", "status"), [("common", 400), ("suspicious", 503), ("fault", 503)])
def test_a_load_failure_is_the_users_only_when_the_node_says_common(
    app: TestClient, node: LavalinkStandin, key: str, severity: str, status: int
) -> None:
    call(app, key, "join", channel=VOICE)
    node.fail_identifier("https://www.youtube.com/watch?v=blocked0001", "It broke", severity)
    answer = call(app, key, "play", query="https://www.youtube.com/watch?v=blocked0001")
    assert answer.status_code == status
    if status == 503:
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["message"].endswith("could not load the track: It broke")


def test_a_playlist_links_selected_track_plays_first(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    node.add_track("third000001", "Third", "Someone", 100_000)
    link = "https://www.youtube.com/watch?v=1_zgKRBrT0Y&list=PLy"
    node.add_playlist(link, "Mix", ["_n1o4D6G_XE", "1_zgKRBrT0Y", "third000001"], selected=1)
    call(app, key, "join", channel=VOICE)
    queued = call(app, key, "play", query=link).json()
    assert [t["identifier"] for t in queued] == ["1_zgKRBrT0Y", "third000001"]
    assert app.get(f"{API}/{GUILD}/nowplaying").json()["identifier"] == "1_zgKRBrT0Y"


def test_a_channel_move_is_one_voice_update_with_the_new_token_and_channel(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    playing_with_voice(app, key, node, MAGIA)
    node.clear_calls()
    host = xe.host_of(app.app)
    app.blocking_portal.call(host.voice_state, GUILD, "voice-session-1", VOICE_2)
    app.blocking_portal.call(host.voice_server, GUILD, "voice-token-2", "eu-west.discord.media:443")
    node.wait_until(lambda: node.player(GUILD)["voice"]["token"] == "voice-token-2")
    voiced = [b["voice"] for b in patches(node) if "voice" in b]
    assert [(v["token"], v["channelId"]) for v in voiced] == [("voice-token-2", VOICE_2)]


def test_a_track_with_no_http_uri_is_kept_and_played_by_its_encoding(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    node.add_track("localfile01", "Local song", "Me", 60_000, uri="file:///music/song.mp3", source="local")
    call(app, key, "join", channel=VOICE)
    played = call(app, key, "play", query="local song")
    assert played.status_code == 200 and played.json()["uri"] == ""
    sent = node.wait_until(lambda: track_patches(node))[0]
    assert decode_track(sent["track"]["encoded"])["uri"] == "file:///music/song.mp3"


# ---------------------------------------------------------------- the stand-in, as the node


def test_the_standin_answers_the_nodes_other_endpoints(node: LavalinkStandin) -> None:
    headers = {"Authorization": "s3cret"}
    with httpx.Client(base_url=node.url, headers=headers) as rest:
        version = rest.get("/version")
        assert (version.text, version.headers["content-type"].split(";")[0]) == ("4.2.2", "text/plain")
        stats = rest.get("/v4/stats").json()
        assert stats["frameStats"] is None and {
            "players",
            "playingPlayers",
            "uptime",
            "memory",
            "cpu",
        } <= set(stats)
        assert rest.get("/v4/routeplanner/status").status_code == 204
        encoded = node.add_track("dec0ded0001", "Decoded", length=1000)["encoded"]
        decoded = rest.post("/v4/decodetracks", json=[encoded]).json()
        assert [t["info"]["identifier"] for t in decoded] == ["dec0ded0001"]
        assert rest.post("/v4/decodetracks", json=[]).json()["message"] == "No tracks to decode provided"
        assert rest.get("/v4/loadtracks", params={"identifier": "ytsearch:nothing at all"}).json() == {
            "loadType": "empty",
            "data": None,
        }


def test_the_standin_wants_a_channel_id_and_plays_only_with_voice(node: LavalinkStandin) -> None:
    headers = {"Authorization": "s3cret", "User-Id": BOT_USER}
    with connect(node.ws_url, additional_headers=headers) as socket, httpx.Client(base_url=node.url) as rest:
        session = json.loads(socket.recv())["sessionId"]
        path = f"/v4/sessions/{session}/players/{GUILD}"
        voice = {"token": "t", "endpoint": "eu.discord.media", "sessionId": "s"}
        refused = rest.patch(path, json={"voice": voice}, headers=headers)
        assert refused.status_code == 400
        assert (
            refused.json()["message"]
            == "token, endpoint, sessionId and channelId must be provided in voice state"
        )
        encoded = rest.get("/v4/loadtracks", params={"identifier": MAGIA}, headers=headers).json()["data"][
            "encoded"
        ]
        rest.patch(path, json={"track": {"encoded": encoded}}, headers=headers)
        time.sleep(0.1)  # nobody pulls audio: the position stands still however long this takes
        assert node.player(GUILD)["track"]["info"]["position"] == 0
        assert node.player(GUILD)["voice"]["channelId"] is None
        connected = rest.patch(path, json={"voice": {**voice, "channelId": VOICE}}, headers=headers).json()
        assert connected["state"]["connected"] is True
        node.wait_until(lambda: node.player(GUILD)["track"]["info"]["position"] > 0)


# ---------------------------------------------------------------- the now-playing page


def test_the_page_shows_a_lost_voice_connection_not_playing(
    browser: Any, node: LavalinkStandin, db_path: str, tmp_path: Path
) -> None:
    """A real server on the stand-in: the node restarts, so the voice connection is gone; the page
    says so and holds the progress bar where audio stopped."""
    cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
    key = cli(db_path, "genkey", GUILD, USER)
    lavalink = {
        "XE_LAVALINK_URL": node.url,
        "XE_LAVALINK_PASSWORD": "s3cret",
        "XE_LAVALINK_USER_ID": BOT_USER,
    }
    server = Server(db_path, tmp_path / "server.log", **lavalink)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as api:
            node.wait_until(node.connected_session)
            for action, body in (("join", {"channel": VOICE}), ("play", {"query": MAGIA})):
                assert api.post(f"{API}/{GUILD}/{action}", json={"user": USER, **body}).status_code == 200
        page, _ = offline_page(browser, server.url)
        page.goto(f"{server.url}/player/{GUILD}")
        page.wait_for_selector('html[data-status="playing"]', state="attached", timeout=10_000)
        node.down(forget=True)
        node.up()
        page.wait_for_selector('html[data-status="voice-lost"]', state="attached", timeout=15_000)
        assert page.text_content("#status").strip() == "Voice connection lost"
        assert page.text_content("#title").strip() == "Magia"
        held = page.get_attribute("#progress", "data-position-ms")
        page.wait_for_timeout(600)
        assert page.get_attribute("#progress", "data-position-ms") == held
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "player-voice-lost.png"))
    finally:
        server.stop()


# ---------------------------------------------------------------- a fleet: one session


def test_with_redis_one_process_holds_the_session_every_process_drives_it_and_it_is_taken_over(
    node: LavalinkStandin, db_path: str, tmp_path: Path, redis_fresh: Any
) -> None:
    """Two server processes on one database and one Redis: one websocket session on the node,
    changes from either reach the node through it; the holder killed (-9), the other takes the
    session over, resuming it (the players and their voice stay on the node)."""
    cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
    key = cli(db_path, "genkey", GUILD, USER)
    env = fleet_env(redis_fresh.url, node.url)
    holder = Server(db_path, tmp_path / "holder.log", **env)
    other: Server | None = None
    try:
        session = node.wait_until(node.connected_session, timeout=10)
        other = Server(db_path, tmp_path / "other.log", **env)

        def act(server: Server, action: str, **body: Any) -> int:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as api:
                return api.post(f"{API}/{GUILD}/{action}", json={"user": USER, **body}).status_code

        node.wait_until(lambda: act(other, "join", channel=VOICE) == 200)  # the other drives it too
        assert act(holder, "play", query=MAGIA) == 200
        node.wait_until(lambda: (p := node.player(GUILD, session)) and p["track"])
        assert act(other, "pause") == 200
        node.wait_until(lambda: node.player(GUILD, session)["paused"])
        assert [s["sessionId"] for s in node.sessions()] == [session]  # never a second session
        assert {c["path"].split("/")[3] for c in node.calls("PATCH", "/v4/sessions/")} == {session}

        before = len(node.calls("GET", "/v4/websocket"))
        holder.process.kill()  # -9: no goodbye, the lease runs out
        holder.process.wait(10)
        taken = node.wait_until(
            lambda: [c for c in node.calls("GET", "/v4/websocket")[before:] if c["status"] == 101], timeout=15
        )
        assert [c["headers"].get("session-id") for c in taken] == [session]
        assert node.connected_session() == session
        node.wait_until(lambda: act(other, "resume") == 200)
        node.wait_until(lambda: not node.player(GUILD, session)["paused"])
        assert [s["sessionId"] for s in node.sessions()] == [session]
    finally:
        holder.stop()
        if other is not None:
            other.stop()


def test_the_standin_sends_player_updates_and_stats_by_itself() -> None:
    """playerUpdate every playerUpdateInterval for a player with a track, stats every minute
    (both shortened here), with no call asking for them."""
    with lavalink_standin(player_update_interval=0.05, stats_interval=0.05) as running:
        running.add_track("_n1o4D6G_XE", "Magia", "Andrés Cepeda", 203_000)
        headers = {"Authorization": "youshallnotpass", "User-Id": BOT_USER}
        with (
            connect(running.ws_url, additional_headers=headers) as socket,
            httpx.Client(base_url=running.url) as rest,
        ):
            session = json.loads(socket.recv())["sessionId"]
            encoded = rest.get("/v4/loadtracks", params={"identifier": MAGIA}, headers=headers).json()[
                "data"
            ]["encoded"]
            rest.patch(
                f"/v4/sessions/{session}/players/{GUILD}",
                json={"track": {"encoded": encoded}},
                headers=headers,
            )
            running.clear_calls()
            ops = running.wait_until(
                lambda: (
                    [f.get("op") for f in running.frames()].count("playerUpdate") >= 2 and running.frames()
                )
            )
            running.wait_until(lambda: [f.get("op") for f in running.frames()].count("stats") >= 2)
            assert running.calls() == []  # nobody asked
            assert all(f["state"]["connected"] is False for f in ops if f.get("op") == "playerUpdate")


def test_with_redis_the_bots_process_is_told_of_a_voice_loss_the_holder_heard(
    make_client: Any, node: LavalinkStandin, db_path: str, tmp_path: Path, redis_fresh: Any
) -> None:
    """The node's events reach the process holding the session (a server here); the bot's
    process (this app, not holding it) gives the voice and has its on_voice_lost called."""
    env = fleet_env(redis_fresh.url, node.url)
    xe_config = {"redis_url": redis_fresh.url, "lavalink_lease": 2.0}
    holder = Server(db_path, tmp_path / "holder.log", **env)
    try:
        session = node.wait_until(node.connected_session, timeout=10)
        bot = make_client(
            lavalink_url=node.url, lavalink_password="s3cret", lavalink_user_id=BOT_USER, **xe_config
        )
        lost: list[Any] = []
        xe.host_of(bot.app).on_voice_lost(lambda *told: lost.append(told))
        bot.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
        key = admin_key(bot, GUILD, USER)
        node.wait_until(lambda: call(bot, key, "join", channel=VOICE).status_code == 200)
        assert call(bot, key, "play", query=MAGIA).status_code == 200
        give_voice(bot)
        node.wait_until(lambda: (p := node.player(GUILD, session)) and p["track"] and p["state"]["connected"])
        assert [s["sessionId"] for s in node.sessions()] == [session]
        node.close_voice(GUILD, 4014, "Disconnected.")
        assert node.wait_until(lambda: lost, timeout=10) == [(GUILD, 4014, "Disconnected.")]
    finally:
        holder.stop()


def test_an_update_the_node_does_not_answer_in_time_is_tried_again(
    make_client: Any, node: LavalinkStandin, clock: FakeClock, monkeypatch: Any, caplog: Any
) -> None:
    monkeypatch.setattr(xe, "NODE_TIMEOUT", 0.2)  # the node blocks its answer past our timeout
    client = make_client(lavalink_url=node.url, lavalink_password="s3cret", lavalink_user_id=BOT_USER)
    node.wait_until(node.connected_session)
    client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    key = admin_key(client, GUILD, USER)
    call(client, key, "join", channel=VOICE)
    node.reject_patches(500, "Failed to connect to voice server", stall=0.5)
    assert call(client, key, "play", query=MAGIA).status_code == 200
    node.wait_until(lambda: "not answered: trying again" in caplog.text)

    def retried() -> Any:
        clock.advance(0.5)
        return (p := node.player(GUILD)) and p["track"]

    assert node.wait_until(retried)["info"]["identifier"] == "_n1o4D6G_XE"


def test_a_redis_that_refuses_writes_holds_no_session_lease(redis_fresh: Any) -> None:
    """A Redis that turned read-only (a replica, as in a failover) refuses the lease's script:
    the holder is told it holds nothing, so it lets the node's session go rather than keep it
    unrenewed while another process takes it over."""
    import redis.asyncio as aioredis

    async def main() -> list[bool]:
        client = aioredis.from_url(redis_fresh.url)
        hold = xe.RedisHold(xe.Config(redis_url=redis_fresh.url), client, "lavalink-session", 2.0)
        held = [await hold.hold()]
        await client.execute_command("REPLICAOF", "127.0.0.1", "1")  # no such primary: read-only
        try:
            held.append(await hold.hold())
        finally:
            await client.execute_command("REPLICAOF", "NO", "ONE")
            held.append(await hold.hold())
            await client.aclose()
        return held

    assert asyncio.run(main()) == [True, False, True]
