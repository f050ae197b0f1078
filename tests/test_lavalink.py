"""The Lavalink backend (XE_LAVALINK_URL) against the protocol-faithful stand-in of a v4 node
(tests/lavalink_standin.py): the resolver, every player change mirrored onto the node's player,
the node's events driving the queue, voice forwarded from the bot, and the node lost and back."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ADMIN, GUILD, USER, VOICE, FakeClock, admin_key, bearer
from lavalink_standin import LavalinkStandin, decode_track, lavalink_standin
from litestar.testing import TestClient

import xenon_elixir as xe

API = "/api/v1"
BOT_USER = "830530156048285716"
MAGIA = "https://www.youtube.com/watch?v=_n1o4D6G_XE"


@pytest.fixture
def node() -> Iterator[LavalinkStandin]:
    with lavalink_standin(password="s3cret") as running:
        running.add_track(
            "_n1o4D6G_XE", "Magia", "Andrés Cepeda", 203_000, artwork_url="https://i.ytimg.com/m.jpg"
        )
        running.add_track("1_zgKRBrT0Y", "Calma", "Pedro Capó", 238_000)
        running.add_track("lofiradio01", "lofi radio", "Lofi Girl", 0, stream=True)
        running.add_playlist(
            "https://www.youtube.com/playlist?list=PLx", "Latino", ["_n1o4D6G_XE", "1_zgKRBrT0Y"]
        )
        yield running


@pytest.fixture
def app(make_client: Any, node: LavalinkStandin) -> TestClient:
    client = make_client(lavalink_url=node.url, lavalink_password="s3cret", lavalink_user_id=BOT_USER)
    node.wait_until(node.connected_session)
    assert client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    return client


@pytest.fixture
def key(app: TestClient) -> str:
    return admin_key(app, GUILD, USER)


def call(client: TestClient, key: str, action: str, **body: Any) -> Any:
    return client.post(f"{API}/{GUILD}/{action}", json={"user": USER, **body}, headers=bearer(key))


def playing(app: TestClient, key: str, node: LavalinkStandin, *queries: str) -> dict[str, Any]:
    """Join, play each query, and wait until the node's player has a track: its player."""
    call(app, key, "join", channel=VOICE)
    for query in queries:
        call(app, key, "play", query=query)
    return node.wait_until(lambda: (p := node.player(GUILD)) and p["track"] and p)


def give_voice(app: TestClient, channel: str = VOICE, token: str = "voice-token-1") -> None:
    """The bot's voice state and voice server updates for GUILD, as its event handlers pass them on."""
    host = xe.host_of(app.app)
    app.blocking_portal.call(host.voice_state, GUILD, "voice-session-1", channel)
    app.blocking_portal.call(host.voice_server, GUILD, token, "eu-west.discord.media:443")


def patches(node: LavalinkStandin) -> list[dict[str, Any]]:
    return [
        c["json"] for c in node.calls("PATCH", "/v4/sessions/") if "/players/" in c["path"] and c["status"]
    ]


def test_the_websocket_is_opened_as_the_bot_with_the_password(app: TestClient, node: LavalinkStandin) -> None:
    handshake = node.calls("GET", "/v4/websocket")[0]
    assert handshake["status"] == 101
    assert handshake["headers"]["authorization"] == "s3cret"
    assert handshake["headers"]["user-id"] == BOT_USER
    assert handshake["headers"]["client-name"].startswith("xenon_elixir/")
    session = node.wait_until(lambda: node.calls("PATCH", f"/v4/sessions/{node.connected_session()}"))
    assert session[0]["json"] == {"resuming": True, "timeout": 60}  # so a dropped socket can resume


def test_a_link_a_playlist_and_a_search_are_loaded_by_the_node(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    assert call(app, key, "join", channel=VOICE).status_code == 200
    track = call(app, key, "play", query=MAGIA).json()
    assert (track["title"], track["author"], track["duration"], track["thumbnail"]) == (
        "Magia",
        "Andrés Cepeda",
        203,
        "https://i.ytimg.com/m.jpg",
    )
    playlist = call(app, key, "play", query="https://www.youtube.com/playlist?list=PLx").json()
    assert [t["identifier"] for t in playlist] == ["_n1o4D6G_XE", "1_zgKRBrT0Y"]
    assert call(app, key, "play", query="calma capó").json()["identifier"] == "1_zgKRBrT0Y"
    identifiers = [c["query"]["identifier"] for c in node.calls("GET", "/v4/loadtracks")]
    assert identifiers == [MAGIA, "https://www.youtube.com/playlist?list=PLx", "ytsearch:calma capó"]
    assert all(c["headers"]["authorization"] == "s3cret" for c in node.calls("GET", "/v4/loadtracks"))


def test_the_search_prefix_is_a_setting(make_client: Any, node: LavalinkStandin) -> None:
    client = make_client(
        lavalink_url=node.url, lavalink_password="s3cret", lavalink_search_prefix="scsearch:"
    )
    found = client.blocking_portal.call(xe.host_of(client.app).resolve, "magia")
    assert found.identifier == "_n1o4D6G_XE"
    assert node.calls("GET", "/v4/loadtracks")[-1]["query"]["identifier"] == "scsearch:magia"


def test_nothing_found_is_404_and_a_failed_load_is_a_400_with_the_nodes_reason(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    call(app, key, "join", channel=VOICE)
    empty = call(app, key, "play", query="no such song anywhere")
    assert (empty.status_code, empty.json()["message"]) == (404, "No track found.")
    node.fail_identifier("https://www.youtube.com/watch?v=blocked0001", "This video is unavailable")
    failed = call(app, key, "play", query="https://www.youtube.com/watch?v=blocked0001")
    assert failed.status_code == 400
    assert failed.json()["message"] == "The track could not be loaded: This video is unavailable"


def test_every_change_is_mirrored_onto_the_nodes_player(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    session = node.connected_session()
    assert playing(app, key, node, MAGIA, "calma")["track"]["info"]["identifier"] == "_n1o4D6G_XE"
    sent = node.wait_until(lambda: [b for b in patches(node) if "track" in b])[0]
    assert decode_track(sent["track"]["encoded"])["identifier"] == "_n1o4D6G_XE"  # the node's own encoding
    first_entry = sent["track"]["userData"]["entry"]
    assert isinstance(first_entry, int) and sent["paused"] is False

    node.clear_calls()
    call(app, key, "pause")
    assert node.wait_until(lambda: patches(node)) == [{"paused": True}]
    node.clear_calls()
    call(app, key, "volume", volume=45)
    assert node.wait_until(lambda: patches(node)) == [{"volume": 45}]
    node.clear_calls()
    call(app, key, "resume")
    assert node.wait_until(lambda: patches(node)) == [{"paused": False}]
    node.clear_calls()
    assert call(app, key, "skip").json()["identifier"] == "1_zgKRBrT0Y"
    skipped = node.wait_until(lambda: patches(node))[0]
    assert decode_track(skipped["track"]["encoded"])["identifier"] == "1_zgKRBrT0Y"
    assert skipped["track"]["userData"]["entry"] > first_entry
    assert node.player(GUILD)["track"]["info"]["identifier"] == "1_zgKRBrT0Y"
    assert node.player(GUILD)["volume"] == 45

    node.clear_calls()
    call(app, key, "stop")
    deleted = node.wait_until(lambda: node.calls("DELETE"))
    assert [c["path"] for c in deleted] == [f"/v4/sessions/{session}/players/{GUILD}"]
    assert node.player(GUILD) is None


@pytest.mark.parametrize(
    ("reason", "advances"),
    [("finished", True), ("loadFailed", True), ("stopped", False), ("replaced", False)],
)
def test_the_nodes_track_end_drives_the_queue(
    app: TestClient, node: LavalinkStandin, key: str, reason: str, advances: bool
) -> None:
    playing(app, key, node, "https://www.youtube.com/playlist?list=PLx")
    node.clear_calls()
    if reason == "loadFailed":
        node.fail_track(GUILD, "Could not read the stream")
    else:
        node.finish_track(GUILD, reason)
    if advances:
        played = node.wait_until(lambda: [b for b in patches(node) if "track" in b])[0]
        assert decode_track(played["track"]["encoded"])["identifier"] == "1_zgKRBrT0Y"
        assert app.get(f"{API}/{GUILD}/nowplaying").json()["identifier"] == "1_zgKRBrT0Y"
    else:
        node.wait_until(lambda: node.frames() and node.frames()[-1].get("type") == "TrackEndEvent")
        assert app.get(f"{API}/{GUILD}/nowplaying").json()["identifier"] == "_n1o4D6G_XE"
        assert [b for b in patches(node) if "track" in b] == []


def test_a_late_track_end_for_an_entry_already_past_changes_nothing(
    app: TestClient, node: LavalinkStandin, key: str, clock: FakeClock
) -> None:
    """Our clock ended the track first (and the node was told the next one): the node's own
    end of the old one, arriving after, must not skip the new one too."""
    call(app, key, "join", channel=VOICE)
    call(app, key, "play", query="https://www.youtube.com/playlist?list=PLx")
    old = node.wait_until(lambda: [b for b in patches(node) if "track" in b])[0]["track"]
    clock.advance(203.5)  # past Magia's end by our clock
    node.wait_until(lambda: node.player(GUILD)["track"]["info"]["identifier"] == "1_zgKRBrT0Y")
    node.emit(
        {
            "op": "event",
            "type": "TrackEndEvent",
            "guildId": GUILD,
            "reason": "finished",
            "track": {"encoded": old["encoded"], "info": {}, "pluginInfo": {}, "userData": old["userData"]},
        }
    )
    node.wait_until(lambda: node.frames()[-1].get("type") == "TrackEndEvent")
    assert app.get(f"{API}/{GUILD}/nowplaying").json()["identifier"] == "1_zgKRBrT0Y"


def test_player_updates_correct_the_position(app: TestClient, node: LavalinkStandin, key: str) -> None:
    playing(app, key, node, MAGIA)
    give_voice(app)
    node.wait_until(lambda: node.player(GUILD)["state"]["connected"])
    assert app.get(f"{API}/{GUILD}/nowplaying").json()["position"] == 0  # our clock stands still here
    node.emit_player_update(GUILD, position=42_000)
    position = node.wait_until(lambda: app.get(f"{API}/{GUILD}/nowplaying").json()["position"] or None)
    assert position == 42_000


def test_a_player_update_within_a_second_of_our_clock_changes_nothing(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    """Only a drift past POSITION_DRIFT is written: the node's updates come every few seconds for
    every player, and a write each would cost more than the clock it corrects."""

    def commits() -> float:
        text = app.get("/metrics").text
        found = re.search(r"^xe_commit_seconds_count (\S+)$", text, re.MULTILINE)
        return float(found[1]) if found else 0.0

    playing(app, key, node, MAGIA)
    give_voice(app)
    node.wait_until(lambda: node.player(GUILD)["state"]["connected"])
    voice = xe.host_of(app.app)._services.lavalink.voice_of  # type: ignore[union-attr]
    node.wait_until(lambda: not voice.tasks or None)  # the voice credentials kept: their write counted
    before = commits()
    node.emit_player_update(GUILD, position=900)  # within a second of our 0: nothing to correct
    node.emit_player_update(GUILD, position=42_000)  # handled in order, after the first
    position = node.wait_until(lambda: app.get(f"{API}/{GUILD}/nowplaying").json()["position"] or None)
    assert position == 42_000
    assert commits() == before + 1  # the correction to 42 s only


def test_voice_updates_from_the_bot_reach_the_node(app: TestClient, node: LavalinkStandin) -> None:
    host = xe.host_of(app.app)  # called on the app's loop, as a bot's event handlers would
    # The session's first look at the node's players over: a voice-only player of a guild with no
    # player of ours, met by that look, is brought in line (deleted; the next play sends voice again).
    node.wait_until(lambda: host._services.lavalink.in_line or None)  # type: ignore[union-attr]
    app.blocking_portal.call(host.voice_state, GUILD, "voice-session-1", VOICE)
    app.blocking_portal.call(host.voice_server, GUILD, "voice-token-1", "eu-west.discord.media:443")
    sent = node.wait_until(lambda: [b for b in patches(node) if "voice" in b])
    assert sent[0]["voice"] == {
        "sessionId": "voice-session-1",
        "channelId": VOICE,
        "token": "voice-token-1",
        "endpoint": "eu-west.discord.media:443",
    }
    assert node.player(GUILD)["state"]["connected"] is True


def test_a_lost_node_means_503s_then_the_session_resumes_and_the_players_are_brought_in_line(
    app: TestClient, node: LavalinkStandin, key: str
) -> None:
    session = node.connected_session()
    playing(app, key, node, MAGIA, "calma")

    node.down()
    node.wait_until(lambda: call(app, key, "pause").status_code == 503)
    refused = call(app, key, "play", query="magia")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["message"] == xe.NODE_AWAY
    assert app.get(f"{API}/{GUILD}/nowplaying").status_code == 200  # reads need no node

    node.clear_calls()
    node.up()
    node.wait_until(lambda: call(app, key, "skip").status_code == 200, timeout=15)
    resumed = node.calls("GET", "/v4/websocket")[-1]
    assert resumed["headers"]["session-id"] == session and node.connected_session() == session
    node.wait_until(lambda: node.player(GUILD)["track"]["info"]["identifier"] == "1_zgKRBrT0Y")


def test_without_a_node_the_host_says_so() -> None:
    with pytest.raises(xe.ConfigError, match="XE_LAVALINK_URL"):
        xe.Config(lavalink_url="localhost:2333").check()


def test_until_the_bot_connects_the_node_changes_wait_with_503(
    make_client: Any, node: LavalinkStandin
) -> None:
    client = make_client(lavalink_url=node.url, lavalink_password="s3cret")  # no XE_LAVALINK_USER_ID
    client.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
    key = admin_key(client, GUILD, USER)
    assert call(client, key, "join", channel=VOICE).status_code == 503
    assert node.calls("GET", "/v4/websocket") == []
    client.blocking_portal.call(xe.host_of(client.app).lavalink_connect, BOT_USER)
    node.wait_until(node.connected_session)
    assert node.calls("GET", "/v4/websocket")[0]["headers"]["user-id"] == BOT_USER
    node.wait_until(lambda: call(client, key, "join", channel=VOICE).status_code == 200)


class _NodeAnswering:
    """A node whose ``/v4/loadtracks`` answers ``answer``, whatever is asked."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def request(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        return self.answer


@pytest.mark.parametrize("answer", [{"loadType": "error"}, {"loadType": "error", "data": None}])
def test_a_failed_load_without_the_nodes_reason_is_still_a_400(answer: dict[str, Any]) -> None:
    resolver = xe.LavalinkResolver(_NodeAnswering(answer), "ytsearch:")
    with pytest.raises(xe.Invalid) as refused:
        asyncio.run(resolver.resolve("magia"))
    assert refused.value.message == "The track could not be loaded: unknown error"


@pytest.mark.parametrize("kind", ["track", "search", "playlist"])
def test_a_load_without_data_finds_nothing(kind: str) -> None:
    resolver = xe.LavalinkResolver(_NodeAnswering({"loadType": kind}), "ytsearch:")
    assert asyncio.run(resolver.resolve("magia")) is None
