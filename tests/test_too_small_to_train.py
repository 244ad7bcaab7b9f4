"""A library too small to train still gets playlists: the simple rules rank them until a model
exists, the playlist says so, and `songnet status` says why and what makes a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import model_store
from service.db import open_database
from service.jobs import FAILED, OK, SKIPPED, Jobs
from service.playlists import RULES_RANKER, PlaylistGenerator
from service.settings import PlaylistConfig, load_settings
from service.training import MIN_TRAIN_SESSIONS, TrainingError, train_and_maybe_promote
from tests.daemon_process import run_songnet, songnet_env
from tests.export_records import account, write
from tests.trained_library import TINY, copy_library, partly_nameless_plays, train_library

START = 1_767_225_600  # 2026-01-01 00:00 UTC


def tiny_export(export_dir: Path, sessions: int) -> set[tuple[str, str]]:
    """An account export of `sessions` listening sessions (a day apart), 12 plays each over a
    pool of 20 tracks by 6 artists; the (artist, title) pairs it holds."""
    records, pairs = [], set()
    ts = START
    for s in range(sessions):
        for i in range(12):
            k = (s * 7 + i) % 20
            pair = (f"Artist {k % 6}", f"Song {k}")
            pairs.add(pair)
            ts += 240
            records.append(account(ts, *pair))
        ts += 86_400
    write(export_dir / "StreamingHistory_music_0.json", records)
    return pairs


@pytest.mark.parametrize("sessions", [1, MIN_TRAIN_SESSIONS - 1])
def test_run_once_below_the_threshold_writes_a_rules_playlist_and_status_says_why(
    tmp_path: Path, sessions: int
) -> None:
    pairs = tiny_export(tmp_path / "exports", sessions)
    env = songnet_env(tmp_path / "data", tmp_path / "exports", watch_stable_seconds=0)
    done = run_songnet(["run", "--once"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (skipped,) = [e for e in events if e.get("event") == "library too small to train"]
    assert f"training needs {MIN_TRAIN_SESSIONS}" in skipped["why"]

    (written,) = (tmp_path / "data" / "playlists").glob("*.json")
    doc = json.loads(written.read_text())
    assert doc["model_version"] is None and doc["ranker"] == "rules"
    assert "simple rules" in doc["ranked_by"]
    assert len(doc["tracks"]) >= 10
    assert {(t["artist"], t["title"]) for t in doc["tracks"]} <= pairs
    assert len({t["title"] for t in doc["tracks"]}) == len(doc["tracks"])  # no repeats

    status = run_songnet(["status", "--json"], env)
    report = json.loads(status.stdout)
    assert report["model"] is None
    no_model = report["no_model"]
    assert (no_model["sessions"], no_model["sessions_needed"], no_model["playlists"]) == (
        sessions, MIN_TRAIN_SESSIONS, "rules"
    )  # fmt: skip
    assert f"{sessions} listening session(s)" in no_model["reason"]
    assert f"training needs {MIN_TRAIN_SESSIONS}" in no_model["reason"]
    human = run_songnet(["status"], env)
    assert human.returncode == 0
    assert f"training needs {MIN_TRAIN_SESSIONS}" in " ".join(human.stderr.split())


def test_the_threshold_is_what_training_needs(tmp_path: Path) -> None:
    """One session fewer is refused; at the threshold a model trains and is promoted."""
    for sessions, data in ((MIN_TRAIN_SESSIONS - 1, tmp_path / "below"), (MIN_TRAIN_SESSIONS, tmp_path / "at")):
        tiny_export(data / "exports", sessions)
        settings = load_settings(data_dir=data / "data", export_dir=data / "exports")
        engine = open_database(settings.data_dir)
        try:
            assert Jobs(settings, engine).import_files(sorted((data / "exports").iterdir())).outcome == OK
            if sessions < MIN_TRAIN_SESSIONS:
                with pytest.raises(TrainingError, match=f"training needs {MIN_TRAIN_SESSIONS}"):
                    train_and_maybe_promote(engine, settings, config=TINY)
                assert Jobs(settings, engine).train(reason="test").outcome == SKIPPED
            else:
                assert train_and_maybe_promote(engine, settings, config=TINY).promoted
        finally:
            engine.dispose()


def test_a_failed_training_leaves_the_rules_in_place(tmp_path: Path) -> None:
    """Enough sessions, but the training failed (its child over a 256 MB cap): the rules rank
    the playlists, and status says why there is no model."""
    tiny_export(tmp_path / "exports", MIN_TRAIN_SESSIONS + 1)
    settings = load_settings(
        data_dir=tmp_path / "data", export_dir=tmp_path / "exports", playlists=[], train_memory_mb=256
    )
    engine = open_database(settings.data_dir)
    try:
        jobs = Jobs(settings, engine)
        assert jobs.import_files(sorted((tmp_path / "exports").iterdir())).outcome == OK
        assert jobs.train(reason="test").outcome == FAILED
        assert model_store.promoted_model(engine) is None
        assert jobs.publish("weekly", reason="test").outcome == OK
        generator = PlaylistGenerator.from_promoted(engine, settings)
        assert generator.ranker == RULES_RANKER and generator.model_version is None
        playlist = generator.generate(PlaylistConfig(name="rules", seeds=[], length=10), now=START + 30 * 86_400)
        assert playlist.ranker == RULES_RANKER and len(playlist.tracks) == 10
    finally:
        engine.dispose()
    (written,) = (settings.data_dir / "playlists").glob("*.json")
    assert json.loads(written.read_text())["ranker"] == "rules"
    env = songnet_env(tmp_path / "data", tmp_path / "exports")
    no_model = json.loads(run_songnet(["status", "--json"], env).stdout)["no_model"]
    assert no_model["sessions"] == MIN_TRAIN_SESSIONS + 1 and no_model["playlists"] == "rules"
    assert "the last training failed (ChildJobError: " in no_model["reason"]
    assert "simple rules" in no_model["reason"]


def test_a_library_with_a_promoted_model_still_uses_the_model(tmp_path: Path) -> None:
    trained = train_library(tmp_path / "trained", partly_nameless_plays(n_artists=24, n_clusters=3, seed=5, every=4))
    data = copy_library(trained, tmp_path / "copy")
    settings = load_settings(data_dir=data)
    engine = open_database(data)
    try:
        stored = model_store.promoted_model(engine)
        assert stored is not None
        generator = PlaylistGenerator.from_promoted(engine, settings)
        assert generator.ranker == "model" and generator.model_version == stored.id
        playlist = generator.generate(PlaylistConfig(name="model", seeds=[], length=10))
        assert playlist.ranker == "model" and playlist.model_version == stored.id
    finally:
        engine.dispose()
    report = json.loads(run_songnet(["status", "--json"], songnet_env(data, tmp_path / "exports")).stdout)
    assert report["no_model"] is None and report["model"]["version"] == stored.id


def test_run_once_without_plays_still_fails_with_the_hint(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    env = songnet_env(tmp_path / "data", tmp_path / "exports", watch_stable_seconds=0)
    done = run_songnet(["run", "--once"], env)
    assert done.returncode == 1
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (error,) = [e for e in events if e.get("event") == "no plays, no playlist"]
    assert str(tmp_path / "exports") in error["hint"]
    assert not (tmp_path / "data" / "playlists").exists() or not list((tmp_path / "data" / "playlists").iterdir())


def test_the_daemon_writes_the_rules_playlists_right_after_a_too_small_import(tmp_path: Path) -> None:
    """Not next Monday: the retrain an import schedules is skipped, and the playlists come."""
    from service.daemon import REASON_IMPORT, Daemon

    tiny_export(tmp_path / "exports", MIN_TRAIN_SESSIONS - 1)
    settings = load_settings(data_dir=tmp_path / "data", export_dir=tmp_path / "exports", playlists=[])
    engine = open_database(settings.data_dir)
    try:
        daemon = Daemon(settings, engine)
        assert daemon.jobs.import_files(sorted((tmp_path / "exports").iterdir())).outcome == OK
        run = daemon.retrain(REASON_IMPORT)
        assert run is not None and run.outcome == SKIPPED
        assert run.counts["sessions"] == MIN_TRAIN_SESSIONS - 1
        assert daemon.jobs.ever_generated()
    finally:
        engine.dispose()
    (written,) = (settings.data_dir / "playlists").glob("*.json")
    assert json.loads(written.read_text())["ranker"] == "rules"
