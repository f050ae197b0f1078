"""The loader stream with 1,000 subscribers: publish -> last receipt of one ``done``, and the
memory the idle subscribers hold, as ratios against a raw ASGI app (no framework) that keeps one
queue per socket and, on an HTTP POST, puts one pre-encoded frame into each. Both run under the
same uvicorn settings (httptools + uvloop, one worker), at the same time, and are measured with
the same client code (``websockets``) on loopback; events alternate between the two.

    python tests/bench/bench_ws.py [--subscribers 1000] [--events 20] [--rounds 3]

Each round times ``--events`` events on each server (after three to warm up); the p99 of a round
is its slowest event, so the ratio shown is the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).parent))
from common import SOURCE, TARGET, Uvicorn, seed

ADMIN_TOKEN = "bench-admin-token"

RAW_APP = """
import asyncio

# A done event of the app's size, encoded once.
FRAME = '{"event":"done","seq":12,"data":{"id":"496683369665658880","type":"backup",' \\
    '"source_id":"410488579140354049","target_id":"496683369665658880","backup_id":null,' \\
    '"template_id":null,"user_id":"647737109494497281","ok":true}}'
queues = set()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        queue = asyncio.Queue()
        queues.add(queue)

        async def pump():
            while True:
                await send({"type": "websocket.send", "text": await queue.get()})

        sender = asyncio.create_task(pump())
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            queues.discard(queue)
            sender.cancel()
    else:
        while (await receive()).get("more_body"):
            pass
        if scope["method"] == "POST":
            for queue in queues:
                queue.put_nowait(FRAME)
        body = b'{"subscribers": %d}' % len(queues)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
"""


class Receipts:
    """Counts frames across every subscriber of one server, and when the last one came."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.last = 0.0
        self.all_in = asyncio.Event()

    def arm(self) -> None:
        self.count = 0
        self.all_in.clear()

    def hit(self) -> None:
        self.count += 1
        self.last = time.perf_counter()
        if self.count == self.expected:
            self.all_in.set()


async def subscribe(
    url: str, count: int, headers: dict[str, str], receipts: Receipts
) -> list[ClientConnection]:
    sockets: list[ClientConnection] = []
    for start in range(0, count, 100):  # in waves: a burst of 1,000 handshakes overflows the backlog
        sockets += await asyncio.gather(
            *(
                connect(url, additional_headers=headers, max_queue=None)
                for _ in range(start, min(count, start + 100))
            )
        )

    async def read(socket: ClientConnection) -> None:
        async for _ in socket:
            receipts.hit()

    for socket in sockets:
        asyncio.create_task(read(socket))
    return sockets


async def timed(receipts: Receipts, publish: Any) -> float:
    """Milliseconds from sending the publishing request to the last subscriber's receipt."""
    receipts.arm()
    began = time.perf_counter()
    await publish()
    await asyncio.wait_for(receipts.all_in.wait(), 30)
    return (receipts.last - began) * 1000


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile (of 20 values: the largest)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def measure(
    raw: Uvicorn, app: Uvicorn, token: str, subscribers: int, events: int, rounds: int
) -> dict[str, Any]:
    figures: dict[str, Any] = {"raw idle": raw.rss_kib(), "app idle": app.rss_kib()}
    raw_receipts, app_receipts = Receipts(subscribers), Receipts(subscribers)
    ws = lambda server: server.url.replace("http", "ws", 1)
    raw_sockets = await subscribe(ws(raw) + "/", subscribers, {}, raw_receipts)
    app_sockets = await subscribe(
        ws(app) + "/api/loaders/ws", subscribers, {"Authorization": token}, app_receipts
    )
    await asyncio.sleep(2)  # settled: every handshake done, nothing in flight
    figures["raw subscribed"], figures["app subscribed"] = raw.rss_kib(), app.rss_kib()

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    start = {"target_id": TARGET, "type": "backup", "source_id": SOURCE, "user_id": "647737109494497281"}
    raw_times: list[list[float]] = [[] for _ in range(rounds)]
    app_times: list[list[float]] = [[] for _ in range(rounds)]
    async with httpx.AsyncClient(timeout=30) as http:

        async def raw_publish() -> None:
            (await http.post(raw.url + "/publish")).raise_for_status()

        async def app_done() -> None:
            (await http.post(f"{app.url}/admin/loaders/{TARGET}/done", headers=admin)).raise_for_status()

        for event in range(events * rounds + 3):  # the first three warm up
            raw_time = await timed(raw_receipts, raw_publish)
            app_receipts.arm()  # the start event is not timed
            (await http.post(app.url + "/admin/loaders", json=start, headers=admin)).raise_for_status()
            await asyncio.wait_for(app_receipts.all_in.wait(), 30)
            app_time = await timed(app_receipts, app_done)
            if event >= 3:
                raw_times[(event - 3) // events].append(raw_time)
                app_times[(event - 3) // events].append(app_time)
    for socket in raw_sockets + app_sockets:
        await socket.close()
    figures["raw times"], figures["app times"] = raw_times, app_times
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "raw_app.py").write_text(RAW_APP)
        db = str(Path(folder, "bench.db"))
        token = seed(db, tracks=10, mapper_ids=10)["token"]
        env = {"XE_DB": db, "XE_ADMIN_TOKEN": ADMIN_TOKEN, "XE_RATE_LIMITS": "off", "XE_ACCESS_LOG": "0"}
        raw = Uvicorn("raw_app:app", app_dir=folder)
        app = Uvicorn("xenon_elixir:app", env=env)
        try:
            figures = asyncio.run(measure(raw, app, token, args.subscribers, args.events, args.rounds))
        finally:
            raw.stop()
            app.stop()

    raw_memory = figures["raw subscribed"] - figures["raw idle"]
    app_memory = figures["app subscribed"] - figures["app idle"]
    raw_times, app_times = figures["raw times"], figures["app times"]
    everything = lambda rounds: [t for times in rounds for t in times]
    print(
        f"machine: {os.cpu_count()} cores; {args.subscribers} subscribers per server (websockets client), "
        f"{args.rounds} rounds of {args.events} events each, alternating; uvicorn httptools+uvloop, 1 worker"
    )
    for name, times, memory in (
        ("raw ASGI, one queue per socket", raw_times, raw_memory),
        ("xenon_elixir, one done event", app_times, app_memory),
    ):
        print(
            f"{name:32} publish -> last receipt: median {statistics.median(everything(times)):5.1f} ms, "
            f"p99 by round {', '.join(f'{p99(t):5.1f}' for t in times)} ms; "
            f"{args.subscribers} idle subscribers hold {memory / 1024:5.1f} MiB"
        )
    ratios = [p99(a) / p99(r) for a, r in zip(app_times, raw_times, strict=True)]
    print(
        f"ratio: p99 {statistics.median(ratios):4.2f}x (rounds {', '.join(f'{r:.2f}x' for r in ratios)}), "
        f"median {statistics.median(everything(app_times)) / statistics.median(everything(raw_times)):4.2f}x, "
        f"memory {app_memory / raw_memory:4.2f}x"
    )


if __name__ == "__main__":
    main()
