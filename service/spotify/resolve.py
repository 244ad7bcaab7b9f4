"""Finding Spotify URIs for tracks known only by artist and title (account-data exports).

Lazily: only for tracks about to go into a playlist, seeds included. A search is
`track:"…" artist:"…"` (limit 10, the most development-mode apps get), then, if nothing
scores well enough, the same with the title's decorations stripped. The best match
(`match.best_match`) is cached in `resolved_track` and becomes the track's URI; a miss is
cached too and searched again only after `spotify_resolve_miss_retry_days`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from service import tables
from service.playlist_shape import TrackRef
from service.spotify.client import SpotifyClient
from service.spotify.errors import BadRequest
from service.spotify.match import base_title, best_match

log = structlog.get_logger(__name__)

DAY = 86_400


@dataclass
class ResolveStats:
    known: int = 0  # had a URI already
    cached: int = 0  # found in the cache (hit)
    cached_misses: int = 0  # a recent miss, not searched again
    searched: int = 0
    found: int = 0
    missed: int = 0


def _field(text: str) -> str:
    # Double quotes delimit a field in Spotify's query syntax; they cannot be escaped.
    return " ".join(text.replace('"', " ").split())


def search_queries(artist: str, title: str) -> list[str]:
    """The queries to try, most specific first."""
    first = f'track:"{_field(title)}" artist:"{_field(artist)}"'
    plain = base_title(title)
    queries = [first]
    if plain and plain != _field(title).casefold():
        queries.append(f'track:"{_field(plain)}" artist:"{_field(artist)}"')
    return queries


class Resolver:
    def __init__(
        self,
        client: SpotifyClient,
        engine: Engine,
        *,
        miss_retry_days: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.engine = engine
        self.miss_retry_seconds = miss_retry_days * DAY
        self.wall_clock = wall_clock
        self.stats = ResolveStats()

    def uri_for(self, track: TrackRef) -> str | None:
        """The track's URI: known, cached, or searched now (None when Spotify has no match)."""
        if track.uri:
            self.stats.known += 1
            return track.uri
        now = int(self.wall_clock())
        if track.track_id is not None:
            with Session(self.engine) as session:
                cached = session.get(tables.ResolvedTrack, track.track_id)
                if cached is not None:
                    if cached.uri:
                        self.stats.cached += 1
                        return cached.uri
                    if now - cached.checked_at < self.miss_retry_seconds:
                        self.stats.cached_misses += 1
                        return None
        uri, score = self._search(track.artist, track.title)
        if track.track_id is not None:
            self._remember(track.track_id, uri, score, now)
        return uri

    def _search(self, artist: str, title: str) -> tuple[str | None, float | None]:
        self.stats.searched += 1
        for query in search_queries(artist, title):
            try:
                results = self.client.search_tracks(query)
            except BadRequest as exc:
                # A query Spotify will not take (odd characters): nothing to find this way.
                log.warning("spotify search refused", error=str(exc))
                continue
            match = best_match(artist, title, results)
            if match is not None:
                self.stats.found += 1
                return match.uri, match.score
        self.stats.missed += 1
        log.info(
            "no spotify match for a track; it is left out of playlists", artist=artist, title=title
        )
        return None, None

    def _remember(self, track_id: int, uri: str | None, score: float | None, now: int) -> None:
        with Session(self.engine) as session:
            track = session.get(tables.Track, track_id)
            if track is None:
                return  # not in the library (a test double or a race): nothing to cache against
            row = session.get(tables.ResolvedTrack, track_id)
            if row is None:
                row = tables.ResolvedTrack(track_id=track_id, checked_at=now)
            row.uri, row.score, row.checked_at = uri, score, now
            session.add(row)
            if uri is not None:
                if track.uri is None:
                    track.uri = uri
                    session.add(track)
                if session.get(tables.TrackUri, uri) is None:
                    session.add(tables.TrackUri(uri=uri, track_id=track_id))
            session.commit()
