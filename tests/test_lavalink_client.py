"""Lavalink.py (a real client library, from PyPI) against the stand-in: the check that the stand-in
speaks as a Lavalink v4 node does — loads, the other endpoints, voice with a channel, players, and
the events a real client acts on (it skips a stuck track, and hears a voice close)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import GUILD, VOICE
from lavalink_standin import LavalinkStandin, lavalink_standin

lavalink = pytest.importorskip("lavalink", minversion="5.11")

BOT_USER = 830530156048285716
MAGIA = "https://www.youtube.com/watch?v=_n1o4D6G_XE"


@pytest.fixture
def node() -> Iterator[LavalinkStandin]:
    with lavalink_standin(password="s3cret", stuck_threshold=0.2) as running:
        running.add_track("_n1o4D6G_XE", "Magia", "Andrés Cepeda", 203_000)
        running.add_track("1_zgKRBrT0Y", "Calma", "Pedro Capó", 238_000)
        running.add_track("stuckstream", "Stuck", "Nobody", 0, stream=True, stuck=True)
        yield running


def test_lavalink_py_loads_plays_and_reads_every_endpoint_of_the_standin(node: LavalinkStandin) -> None:
    heard: list[Any] = []

    async def main() -> None:
        client = lavalink.Client(BOT_USER)
        client.add_event_hooks(
            type("Hooks", (), {"on": lavalink.listener()(lambda self, e: heard.append(e))})()
        )
        remote = client.add_node("127.0.0.1", node.port, "s3cret", "eu", "standin")
        try:
            await node.wait_until_async(lambda: remote.available)
            # loads: a track, a search, nothing (data null), an error
            loaded = await remote.get_tracks(MAGIA)
            assert loaded.load_type == lavalink.LoadType.TRACK and loaded.tracks[0].title == "Magia"
            assert (await remote.get_tracks("ytsearch:calma")).tracks[0].identifier == "1_zgKRBrT0Y"
            assert (await remote.get_tracks("ytsearch:nothing at all")).load_type == lavalink.LoadType.EMPTY
            assert (await remote.get_tracks("ytsearch:error:boom")).load_type == lavalink.LoadType.ERROR
            # the other endpoints, as Lavalink.py reads them
            assert await remote.get_version() == "4.2.2"
            assert (await remote.get_info())["version"]["semver"] == "4.2.2"
            assert {"players", "playingPlayers", "uptime", "memory", "cpu"} <= set(await remote.get_stats())
            assert await remote.get_routeplanner_status() is None  # 204: no route planner
            decoded = await remote.decode_tracks([loaded.tracks[0].track])
            assert [t.identifier for t in decoded] == ["_n1o4D6G_XE"]
            assert (await remote.decode_track(loaded.tracks[0].track)).title == "Magia"

            # voice as a discord.py bot forwards it (Lavalink.py sends channelId, as 4.2 wants)
            player = client.player_manager.create(int(GUILD))
            await client.voice_update_handler(
                {"t": "VOICE_STATE_UPDATE", "d": {"guild_id": GUILD, "user_id": str(BOT_USER),
                                                   "session_id": "voice-session-1", "channel_id": VOICE}}
            )  # fmt: skip
            await client.voice_update_handler(
                {"t": "VOICE_SERVER_UPDATE", "d": {"guild_id": GUILD, "token": "t0k3n",
                                                    "endpoint": "eu-west.discord.media:443"}}
            )  # fmt: skip
            stuck = (await remote.get_tracks("https://www.youtube.com/watch?v=stuckstream")).tracks[0]
            player.add(stuck)
            player.add((await remote.get_tracks("ytsearch:calma")).tracks[0])
            await player.play()
            # the stand-in's stuck track sends TrackStuckEvent; Lavalink.py skips to the next track
            await node.wait_until_async(
                lambda: (
                    (p := node.player(GUILD))
                    and p["track"]
                    and p["track"]["info"]["identifier"] == "1_zgKRBrT0Y"
                )
            )
            assert node.player(GUILD)["state"]["connected"] is True
            assert node.player(GUILD)["voice"]["channelId"] == VOICE
            assert any(isinstance(e, lavalink.TrackStuckEvent) for e in heard)

            node.close_voice(GUILD, 4014, "Disconnected.")
            closed = await node.wait_until_async(
                lambda: [e for e in heard if isinstance(e, lavalink.WebSocketClosedEvent)]
            )
            assert (closed[0].code, closed[0].reason, closed[0].by_remote) == (4014, "Disconnected.", True)
        finally:
            await client.close()

    asyncio.run(main())
