"""The default resolver: link recognition and search expressions."""

from __future__ import annotations

import pytest

import xenon_elixir as xe


@pytest.mark.parametrize(
    ("url", "link"),
    [
        ("https://www.youtube.com/watch?v=_n1o4D6G_XE", ("youtube", "track", "_n1o4D6G_XE")),
        ("http://youtube.com/watch?list=PL1&v=abcDEF12345", ("youtube", "track", "abcDEF12345")),
        ("https://m.youtube.com/watch?v=abcDEF12345", ("youtube", "track", "abcDEF12345")),
        ("https://music.youtube.com/watch?v=abcDEF12345", ("youtube", "track", "abcDEF12345")),
        ("https://youtu.be/abcDEF12345?t=30", ("youtube", "track", "abcDEF12345")),
        ("https://www.youtube.com/shorts/abcDEF12345", ("youtube", "track", "abcDEF12345")),
        ("https://www.youtube.com/playlist?list=PLx-Y_z", ("youtube", "playlist", "PLx-Y_z")),
        ("https://music.youtube.com/playlist?list=OLAK5uy", ("youtube", "playlist", "OLAK5uy")),
        (
            "https://open.spotify.com/track/7kDUspsoYfLkWnZR7qwHZl",
            ("spotify", "track", "7kDUspsoYfLkWnZR7qwHZl"),
        ),
        ("https://open.spotify.com/intl-pt/track/7kDUsp?si=1", ("spotify", "track", "7kDUsp")),
        (
            "https://open.spotify.com/album/4aawyAB9vmqN3uQ7FjRGTy",
            ("spotify", "playlist", "4aawyAB9vmqN3uQ7FjRGTy"),
        ),
        ("https://open.spotify.com/playlist/37i9dQZF1DX", ("spotify", "playlist", "37i9dQZF1DX")),
        ("https://soundcloud.com/artist/track-name", ("soundcloud", "track", "artist/track-name")),
        ("https://soundcloud.com/artist/track-name/", ("soundcloud", "track", "artist/track-name")),
        ("https://soundcloud.com/artist/sets/my-set", ("soundcloud", "playlist", "artist/sets/my-set")),
        ("HTTPS://WWW.YOUTUBE.COM/watch?v=abcDEF12345", ("youtube", "track", "abcDEF12345")),
    ],
)
def test_recognised_links(url: str, link: tuple[str, str, str]) -> None:
    assert xe.parse_link(url) == xe.Link(*link)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/x",
        "https://www.youtube.com/",
        "https://www.youtube.com/watch",
        "https://www.youtube.com/watch?v=",
        "https://youtu.be/",
        "https://open.spotify.com/show/abc",
        "https://soundcloud.com/artist",
        "https://soundcloud.com/artist/sets",
        "https://soundcloud.com/a/b/c/d",
        "https://evil-youtube.com/watch?v=abc",
        "https://youtube.com.evil.net/watch?v=abc",
    ],
)
def test_unsupported_links_are_refused(url: str) -> None:
    with pytest.raises(xe.Invalid) as refused:
        xe.parse_link(url)
    answer = xe.ApiError.of(refused.value, "elixir")
    assert (answer.status_code, answer.message) == (400, xe.UNSUPPORTED_LINK)


@pytest.mark.parametrize("text", ["magia", "youtube.com watch", "what's new: remix", "https:/broken"])
def test_search_text_is_not_a_link(text: str) -> None:
    assert xe.parse_link(text) is None


def test_search_expression_quotes_every_word() -> None:
    words = xe.search_words('Andrés "Cepeda" OR NEAR(x)')
    assert (xe.fts_match(words, every=True), xe.fts_match(words, every=False)) == (
        '"Andrés" "Cepeda" "OR" "NEAR" "x"',
        '"Andrés" OR "Cepeda" OR "OR" OR "NEAR" OR "x"',
    )
    assert xe.search_words("?!  -- ") == []


def test_search_ranks_the_best_match_first(db_path: str) -> None:
    import asyncio

    def t(identifier: str, title: str, author: str) -> dict[str, object]:
        return {
            "source": "youtube",
            "identifier": identifier,
            "title": title,
            "author": author,
            "length": 1000,
            "uri": f"https://youtu.be/{identifier}",
        }

    async def run() -> list[str | None]:
        async with xe.Host.open(xe.Config(db=db_path)) as host:
            await host.import_catalog(
                [
                    t("a1", "Night drive mix", "Various"),
                    t("a2", "Blue Night", "Night Night Night"),
                    t("a3", "Café del Mar - Night", "Ibiza"),
                    t("a4", "Morning", "Nobody"),
                ]
            )
            found = [await host.resolve(q) for q in ("blue night", "CAFE", "night morning", "cafe morning")]
            return [f.identifier if isinstance(f, xe.Track) else None for f in found]

    # all words first ("blue night"), accents folded ("CAFE"), any word when all match nothing
    assert asyncio.run(run()) == ["a2", "a3", "a4", "a4"]
