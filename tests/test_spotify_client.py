"""The client wrapper against the fake Web API: retries, deferrals, writes, tokens, timeouts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from service.spotify import errors as e
from service.spotify.auth import TokenFile, token_path
from service.spotify.client import client_from_settings
from service.spotify.retry import EventSleeper
from tests.fake_spotify import FakeSpotify, Fault, make_client

# Logs go to a live stderr whatever CLI test ran before.
pytestmark = pytest.mark.usefixtures("fresh_logging")


def test_transient_failures_are_retried_with_growing_jittered_backoff(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path)
    for fault in (
        Fault.server_error(500),
        Fault.server_error(502),
        Fault.server_error(503),
        Fault.dropped(),
    ):
        fake_spotify.inject(fault, path=r"/v1/me$")
    assert client.me()["id"] == "listener"
    assert fake_spotify.count("GET", r"/v1/me$") == 5
    assert len(sleeper.sleeps) == 4
    # Equal jitter: attempt n waits between b/2 and b, with b = 0.5 * 2**(n-1).
    for n, wait in enumerate(sleeper.sleeps, start=1):
        b = 0.5 * 2 ** (n - 1)
        assert b / 2 <= wait <= b
    assert client.stats.retries == 4
    assert client.stats.failures == {"ServerError": 3, "ConnectionDropped": 1}


def test_retry_after_within_the_cap_is_honoured(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path, spotify_retry_cap_seconds=30)
    fake_spotify.inject(Fault.rate_limited(7), path=r"/v1/me$")
    client.me()
    assert len(sleeper.sleeps) == 1
    assert 7 <= sleeper.sleeps[0] <= 7.7


def test_retry_after_over_the_cap_defers_without_sleeping(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path, spotify_retry_cap_seconds=30)
    fake_spotify.inject(Fault.rate_limited(20_000), path=r"/v1/me$")
    before = time.time()
    with pytest.raises(e.Deferred) as deferred:
        client.me()
    assert sleeper.sleeps == []
    assert before + 20_000 <= deferred.value.retry_at <= time.time() + 20_000
    assert fake_spotify.count("GET", r"/v1/me$") == 1


def test_quota_exceeded_defers(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path)
    fake_spotify.inject(Fault.quota(retry_after=5), path=r"/v1/me$")
    with pytest.raises(e.QuotaExceeded) as quota:
        client.me()
    assert sleeper.sleeps == []
    assert (
        quota.value.retry_at >= time.time() + 4
    )  # even a short Retry-After: quota is not slept on


def test_attempts_are_bounded(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path, spotify_max_attempts=4)
    fake_spotify.inject(Fault.server_error(503), path=r"/v1/me$", times=None)
    with pytest.raises(e.ServerError):
        client.me()
    assert fake_spotify.count("GET", r"/v1/me$") == 4
    assert len(sleeper.sleeps) == 3


def test_total_time_is_bounded_and_no_wait_exceeds_the_cap(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(
        fake_spotify,
        tmp_path,
        spotify_retry_cap_seconds=5,
        spotify_retry_budget_seconds=12,
        spotify_max_attempts=50,
    )
    fake_spotify.inject(Fault.rate_limited(5), path=r"/v1/me$", times=None)
    with pytest.raises(e.RateLimited):
        client.me()
    assert sum(sleeper.sleeps) <= 12
    assert max(sleeper.sleeps) <= 5
    assert fake_spotify.count("GET", r"/v1/me$") == len(sleeper.sleeps) + 1 == 3


def test_a_write_is_not_retried_after_a_lost_answer(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path)
    fake_spotify.inject(Fault.lost_response(), method="POST", path=r"/me/playlists$")
    with pytest.raises(e.ConnectionDropped) as lost:
        client.create_playlist("Weekly", "desc", False)
    assert lost.value.request_sent is True
    assert fake_spotify.count("POST", r"/me/playlists$") == 1
    assert [p.name for p in fake_spotify.followed_playlists()] == ["Weekly"]  # it was made
    assert sleeper.sleeps == []

    fake_spotify.inject(Fault.server_error(502, after=True), method="POST", path=r"/items$")
    playlist = fake_spotify.followed_playlists()[0]
    with pytest.raises(e.ServerError):
        client.add_items(playlist.id, ["spotify:track:" + "a" * 22])
    assert fake_spotify.count("POST", r"/items$") == 1
    assert playlist.items == ["spotify:track:" + "a" * 22]


def test_a_write_is_retried_when_spotify_surely_did_not_act(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path)
    fake_spotify.inject(Fault.rate_limited(1), method="POST", path=r"/me/playlists$")
    created = client.create_playlist("Weekly", "desc", False)
    assert fake_spotify.count("POST", r"/me/playlists$") == 2
    assert [p.id for p in fake_spotify.followed_playlists()] == [created["id"]]
    assert len(sleeper.sleeps) == 1


def test_an_expired_access_token_is_refreshed_once(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, _ = make_client(fake_spotify, tmp_path)
    path = token_path(fake_spotify.settings(tmp_path))
    old = TokenFile(path).get_cached_token()
    assert old is not None
    fake_spotify.expire_access_tokens()
    assert client.me()["id"] == "listener"
    new = TokenFile(path).get_cached_token()
    assert new is not None
    assert new["access_token"] != old["access_token"]
    assert new["refresh_token"] == old["refresh_token"]
    assert client.stats.refreshes == 1
    assert fake_spotify.count("POST", r"/api/token$") == 1
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_401_after_the_refresh_is_an_auth_error(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path)
    fake_spotify.inject(Fault.server_error(401), path=r"/v1/me$", times=None)
    with pytest.raises(e.AccessTokenRejected) as rejected:
        client.me()
    assert "songnet auth" in rejected.value.hint
    assert fake_spotify.count("GET", r"/v1/me$") == 2
    assert fake_spotify.count("POST", r"/api/token$") == 1
    assert sleeper.sleeps == []


def test_a_transient_token_endpoint_failure_is_retried(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path)
    fake_spotify.expire_access_tokens()
    fake_spotify.inject(Fault.server_error(503), path=r"/api/token$")
    assert client.me()["id"] == "listener"
    assert len(sleeper.sleeps) == 1
    assert fake_spotify.count("POST", r"/api/token$") == 2


def test_a_user_not_allowlisted_gets_forbidden_with_what_to_do(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path)
    fake_spotify.allowlisted = False
    with pytest.raises(e.Forbidden) as forbidden:
        client.me()
    assert "allowlisted" in forbidden.value.hint
    assert "may not be registered" in str(forbidden.value)
    assert sleeper.sleeps == [] and fake_spotify.count("GET", r"/v1/me$") == 1


def test_an_answer_slower_than_the_timeout_is_retried(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, sleeper = make_client(fake_spotify, tmp_path, spotify_timeout_seconds=0.2)
    fake_spotify.inject(Fault.delayed(0.6), path=r"/v1/me$")
    started = time.monotonic()
    assert client.me()["id"] == "listener"
    assert time.monotonic() - started < 0.6 + 0.5  # gave up at the timeout, not at the answer
    assert client.stats.failures == {"Timeout": 1}
    assert len(sleeper.sleeps) == 1


def test_pages_are_followed_through_absolute_next_links(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, _ = make_client(fake_spotify, tmp_path)
    for i in range(120):
        fake_spotify.create_playlist_directly(f"p{i}")
    names = [p["name"] for p in client.my_playlists()]
    assert sorted(names) == sorted(f"p{i}" for i in range(120))
    assert fake_spotify.count("GET", r"/me/playlists$") == 3  # 50 + 50 + 20


def test_the_token_is_never_sent_off_the_api_base(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    client, _ = make_client(fake_spotify, tmp_path)
    with pytest.raises(e.BadRequest, match="refusing"):
        client.request("GET", "http://127.0.0.1:9/elsewhere/v1/me")
    assert fake_spotify.requests == []


def test_sessions_have_no_urllib3_retries(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    client, _ = make_client(fake_spotify, tmp_path)
    assert client.session.get_adapter("https://api.spotify.com/").max_retries.total == 0
    oauth_session = client.tokens.oauth._session  # type: ignore[attr-defined]
    assert oauth_session.get_adapter("https://accounts.spotify.com/").max_retries.total == 0


def test_shutdown_ends_a_backoff_at_once(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    settings = fake_spotify.settings(tmp_path, spotify_retry_cap_seconds=30)
    fake_spotify.sign_in(settings)
    stop = threading.Event()
    client = client_from_settings(settings, stop_event=stop)
    assert isinstance(client.sleep, EventSleeper)
    fake_spotify.inject(Fault.rate_limited(25), path=r"/v1/me$", times=None)
    raised: list[BaseException] = []

    def call() -> None:
        try:
            client.me()
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=call)
    started = time.monotonic()
    worker.start()
    time.sleep(0.3)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert time.monotonic() - started < 2
    assert len(raised) == 1 and isinstance(raised[0], e.Interrupted)


def test_not_configured_and_not_signed_in(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    with pytest.raises(e.NotConfigured):
        client_from_settings(
            fake_spotify.settings(tmp_path, spotify_client_id="", spotify_client_secret="")
        )
    client, _ = make_client(fake_spotify, tmp_path, sign_in=False)
    with pytest.raises(e.NotSignedIn) as missing:
        client.me()
    assert "songnet auth" in missing.value.hint
    assert fake_spotify.requests == []


def test_single_tracks_are_fetched_one_at_a_time(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    client, _ = make_client(fake_spotify, tmp_path)
    track = fake_spotify.add_track("Song", ["Artist", "Guest"])
    fetched = client.track(track.id)
    assert fetched["uri"] == track.uri and [a["name"] for a in fetched["artists"]] == [
        "Artist",
        "Guest",
    ]
    with pytest.raises(e.NotFound):
        client.track("0" * 22)
