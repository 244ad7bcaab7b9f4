"""Resolving seeds ("Artist - Title" or a track URI) against the library."""

from __future__ import annotations

import pytest

from songnet_core.history import TrackInfo
from songnet_core.seeds import SeedError, SeedIndex, parse_track_uri, resolve_seeds

URI_A = "spotify:track:4uLU6hMCjMI75M1A2tKUQC"
URI_A_ALIAS = "spotify:track:0000000000000000000001"
URI_UNKNOWN = "spotify:track:7GhIk7Il098yCjg4BQjzvb"

LIBRARY = [
    TrackInfo(1, 10, "Rick Astley", "Never Gonna Give You Up", uri=URI_A),
    TrackInfo(2, 20, "Beyoncé", "Halo"),
    TrackInfo(3, 30, "Sufjan Stevens", "Chicago - Adult Contemporary Easy Listening Version"),
    TrackInfo(4, 30, "Sufjan Stevens", "Chicago"),
    # Two readings of "A - B - C" that both exist:
    TrackInfo(5, 40, "Up", "Down - Left"),
    TrackInfo(6, 50, "Up - Down", "Left"),
    TrackInfo(7, 60, "Florence + The Machine", "Dog Days Are Over"),
]


@pytest.fixture
def index() -> SeedIndex:
    return SeedIndex(LIBRARY, {URI_A_ALIAS: 1, URI_A: 1})


def test_case_accent_and_space_insensitive(index: SeedIndex) -> None:
    assert index.resolve("beyonce - halo").track_id == 2
    assert index.resolve("  BEYONCÉ   -   Halo ").track_id == 2
    assert index.resolve("rick astley – never gonna give you up").track_id == 1  # en dash


def test_titles_with_dashes_try_every_split(index: SeedIndex) -> None:
    assert index.resolve("Sufjan Stevens - Chicago - Adult Contemporary Easy Listening Version").track_id == 3
    assert index.resolve("Sufjan Stevens - Chicago").track_id == 4


def test_two_readings_are_ambiguous_with_both_as_candidates(index: SeedIndex) -> None:
    with pytest.raises(SeedError) as err:
        index.resolve("Up - Down - Left")
    assert err.value.problem == "ambiguous"
    assert {t.track_id for t in err.value.candidates} == {5, 6}


def test_no_match_offers_the_closest_tracks(index: SeedIndex) -> None:
    with pytest.raises(SeedError) as err:
        index.resolve("Rick Astly - Never Gona Give You Up")
    assert err.value.problem == "not_found"
    assert err.value.candidates[0].track_id == 1
    with pytest.raises(SeedError) as err:
        index.resolve("Dog Days Are Over")  # no artist given
    assert err.value.problem == "not_found"
    assert "Artist - Title" in str(err.value)
    assert [t.track_id for t in err.value.candidates][:1] == [7]


def test_uris_and_aliases_and_links(index: SeedIndex) -> None:
    assert index.resolve(URI_A).track_id == 1
    assert index.resolve(URI_A_ALIAS).track_id == 1
    assert index.resolve("https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC?si=abc").track_id == 1
    assert parse_track_uri("spotify:album:4uLU6hMCjMI75M1A2tKUQC") is None


def test_unknown_uri_says_signing_in_would_resolve_it(index: SeedIndex) -> None:
    with pytest.raises(SeedError) as err:
        index.resolve(URI_UNKNOWN)
    assert err.value.problem == "unknown_uri"
    assert "songnet auth" in str(err.value) and "Spotify" in str(err.value)
    with pytest.raises(SeedError) as err:
        index.resolve("spotify:track:short")
    assert err.value.problem == "invalid"


def test_resolve_seeds_keeps_order() -> None:
    got = resolve_seeds(["Beyonce - Halo", URI_A], LIBRARY)
    assert [t.track_id for t in got] == [2, 1]
    with pytest.raises(SeedError, match="empty"):
        resolve_seeds([" "], LIBRARY)


def test_a_title_typed_short_finds_its_track_first() -> None:
    library = [
        TrackInfo(1, 1, "The Sols", "Estrella sueño camino"),
        TrackInfo(2, 2, "The Beijos", "Brisa sertão estrela"),
        TrackInfo(3, 1, "The Sols", "Vida"),
    ]
    with pytest.raises(SeedError) as err:
        SeedIndex(library).resolve("The Sols - Estrela")
    assert err.value.candidates[0].track_id == 1
