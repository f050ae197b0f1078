"""WebSocket faults (issue: failure modes), against a real uvicorn process: 1,000 subscribers
connecting and leaving while events flow — closing cleanly, vanishing without a close frame,
or never reading — while steady subscribers keep receiving every start/done; afterwards the
server holds only the steady ones, its memory does not grow round over round, and it never
logged an unhandled error."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path

import httpx
from conftest import SOURCE
from server import Server
from websockets.asyncio.client import ClientConnection, connect

ADMIN_TOKEN = "faults-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHURN = 1000
STEADY = 5
ROUNDS = 8
# What each churned subscriber is made of, on the server: all back to the steady count after a round.
PER_SUBSCRIBER = (
    "xenon_elixir.Subscription",
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol",
    "websockets.server.ServerProtocol",
)


def test_a_thousand_subscribers_come_and_go_while_events_flow(db_path: str, tmp_path: Path) -> None:
    server = Server(
        db_path,
        tmp_path / "server.log",
        memory_report=tmp_path / "memory.json",
        XE_ADMIN_TOKEN=ADMIN_TOKEN,
        XE_RATE_LIMITS="off",
        XE_ACCESS_LOG="0",
    )

    def settled(figures: dict) -> bool:  # the departures' teardown has run its course
        return all(figures["types"].get(name, 0) == STEADY for name in PER_SUBSCRIBER)

    published: list[int] = []
    producing = threading.Event()

    def produce() -> None:
        """Loads one after another while the churn goes on; remembers every start/done seq."""
        with httpx.Client(base_url=server.url, timeout=10) as http:
            target = 100000000000000000
            while producing.is_set():
                target += 1
                start = {"target_id": str(target), "type": "backup", "source_id": SOURCE}
                published.append(http.post("/admin/loaders", json=start, headers=ADMIN).json()["seq"])
                published.append(http.post(f"/admin/loaders/{target}/done", headers=ADMIN).json()["seq"])
                time.sleep(0.005)

    async def scenario() -> tuple[list[list[int]], list[int], int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            token = (
                await http.post("/admin/bots", json={"id": "386861188891279362", "name": "B"}, headers=ADMIN)
            ).json()["token"]
            url = f"{server.ws_url}/api/loaders/ws"
            headers = {"Authorization": token}
            steady = [await connect(url, additional_headers=headers) for _ in range(STEADY)]
            received: list[list[int]] = [[] for _ in steady]

            async def read(index: int, ws: ClientConnection) -> None:
                async for frame in ws:
                    received[index].append(json.loads(frame)["seq"])

            readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(steady)]
            baseline = await asyncio.to_thread(server.memory, settled)
            producing.set()
            producer = threading.Thread(target=produce)
            producer.start()
            memory = []
            for _ in range(ROUNDS):
                crowd = await asyncio.gather(
                    *(
                        connect(
                            url, additional_headers=headers, max_queue=4, close_timeout=2, open_timeout=30
                        )
                        for _ in range(CHURN)
                    )
                )
                await asyncio.sleep(0.3)  # events flow to all of them
                for ws in crowd[CHURN // 4 :]:
                    ws.transport.abort()  # vanished without a close frame, most never having read
                # a clean close (all at once: a client that stopped reading waits out its close timeout)
                await asyncio.gather(*(ws.close() for ws in crowd[: CHURN // 4]))
                for _ in range(100):  # the server notices every departure
                    health = (await http.get("/health")).json()
                    if health["subscribers"] == STEADY:
                        break
                    await asyncio.sleep(0.05)
                assert health["subscribers"] == STEADY
                memory.append(await asyncio.to_thread(server.memory, settled))
            producing.clear()
            await asyncio.to_thread(producer.join, 10)
            await asyncio.sleep(0.3)  # the last events reach the steady readers
            for ws in steady:
                await ws.close()
            await asyncio.gather(*readers, return_exceptions=True)
            return received, [baseline, *memory], health["subscribers"]

    try:
        received, memory, left = asyncio.run(scenario())
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log
    assert left == STEADY
    for seqs in received:
        assert seqs == published  # every start/done, in order, to every steady subscriber
    assert len(published) > 20
    # Memory: the server's own figures after a full collection (tests/mem_probe.py), not RSS, which
    # swings by 10 MiB with when the collector last ran and what glibc and pymalloc keep of freed
    # memory. Every churned subscriber's objects are gone after each round ...
    baseline, rounds = memory[0], memory[1:]
    for n, figures in enumerate(rounds, 1):
        for name in PER_SUBSCRIBER:
            assert figures["types"].get(name, 0) == STEADY, (n, name, figures["types"].get(name))
        assert figures["types"].get("_asyncio.Task", 0) <= baseline["types"]["_asyncio.Task"] + 5, n
    # ... no type of object piles up (a bounded cache grows by < 1,300 tuples over these rounds;
    # one leaked object per subscriber would add 5,000) ...
    first, last = rounds[2]["types"], rounds[-1]["types"]
    grown = {
        name: last[name] - first.get(name, 0) for name in last if last[name] - first.get(name, 0) >= 2500
    }
    assert not grown, grown
    # ... and the traced bytes settle: rounds 6-8 against rounds 3-5 differ by 90-210 KiB in
    # healthy runs, where a leak of 1 KiB per subscriber adds 3 MiB.
    traced = [figures["traced"] for figures in rounds]
    growth = statistics.mean(traced[-3:]) - statistics.mean(traced[2:5])
    assert growth < 1024 * 1024, (growth, traced)
    print(
        f"\n{ROUNDS} rounds of {CHURN} subscribers; {len(published)} start/done each reached {STEADY} steady "
        f"readers; server traced KiB by round: {[t // 1024 for t in traced]} (rounds 6-8 vs 3-5: "
        f"{growth / 1024:+.0f} KiB); RSS KiB: {[figures['rss_kib'] for figures in rounds]}"
    )
