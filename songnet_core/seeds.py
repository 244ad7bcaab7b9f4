"""Resolving the seeds a listener writes ("Artist - Title" or a track URI) to library tracks.

Matching is case-, accent- and whitespace-insensitive (`history.normalise`). Artist names and
titles may themselves contain " - " ("Sufjan Stevens - Chicago - Adult Contemporary Easy
Listening Version"), so every split of the text is tried; two different tracks matching is an
ambiguity, never a guess. Errors carry the closest library tracks so a person can fix the seed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from songnet_core.history import TrackInfo, normalise, track_key

_SEPARATOR = re.compile(r"\s+[-\u2013\u2014]\s+")  # " - ", " – ", " — "
_TRACK_URI = re.compile(r"^spotify:track:([A-Za-z0-9]{22})$")
_TRACK_URL = re.compile(r"^https?://open\.spotify\.com/(?:intl-[a-z-]+/)?track/([A-Za-z0-9]{22})(?:[/?#].*)?$")

SeedProblem = Literal["not_found", "ambiguous", "unknown_uri", "invalid"]


@dataclass
class SeedError(ValueError):
    """A seed that names no track, several tracks, or a URI the library does not know."""

    seed: str
    problem: SeedProblem
    message: str
    candidates: list[TrackInfo] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


def display_name(track: TrackInfo) -> str:
    return f"{track.artist} - {track.title}"


def parse_track_uri(text: str) -> str | None:
    """`spotify:track:<id>` for a track URI or an open.spotify.com track link, else None."""
    text = text.strip()
    m = _TRACK_URI.match(text) or _TRACK_URL.match(text)
    return f"spotify:track:{m.group(1)}" if m else None


class SeedIndex:
    """The library, indexed for seed lookup."""

    def __init__(self, tracks: Sequence[TrackInfo], uri_aliases: Mapping[str, int] | None = None) -> None:
        self.tracks = list(tracks)
        self._by_id = {t.track_id: t for t in self.tracks}
        self._keys: dict[str, TrackInfo] | None = None  # built on the first "Artist - Title"
        self._by_uri: dict[str, TrackInfo] = {}
        for uri, tid in (uri_aliases or {}).items():
            if tid in self._by_id:
                self._by_uri[uri] = self._by_id[tid]
        for t in self.tracks:
            if t.uri:
                self._by_uri.setdefault(t.uri, t)
        self._names: list[str] | None = None

    @property
    def _by_key(self) -> dict[str, TrackInfo]:
        """Tracks by `track_key` (the last of equal keys), normalised only when a seed is
        written as text: a URI seed, the daemon's default, needs none."""
        if self._keys is None:
            self._keys = {track_key(t.artist, t.title): t for t in self.tracks}
        return self._keys

    def resolve(self, seed: str) -> TrackInfo:
        text = seed.strip()
        if not text:
            raise SeedError(seed, "invalid", "an empty seed names no track")
        if text.lower().startswith("spotify:") or "open.spotify.com" in text:
            return self._resolve_uri(seed, text)
        matches: dict[int, TrackInfo] = {}
        for artist, title in _splits(text):
            found = self._by_key.get(track_key(artist, title))
            if found is not None:
                matches[found.track_id] = found
        if len(matches) == 1:
            return next(iter(matches.values()))
        if len(matches) > 1:
            names = "; ".join(display_name(t) for t in matches.values())
            raise SeedError(
                seed, "ambiguous", f"seed {seed!r} matches several tracks: {names}", list(matches.values())
            )
        candidates = self.closest(text)
        hint = "" if " - " in text or "\u2013" in text else ' (write seeds as "Artist - Title")'
        raise SeedError(seed, "not_found", f"no track in your library matches {seed!r}{hint}", candidates)

    def _resolve_uri(self, seed: str, text: str) -> TrackInfo:
        uri = parse_track_uri(text)
        if uri is None:
            raise SeedError(seed, "invalid", f"{seed!r} is not a Spotify track URI (spotify:track:<22 characters>)")
        found = self._by_uri.get(uri)
        if found is None:
            raise SeedError(
                seed,
                "unknown_uri",
                f"{uri} is not in your library's history (your export may name this song without its URI); "
                "signing in to Spotify (`songnet auth`) would let songnet look it up, or give the seed "
                'as "Artist - Title"',
            )
        return found

    def closest(self, text: str, n: int = 5) -> list[TrackInfo]:
        """The library tracks whose artist and title read closest to `text`."""
        if self._names is None:
            self._names = [normalise(display_name(t)) for t in self.tracks]
        query = normalise(text)
        readings = [(normalise(a), normalise(t)) for a, t in _splits(text)] or [("", query)]
        scored: list[tuple[float, int]] = []
        for i, track in enumerate(self.tracks):
            score = _ratio(query, self._names[i])
            title = normalise(track.title)
            artist = normalise(track.artist)
            for q_artist, q_title in readings:
                # A title typed short ("Estrela" for "Estrella sueño camino") reads like its start.
                t = max(_ratio(q_title, title), 0.95 * _ratio(q_title, title[: len(q_title) + 1]))
                if len(q_title) >= 4 and q_title in title:
                    t = max(t, 0.8)
                a = _ratio(q_artist, artist) if q_artist else 0.5
                score = max(score, 0.4 * a + 0.6 * t)
            if score >= 0.5:
                scored.append((score, i))
        scored.sort(key=lambda si: (-si[0], si[1]))
        return [self.tracks[i] for _, i in scored[:n]]


def _ratio(a: str, b: str) -> float:
    m = difflib.SequenceMatcher(None, a, b, autojunk=False)
    # The cheap upper bounds first: most of a library is nowhere near the query.
    if m.real_quick_ratio() < 0.5 or m.quick_ratio() < 0.5:
        return 0.0
    return m.ratio()


def _splits(text: str) -> list[tuple[str, str]]:
    """Every (artist, title) reading of "A - B - C": ("A", "B - C") and ("A - B", "C")."""
    out = []
    for m in _SEPARATOR.finditer(text):
        artist, title = text[: m.start()].strip(), text[m.end() :].strip()
        if artist and title:
            out.append((artist, title))
    return out


def resolve_seeds(
    seeds: Sequence[str], tracks: Sequence[TrackInfo], uri_aliases: Mapping[str, int] | None = None
) -> list[TrackInfo]:
    """Each seed resolved in order; the first one that fails raises its `SeedError`."""
    index = SeedIndex(tracks, uri_aliases)
    return [index.resolve(s) for s in seeds]
