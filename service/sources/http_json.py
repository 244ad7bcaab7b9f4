"""A thin JSON-over-HTTP client for the history services, with retries and an injected sleep.

Why not liblistenbrainz / pylast: liblistenbrainz waits out rate limits by itself (its README:
"handles ratelimits automatically"), a sleep that neither a test nor a shutdown can cut
short; pylast adds its own HTTP stack and network objects for two GET calls. A few lines on
`requests` + `tenacity` (both already dependencies) keep the API root a setting, every wait
injectable, and the error classes ours. (Judged from their documentation, not their code.)

    SourceError            a pull failed
    ├── SourceUnavailable  5xx, timeout, refused or dropped connection, unreadable JSON:
    │   │                  retried with backoff, then the pull ends and is tried next time
    │   └── SourceRateLimited  the service asked for a wait (`retry_after` seconds)
    └── SourceRefused      the account is missing or private, or the token/key is wrong:
                           retrying cannot help; `songnet status` shows what to fix
"""

# Names say what happened, as in service/spotify/errors.py.
# ruff: noqa: N818

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import structlog
import tenacity

log = structlog.get_logger(__name__)


class SourceError(Exception):
    hint = "songnet pulls again at the next poll"


class SourceUnavailable(SourceError):
    pass


class SourceRateLimited(SourceUnavailable):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceRefused(SourceError):
    hint = "check the user name and token/API key settings of this source"


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 5  # per request, the first included
    initial_backoff: float = 1.0
    cap_seconds: float = 120.0  # the longest single wait


@dataclass(frozen=True)
class Answer:
    body: Any
    headers: Mapping[str, str]


class JsonApi:
    """GET requests against one API root; `classify` maps a service's error bodies."""

    def __init__(
        self,
        root: str,
        *,
        name: str,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        retry: Retry = Retry(),
        sleep: Callable[[float], None] = time.sleep,
        classify: Callable[[int, Any, Mapping[str, str]], SourceError | None] | None = None,
    ) -> None:
        self.root = root.rstrip("/")
        self.name = name
        self.session = session or requests.Session()
        self.timeout = timeout
        self.retry = retry
        self.sleep = sleep
        self.classify = classify
        self.requests = 0

    def get(
        self, path: str, params: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> Answer:
        retrying = tenacity.Retrying(
            sleep=self.sleep,
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(SourceUnavailable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        answer: Answer = retrying(self._get_once, path, params, headers or {})
        return answer

    def _get_once(self, path: str, params: Mapping[str, Any], headers: Mapping[str, str]) -> Answer:
        self.requests += 1
        where = f"GET {path}"
        try:
            response = self.session.get(
                self.root + path, params=dict(params), headers=dict(headers), timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise SourceUnavailable(f"{where}: {type(exc).__name__}") from None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        found = (
            self.classify(response.status_code, body, response.headers) if self.classify else None
        )
        if found is not None:
            raise found
        if response.status_code == 429:
            raise SourceRateLimited(
                f"{where}: rate limited (HTTP 429)", _seconds(response.headers.get("Retry-After"))
            )
        if response.status_code >= 500:
            raise SourceUnavailable(f"{where}: server error (HTTP {response.status_code})")
        if response.status_code >= 400:
            raise SourceRefused(f"{where}: refused (HTTP {response.status_code}): {_message(body)}")
        if body is None:
            raise SourceUnavailable(f"{where}: the answer is not JSON")
        return Answer(body, response.headers)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, SourceRateLimited) and error.retry_after is not None:
            return min(self.retry.cap_seconds, float(error.retry_after))
        backoff = self.retry.initial_backoff * 2.0 ** (int(state.attempt_number) - 1)
        return min(self.retry.cap_seconds, backoff)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.info(
            "history source call failed, retrying",
            source=self.name,
            error=str(error),
            attempt=state.attempt_number,
            wait_seconds=round(state.upcoming_sleep, 2),
        )


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


def _message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:200]
    return ""
