"""The daemon's steps: import, train, publish playlists — each a recorded, logged job.

`Jobs.run` is the frame every step runs in: it takes the data directory's write lock (so a
manual `songnet sync` never runs beside one), records the run in table `run_record`, logs
start and end with duration, outcome and counts, and turns an exception into a failed run
with a log line that says what to do. A run that never finished (kill -9, power cut) stays
in `run_record` without an outcome, which is how the daemon knows to do it again.

The daemon (`daemon.py`) decides when each step runs; `songnet run --once` runs them in
order. Both pass the same stop event: a step checks it between files, at training batch
boundaries and between playlists, so SIGTERM never waits for a whole step.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from service import tables
from service.lock import FileLock, read_holder, write_lock_file
from service.playlist_shape import Playlist
from service.settings import PlaylistConfig, Settings
from service.sinks import playlists_dir, write_playlist_files

log = structlog.get_logger(__name__)

# Outcomes in `run_record.outcome`.
OK, FAILED, DEFERRED, INTERRUPTED, SKIPPED = "ok", "failed", "deferred", "interrupted", "skipped"


@dataclass
class JobRun:
    """What one run of a step did."""

    job: str
    outcome: str = OK
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    deferred: dict[str, float] = field(default_factory=dict)  # playlist id -> retry at (epoch s)
    record_id: int | None = None
    started: bool = False  # False: cancelled before it began (stop requested)


class Jobs:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        lock_poll_seconds: float = 0.5,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.stop = stop or threading.Event()
        self.clock = clock
        self.lock_poll_seconds = lock_poll_seconds
        self.current: tuple[str, float] | None = None  # (job, started at) while one runs
        self._idle = threading.Event()
        self._idle.set()
        self._spotify_off_logged = False

    # -- the frame -------------------------------------------------------------------------

    def run(
        self,
        job: str,
        body: Callable[[JobRun], None],
        *,
        scheduled_for: int | None = None,
        **detail: Any,
    ) -> JobRun:
        """Run `body` as job `job`: locked, recorded and logged; never raises."""
        run = JobRun(job)
        if self.stop.is_set():
            return run
        lock = self._take_write_lock(job)
        if lock is None:
            return run
        self._idle.clear()
        started = self.clock()
        started_mono = time.monotonic()
        self.current = (job, started)
        run.started = True
        try:
            run.record_id = self._record_start(job, int(started), scheduled_for, detail)
            log.info("job started", job=job, **detail)
            body(run)
        except Exception as exc:
            run.outcome = FAILED
            run.error = f"{type(exc).__name__}: {exc}"
            log.exception("job failed", job=job, error=run.error, hint=_hint(job))
        finally:
            duration = round(time.monotonic() - started_mono, 3)
            try:
                self._record_end(run, detail)
            except Exception as exc:  # the log line below still says how it went
                log.warning("could not record the job's end", job=job, error=str(exc))
            self.current = None
            lock.release()
            self._idle.set()
            log.info(
                "job finished", job=job, outcome=run.outcome, duration_s=duration, **run.counts
            )
        return run

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no step is running (at most `timeout` s); whether that happened."""
        return self._idle.wait(timeout)

    def _take_write_lock(self, job: str) -> FileLock | None:
        lock = FileLock(write_lock_file(self.settings.data_dir), f"songnet run: {job}")
        logged = False
        while not lock.try_acquire():
            if not logged:
                holder = read_holder(write_lock_file(self.settings.data_dir))
                log.info(
                    "waiting for the data directory", job=job, holder=holder or "another process"
                )
                logged = True
            if self.stop.wait(self.lock_poll_seconds):
                return None
        return lock

    def _record_start(
        self, job: str, started: int, scheduled_for: int | None, detail: dict[str, Any]
    ) -> int:
        with Session(self.engine) as session:
            row = tables.RunRecord(
                job=job,
                scheduled_for=scheduled_for,
                started_at=started,
                detail_json=json.dumps(detail, default=str),
            )
            session.add(row)
            session.commit()
            assert row.id is not None
            return row.id

    def _record_end(self, run: JobRun, detail: dict[str, Any]) -> None:
        if run.record_id is None:
            return
        with Session(self.engine) as session:
            row = session.get(tables.RunRecord, run.record_id)
            if row is None:
                return
            row.finished_at = int(self.clock())
            row.outcome = run.outcome
            row.detail_json = json.dumps({**detail, **run.counts, "error": run.error}, default=str)
            session.add(row)
            session.commit()

    # -- import ----------------------------------------------------------------------------

    def import_files(
        self, files: list[Path], *, on_file_done: Callable[[Path], None] | None = None
    ) -> JobRun:
        """Import `files` one by one (a stop request is honoured between files)."""

        def body(run: JobRun) -> None:
            from service.features import recompute_features
            from service.importer import import_session

            counts = {
                "files": 0,
                "imported": 0,
                "duplicates": 0,
                "failed": 0,
                "ignored": 0,
                "already": 0,
            }
            # One session for the job: the library's maps are loaded once, not once per file.
            with import_session(self.engine, clock=self.clock) as session:
                for path in files:
                    if self.stop.is_set():
                        run.outcome = INTERRUPTED
                        break
                    for result in session.import_paths([path]):
                        counts["files"] += 1
                        counts["imported"] += result.imported
                        counts["duplicates"] += result.duplicates
                        counts["failed"] += result.status == "failed"
                        counts["ignored"] += result.status == "ignored"
                        counts["already"] += result.status == "already-imported"
                    if on_file_done is not None:
                        on_file_done(path)
            run.counts.update(counts)
            if counts["imported"]:
                run.counts["features"] = recompute_features(self.engine, tz=self.settings.zone)
            if counts["failed"] and run.outcome == OK:
                run.outcome = FAILED
                run.error = f"{counts['failed']} file(s) failed to import; see the log lines above"

        return self.run("import", body, files=len(files))

    # -- training --------------------------------------------------------------------------

    def untrained_plays(self) -> tuple[int, bool]:
        """(plays stored since the newest model's data, whether any model exists)."""
        with Session(self.engine) as session:
            watermark = session.exec(select(func.max(tables.ModelVersion.watermark_play_id))).one()
            has_model = watermark is not None
            count = session.exec(
                select(func.count())
                .select_from(tables.PlayRow)
                .where(col(tables.PlayRow.id) > (watermark or 0))
            ).one()
        return int(count), has_model

    def has_promoted_model(self) -> bool:
        with Session(self.engine) as session:
            found = session.exec(
                select(tables.ModelVersion.id).where(col(tables.ModelVersion.promoted))
            ).first()
        return found is not None

    def train(self, *, reason: str) -> JobRun:
        def body(run: JobRun) -> None:
            from service.training import train_and_maybe_promote

            new_plays, _ = self.untrained_plays()
            run.counts["new_plays"] = new_plays
            outcome = train_and_maybe_promote(
                self.engine, self.settings, should_stop=self.stop.is_set
            )
            run.counts.update(_train_counts(outcome))
            if getattr(outcome, "stopped", False):
                run.outcome = INTERRUPTED

        return self.run("train", body, reason=reason)

    # -- playlists -------------------------------------------------------------------------

    def ever_generated(self) -> bool:
        with Session(self.engine) as session:
            found = session.exec(
                select(tables.PlaylistState.config_id).where(
                    col(tables.PlaylistState.last_generated_at).is_not(None)
                )
            ).first()
        return found is not None

    def playlist_configs(self) -> list[PlaylistConfig]:
        from service.playlists import default_playlist_config

        if self.settings.playlists:
            return list(self.settings.playlists)
        return [default_playlist_config(self.engine, self.settings)]

    def publish(self, job: str, *, reason: str, scheduled_for: int | None = None) -> JobRun:
        """Generate the configured playlists, write their files, and sync them to Spotify."""

        def body(run: JobRun) -> None:
            if not self.has_promoted_model():
                run.outcome = SKIPPED
                run.counts["playlists"] = 0
                log.warning(
                    "no model yet, so no playlists",
                    hint=f"put your Spotify export into {self.settings.export_dir}; songnet trains once it is imported",
                )
                return
            from service.playlists import generate_for_config
            from service.spotify.sync import record_generated

            now = int(self.clock())
            generated: list[Playlist] = []
            failed = 0
            for config in self.playlist_configs():
                if self.stop.is_set():
                    run.outcome = INTERRUPTED
                    break
                try:
                    playlist = generate_for_config(self.engine, self.settings, config, now=now)
                except Exception as exc:
                    failed += 1
                    log.exception("playlist not generated", playlist=config.name, error=str(exc))
                    self._note_playlist_error(config, f"generation failed: {exc}")
                    continue
                paths = write_playlist_files(self.settings.data_dir, playlist, generated_at=now)
                record_generated(self.engine, config, playlist, now)
                log.info(
                    "playlist written",
                    playlist=config.name,
                    tracks=len(playlist.tracks),
                    m3u8=str(paths.m3u8),
                )
                generated.append(playlist)
            run.counts.update(
                playlists=len(generated),
                failed=failed,
                tracks=sum(len(p.tracks) for p in generated),
            )
            if generated and not self.stop.is_set():
                self._sync(run, generated)
            if failed and run.outcome == OK:
                run.outcome = FAILED
                run.error = f"{failed} playlist(s) could not be generated"

        return self.run(job, body, scheduled_for=scheduled_for, reason=reason)

    def retry_deferred_syncs(self) -> JobRun:
        """Sync again the lists whose sync Spotify deferred (the same lists, not new ones)."""

        def body(run: JobRun) -> None:
            now = self.clock()
            due = {cid for cid, at in self.deferred_syncs().items() if at <= now + 1}
            stored = [p for p in self.stored_playlists() if p.config_id in due]
            run.counts["playlists"] = len(stored)
            if stored:
                self._sync(run, stored)

        return self.run("sync-retry", body, reason="spotify deferral ended")

    def stored_playlists(self) -> list[Playlist]:
        """The last generated list of each playlist still configured, from `playlist_state`."""
        model = self.promoted_version()
        with Session(self.engine) as session:
            rows = session.exec(select(tables.PlaylistState)).all()
        return [
            StoredPlaylist(
                config_id=row.config_id,
                name=row.name,
                tracks=[
                    StoredTrack(
                        track_id=t.get("track_id"),
                        artist=t["artist"],
                        title=t["title"],
                        uri=t.get("uri"),
                        reason=t.get("reason", ""),
                        is_seed=bool(t.get("seed")),
                    )
                    for t in json.loads(row.tracks_json or "[]")
                ],
                model_version=model,
            )
            for row in rows
            if not row.removed_from_config and row.last_generated_at is not None
        ]

    def promoted_version(self) -> int | None:
        with Session(self.engine) as session:
            return session.exec(
                select(tables.ModelVersion.id).where(col(tables.ModelVersion.promoted))
            ).first()

    def _sync(self, run: JobRun, playlists: list[Playlist]) -> None:
        if not self.settings.spotify_configured:
            if not self._spotify_off_logged:
                log.info(
                    "spotify sync is off",
                    why="no SONGNET_SPOTIFY_CLIENT_ID / SONGNET_SPOTIFY_CLIENT_SECRET",
                    playlists_dir=str(playlists_dir(self.settings.data_dir)),
                    hint="playlists are written as .m3u8 and .json files; see docs/spotify-app.md to sync them",
                )
                self._spotify_off_logged = True
            run.counts["synced"] = 0
            return
        from service.spotify.errors import Interrupted
        from service.spotify.sync import sync_playlists

        try:
            outcomes = sync_playlists(self.engine, self.settings, playlists, stop=self.stop)
        except Interrupted:
            run.outcome = INTERRUPTED
            return
        synced = deferred = failed = 0
        for result in outcomes:
            if result.status == "deferred" and result.deferred_until is not None:
                deferred += 1
                run.deferred[result.config_id] = float(result.deferred_until)
            elif result.status == "written":
                synced += 1
            else:
                failed += 1
        run.counts.update(synced=synced, sync_deferred=deferred, sync_failed=failed)
        if failed:
            run.outcome = FAILED
            run.error = f"{failed} playlist(s) not synced to Spotify; `songnet status` says why"
        elif deferred and run.outcome == OK:
            run.outcome = DEFERRED

    def _note_playlist_error(self, config: PlaylistConfig, error: str) -> None:
        with Session(self.engine) as session:
            row = session.get(tables.PlaylistState, config.id) or tables.PlaylistState(
                config_id=config.id, name=config.name
            )
            row.last_error = error
            session.add(row)
            session.commit()

    def deferred_syncs(self) -> dict[str, int]:
        """Playlists whose Spotify sync waits for a time Spotify named (id -> epoch s)."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(tables.PlaylistState).where(
                    col(tables.PlaylistState.deferred_until).is_not(None)
                )
            ).all()
        return {r.config_id: int(r.deferred_until or 0) for r in rows if not r.removed_from_config}

    # -- run records -----------------------------------------------------------------------

    def last_started(self, job: str, *, finished_only: bool = False) -> int | None:
        """When `job` last started and (optionally) finished other than interrupted."""
        with Session(self.engine) as session:
            query = select(func.max(tables.RunRecord.started_at)).where(tables.RunRecord.job == job)
            if finished_only:
                query = query.where(col(tables.RunRecord.outcome).is_not(None)).where(
                    tables.RunRecord.outcome != INTERRUPTED
                )
            value = session.exec(query).one()
        return None if value is None else int(value)


@dataclass(frozen=True)
class StoredTrack:
    track_id: int | None
    artist: str
    title: str
    uri: str | None
    reason: str
    is_seed: bool


@dataclass(frozen=True)
class StoredPlaylist:
    """A generated list as `playlist_state` keeps it (for a deferred sync's retry)."""

    config_id: str
    name: str
    tracks: list[StoredTrack]
    model_version: int | None


def _train_counts(outcome: Any) -> dict[str, Any]:
    counts: dict[str, Any] = {"promoted": bool(getattr(outcome, "promoted", False))}
    for name in ("model_version", "model_id", "plays", "epochs", "reason"):
        value = getattr(outcome, name, None)
        if value is not None:
            counts[name] = value
    metrics = getattr(outcome, "metrics", None)
    if isinstance(metrics, dict):
        counts.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    return counts


def _hint(job: str) -> str:
    return {
        "import": "the files stay in the export folder; fix or replace them and they are imported again",
        "train": "the previous model stays in use; the next import or scheduled run trains again",
    }.get(job, "the daemon carries on; the next scheduled run tries again")
