"""`songnet import --listenbrainz/--lastfm USER`, `songnet pull` and the sources in
`songnet status`, run for real against the fakes on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from service.cli import app
from tests.fake_history import FakeHistory

T0 = 1_700_000_000


@pytest.fixture(autouse=True)
def _logging_back_to_defaults() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def songnet(data_dir: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_backfill_from_listenbrainz_and_lastfm_then_status_shows_both(
    fake_history: FakeHistory, tmp_path: Path
) -> None:
    for i in range(3):
        fake_history.add_listen(T0 + 600 * i, "Artist", f"Song {i}", duration_ms=200_000)
        fake_history.add_scrobble(T0 + 600 * i + 5, "Artist", f"Song {i}")  # the same plays
    fake_history.add_scrobble(T0 + 5000, "Artist", "Only scrobbled")
    env = {
        "SONGNET_LISTENBRAINZ_URL": fake_history.url,
        "SONGNET_LASTFM_URL": fake_history.url + "/2.0/",
        "SONGNET_LASTFM_API_KEY": fake_history.lastfm_key,
    }
    data = tmp_path / "data"
    code, out, err = songnet(
        data, env, "import", "--listenbrainz", "listener", "--lastfm", "listener", "--json"
    )
    assert code == 0, err
    rows = {r["path"]: r for r in json.loads(out)["files"]}
    assert rows["listenbrainz:listener"]["imported"] == 3
    assert rows["lastfm:listener"]["imported"] == 1
    assert rows["lastfm:listener"]["duplicates"] == 3

    code, out, _ = songnet(data, env, "status", "--json")
    sources = {s["source"]: s for s in json.loads(out)["sources"]}
    assert sources["listenbrainz"]["imported"] == 3 and sources["listenbrainz"]["error"] is None
    assert sources["lastfm"]["watermark"] is not None
    assert json.loads(out)["plays"] == 4


def test_a_missing_account_is_one_clear_status_line_and_a_failed_import(
    fake_history: FakeHistory, tmp_path: Path
) -> None:
    env = {"SONGNET_LISTENBRAINZ_URL": fake_history.url}
    data = tmp_path / "data"
    code, _, err = songnet(data, env, "import", "--listenbrainz", "nobody")
    assert code == 1
    assert "SONGNET_LISTENBRAINZ_USER" in err
    code, _, err = songnet(data, env, "status")
    lines = [line for line in err.splitlines() if line.startswith("source listenbrainz:nobody")]
    assert len(lines) == 1 and "needs you" in lines[0] and "no such user" in lines[0]


def test_import_without_paths_or_sources_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = songnet(tmp_path / "data", {}, "import")
    assert code == 2 and "--listenbrainz" in err


def test_lastfm_without_an_api_key_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = songnet(tmp_path / "data", {}, "import", "--lastfm", "listener")
    assert code == 2 and "SONGNET_LASTFM_API_KEY" in err


def test_a_lastfm_user_without_a_key_gets_a_status_line_saying_what_to_set(tmp_path: Path) -> None:
    from service.db import open_database

    open_database(tmp_path / "data").dispose()  # a daemon ran here
    code, _, err = songnet(tmp_path / "data", {"SONGNET_LASTFM_USER": "listener"}, "status")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("source lastfm")]
    assert len(lines) == 1 and "not pulled" in lines[0] and "SONGNET_LASTFM_API_KEY" in lines[0]


def test_pull_without_a_source_set_up_fails_saying_what_to_set(tmp_path: Path) -> None:
    code, out, err = songnet(tmp_path / "data", {}, "pull")
    assert code == 2
    assert "no history source is set up" in err and "SONGNET_LISTENBRAINZ_USER" in err
    assert out == ""


def test_pull_with_only_a_lastfm_user_without_a_key_fails_and_pulls_nothing(
    fake_history: FakeHistory, tmp_path: Path
) -> None:
    fake_history.add_scrobble(T0, "Artist", "Song")
    env = {"SONGNET_LASTFM_USER": "listener", "SONGNET_LASTFM_URL": fake_history.url + "/2.0/"}
    code, out, err = songnet(tmp_path / "data", env, "pull", "--json")
    assert code == 2
    assert "lastfm cannot be pulled" in err and "SONGNET_LASTFM_API_KEY" in err
    assert "nothing was pulled" in err and out == ""
    assert fake_history.requests == []


def test_pull_takes_each_source_set_up_from_where_it_stopped(
    fake_history: FakeHistory, tmp_path: Path
) -> None:
    for i in range(3):
        fake_history.add_listen(T0 + 600 * i, "Artist", f"Song {i}", duration_ms=200_000)
    env = {"SONGNET_LISTENBRAINZ_USER": "listener", "SONGNET_LISTENBRAINZ_URL": fake_history.url}
    data = tmp_path / "data"
    code, out, err = songnet(data, env, "pull", "--json")
    assert code == 0, err
    [row] = json.loads(out)["files"]
    assert (row["path"], row["imported"], row["status"]) == ("listenbrainz:listener", 3, "imported")

    fake_history.add_listen(T0 + 5000, "Artist", "Song 3", duration_ms=200_000)
    # A Last.fm user without a key besides: ListenBrainz is pulled, the exit says what is wrong.
    code, out, err = songnet(data, {**env, "SONGNET_LASTFM_USER": "listener"}, "pull", "--json")
    assert code == 2 and "SONGNET_LASTFM_API_KEY" in err
    [row] = json.loads(out)["files"]
    assert (row["imported"], row["duplicates"]) == (1, 0)
    code, out, _ = songnet(data, env, "status", "--json")
    assert json.loads(out)["plays"] == 4
