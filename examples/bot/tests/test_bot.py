"""The example bot against the sandbox: every situation it must survive, made on demand, and
none waited for (the bot's sleeps move the sandbox's clock instead). Written only against the
``xenon_elixir_sandbox`` fixture, which installing xenon-elixir registers with pytest."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))
from bot import ElixirClient, XenonPartner  # noqa: E402 (beside this directory)


def partner(xe: Any) -> tuple[XenonPartner, list[float]]:
    """The bot under test, with the sandbox's credentials; its waits are recorded and move the
    sandbox's clock, so a 10-second back-off takes milliseconds."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        xe.clock.advance(seconds)

    async def async_sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.to_thread(xe.clock.advance, seconds)

    bot = XenonPartner(xe.xenon_url, xe.credentials.bot_token, sleep=sleep, async_sleep=async_sleep)
    return bot, waits


def read_mapper(bot: XenonPartner, xe: Any) -> dict[str, Any] | None:
    return bot.mapper(xe.credentials.target_id, source=xe.credentials.source_id)


def test_backs_off_on_429_by_retry_after(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    xe.faults.arm(match="GET /api/mappers", status=429, retry_after_ms=1500, times=2)
    bot, waits = partner(xe)
    mapper = read_mapper(bot, xe)
    assert mapper is not None and mapper["target_id"] == xe.credentials.target_id
    assert waits == [1.5, 1.5]
    assert [r["status"] for r in xe.requests.list()] == [429, 429, 200]


def test_backs_off_on_the_real_rate_limit_too(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    bot, waits = partner(xe)
    for _ in range(31):  # the original limit: 30 per 10 s
        assert read_mapper(bot, xe) is not None
    assert len(waits) == 1 and 0 < waits[0] <= 10


def test_retries_a_503_after_its_retry_after(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    xe.faults.arm(match="mappers", status=503, retry_after_ms=2000)
    bot, waits = partner(xe)
    assert read_mapper(bot, xe) is not None
    assert waits == [2.0]


def test_retries_a_dropped_connection(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    xe.faults.arm(match="GET /api/mappers", drop=True)
    bot, waits = partner(xe)
    assert read_mapper(bot, xe) is not None
    assert [r["status"] for r in xe.requests.list()] == [None, 200]


def connected(xe: Any) -> bool:
    """Whether a loader stream is open: the sandbox recorded its accepted handshake (101)."""
    return any(r["path"].endswith("/loaders/ws") and r["status"] == 101 for r in xe.requests.list())


def _follow(bot: XenonPartner, xe: Any, loads: int) -> None:
    """Follow the loader stream while ``loads`` backup loads run, until their done events arrive."""

    async def main() -> None:
        following = asyncio.create_task(
            bot.follow_loaders(lambda events: sum(e["event"] == "done" for e in events) >= loads)
        )
        while not connected(xe):
            await asyncio.sleep(0.01)
        for _ in range(loads):
            await asyncio.to_thread(xe.load_backup, statuses=["loading roles"])
        await asyncio.wait_for(following, 30)

    asyncio.run(main())


def test_resumes_the_loader_stream_with_since_after_a_1013(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    xe.faults.arm(stream="loaders", close=1013, after=1)  # closed after the first event
    bot, _ = partner(xe)
    _follow(bot, xe, loads=1)
    assert [e["event"] for e in bot.events] == ["start", "done"]  # nothing lost, nothing twice
    handshakes = [r for r in xe.requests.list() if r["path"].endswith("/loaders/ws")]
    assert handshakes[-1]["query"] == f"since={bot.events[0]['seq']}"


def test_resumes_the_loader_stream_with_since_after_a_server_restart(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    bot, waits = partner(xe)

    async def main() -> None:
        following = asyncio.create_task(
            bot.follow_loaders(lambda events: sum(e["event"] == "done" for e in events) >= 2)
        )
        while not connected(xe):
            await asyncio.sleep(0.01)
        await asyncio.to_thread(xe.load_backup, statuses=())
        while len(bot.events) < 2:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(xe.reset)  # the server restarts: its streams close with 1012
        while not connected(xe):  # reconnected, after its pause
            await asyncio.sleep(0.01)
        await asyncio.to_thread(xe.load_backup, statuses=())
        await asyncio.wait_for(following, 30)

    asyncio.run(main())
    assert [e["event"] for e in bot.events] == ["start", "done", "start", "done"]
    assert xe.requests.list()[0]["query"] == f"since={bot.events[1]['seq']}"
    assert waits == [1.0]


def test_resynchronises_when_the_stream_says_reset(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    bot, _ = partner(xe)
    bot.seq = 10**12  # a seq from another database (or from before a restore): events were lost
    _follow(bot, xe, loads=1)
    assert bot.resyncs == 1 and [e["event"] for e in bot.events] == ["start", "done"]


def test_rides_out_a_dropped_stream_and_a_rate_limited_reconnect(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    xe.faults.arm(match="GET /api/loaders/ws", drop=True)
    xe.faults.arm(match="loaders_ws", status=429, retry_after_ms=800)
    bot, waits = partner(xe)
    _follow(bot, xe, loads=1)
    assert [e["event"] for e in bot.events] == ["start", "done"]
    assert waits == [1.0, 0.8]  # the drop: a pause; the 4029: its retry_after


def test_waits_for_the_next_track_without_waiting(xenon_elixir_sandbox: Any) -> None:
    xe = xenon_elixir_sandbox
    c = xe.credentials
    elixir = ElixirClient(xe.elixir_url, c.key, c.guild_id, c.user_id)
    elixir.join(c.voice_channels[0])
    queued = elixir.play("https://www.youtube.com/playlist?list=PLlatinoHits")
    playing = elixir.now_playing()
    assert playing is not None and playing["identifier"] == queued[0]["identifier"]

    async def main() -> dict[str, Any] | None:
        waiting = asyncio.create_task(elixir.next_track())
        while not any(r["path"].endswith("/player") and r["status"] == 101 for r in xe.requests.list()):
            await asyncio.sleep(0.01)  # the player stream is open
        await asyncio.to_thread(xe.end_track)  # a 3:23 track ends now
        return await asyncio.wait_for(waiting, 10)

    following = asyncio.run(main())
    assert following is not None and following["identifier"] == queued[1]["identifier"]
