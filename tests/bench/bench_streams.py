"""Many player streams at once against ``xenon-elixir serve``: how many are accepted per client
address, and the server's memory (RSS) before, while they are open, and after they close, over
several bursts. Each address may hold ``XE_MAX_STREAMS_PER_ADDRESS`` (64) open; the rest are
closed at once with 4029.

    python tests/bench/bench_streams.py                     # 3,000 attempts from one address, 3 bursts
    python tests/bench/bench_streams.py --addresses 47      # spread over 127.0.0.2 .. 127.0.0.48

Exits 1 if an address got more streams than the bound, a refusal was not a 4029, or (one address)
RSS after the streams closed stays more than ``--max-growth`` MiB above its baseline. Over many
addresses (thousands of streams really open) RSS stays near its high-water mark after they close:
the objects are freed (tests/mem_probe.py shows the traced bytes back at the baseline) but
CPython's allocator keeps an arena while any block in it lives; the next burst reuses them, which
is why the figures of the later bursts do not grow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's module, whatever is installed
from common import GUILD, VOICE, free_port, rss_kib

import xenon_elixir as xe

ROOT = Path(__file__).resolve().parents[2]


async def attempt(url: str, local: str, gate: asyncio.Semaphore) -> ClientConnection | int:
    """An open stream (it has had the state), or the code the server closed it with."""
    async with gate:
        ws = await connect(url, local_addr=(local, 0), open_timeout=60)
    try:
        await asyncio.wait_for(ws.recv(), 60)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006
    return ws


async def burst(url: str, attempts: int, addresses: list[str]) -> tuple[list[ClientConnection], Counter[str]]:
    gate = asyncio.Semaphore(200)  # handshakes in flight at once
    results = await asyncio.gather(
        *(attempt(url, addresses[i % len(addresses)], gate) for i in range(attempts))
    )
    opened = [ws for ws in results if not isinstance(ws, int)]
    per_address = Counter(ws.local_address[0] for ws in opened)
    codes = Counter(str(code) for code in results if isinstance(code, int))
    return opened, per_address + Counter({f"closed {code}": n for code, n in codes.items()})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attempts", type=int, default=3000)
    parser.add_argument("--addresses", type=int, default=1, help="source addresses 127.0.0.2 and up")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--max-growth", type=float, default=16.0, help="MiB (checked for one address)")
    args = parser.parse_args()
    limit = xe.Config.max_streams_per_address
    addresses = [f"127.0.0.{2 + i}" for i in range(args.addresses)]
    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "bench.db")
        subprocess.run(
            [sys.executable, "-m", "xenon_elixir", "add-guild", GUILD, "--name", "Bench", "--voice", VOICE]
            + ["--db", db],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "xenon_elixir", "serve", "--db", db, "--port", str(port)]
            + ["--log-level", "warning"],
            env={**os.environ, "XE_ACCESS_LOG": "0"},
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            return asyncio.run(
                run(server.pid, f"ws://127.0.0.1:{port}/api/v1/{GUILD}/player", args, addresses, limit)
            )
        finally:
            server.terminate()
            server.wait(15)


async def run(pid: int, url: str, args: argparse.Namespace, addresses: list[str], limit: int) -> int:
    for _ in range(3):  # the first streams import and warm what every later one uses
        async with connect(url) as ws:
            await ws.recv()
    await asyncio.sleep(1)
    baseline = rss_kib(pid) / 1024
    print(
        f"{args.attempts:,} attempts per burst from {len(addresses)} address(es), at most {limit} open each"
    )
    print(f"RSS before: {baseline:.1f} MiB")
    failed = False
    after = baseline
    for number in range(1, args.bursts + 1):
        opened, outcome = await burst(url, args.attempts, addresses)
        await asyncio.sleep(1)
        open_rss = rss_kib(pid) / 1024
        await asyncio.gather(*(ws.close() for ws in opened))
        await asyncio.sleep(3)
        after = rss_kib(pid) / 1024
        held = {address: outcome[address] for address in addresses}
        refused = {key: n for key, n in outcome.items() if key.startswith("closed")}
        print(
            f"burst {number}: {len(opened):,} open ({max(held.values())} at most per address), refused "
            f"{refused or 'none'}; RSS open {open_rss:.1f} MiB, after close {after:.1f} MiB"
        )
        if max(held.values()) > limit or set(refused) - {"closed 4029"}:
            failed = True
        if len(opened) != min(args.attempts, limit * len(addresses)):
            failed = True
    if len(addresses) == 1 and after - baseline > args.max_growth:
        print(
            f"RSS after close is {after - baseline:.1f} MiB above its baseline (more than {args.max_growth})"
        )
        failed = True
    print("FAILED" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
