"""The daemon's steps: import, train, publish playlists — each a recorded, logged job.

`Jobs.run` is the frame every step runs in: it takes the data directory's write lock (so a
manual `songnet sync` never runs beside one), records the run in table `run_record`, logs
start and end with duration, outcome and counts, and turns an exception into a failed run
with a log line that says what to do. A run that never finished (kill -9, power cut) stays
in `run_record` without an outcome, which is how the daemon knows to do it again.

The daemon (`daemon.py`) decides when each step runs; `songnet run --once` runs them in
order. Both pass the same stop event: a step checks it between files, at training batch
boundaries and between playlists, so SIGTERM never waits for a whole step.

Training and generation run in a child process (`service/child_tasks.py`), so the daemon
never loads torch; the stop request is passed on to the child as SIGTERM.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from service import playlist_store, tables
from service.lock import FileLock, read_holder, write_lock_file
from service.playlist_shape import Playlist
from service.playlist_sink import Interrupted, PlaylistSink, SinkOutcome
from service.settings import Settings
from service.sinks import playlists_dir
from service.sources import HistorySource

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
    deferred_sinks: dict[str, float] = field(default_factory=dict)  # sink name -> earliest retry
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
        retry_hint: Callable[[str], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.stop = stop or threading.Event()
        self.clock = clock
        self.lock_poll_seconds = lock_poll_seconds
        self.retry_hint = retry_hint  # job -> when it is tried again (the daemon knows)
        self.current: tuple[str, float] | None = None  # (job, started at) while one runs
        self._idle = threading.Event()
        self._idle.set()
        self._spotify_off_logged = False
        self._source_problems_logged: set[str] = set()

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
            from service.child_process import ChildJobError

            run.outcome = FAILED
            run.error = f"{type(exc).__name__}: {exc}"
            hint = (self.retry_hint(job) if self.retry_hint else None) or _hint(job)
            # A child that died or failed said what happened; the daemon's stack adds nothing.
            child = isinstance(exc, ChildJobError)
            log.error("job failed", job=job, error=run.error, hint=hint, exc_info=not child)
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

    def bring_in(
        self,
        job: str,
        sources: Sequence[HistorySource],
        *,
        counts: dict[str, int] | None = None,
        **detail: Any,
    ) -> JobRun:
        """Bring in what each source has that is new (`HistorySource.bring_in`), one source
        after another, one failing not stopping the others; a stop request is honoured
        between sources (and within one, between files or pages)."""

        extra = counts

        def body(run: JobRun) -> None:
            from service.features import recompute_features

            counts = {
                "sources": 0,
                "imported": 0,
                "duplicates": 0,
                "failed": 0,
                "ignored": 0,
                "already": 0,
            }
            errors: list[str] = []
            for source in sources:
                if self.stop.is_set():
                    run.outcome = INTERRUPTED
                    break
                brought = source.bring_in(
                    self.engine, clock=self.clock, should_stop=self.stop.is_set
                )
                counts["sources"] += 1
                for result in brought.results:
                    counts["imported"] += result.imported
                    counts["duplicates"] += result.duplicates
                    counts["failed"] += result.status == "failed"
                    counts["ignored"] += result.status == "ignored"
                    counts["already"] += result.status == "already-imported"
                errors += brought.errors
                if brought.stopped:
                    run.outcome = INTERRUPTED
            run.counts.update(counts, **(extra or {}))
            if counts["imported"]:
                # The feature cache describes the whole history; new plays change it.
                run.counts["features"] = recompute_features(self.engine, tz=self.settings.zone)
            if errors and run.outcome == OK:
                run.outcome = FAILED
                run.error = "; ".join(errors)

        return self.run(job, body, **detail)

    def import_files(
        self, files: list[Path], *, on_file_done: Callable[[Path], None] | None = None
    ) -> JobRun:
        """Import `files` one by one (a stop request is honoured between files)."""
        from service.export_folder import ExportFiles

        return self.bring_in(
            "import", [ExportFiles(files, on_file_done=on_file_done)], files=len(files)
        )

    def pull_sources(self) -> JobRun:
        """Pull every configured history source; one failing does not stop the others."""
        from service.pull import Pulled
        from service.sources import usable_sources

        def sleep(seconds: float) -> None:
            self.stop.wait(seconds)  # shutdown cuts a rate-limit wait short

        sources, problems = usable_sources(self.settings, sleep=sleep)
        # A source set up without what it needs: said once per start (and by `songnet
        # status`), not at every poll; the other sources are pulled all the same.
        for problem in problems:
            if problem.source not in self._source_problems_logged:
                self._source_problems_logged.add(problem.source)
                log.error(
                    "history source not usable",
                    source=problem.source,
                    error=problem.error,
                    hint=problem.hint,
                )
        return self.bring_in(
            "pull", [Pulled(s) for s in sources], counts={"not_usable": len(problems)}
        )

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

    def has_plays(self) -> bool:
        with Session(self.engine) as session:
            return session.exec(select(tables.PlayRow.id).limit(1)).first() is not None

    def train(self, *, reason: str) -> JobRun:
        def body(run: JobRun) -> None:
            # In a child process: the daemon never loads torch (service/child_process.py).
            from service.child_tasks import train_in_child
            from service.training import MIN_TRAIN_SESSIONS, listening_sessions, too_small_note

            new_plays, _ = self.untrained_plays()
            run.counts["new_plays"] = new_plays
            if not self.has_promoted_model():
                # A library too small to train is no failure: its playlists use the simple
                # rules until it grows (once a model exists the library only grows).
                sessions = listening_sessions(self.engine, self.settings)
                if sessions < MIN_TRAIN_SESSIONS:
                    run.outcome = SKIPPED
                    run.counts.update(sessions=sessions, sessions_needed=MIN_TRAIN_SESSIONS)
                    log.info(
                        "library too small to train", why=too_small_note(sessions, self.settings)
                    )
                    return
            outcome = train_in_child(self.settings, stop=self.stop)
            run.counts.update(_train_counts(outcome))
            if getattr(outcome, "stopped", False):
                run.outcome = INTERRUPTED

        return self.run("train", body, reason=reason)

    # -- playlists -------------------------------------------------------------------------

    def ever_generated(self) -> bool:
        return playlist_store.ever_generated(self.engine)

    def publish(self, job: str, *, reason: str, scheduled_for: int | None = None) -> JobRun:
        """Generate the configured playlists and hand them to each sink (the files, Spotify…)."""

        def body(run: JobRun) -> None:
            if not self.has_plays():
                run.outcome = SKIPPED
                run.counts["playlists"] = 0
                log.warning(
                    "no plays yet, so no playlists",
                    hint=f"put your Spotify export into {self.settings.export_dir}; songnet imports it and trains",
                )
                return
            if not self.has_promoted_model():
                log.info(
                    "no model yet: playlists from the simple rules",
                    why="`songnet status` says what a model needs",
                )
            # Generated in a child process, like training; the store and the sinks stay here.
            from service.child_tasks import generate_in_child
            from service.publish import deliver, from_child

            now = int(self.clock())
            results = generate_in_child(
                self.settings, list(self.settings.playlists), now=now, stop=self.stop
            )
            done = from_child(results)
            try:
                deliver(self.engine, done, self._sinks(), now=now, should_stop=self.stop.is_set)
            except Interrupted:  # shutdown during a sink's wait
                run.outcome = INTERRUPTED
                return
            if done.stopped:
                run.outcome = INTERRUPTED
            generated, failed = done.playlists, len(done.failed)
            run.counts.update(
                playlists=len(generated),
                failed=failed,
                tracks=sum(len(p.tracks) for p in generated),
            )
            self._count_outcomes(run, done.outcomes)
            if failed and run.outcome == OK:
                run.outcome = FAILED
                run.error = f"{failed} playlist(s) could not be generated"

        return self.run(job, body, scheduled_for=scheduled_for, reason=reason)

    def retry_deferred_syncs(self) -> JobRun:
        """Write again the lists a remote sink deferred (the same lists, not new ones)."""

        def body(run: JobRun) -> None:
            now = self.clock()
            waiting = playlist_store.deferred(self.engine)
            stored = self.stored_playlists()
            sinks = self._sinks()
            # Each sink gets again only what it deferred and is now due.
            due: dict[str, list[Playlist]] = {}
            for sink in sinks:
                times = waiting.get(sink.name, {})
                due[sink.name] = [
                    p for p in stored if p.config_id in times and times[p.config_id] <= now + 1
                ]
            run.counts["playlists"] = len({p.config_id for ps in due.values() for p in ps})
            outcomes: dict[str, Sequence[SinkOutcome]] = {}
            try:
                for sink in sinks:
                    if due[sink.name]:
                        outcomes[sink.name] = sink.write(due[sink.name], now=int(now))
                        playlist_store.record_outcomes(
                            self.engine, sink.name, outcomes[sink.name], int(now)
                        )
            except Interrupted:
                run.outcome = INTERRUPTED
                return
            self._count_outcomes(run, outcomes)

        return self.run("sync-retry", body, reason="sink deferral ended")

    def stored_playlists(self) -> list[Playlist]:
        """The last generated list of each playlist still configured."""
        return list(playlist_store.stored_playlists(self.engine, self.promoted_version()))

    def promoted_version(self) -> int | None:
        with Session(self.engine) as session:
            return session.exec(
                select(tables.ModelVersion.id).where(col(tables.ModelVersion.promoted))
            ).first()

    def _sinks(self) -> list[PlaylistSink]:
        from service.publish import sinks_from_settings

        if not self.settings.spotify_configured and not self._spotify_off_logged:
            log.info(
                "spotify sync is off",
                why="no SONGNET_SPOTIFY_CLIENT_ID / SONGNET_SPOTIFY_CLIENT_SECRET",
                playlists_dir=str(playlists_dir(self.settings.data_dir)),
                hint="playlists are written as .m3u8 and .json files; see docs/spotify-app.md to sync them",
            )
            self._spotify_off_logged = True
        return sinks_from_settings(self.engine, self.settings, stop=self.stop)

    def _count_outcomes(self, run: JobRun, outcomes: dict[str, Sequence[SinkOutcome]]) -> None:
        """The remote sinks' outcomes as the run's "synced" counts; deferrals to retry."""
        synced = deferred = failed = 0
        local_failed = 0
        for name, results in outcomes.items():
            remote = name != "files"
            for result in results:
                if result.status == "deferred" and result.deferred_until is not None:
                    deferred += 1
                    at = float(result.deferred_until)
                    run.deferred[result.config_id] = min(at, run.deferred.get(result.config_id, at))
                    run.deferred_sinks[name] = min(at, run.deferred_sinks.get(name, at))
                elif result.status == "written":
                    synced += remote
                elif remote:
                    failed += 1
                else:
                    local_failed += 1
        run.counts.update(synced=synced, sync_deferred=deferred, sync_failed=failed)
        if failed or local_failed:
            run.outcome = FAILED
            run.error = (
                f"{failed + local_failed} playlist write(s) failed; `songnet status` says why"
            )
        elif deferred and run.outcome == OK:
            run.outcome = DEFERRED

    def deferred_syncs(self) -> dict[str, int]:
        """Playlists whose write waits for a time a sink named (id -> the earliest, epoch s)."""
        earliest: dict[str, int] = {}
        for waiting in playlist_store.deferred(self.engine).values():
            for config_id, at in waiting.items():
                earliest[config_id] = min(at, earliest.get(config_id, at))
        return earliest

    def deferred_sinks(self, *, after: float | None = None) -> dict[str, int]:
        """Sinks that deferred a playlist's write (name -> the earliest time, epoch s), only
        the deferrals past `after` if given."""
        earliest: dict[str, int] = {}
        for sink, waiting in playlist_store.deferred(self.engine).items():
            times = [at for at in waiting.values() if after is None or at > after]
            if times:
                earliest[sink] = min(times)
        return earliest

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
