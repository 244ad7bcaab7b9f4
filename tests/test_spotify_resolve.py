"""Resolving artist + title to a Spotify URI: scoring, variants, the cache and its misses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service import tables
from service.db import open_database
from service.spotify.match import base_title, best_match, variant_of
from service.spotify.resolve import DAY, Resolver, search_queries
from songnet_core.history import normalise, track_key
from tests.fake_spotify import FakeSpotify, FakeTrack, make_client

# Logs go to a live stderr whatever CLI test ran before.
pytestmark = pytest.mark.usefixtures("fresh_logging")


def result(name: str, *artists: str, uri: str = "spotify:track:" + "x" * 22) -> dict[str, object]:
    return {"name": name, "uri": uri, "artists": [{"name": a} for a in artists]}


def uri(n: int) -> str:
    return f"spotify:track:{n:022d}"


@pytest.mark.parametrize(
    ("want_artist", "want_title", "results", "expected"),
    [
        ("Artist", "Song", [result("Song", "Artist", uri=uri(1))], uri(1)),
        ("artist", "SONG", [result("Song", "Artist", uri=uri(1))], uri(1)),
        ("Beyonce", "Halo", [result("Halo", "Beyoncé", uri=uri(1))], uri(1)),
        ("Artist", "Song", [result("Song - Remastered 2011", "Artist", uri=uri(1))], uri(1)),
        ("Artist", "Song", [result("Song (feat. Guest)", "Artist", "Guest", uri=uri(1))], uri(1)),
        ("Artist & Guest", "Song", [result("Song", "Artist", "Guest", uri=uri(1))], uri(1)),
        # A live take is not the studio song ...
        ("Artist", "Song", [result("Song - Live at Wembley", "Artist", uri=uri(1))], None),
        ("Artist", "Song", [result("Song (Remix)", "Artist", uri=uri(1))], None),
        # ... and the studio take wins even when Spotify lists the live one first.
        (
            "Artist",
            "Song",
            [result("Song - Live", "Artist", uri=uri(1)), result("Song", "Artist", uri=uri(2))],
            uri(2),
        ),
        # Asked for the live take: it wins over the studio one ...
        (
            "Artist",
            "Song - Live",
            [result("Song", "Artist", uri=uri(1)), result("Song - Live", "Artist", uri=uri(2))],
            uri(2),
        ),
        # ... and the studio one stands in when there is no live take.
        ("Artist", "Song (Live)", [result("Song", "Artist", uri=uri(1))], uri(1)),
        # "Live" in the title itself is no live take.
        ("Oasis", "Live Forever", [result("Live Forever", "Oasis", uri=uri(1))], uri(1)),
        (
            "Oasis",
            "Live Forever",
            [
                result("Live Forever - Live", "Oasis", uri=uri(1)),
                result("Live Forever - Remastered", "Oasis", uri=uri(2)),
            ],
            uri(2),
        ),
        ("Artist", "Song - Original Mix", [result("Song", "Artist", uri=uri(1))], uri(1)),
        # The right title by someone else is a miss; so is another title by the right artist.
        ("Artist", "Song", [result("Song", "Somebody Else", uri=uri(1))], None),
        ("Artist", "Song", [result("Another Song Entirely", "Artist", uri=uri(1))], None),
        (
            "Artist",
            "Song",
            [{"name": "Song", "uri": "spotify:episode:1", "artists": [{"name": "Artist"}]}],
            None,
        ),
        ("Artist", "Song", [], None),
    ],
)
def test_best_match(
    want_artist: str, want_title: str, results: list[dict[str, object]], expected: str | None
) -> None:
    match = best_match(want_artist, want_title, results)
    assert (match.uri if match else None) == expected


def test_title_decorations() -> None:
    assert base_title("Song (feat. X) - Remastered 2011") == "song"
    assert base_title("Song [Radio Edit]") == "song"
    assert base_title("(What's The Story) Morning Glory?") != ""
    assert variant_of("Song - Live at Wembley") == {"live"}
    assert variant_of("Live Forever") == frozenset()
    assert variant_of("Song - Radio Mix") == frozenset()


def test_search_queries_use_fields_and_drop_quotes() -> None:
    assert search_queries("Artist", 'Say "Hello"') == ['track:"Say Hello" artist:"Artist"']
    queries = search_queries("Artist", "Song - Remastered 2011")
    assert queries == [
        'track:"Song - Remastered 2011" artist:"Artist"',
        'track:"song" artist:"Artist"',
    ]


@dataclass
class Wanted:
    track_id: int | None
    artist: str
    title: str
    uri: str | None = None


def library_track(engine: Engine, artist: str, title: str, uri: str | None = None) -> Wanted:
    with Session(engine) as session:
        a = session.exec(
            select(tables.Artist).where(tables.Artist.key == normalise(artist))
        ).first()
        if a is None:
            a = tables.Artist(key=normalise(artist), name=artist)
            session.add(a)
            session.flush()
        assert a.id is not None
        t = tables.Track(key=track_key(artist, title), artist_id=a.id, title=title, uri=uri)
        session.add(t)
        session.commit()
        assert t.id is not None
        return Wanted(t.id, artist, title, uri)


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def test_hits_are_cached_and_become_the_tracks_uri(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    engine = open_database(tmp_path)
    spotify_track: FakeTrack = fake_spotify.add_track("Song - Remastered 2011", "Artist")
    fake_spotify.add_track("Song - Live", "Artist")
    wanted = library_track(engine, "Artist", "Song - 2011 Remaster")
    client, _ = make_client(fake_spotify, tmp_path)
    resolver = Resolver(client, engine)
    assert resolver.uri_for(wanted) == spotify_track.uri
    searches = fake_spotify.count("GET", r"/search$")
    assert searches == 2  # the full title finds nothing; the plain one does
    with Session(engine) as session:
        cached = session.get(tables.ResolvedTrack, wanted.track_id)
        assert cached is not None and cached.uri == spotify_track.uri and cached.score is not None
        track = session.get(tables.Track, wanted.track_id)
        assert track is not None and track.uri == spotify_track.uri
        alias = session.get(tables.TrackUri, spotify_track.uri)
        assert alias is not None and alias.track_id == wanted.track_id
    # Resolved once: the next call answers from the cache.
    assert Resolver(client, engine).uri_for(wanted) == spotify_track.uri
    assert fake_spotify.count("GET", r"/search$") == searches


def test_misses_are_cached_then_retried_after_the_set_days(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    engine = open_database(tmp_path)
    wanted = library_track(engine, "Obscure", "Unreleased Demo Thing")
    client, _ = make_client(fake_spotify, tmp_path)
    clock = Clock()
    resolver = Resolver(client, engine, miss_retry_days=30, wall_clock=clock)
    assert resolver.uri_for(wanted) is None
    searches = fake_spotify.count("GET", r"/search$")
    with Session(engine) as session:
        miss = session.get(tables.ResolvedTrack, wanted.track_id)
        assert miss is not None and miss.uri is None and miss.checked_at == int(clock.now)
    clock.now += 29 * DAY
    assert resolver.uri_for(wanted) is None
    assert fake_spotify.count("GET", r"/search$") == searches  # not asked again yet
    added = fake_spotify.add_track("Unreleased Demo Thing", "Obscure")
    clock.now += 2 * DAY
    assert resolver.uri_for(wanted) == added.uri
    assert resolver.stats.cached_misses == 1 and resolver.stats.found == 1


def test_known_uris_are_not_searched(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    engine = open_database(tmp_path)
    wanted = library_track(engine, "Artist", "Song", uri=uri(7))
    client, _ = make_client(fake_spotify, tmp_path)
    assert Resolver(client, engine).uri_for(wanted) == uri(7)
    assert fake_spotify.requests == []


def test_search_asks_for_at_most_ten_results(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    for i in range(25):
        fake_spotify.add_track(f"Song {i}", "Artist")
    client, _ = make_client(fake_spotify, tmp_path)
    # The fake refuses limit > 10 as Spotify does for development-mode apps.
    assert len(client.search_tracks('artist:"Artist"', limit=50)) == 10
