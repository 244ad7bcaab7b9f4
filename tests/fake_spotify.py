"""A fake Spotify Web API and accounts service: a real HTTP server on 127.0.0.1 with state.

    with FakeSpotify() as fake:                    # or the `fake_spotify` fixture
        fake.add_track("Song", "Artist")
        settings = fake.settings(tmp_path)         # SONGNET_SPOTIFY_* pointed at the fake
        fake.sign_in(settings)                     # a token file, as `songnet auth` leaves it
        fake.inject(Fault.server_error(503), method="PUT", path=r"/items$", times=2)

What it serves, as Spotify does in 2026 (development-mode limits included):
- accounts: `GET /accounts/authorize` (approves at once: 302 to the redirect URI with `code`
  and `state`), `POST /accounts/api/token` (authorization_code, refresh_token; Basic auth)
- API under `/v1/`: `/me`, `/me/playlists` GET/POST, `/playlists/{id}` GET/PUT,
  `/playlists/{id}/items` GET/PUT/POST (≤ 100 URIs), `/playlists/{id}/followers` PUT/DELETE,
  `/playlists/{id}/followers/contains`, `/search` (limit ≤ 10), `/tracks/{id}`; listings are
  paged with absolute `next` URLs.

Faults, scripted (`inject`, matched by method and path regex, for a number of times) or
seeded-random (`random_faults`): a status (429 with any Retry-After, QUOTA_EXCEEDED, 5xx),
a dropped connection, an answer delayed past the client's timeout. A fault with
`after=True` lets the request take effect first and then loses or spoils the answer (a
create whose response is lost). `expire_access_tokens`, `revoke_refresh_tokens` and
`allowlisted = False` give the 401 / invalid_grant / 403 answers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import re
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest

from service.logging import configure_logging
from service.settings import Settings, load_settings
from service.spotify.auth import TokenFile, token_path
from service.spotify.client import SpotifyClient, client_from_settings
from songnet_core.history import normalise

CLIENT_ID = "fake-client-id-0123456789"
CLIENT_SECRET = "fake-client-secret-abcdefghij"
_BASE62 = string.digits + string.ascii_letters
_URI = re.compile(r"^spotify:track:[0-9A-Za-z]{22}$")


# -- test doubles for time ---------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class RecordingSleeper:
    """A `Sleeper` that records each wait, advances a `FakeClock` and returns at once."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.now += seconds


# -- faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: Literal["status", "drop", "delay"]
    status: int = 500
    retry_after: float | None = None
    reason: str | None = None
    seconds: float = 0.0
    after: bool = False  # apply the request first, then spoil the answer

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1) -> Fault:
        return cls("status", status=429, retry_after=retry_after)

    @classmethod
    def quota(cls, retry_after: float | None = 86_400) -> Fault:
        return cls("status", status=429, retry_after=retry_after, reason="QUOTA_EXCEEDED")

    @classmethod
    def server_error(cls, status: int = 500, *, after: bool = False) -> Fault:
        return cls("status", status=status, after=after)

    @classmethod
    def dropped(cls, *, after: bool = False) -> Fault:
        return cls("drop", after=after)

    @classmethod
    def lost_response(cls) -> Fault:
        """The request takes effect; the connection closes before the answer."""
        return cls("drop", after=True)

    @classmethod
    def delayed(cls, seconds: float) -> Fault:
        """The request takes effect; the answer comes `seconds` later (past the timeout)."""
        return cls("delay", seconds=seconds, after=True)

    @property
    def label(self) -> str:
        if self.kind == "status":
            return f"{self.status}{'-quota' if self.reason else ''}{'-after' if self.after else ''}"
        return f"{self.kind}{'-after' if self.after else ''}"


@dataclass
class _Rule:
    fault: Fault
    method: str | None
    path: re.Pattern[str] | None
    times: int | None  # None: every matching request

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(self.path.search(path))
        )


@dataclass
class _RandomFaults:
    rate: float
    faults: list[Fault]
    rng: random.Random
    methods: set[str] | None
    path: re.Pattern[str] | None


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int | None  # None: no answer (dropped)
    fault: str | None


# -- state -------------------------------------------------------------------------------------


@dataclass
class FakeTrack:
    id: str
    name: str
    artists: list[str]
    album: str = "An Album"

    @property
    def uri(self) -> str:
        return f"spotify:track:{self.id}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uri": self.uri,
            "name": self.name,
            "type": "track",
            "artists": [
                {"name": a, "id": _id_for("artist:" + a), "type": "artist"} for a in self.artists
            ],
            "album": {"name": self.album},
        }


@dataclass
class FakePlaylist:
    id: str
    name: str
    description: str
    public: bool
    owner: str
    items: list[str] = field(default_factory=list)
    followers: set[str] = field(default_factory=set)
    created: int = 0
    snapshot: int = 1

    def as_json(self, api_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "uri": f"spotify:playlist:{self.id}",
            "name": self.name,
            "description": self.description,
            "public": self.public,
            "owner": {"id": self.owner},
            "snapshot_id": str(self.snapshot),
            "items": {"href": f"{api_url}playlists/{self.id}/items", "total": len(self.items)},
        }


def _id_for(text: str) -> str:
    rng = random.Random(text)
    return "".join(rng.choice(_BASE62) for _ in range(22))


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = (
            status,
            message,
            reason,
            headers or {},
        )


class FakeSpotify:
    """The fake service. Thread-safe; inspect state through the attributes and methods below."""

    def __init__(
        self,
        *,
        user_id: str = "listener",
        display_name: str = "The Listener",
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        page_size: int = 50,
    ) -> None:
        self.user_id = user_id
        self.display_name = display_name
        self.client_id = client_id
        self.client_secret = client_secret
        self.page_size = page_size
        self.allowlisted = True
        self.tracks: dict[str, FakeTrack] = {}
        self.playlists: dict[str, FakePlaylist] = {}
        self.requests: list[RequestRecord] = []
        self.faults_injected: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._rules: list[_Rule] = []
        self._random: _RandomFaults | None = None
        self._access: dict[str, tuple[str, bool]] = {}  # token -> (user, expired)
        self._refresh: dict[str, str] = {}  # refresh token -> user
        self._revoked: set[str] = set()
        self._codes: dict[str, tuple[str, str]] = {}  # code -> (redirect_uri, scope)
        self._created = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeSpotify:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-spotify", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeSpotify:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1/"

    @property
    def accounts_url(self) -> str:
        return f"{self.base_url}/accounts/"

    def env(self) -> dict[str, str]:
        """SONGNET_* variables that point songnet (e.g. a daemon subprocess) at this fake."""
        return {
            "SONGNET_SPOTIFY_CLIENT_ID": self.client_id,
            "SONGNET_SPOTIFY_CLIENT_SECRET": self.client_secret,
            "SONGNET_SPOTIFY_API_URL": self.api_url,
            "SONGNET_SPOTIFY_ACCOUNTS_URL": self.accounts_url,
            "SONGNET_SPOTIFY_REDIRECT_URI": "http://127.0.0.1:8888/callback",
        }

    def settings(self, data_dir: Path, **overrides: Any) -> Settings:
        """Settings for `data_dir` pointed at this fake (short timeout and cap unless overridden)."""
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "spotify_client_id": self.client_id,
            "spotify_client_secret": self.client_secret,
            "spotify_api_url": self.api_url,
            "spotify_accounts_url": self.accounts_url,
            "spotify_redirect_uri": "http://127.0.0.1:8888/callback",
            "spotify_timeout_seconds": 2.0,
            "spotify_retry_cap_seconds": 30.0,
        }
        values.update(overrides)
        return load_settings(**values)

    # -- setting the scene -------------------------------------------------------------------

    def add_track(
        self,
        name: str,
        artist: str | list[str],
        *,
        album: str = "An Album",
        track_id: str | None = None,
    ) -> FakeTrack:
        artists = [artist] if isinstance(artist, str) else list(artist)
        track = FakeTrack(
            id=track_id or _id_for(f"{artists}|{name}|{album}|{len(self.tracks)}"),
            name=name,
            artists=artists,
            album=album,
        )
        with self._lock:
            self.tracks[track.id] = track
        return track

    def issue_token(
        self, scope: str = "playlist-modify-private playlist-modify-public playlist-read-private"
    ) -> dict[str, Any]:
        """Token info as spotipy caches it, valid for an hour."""
        access, refresh = "A" + secrets.token_urlsafe(24), "R" + secrets.token_urlsafe(24)
        with self._lock:
            self._access[access] = (self.user_id, False)
            self._refresh[refresh] = self.user_id
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
            "expires_at": int(time.time()) + 3600,
            "refresh_token": refresh,
            "scope": scope,
        }

    def sign_in(self, settings: Settings) -> dict[str, Any]:
        """Leave a token file in `settings.data_dir`, as `songnet auth` does."""
        info = self.issue_token()
        TokenFile(token_path(settings)).save_token_to_cache(info)
        return info

    def authorize(self, authorize_url: str) -> str:
        """What the browser does: approve and return the URL it is sent back to."""
        q = dict(parse_qsl(urlsplit(authorize_url).query))
        assert q.get("client_id") == self.client_id, "authorize URL for another client"
        code = "C" + secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = (q["redirect_uri"], q.get("scope", ""))
        back = {"code": code}
        if "state" in q:
            back["state"] = q["state"]
        return f"{q['redirect_uri']}?{urlencode(back)}"

    def expire_access_tokens(self) -> None:
        with self._lock:
            for token, (user, _) in list(self._access.items()):
                self._access[token] = (user, True)

    def revoke_refresh_tokens(self) -> None:
        with self._lock:
            self._revoked.update(self._refresh)

    def user_deletes_playlist(self, playlist_id: str) -> None:
        """What "delete" does in Spotify's apps: the owner unfollows it."""
        with self._lock:
            self.playlists[playlist_id].followers.discard(self.user_id)

    def create_playlist_directly(
        self, name: str, description: str = "", *, owner: str | None = None
    ) -> FakePlaylist:
        with self._lock:
            return self._new_playlist(name, description, False, owner or self.user_id)

    # -- faults ------------------------------------------------------------------------------

    def inject(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Fail the next `times` requests matching `method` and the `path` regex (None: all)."""
        with self._lock:
            self._rules.append(_Rule(fault, method, re.compile(path) if path else None, times))

    def random_faults(
        self,
        rate: float,
        faults: list[Fault],
        *,
        seed: int = 0,
        methods: set[str] | None = None,
        path: str | None = None,
    ) -> None:
        """Fail each matching request with probability `rate`, the fault drawn from `faults`."""
        with self._lock:
            self._random = _RandomFaults(
                rate, faults, random.Random(seed), methods, re.compile(path) if path else None
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()
            self._random = None

    def _pick_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule.fault
            r = self._random
            if (
                r is not None
                and (r.methods is None or method in r.methods)
                and (r.path is None or r.path.search(path))
            ) and r.rng.random() < r.rate:
                return r.rng.choice(r.faults)
        return None

    # -- inspecting --------------------------------------------------------------------------

    def followed_playlists(self, user: str | None = None) -> list[FakePlaylist]:
        user = user or self.user_id
        with self._lock:
            found = [p for p in self.playlists.values() if user in p.followers]
        return sorted(found, key=lambda p: -p.created)

    def playlists_named(self, name: str) -> list[FakePlaylist]:
        return [p for p in self.followed_playlists() if p.name == name]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        pattern = re.compile(path) if path else None
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method)
                and (pattern is None or pattern.search(r.path))
            )

    # -- serving -----------------------------------------------------------------------------

    def _new_playlist(self, name: str, description: str, public: bool, owner: str) -> FakePlaylist:
        self._created += 1
        pid = _id_for(f"playlist:{self._created}:{name}")
        playlist = FakePlaylist(
            id=pid,
            name=name,
            description=description,
            public=public,
            owner=owner,
            followers={owner},
            created=self._created,
        )
        self.playlists[pid] = playlist
        return playlist

    def _page(
        self, items: list[Any], query: dict[str, str], path: str, max_limit: int, default_limit: int
    ) -> dict[str, Any]:
        try:
            limit = int(query.get("limit", default_limit))
            offset = int(query.get("offset", 0))
        except ValueError:
            raise _ApiError(400, "Invalid limit or offset") from None
        if not 1 <= limit <= max_limit or offset < 0:
            raise _ApiError(400, "Invalid limit")
        chunk = items[offset : offset + limit]
        nxt = None
        if offset + limit < len(items):
            rest = {k: v for k, v in query.items() if k not in ("offset", "limit")}
            nxt = f"{self.api_url}{path}?{urlencode({**rest, 'offset': offset + limit, 'limit': limit})}"
        return {"items": chunk, "total": len(items), "limit": limit, "offset": offset, "next": nxt}

    def _user_for(self, headers: Any) -> str:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise _ApiError(401, "No token provided")
        known = self._access.get(auth[len("Bearer ") :])
        if known is None:
            raise _ApiError(401, "Invalid access token")
        user, expired = known
        if expired:
            raise _ApiError(401, "The access token expired")
        if not self.allowlisted:
            raise _ApiError(
                403,
                "Check settings on developer.spotify.com/dashboard, the user may not be registered.",
            )
        return user

    def _playlist(self, pid: str) -> FakePlaylist:
        playlist = self.playlists.get(pid)
        if playlist is None:
            raise _ApiError(404, "Resource not found")
        return playlist

    def _uris(self, body: Any) -> list[str]:
        uris = body.get("uris") if isinstance(body, dict) else None
        if not isinstance(uris, list):
            raise _ApiError(400, "Missing uris")
        if len(uris) > 100:
            raise _ApiError(400, "You can add a maximum of 100 tracks per request.")
        for uri in uris:
            if not isinstance(uri, str) or not _URI.match(uri):
                raise _ApiError(400, f"Invalid track uri: {uri}")
        return uris

    def _track_json(self, uri: str) -> dict[str, Any]:
        tid = uri.rsplit(":", 1)[-1]
        track = self.tracks.get(tid)
        return (
            track.as_json()
            if track
            else {"id": tid, "uri": uri, "name": None, "type": "track", "artists": []}
        )

    def _api(
        self, method: str, path: str, query: dict[str, str], body: Any, headers: Any
    ) -> tuple[int, Any]:
        """(status, JSON) for an API request; `_ApiError` for an error answer. Holds the lock."""
        user = self._user_for(headers)
        parts = [p for p in path.split("/") if p]
        if parts == ["me"] and method == "GET":
            return 200, {
                "id": user,
                "display_name": self.display_name,
                "product": "premium",
                "type": "user",
            }
        if parts == ["me", "playlists"]:
            if method == "GET":
                followed = [p.as_json(self.api_url) for p in self.followed_playlists(user)]
                return 200, self._page(followed, query, "me/playlists", 50, 20)
            if method == "POST":
                name = body.get("name") if isinstance(body, dict) else None
                if not isinstance(name, str) or not name:
                    raise _ApiError(400, "Missing required field: name")
                description = str(body.get("description") or "")
                if len(name) > 100 or len(description) > 300:
                    raise _ApiError(400, "Name or description too long")
                playlist = self._new_playlist(
                    name, description, bool(body.get("public", True)), user
                )
                return 201, playlist.as_json(self.api_url)
        if parts == ["search"] and method == "GET":
            if query.get("type") != "track":
                raise _ApiError(400, "Unsupported type")
            found = [t.as_json() for t in self.tracks.values() if _matches(t, query.get("q", ""))]
            page = self._page(found, query, "search", 10, 10)
            return 200, {"tracks": page}
        if len(parts) == 2 and parts[0] == "tracks" and method == "GET":
            track = self.tracks.get(parts[1])
            if track is None:
                raise _ApiError(404, "Resource not found")
            return 200, track.as_json()
        if len(parts) >= 2 and parts[0] == "playlists":
            playlist = self._playlist(parts[1])
            rest = parts[2:]
            if not rest:
                if method == "GET":
                    return 200, playlist.as_json(self.api_url)
                if method == "PUT":
                    if playlist.owner != user:
                        raise _ApiError(403, "You cannot change a playlist you do not own.")
                    if not isinstance(body, dict):
                        raise _ApiError(400, "Invalid body")
                    name = body.get("name", playlist.name)
                    description = body.get("description", playlist.description)
                    if len(name) > 100 or len(description) > 300:
                        raise _ApiError(400, "Name or description too long")
                    playlist.name, playlist.description = name, description
                    playlist.public = bool(body.get("public", playlist.public))
                    return 200, None
            if rest == ["items"]:
                if method == "GET":
                    entries = [
                        {"added_at": "2026-01-01T00:00:00Z", "item": self._track_json(u)}
                        for u in playlist.items
                    ]
                    return 200, self._page(
                        entries, query, f"playlists/{playlist.id}/items", 100, 100
                    )
                if method in ("PUT", "POST"):
                    if playlist.owner != user:
                        raise _ApiError(403, "You cannot change a playlist you do not own.")
                    uris = self._uris(body)
                    if method == "PUT":
                        playlist.items = list(uris)
                    else:
                        position = body.get("position")
                        at = len(playlist.items) if position is None else int(position)
                        playlist.items[at:at] = uris
                    playlist.snapshot += 1
                    return 201 if method == "POST" else 200, {"snapshot_id": str(playlist.snapshot)}
            if rest == ["followers"]:
                if method == "DELETE":
                    playlist.followers.discard(user)
                    return 200, None
                if method == "PUT":
                    playlist.followers.add(user)
                    return 200, None
            if rest == ["followers", "contains"] and method == "GET":
                ids = [i for i in query.get("ids", "").split(",") if i] or [user]
                return 200, [i in playlist.followers for i in ids]
        raise _ApiError(404, "Service not found")

    def _token(self, body: dict[str, str], headers: Any) -> tuple[int, Any]:
        auth = headers.get("Authorization", "")
        try:
            cid, secret = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":", 1)
        except (ValueError, UnicodeDecodeError):
            cid, secret = body.get("client_id", ""), body.get("client_secret", "")
        if cid != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "Invalid client"}
        grant = body.get("grant_type")
        if grant == "authorization_code":
            code = body.get("code", "")
            known = self._codes.pop(code, None)
            if known is None:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid authorization code",
                }
            if known[0] != body.get("redirect_uri"):
                return 400, {"error": "invalid_grant", "error_description": "Invalid redirect URI"}
            info = self.issue_token(known[1])
            return 200, {
                k: info[k]
                for k in ("access_token", "token_type", "expires_in", "refresh_token", "scope")
            }
        if grant == "refresh_token":
            refresh = body.get("refresh_token", "")
            if refresh not in self._refresh or refresh in self._revoked:
                return 400, {"error": "invalid_grant", "error_description": "Refresh token revoked"}
            access = "A" + secrets.token_urlsafe(24)
            self._access[access] = (self._refresh[refresh], False)
            return 200, {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "",
            }
        return 400, {"error": "unsupported_grant_type", "error_description": str(grant)}

    def serve(self, h: _Handler) -> None:
        method = h.command
        url = urlsplit(h.path)
        path = url.path
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        fault = self._pick_fault(method, path)
        if fault is not None:
            with self._lock:
                self.faults_injected[fault.label] += 1
        if fault is not None and not fault.after:
            self._spoil(h, method, path, fault)
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path.startswith("/accounts/"):
            status, payload, extra = self._serve_accounts(method, path, query, raw, h.headers)
        elif path.startswith("/v1/"):
            with self._lock:
                try:
                    body = json.loads(raw) if raw else None
                    status, payload = self._api(method, path[len("/v1") :], query, body, h.headers)
                    extra = {}
                except json.JSONDecodeError:
                    status, payload, extra = (
                        400,
                        {"error": {"status": 400, "message": "Invalid JSON"}},
                        {},
                    )
                except _ApiError as exc:
                    err: dict[str, Any] = {"status": exc.status, "message": exc.message}
                    if exc.reason:
                        err["reason"] = exc.reason
                    status, payload, extra = exc.status, {"error": err}, exc.headers
        else:
            status, payload, extra = (
                404,
                {"error": {"status": 404, "message": "Service not found"}},
                {},
            )
        if fault is not None:  # an `after` fault: the request took effect
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            else:
                self._spoil(h, method, path, fault)
                return
        self._record(method, path, status, fault)
        h.reply(status, payload, extra)

    def _serve_accounts(
        self, method: str, path: str, query: dict[str, str], raw: bytes, headers: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "/accounts/authorize" and method == "GET":
            location = self.authorize(f"{self.accounts_url}authorize?{urlencode(query)}")
            return 302, None, {"Location": location}
        if path == "/accounts/api/token" and method == "POST":
            form = dict(parse_qsl(raw.decode()))
            with self._lock:
                status, payload = self._token(form, headers)
            return status, payload, {}
        return 404, {"error": "not_found"}, {}

    def _spoil(self, h: _Handler, method: str, path: str, fault: Fault) -> None:
        if fault.kind == "drop":
            self._record(method, path, None, fault)
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(2)
            return
        if fault.kind == "delay":
            time.sleep(fault.seconds)
            self._record(method, path, 503, fault)
            h.reply(503, {"error": {"status": 503, "message": "Service unavailable"}}, {})
            return
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        err: dict[str, Any] = {"status": fault.status, "message": "injected fault"}
        if fault.reason:
            err["reason"] = fault.reason
        self._record(method, path, fault.status, fault)
        h.reply(fault.status, {"error": err}, headers)

    def _record(self, method: str, path: str, status: int | None, fault: Fault | None) -> None:
        with self._lock:
            self.requests.append(
                RequestRecord(method, path, status, fault.label if fault else None)
            )


def _matches(track: FakeTrack, q: str) -> bool:
    """Spotify's query syntax, as far as songnet uses it: track:"…" artist:"…" and free words."""
    fields = dict(re.findall(r'(\w+):"([^"]*)"', q))
    free = re.sub(r'\w+:"[^"]*"', " ", q).split()
    name, artists = normalise(track.name), [normalise(a) for a in track.artists]
    if "track" in fields and normalise(fields["track"]) not in name:
        return False
    if "artist" in fields and not any(normalise(fields["artist"]) in a for a in artists):
        return False
    haystack = " ".join([name, *artists])
    return all(normalise(w) in haystack for w in free)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that gave up (timeouts) make broken pipes; they are expected


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSpotify
    protocol_version = "HTTP/1.0"

    def _dispatch(self) -> None:
        self.fake.serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch  # noqa: N815

    def reply(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up waiting

    def log_message(self, *_args: Any) -> None:
        pass


def make_client(
    fake: FakeSpotify,
    data_dir: Path,
    *,
    engine: Any = None,
    seed: int = 0,
    sign_in: bool = True,
    **overrides: Any,
) -> tuple[SpotifyClient, RecordingSleeper]:
    """A signed-in client for `fake` whose waits are recorded, never slept."""
    settings = fake.settings(data_dir, **overrides)
    if sign_in:
        fake.sign_in(settings)
    sleeper = RecordingSleeper()
    client = client_from_settings(
        settings, engine, sleep=sleeper, clock=sleeper.clock, rng=random.Random(seed)
    )
    # The fake is on 127.0.0.1: skip requests' per-call proxy and netrc lookups in the environment.
    client.session.trust_env = False
    return client, sleeper


@pytest.fixture
def fresh_logging() -> Iterator[None]:
    """Logging on the real stderr for the test. Any earlier `CliRunner.invoke` left structlog
    writing to a stream it has closed (the CLI's callback configures logging on the stderr it
    was given), and the next log line would fail."""
    configure_logging("auto", "info")
    yield
    configure_logging("auto", "info")


@pytest.fixture
def fake_spotify() -> Iterator[FakeSpotify]:
    """A running `FakeSpotify`, stopped after the test."""
    with FakeSpotify() as fake:
        yield fake
