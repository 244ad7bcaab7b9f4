"""How songnet waits and retries when Spotify fails transiently.

Exponential backoff with jitter; a 429's Retry-After is honoured as long as it is within the
cap (longer ones never reach here: `errors.error_for_response` turns them into `Deferred`).
Attempts and the total time are both bounded, and no single wait exceeds the cap. Waits go
through an injected `Sleeper`: in the service an `EventSleeper`, so that shutdown ends a
backoff at once; in tests one that records the waits and returns immediately.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import tenacity

from service.settings import Settings
from service.spotify.errors import Interrupted, RateLimited, TransientError

log = structlog.get_logger(__name__)


class Sleeper(Protocol):
    def __call__(self, seconds: float) -> None: ...


class EventSleeper:
    """Waits on a `threading.Event`; setting the event (shutdown) ends the wait with `Interrupted`."""

    def __init__(self, stop_event: threading.Event | None = None) -> None:
        self.stop_event = stop_event or threading.Event()

    def __call__(self, seconds: float) -> None:
        if self.stop_event.wait(max(0.0, seconds)):
            raise Interrupted(f"shutdown during a {seconds:.1f} s wait")


@dataclass(frozen=True)
class RetryPolicy:
    cap_seconds: float = 60.0  # longest single wait; a longer Retry-After defers instead
    max_attempts: int = 8  # per request, the first one included
    budget_seconds: float = 300.0  # per request: time spent waiting and trying
    initial_backoff: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            cap_seconds=settings.spotify_retry_cap_seconds,
            max_attempts=settings.spotify_max_attempts,
            budget_seconds=settings.spotify_retry_budget_seconds,
        )

    def wait_for(self, error: BaseException | None, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if isinstance(error, RateLimited) and error.retry_after is not None:
            # A little jitter so that several clients told the same moment do not return together.
            wait = error.retry_after + rng.uniform(0.0, min(1.0, 0.1 * error.retry_after))
        else:
            backoff = self.initial_backoff * 2 ** (attempt - 1)
            wait = backoff / 2 + rng.uniform(0.0, backoff / 2)  # "equal jitter"
        return min(self.cap_seconds, wait)


@dataclass
class RetryStats:
    """What the retry machinery did, for logs and the reliability figures."""

    attempts: int = 0  # HTTP requests made to the Web API and the accounts service
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # by error class name
    sleeps: list[float] = field(default_factory=list)
    deferrals: int = 0
    refreshes: int = 0

    @property
    def max_sleep(self) -> float:
        return max(self.sleeps, default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "retries": self.retries,
            "failures": dict(self.failures),
            "slept_seconds": round(sum(self.sleeps), 3),
            "max_sleep_seconds": round(self.max_sleep, 3),
            "deferrals": self.deferrals,
            "refreshes": self.refreshes,
        }


class _StopWhenSpent(tenacity.stop.stop_base):
    """Stop at `max_attempts`, or when the next wait would end past the time budget."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.started = clock()

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        if retry_state.attempt_number >= self.policy.max_attempts:
            return True
        return self.clock() - self.started + retry_state.upcoming_sleep > self.policy.budget_seconds


def retrying(
    policy: RetryPolicy,
    *,
    sleep: Sleeper,
    clock: Callable[[], float],
    rng: random.Random,
    stats: RetryStats,
    should_retry: Callable[[BaseException], bool] = lambda e: isinstance(e, TransientError),
    what: str = "",
) -> tenacity.Retrying:
    """A tenacity `Retrying` for one logical call under `policy`; the last error is re-raised."""

    def wait(rs: tenacity.RetryCallState) -> float:
        error = rs.outcome.exception() if rs.outcome else None
        return policy.wait_for(error, rs.attempt_number, rng)

    def before_sleep(rs: tenacity.RetryCallState) -> None:
        error = rs.outcome.exception() if rs.outcome else None
        stats.retries += 1
        stats.sleeps.append(rs.upcoming_sleep)
        log.info(
            "spotify call failed, retrying",
            call=what or getattr(error, "where", ""),
            error=str(error),
            error_type=type(error).__name__,
            attempt=rs.attempt_number,
            wait_seconds=round(rs.upcoming_sleep, 2),
        )

    return tenacity.Retrying(
        sleep=sleep,
        stop=_StopWhenSpent(policy, clock),
        wait=wait,
        retry=tenacity.retry_if_exception(should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )
