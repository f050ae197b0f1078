"""A real uvicorn process on a loopback port, set up with the CLI and the admin API as an
operator would, driven with a real HTTP client."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CATALOG_FILE, GUILD, OTHER_GUILD, USER, VOICE, VOICE_2
from server import Server

ADMIN_TOKEN = "server-test-admin-token"
API = "/api/v1"


def cli(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def server(db_path: str, tmp_path: Path) -> Iterator[Server]:
    cli("add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE, "--voice", VOICE_2, "--db", db_path)
    cli("import-tracks", str(CATALOG_FILE), "--db", db_path)
    running = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN)
    yield running
    running.stop()


def test_the_elixir_api_over_real_http(server: Server, db_path: str) -> None:
    key = cli("genkey", GUILD, USER, "--db", db_path)  # while the server runs, as an operator would
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        joined = http.post(f"{API}/{GUILD}/join", json={"user.id": USER, "channel.id": VOICE}, headers=auth)
        assert joined.status_code == 200
        assert joined.headers["content-type"].startswith("application/json")
        assert joined.json()["message"] == "Successfully joined the voice channel."

        played = http.post(
            f"{API}/{GUILD}/play",
            json={"user": USER, "query": "https://www.youtube.com/playlist?list=PLlatinoHits"},
            headers=auth,
        )
        assert [t["identifier"] for t in played.json()] == ["_n1o4D6G_XE", "1_zgKRBrT0Y", "-zgDXIi1uYw"]
        time.sleep(1.1)
        playing = http.get(f"{API}/{GUILD}/nowplaying").json()
        assert playing["identifier"] == "_n1o4D6G_XE"
        assert 1000 <= playing["position"] < 10_000

        assert http.post(f"{API}/{GUILD}/pause", json={"user": USER}, headers=auth).status_code == 200
        skipped = http.post(f"{API}/{GUILD}/skip", json={"user": USER}, headers=auth).json()
        assert skipped["identifier"] == "1_zgKRBrT0Y"
        volume = http.post(f"{API}/{GUILD}/volume", json={"user": USER, "volume": "45"}, headers=auth)
        assert volume.json()["message"] == "Successfully changed the volume to 45."
        queue = http.get(f"{API}/{GUILD}/queue").json()
        assert [t["identifier"] for t in queue["queue"]] == ["-zgDXIi1uYw"]

        refused = http.post(f"{API}/{GUILD}/stop", json={"user": USER}, headers={"Authorization": "Bearer " + "0" * 64})
        assert refused.status_code == 401 and refused.json()["message"] == "Request not authorized."
        assert http.post(f"{API}/{GUILD}/stop", json={"user": USER}, headers=auth).status_code == 200
        gone = http.get(f"{API}/{GUILD}/nowplaying")
        assert gone.status_code == 410 and set(gone.json()) == {"timestamp", "message"}


def test_the_admin_api_over_real_http_and_a_clean_shutdown(server: Server) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        assert http.post("/admin/keys", json={"guild": OTHER_GUILD, "user": USER}).status_code == 401
        guild = http.put(f"/admin/guilds/{OTHER_GUILD}", json={"name": "Second", "voice_channels": [VOICE]}, headers=admin)
        assert guild.json() == {"id": OTHER_GUILD, "name": "Second", "voice_channels": [VOICE]}
        key = http.post("/admin/keys", json={"guild": OTHER_GUILD, "user": USER}, headers=admin).json()["key"]
        joined = http.post(
            f"{API}/{OTHER_GUILD}/join", json={"user": USER, "channel": VOICE}, headers={"Authorization": key}
        )
        assert joined.status_code == 200
        huge = http.post(
            f"{API}/{OTHER_GUILD}/play",
            content=b"{" + b" " * (1024 * 1024 + 1) + b"}",
            headers={"Authorization": key, "Content-Type": "application/json"},
        )
        assert huge.status_code == 413 and set(huge.json()) == {"timestamp", "message"}
        missing = http.get("/nowhere")
        assert missing.status_code == 404 and set(missing.json()) == {"error"}
        bot = http.post("/admin/bots", json={"id": "386861188891279362", "name": "W"}, headers=admin).json()["token"]
        mapper = http.get(f"/api/mappers?target={OTHER_GUILD}&source={GUILD}", headers={"Authorization": bot})
        assert mapper.status_code == 404
        assert http.get("/health").json()["status"] == "ok"
    # uvicorn re-raises the SIGTERM it handled once shutdown is done; the log shows it was graceful
    assert server.stop() in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "Application shutdown complete" in log
    for secret in (key, bot, ADMIN_TOKEN):
        assert secret not in log
    access = [line for line in log.splitlines() if re.match(r"127\.0\.0\.1 - - \[", line)]
    assert len(access) == 10  # one line per request, and only one (uvicorn's own is off)
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
        rf'"GET /api/mappers\?target={OTHER_GUILD}&source={GUILD} HTTP/1\.1" 404 \d+ [\d.]+ms',
        access[-2],
    ), access[-2]
