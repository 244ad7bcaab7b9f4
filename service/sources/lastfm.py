"""Last.fm as a pull source: `user.getRecentTracks`, incremental by `from`.

What the API documents and this relies on:
- `method=user.getRecentTracks&user=U&api_key=K&format=json&from=F&to=T&limit=200&page=N`:
  scrobbles with F <= time <= T (`from` inclusive), newest first, at most 200 a page;
  `recenttracks["@attr"]` gives `page` and `totalPages` and `total` (strings).
- Each scrobble's `date.uts` is when the track started (seconds, UTC, a string). A track
  being played now comes first with `@attr.nowplaying = "true"` and no date: it is skipped
  (it is scrobbled, with a date, once played).
- Errors come as `{"error": n, "message": ...}`: 29 rate limit exceeded (retried after a
  wait), 11/16 service offline or temporary (retried), 6 no such user, 10/26 invalid or
  suspended API key, 17 a private profile (refused: `status` shows it).

The pull fixes `to` at its start and walks from the last page (oldest) to the first, so the
watermark only grows and a scrobble arriving meanwhile does not shift the pages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from service.logging import register_secret
from service.sources import Page, count_skip
from service.sources.http_json import (
    JsonApi,
    SourceError,
    SourceRateLimited,
    SourceRefused,
    SourceUnavailable,
)
from songnet_core.exports import PlayFields
from songnet_core.play_sources import SCROBBLE_MIN_MS, PlaySource, register

SOURCE = register(PlaySource("lastfm", rank=20, stamps="start"))
PAGE_SIZE = 200  # the API's maximum
RATE_LIMIT_WAIT_S = 60.0  # error 29 says no more than that

_REFUSED = {
    6: "Last.fm has no such user: check SONGNET_LASTFM_USER",
    10: "Last.fm refused the API key: set a valid SONGNET_LASTFM_API_KEY",
    26: "Last.fm suspended the API key: set another SONGNET_LASTFM_API_KEY",
    17: "the Last.fm profile is private: make its listening history public",
}


class LastFm:
    name = SOURCE.name
    play_source = SOURCE

    def __init__(
        self,
        user: str,
        api_key: str,
        *,
        root: str = "https://ws.audioscrobbler.com/2.0/",
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        page_size: int = PAGE_SIZE,
        timeout: float = 30.0,
    ) -> None:
        self.account = user
        self.api_key = api_key
        self.clock = clock
        self.page_size = page_size
        self.api = JsonApi(root, name=self.name, sleep=sleep, timeout=timeout, classify=_classify)

    def pages(self, watermark: int | None) -> Iterator[Page]:
        # `from` is inclusive: the watermark's own second is asked again, and the dedup rule
        # makes a scrobble seen twice one play.
        since = 0 if watermark is None else watermark
        until = int(self.clock())
        first = self._page(since, until, 1)
        total_pages, total = _totals(first)
        fetched = 0
        mark = since
        for number in range(total_pages, 0, -1):
            body = first if number == 1 else self._page(since, until, number)
            rows, records, skipped, newest = _parse(body)
            fetched += records
            mark = max(mark, newest)
            yield Page(rows, records, skipped, mark, fetched, total)

    def _page(self, since: int, until: int, number: int) -> Any:
        params = {
            "method": "user.getrecenttracks",
            "user": self.account,
            "api_key": self.api_key,
            "format": "json",
            "from": since,
            "to": until,
            "limit": self.page_size,
            "page": number,
        }
        return self.api.get("", params).body


def _recent(body: Any) -> dict[str, Any]:
    recent = body.get("recenttracks") if isinstance(body, dict) else None
    if not isinstance(recent, dict):
        raise SourceUnavailable("Last.fm answered without recenttracks")
    return recent


def _totals(body: Any) -> tuple[int, int | None]:
    attr = _recent(body).get("@attr")
    attr = attr if isinstance(attr, dict) else {}
    try:
        pages = int(attr.get("totalPages", 0))
    except (TypeError, ValueError):
        raise SourceUnavailable("Last.fm answered without a page count") from None
    try:
        total: int | None = int(str(attr.get("total")))
    except (TypeError, ValueError):
        total = None
    return pages, total


def _parse(body: Any) -> tuple[list[PlayFields], int, dict[str, int], int]:
    """(rows, records, skipped, newest start time) of one page; now-playing is not a record."""
    tracks = _recent(body).get("track", [])
    if isinstance(tracks, dict):  # a page of one track is the track itself
        tracks = [tracks]
    if not isinstance(tracks, list):
        raise SourceUnavailable("Last.fm answered with an unreadable track list")
    rows: list[PlayFields] = []
    skipped: dict[str, int] = {}
    records = 0
    newest = 0
    for track in tracks:
        if isinstance(track, dict) and _now_playing(track):
            continue
        records += 1
        row = _row(track)
        if row is None:
            count_skip(skipped, "no_track")
            continue
        rows.append(row)
        newest = max(newest, row[0] - row[1] // 1000)
    return rows, records, skipped, newest


def _now_playing(track: dict[str, Any]) -> bool:
    attr = track.get("@attr")
    return isinstance(attr, dict) and str(attr.get("nowplaying", "")).lower() == "true"


def _text(value: Any) -> str | None:
    if isinstance(value, dict):  # {"#text": "...", "mbid": "..."}
        value = value.get("#text", value.get("name"))
    return value.strip() or None if isinstance(value, str) else None


def _row(track: Any) -> PlayFields | None:
    if not isinstance(track, dict):
        return None
    date = track.get("date")
    try:
        stamp = int(str(date.get("uts"))) if isinstance(date, dict) else None
    except (TypeError, ValueError):
        stamp = None
    artist, title = _text(track.get("artist")), _text(track.get("name"))
    if stamp is None or artist is None or title is None:
        return None
    ms = SCROBBLE_MIN_MS  # recent tracks carry no duration
    return (
        SOURCE.stored_end_ts(stamp, ms),
        ms,
        artist,
        title,
        SOURCE.name,
        _text(track.get("album")),
        None,
        None,
        None,
        None,
        None,
    )


def _classify(status: int, body: Any, headers: Mapping[str, str]) -> SourceError | None:
    code = body.get("error") if isinstance(body, dict) else None
    if not isinstance(code, int):
        return None
    message = str(body.get("message", ""))[:200]
    if code == 29:
        return SourceRateLimited(f"Last.fm: rate limit exceeded ({message})", RATE_LIMIT_WAIT_S)
    if code in _REFUSED:
        return SourceRefused(f"{_REFUSED[code]} (Last.fm error {code}: {message})")
    if code in (8, 11, 16):
        return SourceUnavailable(f"Last.fm is unavailable (error {code}: {message})")
    return SourceRefused(f"Last.fm error {code}: {message}")


def from_settings(
    settings: Any, *, sleep: Callable[[float], None], account: str | None = None
) -> LastFm | None:
    register_secret(settings.lastfm_api_key)  # never in a log line
    user = account or settings.lastfm_user
    if not user:
        return None
    if not settings.lastfm_api_key:
        raise SourceRefused("Last.fm needs an API key: set SONGNET_LASTFM_API_KEY")
    return LastFm(user, settings.lastfm_api_key, root=settings.lastfm_url, sleep=sleep)
