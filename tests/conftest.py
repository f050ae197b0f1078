"""Shared fixtures: a real SQLite file per test, an app with a controllable clock, and the
guild, key and catalog that most Elixir tests start from."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from server import Server, cli
from services import (  # noqa: F401
    PostgresServer,
    make_postgres,
    new_database,
    postgres_db,
    postgres_server,
    redis_fresh,
    redis_server,
    redis_session,
)

import xenon_elixir as xe

CATALOG_FILE = Path(__file__).with_name("catalog.json")
CATALOG = json.loads(CATALOG_FILE.read_text())

ADMIN_TOKEN = "test-admin-token-0123456789"
GUILD = "766045633697021973"
VOICE = "766045633697021978"
VOICE_2 = "766045633697021979"
USER = "460177285954142208"
OTHER_USER = "946443578849243156"
OTHER_GUILD = "410488579140354049"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class _FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """The app's clocks and timers (``Config.clock``, ``monotonic`` and ``timers``), moved only by
    the test: ``advance`` runs, on the loop that set it, every timer that falls due."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self._due: list[tuple[float, int, Any, Callable[[], object], _FakeTimer]] = []
        self._count = itertools.count()

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> _FakeTimer:
        timer = _FakeTimer()
        heapq.heappush(
            self._due,
            (self.now + max(delay, 0.0), next(self._count), asyncio.get_running_loop(), callback, timer),
        )
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._due and self._due[0][0] <= self.now:
            _, _, loop, callback, timer = heapq.heappop(self._due)
            if not timer.cancelled and not loop.is_closed():
                loop.call_soon_threadsafe(callback)


def with_host(db_path: str, body: Callable[[xe.Host], Awaitable[Any]], **config: Any) -> Any:
    """Run ``body`` with a host API opened on the database file (no server), and return its result."""

    async def main() -> Any:
        async with xe.Host.open(xe.Config(db=db_path, **config)) as host:
            return await body(host)

    return asyncio.run(main())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


BOTH_BACKENDS = {
    "test_admin",
    "test_bad_input",
    "test_crash",
    "test_elixir",
    "test_hub",
    "test_player",
    "test_player_ws",
    "test_resolver",
    "test_revocation",
    "test_scale",
    "test_server",
    "test_server_ws",
    "test_xenon",
}
"""The API suites, run on each store: a test of these modules that takes ``db_path`` runs once on
an SQLite file and once on a PostgreSQL database (unless marked ``sqlite_only``: a test of the
file itself, or of HTTP and WebSocket handling that no store touches)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: on SQLite only (the file itself, or what no store touches)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        "db_path" in metafunc.fixturenames
        and metafunc.module.__name__ in BOTH_BACKENDS
        and metafunc.definition.get_closest_marker("sqlite_only") is None
    ):
        metafunc.parametrize("backend", ["sqlite", "postgres"], indirect=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test shows the last lines of the logs its server processes wrote (``*.log`` in
    its ``tmp_path``): what a process logged (a 503's cause, a traceback) is the evidence a rare
    failure in CI leaves, and the directory is gone once CI ends."""
    outcome: Any = yield
    report = outcome.get_result()
    where = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(where, Path):
        for log in sorted(where.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-SERVER_LOG_TAIL:]
            report.sections.append((f"{log.name}, its last {len(tail)} lines", "\n".join(tail)))


SERVER_LOG_TAIL = 30


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store under test: ``sqlite`` (every test) or ``postgres`` (the API suites' second run)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres_template(request: pytest.FixtureRequest) -> str:
    """A database holding the schema, which each API test's database is copied from (a copy
    takes a third of the time of creating the schema anew)."""
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"xe_template_{uuid.uuid4().hex[:8]}"

    async def create_schema() -> None:
        await (await xe.PostgresDatabase(server.create_database(name)).open()).close()

    asyncio.run(create_schema())
    return name


@pytest.fixture
def db_path(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the test's store is: a new SQLite file, or the URL of a new PostgreSQL database
    (with the schema: an empty one gets it on first use, as ``test_postgres.py`` shows)."""
    if backend != "postgres":
        yield str(tmp_path / "xe.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    yield from new_database(server, template=request.getfixturevalue("postgres_template"))


@pytest.fixture
def make_client(db_path: str, clock: FakeClock) -> Iterator[Any]:
    """Start apps on the test's database file; each is shut down at the end (or by the test)."""
    started: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        config = xe.Config(db=db_path, admin_token=ADMIN_TOKEN, clock=clock, monotonic=clock, timers=clock)
        client = TestClient(xe.create_app(config, **overrides))
        client.__enter__()
        started.append(client)
        return client

    yield make
    for client in started:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Any) -> TestClient:
    return make_client()


def admin_key(client: TestClient, guild: str, user: str) -> str:
    response = client.post("/admin/keys", json={"guild": guild, "user": user}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()["key"]


@pytest.fixture
def world(client: TestClient) -> dict[str, str]:
    """A registered guild with two voice channels, the sample catalog, and USER's key."""
    response = client.put(
        f"/admin/guilds/{GUILD}",
        json={"name": "Music Lounge", "voice_channels": [VOICE, VOICE_2]},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert client.post("/admin/tracks", json=CATALOG["tracks"], headers=ADMIN).status_code == 200
    for playlist in CATALOG["playlists"]:
        assert client.post("/admin/playlists", json=playlist, headers=ADMIN).status_code == 200
    return {"key": admin_key(client, GUILD, USER)}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


BOT = "386861188891279362"
OTHER_BOT = "235148962103951360"
SOURCE = "410488579140354049"
TARGET = "496683369665658880"
CREATOR = "647737109494497281"


def grant_bot(client: TestClient, bot_id: str = BOT, name: str = "Wick") -> str:
    response = client.post("/admin/bots", json={"id": bot_id, "name": name}, headers=ADMIN)
    assert response.status_code in (200, 201), response.text
    return response.json()["token"]


def both_ways(client: TestClient, method: str, url: str, **kwargs: Any) -> tuple[int, Any, bytes]:
    """Ask the same of the app twice: by the hot routes' short way (``DirectRoutes``, which must
    take it) and by the framework's; the two answers (status, headers, body) must be one."""
    front = client.app.asgi_handler
    short_way, taken = front.direct, []
    original = short_way.call

    async def call(*args: Any) -> Any:
        taken.append(url)
        return await original(*args)

    answers = []
    for way in (short_way, None):
        front.direct = way
        short_way.call = call
        try:
            response = client.request(method, url, **kwargs)
        finally:
            front.direct, short_way.call = short_way, original
        answers.append((response.status_code, sorted(response.headers.items()), response.content))
    assert taken == [url], "the short way was not taken"
    assert answers[0] == answers[1]
    return answers[0]


def run_load(
    client: TestClient,
    ids: dict[str, str],
    *,
    user: str | None = CREATOR,
    source: str = SOURCE,
    target: str = TARGET,
    **loader: Any,
) -> dict[str, Any]:
    """A whole load through the admin API: start, ids, done; returns the done event."""
    body = {"target_id": target, "type": "backup", "source_id": source, **loader}
    if user is not None:
        body["user_id"] = user
    assert client.post("/admin/loaders", json=body, headers=ADMIN).status_code == 201
    if ids:
        assert (
            client.post(f"/admin/loaders/{target}/ids", json={"ids": ids}, headers=ADMIN).status_code == 200
        )
    done = client.post(f"/admin/loaders/{target}/done", headers=ADMIN)
    assert done.status_code == 200, done.text
    return done.json()


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).with_name("artifacts")
"""Where browser tests leave their screenshots (kept out of git)."""


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, driven by Playwright (no browser is ever downloaded). One per
    test: Playwright's sync API holds an event loop open in this thread while it runs, and the
    tests that follow need to run their own."""
    if not CHROMIUM.exists():
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


def offline_page(browser: Any, allowed: str) -> tuple[Any, list[str]]:
    """A page that may reach only ``allowed`` (the server under test); every other request is
    refused and listed."""
    page = browser.new_page()
    refused: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith(allowed) or url.startswith("data:"):
            request_route.continue_()
        else:
            refused.append(url)
            request_route.abort()

    page.route("**/*", route)
    return page, refused


@pytest.fixture
def music_server(db_path: str, tmp_path: Path) -> Iterator[Server]:
    """A real server (``serve``) with the admin API on, a registered guild and the sample catalog."""
    cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
    cli(db_path, "import-tracks", str(CATALOG_FILE))
    running = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN)
    yield running
    running.stop()


def player_of(client: TestClient, guild: str) -> xe.Player | None:
    """The guild's player, through the started app's host API."""
    return client.blocking_portal.call(xe.host_of(client.app).player, guild)


@pytest.fixture
def two(
    request: pytest.FixtureRequest,
    db_path: str,
    tmp_path: Path,
    redis_fresh: Any,  # noqa: F811 (the fixture of that name)
) -> Iterator[list[Server]]:
    """Two server processes on one database (the guild registered, the catalog imported),
    coordinating through Redis; a test module's ``TWO_ENV`` adds its settings."""
    cli(db_path, "add-guild", GUILD, "--name", "Music Lounge", "--voice", VOICE)
    cli(db_path, "import-tracks", str(CATALOG_FILE))
    env = {
        "XE_ADMIN_TOKEN": ADMIN_TOKEN,
        "XE_REDIS_URL": redis_fresh.url,
        **getattr(request.module, "TWO_ENV", {}),
    }
    servers = [Server(db_path, tmp_path / f"server{i}.log", **env) for i in range(2)]
    yield servers
    for server in servers:
        server.stop()
