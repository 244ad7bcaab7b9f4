"""`songnet train` and `songnet generate` end to end on a real database and a tiny trained model."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service import model_store, training
from service.cli import app
from service.db import open_database
from service.library import load_tracks
from service.settings import load_settings
from songnet_core.history import Play
from tests.library_rows import store_plays
from tests.trained_library import TINY, copy_library, partly_nameless_plays, train_library


def library_plays() -> list[Play]:
    return partly_nameless_plays(n_artists=48, n_clusters=4, seed=11, every=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_library(tmp_path_factory.mktemp("trained"), library_plays())


@pytest.fixture
def data_dir(trained: Path, tmp_path: Path) -> Path:
    return copy_library(trained, tmp_path)


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()


def songnet(runner: CliRunner, data_dir: Path, *args: str) -> Any:
    return runner.invoke(app, ["--data-dir", str(data_dir), "--log-level", "warning", *args])


def seeds_of(data_dir: Path) -> tuple[str, str, str]:
    """Three seed strings for tracks of different artists: by name, by URI, by name (no URI)."""
    engine = open_database(data_dir)
    tracks = sorted(load_tracks(engine).values(), key=lambda t: t.track_id)
    engine.dispose()
    with_uri = [t for t in tracks if t.uri]
    without = [t for t in tracks if not t.uri]
    a, b = with_uri[0], next(t for t in with_uri if t.artist_id != with_uri[0].artist_id)
    c = next(t for t in without if t.artist_id not in (a.artist_id, b.artist_id))
    assert b.uri is not None
    return f"{a.artist.upper()} - {a.title}", b.uri, f"{c.artist} - {c.title.lower()}"


def test_generate_json_seeds_first_rules_hold_and_reasons_given(runner: CliRunner, data_dir: Path) -> None:
    seeds = seeds_of(data_dir)
    args = ["generate", *[x for s in seeds for x in ("--seed", s)], "--length", "25", "--at", "2026-11-30T06:00:00", "--rng-seed", "4", "--json"]
    result = songnet(runner, data_dir, *args)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    tracks = doc["tracks"]
    assert len(tracks) == 25
    assert all(set(t) >= {"artist", "title", "uri", "reason"} for t in tracks)
    assert tracks[0]["artist"].upper() + " - " + tracks[0]["title"] == seeds[0]
    assert tracks[1]["uri"] == seeds[1]
    assert tracks[2]["uri"] is None and f"{tracks[2]['artist']} - {tracks[2]['title'].lower()}" == seeds[2]
    assert [t["reason"] for t in tracks[:3]] == ["your seed"] * 3
    assert all(t["reason"] and t["reason"] != "your seed" for t in tracks[3:])
    names = [(t["artist"], t["title"]) for t in tracks]
    assert len(set(names)) == 25
    artists = [t["artist"] for t in tracks]
    for i in range(3, 25):
        assert artists[i] != artists[i - 1]
        assert Counter(artists[max(0, i - 19) : i + 1])[artists[i]] <= 2
    # The same --rng-seed at the same --at gives the same playlist (without --at, two runs
    # either side of an hour boundary see different context); another seed another one.
    assert songnet(runner, data_dir, *args).stdout == result.stdout
    other = songnet(runner, data_dir, *args[:-3], "--rng-seed", "5", "--json")
    assert json.loads(other.stdout)["tracks"] != tracks
    # Top-k 1 at any temperature is greedy: deterministic without an rng seed.
    greedy = ["generate", "--seed", seeds[0], "--length", "8", "--top-k", "1", "--json"]
    assert songnet(runner, data_dir, *greedy).stdout == songnet(runner, data_dir, *greedy).stdout


def test_generate_m3u_and_table(runner: CliRunner, data_dir: Path) -> None:
    seeds = seeds_of(data_dir)
    result = songnet(runner, data_dir, "generate", "--seed", seeds[2], "--seed", seeds[1], "--length", "10", "--m3u")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "#EXTM3U"
    locations = [line for line in lines if not line.startswith("#")]
    assert len(locations) == 10
    assert locations[0].startswith("spotify:search:") and " " not in locations[0]
    assert locations[1] == seeds[1]
    assert all(x.startswith(("spotify:track:", "spotify:search:")) for x in locations)
    table = songnet(runner, data_dir, "generate", "--seed", seeds[0], "--length", "5")
    assert table.exit_code == 0 and table.stdout == ""  # tables go to stderr; stdout is for --json
    assert "your seed" in table.stderr


def test_no_seed_uses_the_most_played_tracks_of_recent_weeks(runner: CliRunner, data_dir: Path) -> None:
    result = songnet(runner, data_dir, "generate", "--length", "12", "--rng-seed", "1", "--json")
    assert result.exit_code == 0, result.stderr
    tracks = json.loads(result.stdout)["tracks"]
    assert len(tracks) == 12 and [t["reason"] for t in tracks[:3]] == ["your seed"] * 3
    assert len({t["artist"] for t in tracks[:3]}) == 3


def test_seed_errors_exit_1_with_candidates(runner: CliRunner, data_dir: Path) -> None:
    seed = seeds_of(data_dir)[0]
    typo = seed[:-2]
    result = songnet(runner, data_dir, "generate", "--seed", typo, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["problem"] == "not_found" and doc["seed"] == typo
    assert doc["candidates"] and doc["candidates"][0].casefold() == seed.casefold()
    assert "closest tracks" in result.stderr
    unknown = songnet(runner, data_dir, "generate", "--seed", "spotify:track:0000000000000000000000")
    assert unknown.exit_code == 1
    assert "songnet auth" in unknown.stderr and "Spotify" in unknown.stderr


def test_usage_errors_exit_2(runner: CliRunner, data_dir: Path) -> None:
    seed = seeds_of(data_dir)[0]
    both = songnet(runner, data_dir, "generate", "--seed", seed, "--top-k", "5", "--top-p", "0.5")
    assert both.exit_code == 2 and "not both" in both.stderr
    short = songnet(runner, data_dir, "generate", *[x for s in seeds_of(data_dir) for x in ("--seed", s)], "--length", "2")
    assert short.exit_code == 2 and "do not fit" in short.stderr


def test_exclude_recent_days_leaves_out_recent_plays(runner: CliRunner, data_dir: Path) -> None:
    seed = seeds_of(data_dir)[0]
    # The synthetic history lies in the past; a window of 100,000 days covers all of it.
    result = songnet(runner, data_dir, "generate", "--seed", seed, "--length", "10", "--exclude-recent-days", "100000", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["tracks"]) == 1  # only the seed is left
    assert "no other track" in result.stderr


def test_no_model_generates_with_the_simple_rules(runner: CliRunner, tmp_path: Path) -> None:
    plays = library_plays()[:200]
    engine = open_database(tmp_path)
    store_plays(engine, plays)
    engine.dispose()
    result = songnet(runner, tmp_path, "generate", "--length", "5", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model_version"] is None and doc["ranker"] == "rules"
    assert len(doc["tracks"]) == 5
    assert {(t["artist"], t["title"]) for t in doc["tracks"]} <= {(p.artist, p.title) for p in plays}
    table = songnet(runner, tmp_path, "generate", "--length", "5")
    assert table.exit_code == 0 and "simple rules" in table.stderr


def test_no_plays_says_import_first(runner: CliRunner, tmp_path: Path) -> None:
    open_database(tmp_path).dispose()
    result = songnet(runner, tmp_path, "generate", "--length", "5", "--json")
    assert result.exit_code == 1
    assert "songnet import" in result.stderr and "songnet import" in json.loads(result.stdout)["error"]


def test_train_command_compares_and_reports(
    runner: CliRunner, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI trains with the default configuration; a tiny one keeps the suite fast.
    monkeypatch.setattr(training, "default_train_config", lambda s, **kw: dataclasses.replace(TINY, **{k: v for k, v in kw.items() if v}))
    before = model_store.promoted_model(open_database(data_dir))
    result = songnet(runner, data_dir, "train", "--epochs", "1", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["epochs"] == 1 and doc["plays"] == 2500
    assert doc["compared_steps"] > 0 and doc["promoted_model_hr@10_same_steps"] is not None
    assert isinstance(doc["promoted"], bool) and doc["reason"]
    after = model_store.promoted_model(open_database(data_dir))
    assert before is not None and after is not None
    assert (after.id == doc["model_version"]) == doc["promoted"]
    table = songnet(runner, data_dir, "train", "--epochs", "1")
    assert table.exit_code == 0 and "validation HR@10" in table.stderr and table.stdout == ""


def test_generate_for_config_and_the_default_playlist(data_dir: Path) -> None:

    from service.library import load_listens
    from service.playlists import (
        DEFAULT_PLAYLIST_NAME,
        default_playlist_config,
        generate_for_config,
    )

    engine = open_database(data_dir)
    s = load_settings(data_dir=data_dir)
    config = default_playlist_config(engine, s)
    assert config.name == DEFAULT_PLAYLIST_NAME and config.id == "songnet-weekly" and len(config.seeds) == 3
    playlist = generate_for_config(engine, s, config, rng_seed=3, now=1_900_000_000)
    tracks = load_tracks(engine)
    assert playlist.config_id == config.id and playlist.model_version == model_store.promoted_model(engine).id
    assert len(playlist.tracks) == config.length and playlist.note is None
    assert [t.is_seed for t in playlist.tracks] == [True] * 3 + [False] * (config.length - 3)
    assert all(t.uri == tracks[t.track_id].uri and t.reason for t in playlist.tracks)
    # The seeds are the most played tracks of the last four weeks, one per artist.
    listens = [x for x in load_listens(engine) if x.ms_played >= 30_000]
    since = max(x.end_ts for x in listens) - 28 * 86_400
    counts = Counter(x.track_id for x in listens if x.end_ts >= since)
    seed_ids = [t.track_id for t in playlist.tracks[:3]]
    assert len({tracks[t].artist_id for t in seed_ids}) == 3
    best = max(counts.values())
    assert counts[seed_ids[0]] == best
    assert all(counts[t] > 0 for t in seed_ids)
    # Same rng seed and moment: the same playlist, as the daemon's retries rely on.
    again = generate_for_config(engine, s, config, rng_seed=3, now=1_900_000_000)
    assert [t.track_id for t in again.tracks] == [t.track_id for t in playlist.tracks]
    engine.dispose()
