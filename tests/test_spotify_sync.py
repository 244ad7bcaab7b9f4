"""Writing generated playlists to the fake Spotify: create once, replace, converge, defer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from service import playlist_store, tables
from service.cli import app
from service.db import open_database
from service.settings import PlaylistConfig, Settings
from service.spotify import auth
from service.spotify import errors as e
from service.spotify.client import SpotifyClient
from service.spotify.sync import (
    DESCRIPTION_MAX,
    SINK_NAME,
    SyncRun,
    describe,
    marker_for,
    sync_playlists,
)
from tests.fake_spotify import FakePlaylist, FakeSpotify, Fault, RecordingSleeper, make_client

# Logs go to a live stderr whatever CLI test ran before.
pytestmark = pytest.mark.usefixtures("fresh_logging")


@dataclass
class Track:
    track_id: int | None
    artist: str
    title: str
    uri: str | None
    reason: str = "often follows the seed"
    is_seed: bool = False


@dataclass
class Generated:
    config_id: str
    name: str
    tracks: list[Track] = field(default_factory=list)
    model_version: int | None = 3
    ranker: str = "model"


def catalogue(fake: FakeSpotify, n: int, prefix: str = "Song") -> list[Track]:
    """`n` tracks that exist in the fake, the first two seeds."""
    out = []
    for i in range(n):
        t = fake.add_track(f"{prefix} {i}", f"Artist {i % 17}")
        out.append(Track(None, t.artists[0], t.name, t.uri, is_seed=i < 2))
    return out


@dataclass
class Rig:
    fake: FakeSpotify
    engine: Engine
    settings: Settings
    client: SpotifyClient
    sleeper: RecordingSleeper

    def sync(self, *playlists: Generated, settings: Settings | None = None) -> SyncRun:
        """A sync as the publish use case runs it: the playlists kept, the outcomes stored."""
        for p in playlists:
            with playlist_store.update(self.engine, p.config_id, p.name):
                pass
        run = sync_playlists(
            self.engine, settings or self.settings, list(playlists), client=self.client
        )
        playlist_store.record_outcomes(self.engine, SINK_NAME, run.outcomes, now=1_900_000_000)
        return run

    def state(self, config_id: str) -> tables.PlaylistSinkState:
        """The playlist's row for the Spotify sink."""
        with Session(self.engine) as session:
            row = session.get(tables.PlaylistSinkState, (config_id, SINK_NAME))
            assert row is not None
            return row

    def playlist(self, config_id: str) -> tables.PlaylistState:
        row = playlist_store.get(self.engine, config_id)
        assert row is not None
        return row

    def ours(self, config_id: str) -> list[FakePlaylist]:
        """The listener's playlists carrying this configuration's marker."""
        return [p for p in self.fake.followed_playlists() if marker_for(config_id) in p.description]


CONFIGS = [
    PlaylistConfig(name="Weekly Mix", id="weekly"),
    PlaylistConfig(name="Focus", id="focus", public=True),
]


@pytest.fixture
def rig(fake_spotify: FakeSpotify, tmp_path: Path) -> Rig:
    engine = open_database(tmp_path)
    client, sleeper = make_client(fake_spotify, tmp_path, engine=engine, playlists=CONFIGS)
    return Rig(
        fake_spotify, engine, fake_spotify.settings(tmp_path, playlists=CONFIGS), client, sleeper
    )


def test_first_sync_creates_later_syncs_replace(rig: Rig) -> None:
    first = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 30))
    run = rig.sync(first)
    assert run.exit_code == 0
    [outcome] = run.outcomes
    assert outcome.status == "written" and outcome.created and outcome.tracks == 30
    [playlist] = rig.ours("weekly")
    assert playlist.id == outcome.spotify_id == rig.state("weekly").remote_id
    assert playlist.items == [t.uri for t in first.tracks]
    assert playlist.name == "Weekly Mix" and playlist.public is False
    assert "Model 3" in playlist.description and "Artist 0 – Song 0" in playlist.description
    assert len(playlist.description) <= DESCRIPTION_MAX

    second = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 25, prefix="Other"))
    outcome = rig.sync(second).outcomes[0]
    assert outcome.status == "written" and not outcome.created
    assert rig.ours("weekly") == [playlist]
    assert playlist.items == [t.uri for t in second.tracks]
    assert rig.fake.count("POST", r"/me/playlists$") == 1
    state = rig.state("weekly")
    assert (
        state.last_written_at is not None
        and state.last_status == "written"
        and state.last_error is None
        and state.deferred_until is None
    )


def test_long_playlists_are_written_in_chunks_of_100(rig: Rig) -> None:
    generated = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 250))
    assert rig.sync(generated).exit_code == 0
    [playlist] = rig.ours("weekly")
    assert playlist.items == [t.uri for t in generated.tracks]
    assert rig.fake.count("PUT", r"/items$") == 1
    assert rig.fake.count("POST", r"/items$") == 2


def test_a_playlist_the_listener_deleted_is_made_again(rig: Rig) -> None:
    generated = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 10))
    old = rig.sync(generated).outcomes[0].spotify_id
    assert old is not None
    rig.fake.user_deletes_playlist(old)
    outcome = rig.sync(generated).outcomes[0]
    assert outcome.created and outcome.spotify_id != old
    [playlist] = rig.ours("weekly")
    assert playlist.id == outcome.spotify_id == rig.state("weekly").remote_id
    assert rig.fake.playlists[old].items == [
        t.uri for t in generated.tracks
    ]  # the old one is left alone


def test_a_create_whose_answer_is_lost_makes_no_second_playlist(rig: Rig) -> None:
    rig.fake.inject(Fault.lost_response(), method="POST", path=r"/me/playlists$")
    generated = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 10))
    outcome = rig.sync(generated).outcomes[0]
    assert outcome.status == "written"
    [playlist] = rig.ours("weekly")
    assert playlist.id == outcome.spotify_id
    assert playlist.items == [t.uri for t in generated.tracks]
    assert rig.fake.count("POST", r"/me/playlists$") == 1


def test_a_crash_between_create_and_saving_its_id_is_mended(rig: Rig) -> None:
    generated = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 10))
    # What a run that died right after its create leaves behind: a playlist, no id stored.
    orphan = rig.fake.create_playlist_directly("Weekly Mix", describe(generated, now=0))
    outcome = rig.sync(generated).outcomes[0]
    assert outcome.spotify_id == orphan.id and not outcome.created
    assert rig.ours("weekly") == [orphan]
    assert rig.fake.count("POST", r"/me/playlists$") == 0


def test_an_add_whose_answer_is_lost_is_not_doubled(rig: Rig) -> None:
    generated = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 250))
    rig.fake.inject(Fault.lost_response(), method="POST", path=r"/items$")
    rig.fake.inject(Fault.server_error(502, after=True), method="POST", path=r"/items$")
    assert rig.sync(generated).exit_code == 0
    [playlist] = rig.ours("weekly")
    assert playlist.items == [t.uri for t in generated.tracks]
    # PUT 100; POST 100 (applied, answer lost); look; POST 50 (applied, 502); look: done.
    assert rig.fake.count("POST", r"/items$") == 2
    assert (
        rig.fake.count("GET", r"/items$") == 2 + 3
    )  # looks at 200 items, then at 250 (pages of 100)


def test_a_failure_midway_converges_on_the_next_run(rig: Rig) -> None:
    generated = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 180))
    rig.fake.inject(Fault.server_error(503), method="POST", path=r"/items$", times=None)
    run = rig.sync(generated)
    assert run.exit_code == 1
    outcome = run.outcomes[0]
    assert outcome.status == "failed" and "503" in (outcome.error or "")
    assert rig.state("weekly").last_error is not None
    [playlist] = rig.ours("weekly")
    assert playlist.items == [t.uri for t in generated.tracks[:100]]  # half written
    rig.fake.clear_faults()
    assert rig.sync(generated).exit_code == 0
    assert rig.ours("weekly") == [playlist]
    assert playlist.items == [t.uri for t in generated.tracks]
    assert rig.state("weekly").last_error is None


def test_a_shutdown_during_a_backoff_leaves_a_state_the_next_run_mends(rig: Rig) -> None:
    generated = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 150))

    def interrupted(_seconds: float) -> None:
        raise e.Interrupted("shutdown")

    rig.client.sleep = interrupted
    rig.fake.inject(Fault.server_error(500), method="PUT", path=r"/items$")
    with pytest.raises(e.Interrupted):
        rig.sync(generated)
    assert rig.state("weekly").last_error == "interrupted by shutdown"
    rig.client.sleep = rig.sleeper
    assert rig.sync(generated).exit_code == 0
    [playlist] = rig.ours("weekly")
    assert playlist.items == [t.uri for t in generated.tracks]


@pytest.mark.parametrize("fault", [Fault.rate_limited(20_000), Fault.quota(3_600)])
def test_a_deferral_ends_the_run_without_sleeping(rig: Rig, fault: Fault) -> None:
    weekly = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 10))
    focus = Generated("focus", "Focus", catalogue(rig.fake, 10, prefix="Focus"))
    rig.fake.inject(fault)
    run = rig.sync(weekly, focus)
    assert run.exit_code == 3
    assert [o.status for o in run.outcomes] == ["deferred", "deferred"]
    assert rig.sleeper.sleeps == []
    assert len(rig.fake.requests) == 1  # nothing after Spotify said "later"
    retry_at = run.outcomes[0].deferred_until
    assert retry_at is not None and run.outcomes[1].deferred_until == retry_at
    assert rig.state("weekly").deferred_until == retry_at == rig.state("focus").deferred_until
    # The next run (at the time named) writes both and clears the deferral.
    assert rig.sync(weekly, focus).exit_code == 0
    assert rig.state("weekly").deferred_until is None


def test_a_revoked_sign_in_fails_every_playlist_with_exit_2(rig: Rig) -> None:
    rig.fake.revoke_refresh_tokens()
    rig.fake.expire_access_tokens()
    run = rig.sync(
        Generated("weekly", "Weekly Mix", catalogue(rig.fake, 5)), Generated("focus", "Focus", [])
    )
    assert run.exit_code == 2
    assert all(o.needs_sign_in and "songnet auth" in (o.hint or "") for o in run.outcomes)
    assert auth.sign_in_required(rig.engine) is not None
    assert "songnet auth" in (rig.state("focus").last_error or "")


def test_a_listener_not_allowlisted_fails_with_what_to_do(rig: Rig) -> None:
    rig.fake.allowlisted = False
    run = rig.sync(Generated("weekly", "Weekly Mix", catalogue(rig.fake, 5)))
    assert run.exit_code == 1
    assert "allowlisted" in (run.outcomes[0].hint or "")
    assert rig.sleeper.sleeps == []


def test_a_playlist_removed_from_the_configuration_is_left_alone(rig: Rig) -> None:
    weekly = Generated("weekly", "Weekly Mix", catalogue(rig.fake, 5))
    focus = Generated("focus", "Focus", catalogue(rig.fake, 5, prefix="F"))
    rig.sync(weekly, focus)
    [focus_playlist] = rig.ours("focus")
    before = (list(focus_playlist.items), focus_playlist.description)
    only_weekly = rig.fake.settings(rig.settings.data_dir, playlists=CONFIGS[:1])
    assert (
        rig.sync(
            Generated("weekly", "Weekly Mix", catalogue(rig.fake, 5, prefix="W2")),
            settings=only_weekly,
        ).exit_code
        == 0
    )
    assert rig.playlist("focus").removed_from_config is True
    assert rig.playlist("weekly").removed_from_config is False
    assert (focus_playlist.items, focus_playlist.description) == before
    assert rig.ours("focus") == [focus_playlist]
    rig.sync(focus)  # configured again
    assert rig.playlist("focus").removed_from_config is False


def test_names_and_descriptions_fit_spotifys_limits(rig: Rig) -> None:
    long_name = "N" * 100
    config = PlaylistConfig(name=long_name, id="long")
    seeds = [
        Track(None, "A" * 60, "T" * 80, rig.fake.add_track(f"s{i}", "x").uri, is_seed=True)
        for i in range(8)
    ]
    generated = Generated("long", long_name, seeds)
    settings = rig.fake.settings(rig.settings.data_dir, playlists=[config])
    assert rig.sync(generated, settings=settings).exit_code == 0
    [playlist] = rig.ours("long")
    assert playlist.name == long_name
    assert len(playlist.description) <= DESCRIPTION_MAX
    assert playlist.description.endswith(marker_for("long"))
    assert marker_for("Odd id / with spaces").startswith("[songnet:") and " " not in marker_for(
        "Odd id / with spaces"
    )


def test_tracks_known_only_by_name_are_resolved_and_misses_left_out(rig: Rig) -> None:
    known = catalogue(rig.fake, 3)
    rig.fake.add_track("Found By Search", "Named Artist")
    by_name = [
        Track(None, "Named Artist", "Found By Search", None),
        Track(None, "Nobody", "Not On Spotify", None),
    ]
    duplicate = Track(None, known[0].artist, known[0].title, known[0].uri)
    outcome = rig.sync(Generated("weekly", "Weekly Mix", [*known, *by_name, duplicate])).outcomes[0]
    assert outcome.status == "written" and outcome.tracks == 4 and outcome.unresolved == 1
    [playlist] = rig.ours("weekly")
    assert len(playlist.items) == 4 == len(set(playlist.items))


def _cli_env(fake: FakeSpotify, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {**fake.env(), "SONGNET_DATA_DIR": str(data_dir), "SONGNET_LOG_FORMAT": "json"}
    env["SONGNET_PLAYLISTS"] = json.dumps(
        [{"name": "Weekly Mix", "seeds": []}, {"name": "Focus", "seeds": []}]
    )
    env.update(extra)
    return env


@pytest.mark.parametrize("signed_in", [False, True])
def test_cli_sync_exits_2_when_not_configured_or_not_signed_in(
    fake_spotify: FakeSpotify, tmp_path: Path, signed_in: bool
) -> None:
    env = _cli_env(fake_spotify, tmp_path)
    if signed_in:  # signed in once, then revoked
        fake_spotify.sign_in(fake_spotify.settings(tmp_path))
        fake_spotify.revoke_refresh_tokens()
        token = auth.TokenFile(auth.token_path(fake_spotify.settings(tmp_path)))
        info: dict[str, Any] | None = token.get_cached_token()
        assert info is not None
        token.save_token_to_cache({**info, "expires_at": 0})
    else:
        env.update(SONGNET_SPOTIFY_CLIENT_ID="", SONGNET_SPOTIFY_CLIENT_SECRET="")
    result = CliRunner().invoke(app, ["sync", "--json"], env=env)
    assert result.exit_code == 2, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["config_id"] for o in lines] == ["weekly-mix", "focus"]
    assert all(o["status"] == "failed" and o["needs_sign_in"] for o in lines)
    hint = lines[0]["hint"]
    assert ("SONGNET_SPOTIFY_CLIENT_ID" in hint) if not signed_in else ("songnet auth" in hint)
