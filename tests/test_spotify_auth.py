"""Sign-in (authorization code with state), the 0600 token file, refresh, revocation, secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from typer.testing import CliRunner

from service.cli import app
from service.db import open_database
from service.logging import configure_logging
from service.settings import PlaylistConfig
from service.spotify import auth
from service.spotify import errors as e
from tests.conftest import REPO
from tests.fake_spotify import FakeSpotify, make_client

# Logs go to a live stderr whatever CLI test ran before.
pytestmark = pytest.mark.usefixtures("fresh_logging")


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_sign_in_checks_state_and_keeps_the_token_in_a_private_file(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    s = fake_spotify.settings(tmp_path)
    request = auth.begin_sign_in(s)
    q = parse_qs(urlsplit(request.url).query)
    assert request.url.startswith(fake_spotify.accounts_url + "authorize?")
    assert q["client_id"] == [fake_spotify.client_id]
    assert q["redirect_uri"] == ["http://127.0.0.1:8888/callback"]
    assert q["state"] == [request.state]
    assert set(q["scope"][0].split()) == set(auth.BASE_SCOPES)
    assert fake_spotify.client_secret not in request.url
    state_file = auth.state_path(s)
    assert _mode(state_file) == 0o600 and request.state in state_file.read_text()

    token = auth.complete_sign_in(s, fake_spotify.authorize(request.url))
    assert token["refresh_token"] and token["access_token"]
    assert _mode(auth.token_path(s)) == 0o600
    assert not state_file.exists()  # used up
    client, _ = make_client(fake_spotify, tmp_path, sign_in=False)
    assert client.me()["id"] == "listener"


def test_a_redirect_with_another_state_is_refused(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    s = fake_spotify.settings(tmp_path)
    request = auth.begin_sign_in(s)
    back = fake_spotify.authorize(request.url).replace(request.state, "forged-state")
    with pytest.raises(e.SignInFailed, match="state"):
        auth.complete_sign_in(s, back)
    assert not auth.token_path(s).exists()
    assert auth.state_path(s).exists()  # the real redirect can still complete it
    assert fake_spotify.count("POST", r"/api/token$") == 0


def test_a_denied_or_codeless_redirect_is_refused(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    s = fake_spotify.settings(tmp_path)
    with pytest.raises(e.SignInFailed, match="access_denied"):
        auth.complete_sign_in(s, "http://127.0.0.1:8888/callback?error=access_denied&state=x")
    with pytest.raises(e.SignInFailed, match="code"):
        auth.complete_sign_in(s, "http://127.0.0.1:8888/callback?state=x")


def test_a_code_with_no_state_issued_is_accepted(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    s = fake_spotify.settings(tmp_path)
    url = f"{fake_spotify.accounts_url}authorize?client_id={fake_spotify.client_id}&redirect_uri=http://127.0.0.1:8888/callback"
    auth.complete_sign_in(s, fake_spotify.authorize(url))
    assert auth.token_path(s).exists()


def test_a_wrong_client_secret_says_so(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    s = fake_spotify.settings(tmp_path, spotify_client_secret="not-the-secret-at-all")
    request = auth.begin_sign_in(s)
    with pytest.raises(e.ClientRejected) as rejected:
        auth.complete_sign_in(s, fake_spotify.authorize(request.url))
    assert "SONGNET_SPOTIFY_CLIENT_SECRET" in rejected.value.hint
    assert "not-the-secret-at-all" not in str(rejected.value)


def test_recent_plays_scope_only_when_a_playlist_excludes_recent_plays(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    plain = fake_spotify.settings(tmp_path)
    assert auth.RECENT_PLAYS_SCOPE not in auth.scopes_for(plain)
    excluding = fake_spotify.settings(
        tmp_path, playlists=[PlaylistConfig(name="Fresh", exclude_recent_days=7)]
    )
    assert auth.RECENT_PLAYS_SCOPE in auth.scopes_for(excluding)
    assert auth.RECENT_PLAYS_SCOPE in auth.begin_sign_in(excluding).url


def test_the_token_file_is_private_and_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text("{}")
    path.chmod(0o644)
    cache = auth.TokenFile(path)
    cache.save_token_to_cache({"access_token": "first-access", "refresh_token": "first-refresh"})
    assert _mode(path) == 0o600
    assert cache.get_cached_token() == {
        "access_token": "first-access",
        "refresh_token": "first-refresh",
    }
    # Another process (`songnet auth`) writes a new one: the next read sees it.
    auth.TokenFile(path).save_token_to_cache(
        {"access_token": "second-access", "refresh_token": "second-refresh"}
    )
    token = cache.get_cached_token()
    assert token is not None and token["access_token"] == "second-access"
    path.write_text("not json")
    assert cache.get_cached_token() is None


def test_a_revoked_sign_in_is_flagged_and_a_new_one_is_picked_up_without_restart(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    engine = open_database(tmp_path)
    client, sleeper = make_client(fake_spotify, tmp_path, engine=engine)
    assert client.me()["id"] == "listener"
    fake_spotify.revoke_refresh_tokens()
    fake_spotify.expire_access_tokens()
    with pytest.raises(e.SignInExpired) as expired:
        client.me()
    assert "songnet auth" in expired.value.hint
    flag = auth.sign_in_required(engine)
    assert flag is not None and "run `songnet auth`" in flag and "revoked" in flag
    # No hammering: the refused refresh token is not sent again.
    token_calls = fake_spotify.count("POST", r"/api/token$")
    with pytest.raises(e.SignInExpired):
        client.me()
    assert fake_spotify.count("POST", r"/api/token$") == token_calls
    assert sleeper.sleeps == []

    # The listener signs in again (a new token file): the same client, same process, carries on.
    fake_spotify.sign_in(fake_spotify.settings(tmp_path))
    assert client.me()["id"] == "listener"
    assert auth.sign_in_required(engine) is None


def test_a_stale_flag_from_an_earlier_process_is_cleared_by_a_working_token(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    engine = open_database(tmp_path)
    auth._set_sign_in_required(engine, "Refresh token revoked")
    assert auth.sign_in_required(engine) is not None
    client, _ = make_client(fake_spotify, tmp_path, engine=engine)
    client.me()
    assert auth.sign_in_required(engine) is None


def test_secrets_never_reach_logs_or_error_messages(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    root = logging.getLogger()
    handler, old_level = Collect(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    messages: list[str] = []
    try:
        engine = open_database(tmp_path)
        s = fake_spotify.settings(tmp_path)
        request = auth.begin_sign_in(s)
        redirected = fake_spotify.authorize(request.url)
        code = parse_qs(urlsplit(redirected).query)["code"][0]
        auth.complete_sign_in(s, redirected, engine)
        first = auth.TokenFile(auth.token_path(s)).get_cached_token()
        assert first is not None
        client, _ = make_client(fake_spotify, tmp_path, engine=engine, sign_in=False)
        fake_spotify.expire_access_tokens()
        client.me()  # refreshes
        second = auth.TokenFile(auth.token_path(s)).get_cached_token()
        assert second is not None
        fake_spotify.revoke_refresh_tokens()
        fake_spotify.expire_access_tokens()
        for call in (
            client.me,
            lambda: auth.complete_sign_in(s, redirected),
        ):  # a revoked grant; a used code
            try:
                call()
            except e.SpotifyError as exc:
                messages.append(f"{exc} {exc.hint}")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        configure_logging("auto", "info")
    text = stream.getvalue() + "\n".join(records) + "\n".join(messages)
    assert "refused" in text  # the failures were logged
    assert len(messages) == 2
    for secret in (
        fake_spotify.client_secret,
        code,
        first["access_token"],
        first["refresh_token"],
        second["access_token"],
    ):
        assert secret not in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli_env(fake: FakeSpotify, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGNET_")}
    env.update(fake.env())
    env.update({"SONGNET_DATA_DIR": str(tmp_path), "SONGNET_LOG_FORMAT": "json"})
    env.update(extra)
    return env


def test_cli_auth_two_steps_then_whoami(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    runner = CliRunner()
    env = _cli_env(fake_spotify, tmp_path)
    printed = runner.invoke(app, ["auth", "--print-url"], env=env)
    assert printed.exit_code == 0, printed.output
    url = printed.stdout.strip()
    assert url.startswith(fake_spotify.accounts_url)
    done = runner.invoke(app, ["auth", "--redirected-url", fake_spotify.authorize(url)], env=env)
    assert done.exit_code == 0, done.output
    assert "Signed in as The Listener (listener)" in done.stderr
    who = runner.invoke(app, ["whoami", "--json"], env=env)
    assert who.exit_code == 0, who.output
    profile = json.loads(who.stdout)
    assert profile["id"] == "listener" and profile["product"] == "premium"
    assert set(auth.BASE_SCOPES) <= set(profile["scopes"])


def test_cli_exit_codes_when_not_configured_or_not_signed_in(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    runner = CliRunner()
    unconfigured = _cli_env(
        fake_spotify, tmp_path, SONGNET_SPOTIFY_CLIENT_ID="", SONGNET_SPOTIFY_CLIENT_SECRET=""
    )
    for args in (["auth"], ["whoami"]):
        result = runner.invoke(app, args, env=unconfigured)
        assert result.exit_code == 2 and "SONGNET_SPOTIFY_CLIENT_ID" in result.stderr
    result = runner.invoke(app, ["whoami"], env=_cli_env(fake_spotify, tmp_path))
    assert result.exit_code == 2 and "songnet auth" in result.stderr
    bad = runner.invoke(
        app,
        ["auth", "--redirected-url", "http://127.0.0.1:8888/callback?error=access_denied"],
        env=_cli_env(fake_spotify, tmp_path),
    )
    assert bad.exit_code == 1 and "access_denied" in bad.stderr


def _songnet(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _url_from(stream: IO[str], lines: list[str]) -> str:
    found: queue.Queue[str] = queue.Queue()

    def scan() -> None:
        for line in stream:
            lines.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+/accounts/authorize\?\S+)", line)
            if m:
                found.put(m.group(1))

    threading.Thread(target=scan, daemon=True).start()
    return found.get(timeout=60)


def test_interactive_auth_takes_the_pasted_url(fake_spotify: FakeSpotify, tmp_path: Path) -> None:
    proc = _songnet(_cli_env(fake_spotify, tmp_path), "auth", "--no-listen")
    lines: list[str] = []
    assert proc.stderr is not None and proc.stdin is not None
    url = _url_from(proc.stderr, lines)
    proc.stdin.write(fake_spotify.authorize(url) + "\n")
    proc.stdin.flush()
    assert proc.wait(60) == 0, "".join(lines)
    assert "Signed in as" in "".join(lines)
    assert _mode(tmp_path / auth.TOKEN_FILENAME) == 0o600


def test_interactive_auth_catches_the_browser_on_the_loopback_port(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    port = _free_port()
    env = _cli_env(
        fake_spotify, tmp_path, SONGNET_SPOTIFY_REDIRECT_URI=f"http://127.0.0.1:{port}/callback"
    )
    proc = _songnet(env, "auth", "--listen")
    lines: list[str] = []
    assert proc.stderr is not None
    url = _url_from(proc.stderr, lines)
    # The "browser": the fake approves and redirects to the loopback port songnet listens on.
    for _ in range(50):
        try:
            page = requests.get(url, timeout=5)
            break
        except requests.ConnectionError:  # the listener is not up yet
            threading.Event().wait(0.1)
    assert page.status_code == 200 and "sign-in received" in page.text
    assert proc.wait(60) == 0, "".join(lines)
    assert (tmp_path / auth.TOKEN_FILENAME).exists()
