"""Crash safety (issue: failure modes): kill -9 a real server in the middle of a large id
ingest and of a stream of player changes, restart it on the same file, and find the database
intact with every acknowledged write present and none half-applied."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from conftest import CATALOG, GUILD, SOURCE, TARGET, USER, VOICE
from server import Server
from stored import rows

import xenon_elixir as xe

ADMIN_TOKEN = "crash-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BATCH = 2000


def start(db: str, log: Path) -> Server:
    return Server(db, log, XE_ADMIN_TOKEN=ADMIN_TOKEN, XE_RATE_LIMITS="off", XE_ACCESS_LOG="0")


def kill(server: Server) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    server.stop()


def assert_intact(db: str) -> None:
    """SQLite's integrity check of the file. A PostgreSQL server is not killed with the app: there
    is no file of the app's to check, only the rows (which the tests read)."""
    if not xe.is_postgres(db):
        assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def batch_ids(batch: int) -> dict[str, str]:
    base = 500000000000000000 + batch * BATCH
    return {str(base + i): str(700000000000000000 + batch * BATCH + i) for i in range(BATCH)}


def test_kill_during_a_large_id_ingest(db_path: str, tmp_path: Path) -> None:
    server = start(db_path, tmp_path / "first.log")
    acknowledged: list[int] = []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        start_loader = {"target_id": TARGET, "type": "backup", "source_id": SOURCE, "user_id": USER}
        assert http.post("/admin/loaders", json=start_loader, headers=ADMIN).status_code == 201
    stop = threading.Event()
    counter = iter(range(10_000))
    lock = threading.Lock()

    def ingest() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                with lock:
                    batch = next(counter)
                try:
                    response = http.post(
                        f"/admin/loaders/{TARGET}/ids", json={"ids": batch_ids(batch)}, headers=ADMIN
                    )
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(batch)

    workers = [threading.Thread(target=ingest) for _ in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    kill(server)  # mid-flight: four writers were sending
    stop.set()
    for worker in workers:
        worker.join(15)
    assert len(acknowledged) >= 10
    assert_intact(db_path)

    # staged with the running loader until its done (SPEC §1: staged ids survive a restart)
    staged = rows(db_path, "SELECT old_id FROM loader_ids WHERE target_id = ?", TARGET)
    present = Counter(int(old) // BATCH - 500000000000000000 // BATCH for (old,) in staged)
    for batch in acknowledged:
        assert present[batch] == BATCH, batch  # every acknowledged batch, whole
    assert set(present.values()) == {BATCH}  # and no batch half-applied

    restarted = start(db_path, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=restarted.url, timeout=10) as http:
            done = http.post(f"/admin/loaders/{TARGET}/done", headers=ADMIN)  # the loader survived
            assert done.status_code == 200
            token = http.post(
                "/admin/bots", json={"id": "386861188891279362", "name": "B"}, headers=ADMIN
            ).json()["token"]
            mapper = http.get(
                f"/api/mappers?target={TARGET}&source={SOURCE}", headers={"Authorization": token}
            ).json()
        assert len(mapper["ids"]) == 1 + BATCH * len(present)
        assert mapper["loaders"] == [USER]
    finally:
        restarted.stop()
    print(f"\nkill -9 during ingest: {len(acknowledged)} acknowledged batches of {BATCH} ids, all present")


def test_kill_during_a_stream_of_player_changes(db_path: str, tmp_path: Path) -> None:
    server = start(db_path, tmp_path / "first.log")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        http.put(f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": [VOICE]}, headers=ADMIN)
        http.post("/admin/tracks", json=CATALOG["tracks"], headers=ADMIN)
        key = http.post("/admin/keys", json={"guild": GUILD, "user": USER}, headers=ADMIN).json()["key"]
    auth = {"Authorization": f"Bearer {key}"}
    acknowledged: dict[str, Any] = {"volume": None, "plays": 0}
    attempted: dict[str, Any] = {"volume": None, "plays": 0}

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            try:
                http.post(f"/api/v1/{GUILD}/join", json={"user": USER, "channel": VOICE}, headers=auth)
                for i in range(100_000):
                    if i % 2:
                        attempted["volume"] = i % 101
                        response = http.post(
                            f"/api/v1/{GUILD}/volume", json={"user": USER, "volume": i % 101}, headers=auth
                        )
                        if response.status_code == 200:
                            acknowledged["volume"] = i % 101
                    else:
                        attempted["plays"] += 1
                        response = http.post(
                            f"/api/v1/{GUILD}/play", json={"user": USER, "query": "magia"}, headers=auth
                        )
                        if response.status_code == 200:
                            acknowledged["plays"] += 1
            except httpx.HTTPError:
                return

    writer = threading.Thread(target=stream)
    writer.start()
    deadline = time.monotonic() + 20
    while acknowledged["plays"] < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    kill(server)
    writer.join(15)
    assert acknowledged["plays"] >= 50
    assert_intact(db_path)

    restarted = start(db_path, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=restarted.url, timeout=10) as http:
            queue = http.get(f"/api/v1/{GUILD}/queue").json()
    finally:
        restarted.stop()
    entries = 1 + len(queue["queue"])
    # every acknowledged play is there; at most the one in flight when killed may be too
    assert acknowledged["plays"] <= entries <= attempted["plays"]
    ((volume,),) = rows(db_path, "SELECT volume FROM players WHERE guild_id = ?", GUILD)
    assert volume in (acknowledged["volume"], attempted["volume"])
    print(
        f"\nkill -9 during player changes: {acknowledged['plays']} acknowledged plays, {entries} queued after restart"
    )
