"""The Python door (SPEC §3 and §4): the host API of a started app and of a database file."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from conftest import CATALOG, GUILD, USER, VOICE, bearer

import xenon_elixir as xe

API = "/api/v1"


def test_host_of_a_started_app_feeds_what_the_api_serves(client: Any) -> None:
    host = xe.host_of(client.app)

    async def feed() -> str:
        await host.put_guild(int(GUILD), "Lounge", [VOICE])
        await host.import_catalog(CATALOG["tracks"], CATALOG["playlists"])
        return await host.create_key(GUILD, USER)

    key = client.blocking_portal.call(feed)
    headers = bearer(key)
    assert (
        client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=headers).status_code
        == 200
    )
    played = client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "caraluna"}, headers=headers)
    assert played.json()["identifier"] == "-zgDXIi1uYw"

    async def player_state() -> tuple[str, str | None]:
        player = await host.player(GUILD)
        assert player is not None and player.current is not None
        return player.channel_id, player.current.track.identifier

    assert client.blocking_portal.call(player_state) == (VOICE, "-zgDXIi1uYw")


def test_host_of_an_app_that_has_not_started_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="lifespan"):
        xe.host_of(xe.create_app(xe.Config(db="unused.db")))


def test_host_refuses_bad_input_with_value_errors(db_path: str) -> None:
    async def run() -> None:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            with pytest.raises(ValueError, match="Invalid guild"):
                await host.create_key("x", USER)
            with pytest.raises(ValueError, match="Invalid voice channel"):
                await host.put_guild(GUILD, "G", ["1"])
            with pytest.raises(msgspec.ValidationError):
                await host.import_catalog([{"source": "youtube"}])
            key = await host.create_key(GUILD, USER)
            with pytest.raises(xe.ApiError) as conflict:
                await host.create_key(GUILD, USER)
            assert conflict.value.status_code == 409
            assert await host.create_key(GUILD, USER, rotate=True) != key
            assert await host.revoke_key(GUILD, USER) is True
            assert await host.revoke_key(GUILD, USER) is False

    asyncio.run(run())


def test_a_custom_resolver_replaces_the_catalog(make_client: Any) -> None:
    class Radio:
        def __init__(self, store: xe.CatalogStore) -> None:
            self.queries: list[str] = []

        async def resolve(self, query: str) -> xe.Track | list[xe.Track] | None:
            self.queries.append(query)
            if query == "nothing":
                return None
            return xe.Track(
                source="http",
                identifier="r1",
                title=f"Radio: {query}",
                author="DJ",
                length=0,
                uri="https://radio.example/stream",
                is_stream=True,
            )

    client = make_client(resolver=Radio)
    host = xe.host_of(client.app)

    async def feed() -> str:
        await host.put_guild(GUILD, "G", [VOICE])
        return await host.create_key(GUILD, USER)

    headers = bearer(client.blocking_portal.call(feed))
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=headers)
    played = client.post(
        f"{API}/{GUILD}/play", json={"user": USER, "query": "ftp-free jazz"}, headers=headers
    )
    assert played.json()["title"] == "Radio: ftp-free jazz"
    assert played.json()["formattedDuration"] == "00:00/LIVE"
    missing = client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "nothing"}, headers=headers)
    assert missing.status_code == 404


def test_host_listings_check_what_the_admin_api_checks(db_path: str) -> None:
    """One service checks a page request for every door: the host refuses with ValueError the
    kind, limit and cursor the admin API refuses with a 400, and a link it cannot play with
    the status and message the Elixir API answers."""

    async def run() -> None:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            for kind, limit, after, refused in [
                ("tokens", 10, None, "Invalid kind"),
                ("keys", 0, None, "Invalid limit"),
                ("keys", 1001, None, "Invalid limit"),
                ("keys", 10, "x" * 101, "Invalid after"),
            ]:
                with pytest.raises(ValueError, match=refused):
                    await host.list(kind, limit=limit, after=after)
            assert (await host.list("keys", limit=1000, after="x" * 100)).items == []
            with pytest.raises(xe.ApiError) as unsupported:
                await host.resolve("https://example.com/x")
            assert (unsupported.value.status_code, unsupported.value.message) == (400, xe.UNSUPPORTED_LINK)

    asyncio.run(run())


def test_merged_ids_keep_the_source_guild_mapped_to_the_target(db_path: str) -> None:
    """As a load's ids do: an id naming the source guild itself never remaps it (its @everyone role)."""
    source, target = "410488579140354049", "496683369665658880"

    async def run() -> dict[str, str]:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            # given as numbers (the host API takes both), so no id is the very string of another
            ids = {int(source): 754098965649162251, 410520361789161472: 754098999999999999}
            await host.merge_ids(int(source), int(target), ids)  # type: ignore[arg-type]
            mapper = await host.get_mapper(source, target)
            assert mapper is not None
            return mapper.ids

    assert asyncio.run(run()) == {source: target, "410520361789161472": "754098999999999999"}
