"""`songnet run`: the scheduler, its jobs, catching up, and a clean shutdown.

One APScheduler `BackgroundScheduler` with two executors:

- `worker`, ONE thread, for everything that touches the database or the model — the folder
  watch (import), retraining, the weekly playlists, deferred sink writes. `max_instances=1` alone
  only stops two copies of the same job; one thread stops an import from running beside a
  training.
- `heartbeat`, its own thread, so that a long training does not look like a hang.

`job_defaults`: `coalesce=True` (a backlog of missed runs runs once) and a misfire grace of
hours (APScheduler's default of one second silently drops a weekly run missed by a reboot).
The job store is in memory; songnet's own `run_record` table is what says whether a weekly
run happened, so at start-up a scheduled time that passed without a run is caught up once
(re-adding a job would only reset its next run time).

Jobs: the folder watch (interval polling), a debounced retrain after imports that added at
least `retrain_min_new_plays` plays, a periodic retrain `retrain_lead_minutes` before each
weekly run, the weekly run on `SONGNET_SCHEDULE` (standard cron, in `SONGNET_TIMEZONE`), and
the heartbeat. When the first model is promoted, or a library too small to train came in and
no playlist was ever generated (its playlists come from the simple rules until a model
exists), the playlists are generated at once. A sink's deferral (Spotify's rate limit or quota, say)
schedules one retry (`sync-retry`) at the earliest time a sink named; each sink then gets
again what it deferred.

Shutdown (SIGTERM/SIGINT): the stop event is set, scheduling stops, the running step finishes
or stops at its next check (training at a batch boundary, without promoting), the database is
closed. Time is injected (`clock`) for everything songnet decides itself.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from service import kv
from service.cron import parse_crontab
from service.export_folder import ExportFolder
from service.jobs import DEFERRED, FAILED, SKIPPED, JobRun, Jobs
from service.logging import register_secret
from service.settings import Settings
from service.sources import any_configured
from service.watch import ExportWatcher

log = structlog.get_logger(__name__)

WORKER = "worker"
HEARTBEAT_EXECUTOR = "heartbeat"

JOB_WATCH = "watch-exports"
JOB_PULL = "pull-sources"
JOB_RETRAIN = "retrain-after-import"
JOB_PERIODIC_RETRAIN = "retrain-before-weekly"
JOB_WEEKLY = "weekly-playlists"
JOB_HEARTBEAT = "heartbeat"
JOB_START_UP = "start-up-checks"
JOB_CATCH_UP = "weekly-catch-up-check"
CATCH_UP_CHECK_MINUTES = 10
JOB_SYNC_RETRY = "sync-retry"  # the deferred writes of every sink

MISFIRE_GRACE_SECONDS = 12 * 3600
# From the stop request (SIGTERM/SIGINT) on: the running step gets SHUTDOWN_GRACE_SECONDS to
# stop; the shutdown as a whole (the final heartbeat and state included) is cut off after
# STOP_SECONDS, whatever hangs, so that the process exits 0 within 10 s.
SHUTDOWN_GRACE_SECONDS = 7.0
STOP_SECONDS = 8.0  # 2 s to spare for a loaded machine to get the process ended
# The final heartbeat and state wait this long for another writer to the database (a
# `songnet import` by hand, say), then are left out: `health` then finds the heartbeat stale.
FINAL_WRITE_BUSY_MS = 500
# A wait on the stop request wakes this often. The kernel may hand SIGTERM to any thread;
# Python's handler then runs only once the main thread executes bytecode again, which a
# long or untimed wait does not (seen in CI: a daemon deaf to SIGTERM for 30 s).
STOP_POLL_SECONDS = 0.25

REASON_IMPORT = "new plays imported"
REASON_PERIODIC = "before the weekly run"
REASON_START_UP = "untrained plays at start-up"


class LeadTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires `lead` before each fire time of `trigger` (the retrain before the weekly run)."""

    def __init__(self, trigger: BaseTrigger, lead: timedelta) -> None:
        self.trigger = trigger
        self.lead = lead

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        shifted_previous = _shift(previous_fire_time, self.lead) if previous_fire_time else None
        upcoming = self.trigger.get_next_fire_time(shifted_previous, _shift(now, self.lead))
        return None if upcoming is None else _shift(upcoming, -self.lead)

    def __str__(self) -> str:
        return f"{self.trigger} minus {self.lead}"


def _shift(moment: datetime, delta: timedelta) -> datetime:
    # In UTC, so that a lead across a DST change is still the real duration.
    assert moment.tzinfo is not None
    return (moment.astimezone(UTC) + delta).astimezone(moment.tzinfo)


class StopEvent(threading.Event):
    """The stop request. It remembers when it was first made (`time.monotonic()`) and by
    which signal, so that the shutdown's deadlines count from the signal itself."""

    requested_at: float | None = None
    signal_name: str | None = None

    def set(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        super().set()

    def wait(self, timeout: float | None = None) -> bool:
        """`Event.wait`, in steps of STOP_POLL_SECONDS, so that a signal the kernel gave to
        another thread still reaches the main thread's handler within a step."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = STOP_POLL_SECONDS
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return self.is_set()
            if super().wait(step):
                return True


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`. The handler logs nothing: it runs in the main thread
    between two bytecodes, possibly inside a log call whose (not reentrant) lock it would
    then wait on for ever; the main thread logs the request once it sees it."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if isinstance(stop, StopEvent) and stop.signal_name is None:
            stop.signal_name = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


class _SchedulerLogBridge(logging.Handler):
    """APScheduler logs through stdlib logging; its lines go to structlog like ours."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        level = record.levelno
        if "maximum number of running instances reached" in message:
            # Expected with one worker: the watch waits while a training runs.
            level = logging.DEBUG
        structlog.get_logger(record.name).log(level, message, logger=record.name)


def bridge_scheduler_logs() -> None:
    logger = logging.getLogger("apscheduler")
    if not any(isinstance(h, _SchedulerLogBridge) for h in logger.handlers):
        logger.addHandler(_SchedulerLogBridge())
    # Its INFO lines ("Running job …") repeat every few seconds; our jobs log their own.
    logger.setLevel(logging.WARNING)
    logger.propagate = False


class Daemon:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.stop = stop or StopEvent()
        self._beat_lock = threading.Lock()
        register_secret(settings.spotify_client_secret)
        self.zone: tzinfo = settings.zone
        self.schedule = parse_crontab(settings.schedule)
        self.weekly_trigger = self.schedule.trigger(self.zone)
        self.jobs = Jobs(settings, engine, stop=self.stop, clock=clock, retry_hint=self.retry_hint)
        handled = kv.get_json(engine, kv.WATCHED_FILES) or {}
        self.watcher = ExportWatcher(
            settings.export_dir,
            settings.watch_stable_seconds,
            handled={k: (int(v[0]), int(v[1])) for k, v in handled.items()},
            clock=clock,
        )
        self.export_folder = ExportFolder(self.watcher, on_handled=self._keep_handled)
        self.scheduler = self._build_scheduler()

    # -- scheduling ------------------------------------------------------------------------

    def _build_scheduler(self) -> BackgroundScheduler:
        return BackgroundScheduler(
            executors={WORKER: ThreadPoolExecutor(1), HEARTBEAT_EXECUTOR: ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": MISFIRE_GRACE_SECONDS,
                "max_instances": 1,
            },
            timezone=self.zone,
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), self.zone)

    def add_jobs(self) -> None:
        s = self.settings
        now = self._now()
        add = self.scheduler.add_job
        add(
            self.start_up_checks,
            DateTrigger(now),
            id=JOB_START_UP,
            executor=WORKER,
            replace_existing=True,
        )
        add(
            self.watch_exports,
            IntervalTrigger(seconds=s.watch_interval_seconds, timezone=self.zone),
            id=JOB_WATCH,
            executor=WORKER,
            next_run_time=now,
            replace_existing=True,
        )
        if any_configured(s):
            add(
                self.pull_sources,
                IntervalTrigger(seconds=s.source_poll, timezone=self.zone),
                id=JOB_PULL,
                executor=WORKER,
                next_run_time=now,
                replace_existing=True,
            )
        add(
            self.weekly_run,
            self.weekly_trigger,
            id=JOB_WEEKLY,
            executor=WORKER,
            replace_existing=True,
        )
        add(
            self.catch_up_if_due,
            IntervalTrigger(minutes=CATCH_UP_CHECK_MINUTES, timezone=self.zone),
            id=JOB_CATCH_UP,
            executor=WORKER,
            replace_existing=True,
        )
        if s.retrain_lead_minutes > 0:
            add(
                self.retrain,
                LeadTrigger(self.weekly_trigger, timedelta(minutes=s.retrain_lead_minutes)),
                args=[REASON_PERIODIC],
                id=JOB_PERIODIC_RETRAIN,
                executor=WORKER,
                replace_existing=True,
            )
        add(
            self.heartbeat,
            IntervalTrigger(seconds=s.heartbeat_interval_seconds, timezone=self.zone),
            id=JOB_HEARTBEAT,
            executor=HEARTBEAT_EXECUTOR,
            next_run_time=now,
            replace_existing=True,
        )

    def next_runs(self) -> dict[str, float | None]:
        return {
            job.id: (job.next_run_time.timestamp() if job.next_run_time else None)
            for job in self.scheduler.get_jobs()
        }

    def _schedule_once(
        self, func: Callable[..., Any], job_id: str, at: datetime, *args: Any
    ) -> None:
        if self.stop.is_set() or not self.scheduler.running:
            return
        self.scheduler.add_job(
            func,
            DateTrigger(at),
            args=list(args),
            id=job_id,
            executor=WORKER,
            replace_existing=True,
        )

    # -- jobs ------------------------------------------------------------------------------

    def start_up_checks(self) -> None:
        """What a restart must not forget: untrained plays, a missed weekly run, retries."""
        new_plays, has_model = self.jobs.untrained_plays()
        if new_plays and (not has_model or new_plays >= self.settings.retrain_min_new_plays):
            self.retrain(REASON_START_UP)
        caught_up = self.catch_up_if_due()
        if caught_up is None and self.jobs.has_promoted_model() and not self.jobs.ever_generated():
            self.first_playlists()
        deferred = self.jobs.deferred_syncs()
        if deferred:
            self._schedule_sync_retry(
                float(min(deferred.values())),
                sinks=sorted(self.jobs.deferred_sinks()),
                playlists=sorted(deferred),
            )

    def catch_up_if_due(self) -> JobRun | None:
        """A weekly run whose time passed without it (machine off or asleep, a long queue):
        retrain if plays arrived (unless periodic retraining is off), then run it once.
        Checked at start-up and every `CATCH_UP_CHECK_MINUTES`: APScheduler drops a run
        missed by more than its grace."""
        if self.stop.is_set():
            return None
        due = self.due_weekly_run()
        if due is None:
            return None
        log.info(
            "catching up a missed weekly run",
            scheduled_for=datetime.fromtimestamp(due, self.zone).isoformat(),
        )
        if self.settings.retrain_lead_minutes > 0:  # the periodic retrain it missed too
            self.retrain(REASON_PERIODIC)
        return self.weekly_run()

    def watch_exports(self) -> JobRun | None:
        """Import the export files that have become stable since the last look."""
        if self.stop.is_set():
            return None
        files = self.export_folder.poll()
        if not files:
            return None
        return self._brought_in(
            self.jobs.bring_in("import", [self.export_folder], files=len(files))
        )

    def pull_sources(self) -> JobRun | None:
        """Pull ListenBrainz / Last.fm; new plays retrain under the same rule as exports."""
        if self.stop.is_set():
            return None
        return self._brought_in(self.jobs.pull_sources())

    def _brought_in(self, run: JobRun) -> JobRun:
        """Whatever the source: new plays retrain (after a quiet spell)."""
        if run.counts.get("imported", 0) > 0:
            self._schedule_retrain()
        return run

    def _keep_handled(self, _path: Path) -> None:
        kv.set_json(self.engine, kv.WATCHED_FILES, self.watcher.handled)

    def _schedule_retrain(self) -> None:
        """Retrain after a quiet spell, so that files dropped together train once."""
        at = self._now() + timedelta(seconds=self.settings.retrain_debounce_seconds)
        self._schedule_once(self.retrain, JOB_RETRAIN, at, REASON_IMPORT)

    def retrain(self, reason: str = REASON_IMPORT) -> JobRun | None:
        """Train if enough plays arrived since the last model; publish if it is the first."""
        if self.stop.is_set():
            return None
        new_plays, has_model = self.jobs.untrained_plays()
        threshold = self.settings.retrain_min_new_plays
        enough = (
            new_plays > 0
            if (reason == REASON_PERIODIC or not has_model)
            else new_plays >= threshold
        )
        if not enough:
            log.info(
                "retrain not needed",
                reason=reason,
                new_plays=new_plays,
                threshold=threshold,
                has_model=has_model,
            )
            return None
        had_model = self.jobs.has_promoted_model()
        run = self.jobs.train(reason=reason)
        if run.counts.get("promoted") and (not had_model or not self.jobs.ever_generated()):
            # The first model: its playlists now, replacing the simple rules' if there were any.
            self.first_playlists()
        elif run.outcome == SKIPPED and not self.jobs.ever_generated():
            # Too small to train: the simple rules' playlists now, not next week.
            self.first_playlists(reason="library too small to train; simple rules")
        return run

    def retry_hint(self, job: str) -> str | None:
        """When a failed training is tried again, for its log line (None: the generic hint)."""
        if job != "train":
            return None
        threshold = self.settings.retrain_min_new_plays
        periodic = self.scheduler.get_job(JOB_PERIODIC_RETRAIN) if self.scheduler.running else None
        when = (
            f"at {periodic.next_run_time.isoformat()} (before the weekly run), or sooner once imports add {threshold} plays"
            if periodic is not None and periodic.next_run_time is not None
            else f"once imports add {threshold} plays, or at the next start of `songnet run`"
        )
        return f"the promoted model stays in use; training is tried again {when}"

    def first_playlists(self, reason: str = "first model promoted") -> JobRun:
        """A new user's first playlists, right after the first model or after a library too
        small to train came in (not next Monday)."""
        run = self.jobs.publish("first-playlists", reason=reason)
        self._after_publish(run)
        return run

    def due_weekly_run(self) -> int | None:
        """The latest scheduled weekly time that passed without a weekly run, if any."""
        reference = self.jobs.last_started("weekly", finished_only=True)
        state = kv.get_json(self.engine, kv.DAEMON) or {}
        first_started = state.get("first_started_at")
        candidates = [t for t in (reference, first_started) if t is not None]
        if not candidates:
            return None
        after = datetime.fromtimestamp(max(candidates) + 1, self.zone)
        now = self._now()
        due: datetime | None = None
        upcoming = self.weekly_trigger.get_next_fire_time(None, after)
        for _ in range(10_000):  # bounded: a seconds-scale schedule after a long pause
            if upcoming is None or upcoming > now:
                break
            due = upcoming
            upcoming = self.weekly_trigger.get_next_fire_time(None, upcoming + timedelta(seconds=1))
        return None if due is None else int(due.timestamp())

    def weekly_run(self) -> JobRun | None:
        """The scheduled generate-and-sync; does nothing if this slot already ran."""
        if self.stop.is_set():
            return None
        due = self.due_weekly_run()
        if due is None:
            log.debug("weekly run already done for this slot")
            return None
        run = self.jobs.publish("weekly", reason="schedule", scheduled_for=due)
        self._after_publish(run)
        return run

    def retry_syncs(self) -> JobRun | None:
        """Sync again the playlists whose deferral has ended; reschedule the rest."""
        if self.stop.is_set():
            return None
        run = self.jobs.retry_deferred_syncs()
        self._after_publish(run)
        later = self.jobs.deferred_sinks(after=self.clock() + 1)
        if later and not run.deferred:
            self._schedule_sync_retry(float(min(later.values())), sinks=sorted(later))
        return run

    def _after_publish(self, run: JobRun) -> None:
        if run.deferred:
            self._schedule_sync_retry(
                min(run.deferred.values()),
                sinks=sorted(run.deferred_sinks),
                playlists=sorted(run.deferred),
            )

    def _schedule_sync_retry(
        self, retry_at: float, *, sinks: list[str], playlists: list[str] | None = None
    ) -> None:
        """Come back when the sinks said to (one job for every sink's deferred playlists)."""
        at = datetime.fromtimestamp(max(retry_at, self.clock()), self.zone)
        existing = self.scheduler.get_job(JOB_SYNC_RETRY) if self.scheduler.running else None
        if (
            existing is not None
            and existing.next_run_time is not None
            and existing.next_run_time <= at
        ):
            return
        log.info(
            "playlist write deferred", sinks=sinks, playlists=playlists, retry_at=at.isoformat()
        )
        self._schedule_once(self.retry_syncs, JOB_SYNC_RETRY, at)

    def heartbeat(self, *, stopped: bool = False, lock_timeout: float = -1) -> bool:
        """Proof of life for `songnet health`, with what runs now and what runs next; whether
        it was written. The final beat (`stopped`) waits at most `lock_timeout` s for a
        regular one and `FINAL_WRITE_BUSY_MS` for another writer to the database."""
        if not self._beat_lock.acquire(timeout=lock_timeout):
            return False
        try:
            # After the stop request only the final beat (stopped) is written: a late
            # regular one must not make a stopped daemon look alive.
            if self.stop.is_set() and not stopped:
                return False
            current = self.jobs.current
            value = {
                "at": self.clock(),
                "pid": os.getpid(),
                "job": current[0] if current else None,
                "job_since": current[1] if current else None,
                "jobs": self.next_runs() if self.scheduler.running else {},
                "stopped": stopped,
            }
            try:
                kv.set_json(
                    self.engine,
                    kv.HEARTBEAT,
                    value,
                    busy_timeout_ms=FINAL_WRITE_BUSY_MS if stopped else None,
                )
            except Exception as exc:  # a busy database must not kill the heartbeat thread
                log.warning("heartbeat not written", error=str(exc))
                return False
            return True
        finally:
            self._beat_lock.release()

    # -- lifecycle -------------------------------------------------------------------------

    def _record_start(self) -> None:
        state = kv.get_json(self.engine, kv.DAEMON) or {}
        now = int(self.clock())
        state.setdefault("first_started_at", now)
        state.update(started_at=now, pid=os.getpid(), stopped_at=None)
        kv.set_json(self.engine, kv.DAEMON, state)

    def start(self) -> None:
        bridge_scheduler_logs()
        self._record_start()
        try:  # so that the folder to drop exports into is there to be found
            self.settings.export_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning(
                "export folder missing and not creatable",
                export_dir=str(self.settings.export_dir),
                error=str(exc),
            )
        self.add_jobs()
        self.scheduler.start()
        log.info(
            "daemon started",
            data_dir=str(self.settings.data_dir),
            export_dir=str(self.settings.export_dir),
            schedule=self.settings.schedule,
            timezone=str(self.zone),
            spotify=self.settings.spotify_configured,
            next_weekly_run=_iso(self.scheduler.get_job(JOB_WEEKLY).next_run_time),
        )

    def run_forever(self, *, install_signal_handlers: bool = True) -> bool:
        """Start, wait for a stop request, shut down; True when the last step finished."""
        if install_signal_handlers:
            self.install_signal_handlers()
        if not self.stop.is_set():  # a signal during the start-up: no need to begin
            self.start()
        self.stop.wait()
        name = getattr(self.stop, "signal_name", None)
        log.info("stop requested", **({"signal": name} if name else {}))
        return self.shutdown()

    def install_signal_handlers(self) -> None:
        install_stop_signals(self.stop)

    def shutdown(
        self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS, total_seconds: float = STOP_SECONDS
    ) -> bool:
        """Stop: the running step gets `grace_seconds` from the stop request, the shutdown
        as a whole `total_seconds`; whatever still hangs then (a step deaf to the request, a
        write waiting on another writer, the scheduler's thread) is left behind, and the
        caller exits all the same. True when it ended cleanly."""
        self.stop.set()
        requested = getattr(self.stop, "requested_at", None) or time.monotonic()
        outcome: list[bool] = []
        worker = threading.Thread(
            target=lambda: outcome.append(self._shut_down(requested + grace_seconds)),
            name="songnet-shutdown",
            daemon=True,
        )
        worker.start()
        worker.join(max(0.0, requested + total_seconds - time.monotonic()))
        if worker.is_alive():
            log.warning(
                "shutdown cut short; exiting anyway",
                after_s=total_seconds,
                stuck_at=_where(worker),
                why="every write is a transaction, so the database stays consistent and the step reruns",
            )
            log.info("daemon stopped", clean=False)
            return False
        return outcome[0]

    def _shut_down(self, step_deadline: float) -> bool:
        current = self.jobs.current
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)  # it joins its own thread: not bounded
        finished = self.jobs.wait_idle(max(0.0, step_deadline - time.monotonic()))
        if not finished:
            log.warning(
                "step still running at shutdown; exiting anyway",
                job=current[0] if current else None,
                why="every write is a transaction, so the database stays consistent and the step reruns",
            )
        if finished:
            # Bounded: another writer is waited on for FINAL_WRITE_BUSY_MS at most.
            if not self.heartbeat(stopped=True, lock_timeout=1.0):
                log.warning(
                    "final heartbeat not written",
                    why="`songnet health` reports the daemon gone once the heartbeat is stale",
                )
            try:
                state = kv.get_json(self.engine, kv.DAEMON) or {}
                state["stopped_at"] = int(self.clock())
                kv.set_json(self.engine, kv.DAEMON, state, busy_timeout_ms=FINAL_WRITE_BUSY_MS)
            except Exception as exc:  # the database busy; nothing depends on it
                log.warning("stop time not recorded", error=str(exc))
            self.engine.dispose()
        # Else the step may hold the database's write lock: no waiting on it here; the
        # heartbeat goes stale by itself and `health` reports the daemon gone.
        log.info("daemon stopped", clean=finished)
        return finished

    # -- one cycle -------------------------------------------------------------------------

    def run_once(
        self, *, sleep: Callable[[float], object] = time.sleep, max_settle_rounds: int = 30
    ) -> int:
        """Import, train if needed, generate and write, then return an exit code.

        0: done (with no model yet, the playlists come from the simple rules); 1: a step
        failed, or there are no plays to make a playlist from; 3: done but a sink (Spotify)
        deferred a playlist's write.
        """
        self._record_start()
        runs: list[JobRun] = []
        files = self.export_folder.settle(sleep, max_settle_rounds, should_stop=self.stop.is_set)
        if files:
            runs.append(self.jobs.bring_in("import", [self.export_folder], files=len(files)))
        if any_configured(self.settings):
            runs.append(self.jobs.pull_sources())
        new_plays, has_model = self.jobs.untrained_plays()
        if new_plays and (not has_model or new_plays >= self.settings.retrain_min_new_plays):
            runs.append(self.jobs.train(reason="run --once"))
        runs.append(self.jobs.publish("once", reason="run --once"))
        if self.stop.is_set():
            return 0
        if any(r.outcome == FAILED for r in runs):
            return 1
        if not self.jobs.has_plays():
            log.error(
                "no plays, no playlist",
                hint=f"put your Spotify export into {self.settings.export_dir}",
            )
            return 1
        return 3 if any(r.outcome == DEFERRED for r in runs) else 0


def _where(thread: threading.Thread) -> str | None:
    """Where `thread` is now ("file:line in function"), for the log line of a hang."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return None
    summary = traceback.extract_stack(frame)
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in summary[::-1][:4])


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
