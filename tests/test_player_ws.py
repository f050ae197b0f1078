"""WS /api/v1/{guild}/player against a real uvicorn process, with the `websockets` client: the
state on connect, a frame for every change (a track's end included), refused handshakes, and a
follower that falls behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import ADMIN, GUILD, USER, VOICE, with_host
from server import Server, cli
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

import xenon_elixir as xe

API = "/api/v1"
SHORT = {
    "source": "youtube",
    "identifier": "shortshort1",
    "title": "A Short One",
    "author": "Brief",
    "length": 700,
    "uri": "https://www.youtube.com/watch?v=shortshort1",
    "thumbnail": None,
}


@pytest.fixture
def server(music_server: Server) -> Server:
    return music_server


@pytest.fixture
def http(server: Server, db_path: str) -> Iterator[httpx.Client]:
    key = cli(db_path, "genkey", GUILD, USER)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, timeout=10.0, headers=headers) as client:
        yield client


def control(http: httpx.Client, action: str, **body: Any) -> dict[str, Any]:
    answer = http.post(f"{API}/{GUILD}/{action}", json={"user": USER, **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def frame(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


def test_a_follower_gets_the_state_then_every_change_as_it_happens(
    server: Server, http: httpx.Client
) -> None:
    async def scenario() -> None:
        async with connect(f"{server.ws_url}{API}/{GUILD}/player") as ws:
            first = await frame(ws)
            assert first == {
                "seq": first["seq"],
                "guild": GUILD,
                "channel": None,
                "volume": 100,
                "paused": False,
                "track": None,
                "queue": [],
                "queued": 0,
            }
            await asyncio.to_thread(control, http, "join", channel=VOICE)
            joined = await frame(ws)
            assert (joined["channel"], joined["track"], joined["seq"] > first["seq"]) == (VOICE, None, True)

            playlist = "https://www.youtube.com/playlist?list=PLlatinoHits"
            await asyncio.to_thread(control, http, "play", query=playlist)
            played = await frame(ws)
            assert played["track"]["identifier"] == "_n1o4D6G_XE"
            assert played["track"]["requestedBy"] == USER and 0 <= played["track"]["position"] < 5000
            assert [t["identifier"] for t in played["queue"]] == ["1_zgKRBrT0Y", "-zgDXIi1uYw"]
            assert played["queued"] == 2

            await asyncio.to_thread(control, http, "pause")
            paused = await frame(ws)
            assert paused["paused"] is True and paused["track"]["identifier"] == "_n1o4D6G_XE"
            await asyncio.to_thread(control, http, "volume", volume=45)
            assert (await frame(ws))["volume"] == 45
            await asyncio.to_thread(control, http, "skip")
            skipped = await frame(ws)
            assert skipped["track"]["identifier"] == "1_zgKRBrT0Y" and skipped["queued"] == 1
            await asyncio.to_thread(control, http, "stop")
            stopped = await frame(ws)
            assert (stopped["channel"], stopped["track"], stopped["queue"]) == (None, None, [])
            seqs = [f["seq"] for f in (first, joined, played, paused, skipped, stopped)]
            assert seqs == sorted(seqs)

    asyncio.run(scenario())


def test_a_tracks_end_is_sent_as_it_happens(server: Server, http: httpx.Client) -> None:
    assert httpx.post(f"{server.url}/admin/tracks", json=[SHORT], headers=ADMIN).status_code == 200
    control(http, "join", channel=VOICE)

    async def scenario() -> None:
        async with connect(f"{server.ws_url}{API}/{GUILD}/player") as ws:
            assert (await frame(ws))["track"] is None
            await asyncio.to_thread(control, http, "play", query=SHORT["uri"])
            await asyncio.to_thread(control, http, "play", query="magia")
            assert (await frame(ws))["track"]["identifier"] == "shortshort1"
            queued = await frame(ws)
            assert [t["identifier"] for t in queued["queue"]] == ["_n1o4D6G_XE"]
            ended = await frame(ws)  # nobody asks: the short track ends and the next one starts
            assert ended["track"]["identifier"] == "_n1o4D6G_XE" and ended["queued"] == 0
            assert ended["track"]["position"] < 2000

    asyncio.run(scenario())


def test_followers_of_other_guilds_hear_nothing(server: Server, http: httpx.Client) -> None:
    other = "410488579140354049"

    async def scenario() -> None:
        async with connect(f"{server.ws_url}{API}/{other}/player") as ws:
            assert (await frame(ws))["guild"] == other
            await asyncio.to_thread(control, http, "join", channel=VOICE)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)

    asyncio.run(scenario())


@pytest.mark.parametrize("guild", ["12345", "abc", "1" * 21])
def test_a_bad_guild_id_is_refused_with_an_elixir_400(server: Server, guild: str) -> None:
    async def scenario() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"{server.ws_url}{API}/{guild}/player", open_timeout=5):
                pass
        return caught.value

    refused = asyncio.run(scenario())
    assert refused.response.status_code == 400
    body = json.loads(refused.response.body)
    assert set(body) == {"timestamp", "message"} and body["message"].startswith("Invalid guild")


def test_plain_http_to_the_player_stream_is_told_to_upgrade(server: Server) -> None:
    answer = httpx.get(f"{server.url}{API}/{GUILD}/player")
    assert answer.status_code == 426 and answer.headers["upgrade"] == "websocket"
    assert set(answer.json()) == {"timestamp", "message"}


def test_a_follower_that_falls_behind_is_dropped_never_silently(db_path: str) -> None:
    tracks = [xe.Track(**{**SHORT, "identifier": f"track{i:06d}", "length": 60_000}) for i in range(8)]

    async def body(host: xe.Host) -> tuple[list[int], bool]:
        await host.put_guild(GUILD, "Guild", [VOICE])
        await host.join(GUILD, VOICE)
        stream = await host._services.music.follow(GUILD, backlog=3)
        received: list[int] = []
        for track in tracks:  # eight changes while the follower reads none
            await host.enqueue(GUILD, [track], USER)
        async for text in stream:  # the state on connect is still given; then the stream ends
            received.append(json.loads(text)["queued"])
        return received, stream.overflowed

    received, overflowed = with_host(db_path, body)
    assert overflowed and received == [0]
