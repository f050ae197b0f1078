"""GET /player/{guild}: the now-playing page, in a real browser (Debian's headless Chromium driven by
Playwright) against a real server, every other host refused. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import ARTIFACTS, GUILD, USER, VOICE, offline_page
from server import Server, cli
from websockets.sync.client import connect

API = "/api/v1"


@pytest.fixture
def server(music_server: Server) -> Server:
    return music_server


@pytest.fixture
def api(server: Server, db_path: str) -> Iterator[tuple[httpx.Client, str]]:
    key = cli(db_path, "genkey", GUILD, USER)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        yield client, key


def control(client: httpx.Client, action: str, **body: Any) -> None:
    answer = client.post(f"{API}/{GUILD}/{action}", json={"user": USER, **body})
    assert answer.status_code == 200, answer.text


def volume_of(server: Server) -> int:
    """The player's volume as its stream tells it (no route answers the volume alone)."""

    with connect(f"{server.ws_url}{API}/{GUILD}/player") as ws:  # sync: Playwright holds this thread's loop
        return json.loads(ws.recv(timeout=5))["volume"]


def shows(page: Any, selector: str) -> None:
    """Wait until the page has ``selector`` (a selector, not a script: the page's policy allows no eval)."""
    page.wait_for_selector(selector, state="attached", timeout=10_000)


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def opened(browser: Any, server: Server, query: str = "") -> tuple[Any, list[str], list[str]]:
    page, refused = offline_page(browser, server.url)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/player/{GUILD}{query}")
    return page, refused, errors


def test_the_page_shows_what_plays_and_the_queue_as_it_changes(
    browser: Any, server: Server, api: tuple[httpx.Client, str]
) -> None:
    client, _ = api
    page, refused, errors = opened(browser, server)
    shows(page, 'html[data-status="disconnected"]')
    assert page.text_content("#status").strip() == "Not connected"
    control(client, "join", channel=VOICE)
    shows(page, 'html[data-status="idle"]')
    control(client, "play", query="https://www.youtube.com/playlist?list=PLlatinoHits")
    shows(page, '#title:has-text("Magia")')
    assert page.text_content("#author").strip() == "Andrés Cepeda"
    assert page.get_attribute("#artwork", "src") == "https://i.ytimg.com/vi/_n1o4D6G_XE/default.jpg"
    queued = [text.strip() for text in page.locator("#queue li").all_text_contents()]
    assert len(queued) == 2 and "Calma" in queued[0] and "Caraluna" in queued[1]
    screenshot(page, "player-playing.png")

    control(client, "skip")
    shows(page, '#title:has-text("Calma")')
    assert page.locator("#queue li").count() == 1
    control(client, "stop")
    shows(page, 'html[data-status="disconnected"]')
    # nothing fetched from anywhere else (the artwork is the track's own) and no script error
    assert all(url.startswith("https://i.ytimg.com/") for url in refused) and errors == []


def test_the_progress_bar_moves_in_real_time_and_freezes_while_paused(
    browser: Any, server: Server, api: tuple[httpx.Client, str]
) -> None:
    client, _ = api
    control(client, "join", channel=VOICE)
    control(client, "play", query="magia")
    page, _, errors = opened(browser, server)
    shows(page, 'html[data-status="playing"]')
    position = lambda: int(page.get_attribute("#progress", "data-position-ms"))  # noqa: E731
    first, began = position(), time.monotonic()
    page.wait_for_timeout(1500)
    moved, elapsed = position() - first, (time.monotonic() - began) * 1000
    assert 1000 <= moved <= elapsed + 500  # no frame came: the page moved it by itself
    control(client, "pause")
    shows(page, 'html[data-paused="true"]')
    frozen = position()
    page.wait_for_timeout(800)
    assert position() == frozen
    assert page.text_content("#status").strip() == "Paused"
    screenshot(page, "player-paused.png")
    assert errors == []


def test_with_a_key_the_controls_pause_skip_set_the_volume_and_stop(
    browser: Any, server: Server, api: tuple[httpx.Client, str]
) -> None:
    client, key = api
    control(client, "join", channel=VOICE)
    control(client, "play", query="https://www.youtube.com/playlist?list=PLlatinoHits")
    page, refused, errors = opened(browser, server)
    shows(page, 'html[data-status="playing"]')
    assert not page.is_visible("#controls")  # no key yet
    page.fill("#key", key)
    page.fill("#user", USER)
    page.click("#save-key")
    page.wait_for_selector("#controls", state="visible")
    assert page.evaluate("sessionStorage.length") >= 1 and page.evaluate("localStorage.length") == 0

    page.click("#pause-resume")
    shows(page, 'html[data-paused="true"]')
    playing = client.get(f"{API}/{GUILD}/nowplaying").json()
    time.sleep(0.3)
    assert client.get(f"{API}/{GUILD}/nowplaying").json()["position"] == playing["position"]  # paused
    assert page.text_content("#pause-resume").strip() == "Resume"
    screenshot(page, "player-controls.png")

    page.click("#pause-resume")
    shows(page, 'html[data-paused="false"]')
    page.click("#skip")
    shows(page, '#title:has-text("Calma")')
    page.fill("#volume", "30")  # a range input: fill sets the value and fires change
    page.dispatch_event("#volume", "change")
    deadline = time.monotonic() + 10
    while volume_of(server) != 30:
        assert time.monotonic() < deadline, "the volume control did not reach the API"
        time.sleep(0.1)
    page.click("#stop")
    shows(page, 'html[data-status="disconnected"]')
    assert client.get(f"{API}/{GUILD}/nowplaying").status_code == 410

    page.click("#forget-key")
    page.wait_for_selector("#controls", state="hidden")
    assert page.evaluate("sessionStorage.length") == 0
    assert all(url.startswith("https://i.ytimg.com/") for url in refused) and errors == []


def test_a_wrong_key_shows_the_apis_message(
    browser: Any, server: Server, api: tuple[httpx.Client, str]
) -> None:
    client, _ = api
    control(client, "join", channel=VOICE)
    control(client, "play", query="magia")
    page, _, _ = opened(browser, server)
    shows(page, 'html[data-status="playing"]')
    page.fill("#key", "f" * 64)
    page.fill("#user", USER)
    page.click("#save-key")
    page.click("#pause-resume")
    shows(page, '#error:has-text("not authorized")')
    assert client.get(f"{API}/{GUILD}/nowplaying").status_code == 200


@pytest.mark.parametrize("theme", ["dark", "light", "transparent"])
def test_themes_and_an_overlay_without_controls(
    browser: Any, server: Server, api: tuple[httpx.Client, str], theme: str
) -> None:
    client, _ = api
    control(client, "join", channel=VOICE)
    control(client, "play", query="magia")
    page, refused, errors = opened(browser, server, f"?theme={theme}&controls=0")
    shows(page, 'html[data-status="playing"]')
    assert page.get_attribute("html", "data-theme") == theme
    assert not page.is_visible("#key-form") and not page.is_visible("#controls")
    if theme == "transparent":
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background in ("rgba(0, 0, 0, 0)", "transparent")
    screenshot(page, f"player-{theme}.png")
    assert all(url.startswith("https://i.ytimg.com/") for url in refused) and errors == []


def test_the_page_is_self_contained_and_refuses_a_bad_guild(server: Server) -> None:
    answer = httpx.get(f"{server.url}/player/{GUILD}")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert "{{" not in answer.text and "http://" not in answer.text.replace("http://www.w3.org", "")
    bad = httpx.get(f"{server.url}/player/not-a-guild")
    assert bad.status_code == 400 and set(bad.json()) == {"timestamp", "message"}
