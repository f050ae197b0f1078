"""A real uvicorn process on a loopback port, set up with the CLI and the admin API as an
operator would, driven with a real HTTP client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CATALOG_FILE, GUILD, OTHER_GUILD, USER, VOICE, VOICE_2
from server import Server, cli, free_port, spawn
from stored import rows
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import xenon_elixir as xe

ADMIN_TOKEN = "server-test-admin-token"
API = "/api/v1"


@pytest.fixture
def server(db_path: str, tmp_path: Path) -> Iterator[Server]:
    cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE, "--voice", VOICE_2)
    cli(db_path, "import-tracks", str(CATALOG_FILE))
    running = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN)
    yield running
    running.stop()


def test_the_elixir_api_over_real_http(server: Server, db_path: str) -> None:
    key = cli(db_path, "genkey", GUILD, USER)  # while the server runs, as an operator would
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

        refused = http.post(
            f"{API}/{GUILD}/stop", json={"user": USER}, headers={"Authorization": "Bearer " + "0" * 64}
        )
        assert refused.status_code == 401 and refused.json()["message"] == "Request not authorized."
        assert http.post(f"{API}/{GUILD}/stop", json={"user": USER}, headers=auth).status_code == 200
        gone = http.get(f"{API}/{GUILD}/nowplaying")
        assert gone.status_code == 410 and set(gone.json()) == {"timestamp", "message"}


def test_the_admin_api_over_real_http_and_a_clean_shutdown(server: Server) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        assert http.post("/admin/keys", json={"guild": OTHER_GUILD, "user": USER}).status_code == 401
        guild = http.put(
            f"/admin/guilds/{OTHER_GUILD}", json={"name": "Second", "voice_channels": [VOICE]}, headers=admin
        )
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
        bot = http.post("/admin/bots", json={"id": "386861188891279362", "name": "W"}, headers=admin).json()[
            "token"
        ]
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
        r"127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
        rf'"GET /api/mappers\?target={OTHER_GUILD}&source={GUILD} HTTP/1\.1" 404 \d+ [\d.]+ms',
        access[-2],
    ), access[-2]


@pytest.mark.sqlite_only  # HTTP and WebSocket handling, the same on any store
def test_http_semantics_head_options_allow_and_json_404s(server: Server) -> None:
    """HEAD works on every GET route, OPTIONS and 405 list every method of the path, and
    answers that would be HTML or an empty 403 are JSON 404s (SPEC §0, §1)."""
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        for path in [
            "/health",
            f"{API}/{GUILD}/queue",
            f"{API}/{GUILD}/nowplaying",
            "/api/templates/hHGhNE6wyxgF",
            "/schema/openapi.json",
            f"/api/mappers?target={GUILD}&source={OTHER_GUILD}",
        ]:
            got, head = http.get(path), http.head(path)
            assert head.status_code == got.status_code, path
            assert head.content == b""
            assert head.headers.get("content-type") == got.headers.get("content-type")
        options = http.options("/api/templates/hHGhNE6wyxgF/bots")
        assert options.status_code == 204
        assert options.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, POST"
        assert http.options(f"{API}/{GUILD}/play").headers["allow"] == "OPTIONS, POST"
        wrong = http.patch("/api/templates/hHGhNE6wyxgF/bots")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, POST"
        assert wrong.json() == {"error": "Method Not Allowed"}
        docs = http.get("/schema/no-such-page")
        assert docs.status_code == 404 and docs.json() == {"error": "Not Found"}

    async def unknown_websocket_path() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"{server.ws_url}/api/no-such-socket", open_timeout=5):
                pass
        return caught.value

    refusal = asyncio.run(unknown_websocket_path())
    assert refusal.response.status_code == 404 and json.loads(refusal.response.body) == {"error": "Not Found"}


@pytest.mark.sqlite_only  # HTTP and WebSocket handling, the same on any store
@pytest.mark.parametrize("path", ["/admin/keys", f"{API}/{GUILD}/play"])  # the framework's, the short way
def test_a_client_that_leaves_mid_body_is_logged_as_499(server: Server, db_path: str, path: str) -> None:
    secret = ADMIN_TOKEN if path.startswith("/admin") else cli(db_path, "genkey", GUILD, USER)
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}".encode()
            + b'\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"guild":'
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while f'"POST {path} HTTP/1.1" 499' not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log.read_text()
    assert f'"POST {path} HTTP/1.1" 499' in log
    assert " 500 " not in log and "Traceback" not in log and "ERROR" not in log


@pytest.mark.sqlite_only  # HTTP and WebSocket handling, the same on any store
@pytest.mark.parametrize("how", ["serve", "uvicorn"])
def test_one_line_per_request_and_no_secret_however_it_is_run(db_path: str, tmp_path: Path, how: str) -> None:
    """`xenon-elixir serve` and `uvicorn xenon_elixir:app` as the README runs them."""
    port = free_port()
    command = (
        [sys.executable, "-m", "xenon_elixir", "serve", "--db", db_path, "--port", str(port)]
        if how == "serve"
        else [sys.executable, "-m", "uvicorn", "xenon_elixir:app", "--port", str(port)]
    )
    log = tmp_path / "server.log"
    process = spawn(command, port, log, {"XE_DB": db_path, "XE_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            # however a secret's name is spelled: the app reads k%65y as key, and Token as token
            http.get(
                "/api/mappers?target=1&token=hunter2secret&api_key=hunter3secret&k%65y=hunter6secret"
                "&%74oken=hunter7secret&Token=hunter8secret&API_KEY=hunter9secret&pass%2577ord=hunter10secret"
            )
            http.post(
                f"{API}/{GUILD}/stop",
                json={"user": USER},
                headers={"Authorization": "Bearer hunter4secret"},
            )
            http.head("/health")

        async def socket() -> None:
            with pytest.raises(InvalidStatus):
                async with connect(
                    f"ws://127.0.0.1:{port}/api/loaders/ws?token=hunter5secret", open_timeout=5
                ):
                    pass

        asyncio.run(socket())
        time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    text = log.read_text()
    assert "hunter" not in text
    requests = [line for line in text.splitlines() if "/api/" in line or "/health" in line]
    targets = [
        "GET /health",
        "GET /api/mappers",
        f"POST {API}/{GUILD}/stop",
        "HEAD /health",
        "WEBSOCKET /api/loaders/ws",
    ]
    for target in targets:
        assert sum(target in line for line in requests) == 1, (target, requests)  # the probe is GET /health
    assert len(requests) == sum(1 for line in requests if re.match(r"127\.0\.0\.1 - - \[", line))  # ours only
    assert "ERROR" not in text and "Traceback" not in text


@pytest.mark.sqlite_only  # settings are checked before any store is opened
@pytest.mark.parametrize(
    ("how", "variable", "value"),
    [
        (how, variable, value)
        for variable, value in [
            ("XE_RATE_LIMITS", "mappers=1/inf"),
            ("XE_RATE_LIMITS", "mappers=99999999999999999999/10"),
            ("XE_RATE_LIMITS", "nosuchgroup=1/1"),
            ("XE_STATUS_INTERVAL", "nan"),
            ("XE_STATUS_INTERVAL", "inf"),
            ("XE_CACHE_SECONDS", "-1"),
            ("XE_MAX_QUEUE", "0"),
            ("XE_ACCESS_LOG", "flase"),
            ("XE_REQUEST_METRICS", "nope"),
            ("XE_TRUSTED_PROXIES", "*"),
            ("XE_TRUSTED_PROXIES", "proxy.example"),
            ("XE_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/33"),
            ("XE_MAX_STREAMS_PER_ADDRESS", "0"),
            ("XE_MAX_STREAMS_PER_ADDRESS", "many"),
            ("--trusted-proxies", "10.0.0.0/8,nope"),
        ]
        for how in ["serve", "uvicorn"]
        if how == "serve" or not variable.startswith("--")  # a flag is serve's only
    ],
)
def test_a_bad_setting_stops_the_server_with_one_line_naming_it(
    db_path: str, how: str, variable: str, value: str
) -> None:
    command = (
        [sys.executable, "-m", "xenon_elixir", "serve", "--db", db_path, "--port", str(free_port())]
        if how == "serve"
        else [sys.executable, "-m", "uvicorn", "xenon_elixir:app", "--port", str(free_port())]
    )
    env = {**os.environ, "XE_DB": db_path}
    if variable.startswith("--"):
        command += [variable, value]
    else:
        env[variable] = value
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    named = "XE_TRUSTED_PROXIES" if variable.startswith("--") else variable
    assert len(lines) == 1 and named in lines[0], done.stderr
    assert not Path(db_path).exists()  # stopped before anything was created


def test_a_port_in_use_is_one_line_naming_it_before_any_file_is_created(tmp_path: Path) -> None:
    db = tmp_path / "xe.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "xenon_elixir", "serve", "--db", str(db), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"xenon-elixir: port {port} is in use on 127.0.0.1 (another server?): choose another with --port"
    ]
    assert list(tmp_path.iterdir()) == []  # no database, no lock file


@pytest.mark.parametrize("how", ["serve", "uvicorn"])
def test_a_second_ctrl_c_during_shutdown_ends_quietly_with_the_database_closed(
    db_path: str, tmp_path: Path, how: str
) -> None:
    port = free_port()
    command = (
        [sys.executable, "-m", "xenon_elixir", "serve", "--db", db_path, "--port", str(port)]
        if how == "serve"
        else [sys.executable, "-m", "uvicorn", "xenon_elixir:app", "--port", str(port)]
    )
    env = {"XE_DB": db_path, "XE_ADMIN_TOKEN": ADMIN_TOKEN}
    log = tmp_path / "server.log"
    process = spawn(command, port, log, env)
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        token = httpx.post(
            f"http://127.0.0.1:{port}/admin/bots",
            json={"id": "386861188891279362", "name": "B"},
            headers=admin,
        ).json()["token"]

        async def interrupt_twice() -> None:
            async with connect(
                f"ws://127.0.0.1:{port}/api/loaders/ws", additional_headers={"Authorization": token}
            ):
                process.send_signal(signal.SIGINT)  # the shutdown waits for this socket ...
                await asyncio.sleep(0.05)
                process.send_signal(signal.SIGINT)  # ... until a second Ctrl-C
                await asyncio.sleep(1.0)

        asyncio.run(interrupt_twice())
        process.wait(15)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "Traceback" not in text and "CancelledError" not in text and "Event loop is closed" not in text, (
        text
    )
    if xe.is_postgres(db_path):  # the pool closed: no session of the server is left
        assert rows(db_path, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()") == [
            (1,)
        ]
    else:  # closed cleanly: the next open finds nothing to recover
        assert rows(db_path, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize("refusal", ["another server", "the sandbox's database"])
def test_a_refusal_at_startup_under_a_bare_uvicorn_is_one_line(
    db_path: str, tmp_path: Path, refusal: str
) -> None:
    """`uvicorn xenon_elixir:app` refused by its database says so in one line, as `serve` does,
    not in a traceback: a second server on the file without Redis, or the sandbox on a database
    it did not make."""
    env = {**os.environ, "XE_DB": db_path}
    first = None
    if refusal == "another server":
        first = Server(db_path, tmp_path / "first.log")
        said = f"another server process serves {db_path}: set XE_REDIS_URL to run several"
    else:
        cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
        env["XE_SANDBOX"] = "1"
        said = f"the sandbox empties its database, and {db_path} holds data no sandbox made"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "uvicorn", "xenon_elixir:app", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
    finally:
        if first is not None:
            first.stop()
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert [line.split(maxsplit=1)[1] for line in errors][1:] == ["Application startup failed. Exiting."]
    assert errors[0].split(maxsplit=1)[1].startswith(f"xenon_elixir: {said}"), done.stderr
