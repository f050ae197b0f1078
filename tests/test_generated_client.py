"""A client generated from /schema/openapi.json by openapi-python-client (SPEC §7: docs a client can
be built from) reads like a hand-written one and works against a real server, on both stores.

The client is generated once per test session, into the session's temporary folder (nothing is
kept between runs), with ``--meta none`` and no post-hooks: about a second."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ADMIN_TOKEN, CATALOG, GUILD, OTHER_GUILD, USER, VOICE
from litestar.testing import TestClient
from server import Server

import xenon_elixir as xe

PACKAGE = "xe_generated_client"
SOURCE = "410488579140354049"
TARGET = "496683369665658880"
BOT = "386861188891279362"


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The generated package's folder, importable as :data:`PACKAGE` for the session."""
    folder = tmp_path_factory.mktemp("generated")
    app = xe.create_app(db=str(folder / "docs.db"), admin_token=ADMIN_TOKEN)
    with TestClient(app) as client:
        document = client.get("/schema/openapi.json")
    assert document.status_code == 200
    (folder / "openapi.json").write_text(document.text)
    (folder / "config.yaml").write_text("post_hooks: []\n")  # no formatter run: seconds, not more
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(folder / "openapi.json")]
        + ["--meta", "none", "--config", str(folder / "config.yaml")]
        + ["--output-path", str(folder / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr  # nothing skipped
    sys.path.insert(0, str(folder))
    try:
        yield folder / PACKAGE
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_the_generated_layout_reads_like_a_hand_written_client(generated: Path) -> None:
    operations = {
        str(path.relative_to(generated / "api")).removesuffix(".py")
        for path in (generated / "api").glob("*/*.py")
        if path.name != "__init__.py"
    }
    assert {
        "elixir/join",
        "elixir/play",
        "elixir/now_playing",
        "elixir/get_queue",
        "xenon/get_mappers",
        "xenon/attach_bot",
        "admin/create_key",
        "admin/list_bots",
        "player/player_page",
        "service/health",
    } <= operations
    assert len(operations) == 37  # every operation of the document, none left out
    assert not (generated / "api" / "default").exists()
    models = module("models").__all__
    assert {"ElixirJoinBody", "ElixirPlayBody", "ElixirUserBody", "ElixirTrack", "Mapper", "KeyOut"} <= set(
        models
    )
    route_derived = [name for name in models if name.startswith("Api") or "GuildId" in name]
    assert route_derived == []
    join = module("api.elixir.join")
    assert join.sync.__annotations__["body"] is module("models").ElixirJoinBody
    assert "Join a voice channel" in (join.sync.__doc__ or "")
    assert "Discord id" in (module("api.xenon.get_mappers").sync.__doc__ or "")  # the parameters, in words


@pytest.fixture
def served(db_path: str, tmp_path: Path) -> Iterator[Server]:
    running = Server(db_path, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN)
    yield running
    running.stop()


def clients(server: Server) -> tuple[Any, Any]:
    """The generated client classes, and an admin client on ``server``."""
    client = module("client")
    return client, client.AuthenticatedClient(base_url=server.url, token=ADMIN_TOKEN)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_the_generated_client_works_against_the_server(generated: Path, served: Server) -> None:
    client, admin = clients(served)
    models = module("models")
    api = "api.admin."
    guild = module(api + "put_guild").sync(
        GUILD, client=admin, body=models.GuildIn(name="Lounge", voice_channels=[VOICE])
    )
    assert isinstance(guild, models.Guild) and guild.voice_channels == [VOICE]
    tracks = [models.Track.from_dict(track) for track in CATALOG["tracks"][:2]]
    assert module(api + "import_tracks").sync(client=admin, body=tracks).count == 2
    key = module(api + "create_key").sync(client=admin, body=models.KeyIn(guild=GUILD, user=USER)).key
    token = module(api + "grant_bot").sync(client=admin, body=models.BotIn(id=BOT, name="Wick")).token

    # Elixir: join, play, what plays now; a refusal is parsed into Elixir's error body.
    elixir = client.AuthenticatedClient(base_url=served.url, token=key)
    joined = module("api.elixir.join").sync(
        GUILD, client=elixir, body=models.ElixirJoinBody(user=USER, channel=VOICE)
    )
    assert joined.message == "Successfully joined the voice channel."
    played = module("api.elixir.play").sync(
        GUILD, client=elixir, body=models.ElixirPlayBody(user=USER, query="Magia")
    )
    assert isinstance(played, models.ElixirTrack) and played.requested_by == USER
    playing = module("api.elixir.now_playing").sync(GUILD, client=client.Client(base_url=served.url))
    assert isinstance(playing, models.ElixirTrack) and playing.identifier == played.identifier
    idle = module("api.elixir.now_playing").sync_detailed(
        OTHER_GUILD, client=client.Client(base_url=served.url)
    )
    assert idle.status_code == HTTPStatus.GONE
    assert isinstance(idle.parsed, models.ElixirErrorBody)
    assert idle.parsed.message == "No track is currently playing."
    refused = module("api.elixir.play").sync_detailed(
        GUILD,
        client=client.AuthenticatedClient(base_url=served.url, token="0" * 64),
        body=models.ElixirPlayBody(user=USER, query="Magia"),
    )
    assert refused.status_code == HTTPStatus.UNAUTHORIZED
    assert refused.parsed.message == "Request not authorized."

    # Xenon: a load through the admin API, then its mapper; an unknown pair is Xenon's error body.
    start = models.Loader.from_dict(
        {"target_id": TARGET, "type": "backup", "source_id": SOURCE, "user_id": USER}
    )
    assert module(api + "start_loader").sync(client=admin, body=start).event == "start"
    ids = models.IdsIn.from_dict({"ids": {SOURCE: TARGET, "410488579140354050": "496683369665658881"}})
    assert module(api + "add_loader_ids").sync(TARGET, client=admin, body=ids).count == 2
    assert (
        module(api + "finish_loader").sync(TARGET, client=admin, body=models.DoneIn(ok=True)).event == "done"
    )
    xenon = client.AuthenticatedClient(base_url=served.url, token=token, prefix="")  # the raw token
    mapper = module("api.xenon.get_mappers").sync(client=xenon, target=TARGET, source=SOURCE)
    assert isinstance(mapper, models.Mapper)
    assert mapper.ids.to_dict() == {SOURCE: TARGET, "410488579140354050": "496683369665658881"}
    missing = module("api.xenon.get_mappers").sync_detailed(client=xenon, target=TARGET, source=GUILD)
    assert missing.status_code == HTTPStatus.NOT_FOUND
    assert isinstance(missing.parsed, models.XenonErrorBody)
    assert missing.parsed.error == "No id translator found"
