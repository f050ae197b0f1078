"""The player: its clock, its persistence across restarts, and queue cost."""

from __future__ import annotations

import asyncio
import queue
import re
from collections import deque
from typing import Any

import pytest
from conftest import ADMIN, GUILD, OTHER_GUILD, USER, VOICE, FakeClock, admin_key, bearer, player_of
from stored import holding_the_write_lock, rows

import xenon_elixir as xe

API = "/api/v1"


def track(identifier: str, length: int, *, is_stream: bool = False) -> xe.Track:
    return xe.Track(
        source="youtube",
        identifier=identifier,
        title=identifier,
        author="a",
        length=length,
        uri=f"https://www.youtube.com/watch?v={identifier}",
        is_stream=is_stream,
    )


def player_with(*tracks: xe.Track, anchor: float = 100.0) -> xe.Player:
    entries = deque(xe.QueueEntry(i, t, USER) for i, t in enumerate(tracks, 1))
    return xe.Player(GUILD, VOICE, anchor=anchor, queue=entries)


def test_settle_drops_ended_tracks_and_carries_the_overshoot() -> None:
    player = player_with(track("a", 1000), track("b", 2000), track("c", 5000))
    player.settle(100.0 + 3.5)
    assert [e.track.identifier for e in player.queue] == ["c"]
    assert player.position_at(103.5) == pytest.approx(500)


def test_a_track_is_over_at_the_instant_it_ends_and_a_read_never_changes_the_player() -> None:
    player = player_with(track("a", 1000), track("b", 2000))
    assert player.settled(100.999) is player  # nothing ended: itself
    settled = player.settled(101.0)  # "a" ends at 101.0 exactly: "b" plays, from 0
    assert settled.current is not None and settled.current.track.identifier == "b"
    assert settled.position_at(101.0) == 0 and settled.dropped == 1
    assert [e.track.identifier for e in player.queue] == ["a", "b"] and player.dropped == 0


def test_settle_stops_at_a_stream_and_when_paused() -> None:
    player = player_with(track("live", 0, is_stream=True), track("b", 1000))
    player.settle(10_000.0)
    assert player.current is not None and player.current.track.identifier == "live"
    paused = player_with(track("a", 1000))
    paused.paused, paused.position = True, 400.0
    paused.settle(10_000.0)
    assert paused.position_at(10_000.0) == 400.0


@pytest.mark.parametrize(
    ("ms", "face"),
    [
        (0, "00:00"),
        (999, "00:00"),
        (61_000, "01:01"),
        (3_599_999, "59:59"),
        (3_600_000, "01:00:00"),
        (36_061_000, "10:01:01"),
    ],
)
def test_clock_face(ms: int, face: str) -> None:
    assert xe.clock_face(ms) == face


def test_elixir_track_clamps_position_to_the_length() -> None:
    shown = xe.elixir_track(track("a", 61_500), USER, position=99_000)
    assert (shown.position, shown.formatted_duration, shown.duration) == (61_500, "01:01/01:01", 61)


def _play_and_restart(make_client: Any, clock: FakeClock, world_key: str, client: Any) -> Any:
    headers = bearer(world_key)
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=headers)
    client.post(f"{API}/{GUILD}/volume", json={"user": USER, "volume": 64}, headers=headers)
    client.post(
        f"{API}/{GUILD}/play",
        json={"user": USER, "query": "https://www.youtube.com/playlist?list=PLlatinoHits"},
        headers=headers,
    )
    clock.advance(42)
    before = client.get(f"{API}/{GUILD}/nowplaying").json()
    client.__exit__(None, None, None)  # the first app shuts down
    clock.advance(60)
    return before, make_client()


def test_a_restarted_app_plays_the_same_track_at_a_later_position(
    make_client: Any, client: Any, world: dict[str, str], clock: FakeClock
) -> None:
    before, restarted = _play_and_restart(make_client, clock, world["key"], client)
    after = restarted.get(f"{API}/{GUILD}/nowplaying").json()
    assert before["identifier"] == after["identifier"] == "_n1o4D6G_XE"
    assert (before["position"], after["position"]) == (42_000, 102_000)
    queue = restarted.get(f"{API}/{GUILD}/queue").json()
    assert [t["identifier"] for t in queue["queue"]] == ["1_zgKRBrT0Y", "-zgDXIi1uYw"]
    assert player_of(restarted, GUILD).volume == 64


def test_a_restart_reproduces_advances_that_were_never_written(
    make_client: Any, client: Any, world: dict[str, str], clock: FakeClock
) -> None:
    _, restarted = _play_and_restart(make_client, clock, world["key"], client)
    clock.advance(203 + 10 - 102)  # 10 s into the second track; no write happened since the play
    playing = restarted.get(f"{API}/{GUILD}/nowplaying").json()
    assert (playing["identifier"], playing["position"]) == ("1_zgKRBrT0Y", 10_000)


def test_pause_survives_a_restart(
    make_client: Any, client: Any, world: dict[str, str], clock: FakeClock
) -> None:
    headers = bearer(world["key"])
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=headers)
    client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "narcos"}, headers=headers)
    clock.advance(7)
    client.post(f"{API}/{GUILD}/pause", json={"user": USER}, headers=headers)
    client.__exit__(None, None, None)
    clock.advance(1000)
    restarted = make_client()
    assert restarted.get(f"{API}/{GUILD}/nowplaying").json()["position"] == 7000


def test_play_appends_rows_and_never_rewrites_the_queue(
    client: Any, world: dict[str, str], db_path: str
) -> None:
    headers = bearer(world["key"])
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=headers)
    for _ in range(5):
        client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "magia"}, headers=headers)
    first = rows(db_path, "SELECT entry_id FROM queue ORDER BY entry_id")
    client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "narcos"}, headers=headers)
    second = rows(db_path, "SELECT entry_id FROM queue ORDER BY entry_id")
    assert second[:5] == first and len(second) == 6  # old rows untouched, one appended


def test_a_failed_write_leaves_every_answer_as_the_file_has_it(
    make_client: Any, world: dict[str, str], db_path: str
) -> None:
    client = make_client(write_wait=0.2)
    headers = bearer(world["key"])
    client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=headers)
    with holding_the_write_lock(db_path):  # another process keeps the lock a change needs
        response = client.post(f"{API}/{GUILD}/volume", json={"user": USER, "volume": 5}, headers=headers)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"  # a fault, not a bug
    assert set(response.json()) == {"timestamp", "message"}
    assert "Traceback" not in response.text
    client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": "magia"}, headers=headers)
    assert client.get(f"{API}/{GUILD}/nowplaying").status_code == 200
    assert player_of(client, GUILD).volume == 100  # the refused change is nowhere


def test_changes_of_one_guild_committed_together_each_answer_their_own_state(db_path: str) -> None:
    """Plays that arrive together are committed in one transaction, each on the player as the
    one before left it; each caller gets the player as its own play left it, not as the last."""
    import asyncio

    from conftest import CATALOG, with_host

    async def body(host: xe.Host) -> tuple[list[int], int | None]:
        await host.put_guild(GUILD, "G", [VOICE])
        await host.import_catalog(CATALOG["tracks"])
        await host.join(GUILD, VOICE)
        track = await host.get_track("youtube", CATALOG["tracks"][0]["identifier"])
        assert track is not None
        answers = await asyncio.gather(*(host.enqueue(GUILD, [track], USER) for _ in range(10)))
        stored = await host.player(GUILD)
        return [answer.size for answer in answers], stored and stored.size

    assert with_host(db_path, body) == (list(range(1, 11)), 10)


def test_concurrent_changes_committed_together_reload_exactly(db_path: str) -> None:
    """Group commit: hundreds of concurrent changes over a few guilds, committed in batches;
    a fresh load of the file must give back exactly the players the last changes answered."""
    import asyncio
    import random

    from conftest import CATALOG, with_host

    guilds = [str(766045633697021973 + i) for i in range(4)]

    async def churn(host: xe.Host) -> dict[str, Any]:
        for guild in guilds:
            await host.put_guild(guild, "G", [VOICE])
        await host.import_catalog(CATALOG["tracks"])
        tracks = [await host.get_track("youtube", t["identifier"]) for t in CATALOG["tracks"][:3]]
        rng = random.Random(7)
        answered: dict[str, Any] = {}

        async def change(guild: str) -> None:
            action = rng.choice(["join", "play", "play", "skip", "pause", "resume", "volume", "stop"])
            try:
                if action == "join":
                    answered[guild] = await host.join(guild, VOICE)
                elif action == "play":
                    answered[guild] = await host.enqueue(
                        guild, [t for t in tracks if t][: rng.randint(1, 3)], USER
                    )
                elif action == "volume":
                    answered[guild] = await host.set_volume(guild, rng.randint(0, 100))
                elif action == "stop":
                    answered[guild] = await host.stop(guild)
                else:
                    answered[guild] = await getattr(host, action)(guild)
            except xe.ApiError:
                pass  # not connected, nothing playing: fine

        for _ in range(12):
            await asyncio.gather(*(change(rng.choice(guilds)) for _ in range(40)))
        # and a last round that leaves a queue longer than a front in every guild
        await asyncio.gather(*(host.join(guild, VOICE) for guild in guilds))
        plays = [host.enqueue(guild, [t for t in tracks if t], USER) for guild in guilds for _ in range(2)]
        for guild, player in zip(
            [g for g in guilds for _ in range(2)], await asyncio.gather(*plays), strict=True
        ):
            answered[guild] = player
        return answered

    def state(player: xe.Player | None) -> Any:
        if player is None:
            return None
        return (  # a change answers the front of the queue (the current track and the next) and its size
            player.channel_id,
            player.volume,
            player.paused,
            round(player.position, 3),
            round(player.anchor, 3),
            [e.entry_id for e in player.queue][:2],
            player.size,
        )

    answered = {g: state(p) for g, p in with_host(db_path, churn).items()}
    reloaded = with_host(db_path, lambda host: asyncio.gather(*(host.player(g) for g in answered)))
    assert {g: state(p) for g, p in zip(answered, reloaded, strict=True)} == answered
    assert all(s is not None and s[-1] > 2 for s in answered.values())  # queues longer than a front


def test_a_track_end_is_published_once_on_one_process_without_redis(
    client: Any, world: dict[str, str], clock: FakeClock
) -> None:
    """The end of a track is one change: one frame to the guild's followers, one event published
    (the ``xe_events_published_total`` counter sees a second publish of the same frame, which a
    follower's stream would skip as already seen), also when a second settle of the guild comes
    late, as from another process (test_scale shows that with two processes and Redis)."""
    key = bearer(world["key"])

    def published() -> float:
        text = client.get("/metrics").text
        found = re.search(r'^xe_events_published_total\{kind="player"\} (\S+)$', text, re.MULTILINE)
        return float(found[1]) if found else 0.0

    with client.websocket_connect(f"{API}/{GUILD}/player") as ws:
        assert ws.receive_json(timeout=5)["track"] is None  # the state on connect: nothing plays
        assert (
            client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=key).status_code
            == 200
        )
        for query in ("magia", "narcos"):  # 203 s, then 151 s
            assert (
                client.post(
                    f"{API}/{GUILD}/play", json={"user": USER, "query": query}, headers=key
                ).status_code
                == 200
            )
        changes = [ws.receive_json(timeout=5) for _ in range(3)]
        assert published() == 3  # join, play, play
        clock.advance(204)  # the first track ends: the track-end timer advances the queue
        ended = ws.receive_json(timeout=5)
        assert ended["track"]["identifier"] == "6g2BiiVQqY5v1S4HIrM54F" and ended["queued"] == 0
        with pytest.raises(queue.Empty):  # and nothing more about it
            ws.receive_json(timeout=1)
        assert published() == 4
        # Another process's timer, which saw the guild due before this advance committed, settles
        # it again: the queue has moved on already, so nothing is written or published again.
        advance = client.app.state.xe.music.track_ends._advance  # what the timer calls for a guild due
        client.blocking_portal.call(advance, GUILD)
        with pytest.raises(queue.Empty):
            ws.receive_json(timeout=1)
        assert published() == 4
    seqs = [frame["seq"] for frame in changes + [ended]]
    assert seqs == sorted(set(seqs))


def test_each_guild_numbers_its_own_changes_and_a_stop_keeps_its_numbers(
    client: Any, world: dict[str, str]
) -> None:
    """A guild's changes are numbered in the guild's own order, so guilds never wait for each
    other's numbers: another guild's changes leave its numbers be, and a stopped player's
    numbers go on where they were (a follower never sees one go back)."""
    other = "410488579140354050"
    put = client.put(
        f"/admin/guilds/{OTHER_GUILD}", json={"name": "O", "voice_channels": [other]}, headers=ADMIN
    )
    assert put.status_code == 200
    mine, theirs = bearer(world["key"]), bearer(admin_key(client, OTHER_GUILD, USER))

    def change(guild: str, action: str, headers: dict[str, str], **body: Any) -> None:
        answer = client.post(f"{API}/{guild}/{action}", json={"user": USER, **body}, headers=headers)
        assert answer.status_code == 200, answer.text

    with client.websocket_connect(f"{API}/{GUILD}/player") as ws:
        first = ws.receive_json(timeout=5)["seq"]
        change(GUILD, "join", mine, channel=VOICE)
        joined = ws.receive_json(timeout=5)["seq"]
        change(OTHER_GUILD, "join", theirs, channel=other)
        for query in ("magia", "narcos", "magia"):
            change(OTHER_GUILD, "play", theirs, query=query)
        change(OTHER_GUILD, "stop", theirs)
        change(GUILD, "volume", mine, volume=30)
        change(GUILD, "stop", mine)
        change(GUILD, "join", mine, channel=VOICE)
        seqs = [ws.receive_json(timeout=5)["seq"] for _ in range(3)]
    assert [joined, *seqs] == [first + 1, first + 2, first + 3, first + 4]
    with client.websocket_connect(f"{API}/{GUILD}/player") as ws:  # the state carries the newest number
        assert ws.receive_json(timeout=5)["seq"] == first + 4


def test_a_frame_shows_the_first_25_waiting_tracks_and_counts_them_all() -> None:
    player = player_with(*(track(f"t{i}", 100) for i in range(31)))  # one plays, 30 wait
    state = player.state(100.0)
    assert state.track is not None and state.track.identifier == "t0"
    assert [t.identifier for t in state.queue] == [f"t{i}" for i in range(1, 26)]
    assert state.queued == 30


def test_track_ends_look_again_a_second_after_the_database_failed_them() -> None:
    """A fault while looking for ended tracks delays the next look by a second, never ends the looking."""
    clock, advanced = FakeClock(100.0), []

    class Players:
        failures = 1

        async def due(self, now: float) -> list[str]:
            if self.failures:
                self.failures -= 1
                raise xe.Unavailable("the database is away")
            return [GUILD]

        async def next_end(self) -> float | None:
            return None

    async def advance(guild_id: str) -> None:
        advanced.append(guild_id)

    async def scenario() -> None:
        ends = xe.TrackEnds(Players(), advance, clock, clock)  # type: ignore[arg-type]

        async def turns() -> None:  # the timer's callback, then the task it starts
            for _ in range(5):
                await asyncio.sleep(0)

        await ends.run()  # fails: armed for a second later
        await turns()
        clock.advance(0.9)
        await turns()
        assert advanced == []
        clock.advance(0.1)
        await turns()
        assert advanced == [GUILD]
        await ends.close()

    asyncio.run(scenario())


def test_a_skip_to_a_shorter_track_has_its_end_published_when_it_ends(
    client: Any, world: dict[str, str], clock: FakeClock
) -> None:
    """A change that makes the current track end sooner than the timer was set for wakes it sooner."""
    key = bearer(world["key"])
    with client.websocket_connect(f"{API}/{GUILD}/player") as ws:
        ws.receive_json(timeout=5)
        assert (
            client.post(f"{API}/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=key).status_code
            == 200
        )
        for query in ("música warner", "magia", "narcos"):  # 269 s, 203 s, 151 s: the timer is set for 269
            play = client.post(f"{API}/{GUILD}/play", json={"user": USER, "query": query}, headers=key)
            assert play.status_code == 200
        assert client.post(f"{API}/{GUILD}/skip", json={"user": USER}, headers=key).status_code == 200
        frames = [ws.receive_json(timeout=5) for _ in range(5)]  # join, 3 plays, the skip
        assert frames[-1]["track"]["identifier"] == "_n1o4D6G_XE"
        clock.advance(204)  # magia has ended, 66 s before the first track would have
        ended = ws.receive_json(timeout=5)
        assert ended["track"]["identifier"] == "6g2BiiVQqY5v1S4HIrM54F" and ended["queued"] == 0


def _enqueue(queued: xe.Track) -> Any:
    def change(player: xe.Player | None) -> xe.Player | None:
        assert player is not None
        player.enqueue([queued], USER, 1000.0, 100)
        return player

    return change


def test_changes_of_many_guilds_at_once_commit_together_each_guild_in_its_order(db_path: str) -> None:
    """Changes of 12 guilds that arrive together go into one transaction (group commit across
    guilds), and each guild's changes are applied, numbered and queued in the order they came."""
    guilds = [str(int(GUILD) + 4096 * i) for i in range(12)]
    tracks = [track(f"t{i:03d}", 60_000) for i in range(3)]

    async def run() -> tuple[int, dict[str, list[int]], dict[str, list[tuple[int, str]]]]:
        async with xe.Host.open(xe.Config(db=db_path, clock=lambda: 1000.0)) as host:
            for i, guild in enumerate(guilds):
                await host.put_guild(guild, "Guild", [str(int(VOICE) + 4096 * i)])
                await host.join(guild, str(int(VOICE) + 4096 * i))
            stores = host._services.stores
            commits: list[float] = []
            stores.database.on_commit(commits.append)
            numbers: dict[str, list[int]] = {guild: [] for guild in guilds}

            def numbered(guild: str) -> Any:
                return lambda player, seq, followed: numbers[guild].append(seq)

            changes = [
                stores.players.change(guild, _enqueue(queued), 1000.0, numbered(guild))
                for queued in tracks
                for guild in guilds
            ]
            await asyncio.gather(*changes)
            queues: dict[str, list[tuple[int, str]]] = {}
            for guild in guilds:
                player = await stores.players.get(guild, whole=True)
                assert player is not None and player.size == 3
                queues[guild] = [(entry.entry_id, entry.track.identifier) for entry in player.queue]
            return len(commits), numbers, queues

    commits, numbers, queues = asyncio.run(run())
    assert commits == 1
    for guild in guilds:
        first = numbers[guild][0]
        assert numbers[guild] == [first, first + 1, first + 2]
        assert [identifier for _, identifier in queues[guild]] == ["t000", "t001", "t002"]
        ids = [entry_id for entry_id, _ in queues[guild]]
        assert ids == sorted(ids) and len(set(ids)) == 3


def test_a_play_and_a_skip_of_it_in_one_transaction_leave_no_entry_behind(db_path: str) -> None:
    """A track appended and skipped by changes grouped into one transaction is never written:
    the stored queue is what the answers said (empty), and the next play starts alone."""
    first, second = track("p000", 60_000), track("p001", 60_000)

    def skip(player: xe.Player | None) -> xe.Player | None:
        assert player is not None
        player.skip(1000.0)
        return player

    async def run() -> tuple[list[int], list[str], list[str]]:
        async with xe.Host.open(xe.Config(db=db_path, clock=lambda: 1000.0)) as host:
            await host.put_guild(GUILD, "Guild", [VOICE])
            await host.join(GUILD, VOICE)
            players = host._services.stores.players
            played, skipped = await asyncio.gather(
                players.change(str(GUILD), _enqueue(first), 1000.0),
                players.change(str(GUILD), skip, 1000.0),
            )
            assert played is not None and skipped is not None
            answered = [played.size, skipped.size]
            stored = await players.get(str(GUILD), whole=True)
            assert stored is not None
            after_skip = [entry.track.identifier for entry in stored.queue]
            await players.change(str(GUILD), _enqueue(second), 1000.0)
            stored = await players.get(str(GUILD), whole=True)
            assert stored is not None
            return answered, after_skip, [entry.track.identifier for entry in stored.queue]

    answered, after_skip, after_play = asyncio.run(run())
    assert answered == [1, 0]
    assert after_skip == []
    assert after_play == ["p001"]
