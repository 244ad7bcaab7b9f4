"""`songnet sync` end to end: a tiny trained model generates, the fake Spotify receives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from service import tables
from service.cli import app
from service.db import open_database
from service.library import load_tracks
from service.spotify.sync import marker_for
from songnet_core.history import Play
from tests.fake_spotify import FakeSpotify, Fault
from tests.trained_library import copy_library, partly_nameless_plays, train_library

# Logs go to a live stderr whatever CLI test ran before.
pytestmark = pytest.mark.usefixtures("fresh_logging")

def library_plays() -> list[Play]:
    return partly_nameless_plays(n_artists=30, n_clusters=3, seed=5, every=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_library(tmp_path_factory.mktemp("trained"), library_plays())


@pytest.fixture
def data_dir(trained: Path, tmp_path: Path) -> Path:
    return copy_library(trained, tmp_path)


def stock_the_fake(fake: FakeSpotify, data_dir: Path) -> list[str]:
    """Every library track on the fake Spotify (by name only for nameless ones); two seeds."""
    engine = open_database(data_dir)
    tracks = sorted(load_tracks(engine).values(), key=lambda t: t.track_id)
    engine.dispose()
    for t in tracks:
        fake.add_track(t.title, t.artist, track_id=t.uri.rsplit(":", 1)[-1] if t.uri else None)
    with_uri = [t for t in tracks if t.uri]
    other = next(t for t in tracks if t.uri is None and t.artist_id != with_uri[0].artist_id)
    return [str(with_uri[0].uri), f"{other.artist} - {other.title}"]


def sync(fake: FakeSpotify, data_dir: Path, seeds: list[str], *args: str) -> Any:
    env = {
        **fake.env(),
        "SONGNET_SPOTIFY_TIMEOUT_SECONDS": "5",
        "SONGNET_PLAYLISTS": json.dumps([{"name": "Weekly Mix", "seeds": seeds, "length": 20}]),
    }
    return CliRunner().invoke(
        app, ["--data-dir", str(data_dir), "--log-level", "warning", "sync", *args], env=env
    )


def test_sync_writes_the_generated_playlist_and_keeps_to_one(
    fake_spotify: FakeSpotify, data_dir: Path
) -> None:
    seeds = stock_the_fake(fake_spotify, data_dir)
    fake_spotify.sign_in(fake_spotify.settings(data_dir))

    dry = sync(fake_spotify, data_dir, seeds, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    [planned] = [json.loads(line) for line in dry.stdout.splitlines()]
    assert planned["status"] == "dry-run" and planned["tracks"] == 20 and planned["unresolved"] > 0
    assert fake_spotify.requests == []  # a dry run writes nothing, asks nothing

    first = sync(fake_spotify, data_dir, seeds, "--json")
    assert first.exit_code == 0, first.output
    [written] = [json.loads(line) for line in first.stdout.splitlines()]
    assert written["status"] == "written" and written["created"] and written["tracks"] == 20
    [playlist] = [
        p for p in fake_spotify.followed_playlists() if marker_for("weekly-mix") in p.description
    ]
    assert playlist.id == written["spotify_id"] and len(playlist.items) == 20
    assert playlist.items[0] == seeds[0]  # seeds first

    engine = open_database(data_dir)
    with Session(engine) as session:
        state = session.get(tables.PlaylistState, "weekly-mix")
        spotify = session.get(tables.PlaylistSinkState, ("weekly-mix", "spotify"))
        assert state is not None and spotify is not None
        assert spotify.remote_id == playlist.id and spotify.last_written_at
        generated = json.loads(state.tracks_json)
        resolved = session.exec(select(tables.ResolvedTrack)).all()
    # Tracks known only by name were resolved by search, and only those in the playlist.
    nameless = [t for t in generated if t["uri"] is None]
    assert nameless and {r.track_id for r in resolved} == {t["track_id"] for t in nameless}
    assert all(r.uri in playlist.items for r in resolved)

    again = sync(fake_spotify, data_dir, seeds)
    assert again.exit_code == 0, again.output
    assert again.stdout == ""  # lines for people go to stderr
    assert again.stderr.count("weekly-mix: wrote 20 tracks") == 1
    assert [
        p.id for p in fake_spotify.followed_playlists() if marker_for("weekly-mix") in p.description
    ] == [playlist.id]
    assert fake_spotify.count("POST", r"/me/playlists$") == 1


def test_sync_exits_3_when_deferred_and_1_when_failed(
    fake_spotify: FakeSpotify, data_dir: Path
) -> None:
    seeds = stock_the_fake(fake_spotify, data_dir)
    fake_spotify.sign_in(fake_spotify.settings(data_dir))
    fake_spotify.inject(Fault.rate_limited(20_000))
    deferred = sync(fake_spotify, data_dir, seeds, "--json")
    assert deferred.exit_code == 3, deferred.output
    assert json.loads(deferred.stdout)["status"] == "deferred"
    fake_spotify.allowlisted = False
    failed = sync(fake_spotify, data_dir, seeds)
    assert failed.exit_code == 1, failed.output
    assert "weekly-mix: failed" in failed.stderr and "allowlisted" in failed.stderr


def test_sync_always_writes_the_files_and_loads_the_library_once(
    fake_spotify: FakeSpotify, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import playlists
    from service.sinks import playlist_paths

    seeds = stock_the_fake(fake_spotify, data_dir)
    fake_spotify.sign_in(fake_spotify.settings(data_dir))
    loads: list[int] = []
    real_load = playlists.Library.load.__func__  # type: ignore[attr-defined]

    def counted(cls: Any, engine: Any, settings: Any) -> Any:
        loads.append(1)
        return real_load(cls, engine, settings)

    monkeypatch.setattr(playlists.Library, "load", classmethod(counted))
    env = {
        **fake_spotify.env(),
        "SONGNET_SPOTIFY_TIMEOUT_SECONDS": "5",
        "SONGNET_PLAYLISTS": json.dumps(
            [
                {"name": "Weekly Mix", "seeds": seeds, "length": 20},
                {"name": "Second Mix", "seeds": seeds[:1], "length": 10},
            ]
        ),
    }
    dry = CliRunner().invoke(app, ["--data-dir", str(data_dir), "sync", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert not playlist_paths(data_dir, "Weekly Mix").m3u8.exists()  # a dry run writes nothing
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "sync"], env=env)
    assert result.exit_code == 0, result.output
    for name, length in (("Weekly Mix", 20), ("Second Mix", 10)):
        files = playlist_paths(data_dir, name)
        document = json.loads(files.json.read_text(encoding="utf-8"))
        assert len(document["tracks"]) == length
        assert files.m3u8.read_text(encoding="utf-8").startswith("#EXTM3U")
    assert len(loads) == 2  # one per run (dry and real), not one per playlist


def test_publish_hands_each_sink_the_runs_playlists_and_returns_their_outcomes(
    data_dir: Path, tmp_path: Path
) -> None:
    from collections.abc import Sequence

    from service.playlist_shape import Playlist
    from service.playlist_sink import Outcome, SinkOutcome
    from service.publish import publish
    from service.settings import PlaylistConfig, Settings
    from service.sinks import FileSink

    class DeferringSink:
        """A remote sink that is busy until a given time."""

        name = "busy"
        remote = True

        def __init__(self) -> None:
            self.received: list[str] = []

        def write(self, playlists: Sequence[Playlist], *, now: int) -> Sequence[SinkOutcome]:
            self.received += [p.config_id for p in playlists]
            return [Outcome(p.config_id, "deferred", deferred_until=now + 3600) for p in playlists]

    engine = open_database(data_dir)
    s = Settings(data_dir=data_dir)
    configs = [PlaylistConfig(name="One", length=5), PlaylistConfig(name="Two", length=5)]
    busy = DeferringSink()
    done = publish(engine, s, configs, [FileSink(data_dir), busy], now=1_900_000_000)
    engine.dispose()
    assert [p.config_id for p in done.playlists] == ["one", "two"]
    assert busy.received == ["one", "two"]
    assert [o.status for o in done.outcomes["busy"]] == ["deferred", "deferred"]
    assert {o.deferred_until for o in done.outcomes["busy"]} == {1_900_003_600}
    assert (data_dir / "playlists" / "one.m3u8").exists()
    assert (data_dir / "playlists" / "two.json").exists()
    assert [o.status for o in done.outcomes["files"]] == ["written", "written"]
    # Each sink's outcome is kept per playlist: the busy sink's deferral is what the daemon's
    # sink retry reads, and `status` shows both sinks.
    from service import playlist_store
    from service.status import collect_status

    engine = open_database(data_dir)
    assert playlist_store.deferred(engine) == {"busy": {"one": 1_900_003_600, "two": 1_900_003_600}}
    report = collect_status(engine, s, now=1_900_000_000)
    engine.dispose()
    one = next(p for p in report["playlists"] if p["id"] == "one")
    assert {(k["sink"], k["status"]) for k in one["sinks"]} == {
        ("busy", "deferred"),
        ("files", "written"),
    }
    assert one["deferred_until"] is not None and one["last_synced_at"] is None
    # Where the files cannot go, the file sink says so per playlist instead of raising.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    failed = FileSink(blocked).write(done.playlists, now=1_900_000_000)
    assert [o.status for o in failed] == ["failed", "failed"] and all(o.error for o in failed)
