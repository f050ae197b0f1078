"""The event hub and the loader events (SPEC §1 WS, §2 Player): order, fan-out, slow and
overflowing subscribers, status coalescing, replay across disconnects, seq across restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import (
    ADMIN,
    CREATOR,
    GUILD,
    SOURCE,
    TARGET,
    USER,
    VOICE,
    FakeClock,
    grant_bot,
    run_load,
    with_host,
)
from litestar.testing import TestClient

import xenon_elixir as xe

TARGETS = [str(496683369665658880 + i) for i in range(8)]


async def drain(subscription: xe.Subscription, timeout: float = 0.05) -> list[dict[str, Any]]:
    """Everything queued or arriving within ``timeout``."""
    frames: list[dict[str, Any]] = []
    while True:
        try:
            batch = await asyncio.wait_for(subscription.next_batch(), timeout)
        except TimeoutError:
            return frames
        frames += [json.loads(frame) for _, frame in batch]


async def _first(stream: xe.Stream, count: int) -> AsyncIterator[str]:
    """The first ``count`` frames of a stream, then it is closed."""
    async for frame in stream:
        yield frame
        count -= 1
        if not count:
            break
    stream.close()


async def load(host: xe.Host, target: str, *, ok: bool = True, **loader: Any) -> None:
    await host.start_loader(target, loader.pop("type", "backup"), SOURCE, **loader)
    await host.loader_done(target, ok)


def test_every_subscriber_gets_every_start_and_done_in_order(db_path: str) -> None:
    async def body(host: xe.Host) -> list[list[tuple[str, int, str]]]:
        subscriptions = [host.subscribe() for _ in range(3)]
        await asyncio.gather(*(load(host, t) for t in TARGETS))
        return [[(f["event"], f["seq"], f["data"]["id"]) for f in await drain(s)] for s in subscriptions]

    seen = with_host(db_path, body)
    assert seen[0] == seen[1] == seen[2]
    assert [seq for _, seq, _ in seen[0]] == list(range(1, 17))
    for target in TARGETS:  # each loader's start comes before its done
        events = [event for event, _, t in seen[0] if t == target]
        assert events == ["start", "done"]


def test_a_subscriber_that_stops_reading_does_not_delay_another(db_path: str) -> None:
    async def body(host: xe.Host) -> tuple[int, int]:
        stalled = host.subscribe()  # never read
        reader = host.subscribe()
        received = 0

        async def read() -> None:
            nonlocal received
            async for _ in reader:
                received += 1
                if received == 2 * len(TARGETS) * 20:
                    return

        reading = asyncio.create_task(read())
        for _ in range(20):
            await asyncio.gather(*(load(host, t) for t in TARGETS))
        await asyncio.wait_for(reading, 5)
        return received, stalled.pending

    received, stalled_backlog = with_host(db_path, body)
    assert received == 320
    assert stalled_backlog == 320  # still held for it, not dropped, not blocking


def test_one_encoded_frame_is_shared_by_all_subscribers(db_path: str) -> None:
    async def body(host: xe.Host) -> bool:
        first, second = host.subscribe(), host.subscribe()
        await load(host, TARGETS[0])
        a, b = await first.next_batch(), await second.next_batch()
        return all(x[1] is y[1] for x, y in zip(a, b, strict=True)) and len(a) == 2

    assert with_host(db_path, body)


def test_an_overflowing_subscriber_is_closed_and_others_are_not(db_path: str) -> None:
    async def body(host: xe.Host) -> tuple[bool, int, int]:
        small = host.subscribe(xe.LOADER_TOPIC, backlog=5)
        other = host.subscribe()
        for target in TARGETS[:3]:  # 6 start/done events: one past the bound
            await load(host, target)
        with pytest.raises(xe.SubscriptionClosed) as closed:
            await small.next_batch()
        return closed.value.overflowed, len(await drain(other)), host.subscribers(xe.LOADER_TOPIC)

    assert with_host(db_path, body) == (True, 6, 1)


def test_a_subscriber_stuck_in_a_send_is_closed_with_1013(db_path: str) -> None:
    """The socket's send blocks (the client stopped reading): past the backlog, the blocked send
    is cancelled and a 1013 close goes out instead of a silent gap."""

    async def body(host: xe.Host) -> tuple[list[Any], bool]:
        sent: list[Any] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                return
            sent.append(message.get("code", "frame"))
            if message["type"] == "websocket.send":
                await asyncio.Event().wait()  # never completes

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()  # the client never sends anything
            return {}

        following = asyncio.create_task(xe.follow(host.stream(backlog=5), send, receive))
        await asyncio.sleep(0)
        for target in TARGETS[:4]:
            await load(host, target)
        await asyncio.wait_for(following, 1)
        return sent, host.subscribers(xe.LOADER_TOPIC) == 0

    sent, unsubscribed = with_host(db_path, body)
    assert sent == ["frame", 1013]  # stuck on the first frame, then closed
    assert unsubscribed


def test_keys_that_do_not_apply_are_left_out(db_path: str) -> None:
    async def body(host: xe.Host) -> list[dict[str, Any]]:
        subscription = host.subscribe()
        await host.start_loader(
            TARGETS[0], "template", SOURCE, template_id="hHGhNE6wyxgF", backup_id="3zydfwqp0h"
        )
        await host.loader_status(TARGETS[0], "loading roles")
        await host.loader_done(TARGETS[0], ok=False)
        return await drain(subscription)

    start, status, done = with_host(db_path, body)
    assert start == {
        "event": "start",
        "seq": 1,
        "data": {"id": TARGETS[0], "type": "template", "source_id": SOURCE, "template_id": "hHGhNE6wyxgF"},
    }
    assert status == {"event": "status", "seq": 2, "data": {"id": TARGETS[0], "status": "loading roles"}}
    assert done["data"] == {**start["data"], "ok": False}  # done is sent for a failed load too


def timed(clock: FakeClock) -> dict[str, Any]:
    """Host settings whose clocks and timers are the test's."""
    return {"clock": clock, "monotonic": clock, "timers": clock, "status_interval": 5.0}


def test_a_status_burst_yields_the_newest_at_the_windows_end(db_path: str) -> None:
    clock = FakeClock()

    async def body(host: xe.Host) -> list[list[str]]:
        subscription = host.subscribe()
        await host.start_loader(TARGETS[0], "backup", SOURCE)
        for status in ("starting", "deleting roles", "loading roles", "deleting channels"):
            await host.loader_status(TARGETS[0], status)
        at_once = await drain(subscription, 0.02)
        clock.advance(4.9)
        before_the_end = await drain(subscription, 0.02)
        clock.advance(0.1)
        at_the_end = await drain(subscription, 0.05)
        return [
            [f["data"].get("status", "start") for f in frames]
            for frames in (at_once, before_the_end, at_the_end)
        ]

    # the first status of a quiet loader goes out at once; the newest of the window at its end
    assert with_host(db_path, body, **timed(clock)) == [["start", "starting"], [], ["deleting channels"]]


def test_a_quiet_loaders_next_status_goes_out_at_once(db_path: str) -> None:
    clock = FakeClock()

    async def body(host: xe.Host) -> list[str]:
        subscription = host.subscribe()
        await host.start_loader(TARGETS[0], "backup", SOURCE)
        await host.loader_status(TARGETS[0], "one")
        clock.advance(5.0)
        await host.loader_status(TARGETS[0], "two")
        return [f["data"].get("status", "") for f in await drain(subscription, 0.02)]

    assert with_host(db_path, body, **timed(clock)) == ["", "one", "two"]


def test_no_status_is_sent_after_done(db_path: str) -> None:
    clock = FakeClock()

    async def body(host: xe.Host) -> list[str]:
        subscription = host.subscribe()
        await host.start_loader(TARGETS[0], "backup", SOURCE)
        await host.loader_status(TARGETS[0], "one")
        await host.loader_status(TARGETS[0], "pending when done arrives")
        await host.loader_done(TARGETS[0])
        clock.advance(10.0)  # the window the pending status waited for is long over
        return [f["event"] for f in await drain(subscription, 0.05)]

    assert with_host(db_path, body, **timed(clock)) == ["start", "status", "done"]


def test_loader_rules(db_path: str) -> None:
    async def body(host: xe.Host) -> None:
        await host.start_loader(TARGETS[0], "backup", SOURCE)
        with pytest.raises(xe.ApiError) as twice:
            await host.start_loader(TARGETS[0], "template", SOURCE)
        assert twice.value.status_code == 409
        for call in (
            host.loader_status(TARGETS[1], "x"),
            host.loader_ids(TARGETS[1], {}),
            host.loader_done(TARGETS[1]),
        ):
            with pytest.raises(xe.ApiError) as missing:
                await call
            assert missing.value.status_code == 404
        with pytest.raises(ValueError, match="Invalid type"):
            await host.start_loader(TARGETS[1], "snapshot", SOURCE)
        await host.loader_done(TARGETS[0])
        await host.start_loader(TARGETS[0], "template", SOURCE)  # free again after done

    with_host(db_path, body)


def test_a_running_loader_survives_a_restart(db_path: str) -> None:
    with_host(db_path, lambda host: host.start_loader(TARGETS[0], "backup", SOURCE, user_id=CREATOR))

    async def finish(host: xe.Host) -> dict[str, Any]:
        await host.loader_ids(TARGETS[0], {"410520361789161472": "754098965649162251"})
        event = await host.loader_done(TARGETS[0])
        mapper = await host.get_mapper(SOURCE, TARGETS[0])
        assert mapper is not None and mapper.loaders == [CREATOR]
        return {"seq": event.seq, "user": event.data.user_id}

    assert with_host(db_path, finish) == {"seq": 2, "user": CREATOR}


def test_seq_keeps_increasing_across_restarts_statuses_included(db_path: str) -> None:
    async def first(host: xe.Host) -> None:
        await host.start_loader(TARGETS[0], "backup", SOURCE)
        await host.loader_status(TARGETS[0], "a")  # seq 2: not replayed, still never reused

    async def second(host: xe.Host) -> int:
        return (await host.loader_done(TARGETS[0])).seq

    with_host(db_path, first)
    assert with_host(db_path, second) == 3


def test_the_replay_seam_has_no_gap_and_no_duplicate(db_path: str) -> None:
    """Subscribe, then read the log, while loads keep publishing, as the WebSocket route does.
    Events that land between the two are both in the log and queued live: each is sent once."""

    async def body(host: xe.Host) -> tuple[list[int], list[int]]:
        for i in range(5):
            await load(host, TARGETS[i % 8])  # seqs 1..10, before the client connects
        stream = host.stream(since=6)  # subscribed now; the log is read when it is first followed
        for i in range(5, 10):
            await load(host, TARGETS[i % 8])  # seqs 11..20: in the log and in the live queue
        producing = asyncio.gather(*(load(host, str(10**17 + i)) for i in range(10, 40)))
        sent: list[int] = []
        async for frame in stream:
            sent.append(json.loads(frame)["seq"])
            if sent[-1] == 80:
                break
        await producing
        stream.close()
        logged = []
        async for frame in host.stream(since=6):  # what the log itself holds after 6
            logged.append(json.loads(frame)["seq"])
            if logged[-1] == 80:
                break
        return sent, logged

    sent, logged = with_host(db_path, body)
    assert sent == logged == list(range(7, 81))


def test_replay_after_pruning_starts_with_reset(make_client: Any, clock: FakeClock) -> None:
    client = make_client(event_log_size=3)
    token = grant_bot(client)
    for target in TARGETS[:4]:
        run_load(client, {}, target=target)  # seqs 1..8; the log keeps 6, 7, 8
    with client.websocket_connect("/api/loaders/ws?since=2", headers={"Authorization": token}) as ws:
        frames = [json.loads(ws.receive_text()) for _ in range(4)]
    assert frames[0] == {"event": "reset", "seq": 5, "data": {}}
    assert [f["seq"] for f in frames[1:]] == [6, 7, 8]
    clock.advance(1)
    with client.websocket_connect("/api/loaders/ws?since=6", headers={"Authorization": token}) as ws:
        assert json.loads(ws.receive_text())["seq"] == 7  # nothing pruned after 6: no reset


def test_old_events_leave_the_log(db_path: str) -> None:
    async def body(host: xe.Host) -> list[dict[str, Any]]:
        await load(host, TARGETS[0])
        await load(host, TARGETS[1])
        stream = host.stream(since=0)
        frames = [json.loads(frame) async for frame in _first(stream, 2)]
        return frames

    # pruning runs as events are appended: all but the one just logged are past a 0 s window
    frames = with_host(db_path, body, event_log_seconds=0)
    assert [(f["event"], f["seq"]) for f in frames] == [("reset", 3), ("done", 4)]


def test_replay_across_a_disconnect_returns_exactly_the_missed_events(
    client: TestClient, clock: FakeClock
) -> None:
    token = grant_bot(client)
    auth = {"Authorization": token}
    with client.websocket_connect("/api/loaders/ws", headers=auth) as ws:
        run_load(client, {}, target=TARGETS[0])
        seen = [json.loads(ws.receive_text()) for _ in range(2)]
    last = seen[-1]["seq"]
    # missed while away: two loads with statuses between
    client.post(
        "/admin/loaders", json={"target_id": TARGETS[1], "type": "backup", "source_id": SOURCE}, headers=ADMIN
    )
    client.post(f"/admin/loaders/{TARGETS[1]}/status", json={"status": "loading roles"}, headers=ADMIN)
    client.post(f"/admin/loaders/{TARGETS[1]}/done", json={"ok": False}, headers=ADMIN)
    run_load(client, {}, target=TARGETS[2])
    clock.advance(1)
    with client.websocket_connect(f"/api/loaders/ws?since={last}", headers=auth) as ws:
        missed = [json.loads(ws.receive_text()) for _ in range(4)]
        run_load(client, {}, target=TARGETS[3])
        live = [json.loads(ws.receive_text()) for _ in range(2)]
    assert [(f["event"], f["data"]["id"]) for f in missed] == [
        ("start", TARGETS[1]),
        ("done", TARGETS[1]),
        ("start", TARGETS[2]),
        ("done", TARGETS[2]),
    ]
    assert missed[1]["data"]["ok"] is False
    seqs = [f["seq"] for f in seen + missed + live]
    assert seqs == sorted(set(seqs))  # strictly increasing: no duplicate at the seam
    assert [f["data"]["id"] for f in live] == [TARGETS[3]] * 2


def test_player_changes_are_published_per_guild(db_path: str) -> None:
    catalog_track = {
        "source": "youtube",
        "identifier": "shortTrack1",
        "title": "Short",
        "author": "A",
        "length": 300,
        "uri": "https://www.youtube.com/watch?v=shortTrack1",
    }

    clock = FakeClock()

    async def body(host: xe.Host) -> list[dict[str, Any]]:
        await host.put_guild(GUILD, "G", [VOICE])
        await host.import_catalog(
            [catalog_track, {**catalog_track, "identifier": "shortTrack2", "title": "Next"}]
        )
        subscription = host.subscribe(xe.player_topic(GUILD))
        other = host.subscribe(xe.player_topic(TARGET))
        await host.join(GUILD, VOICE)
        tracks = [await host.get_track("youtube", i) for i in ("shortTrack1", "shortTrack2")]
        await host.enqueue(GUILD, [t for t in tracks if t], USER)
        await host.set_volume(GUILD, 30)
        frames = await drain(subscription, 0.05)
        clock.advance(0.3)  # the first track ends
        frames += await drain(subscription, 0.05)
        clock.advance(0.3)  # and the second
        frames += await drain(subscription, 0.05)
        await host.stop(GUILD)
        frames += await drain(subscription, 0.05)
        assert await drain(other, 0.01) == []
        return frames

    frames = with_host(db_path, body, clock=clock, monotonic=clock, timers=clock)
    assert [(f["channel"], f["track"] and f["track"]["title"], f["queued"]) for f in frames] == [
        (VOICE, None, 0),  # joined
        (VOICE, "Short", 1),  # played two
        (VOICE, "Short", 1),  # volume
        (VOICE, "Next", 0),  # the first track ended
        (VOICE, None, 0),  # the second ended
        (None, None, 0),  # stopped
    ]
    assert [t["title"] for t in frames[1]["queue"]] == ["Next"]  # the waiting tracks, shown
    assert frames[2]["volume"] == 30


def test_a_status_sent_while_done_is_in_flight_never_reaches_the_next_loader(db_path: str) -> None:
    """A status belongs to the loader it was sent to, even when it waits out a window."""
    clock = FakeClock()

    async def body(host: xe.Host) -> list[tuple[str, str | None]]:
        subscription = host.subscribe()
        await host.start_loader(TARGETS[0], "backup", SOURCE)
        answers = await asyncio.gather(
            host.loader_done(TARGETS[0]),
            host.loader_status(TARGETS[0], "late"),  # sent at once, but done commits first
            host.loader_status(TARGETS[0], "later"),  # coalesced, due after the next start
            return_exceptions=True,
        )
        for answer in answers:  # a status that finds the loader already done is told so (404)
            if isinstance(answer, BaseException):
                assert isinstance(answer, xe.ApiError) and answer.status_code == 404, answer
        await host.start_loader(TARGETS[0], "backup", SOURCE)
        clock.advance(5.0)  # the window of "later" ends
        return [(f["event"], f["data"].get("status")) for f in await drain(subscription, 0.1)]

    events = with_host(db_path, body, **timed(clock))
    # On SQLite the writer commits in the order asked (done first: no status at all); on
    # PostgreSQL the three run side by side, and a status may commit before done, and so go out
    # before it, or find the loader done already. Either way, none after done, and none held
    # into the next load.
    assert events in (
        [("start", None), ("done", None), ("start", None)],
        [("start", None), ("status", "late"), ("done", None), ("start", None)],
        [("start", None), ("status", "later"), ("done", None), ("start", None)],
    ), events


def test_a_since_beyond_the_newest_seq_gets_reset_then_live_events(make_client: Any) -> None:
    """A number from another database or from before a restore: never silence."""
    client = make_client()
    token = grant_bot(client)
    run_load(client, {}, target=TARGETS[0])  # seqs 1 and 2
    with client.websocket_connect("/api/loaders/ws?since=500", headers={"Authorization": token}) as ws:
        assert json.loads(ws.receive_text()) == {"event": "reset", "seq": 2, "data": {}}
        run_load(client, {}, target=TARGETS[1])
        assert [json.loads(ws.receive_text())["seq"] for _ in range(2)] == [3, 4]


def test_a_since_one_past_the_newest_seq_gets_reset_and_loses_no_live_event(
    make_client: Any, clock: FakeClock
) -> None:
    """The edge of the rule above: ``since`` = newest + 1 was never given out, so it gets ``reset``
    to the newest, and the next event (numbered newest + 1) still arrives; ``since`` = newest is
    a follower that saw everything: no reset."""
    client = make_client()  # (a lost event would leave receive_text waiting: hence its timeout)
    token = grant_bot(client)
    run_load(client, {}, target=TARGETS[0])  # seqs 1 and 2
    with client.websocket_connect("/api/loaders/ws?since=3", headers={"Authorization": token}) as ws:
        assert json.loads(ws.receive_text(timeout=5)) == {"event": "reset", "seq": 2, "data": {}}
        run_load(client, {}, target=TARGETS[1])
        assert [json.loads(ws.receive_text(timeout=5))["seq"] for _ in range(2)] == [3, 4]
    clock.advance(1)  # one stream a second
    with client.websocket_connect("/api/loaders/ws?since=4", headers={"Authorization": token}) as ws:
        run_load(client, {}, target=TARGETS[2])
        assert [json.loads(ws.receive_text(timeout=5))["seq"] for _ in range(2)] == [5, 6]


def test_in_order_delivers_each_event_once_in_seq_order_filling_gaps_from_the_log() -> None:
    """Events of several processes arrive in any order (or not at all): subscribers get the log's
    order, each event once; missing ones are read from the log, and numbers the log no longer
    holds (pruned) are passed over."""
    log_ = {seq: f"logged {seq}" for seq in (11, 12, 14, 15, 17)}  # 13 and 16 are gone from it

    async def replay(after: int, limit: int) -> tuple[int, int, list[tuple[int, str]]]:
        found = [(seq, frame) for seq, frame in sorted(log_.items()) if seq > after][:limit]
        return 0, 17, found

    async def run() -> list[tuple[int, str]]:
        delivered: list[tuple[int, str]] = []
        ordered = xe.InOrder(lambda seq, frame, _: delivered.append((seq, frame)), replay, last=10)
        ordered.offer(12, "live 12", True)  # 11 has not arrived: 12 waits
        ordered.offer(12, "live 12", True)
        ordered.offer(11, "live 11", True)  # now both go, in order
        ordered.offer(17, "live 17", True)  # 13-16 never arrive: read from the log
        await asyncio.sleep(0.2)
        ordered.offer(15, "late 15", True)  # already delivered from the log: dropped
        ordered.offer(18, "live 18", True)
        return delivered

    assert asyncio.run(run()) == [
        (11, "live 11"),
        (12, "live 12"),
        (14, "logged 14"),
        (15, "logged 15"),
        (17, "live 17"),
        (18, "live 18"),
    ]
