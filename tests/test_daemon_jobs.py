"""The daemon's jobs with the real pieces: import, retrain rules, first playlists, deferrals.

One small synthetic history is imported and a tiny model trained once for the module; each
test works on a copy. The daemon's own decisions run on a fake clock; the Spotify side is the
fake Web API on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service import tables
from service.daemon import JOB_RETRAIN, JOB_SYNC_RETRY, REASON_IMPORT, REASON_PERIODIC, Daemon
from service.db import open_database
from service.jobs import DEFERRED, OK, SKIPPED, Jobs
from service.settings import Settings, load_settings
from service.sinks import playlist_paths
from tests.conftest import logged
from tests.crash_harness import synthetic_files
from tests.fake_spotify import FakeSpotify, Fault

QUICK = {
    "train_max_epochs": 1,
    "train_epoch_coverage": 0.3,
    "train_min_steps": 1,
    "watch_stable_seconds": 0.0,
}
PLAYLIST = "Jobs test"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data directory with two imported files and a promoted model; two more files apart."""
    root = tmp_path_factory.mktemp("template")
    files, seed = synthetic_files(root / "source", n_files=4, plays_per_file=1000)
    settings = load_settings(data_dir=root / "data", export_dir=root / "exports", **QUICK)
    engine = open_database(settings.data_dir)
    jobs = Jobs(settings, engine)
    assert jobs.import_files(files[:2]).outcome == OK
    trained = jobs.train(reason="template")
    engine.dispose()
    assert trained.outcome == OK and trained.counts["promoted"], trained
    return {"data": settings.data_dir, "files": files, "seed": seed}


@pytest.fixture
def setup(
    tmp_path: Path, template: dict[str, Any], fake_spotify: FakeSpotify
) -> Iterator[tuple[Settings, Engine]]:
    shutil.copytree(template["data"], tmp_path / "data")
    settings = fake_spotify.settings(
        tmp_path / "data",
        export_dir=tmp_path / "exports",
        playlists=[{"name": PLAYLIST, "seeds": [template["seed"]], "length": 15}],
        **QUICK,
    )
    fake_spotify.sign_in(settings)
    engine = open_database(settings.data_dir)
    yield settings, engine
    engine.dispose()


def test_an_import_schedules_one_debounced_retrain(
    setup: tuple[Settings, Engine], template: dict[str, Any]
) -> None:
    settings, engine = setup
    settings = settings.model_copy(update={"retrain_debounce_seconds": 120.0})
    daemon = Daemon(settings, engine)
    daemon.scheduler.start(paused=True)
    try:
        settings.export_dir.mkdir()
        shutil.copy(template["files"][2], settings.export_dir)
        daemon.watch_exports()  # first look
        run = daemon.watch_exports()
        assert run is not None and run.counts["imported"] == 1000
        first = daemon.scheduler.get_job(JOB_RETRAIN).next_run_time
        # The next file a moment later: still one retrain job, pushed back.
        time.sleep(0.05)
        shutil.copy(template["files"][3], settings.export_dir)
        daemon.watch_exports()
        assert daemon.watch_exports().counts["imported"] == 1000  # type: ignore[union-attr]
        jobs = [j for j in daemon.scheduler.get_jobs() if j.id == JOB_RETRAIN]
        assert len(jobs) == 1 and jobs[0].next_run_time > first
        # A copy of a file already imported: nothing new, the retrain is not pushed back.
        extra = settings.export_dir / "again" / "copy.json"
        extra.parent.mkdir()
        shutil.copy(template["files"][3], extra)
        daemon.watch_exports()
        assert daemon.watch_exports().counts["already"] == 1  # type: ignore[union-attr]
        assert daemon.scheduler.get_job(JOB_RETRAIN).next_run_time == jobs[0].next_run_time
    finally:
        daemon.scheduler.shutdown(wait=False)
    # Nothing is taken twice, even by a new daemon (the handled files are in the database).
    again = Daemon(settings, engine)
    again.watch_exports()
    assert again.watch_exports() is None


def test_retrain_waits_for_enough_new_plays(
    setup: tuple[Settings, Engine], template: dict[str, Any]
) -> None:
    settings, engine = setup
    settings = settings.model_copy(update={"retrain_min_new_plays": 5000})
    daemon = Daemon(settings, engine)
    assert daemon.jobs.untrained_plays() == (0, True)
    assert daemon.retrain(REASON_IMPORT) is None
    assert daemon.jobs.import_files([template["files"][2]]).counts["imported"] == 1000
    assert daemon.jobs.untrained_plays() == (1000, True)
    assert daemon.retrain(REASON_IMPORT) is None  # 1000 < 5000
    run = daemon.retrain(REASON_PERIODIC)  # before the weekly run any new play counts
    assert run is not None and run.outcome == OK
    assert daemon.jobs.untrained_plays() == (0, True)


def test_first_model_publishes_at_once_then_deferral_is_rescheduled(
    setup: tuple[Settings, Engine], fake_spotify: FakeSpotify, logs: io.StringIO
) -> None:
    settings, engine = setup
    clock = Clock()
    daemon = Daemon(settings, engine, clock=clock)
    daemon.scheduler.start(paused=True)
    try:
        assert not daemon.jobs.ever_generated()
        fake_spotify.inject(Fault.quota(retry_after=7200), method="POST", path=r"/me/playlists$")
        run = daemon.first_playlists()
        assert run.outcome == DEFERRED and run.counts["playlists"] == 1
        assert playlist_paths(settings.data_dir, PLAYLIST).m3u8.exists(), (
            "files are written whatever Spotify says"
        )
        retry_at = run.deferred[settings.playlists[0].id]
        assert retry_at > time.time() + 7000
        job = daemon.scheduler.get_job(JOB_SYNC_RETRY)
        assert abs(job.next_run_time.timestamp() - retry_at) < 1
        # The log names the sink that deferred, and the playlists.
        [deferred] = logged(logs, "playlist write deferred")
        assert deferred["sinks"] == ["spotify"]
        assert deferred["playlists"] == [settings.playlists[0].id]
        # A restart finds the deferral in the database and schedules the same retry.
        restarted = Daemon(settings, engine, clock=clock)
        restarted.scheduler.start(paused=True)
        try:
            restarted.start_up_checks()
            again = restarted.scheduler.get_job(JOB_SYNC_RETRY)
            assert abs(again.next_run_time.timestamp() - retry_at) < 1
            assert logged(logs, "playlist write deferred")[-1]["sinks"] == ["spotify"]
        finally:
            restarted.scheduler.shutdown(wait=False)
        # Too early: nothing is sent.
        assert daemon.retry_syncs().counts["playlists"] == 0  # type: ignore[union-attr]
        assert not fake_spotify.playlists_named(PLAYLIST)
        # The time Spotify named has come: the same list is written, the deferral cleared.
        clock.now = retry_at + 1
        retried = daemon.retry_syncs()
        assert retried is not None and retried.outcome == OK and retried.counts["synced"] == 1
    finally:
        daemon.scheduler.shutdown(wait=False)
    (spotify,) = fake_spotify.playlists_named(PLAYLIST)
    document = json.loads(playlist_paths(settings.data_dir, PLAYLIST).json.read_text())
    assert spotify.items == [t["uri"] for t in document["tracks"] if t["uri"]]
    with Session(engine) as session:
        state = session.exec(select(tables.PlaylistState)).one()
        spotify = session.get(tables.PlaylistSinkState, (state.config_id, "spotify"))
    assert state.last_error is None
    assert spotify is not None and spotify.deferred_until is None and spotify.last_error is None
    assert spotify.last_status == "written" and spotify.last_written_at == int(clock.now)


def test_without_spotify_files_only_and_one_log_line(
    setup: tuple[Settings, Engine], logs: io.StringIO
) -> None:
    settings, engine = setup
    settings = settings.model_copy(
        update={"spotify_client_id": None, "spotify_client_secret": None, "playlists": []}
    )
    jobs = Jobs(settings, engine)
    first = jobs.publish("weekly", reason="test")
    second = jobs.publish("weekly", reason="test")
    assert first.outcome == second.outcome == OK and first.counts["synced"] == 0
    assert len(logged(logs, "spotify sync is off")) == 1
    (written,) = list((settings.data_dir / "playlists").glob("*.json"))
    document = json.loads(written.read_text())
    assert document["tracks"] and all(t["reason"] for t in document["tracks"])


def test_publish_without_plays_is_skipped_with_a_hint(tmp_path: Path, logs: io.StringIO) -> None:
    settings = load_settings(data_dir=tmp_path / "data", export_dir=tmp_path / "exports")
    engine = open_database(settings.data_dir)
    try:
        run = Jobs(settings, engine).publish("weekly", reason="test")
    finally:
        engine.dispose()
    assert run.outcome == SKIPPED
    (warning,) = logged(logs, "no plays yet, so no playlists")
    assert str(settings.export_dir) in warning["hint"]


def test_publish_with_plays_but_no_model_writes_the_rules_playlists(
    tmp_path: Path, template: dict[str, Any], logs: io.StringIO
) -> None:
    """Plays and no promoted model (a training not run or failed): the simple rules rank."""
    settings = load_settings(
        data_dir=tmp_path / "data", export_dir=tmp_path / "exports", playlists=[], **QUICK
    )
    engine = open_database(settings.data_dir)
    try:
        jobs = Jobs(settings, engine)
        assert jobs.import_files(template["files"][:1]).outcome == OK
        run = jobs.publish("weekly", reason="test")
    finally:
        engine.dispose()
    assert run.outcome == OK and run.counts["playlists"] == 1
    assert logged(logs, "no model yet: playlists from the simple rules")
    (written,) = list((settings.data_dir / "playlists").glob("*.json"))
    document = json.loads(written.read_text())
    assert document["ranker"] == "rules" and document["model_version"] is None
    assert len(document["tracks"]) > 10 and all(t["reason"] for t in document["tracks"])


def test_run_once_imports_trains_and_writes(tmp_path: Path, template: dict[str, Any]) -> None:
    settings = load_settings(data_dir=tmp_path / "data", export_dir=tmp_path / "exports", **QUICK)
    settings.export_dir.mkdir()
    for path in template["files"][:2]:
        shutil.copy(path, settings.export_dir)
    engine = open_database(settings.data_dir)
    sleeps: list[float] = []
    try:
        code = Daemon(settings, engine).run_once(sleep=sleeps.append)
        with Session(engine) as session:
            runs = [
                (r.job, r.outcome)
                for r in session.exec(select(tables.RunRecord).order_by(tables.RunRecord.id))
            ]
    finally:
        engine.dispose()
    assert code == 0
    assert runs == [("import", OK), ("train", OK), ("once", OK)]
    assert sleeps == [0.0]  # one settling wait (SONGNET_WATCH_STABLE_SECONDS=0 here)
    assert list((settings.data_dir / "playlists").glob("*.m3u8"))


def test_run_once_with_nothing_to_import_fails_clearly(tmp_path: Path, logs: io.StringIO) -> None:
    settings = load_settings(data_dir=tmp_path / "data", export_dir=tmp_path / "exports")
    engine = open_database(settings.data_dir)
    try:
        assert Daemon(settings, engine).run_once(sleep=lambda s: None) == 1
    finally:
        engine.dispose()
    (error,) = logged(logs, "no plays, no playlist")
    assert str(settings.export_dir) in error["hint"]
