"""ListenBrainz as a pull source: `GET /1/user/{name}/listens`, incremental by `min_ts`.

What the API documents and this relies on:
- `min_ts=T` returns listens with `listened_at` strictly after T, the `count` (at most 1000)
  oldest of them, in the payload sorted newest first. So each page's newest `listened_at` is
  the next `min_ts`; the pull ends with a page shorter than `count`.
- `listened_at` is when the listen started (integer seconds, UTC).
- Every answer carries `X-RateLimit-Remaining` and `X-RateLimit-Reset-In` (seconds): with
  nothing remaining, the next request waits that long; a 429 is retried after it.
- A user token (`Authorization: Token ...`) is optional; with it, the user's own listens are
  readable even if private. 401: the token is wrong or revoked; 404: no such user.

Two listens in one second on both sides of a page boundary: the next page starts one second
earlier (`min_ts` = newest - 1); the dedup rule makes the repeated listens one.
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

SOURCE = register(PlaySource("listenbrainz", rank=30, stamps="start"))
PAGE_SIZE = 1000  # the API's maximum (MAX_ITEMS_PER_GET)


class ListenBrainz:
    name = SOURCE.name
    play_source = SOURCE

    def __init__(
        self,
        user: str,
        *,
        root: str = "https://api.listenbrainz.org",
        token: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        page_size: int = PAGE_SIZE,
        timeout: float = 30.0,
    ) -> None:
        self.account = user
        self.token = token
        self.sleep = sleep
        self.page_size = page_size
        self.api = JsonApi(root, name=self.name, sleep=sleep, timeout=timeout, classify=_classify)

    def pages(self, watermark: int | None) -> Iterator[Page]:
        min_ts = watermark if watermark is not None else 0
        fetched = 0
        headers = {"Authorization": f"Token {self.token}"} if self.token else {}
        while True:
            answer = self.api.get(
                f"/1/user/{self.account}/listens",
                {"min_ts": min_ts, "count": self.page_size},
                headers,
            )
            listens = _listens(answer.body)
            rows: list[PlayFields] = []
            skipped: dict[str, int] = {}
            newest = min_ts
            for listen in listens:
                stamp = listen.get("listened_at") if isinstance(listen, dict) else None
                if isinstance(stamp, int) and not isinstance(stamp, bool):
                    newest = max(newest, stamp)
                row = _row(listen)
                if row is None:
                    count_skip(skipped, "no_track" if isinstance(stamp, int) else "invalid_record")
                else:
                    rows.append(row)
            fetched += len(listens)
            full = len(listens) >= self.page_size
            # A full page: the next one repeats the newest second (see the module's note).
            next_min = newest - 1 if full and newest - 1 > min_ts else newest
            yield Page(rows, len(listens), skipped, next_min, fetched, None)
            if not full or next_min <= min_ts:
                return
            self._respect_rate_limit(answer.headers)  # before the next request only
            min_ts = next_min

    def _respect_rate_limit(self, headers: Mapping[str, str]) -> None:
        remaining = headers.get("X-RateLimit-Remaining")
        reset_in = headers.get("X-RateLimit-Reset-In")
        if remaining is not None and reset_in is not None:
            try:
                if int(remaining) <= 0:
                    self.sleep(min(120.0, max(0.0, float(reset_in))))
            except ValueError:
                pass


def _listens(body: Any) -> list[Any]:
    payload = body.get("payload") if isinstance(body, dict) else None
    listens = payload.get("listens") if isinstance(payload, dict) else None
    if not isinstance(listens, list):
        raise SourceUnavailable("ListenBrainz answered without payload.listens")
    return listens


def _row(listen: Any) -> PlayFields | None:
    """A listen as a stored play, or None without a start time, artist or track name."""
    if not isinstance(listen, dict):
        return None
    stamp = listen.get("listened_at")
    meta = listen.get("track_metadata")
    if not isinstance(stamp, int) or isinstance(stamp, bool) or not isinstance(meta, dict):
        return None
    artist, title = meta.get("artist_name"), meta.get("track_name")
    if not isinstance(artist, str) or not isinstance(title, str):
        return None
    if not artist.strip() or not title.strip():
        return None
    info = meta.get("additional_info")
    info = info if isinstance(info, dict) else {}
    ms = _duration_ms(info) or SCROBBLE_MIN_MS
    album = meta.get("release_name") if isinstance(meta.get("release_name"), str) else None
    return (
        SOURCE.stored_end_ts(stamp, ms),
        ms,
        artist.strip(),
        title.strip(),
        SOURCE.name,
        album or None,
        _spotify_uri(info),
        None,
        None,
        None,
        None,
    )


def _duration_ms(info: dict[str, Any]) -> int | None:
    ms = info.get("duration_ms")
    if isinstance(ms, int) and not isinstance(ms, bool) and 0 < ms <= 3_600_000:
        return ms
    seconds = info.get("duration")
    if isinstance(seconds, int) and not isinstance(seconds, bool) and 0 < seconds <= 3600:
        return seconds * 1000
    return None


def _spotify_uri(info: dict[str, Any]) -> str | None:
    # Listens imported from a linked Spotify account carry the track's open.spotify.com URL.
    link = info.get("spotify_id")
    if isinstance(link, str) and "/track/" in link:
        track_id = link.rsplit("/track/", 1)[1].split("?", 1)[0]
        if track_id.isalnum():
            return f"spotify:track:{track_id}"
    return None


def _classify(status: int, body: Any, headers: Mapping[str, str]) -> SourceError | None:
    if status == 429:
        reset = headers.get("X-RateLimit-Reset-In")
        try:
            wait = float(reset) if reset is not None else None
        except ValueError:
            wait = None
        return SourceRateLimited("ListenBrainz: rate limited", wait)
    if status == 401:
        return SourceRefused(
            "ListenBrainz refused the token (HTTP 401): set a valid SONGNET_LISTENBRAINZ_TOKEN"
        )
    if status == 404:
        return SourceRefused(
            "ListenBrainz has no such user (HTTP 404): check SONGNET_LISTENBRAINZ_USER"
        )
    return None


def from_settings(
    settings: Any, *, sleep: Callable[[float], None], account: str | None = None
) -> ListenBrainz | None:
    register_secret(settings.listenbrainz_token)  # never in a log line
    user = account or settings.listenbrainz_user
    if not user:
        return None
    return ListenBrainz(
        user, root=settings.listenbrainz_url, token=settings.listenbrainz_token, sleep=sleep
    )
