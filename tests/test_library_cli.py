"""Reading the library back, `songnet stats` and `songnet demo`, against real databases.

Expected figures are computed here straight from the synthetic plays, independently of the
SQL that `library_stats` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.db import open_database
from service.library import library_stats, load_listens, load_tracks
from songnet_core.history import Play, normalise
from songnet_core.sessions import split_sessions
from songnet_core.synthetic import SyntheticConfig, generate_plays
from tests.library_rows import store_plays

SONGNET = Path(sys.executable).parent / "songnet"
PLAYS = generate_plays(SyntheticConfig(n_plays=3000, seed=21))


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_stats(plays: list[Play], *, min_ms: int = 30_000, gap_s: int = 1800, top: int = 10) -> dict[str, Any]:
    listened = [p for p in plays if p.ms_played >= min_ms]
    artist_names = {normalise(p.artist): p.artist for p in plays}
    by_artist = Counter(normalise(p.artist) for p in listened)
    by_track = Counter(p.key for p in listened)
    title = {p.key: (p.artist, p.title) for p in plays}
    top_artists = sorted(by_artist.items(), key=lambda kv: (-kv[1], artist_names[kv[0]]))[:top]
    top_tracks = sorted(by_track.items(), key=lambda kv: (-kv[1], *title[kv[0]]))[:top]
    return {
        "plays": len(plays),
        "tracks": len({p.key for p in plays}),
        "artists": len(artist_names),
        "sessions": len(split_sessions(plays, min_ms=min_ms, gap_s=gap_s)),
        "first_play": iso(min(p.end_ts for p in plays)),
        "last_play": iso(max(p.end_ts for p in plays)),
        "listening_hours": round(sum(p.ms_played for p in plays) / 3_600_000, 1),
        "skipped": sum(p.skipped is True for p in plays),
        "short_plays": sum(p.ms_played < min_ms for p in plays),
        "sources": {"account": 0, "extended": len(plays)},
        "min_ms": min_ms,
        "gap_s": gap_s,
        "top_artists": [{"artist": artist_names[k], "plays": n} for k, n in top_artists],
        "top_tracks": [{"artist": title[k][0], "title": title[k][1], "plays": n} for k, n in top_tracks],
    }


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding `PLAYS`."""
    data_dir = tmp_path_factory.mktemp("library")
    engine = open_database(data_dir)
    store_plays(engine, PLAYS)
    engine.dispose()
    return data_dir


def run_cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["--data-dir", str(data_dir), *args], env=env)


def test_load_listens_gives_every_play_in_time_order(library: Path) -> None:
    engine = open_database(library)
    listens = load_listens(engine)
    tracks = load_tracks(engine)
    ordered = sorted(PLAYS, key=lambda p: p.end_ts)
    assert [(x.end_ts, x.play_id) for x in listens] == sorted((x.end_ts, x.play_id) for x in listens)
    assert [(x.end_ts, x.ms_played, x.skipped) for x in listens] == [
        (p.end_ts, p.ms_played, p.skipped) for p in ordered
    ]
    assert all(isinstance(x.skipped, bool) for x in listens)
    # Ids resolve to the right songs and artists.
    for listen, play in zip(listens, ordered, strict=True):
        info = tracks[listen.track_id]
        assert (info.artist, info.title, info.artist_id) == (play.artist, play.title, listen.artist_id)
    assert len(tracks) == len({p.key for p in PLAYS})
    assert {t.uri for t in tracks.values()} <= {p.uri for p in PLAYS}


def test_library_stats_match_the_plays(library: Path) -> None:
    engine = open_database(library)
    assert library_stats(engine, top=5) == expected_stats(PLAYS, top=5)
    assert library_stats(engine, min_ms=60_000, gap_s=600) == expected_stats(PLAYS, min_ms=60_000, gap_s=600)


def test_stats_json_prints_one_object_on_stdout(library: Path) -> None:
    result = run_cli(library, "stats", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == expected_stats(PLAYS)
    assert result.stdout.count("\n") == 1


def test_stats_follow_the_session_settings(library: Path) -> None:
    env = {"SONGNET_MIN_PLAY_MS": "10000", "SONGNET_SESSION_GAP_MINUTES": "5"}
    result = run_cli(library, "stats", "--json", "--top", "3", env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == expected_stats(PLAYS, min_ms=10_000, gap_s=300, top=3)


def test_stats_for_people_are_tables(library: Path) -> None:
    result = run_cli(library, "stats")
    assert result.exit_code == 0, result.stderr
    expected = expected_stats(PLAYS)
    for text in ("Your library", "Top artists", "Top tracks", f"{len(PLAYS):,}", expected["first_play"],
                 expected["top_artists"][0]["artist"], expected["top_tracks"][0]["title"]):  # fmt: skip
        assert text in result.stdout
    assert "Top artists" not in result.stderr


def test_stats_of_an_empty_library(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "stats", "--json")
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["plays"], stats["tracks"], stats["artists"], stats["sessions"]) == (0, 0, 0, 0)
    assert stats["first_play"] is None and stats["last_play"] is None and stats["top_tracks"] == []
    people = run_cli(tmp_path, "stats")
    assert people.exit_code == 0 and "No plays stored yet" in people.stdout


def test_stats_refuses_a_foreign_database(tmp_path: Path) -> None:
    (tmp_path / "songnet.db").write_bytes(b"not a database at all, just some bytes" * 100)
    result = run_cli(tmp_path, "stats", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error:" in result.stderr


# --- the demo, as `make demo` runs it: a fresh process ---------------------------------------


def songnet(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SONGNET_LOG_FORMAT": "json"}
    return subprocess.run(
        [str(SONGNET), "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


def test_demo_imports_both_overlapping_exports_once(tmp_path: Path) -> None:
    first = songnet(tmp_path, "demo", "--plays", "2500", "--seed", "3", "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    plays = generate_plays(SyntheticConfig(n_plays=2500, seed=3))
    # Every synthetic play stored exactly once although the account data repeats many of them.
    assert out["stats"] == expected_stats(plays)
    files = out["files"]
    account = [f for f in files if f["format"] == "account"]
    extended = [f for f in files if f["format"] == "extended"]
    assert account and extended and all(f["status"] == "imported" for f in files)
    assert sum(f["imported"] for f in files) == 2500
    assert 0 < sum(f["duplicates"] for f in files) == sum(f["records"] for f in account) < 2500
    for f in files:
        assert f["records"] == f["imported"] + f["duplicates"] + sum(f["skipped"].values())
    skipped: Counter[str] = Counter()
    for f in extended:
        skipped.update(f["skipped"])
    assert skipped["episode"] > 0 and skipped["video"] > 0
    folder = Path(out["export"])
    assert folder == tmp_path / "demo-export"
    assert (folder / "Spotify Account Data").is_dir() and (folder / "Spotify Extended Streaming History").is_dir()
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}

    # Again: the export is found, not rewritten, and importing it changes nothing.
    again = songnet(tmp_path, "demo", "--plays", "2500", "--seed", "3", "--json")
    assert again.returncode == 0, again.stderr
    out2 = json.loads(again.stdout)
    assert {f["status"] for f in out2["files"]} == {"already-imported"}
    assert out2["stats"] == out["stats"]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_demo_for_people_prints_the_stats_tables(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "demo", "--plays", "1500")
    assert result.exit_code == 0, result.stderr
    assert "Your library" in result.stdout and "Top tracks" in result.stdout and "1,500" in result.stdout
    assert "Wrote the demo export" in result.stderr and "1,500 plays imported" in result.stderr


def test_demo_refuses_a_different_demo_in_the_same_place(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "demo", "--plays", "800", "--json").exit_code == 0
    other = run_cli(tmp_path, "demo", "--plays", "900", "--json")
    assert other.exit_code == 1
    assert other.stdout == ""
    assert "holds a demo of 800 plays with seed 0" in other.stderr

    foreign = tmp_path / "other"
    (foreign / "demo-export").mkdir(parents=True)
    refused = run_cli(foreign, "demo", "--plays", "800")
    assert refused.exit_code == 1
    assert "not written by `songnet demo`" in refused.stderr
