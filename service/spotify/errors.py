"""Every way a Spotify call can fail, as one exception tree.

    SpotifyError                 anything that went wrong talking to Spotify
    ├── TransientError           worth retrying after a wait (`request_sent`: may it have acted?)
    │   ├── RateLimited          429 with a Retry-After within the cap (`retry_after`)
    │   ├── ServerError          5xx
    │   ├── Timeout              no answer within the request timeout
    │   └── ConnectionDropped    refused, reset, or closed without an answer
    ├── Deferred                 do not wait here: come back at `retry_at` (epoch seconds)
    │   └── QuotaExceeded        429 whose body says QUOTA_EXCEEDED
    ├── AuthError                songnet cannot act for the listener: run `songnet auth`
    │   ├── NotConfigured        no client id / secret in the settings
    │   ├── NotSignedIn          no token file yet
    │   ├── SignInExpired        the refresh token was revoked or has expired (invalid_grant)
    │   ├── SignInFailed         the authorization-code exchange or its redirect was refused
    │   ├── AccessTokenRejected  401 even after a fresh access token
    │   └── ClientRejected       the accounts service refused the client id / secret
    └── PermanentError           another 4xx: retrying the same request cannot help
        ├── Forbidden            403 (in development mode: the listener is not allowlisted)
        ├── NotFound             404
        └── BadRequest           400 and the other 4xx

    Interrupted                  (not a SpotifyError) a wait was cut short by shutdown

`error_for_response` is the one place that turns an HTTP answer (Web API or accounts service)
into one of these; `error_for_exception` does the same for transport failures. Every error
carries `hint`, what the person running songnet should do. Messages hold the method, the path
and Spotify's own message, never a header, a token or a request body.
"""

# Names say what happened, as httpx's do (ConnectTimeout, ReadError), not "...Error".
# ruff: noqa: N818

from __future__ import annotations

import email.utils
import json
import time
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from service import playlist_sink as _sink

# A quota 429 without a usable Retry-After: Spotify's quota windows are hours long.
DEFAULT_QUOTA_WAIT_SECONDS = 3600.0

SIGN_IN_HINT = "run `songnet auth` to sign in to Spotify again"


class SpotifyError(Exception):
    """A Spotify call failed. `where` is "METHOD /path", `status` the HTTP status if any."""

    hint = "see the log for details"

    def __init__(self, message: str, *, where: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.status = status

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        code = f" (HTTP {self.status})" if self.status else ""
        return f"{prefix}{self.message}{code}"


class TransientError(SpotifyError):
    """Worth retrying after a wait. `request_sent` is False only when Spotify surely did not
    act on the request (rate limited, or the connection never opened), so a write can be
    retried without looking first."""

    hint = "Spotify is having a bad moment; songnet retries on its own"

    def __init__(
        self, message: str, *, where: str = "", status: int | None = None, request_sent: bool = True
    ) -> None:
        super().__init__(message, where=where, status=status)
        self.request_sent = request_sent


class RateLimited(TransientError):
    def __init__(self, message: str, *, where: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, where=where, status=429, request_sent=False)
        self.retry_after = retry_after


class ServerError(TransientError):
    pass


class Timeout(TransientError):
    pass


class ConnectionDropped(TransientError):
    pass


class Deferred(SpotifyError):
    """Spotify asked for a wait longer than songnet will sleep: try again at `retry_at`."""

    hint = "songnet will try again at the time given"

    def __init__(
        self, message: str, *, retry_at: float, where: str = "", status: int | None = 429
    ) -> None:
        super().__init__(message, where=where, status=status)
        self.retry_at = retry_at


class QuotaExceeded(Deferred):
    hint = "the app's Spotify quota is used up; songnet will try again at the time given"


class AuthError(SpotifyError):
    hint = SIGN_IN_HINT


class NotConfigured(AuthError):
    hint = (
        "set SONGNET_SPOTIFY_CLIENT_ID and SONGNET_SPOTIFY_CLIENT_SECRET "
        "(see docs/spotify-app.md), then run `songnet auth`"
    )


class NotSignedIn(AuthError):
    pass


class SignInExpired(AuthError):
    pass


class SignInFailed(AuthError):
    pass


class AccessTokenRejected(AuthError):
    pass


class ClientRejected(AuthError):
    hint = "check SONGNET_SPOTIFY_CLIENT_ID and SONGNET_SPOTIFY_CLIENT_SECRET against the app in Spotify's dashboard"


class PermanentError(SpotifyError):
    hint = "retrying will not help; see the message"


class Forbidden(PermanentError):
    hint = (
        "in development mode only allowlisted users may use the app: add the listener under "
        "User Management in Spotify's developer dashboard (see docs/spotify-app.md)"
    )


class NotFound(PermanentError):
    pass


class BadRequest(PermanentError):
    pass


# A wait cut short by shutdown: the sink seam's exception (any sink may raise it).
Interrupted = _sink.Interrupted


def where_of(method: str, url: str) -> str:
    """ "METHOD /path" of a request, without its query string (search terms stay out of logs)."""
    return f"{method.upper()} {urlsplit(url).path}"


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After as seconds: Spotify sends an integer; an HTTP date is accepted too."""
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    raw = str(raw).strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _details(response: requests.Response) -> tuple[str, str | None, str | None]:
    """(message, reason, oauth_error) from an error body, whichever of Spotify's shapes it has.

    The Web API answers {"error": {"status", "message", "reason"?}}; the accounts service
    answers {"error": "invalid_grant", "error_description": "..."}.
    """
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        text = (response.text or "").strip()
        return (text[:200] or response.reason or "no message"), None, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return (
                str(err.get("message") or response.reason or "no message"),
                err.get("reason") or body.get("reason"),
                None,
            )
        if isinstance(err, str):
            return str(body.get("error_description") or err), None, err
    return (response.reason or "no message"), None, None


def error_for_response(
    response: requests.Response, *, retry_cap: float, now: float
) -> SpotifyError | None:
    """The error an HTTP answer stands for, or None for a success.

    A 429 becomes `QuotaExceeded` when its body says QUOTA_EXCEEDED, `Deferred` when its
    Retry-After is over `retry_cap` seconds (`now` + that wait is when to come back), and
    `RateLimited` otherwise.
    """
    status = response.status_code
    if status < 400:
        return None
    where = where_of(response.request.method or "GET", response.url) if response.request else ""
    message, reason, oauth_error = _details(response)
    if status == 429:
        wait = retry_after_seconds(response.headers)
        if reason == "QUOTA_EXCEEDED":
            return QuotaExceeded(
                f"quota exceeded: {message}",
                where=where,
                retry_at=now + (wait if wait is not None else DEFAULT_QUOTA_WAIT_SECONDS),
            )
        if wait is not None and wait > retry_cap:
            return Deferred(
                f"rate limited for {wait:.0f} s, over the {retry_cap:.0f} s cap: {message}",
                where=where,
                retry_at=now + wait,
            )
        return RateLimited(f"rate limited: {message}", where=where, retry_after=wait)
    if status >= 500:
        return ServerError(message, where=where, status=status)
    if oauth_error is not None:
        # The accounts service (token endpoint).
        if oauth_error == "invalid_grant":
            return SignInExpired(
                f"Spotify refused the sign-in grant: {message}", where=where, status=status
            )
        if oauth_error in ("invalid_client", "unauthorized_client"):
            return ClientRejected(
                f"Spotify refused the app's credentials: {message}", where=where, status=status
            )
        return SignInFailed(
            f"Spotify's accounts service refused: {message}", where=where, status=status
        )
    if status == 401:
        return AccessTokenRejected(message, where=where, status=status)
    if status == 403:
        return Forbidden(message, where=where, status=status)
    if status == 404:
        return NotFound(message, where=where, status=status)
    return BadRequest(message, where=where, status=status)


def error_for_exception(exc: requests.RequestException, *, where: str) -> TransientError:
    """A transport failure (no HTTP answer) as a transient error; `request_sent` is False only
    when the connection was never made."""
    if isinstance(exc, requests.ConnectTimeout):
        return Timeout("could not connect within the timeout", where=where, request_sent=False)
    if isinstance(exc, requests.Timeout):
        return Timeout("no answer within the timeout", where=where)
    if isinstance(exc, requests.ConnectionError) and _never_connected(exc):
        return ConnectionDropped("could not connect", where=where, request_sent=False)
    return ConnectionDropped(f"connection failed: {type(_root_cause(exc)).__name__}", where=where)


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while True:
        inner = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if not isinstance(inner, BaseException) or inner is seen:
            return seen
        seen = inner


def _never_connected(exc: requests.ConnectionError) -> bool:
    probe: BaseException | None = exc
    for _ in range(6):
        if probe is None:
            return False
        if isinstance(probe, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            return True
        nxt = getattr(probe, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = probe.__cause__ or probe.__context__
        probe = nxt
    return False
