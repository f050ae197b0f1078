"""The Elixir Music API (SPEC §2): every route's success and listed errors, auth, body aliases."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import (
    ADMIN,
    GUILD,
    OTHER_GUILD,
    OTHER_USER,
    USER,
    VOICE,
    VOICE_2,
    FakeClock,
    admin_key,
    bearer,
    both_ways,
    player_of,
)
from litestar.testing import TestClient

API = "/api/v1"
MAGIA = {
    "title": "Andrés Cepeda - Magia ft. Sebastián Yatra",
    "author": "Andrés Cepeda",
    "duration": 203,
    "formattedDuration": "00:00/03:23",
    "uri": "https://www.youtube.com/watch?v=_n1o4D6G_XE",
    "thumbnail": "https://i.ytimg.com/vi/_n1o4D6G_XE/default.jpg",
    "position": 0,
    "isStream": False,
    "identifier": "_n1o4D6G_XE",
    "requestedBy": USER,
}
WRITE_ROUTES: dict[str, dict[str, Any]] = {
    "join": {"channel": VOICE},
    "volume": {"volume": 45},
    "play": {"query": "magia"},
    "stop": {},
    "skip": {},
    "pause": {},
    "resume": {},
}


def elixir_error(response: Any, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"timestamp", "message"}, body
    assert isinstance(body["timestamp"], int) and body["timestamp"] > 1_600_000_000_000
    assert body["message"] == message


def call(client: TestClient, route: str, key: str | None, guild: str = GUILD, **body: Any) -> Any:
    headers = bearer(key) if key else {}
    return client.post(f"{API}/{guild}/{route}", json={"user": USER, **body}, headers=headers)


@pytest.fixture
def key(world: dict[str, str]) -> str:
    return world["key"]


@pytest.fixture
def joined(client: TestClient, key: str) -> str:
    assert call(client, "join", key, channel=VOICE).status_code == 200
    return key


def now_playing(client: TestClient) -> Any:
    return client.get(f"{API}/{GUILD}/nowplaying")


# Auth ---------------------------------------------------------------------


@pytest.mark.parametrize("route", WRITE_ROUTES)
def test_write_route_without_authorization_is_401(client: TestClient, key: str, route: str) -> None:
    elixir_error(call(client, route, None, **WRITE_ROUTES[route]), 401, "Request not authorized.")


@pytest.mark.parametrize("route", WRITE_ROUTES)
def test_write_route_with_an_unknown_key_is_401(client: TestClient, key: str, route: str) -> None:
    wrong = "0" * 64 if key != "0" * 64 else "1" * 64
    elixir_error(call(client, route, wrong, **WRITE_ROUTES[route]), 401, "Request not authorized.")


@pytest.mark.parametrize("route", WRITE_ROUTES)
def test_key_of_another_guild_is_401(client: TestClient, key: str, route: str) -> None:
    other = admin_key(client, OTHER_GUILD, USER)
    elixir_error(call(client, route, other, **WRITE_ROUTES[route]), 401, "Request not authorized.")


@pytest.mark.parametrize("route", WRITE_ROUTES)
def test_key_of_another_user_is_401(client: TestClient, key: str, route: str) -> None:
    other = admin_key(client, GUILD, OTHER_USER)
    elixir_error(call(client, route, other, **WRITE_ROUTES[route]), 401, "Request not authorized.")


@pytest.mark.parametrize("route", WRITE_ROUTES)
def test_key_used_for_another_body_user_is_401(client: TestClient, key: str, route: str) -> None:
    response = client.post(
        f"{API}/{GUILD}/{route}", json={**WRITE_ROUTES[route], "user": OTHER_USER}, headers=bearer(key)
    )
    elixir_error(response, 401, "Request not authorized.")


@pytest.mark.parametrize("authorization", ["Bearer {key}", "bearer {key}", "BEARER {key}", "{key}"])
def test_bearer_scheme_is_case_insensitive_and_a_bare_key_works(
    client: TestClient, key: str, authorization: str
) -> None:
    response = client.post(
        f"{API}/{GUILD}/join",
        json={"user": USER, "channel": VOICE},
        headers={"Authorization": authorization.format(key=key)},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("authorization", ["Basic {key}", "Bearer", "Bearer {key} extra", "Token {key}"])
def test_other_authorization_forms_are_401(client: TestClient, key: str, authorization: str) -> None:
    response = client.post(
        f"{API}/{GUILD}/join",
        json={"user": USER, "channel": VOICE},
        headers={"Authorization": authorization.format(key=key)},
    )
    elixir_error(response, 401, "Request not authorized.")


def test_auth_is_checked_before_the_guild_is_looked_up(client: TestClient, key: str) -> None:
    unregistered = "123456789012345678"
    # A valid-looking but unknown key learns nothing about which guilds exist.
    response = call(client, "join", "a" * 64, guild=unregistered, channel=VOICE)
    elixir_error(response, 401, "Request not authorized.")
    response = call(client, "join", "a" * 64, guild=GUILD, channel="123456789012345678")
    elixir_error(response, 401, "Request not authorized.")


def test_a_revoked_key_is_401(client: TestClient, key: str) -> None:
    assert client.delete(f"/admin/keys/{GUILD}/{USER}", headers=ADMIN).status_code == 200
    elixir_error(call(client, "join", key, channel=VOICE), 401, "Request not authorized.")


@pytest.mark.parametrize("route", ["nowplaying", "queue"])
def test_read_routes_need_no_key_and_ignore_a_wrong_one(client: TestClient, joined: str, route: str) -> None:
    call(client, "play", joined, query="magia")
    plain = client.get(f"{API}/{GUILD}/{route}")
    wrong = client.get(f"{API}/{GUILD}/{route}", headers=bearer("f" * 64))
    assert plain.status_code == wrong.status_code == 200
    assert plain.json() == wrong.json()


# Bodies ---------------------------------------------------------------------


def test_missing_body_is_400(client: TestClient, key: str) -> None:
    response = client.post(f"{API}/{GUILD}/join", headers=bearer(key))
    elixir_error(response, 400, "No body provided.")
    response = client.post(f"{API}/{GUILD}/stop", content=b"  \n", headers=bearer(key))
    elixir_error(response, 400, "No body provided.")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "Invalid JSON body"),
        (b"[]", "Expected `object`, got `array`"),
        (b'{"user": true}', "$.user"),
        (b'{"user": 4.6e17}', "$.user"),
        (b'{"user": "46017728595414220x"}', "Invalid user"),
        (b'{"user": "1234"}', "Invalid user"),
        (b'{"user": -460177285954142208}', "Invalid user"),
        (b'{"user": 99999999999999999999}', "Invalid user"),
        (b'{"user": "460177285954142208", "channel": "nope"}', "Invalid channel"),
        (b'{"user": "460177285954142208", "channel.id": 5}', "Invalid channel.id"),
        (b'{"user": null}', "Invalid user"),
        (b'{"user": "460177285954142208", "user.id": 5}', "Invalid user.id"),
        (b'{"query": 5}', "$.query"),
    ],
)
def test_malformed_bodies_are_400_naming_the_problem(
    client: TestClient, key: str, content: bytes, fragment: str
) -> None:
    response = client.post(f"{API}/{GUILD}/join", content=content, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"timestamp", "message"}
    assert fragment in response.json()["message"]


def test_missing_user_is_400(client: TestClient, key: str) -> None:
    response = client.post(f"{API}/{GUILD}/join", json={"channel": VOICE}, headers=bearer(key))
    elixir_error(response, 400, 'Missing "user" (or "user.id") in body.')


def test_invalid_guild_in_path_is_400(client: TestClient, key: str) -> None:
    elixir_error(
        call(client, "join", key, guild="not-a-guild", channel=VOICE),
        400,
        "Invalid guild: expected a snowflake id (15-20 digits)",
    )
    elixir_error(
        client.get(f"{API}/12/nowplaying"), 400, "Invalid guild: expected a snowflake id (15-20 digits)"
    )


def test_dotted_aliases_user_id_and_channel_id_work(client: TestClient, key: str) -> None:
    response = client.post(
        f"{API}/{GUILD}/join", json={"user.id": USER, "channel.id": VOICE}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["channel"] == VOICE
    response = client.post(
        f"{API}/{GUILD}/volume", json={"user.id": int(USER), "volume": 7}, headers=bearer(key)
    )
    assert response.json()["user"] == USER


def test_integer_ids_are_accepted_and_answered_as_strings(client: TestClient, key: str) -> None:
    response = client.post(
        f"{API}/{GUILD}/join", json={"user": int(USER), "channel": int(VOICE)}, headers=bearer(key)
    )
    assert response.json() == {
        "guild": GUILD,
        "channel": VOICE,
        "user": USER,
        "message": "Successfully joined the voice channel.",
    }


def test_unknown_body_keys_are_ignored(client: TestClient, key: str) -> None:
    response = call(client, "join", key, channel=VOICE, colour="blue", extra={"a": 1})
    assert response.status_code == 200


def test_body_over_one_mebibyte_is_413(client: TestClient, key: str) -> None:
    response = client.post(
        f"{API}/{GUILD}/play",
        content=b'{"user": "%s", "query": "%s"}' % (USER.encode(), b"a" * (1024 * 1024)),
        headers=bearer(key),
    )
    assert response.status_code == 413
    assert set(response.json()) == {"timestamp", "message"}


# Join -------------------------------------------------------------------


def test_join_answers_as_the_seed_shows(client: TestClient, key: str) -> None:
    response = call(client, "join", key, channel=VOICE)
    assert response.status_code == 200
    assert response.json() == {
        "guild": GUILD,
        "channel": VOICE,
        "user": USER,
        "message": "Successfully joined the voice channel.",
    }


def test_join_of_an_unregistered_guild_is_400(client: TestClient, key: str) -> None:
    stranger = admin_key(client, OTHER_GUILD, USER)
    elixir_error(call(client, "join", stranger, guild=OTHER_GUILD, channel=VOICE), 400, "Guild not found.")


def test_join_of_an_unknown_channel_is_400(client: TestClient, key: str) -> None:
    elixir_error(call(client, "join", key, channel="766045633697021999"), 400, "Voice channel not found.")


def test_join_requires_a_channel(client: TestClient, key: str) -> None:
    elixir_error(call(client, "join", key), 400, 'Missing "channel" (or "channel.id") in body.')


def test_join_while_connected_moves_and_keeps_the_queue(
    client: TestClient, joined: str, clock: FakeClock
) -> None:
    call(client, "play", joined, query="https://www.youtube.com/playlist?list=PLlatinoHits")
    clock.advance(10)
    assert call(client, "join", joined, channel=VOICE_2).json()["channel"] == VOICE_2
    playing = now_playing(client).json()
    assert playing["identifier"] == "_n1o4D6G_XE" and playing["position"] == 10_000
    assert len(client.get(f"{API}/{GUILD}/queue").json()["queue"]) == 2


# Volume -------------------------------------------------------------------


@pytest.mark.parametrize("volume", [0, 45, 100, "45", "0", "100"])
def test_volume_accepts_integers_and_digit_strings_from_0_to_100(
    client: TestClient, joined: str, volume: Any
) -> None:
    response = call(client, "volume", joined, volume=volume)
    assert response.status_code == 200
    assert response.json() == {
        "guild": GUILD,
        "user": USER,
        "message": f"Successfully changed the volume to {int(volume)}.",
    }


@pytest.mark.parametrize("volume", [-1, 101, 1000, 10**30, "-5", "101", "0101", "9" * 5000])
def test_volume_out_of_range_is_400(client: TestClient, joined: str, volume: Any) -> None:
    elixir_error(call(client, "volume", joined, volume=volume), 400, "Volume must be between 0 and 100.")


@pytest.mark.parametrize("volume", [45.0, 45.5, 1e2, "45.0", "4 5", "abc", "", True, None, [45], {}, "٤٥"])
def test_volume_not_a_whole_number_is_400_saying_so(client: TestClient, joined: str, volume: Any) -> None:
    elixir_error(
        call(client, "volume", joined, volume=volume), 400, "Volume must be a whole number between 0 and 100."
    )


def test_volume_when_not_connected_is_400(client: TestClient, key: str) -> None:
    elixir_error(call(client, "volume", key, volume=45), 400, "Elixir isn't connected to a voice channel.")


def test_volume_is_kept_by_the_player(client: TestClient, joined: str, make_client: Any) -> None:
    call(client, "volume", joined, volume=33)
    host_player = player_of(client, GUILD)
    assert host_player.volume == 33


# Play ---------------------------------------------------------------------


def test_play_a_track_url_answers_one_track(client: TestClient, joined: str) -> None:
    response = call(client, "play", joined, query="https://www.youtube.com/watch?v=_n1o4D6G_XE")
    assert response.status_code == 200
    assert response.json() == MAGIA


def test_play_a_playlist_answers_its_tracks_in_order(client: TestClient, joined: str) -> None:
    response = call(client, "play", joined, query="https://www.youtube.com/playlist?list=PLlatinoHits")
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert [t["identifier"] for t in body] == ["_n1o4D6G_XE", "1_zgKRBrT0Y", "-zgDXIi1uYw"]
    assert body[0] == MAGIA
    assert [t["formattedDuration"] for t in body] == ["00:00/03:23", "00:00/03:58", "00:00/04:29"]
    assert {t["requestedBy"] for t in body} == {USER}


@pytest.mark.parametrize(
    ("query", "identifier"),
    [
        ("https://youtu.be/_n1o4D6G_XE", "_n1o4D6G_XE"),
        ("https://music.youtube.com/watch?v=1_zgKRBrT0Y&feature=share", "1_zgKRBrT0Y"),
        ("https://www.youtube.com/shorts/-zgDXIi1uYw", "-zgDXIi1uYw"),
        ("https://open.spotify.com/track/7kDUspsoYfLkWnZR7qwHZl", "7kDUspsoYfLkWnZR7qwHZl"),
        ("https://open.spotify.com/intl-de/track/6g2BiiVQqY5v1S4HIrM54F?si=x", "6g2BiiVQqY5v1S4HIrM54F"),
        ("https://soundcloud.com/lofi-artist/rainy-night", "lofi-artist/rainy-night"),
        ("magia cepeda", "_n1o4D6G_XE"),
        ("ANDRES CEPEDA", "_n1o4D6G_XE"),
        ("música warner", "-zgDXIi1uYw"),
        ("narcos", "6g2BiiVQqY5v1S4HIrM54F"),
        ("tuyo narcos official remastered", "6g2BiiVQqY5v1S4HIrM54F"),
    ],
)
def test_play_resolves_links_and_searches(
    client: TestClient, joined: str, query: str, identifier: str
) -> None:
    response = call(client, "play", joined, query=query)
    assert response.status_code == 200, response.text
    assert response.json()["identifier"] == identifier


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("https://open.spotify.com/album/4aawyAB9vmqN3uQ7FjRGTy", 2),
        ("https://soundcloud.com/lofi-artist/sets/mornings", 2),
        ("https://music.youtube.com/playlist?list=PLlatinoHits", 3),
    ],
)
def test_play_resolves_playlist_links(client: TestClient, joined: str, query: str, count: int) -> None:
    response = call(client, "play", joined, query=query)
    assert response.status_code == 200, response.text
    assert len(response.json()) == count


@pytest.mark.parametrize(
    "query", ["", "   ", "x" * 501, "ftp://example.com/song.mp3", "javascript://alert(1)", None]
)
def test_play_with_an_invalid_query_is_400(client: TestClient, joined: str, query: Any) -> None:
    elixir_error(call(client, "play", joined, query=query), 400, "Invalid query.")


def test_a_500_character_query_is_valid(client: TestClient, joined: str) -> None:
    elixir_error(call(client, "play", joined, query="z" * 500), 404, "No track found.")


@pytest.mark.parametrize(
    "query",
    [
        "https://vimeo.com/123456",
        "http://example.com/song.mp3",
        "https://www.youtube.com/channel/UC123",
        "https://www.youtube.com/feed?list=PLlatinoHits",  # a list= on a page that is not /playlist
        "https://www.youtube.com/results?list=PLlatinoHits",
        "https://example.com/lofi-artist/rainy-night",  # shaped like a SoundCloud track, elsewhere
        "https://open.spotify.com/artist/0OdUWJ0sBjDrqHygGUXeCF",
        "https://soundcloud.com/lofi-artist",
    ],
)
def test_play_of_an_unsupported_url_is_400_naming_the_hosts(
    client: TestClient, joined: str, query: str
) -> None:
    response = call(client, "play", joined, query=query)
    assert response.status_code == 400
    message = response.json()["message"]
    assert "Unsupported URL" in message
    for host in ("youtube.com", "youtu.be", "open.spotify.com", "soundcloud.com"):
        assert host in message


@pytest.mark.parametrize(
    "query",
    [
        "https://www.youtube.com/watch?v=notInCatalog",
        "https://open.spotify.com/playlist/37i9dQZF1DXcBWIGoYBM5M",
        "zzzz qqqq",
        "!!! ???",
    ],
)
def test_play_with_nothing_found_is_404(client: TestClient, joined: str, query: str) -> None:
    elixir_error(call(client, "play", joined, query=query), 404, "No track found.")


def test_play_when_not_connected_is_400(client: TestClient, key: str) -> None:
    elixir_error(call(client, "play", key, query="magia"), 400, "Elixir isn't connected to a voice channel.")


def test_fts_syntax_in_a_query_is_plain_text(client: TestClient, joined: str) -> None:
    for query in ['"unbalanced', "title:magia", "magia NEAR(x)", "a* OR -b", "^magia"]:
        response = call(client, "play", joined, query=query)
        assert response.status_code in (200, 404), (query, response.text)


def test_play_appends_to_the_queue_and_starts_it_if_idle(
    client: TestClient, joined: str, clock: FakeClock
) -> None:
    call(client, "play", joined, query="magia")
    clock.advance(5)
    call(client, "play", joined, query="narcos")
    queue = client.get(f"{API}/{GUILD}/queue").json()
    assert queue["nowplaying"]["identifier"] == "_n1o4D6G_XE"
    assert queue["nowplaying"]["position"] == 5000
    assert [t["identifier"] for t in queue["queue"]] == ["6g2BiiVQqY5v1S4HIrM54F"]
    assert queue["queue"][0]["position"] == 0


@pytest.mark.parametrize(("max_queue", "status"), [(2, 200), (1, 400)])
def test_an_idle_player_takes_a_playlist_of_max_queue_plus_one_tracks_and_no_more(
    make_client: Any, world: dict[str, str], max_queue: int, status: int
) -> None:
    """The first track plays, so it does not wait: max_queue + 1 tracks fit an idle player."""
    client = make_client(max_queue=max_queue)
    assert call(client, "join", world["key"], channel=VOICE).status_code == 200
    response = call(client, "play", world["key"], query="https://www.youtube.com/playlist?list=PLlatinoHits")
    assert response.status_code == status, response.text  # the playlist's 3 tracks
    queue = client.get(f"{API}/{GUILD}/queue").json()
    if status == 200:
        assert queue["nowplaying"]["identifier"] == "_n1o4D6G_XE"
        assert [t["identifier"] for t in queue["queue"]] == ["1_zgKRBrT0Y", "-zgDXIi1uYw"]
    else:
        assert response.json()["message"] == "The queue is full."
        assert queue["queue"] == [] and queue.get("nowplaying") is None  # refused whole


# Now playing, the clock and the queue ---------------------------------------


def test_nowplaying_with_nothing_playing_is_410(client: TestClient, joined: str) -> None:
    elixir_error(now_playing(client), 410, "No track is currently playing.")
    elixir_error(client.get(f"{API}/{OTHER_GUILD}/nowplaying"), 410, "No track is currently playing.")


def test_position_advances_in_real_time(client: TestClient, joined: str, clock: FakeClock) -> None:
    call(client, "play", joined, query="https://open.spotify.com/track/6g2BiiVQqY5v1S4HIrM54F")
    clock.advance(18.25)
    assert now_playing(client).json() == {
        "title": "Tuyo (Narcos Theme)",
        "author": "Rodrigo Amarante",
        "duration": 151,
        "formattedDuration": "00:18/02:31",
        "uri": "https://open.spotify.com/track/6g2BiiVQqY5v1S4HIrM54F",
        "thumbnail": "https://i.scdn.co/image/ab67616d0000b27364d924aebcb26f08aac1bf3b",
        "position": 18250,
        "isStream": False,
        "identifier": "6g2BiiVQqY5v1S4HIrM54F",
        "requestedBy": USER,
    }


def test_the_next_track_starts_where_the_last_ended(
    client: TestClient, joined: str, clock: FakeClock
) -> None:
    call(client, "play", joined, query="https://www.youtube.com/playlist?list=PLlatinoHits")
    clock.advance(203 + 238 + 12)  # past the first two tracks, 12 s into the third
    playing = now_playing(client).json()
    assert playing["identifier"] == "-zgDXIi1uYw"
    assert playing["position"] == 12_000
    assert client.get(f"{API}/{GUILD}/queue").json()["queue"] == []


def test_when_the_queue_runs_dry_nothing_plays_but_the_player_stays(
    client: TestClient, joined: str, clock: FakeClock
) -> None:
    call(client, "play", joined, query="magia")
    clock.advance(203)
    elixir_error(now_playing(client), 410, "No track is currently playing.")
    assert client.get(f"{API}/{GUILD}/queue").json() == {"nowplaying": None, "queue": []}
    assert call(client, "volume", joined, volume=10).status_code == 200
    clock.advance(30)
    call(client, "play", joined, query="narcos")
    assert now_playing(client).json()["position"] == 0


def test_a_stream_never_ends_and_shows_live(client: TestClient, joined: str, clock: FakeClock) -> None:
    call(client, "play", joined, query="https://www.youtube.com/watch?v=jfKfPfyJRdk")
    call(client, "play", joined, query="magia")
    clock.advance(3 * 3600 + 65)
    playing = now_playing(client).json()
    assert playing["isStream"] is True
    assert playing["duration"] == 0
    assert playing["formattedDuration"] == "03:01:05/LIVE"
    assert playing["position"] == (3 * 3600 + 65) * 1000


def test_each_side_of_formatted_duration_picks_its_own_format(
    client: TestClient, joined: str, clock: FakeClock
) -> None:
    call(client, "play", joined, query="https://www.youtube.com/watch?v=qLong10Hour")
    assert now_playing(client).json()["formattedDuration"] == "00:00/10:00:00"
    clock.advance(3600 + 61.9)
    assert now_playing(client).json()["formattedDuration"] == "01:01:01/10:00:00"
    assert now_playing(client).json()["duration"] == 36000


def test_queue_shows_the_current_track_and_what_follows(
    client: TestClient, joined: str, clock: FakeClock
) -> None:
    call(client, "play", joined, query="https://www.youtube.com/playlist?list=PLlatinoHits")
    clock.advance(2)
    body = client.get(f"{API}/{GUILD}/queue").json()
    assert body["nowplaying"]["identifier"] == "_n1o4D6G_XE"
    assert body["nowplaying"]["position"] == 2000
    assert [t["identifier"] for t in body["queue"]] == ["1_zgKRBrT0Y", "-zgDXIi1uYw"]


def test_queue_of_an_idle_guild_is_empty(client: TestClient) -> None:
    assert client.get(f"{API}/{GUILD}/queue").json() == {"nowplaying": None, "queue": []}


# Skip, pause, resume, stop ----------------------------------------------------


def test_skip_answers_the_new_current_track(client: TestClient, joined: str, clock: FakeClock) -> None:
    call(client, "play", joined, query="https://www.youtube.com/playlist?list=PLlatinoHits")
    clock.advance(30)
    response = call(client, "skip", joined)
    assert response.status_code == 200
    assert response.json()["identifier"] == "1_zgKRBrT0Y"
    assert response.json()["position"] == 0
    clock.advance(4)
    assert now_playing(client).json()["position"] == 4000


def test_skip_of_the_last_track_says_the_queue_ran_out(client: TestClient, joined: str) -> None:
    call(client, "play", joined, query="magia")
    response = call(client, "skip", joined)
    assert response.status_code == 200
    assert response.json() == {"message": "Skipped the track. The queue is now empty."}
    elixir_error(now_playing(client), 410, "No track is currently playing.")


def test_skip_with_nothing_playing_is_410(client: TestClient, joined: str) -> None:
    elixir_error(call(client, "skip", joined), 410, "No track is currently playing.")


@pytest.mark.parametrize("route", ["skip", "pause", "resume"])
def test_controls_when_not_connected_are_400(client: TestClient, key: str, route: str) -> None:
    elixir_error(call(client, route, key), 400, "Elixir isn't connected to a voice channel.")


def test_pause_freezes_the_position_and_resume_continues(
    client: TestClient, joined: str, clock: FakeClock
) -> None:
    call(client, "play", joined, query="magia")
    clock.advance(10)
    assert call(client, "pause", joined).json() == {
        "guild": GUILD,
        "user": USER,
        "message": "Successfully paused the player.",
    }
    clock.advance(500)  # longer than the track: a paused track does not end
    assert now_playing(client).json()["position"] == 10_000
    assert call(client, "pause", joined).status_code == 200  # idempotent
    assert call(client, "resume", joined).json()["message"] == "Successfully resumed the player."
    clock.advance(3)
    assert now_playing(client).json()["position"] == 13_000
    assert call(client, "resume", joined).status_code == 200


def test_stop_disconnects_clears_the_queue_and_is_idempotent(client: TestClient, joined: str) -> None:
    call(client, "play", joined, query="https://www.youtube.com/playlist?list=PLlatinoHits")
    response = call(client, "stop", joined)
    assert response.status_code == 200
    assert response.json() == {"guild": GUILD, "user": USER, "message": "Successfully stopped the player."}
    elixir_error(now_playing(client), 410, "No track is currently playing.")
    assert client.get(f"{API}/{GUILD}/queue").json() == {"nowplaying": None, "queue": []}
    elixir_error(call(client, "volume", joined, volume=3), 400, "Elixir isn't connected to a voice channel.")
    assert call(client, "stop", joined).status_code == 200


def test_a_stopped_player_starts_afresh_on_join(client: TestClient, joined: str) -> None:
    call(client, "volume", joined, volume=20)
    call(client, "play", joined, query="magia")
    call(client, "stop", joined)
    call(client, "join", joined, channel=VOICE)
    assert client.get(f"{API}/{GUILD}/queue").json() == {"nowplaying": None, "queue": []}
    assert player_of(client, GUILD).volume == 100


# Error shapes for everything else under the prefix ---------------------------------


def test_unknown_route_under_the_elixir_prefix_has_the_elixir_shape(client: TestClient) -> None:
    response = client.get(f"{API}/{GUILD}/lyrics")
    assert response.status_code == 404
    assert set(response.json()) == {"timestamp", "message"}


def test_wrong_method_has_the_elixir_shape(client: TestClient) -> None:
    response = client.get(f"{API}/{GUILD}/join")
    assert response.status_code == 405
    assert set(response.json()) == {"timestamp", "message"}


def test_unknown_route_outside_elixir_has_the_xenon_shape(client: TestClient) -> None:
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_the_hot_routes_answer_the_short_way_as_the_framework_does(make_client: Any) -> None:
    client = make_client(rate_limits="off", max_body_size=1024)
    key = admin_key(client, GUILD, USER)
    response = client.put(
        f"/admin/guilds/{GUILD}", json={"name": "Lounge", "voice_channels": [VOICE]}, headers=ADMIN
    )
    assert response.status_code == 200
    track = {
        "source": "youtube",
        "length": 203_000,
        **{k: MAGIA[k] for k in ("title", "author", "uri", "identifier")},
    }
    assert client.post("/admin/tracks", json=[track], headers=ADMIN).status_code == 200
    nowplaying = f"{API}/{GUILD}/nowplaying"
    assert both_ways(client, "GET", nowplaying)[0] == 410
    assert call(client, "join", key, channel=VOICE).status_code == 200
    plays = [
        ({"user": USER, "query": "magia"}, bearer(key), 200),
        ({"user": USER, "query": "magia"}, bearer(key), 200),  # the queue grows
        ({"user": USER, "query": "no such song at all"}, bearer(key), 404),
        ({"user": OTHER_USER, "query": "magia"}, bearer(key), 401),
        ({"query": "magia"}, bearer(key), 400),
        ({"user": USER, "query": "magia"}, {}, 401),
        ({"user": USER, "query": "magia"}, bearer("0" * 64), 401),
        ({"user": USER, "query": "x" * 1100}, bearer(key), 413),  # over max_body_size
    ]
    for body, headers, status in plays:
        assert both_ways(client, "POST", f"{API}/{GUILD}/play", json=body, headers=headers)[0] == status
    assert (
        both_ways(client, "POST", f"{API}/{GUILD}/play", content=b"{not json", headers=bearer(key))[0] == 400
    )
    play_elsewhere = both_ways(
        client, "POST", f"{API}/nope/play", json={"user": USER, "query": "x"}, headers=bearer(key)
    )
    assert play_elsewhere[0] == 400
    assert both_ways(client, "GET", nowplaying)[0] == 200
    assert both_ways(client, "GET", f"{API}/nope/nowplaying")[0] == 400
    assert both_ways(client, "GET", f"{API}/{OTHER_GUILD}/nowplaying/")[0] == 410
