"""The OpenAPI document describes the server exactly (issue: what an outside tester broke):
schemathesis with every phase (examples, coverage, fuzzing, stateful) against a real uvicorn,
per API with that API's credentials, each run seeded and bounded, each on a fresh copy of one
seeded database. Every run must report no failure: no 5xx, every status, header and body as
documented, schema-valid input accepted and schema-invalid input refused. The answers no
document can predict are named in the project's schemathesis.toml."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CATALOG_FILE, GUILD, SOURCE, TARGET, USER, VOICE
from server import Server, cli

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "fuzz-admin-token"
EXAMPLES = 50  # per operation in the fuzzing phase; the coverage phase adds its own
SEED = 20261123
APIS = {
    "elixir": r"^/api/v1/",
    "xenon": r"^/api/(mappers|templates|loaders)",
    "admin": r"^/admin/",
}
PINNED = f"""
[parameters]
"path.guild_id" = "{GUILD}"
"path.template_id" = "hHGhNE6wyxgF"
"path.target_id" = "{TARGET}"
"query.source" = "{SOURCE}"
"query.backup" = "3zydfwqp0h"
"body.user" = "{USER}"
"body.channel" = "{VOICE}"
"""
"""Known ids, so a second pass gets past auth and lookups into the handlers."""


def test_what_schemathesis_writes_in_the_checkout_is_neither_tracked_nor_shown() -> None:
    """The runs below start in the checkout (the config names its hooks by a relative path), and
    schemathesis keeps a cache there: running the tests must leave ``git status`` clean."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--", ".schemathesis"],
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    assert listed.stdout == ""
    cache = ".schemathesis/default/cache/crashes/manifest.json"
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", cache], check=False)
    assert ignored.returncode == 0


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("fuzz")
    db = str(folder / "seeded.db")
    cli(db, "add-guild", GUILD, "--name", "Fuzz", "--voice", VOICE)
    cli(db, "import-tracks", str(CATALOG_FILE))
    cli(db, "add-template", "Fuzz", "--source", SOURCE, "--creator", USER, "--id", "hHGhNE6wyxgF")
    cli(db, "add-backup", "--source", SOURCE, "--creator", USER, "--id", "3zydfwqp0h")
    return {
        "db": db,
        "key": cli(db, "genkey", GUILD, USER),
        "token": cli(db, "add-bot", "386861188891279362", "Fuzzer"),
    }


@pytest.fixture
def server(seeded: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    db = str(tmp_path / "fuzz.db")
    shutil.copyfile(seeded["db"], db)  # every run from the same state: same seed, same cases
    running = Server(db, tmp_path / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN, XE_RATE_LIMITS="off")
    yield running
    running.stop()


@pytest.mark.parametrize("pinned", [False, True], ids=["any-ids", "known-ids"])
@pytest.mark.parametrize("api", list(APIS))
def test_schemathesis_finds_no_difference_between_the_document_and_the_server(
    api: str, pinned: bool, seeded: dict[str, str], server: Server, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text((ROOT / "schemathesis.toml").read_text() + (PINNED if pinned else ""))
    authorization = {
        "elixir": f"Bearer {seeded['key']}",
        "xenon": seeded["token"],
        "admin": f"Bearer {ADMIN_TOKEN}",
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{server.url}/schema/openapi.json",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--include-path-regex",
        APIS[api],
        "-H",
        f"Authorization: {authorization[api]}",
        "-n",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--continue-on-failure",
        "--no-color",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    summary = [
        line for line in done.stdout.splitlines() if re.search(r"\d+ (passed|failed)|Test cases|cases", line)
    ]
    print(f"\n{api} ({'known' if pinned else 'any'} ids): " + " | ".join(summary[-3:]))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    log = server.log.read_text()
    assert "Traceback" not in log and '" 500 ' not in log
