"""Fuzzing from the served OpenAPI schema (schemathesis) against a real uvicorn process, with
valid credentials for each API: no 5xx, every answer as documented, every error in its API's
shape. Schema-valid and schema-violating inputs for every operation, bounded in count."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from conftest import CATALOG_FILE, GUILD, SOURCE, TARGET, USER, VOICE
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from server import Server

ADMIN_TOKEN = "fuzz-admin-token"
EXAMPLES = 25  # per operation and pass: about 2,000 requests in all, well under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def cli(db: str, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "xenon_elixir", *argv, "--db", db], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("fuzz")
    db = str(folder / "fuzz.db")
    cli(db, "add-guild", GUILD, "--name", "Fuzz", "--voice", VOICE)
    cli(db, "import-tracks", str(CATALOG_FILE))
    cli(db, "add-template", "Fuzz", "--source", SOURCE, "--creator", USER, "--id", "hHGhNE6wyxgF")
    credentials = {
        "key": cli(db, "genkey", GUILD, USER),
        "token": cli(db, "add-bot", "386861188891279362", "Fuzzer"),
    }
    server = Server(db, folder / "server.log", XE_ADMIN_TOKEN=ADMIN_TOKEN, XE_RATE_LIMITS="off")
    yield {"server": server, "log": folder / "server.log", **credentials}
    server.stop()


def credentials_for(path: str, fuzz: dict[str, Any]) -> dict[str, str]:
    if path.startswith("/admin"):
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if path.startswith("/api/v1/"):
        return {"Authorization": f"Bearer {fuzz['key']}"}
    return {"Authorization": fuzz["token"]}


def test_fuzz_every_operation(fuzz_server: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server['server'].url}/schema/openapi.json")
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 29

    known = {"guild_id": GUILD, "user_id": USER, "bot_id": "386861188891279362", "target_id": TARGET,
             "template_id": "hHGhNE6wyxgF"}
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if names:  # a pass with real ids in the path reaches past validation into the handlers
            passes.append((GenerationMode.POSITIVE, {name: known[name] for name in names}))
        for mode, path_parameters in passes:

            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def probe(case: Any) -> None:
                headers = {**(case.headers or {}), **credentials_for(case.path, fuzz_server)}
                response = case.call(headers=headers)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=CHECKS)
                if response.status_code >= 400:
                    body = response.json()
                    shape = {"timestamp", "message"} if case.path.startswith("/api/v1/") else {"error"}
                    assert shape <= set(body) <= shape | {"retry_after"}, (case.path, body)

            try:
                probe()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # an operation with no input to get wrong

    print(f"\nfuzzed {sum(statuses.values())} cases: {dict(sorted(statuses.items()))}")
    assert not [code for code in statuses if code >= 500]
    assert "Traceback" not in fuzz_server["log"].read_text()
