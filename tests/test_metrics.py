"""GET /metrics: the Prometheus text format, with what the README promises in it."""

from __future__ import annotations

import re

from conftest import ADMIN, GUILD, grant_bot, run_load
from litestar.testing import TestClient


def sample(text: str, series: str) -> float:
    """The value of one series (exact name and labels) in a Prometheus text answer; 0 when absent."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_requests_events_refusals_followers_and_commits_are_counted(make_client: object) -> None:
    client: TestClient = make_client(rate_limits="mappers=1/60")  # type: ignore[operator]
    token = grant_bot(client)
    for _ in range(3):
        assert client.get(f"/api/v1/{GUILD}/queue").status_code == 200
    run_load(client, {"410520361789161472": "754098965649162251"})
    mapper = "/api/mappers?target=496683369665658880&source=410488579140354049"
    assert client.get(mapper, headers={"Authorization": token}).status_code == 200
    assert client.get(mapper, headers={"Authorization": token}).status_code == 429
    with client.websocket_connect("/api/loaders/ws", headers={"Authorization": token}):
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.text
    assert sample(text, 'xe_requests_total{route="/api/v1/{guild_id}/queue",status="200"}') == 3
    assert sample(text, 'xe_requests_total{route="/api/mappers",status="429"}') == 1
    assert sample(text, 'xe_rate_limited_total{group="mappers"}') == 1
    assert sample(text, 'xe_events_published_total{kind="loader"}') == 2  # start and done
    assert sample(text, 'xe_subscribers{stream="loaders"}') == 1
    assert sample(text, 'xe_request_seconds_count{route="/api/v1/{guild_id}/queue"}') == 3
    assert sample(text, 'xe_request_seconds_bucket{route="/api/v1/{guild_id}/queue",le="+Inf"}') == 3
    assert sample(text, "xe_commit_seconds_count") >= 4  # the bot, the load's start, ids and done
    for name in ("xe_requests_total", "xe_request_seconds", "xe_commit_seconds"):
        assert f"# TYPE {name} " in text
    buckets = re.findall(r'^xe_commit_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.MULTILINE)
    counts = [float(count) for _, count in buckets]
    assert buckets[-1][0] == "+Inf" and counts == sorted(counts)  # cumulative, +Inf last


def test_an_admin_route_is_counted_under_its_template(client: TestClient) -> None:
    assert (
        client.put(
            f"/admin/guilds/{GUILD}", json={"name": "G", "voice_channels": []}, headers=ADMIN
        ).status_code
        == 200
    )
    text = client.get("/metrics").text
    assert sample(text, 'xe_requests_total{route="/admin/guilds/{guild_id}",status="200"}') == 1
