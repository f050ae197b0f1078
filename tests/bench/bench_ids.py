"""10,000 ids through ``POST /admin/loaders/{target}/ids``, then the ``done`` that merges them
into the mapper: the server's time for each request, read from its own access log (which times a
request from its first byte in to its last byte out), and the client's round trip on loopback.
Each load goes to a new target guild, so every id is a new row in a growing table.

    python tests/bench/bench_ids.py [--ids 10000] [--loads 10] [--postgres]

With --postgres the store is a PostgreSQL server the script starts (fsync off, as the tests'),
instead of an SQLite file; the server time is still the app's, database included.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import SOURCE, Uvicorn, seed
from services import PostgresServer

ADMIN = {"Authorization": "Bearer bench-admin-token"}
TIMED = re.compile(r'"POST /admin/loaders/\d+/ids HTTP/[\d.]+" 200 \d+ ([\d.]+)ms')
MERGED = re.compile(r'"POST /admin/loaders/\d+/done HTTP/[\d.]+" 200 \d+ ([\d.]+)ms')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ids", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--postgres", action="store_true", help="the store on PostgreSQL")
    args = parser.parse_args()

    postgres = PostgresServer() if args.postgres else None
    with tempfile.TemporaryDirectory() as folder:
        db, log = str(Path(folder, "bench.db")), Path(folder, "server.log")
        if postgres is not None:
            db = postgres.create_database()
        seed(db, tracks=10, mapper_ids=10)
        env = {
            "XE_DB": db,
            "XE_ADMIN_TOKEN": ADMIN["Authorization"].split()[1],
            "XE_RATE_LIMITS": "off",
            "XE_ACCESS_LOG": "1",
        }
        server = Uvicorn("xenon_elixir:app", env=env, log=log)
        round_trips = []
        try:
            with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as http:
                for load in range(args.loads + 1):  # the first warms up
                    target = str(700000000000000000 + load)
                    start = {"target_id": target, "type": "backup", "source_id": SOURCE}
                    http.post("/admin/loaders", json=start).raise_for_status()
                    base = 800000000000000000 + load * args.ids
                    ids = {str(500000000000000000 + i): str(base + i) for i in range(args.ids)}
                    began = time.perf_counter()
                    answer = http.post(f"/admin/loaders/{target}/ids", json={"ids": ids})
                    round_trips.append((time.perf_counter() - began) * 1000)
                    assert answer.json() == {"count": args.ids}, answer.text
                    http.post(f"/admin/loaders/{target}/done").raise_for_status()
        finally:
            server.stop()
            if postgres is not None:
                postgres.close()
        server_times = [float(ms) for ms in TIMED.findall(log.read_text())]
        merge_times = [float(ms) for ms in MERGED.findall(log.read_text())]

    server_times, round_trips, merge_times = server_times[1:], round_trips[1:], merge_times[1:]
    assert len(server_times) == args.loads, "the access log did not time every request"
    print(
        f"machine: {os.cpu_count()} cores; {args.loads} loads of {args.ids:,} ids, each into a new target; "
        f"uvicorn httptools+uvloop, 1 worker; store: {'PostgreSQL' if postgres else 'SQLite'}"
    )
    print(f"server time:  median {statistics.median(server_times):6.1f} ms, max {max(server_times):6.1f} ms")
    print(f"round trip:   median {statistics.median(round_trips):6.1f} ms, max {max(round_trips):6.1f} ms")
    print(
        f"done (merge of the {args.ids:,} staged ids into the mapper), server time: "
        f"median {statistics.median(merge_times):6.1f} ms, max {max(merge_times):6.1f} ms"
    )


if __name__ == "__main__":
    main()
