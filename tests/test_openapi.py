"""The OpenAPI document: valid, complete, with the wire names and each API's error shapes."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from openapi_spec_validator import validate

ELIXIR_WRITES = ["join", "volume", "play", "stop", "pause", "resume", "skip"]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document of an app with the admin API on: made once for the module (tests only read it)."""
    from conftest import ADMIN_TOKEN

    import xenon_elixir as xe

    app = xe.create_app(db=str(tmp_path_factory.mktemp("document") / "xe.db"), admin_token=ADMIN_TOKEN)
    with TestClient(app) as client:
        response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def schema_ref(response: dict[str, Any]) -> str:
    return response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.1")


def test_every_http_route_is_documented(client: TestClient, document: dict[str, Any]) -> None:
    served = {
        (route.path.replace(":str", ""), method.lower())
        for route in client.app.routes
        for method in getattr(route, "methods", ())
        if not route.path.startswith("/schema") and method not in ("OPTIONS", "HEAD")
    }
    # WebSocket routes are in the README; plain HTTP to the player stream only says "426: upgrade"
    served.discard(("/api/v1/{guild_id}/player", "get"))
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == documented
    assert (
        len(documented) == 37
    )  # health, metrics, the player page, 9 Elixir, 5 Xenon, 14 admin writes and 6 listings


def test_wire_names_are_documented(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"formattedDuration", "isStream", "requestedBy"} <= set(schemas["ElixirTrack"]["properties"])
    assert {"user", "user.id"} == set(schemas["ElixirUserBody"]["properties"])
    assert {"user", "user.id", "channel", "channel.id"} == set(schemas["ElixirJoinBody"]["properties"])
    assert {"user", "user.id", "volume"} == set(schemas["ElixirVolumeBody"]["properties"])
    assert {"user", "user.id", "query"} == set(schemas["ElixirPlayBody"]["properties"])
    assert set(schemas["ElixirTrack"]["required"]) == set(schemas["ElixirTrack"]["properties"])
    assert set(schemas["ElixirErrorBody"]["properties"]) == {"timestamp", "message", "retry_after"}
    assert set(schemas["XenonErrorBody"]["properties"]) == {"error", "retry_after"}


@pytest.mark.parametrize("action", ELIXIR_WRITES)
def test_elixir_writes_document_body_auth_and_errors(document: dict[str, Any], action: str) -> None:
    """The body is its type (a generated client names it so), and the type says that ``user`` or
    ``user.id`` is required (join: ``channel`` or ``channel.id`` too)."""
    operation = document["paths"][f"/api/v1/{{guild_id}}/{action}"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    named = {"join": "ElixirJoinBody", "volume": "ElixirVolumeBody", "play": "ElixirPlayBody"}
    assert body["$ref"].rsplit("/", 1)[-1] == named.get(action, "ElixirUserBody")
    needs = [{"anyOf": [{"required": ["user"]}, {"required": ["user.id"]}]}]
    if action == "join":
        needs.append({"anyOf": [{"required": ["channel"]}, {"required": ["channel.id"]}]})
    assert document["components"]["schemas"][named.get(action, "ElixirUserBody")]["allOf"] == needs
    assert operation["security"] == [{"ElixirKey": []}]
    expected = {"200", "400", "401", "413", "429", "503"} | {"play": {"404"}, "skip": {"410"}}.get(
        action, set()
    )
    assert set(operation["responses"]) == expected


@pytest.mark.parametrize(
    ("path", "method", "codes"),
    [
        ("/api/v1/{guild_id}/nowplaying", "get", {"200", "400", "410"}),
        ("/api/mappers", "get", {"200", "400", "401", "404", "429"}),
        ("/api/templates/{template_id}/bots", "post", {"200", "400", "401", "403", "404", "413", "429"}),
        ("/api/templates/{template_id}/bots", "delete", {"200", "400", "401", "403", "404", "413", "429"}),
        ("/admin/keys", "post", {"201", "400", "401", "409", "413", "429"}),
        ("/admin/loaders/{target_id}/done", "post", {"200", "400", "401", "404", "413", "429"}),
    ],
)
def test_routes_document_their_answers(
    document: dict[str, Any], path: str, method: str, codes: set[str]
) -> None:
    assert set(document["paths"][path][method]["responses"]) == codes | {
        "503"
    }  # any route may meet a busy database


def test_every_error_uses_its_apis_shape(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for code, response in operation["responses"].items():
                if int(code) >= 400:
                    elixir = path.startswith(("/api/v1/", "/player/"))  # the player page is Elixir's
                    expected = "ElixirErrorBody" if elixir else "XenonErrorBody"
                    assert schema_ref(response) == expected, (path, method, code)


def test_mapper_query_parameters_are_documented(document: dict[str, Any]) -> None:
    names = {p["name"] for p in document["paths"]["/api/mappers"]["get"]["parameters"]}
    assert names == {"target", "source", "backup"}


def test_the_docs_are_browsable(client: TestClient) -> None:
    page = client.get("/schema")
    assert page.status_code == 200 and "swagger" in page.text.lower()


def test_without_admin_the_admin_routes_are_not_documented(make_client: Any) -> None:
    document = make_client(admin_token=None).get("/schema/openapi.json").json()
    assert not [path for path in document["paths"] if path.startswith("/admin")]


@pytest.mark.parametrize(
    ("path", "method", "schema"),
    [
        ("/api/v1/{guild_id}/nowplaying", "get", "ElixirTrack"),
        ("/api/mappers", "get", "Mapper"),
    ],
)
def test_routes_answering_encoded_bytes_still_document_their_body(
    document: dict[str, Any], path: str, method: str, schema: str
) -> None:
    assert schema_ref(document["paths"][path][method]["responses"]["200"]) == schema


def test_play_documents_one_track_or_a_playlists_tracks(document: dict[str, Any]) -> None:
    schema = document["paths"]["/api/v1/{guild_id}/play"]["post"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert schema["oneOf"] == [
        {"$ref": "#/components/schemas/ElixirTrack"},
        {"type": "array", "items": {"$ref": "#/components/schemas/ElixirTrack"}},
    ]


def test_the_docs_render_offline_in_a_real_browser(browser: Any, tmp_path: Any) -> None:
    """Swagger UI's scripts and styles come from the app (openapi-ui-bundles), not a CDN: with
    every other host refused, Chromium renders the operations."""
    from conftest import ARTIFACTS, offline_page
    from server import Server

    server = Server(str(tmp_path / "docs.db"), tmp_path / "server.log")
    try:
        page, refused = offline_page(browser, server.url)
        page.goto(f"{server.url}/schema")
        page.wait_for_selector(".opblock", timeout=15_000)
        operations = page.locator(".opblock-summary-path").all_inner_texts()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "schema.png"), full_page=False)
        page.close()
        served = httpx.get(f"{server.url}/schema/openapi.json").json()["paths"]
    finally:
        server.stop()
    assert refused == []
    rendered = [text.replace("\u200b", "") for text in operations]
    assert "/api/v1/{guild_id}/play" in rendered
    assert len(rendered) == sum(len(methods) for methods in served.values())  # every operation


def test_the_snowflake_pattern_is_exactly_what_the_parser_takes() -> None:
    """The document's pattern and the parser are one expression: no schema-valid id is refused."""
    import random
    import re

    import xenon_elixir as xe

    bounds = [10**14 - 1, 10**14, 2**53, 2**63, 2**64 - 1, 2**64, 10**20]
    numbers = bounds + [random.Random(7).randrange(10**13, 2**64 + 10**6) for _ in range(20_000)]
    for number in numbers:
        documented = re.fullmatch(xe.SNOWFLAKE_PATTERN, str(number)) is not None
        assert documented == (10**14 <= number < 2**64), number
        try:
            xe.snowflake(str(number), "id")
            parsed = True
        except ValueError:
            parsed = False
        assert documented == parsed, number


def test_id_path_parameters_document_their_pattern(document: dict[str, Any]) -> None:
    import xenon_elixir as xe

    for path, item in document["paths"].items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"].endswith("_id"):
                    expected = (
                        r"^[A-Za-z0-9]{12}$" if parameter["name"] == "template_id" else xe.SNOWFLAKE_PATTERN
                    )
                    assert parameter["schema"]["pattern"] == expected, (path, parameter["name"])


def test_optional_bodies_are_documented_as_optional(document: dict[str, Any]) -> None:
    for path, method in [
        ("/api/templates/{template_id}/bots", "post"),
        ("/api/templates/{template_id}/bots", "delete"),
        ("/admin/loaders/{target_id}/done", "post"),
    ]:
        assert document["paths"][path][method]["requestBody"]["required"] is False
    assert document["paths"]["/admin/keys"]["post"]["requestBody"]["required"] is True


def test_rotating_a_bot_token_is_a_documented_200(document: dict[str, Any]) -> None:
    assert {"200", "201"} <= set(document["paths"]["/admin/bots"]["post"]["responses"])


def test_mapper_target_is_required_in_the_document(document: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in document["paths"]["/api/mappers"]["get"]["parameters"]}
    assert parameters["target"]["required"] is True
    assert not parameters["source"].get("required") and not parameters["backup"].get("required")


# --- Docs a client can be built from (SPEC §7): grouped by API, every operation explained.

API_OF_PREFIX = [("/api/v1/", "Elixir"), ("/api/", "Xenon"), ("/admin/", "Admin"), ("/player/", "Player")]


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]


def test_operations_are_grouped_by_api(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        expected = next((tag for prefix, tag in API_OF_PREFIX if path.startswith(prefix)), "Service")
        assert operation["tags"] == [expected], (method, path)
    described = {tag["name"]: tag.get("description", "") for tag in document["tags"]}
    assert list(described) == ["Xenon", "Elixir", "Player", "Admin", "Service"]
    assert all(len(text) > 40 for text in described.values()), described


def test_without_admin_no_admin_group_is_listed(make_client: Any) -> None:
    document = make_client(admin_token=None).get("/schema/openapi.json").json()
    assert [tag["name"] for tag in document["tags"]] == ["Xenon", "Elixir", "Player", "Service"]


def test_operation_ids_are_plain_words(document: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for path, method, op in operations(document)}
    assert len(set(ids.values())) == len(ids)  # unique
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", name) for name in ids.values()), ids
    assert ids["post", "/api/v1/{guild_id}/join"] == "join"
    assert ids["post", "/api/v1/{guild_id}/play"] == "play"
    assert ids["get", "/api/v1/{guild_id}/nowplaying"] == "now_playing"
    assert ids["get", "/api/mappers"] == "get_mappers"
    assert ids["post", "/admin/keys"] == "create_key"


def test_every_operation_has_a_summary_and_a_description(document: dict[str, Any]) -> None:
    summaries = set()
    for path, method, operation in operations(document):
        assert operation["summary"][:1].isupper() and len(operation["summary"]) > 8, (method, path)
        assert "_" not in operation["summary"].split()[0], (method, path)  # not a function's name
        assert len(operation["description"]) > 40, (method, path)
        summaries.add(operation["summary"])
    assert len(summaries) == len(operations(document))


def test_every_error_answer_has_an_example_in_its_apis_shape(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        for code, response in operation["responses"].items():
            where = (method, path, code)
            if int(code) < 400:
                continue
            examples = response["content"]["application/json"]["examples"].values()
            assert examples, where
            for example in examples:
                value = example["value"]
                if schema_ref(response) == "ElixirErrorBody":
                    assert isinstance(value["timestamp"], int) and value["message"], where
                    message = value["message"]
                else:
                    assert set(value) <= {"error", "retry_after"} and value["error"], where
                    message = value["error"]
                assert example["summary"] == message, where
                assert ("retry_after" in value) == (code == "429"), where
                if code == "503":
                    assert "try again" in message, where


@pytest.mark.parametrize(
    ("path", "method", "code", "message"),
    [
        ("/api/mappers", "get", "404", {"error": "No id translator found"}),
        ("/api/mappers", "get", "404", {"error": "Unknown backup"}),
        ("/api/mappers", "get", "401", {"error": "Unauthorized"}),
        ("/api/mappers", "get", "401", {"error": "Invalid token"}),
        ("/api/mappers", "get", "429", {"error": "You got ratelimited", "retry_after": 2500.0}),
        ("/api/templates/{template_id}", "get", "404", {"error": "Unknown template"}),
        ("/api/templates/{template_id}/bots", "post", "403", {"error": "User is not the creator"}),
        ("/admin/keys", "post", "401", {"error": "Unauthorized"}),
        (
            "/admin/loaders",
            "post",
            "409",
            {"error": "A loader is already running on guild 496683369665658880"},
        ),
    ],
)
def test_xenon_error_examples_are_the_real_texts(
    document: dict[str, Any], path: str, method: str, code: str, message: dict[str, Any]
) -> None:
    examples = document["paths"][path][method]["responses"][code]["content"]["application/json"]["examples"]
    assert message in [example["value"] for example in examples.values()]


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("/api/v1/{guild_id}/play", "404", "No track found."),
        ("/api/v1/{guild_id}/play", "401", "Request not authorized."),
        ("/api/v1/{guild_id}/skip", "410", "No track is currently playing."),
        ("/api/v1/{guild_id}/join", "429", "You got ratelimited"),
    ],
)
def test_elixir_error_examples_are_the_real_texts(
    document: dict[str, Any], path: str, code: str, message: str
) -> None:
    examples = document["paths"][path]["post"]["responses"][code]["content"]["application/json"]["examples"]
    assert message in [example["value"]["message"] for example in examples.values()]


def test_parameters_are_described_in_words(document: dict[str, Any]) -> None:
    """A snowflake is described, not only matched by its 600-character pattern."""
    seen = 0
    for path, method, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert len(parameter.get("description", "")) > 20, (method, path, parameter["name"])
            if parameter["schema"].get("pattern") == SNOWFLAKE:
                assert "Discord id" in parameter["description"] and "15-20 digits" in parameter["description"]
                seen += 1
    assert seen >= 15


SNOWFLAKE = __import__("xenon_elixir").SNOWFLAKE_PATTERN
