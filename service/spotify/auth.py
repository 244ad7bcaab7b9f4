"""Signing in to Spotify and keeping the token fresh.

The authorization-code flow, done so that it works on a headless server: `begin_sign_in`
returns the URL to open (and keeps the `state` it issued in a 0600 file beside the token),
`complete_sign_in` takes the URL the browser was sent back to, checks the state and trades
the code for a token. spotipy's `SpotifyOAuth` does the OAuth exchanges; `TokenFile`, a
spotipy cache handler, keeps the token in `DATA_DIR/spotify_token.json` with mode 0600.

`TokenManager` hands out access tokens to the client, refreshing them when they are about to
expire or after a 401. It re-reads the token file whenever the file changes, so a daemon picks
up a new sign-in (`songnet auth` run beside it) without a restart. A refused refresh
(revoked or expired grant) is logged and recorded in the `kv` table under
`SIGN_IN_REQUIRED_KEY`, which `status` reports as "run `songnet auth`", until a sign-in works.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests
import structlog
from spotipy.cache_handler import CacheHandler
from spotipy.exceptions import SpotifyOauthError
from spotipy.oauth2 import SpotifyOAuth
from sqlalchemy import Engine
from sqlmodel import Session

from service import tables
from service.logging import register_secret
from service.settings import Settings
from service.spotify.errors import (
    AuthError,
    NotConfigured,
    NotSignedIn,
    SignInExpired,
    SignInFailed,
    SpotifyError,
    error_for_exception,
    error_for_response,
    where_of,
)

log = structlog.get_logger(__name__)

# spotipy logs request headers (the client secret, in Basic auth) at debug level: keep its
# loggers quiet whatever the root logger is set to.
logging.getLogger("spotipy").setLevel(logging.WARNING)

TOKEN_FILENAME = "spotify_token.json"
STATE_FILENAME = "spotify_auth_state.json"
SIGN_IN_REQUIRED_KEY = "spotify_sign_in_required"

# What songnet does with each scope is in docs/spotify-app.md.
BASE_SCOPES = ("playlist-modify-private", "playlist-modify-public", "playlist-read-private")
RECENT_PLAYS_SCOPE = "user-read-recently-played"

# Refresh this long before the access token's stated expiry (spotipy uses the same margin).
EXPIRY_MARGIN_SECONDS = 60


def scopes_for(settings: Settings) -> list[str]:
    """The scopes to ask for: recent plays only when a playlist excludes recently heard tracks."""
    scopes = list(BASE_SCOPES)
    if any(p.exclude_recent_days > 0 for p in settings.playlists):
        scopes.append(RECENT_PLAYS_SCOPE)
    return scopes


def token_path(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILENAME


def state_path(settings: Settings) -> Path:
    return settings.data_dir / STATE_FILENAME


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to `path` atomically, readable by the owner only (0600 from creation on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o600)  # an existing tmp file keeps its old mode through O_CREAT
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class TokenFile(CacheHandler):  # type: ignore[misc]  # spotipy is untyped
    """spotipy cache handler: the token as JSON in a 0600 file, re-read whenever it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) last read
        self._token: dict[str, Any] | None = None

    def get_cached_token(self) -> dict[str, Any] | None:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._seen, self._token = None, None
                return None
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key != self._seen:
                try:
                    token = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    log.error(
                        "spotify token file unreadable",
                        path=str(self.path),
                        error=type(exc).__name__,
                        action=f"remove it and {SIGN_IN_REQUIRED_HINT}",
                    )
                    token = None
                self._token = token if isinstance(token, dict) else None
                self._seen = key
                _register_token_secrets(self._token)
            return dict(self._token) if self._token else None

    def save_token_to_cache(self, token_info: dict[str, Any]) -> None:
        _register_token_secrets(token_info)
        with self._lock:
            _write_private(self.path, token_info)
            self._seen = None  # read back on next use


SIGN_IN_REQUIRED_HINT = "run `songnet auth`"


def _register_token_secrets(token: dict[str, Any] | None) -> None:
    if token:
        register_secret(token.get("access_token"))
        register_secret(token.get("refresh_token"))


def accounts_session(settings: Settings) -> requests.Session:
    """A plain session (no urllib3 retries) whose answers from the accounts service become
    songnet's errors before spotipy sees them."""
    session = requests.Session()

    def raise_mapped(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        error = error_for_response(
            response, retry_cap=settings.spotify_retry_cap_seconds, now=time.time()
        )
        if error is not None:
            raise error

    session.hooks["response"].append(raise_mapped)
    return session


def oauth_for(settings: Settings, cache: CacheHandler, *, state: str | None = None) -> SpotifyOAuth:
    """spotipy's OAuth helper, pointed at the configured accounts service."""
    if not settings.spotify_configured:
        raise NotConfigured("Spotify is not configured")
    register_secret(settings.spotify_client_secret)
    oauth = SpotifyOAuth(
        client_id=settings.spotify_client_id,
        client_secret=settings.spotify_client_secret,
        redirect_uri=settings.spotify_redirect_uri,
        state=state,
        scope=scopes_for(settings),
        cache_handler=cache,
        requests_session=accounts_session(settings),
        requests_timeout=settings.spotify_timeout_seconds,
        open_browser=False,
    )
    base = settings.spotify_accounts_url.rstrip("/") + "/"
    oauth.OAUTH_AUTHORIZE_URL = urljoin(base, "authorize")
    oauth.OAUTH_TOKEN_URL = urljoin(base, "api/token")
    return oauth


def _token_call(fn: Callable[[], Any], *, token_url: str) -> Any:
    """Run a spotipy token exchange, turning what escapes it into songnet's errors."""
    try:
        return fn()
    except SpotifyError:
        raise
    except requests.RequestException as exc:
        raise error_for_exception(exc, where=where_of("POST", token_url)) from None
    except SpotifyOauthError as exc:
        # Only reached for answers the hook let through (it maps every 4xx/5xx).
        raise SignInFailed(
            f"Spotify's accounts service: {exc.error or 'unexpected answer'}"
        ) from None
    except (KeyError, ValueError) as exc:
        raise SignInFailed(
            f"unexpected answer from Spotify's accounts service ({type(exc).__name__})"
        ) from None


# -- sign-in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInRequest:
    url: str  # open this in a browser
    state: str


def begin_sign_in(settings: Settings) -> SignInRequest:
    """The authorization URL to open; the `state` it carries is kept beside the token file."""
    state = secrets.token_urlsafe(24)
    oauth = oauth_for(settings, TokenFile(token_path(settings)), state=state)
    _write_private(
        state_path(settings),
        {
            "state": state,
            "redirect_uri": settings.spotify_redirect_uri,
            "created_at": int(time.time()),
        },
    )
    return SignInRequest(url=oauth.get_authorize_url(), state=state)


def _pending_state(settings: Settings) -> str | None:
    try:
        data = json.loads(state_path(settings).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    state = data.get("state") if isinstance(data, dict) else None
    return state if isinstance(state, str) else None


def complete_sign_in(
    settings: Settings, redirected_url: str, engine: Engine | None = None
) -> dict[str, Any]:
    """Trade the code in the URL the browser was sent back to for a token, and save it.

    The URL's `state` must match the one `begin_sign_in` issued, if it issued one. Returns the
    token info (never print it).
    """
    form = dict(parse_qsl(urlsplit(redirected_url.strip()).query))
    if "error" in form:
        raise SignInFailed(f"Spotify reports that sign-in failed: {form['error']}")
    code = form.get("code")
    if not code:
        raise SignInFailed(
            "that URL holds no `code`: paste the whole URL the browser was sent back to"
        )
    register_secret(code)
    expected = _pending_state(settings)
    if expected is not None and form.get("state") != expected:
        raise SignInFailed(
            "the URL's `state` does not match the sign-in songnet started; run `songnet auth` again and use the new URL"
        )
    cache = TokenFile(token_path(settings))
    oauth = oauth_for(settings, cache, state=expected)
    _token_call(
        lambda: oauth.get_access_token(code, as_dict=False, check_cache=False),
        token_url=oauth.OAUTH_TOKEN_URL,
    )
    token = cache.get_cached_token()
    if not token or not token.get("refresh_token"):
        raise SignInFailed("Spotify's answer held no refresh token")
    with contextlib.suppress(FileNotFoundError):
        state_path(settings).unlink()
    if engine is not None:
        clear_sign_in_required(engine)
    log.info(
        "signed in to Spotify", token_file=str(token_path(settings)), scopes=token.get("scope")
    )
    return token


class RedirectListener:
    """Waits on the loopback redirect port for the browser to come back with the code."""

    def __init__(self, redirect_uri: str) -> None:
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1") or not parts.port:
            raise ValueError(
                "listening needs a loopback redirect URI such as http://127.0.0.1:8888/callback"
            )
        self.path = parts.path or "/"
        self.received: str | None = None
        self.done = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlsplit(self.path).path != listener.path:
                    self.send_error(404)
                    return
                listener.received = f"{redirect_uri.split('?')[0]}?{urlsplit(self.path).query}"
                body = b"songnet: sign-in received, you can close this tab.\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                listener.done.set()

            def log_message(self, *_args: Any) -> None:  # the query holds the code
                pass

        self.server = HTTPServer((parts.hostname, parts.port), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="spotify-redirect", daemon=True
        )

    def __enter__(self) -> RedirectListener:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the sign-in-required flag ---------------------------------------------------------------


def sign_in_required(engine: Engine) -> str | None:
    """Why songnet needs a new sign-in (for `status`), or None when it does not."""
    with Session(engine) as session:
        row = session.get(tables.KeyValue, SIGN_IN_REQUIRED_KEY)
        if row is None:
            return None
        try:
            reason = json.loads(row.value).get("reason", "")
        except (ValueError, AttributeError):
            reason = row.value
        return f"{reason}; {SIGN_IN_REQUIRED_HINT}" if reason else SIGN_IN_REQUIRED_HINT


def _set_sign_in_required(engine: Engine, reason: str) -> None:
    with Session(engine) as session:
        row = session.get(tables.KeyValue, SIGN_IN_REQUIRED_KEY)
        value = json.dumps({"reason": reason, "since": int(time.time())})
        if row is None:
            session.add(tables.KeyValue(key=SIGN_IN_REQUIRED_KEY, value=value))
        elif json.loads(row.value).get("reason") != reason:
            row.value = value
            session.add(row)
        session.commit()


def clear_sign_in_required(engine: Engine) -> None:
    with Session(engine) as session:
        row = session.get(tables.KeyValue, SIGN_IN_REQUIRED_KEY)
        if row is not None:
            session.delete(row)
            session.commit()


# -- access tokens for the client ------------------------------------------------------------


class TokenManager:
    """Access tokens for the Web API client, from the token file, refreshed as needed."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = TokenFile(token_path(settings))
        self.oauth = oauth_for(settings, self.cache)
        self.engine = engine
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._refused: str | None = None  # a refresh token Spotify refused; never sent again
        # True while the sign-in-required flag may be set; the first token that works clears it
        # (also one left by an earlier process).
        self._flagged = engine is not None
        self.refreshes = 0

    def _current(self) -> dict[str, Any]:
        token = self.cache.get_cached_token()
        if not token or not token.get("access_token") or not token.get("refresh_token"):
            raise NotSignedIn("songnet is not signed in to Spotify")
        if token["refresh_token"] == self._refused:
            raise SignInExpired("Spotify refused songnet's sign-in (revoked or expired)")
        return token

    def access_token(self) -> str:
        with self._lock:
            token = self._current()
            if float(token.get("expires_at", 0)) - self.wall_clock() < EXPIRY_MARGIN_SECONDS:
                token = self._refresh(token)
            elif self._flagged and self.engine is not None:
                # A new token file appeared after a refused refresh: the listener signed in again.
                clear_sign_in_required(self.engine)
                self._flagged = False
            return str(token["access_token"])

    def refresh(self, rejected: str | None = None) -> str:
        """A new access token (after a 401 for `rejected`): unless the file already holds a
        different one, e.g. written by another process meanwhile."""
        with self._lock:
            token = self._current()
            if rejected is not None and token["access_token"] != rejected:
                return str(token["access_token"])
            return str(self._refresh(token)["access_token"])

    def _refresh(self, token: dict[str, Any]) -> dict[str, Any]:
        refresh_token = str(token["refresh_token"])
        self.refreshes += 1
        try:
            fresh = _token_call(
                lambda: self.oauth.refresh_access_token(refresh_token),
                token_url=self.oauth.OAUTH_TOKEN_URL,
            )
        except SignInExpired as exc:
            self._refused = refresh_token
            self._flag(str(exc.message))
            raise
        except AuthError as exc:
            self._flag(str(exc.message))
            raise
        if self._flagged and self.engine is not None:
            clear_sign_in_required(self.engine)
            self._flagged = False
        return dict(fresh)

    def _flag(self, reason: str) -> None:
        log.error("spotify sign-in refused", reason=reason, action=SIGN_IN_REQUIRED_HINT)
        if self.engine is not None:
            _set_sign_in_required(self.engine, reason)
            self._flagged = True
