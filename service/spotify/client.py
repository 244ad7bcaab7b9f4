"""The one way songnet talks to the Spotify Web API.

Every call goes through `SpotifyClient.request`: a plain `requests.Session` (no urllib3 retry
adapter: spotipy's default one sleeps out any Retry-After and retries POSTs into duplicates),
a timeout on every request, answers mapped to `errors`' tree, transient failures retried under
a `RetryPolicy` with injected sleep and clocks, and one token refresh after a 401.

Writes that are not idempotent (creating a playlist, adding items) are called with
`write=True`: they are retried here only when Spotify surely did not act (a 429, a connection
that never opened). After any other failure the caller looks at Spotify's state before trying
again (see `sync.py`).

The access token is sent only to the configured API base; pagination links elsewhere are refused.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import requests
import structlog

from service.settings import Settings
from service.spotify.auth import TokenManager
from service.spotify.errors import (
    AccessTokenRejected,
    BadRequest,
    Deferred,
    NotConfigured,
    SpotifyError,
    TransientError,
    error_for_exception,
    error_for_response,
    where_of,
)
from service.spotify.retry import EventSleeper, RetryPolicy, RetryStats, Sleeper, retrying

log = structlog.get_logger(__name__)

MAX_ITEMS_PER_REQUEST = 100  # Spotify's limit for adding or replacing playlist items
SEARCH_LIMIT = 10  # the most a development-mode app may ask /search for


class TokenSource(Protocol):
    def access_token(self) -> str: ...

    def refresh(self, rejected: str | None = None) -> str: ...


class SpotifyClient:
    def __init__(
        self,
        tokens: TokenSource,
        *,
        api_url: str,
        timeout: float,
        policy: RetryPolicy,
        sleep: Sleeper,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        stats: RetryStats | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.tokens = tokens
        self.api_url = api_url.rstrip("/") + "/"
        self.timeout = timeout
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self.stats = stats or RetryStats()
        self.session = session or requests.Session()

    # -- the one request path ------------------------------------------------------------

    def url_for(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            if not path_or_url.startswith(self.api_url):
                raise BadRequest(
                    f"refusing to send the token off the API base to {where_of('GET', path_or_url)}"
                )
            return path_or_url
        return self.api_url + path_or_url.lstrip("/")

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        write: bool = False,
    ) -> Any:
        """The decoded JSON answer (None for an empty one), or a `SpotifyError`.

        `write=True` marks a call that is not idempotent: it is retried only after failures
        that prove Spotify did not act on it.
        """
        url = self.url_for(path_or_url)

        def should_retry(error: BaseException) -> bool:
            if not isinstance(error, TransientError):
                return False
            return not (write and error.request_sent)

        for attempt in retrying(
            self.policy,
            sleep=self.sleep,
            clock=self.clock,
            rng=self.rng,
            stats=self.stats,
            should_retry=should_retry,
            what=where_of(method, url),
        ):
            with attempt:
                return self._once(method, url, params, body)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _once(self, method: str, url: str, params: dict[str, Any] | None, body: Any) -> Any:
        try:
            token = self.tokens.access_token()
        except TransientError as exc:
            exc.request_sent = False  # only the token request failed; this one was never sent
            self._count(exc)
            raise
        response = self._send(method, url, params, body, token)
        if response.status_code == 401:
            # Expired or revoked access token: one fresh token, one more try.
            self.stats.refreshes += 1
            try:
                token = self.tokens.refresh(rejected=token)
            except TransientError as exc:
                exc.request_sent = False
                self._count(exc)
                raise
            response = self._send(method, url, params, body, token)
        error = error_for_response(
            response, retry_cap=self.policy.cap_seconds, now=self.wall_clock()
        )
        if error is not None:
            self._count(error)
            if isinstance(error, Deferred):
                log.warning(
                    "spotify asks songnet to come back later",
                    call=error.where,
                    error=str(error),
                    retry_at=int(error.retry_at),
                )
            elif isinstance(error, AccessTokenRejected):
                log.error(
                    "spotify refused a fresh access token", call=error.where, action=error.hint
                )
            raise error
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def _send(
        self, method: str, url: str, params: dict[str, Any] | None, body: Any, token: str
    ) -> requests.Response:
        self.stats.attempts += 1
        try:
            return self.session.request(
                method,
                url,
                params=params,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            error = error_for_exception(exc, where=where_of(method, url))
            self._count(error)
            raise error from None

    def _count(self, error: SpotifyError) -> None:
        self.stats.failures[type(error).__name__] += 1
        if isinstance(error, Deferred):
            self.stats.deferrals += 1

    def paginate(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing, following the absolute `next` links."""
        page = self.request("GET", path, params=params)
        while True:
            container = page.get("tracks", page) if isinstance(page, dict) else {}
            yield from container.get("items") or []
            nxt = container.get("next")
            if not nxt:
                return
            page = self.request("GET", nxt)

    # -- the endpoints songnet uses ------------------------------------------------------

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "me")
        return result

    def search_tracks(self, query: str, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
        page = self.request(
            "GET", "search", params={"q": query, "type": "track", "limit": min(limit, SEARCH_LIMIT)}
        )
        items = ((page or {}).get("tracks") or {}).get("items") or []
        return [t for t in items if isinstance(t, dict)]

    def track(self, track_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"tracks/{track_id}")
        return result

    def my_playlists(self) -> Iterator[dict[str, Any]]:
        return self.paginate("me/playlists", {"limit": 50})

    def playlist(self, playlist_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET",
            f"playlists/{playlist_id}",
            params={"fields": "id,name,description,public,owner(id)"},
        )
        return result

    def create_playlist(self, name: str, description: str, public: bool) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            "me/playlists",
            body={"name": name, "description": description, "public": public},
            write=True,
        )
        return result

    def change_playlist_details(
        self, playlist_id: str, *, name: str, description: str, public: bool
    ) -> None:
        self.request(
            "PUT",
            f"playlists/{playlist_id}",
            body={"name": name, "description": description, "public": public},
        )

    def playlist_item_uris(self, playlist_id: str) -> list[str]:
        uris = []
        for entry in self.paginate(
            f"playlists/{playlist_id}/items", {"limit": MAX_ITEMS_PER_REQUEST}
        ):
            # The 2026 API calls the playlist entry's object "item"; older answers say "track".
            obj = entry.get("item") or entry.get("track") or {}
            if obj.get("uri"):
                uris.append(str(obj["uri"]))
        return uris

    def replace_items(self, playlist_id: str, uris: list[str]) -> None:
        """Replace every item (idempotent, so retried freely): at most 100 URIs."""
        if len(uris) > MAX_ITEMS_PER_REQUEST:
            raise ValueError("replace at most 100 items at a time")
        self.request("PUT", f"playlists/{playlist_id}/items", body={"uris": uris})

    def add_items(self, playlist_id: str, uris: list[str]) -> None:
        """Append items (not idempotent: never blindly retried): at most 100 URIs."""
        if len(uris) > MAX_ITEMS_PER_REQUEST:
            raise ValueError("add at most 100 items at a time")
        self.request("POST", f"playlists/{playlist_id}/items", body={"uris": uris}, write=True)

    def follows_playlist(self, playlist_id: str, user_id: str) -> bool:
        answer = self.request(
            "GET", f"playlists/{playlist_id}/followers/contains", params={"ids": user_id}
        )
        return bool(answer and answer[0])

    def unfollow_playlist(self, playlist_id: str) -> None:
        self.request("DELETE", f"playlists/{playlist_id}/followers")


def client_from_settings(
    settings: Settings,
    engine: Any = None,
    *,
    stop_event: threading.Event | None = None,
    sleep: Sleeper | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    stats: RetryStats | None = None,
) -> SpotifyClient:
    """The client for the configured app and the signed-in listener.

    Raises `NotConfigured` without client credentials. `stop_event` ends any wait at shutdown
    (with `Interrupted`); `sleep` replaces the waiting altogether (tests).
    """
    if not settings.spotify_configured:
        raise NotConfigured("Spotify is not configured")
    tokens = TokenManager(settings, engine, wall_clock=wall_clock)
    return SpotifyClient(
        tokens,
        api_url=settings.spotify_api_url,
        timeout=settings.spotify_timeout_seconds,
        policy=RetryPolicy.from_settings(settings),
        sleep=sleep or EventSleeper(stop_event),
        clock=clock,
        wall_clock=wall_clock,
        rng=rng,
        stats=stats,
    )
