"""End to end: the daemon as a real process, a real export dropped in and ListenBrainz
pulled (a fake on 127.0.0.1 holding some of the export's plays and a few newer ones),
playlists out.

`songnet run` with a seconds-scale schedule (a sixth, leading cron field for seconds) and a
tiny training: a real export from ../shared/corpus is copied into the watched folder → it is
imported, a model is trained, the first playlist is written to a file and to the fake Spotify
Web API (a real HTTP server on 127.0.0.1) → SIGTERM → exit 0. Started again: nothing is
imported twice, the jobs are the same (no duplicates), and the weekly runs update the one
playlist rather than adding another.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from service.jobs import INTERRUPTED, OK
from service.sinks import playlist_paths
from tests.conftest import corpus_source, require_corpus
from tests.daemon_process import DaemonProcess, run_songnet, songnet_env
from tests.fake_history import FakeHistory
from tests.fake_spotify import FakeSpotify

LB_OVERLAP = 20  # export plays ListenBrainz also recorded
LB_NEW = 5  # listens after the export's last play

EXPORT = "extended-d"
PLAYLIST = "Evening walk"
EXPECTED_JOBS = {
    "pull-sources",
    "watch-exports",
    "weekly-playlists",
    "heartbeat",
    "weekly-catch-up-check",
}


def most_played(export: Path) -> str:
    """ "Artist - Title" of the export's most played track (the playlist's seed)."""
    counts: Counter[tuple[str, str]] = Counter()
    for path in export.glob("*.json"):
        if path.name != "SOURCE.json":
            for r in json.loads(path.read_text(encoding="utf-8")):
                if r.get("master_metadata_track_name"):
                    counts[
                        (r["master_metadata_album_artist_name"], r["master_metadata_track_name"])
                    ] += 1
    (artist, title), _ = counts.most_common(1)[0]
    return f"{artist} - {title}"


def listenbrainz_listens(export: Path, fake: FakeHistory) -> None:
    """Some of the export's plays as ListenBrainz stamps them (start times), and newer ones."""
    plays = []
    for path in sorted(export.glob("*.json")):
        if path.name != "SOURCE.json":
            for r in json.loads(path.read_text(encoding="utf-8")):
                if r.get("master_metadata_track_name") and r["ms_played"] >= 60_000:
                    end = int(datetime.fromisoformat(r["ts"]).timestamp())
                    plays.append((end, r))
    plays.sort(key=lambda p: p[0])
    step = len(plays) // LB_OVERLAP
    for end, r in plays[::step][:LB_OVERLAP]:
        fake.add_listen(
            end - r["ms_played"] // 1000,
            r["master_metadata_album_artist_name"],
            r["master_metadata_track_name"],
            duration_ms=r["ms_played"],
        )
    # Newer plays of songs the export knows (a song only ListenBrainz knows has no URI to
    # compare the playlist files with).
    last = plays[-1][0]
    for i, (_, r) in enumerate(plays[-LB_NEW:]):
        fake.add_listen(
            last + 600 * (i + 1),
            r["master_metadata_album_artist_name"],
            r["master_metadata_track_name"],
            duration_ms=200_000,
        )


def daemon_env(
    tmp_path: Path, fake: FakeSpotify, seed: str, history: FakeHistory
) -> dict[str, str]:
    env = songnet_env(
        tmp_path / "data",
        tmp_path / "exports",
        schedule="*/15 * * * * *",  # the weekly run, every 15 s
        watch_interval_seconds="1",
        watch_stable_seconds="1",
        heartbeat_interval_seconds="1",
        retrain_debounce_seconds="1",
        retrain_lead_minutes="0",
        train_max_epochs="1",
        train_epoch_coverage="0.5",
        train_min_steps="1",
        spotify_timeout_seconds="5",
        playlists=[{"name": PLAYLIST, "seeds": [seed], "length": 20}],
        listenbrainz_user=history.lb_user,
        listenbrainz_url=history.url,
        source_poll="2",
    )
    env.update(fake.env())
    return env


def same_listening_twice(data_dir: Path) -> list[tuple[object, ...]]:
    """Pairs of plays of one track starting within 30 s of each other, one of them pulled."""
    return db_rows(
        data_dir,
        "SELECT a.id, b.id FROM play a JOIN play b ON a.track_id = b.track_id AND a.id < b.id"
        " AND abs((a.end_ts - a.ms_played / 1000) - (b.end_ts - b.ms_played / 1000)) <= 30"
        " AND 'listenbrainz' IN (a.source, b.source)",
    )


def db_rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(data_dir / "songnet.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.corpus
def test_drop_an_export_get_a_playlist_restart_without_duplicates(
    tmp_path: Path, fake_spotify: FakeSpotify, fake_history: FakeHistory
) -> None:
    corpus = require_corpus()
    records = sum(corpus_source(EXPORT).values())
    data_dir, exports = tmp_path / "data", tmp_path / "exports"
    exports.mkdir()
    fake_spotify.sign_in(fake_spotify.settings(data_dir))
    env = daemon_env(tmp_path, fake_spotify, most_played(corpus / EXPORT), fake_history)

    # -- first life: drop the export, wait for the playlist ------------------------------------
    daemon = DaemonProcess(["run"], env)
    try:
        daemon.wait_event("daemon started", timeout=60)
        for source in sorted((corpus / EXPORT).glob("*.json")):
            if source.name != "SOURCE.json":
                shutil.copy(source, exports / source.name)
        imported = daemon.wait_event("job finished", job="import", timeout=60)
        assert imported["outcome"] == "ok" and imported["imported"] > 0
        assert imported["imported"] + imported["duplicates"] <= records
        # ListenBrainz, empty so far, now has some of those plays and newer ones.
        listenbrainz_listens(corpus / EXPORT, fake_history)
        # The import's retrain may take the one worker thread first: the pull waits for it.
        pulled = daemon.wait_event("job finished", job="pull", timeout=240, imported=LB_NEW)
        assert pulled["outcome"] == "ok" and pulled["duplicates"] == LB_OVERLAP
        trained = daemon.wait_event("job finished", job="train", timeout=240)
        assert trained["outcome"] == "ok" and trained["promoted"] is True
        first = daemon.wait_event("job finished", job="first-playlists", timeout=120)
        assert first["outcome"] == "ok" and first["playlists"] == 1 and first["synced"] == 1
        # A weekly run after it updates the same playlist.
        weekly = daemon.wait_event("job finished", job="weekly", timeout=60, outcome="ok")
        assert weekly["synced"] == 1
        code, took = daemon.stop_by_signal(signal.SIGTERM)
        assert code == 0
        assert took < 10
    finally:
        daemon.stop()

    files = playlist_paths(data_dir, PLAYLIST)
    document = json.loads(files.json.read_text(encoding="utf-8"))
    assert len(document["tracks"]) == 20 and all(t["reason"] for t in document["tracks"])
    m3u = [
        line
        for line in files.m3u8.read_text(encoding="utf-8").splitlines()
        if not line.startswith("#")
    ]
    assert m3u == [t["uri"] for t in document["tracks"]]
    (spotify,) = fake_spotify.playlists_named(PLAYLIST)
    assert spotify.items == m3u
    plays = db_rows(data_dir, "SELECT count(*) FROM play")[0][0]
    ledger = db_rows(data_dir, "SELECT sha256, imported FROM imported_file ORDER BY id")
    by_source = dict(db_rows(data_dir, "SELECT source, count(*) FROM play GROUP BY source"))
    # The listens ListenBrainz shares with the export are stored once, as the export's
    # (richer) records; only the newer ones stay ListenBrainz's.
    assert by_source == {"extended": plays - LB_NEW, "listenbrainz": LB_NEW}
    assert plays - LB_NEW == imported["imported"]
    assert not same_listening_twice(data_dir)

    # -- second life: nothing twice -------------------------------------------------------------
    posts_before = fake_spotify.count("POST", r"/me/playlists$")
    again = DaemonProcess(["run"], env)
    try:
        again.wait_event("daemon started", timeout=60)
        # A weekly slot passed while it was down: caught up, then the next slots run as usual.
        again.wait_event("job finished", job="weekly", timeout=60, outcome="ok")
        mark = len(again.events)
        again.wait_event("job finished", job="weekly", timeout=60, outcome="ok", start=mark)
        status = json.loads(run_songnet(["status", "--json"], env).stdout)
        again.signal(signal.SIGTERM)
        assert again.wait(timeout=15) == 0
    finally:
        again.stop()
    assert not again.named("job started", job="import"), "an export was imported again"
    assert not again.named("job started", job="train"), "nothing new, nothing to train"
    assert db_rows(data_dir, "SELECT count(*) FROM play")[0][0] == plays
    pulls = again.named("job finished", job="pull")
    # A pull under way when SIGTERM came ends "interrupted"; none brought anything twice.
    assert pulls and all(p["outcome"] in (OK, INTERRUPTED) for p in pulls)
    assert pulls[0]["outcome"] == OK and all(p["imported"] == 0 for p in pulls)
    assert status["sources"][0]["source"] == "listenbrainz"
    assert status["sources"][0]["error"] is None
    assert db_rows(data_dir, "SELECT sha256, imported FROM imported_file ORDER BY id") == ledger
    assert set(status["jobs"]) == EXPECTED_JOBS  # the same jobs as before, once each
    # Each weekly slot ran at most once, across both lives.
    assert not db_rows(
        data_dir,
        "SELECT scheduled_for FROM run_record WHERE job = 'weekly' AND outcome = 'ok' "
        "GROUP BY scheduled_for HAVING count(*) > 1",
    )
    assert [p["name"] for p in status["playlists"]] == [PLAYLIST]
    assert status["playlists"][0]["last_error"] is None
    assert len(fake_spotify.playlists_named(PLAYLIST)) == 1, "a second playlist was created"
    assert fake_spotify.count("POST", r"/me/playlists$") == posts_before
    assert sorted(p.name for p in files.m3u8.parent.iterdir()) == sorted(
        [files.m3u8.name, files.json.name]
    )
