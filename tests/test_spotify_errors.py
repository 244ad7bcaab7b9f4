"""The one mapping from Spotify's answers (and transport failures) onto the exception tree."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import requests

from service.spotify import errors as e
from tests.fake_spotify import FakeSpotify, Fault

# Logs go to a live stderr whatever CLI test ran before.
pytestmark = pytest.mark.usefixtures("fresh_logging")

NOW = 1_700_000_000.0


def answer(
    status: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
    path: str = "/v1/me/playlists",
) -> requests.Response:
    url = f"https://api.spotify.com{path}?q=secret-ish"
    r = requests.Response()
    r.status_code = status
    r._content = (
        b""
        if body is None
        else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    )
    r.headers.update(headers or {})
    r.url = url
    r.reason = "Reason"
    r.request = requests.Request(method, url).prepare()
    return r


def api_error(status: int, message: str = "msg", reason: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"status": status, "message": message}
    if reason:
        err["reason"] = reason
    return {"error": err}


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (200, {"id": "x"}, {}, None),
        (201, None, {}, None),
        (429, api_error(429), {"Retry-After": "3"}, e.RateLimited),
        (429, api_error(429), {}, e.RateLimited),
        (429, api_error(429), {"Retry-After": "3600"}, e.Deferred),
        (429, api_error(429, reason="QUOTA_EXCEEDED"), {"Retry-After": "5"}, e.QuotaExceeded),
        (500, api_error(500), {}, e.ServerError),
        (502, "<html>Bad gateway</html>", {}, e.ServerError),
        (503, None, {}, e.ServerError),
        (401, api_error(401, "The access token expired"), {}, e.AccessTokenRejected),
        (403, api_error(403, "the user may not be registered"), {}, e.Forbidden),
        (404, api_error(404), {}, e.NotFound),
        (400, api_error(400, "Invalid limit"), {}, e.BadRequest),
        (413, None, {}, e.BadRequest),
        (
            400,
            {"error": "invalid_grant", "error_description": "Refresh token revoked"},
            {},
            e.SignInExpired,
        ),
        (
            401,
            {"error": "invalid_client", "error_description": "Invalid client"},
            {},
            e.ClientRejected,
        ),
        (400, {"error": "invalid_request", "error_description": "x"}, {}, e.SignInFailed),
    ],
)
def test_error_for_response_maps_every_kind(
    status: int, body: Any, headers: dict[str, str], expected: type[e.SpotifyError] | None
) -> None:
    error = e.error_for_response(answer(status, body, headers), retry_cap=60, now=NOW)
    if expected is None:
        assert error is None
        return
    assert type(error) is expected
    assert error.where == "POST /v1/me/playlists"  # the query string stays out of messages
    assert "secret-ish" not in str(error)
    assert error.hint


def test_tree_shape() -> None:
    for cls in (e.RateLimited, e.ServerError, e.Timeout, e.ConnectionDropped):
        assert issubclass(cls, e.TransientError)
    assert issubclass(e.QuotaExceeded, e.Deferred)
    for cls in (
        e.NotConfigured,
        e.NotSignedIn,
        e.SignInExpired,
        e.SignInFailed,
        e.AccessTokenRejected,
        e.ClientRejected,
    ):
        assert issubclass(cls, e.AuthError)
    for cls in (e.Forbidden, e.NotFound, e.BadRequest):
        assert issubclass(cls, e.PermanentError)
    assert not issubclass(e.Interrupted, e.SpotifyError)
    assert not issubclass(e.Deferred, e.TransientError)  # a deferral is never slept on


def test_retry_after_and_deferral_times() -> None:
    limited = e.error_for_response(
        answer(429, api_error(429), {"Retry-After": "7"}), retry_cap=60, now=NOW
    )
    assert isinstance(limited, e.RateLimited)
    assert limited.retry_after == 7 and limited.request_sent is False

    at_cap = e.error_for_response(
        answer(429, api_error(429), {"Retry-After": "60"}), retry_cap=60, now=NOW
    )
    assert isinstance(at_cap, e.RateLimited)

    deferred = e.error_for_response(
        answer(429, api_error(429), {"Retry-After": "20000"}), retry_cap=60, now=NOW
    )
    assert isinstance(deferred, e.Deferred) and not isinstance(deferred, e.QuotaExceeded)
    assert deferred.retry_at == NOW + 20000

    quota = e.error_for_response(
        answer(429, api_error(429, reason="QUOTA_EXCEEDED")), retry_cap=60, now=NOW
    )
    assert isinstance(quota, e.QuotaExceeded)
    assert quota.retry_at == NOW + e.DEFAULT_QUOTA_WAIT_SECONDS
    # A top-level reason (another shape seen in the wild) counts too.
    top = e.error_for_response(
        answer(429, {"error": {"status": 429}, "reason": "QUOTA_EXCEEDED"}), retry_cap=60, now=NOW
    )
    assert isinstance(top, e.QuotaExceeded)


def test_server_errors_may_have_acted() -> None:
    error = e.error_for_response(answer(502), retry_cap=60, now=NOW)
    assert isinstance(error, e.ServerError) and error.request_sent is True


def test_retry_after_parsing() -> None:
    assert e.retry_after_seconds({"Retry-After": "12"}) == 12
    assert e.retry_after_seconds({"Retry-After": " 1.5 "}) == 1.5
    assert e.retry_after_seconds({"Retry-After": "soon"}) is None
    assert e.retry_after_seconds({}) is None
    assert (
        e.retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    )  # in the past


def _get(url: str, timeout: float = 2.0) -> requests.Response:
    return requests.get(url, timeout=timeout)


def test_transport_failures_from_a_real_server(fake_spotify: FakeSpotify) -> None:
    url = fake_spotify.api_url + "me"
    fake_spotify.inject(Fault.dropped())
    with pytest.raises(requests.RequestException) as dropped:
        _get(url)
    error = e.error_for_exception(dropped.value, where="GET /v1/me")
    assert isinstance(error, e.ConnectionDropped) and error.request_sent is True

    fake_spotify.inject(Fault.delayed(0.5))
    with pytest.raises(requests.RequestException) as slow:
        _get(url, timeout=0.1)
    error = e.error_for_exception(slow.value, where="GET /v1/me")
    assert isinstance(error, e.Timeout) and error.request_sent is True

    # Nothing listens on a port we just closed: the request was never sent.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(requests.RequestException) as refused:
        _get(f"http://127.0.0.1:{port}/v1/me")
    error = e.error_for_exception(refused.value, where="GET /v1/me")
    assert isinstance(error, e.ConnectionDropped) and error.request_sent is False
