"""The daemon's framework: scheduling, catching up, the job frame, heartbeat and health.

Time is a fake clock here; nothing sleeps for real except where a real thread must run.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlmodel import Session, select

from service import kv, tables
from service.daemon import (
    HEARTBEAT_EXECUTOR,
    JOB_CATCH_UP,
    JOB_HEARTBEAT,
    JOB_PERIODIC_RETRAIN,
    JOB_START_UP,
    JOB_WATCH,
    JOB_WEEKLY,
    MISFIRE_GRACE_SECONDS,
    WORKER,
    Daemon,
    LeadTrigger,
    StopEvent,
)
from service.db import open_database
from service.jobs import FAILED, INTERRUPTED, OK, JobRun, Jobs
from service.lock import FileLock, write_lock_file
from service.settings import Settings, load_settings
from service.status import check_health, collect_status
from tests.conftest import logged

BERLIN = ZoneInfo("Europe/Berlin")


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta).total_seconds()

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        export_dir=tmp_path / "exports",
        timezone="Europe/Berlin",
        schedule="0 6 * * 1",
    )


@pytest.fixture
def engine(cfg: Settings) -> Iterator[Engine]:
    eng = open_database(cfg.data_dir)
    yield eng
    eng.dispose()


def record_weekly(engine: Engine, started: datetime, outcome: str | None = OK) -> None:
    with Session(engine) as session:
        ts = int(started.timestamp())
        session.add(
            tables.RunRecord(
                job="weekly", started_at=ts, finished_at=ts if outcome else None, outcome=outcome
            )
        )
        session.commit()


# -- the scheduler ------------------------------------------------------------------------------


def test_scheduler_has_one_worker_a_heartbeat_apart_and_forgiving_defaults(
    cfg: Settings, engine: Engine
) -> None:
    daemon = Daemon(cfg, engine)
    sched = daemon.scheduler
    assert sched._job_defaults == {
        "coalesce": True,
        "misfire_grace_time": MISFIRE_GRACE_SECONDS,
        "max_instances": 1,
    }
    assert MISFIRE_GRACE_SECONDS >= 3600
    daemon.add_jobs()
    sched.start(paused=True)
    try:
        executors = sched._executors
        assert set(executors) >= {WORKER, HEARTBEAT_EXECUTOR}
        for name in (WORKER, HEARTBEAT_EXECUTOR):
            assert isinstance(executors[name], ThreadPoolExecutor)
            assert executors[name]._pool._max_workers == 1
        jobs = {job.id: job for job in sched.get_jobs()}
        assert set(jobs) == {
            JOB_START_UP,
            JOB_WATCH,
            JOB_WEEKLY,
            JOB_PERIODIC_RETRAIN,
            JOB_HEARTBEAT,
            JOB_CATCH_UP,
        }
        assert {jobs[j].executor for j in jobs if j != JOB_HEARTBEAT} == {WORKER}
        assert jobs[JOB_HEARTBEAT].executor == HEARTBEAT_EXECUTOR
        assert isinstance(jobs[JOB_WATCH].trigger, IntervalTrigger)
        assert jobs[JOB_WATCH].trigger.interval == timedelta(seconds=cfg.watch_interval_seconds)
        weekly = jobs[JOB_WEEKLY].next_run_time.astimezone(BERLIN)
        assert (weekly.strftime("%A"), weekly.hour, weekly.minute) == ("Monday", 6, 0)
        retrain = jobs[JOB_PERIODIC_RETRAIN].next_run_time
        assert weekly - retrain == timedelta(minutes=cfg.retrain_lead_minutes)
        # Adding the jobs again (a restart in the same process) does not duplicate any.
        daemon.add_jobs()
        assert sorted(j.id for j in sched.get_jobs()) == sorted(jobs)
    finally:
        sched.shutdown(wait=False)


def test_worker_jobs_never_overlap_and_the_heartbeat_beats_beside_them(
    cfg: Settings, engine: Engine
) -> None:
    daemon = Daemon(cfg, engine)
    sched = daemon.scheduler
    spans: list[tuple[str, float, float]] = []
    release = threading.Event()
    beat_during_job = threading.Event()
    first_running = threading.Event()

    def slow(name: str) -> None:
        start = time.monotonic()
        if name == "a":
            first_running.set()
            release.wait(10)
        spans.append((name, start, time.monotonic()))

    def beat() -> None:
        if first_running.is_set() and not release.is_set():
            beat_during_job.set()
            release.set()

    sched.start()
    try:
        now = datetime.now(UTC)
        sched.add_job(slow, "date", run_date=now, args=["a"], id="a", executor=WORKER)
        sched.add_job(slow, "date", run_date=now, args=["b"], id="b", executor=WORKER)
        assert first_running.wait(10)
        sched.add_job(beat, "interval", seconds=0.05, id="beat", executor=HEARTBEAT_EXECUTOR)
        deadline = time.monotonic() + 10
        while len(spans) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sched.shutdown(wait=True)
    assert beat_during_job.is_set(), "the heartbeat must run while a worker job is busy"
    assert len(spans) == 2
    (_, _, a1), (_, b0, _) = sorted(spans, key=lambda s: s[1])
    assert b0 >= a1, "two worker jobs ran at the same time"


def test_lead_trigger_fires_before_each_weekly_run() -> None:
    from service.cron import parse_crontab

    weekly = parse_crontab("0 6 * * 1").trigger(BERLIN)
    lead = LeadTrigger(weekly, timedelta(minutes=90))
    now = datetime(2026, 3, 20, 12, 0, tzinfo=BERLIN)  # a Friday; DST starts on the 29th
    fires = []
    previous = None
    for _ in range(3):
        nxt = lead.get_next_fire_time(previous, now)
        assert nxt is not None
        fires.append(nxt)
        previous = now = nxt
    assert [f.astimezone(BERLIN).strftime("%a %d %H:%M") for f in fires] == [
        "Mon 23 04:30",
        "Mon 30 04:30",
        "Mon 06 04:30",
    ]


# -- catching up ---------------------------------------------------------------------------------


def test_weekly_run_is_caught_up_once_after_downtime(cfg: Settings, engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 3, 4, 12, 0, tzinfo=BERLIN))  # Wednesday
    daemon = Daemon(cfg, engine, clock=clock)
    daemon._record_start()  # first start ever: nothing is owed yet
    assert daemon.due_weekly_run() is None
    # The machine is off over Monday 06:00 and comes back on Tuesday.
    clock.advance(days=6)
    due = daemon.due_weekly_run()
    assert due == int(datetime(2026, 3, 9, 6, 0, tzinfo=BERLIN).timestamp())
    # Off for three weeks: still one run owed, for the latest slot (coalesced).
    clock.advance(days=21)
    assert daemon.due_weekly_run() == int(datetime(2026, 3, 30, 6, 0, tzinfo=BERLIN).timestamp())
    record_weekly(engine, datetime.fromtimestamp(clock(), BERLIN))
    assert daemon.due_weekly_run() is None
    # A run killed half-way (no outcome) is owed again; an interrupted one too.
    clock.advance(days=6)  # Monday 6 April, noon: its 06:00 slot has passed
    record_weekly(engine, datetime(2026, 4, 6, 6, 0, 1, tzinfo=BERLIN), outcome=None)
    assert daemon.due_weekly_run() == int(datetime(2026, 4, 6, 6, 0, tzinfo=BERLIN).timestamp())
    record_weekly(engine, datetime(2026, 4, 6, 6, 0, 2, tzinfo=BERLIN), outcome=INTERRUPTED)
    assert daemon.due_weekly_run() is not None
    record_weekly(engine, datetime(2026, 4, 6, 6, 0, 3, tzinfo=BERLIN), outcome=FAILED)
    assert daemon.due_weekly_run() is None


def test_a_missed_slot_is_caught_up_once_while_running(cfg: Settings, engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 3, 6, 12, 0, tzinfo=BERLIN))  # Friday
    daemon = Daemon(cfg, engine, clock=clock)
    daemon._record_start()
    assert daemon.catch_up_if_due() is None
    # Asleep over Monday 06:00 (APScheduler would drop a run missed by more than its grace).
    clock.advance(days=4)
    run = daemon.catch_up_if_due()
    assert run is not None and run.job == "weekly"
    assert daemon.catch_up_if_due() is None
    assert daemon.weekly_run() is None  # the cron firing late finds the slot done
    with Session(engine) as session:
        weekly = session.exec(
            select(tables.RunRecord).where(tables.RunRecord.job == "weekly")
        ).all()
    assert [(r.scheduled_for, r.outcome) for r in weekly] == [
        (int(datetime(2026, 3, 9, 6, 0, tzinfo=BERLIN).timestamp()), "skipped")  # no plays yet
    ]


def test_a_run_exactly_at_the_slot_is_not_owed_again(cfg: Settings, engine: Engine) -> None:
    slot = datetime(2026, 3, 9, 6, 0, tzinfo=BERLIN)
    clock = FakeClock(slot - timedelta(days=2))
    daemon = Daemon(cfg, engine, clock=clock)
    daemon._record_start()
    clock.now = slot.timestamp()
    assert daemon.due_weekly_run() == int(slot.timestamp())
    record_weekly(engine, slot)
    clock.advance(minutes=5)
    assert daemon.due_weekly_run() is None


# -- the job frame ------------------------------------------------------------------------------


def test_job_is_recorded_and_logged_with_duration_and_counts(
    cfg: Settings, engine: Engine, logs: io.StringIO
) -> None:
    clock = FakeClock(datetime(2026, 3, 9, 6, 0, tzinfo=BERLIN))
    jobs = Jobs(cfg, engine, clock=clock)

    def body(run: JobRun) -> None:
        clock.advance(seconds=42)
        run.counts.update(files=2, imported=10)

    run = jobs.run("import", body, files=2)
    assert run.outcome == OK
    with Session(engine) as session:
        row = session.exec(select(tables.RunRecord)).one()
    assert (row.job, row.outcome, row.finished_at - row.started_at) == ("import", OK, 42)
    assert json.loads(row.detail_json)["imported"] == 10
    lines = logged(logs)
    started = next(x for x in lines if x["event"] == "job started")
    finished = next(x for x in lines if x["event"] == "job finished")
    assert started["job"] == "import"
    assert finished["outcome"] == OK and finished["imported"] == 10 and "duration_s" in finished
    assert not write_lock_file(cfg.data_dir).read_text(), "the write lock is released after the job"


def test_failing_job_is_logged_with_a_hint_and_never_raises(
    cfg: Settings, engine: Engine, logs: io.StringIO
) -> None:
    jobs = Jobs(cfg, engine)

    def body(run: JobRun) -> None:
        raise ValueError("bad export")

    run = jobs.run("import", body)
    assert (run.outcome, run.error) == (FAILED, "ValueError: bad export")
    failed = next(x for x in logged(logs) if x["event"] == "job failed")
    assert "hint" in failed and "ValueError: bad export" in failed["exception"]
    with Session(engine) as session:
        assert session.exec(select(tables.RunRecord.outcome)).one() == FAILED


def test_job_waits_for_a_manual_writer_and_a_stop_cancels_the_wait(
    cfg: Settings, engine: Engine
) -> None:
    holder = FileLock(write_lock_file(cfg.data_dir), "songnet import")
    holder.acquire()
    jobs = Jobs(cfg, engine, lock_poll_seconds=0.01)
    ran: list[str] = []
    result: list[JobRun] = []
    worker = threading.Thread(
        target=lambda: result.append(jobs.run("train", lambda r: ran.append("train")))
    )
    worker.start()
    time.sleep(0.1)
    assert ran == [], "a job must not run while another process writes"
    holder.release()
    worker.join(5)
    assert ran == ["train"]
    # Busy again, then a stop request: the job gives up waiting and does not run.
    holder.acquire()
    stopped = Jobs(cfg, engine, lock_poll_seconds=0.01)
    threading.Timer(0.05, stopped.stop.set).start()
    run = stopped.run("train", lambda r: ran.append("again"))
    holder.release()
    assert not run.started and ran == ["train"]


# -- heartbeat, health, status ------------------------------------------------------------------


def test_health_follows_the_heartbeat(cfg: Settings, engine: Engine) -> None:
    clock = FakeClock(datetime(2026, 3, 9, 6, 0, tzinfo=BERLIN))
    daemon = Daemon(cfg, engine, clock=clock)
    assert not check_health(engine, cfg, now=clock()).ok  # never ran
    daemon.heartbeat()
    assert check_health(engine, cfg, now=clock()).ok
    clock.advance(seconds=3 * cfg.heartbeat_interval_seconds + 11)
    stale = check_health(engine, cfg, now=clock())
    assert not stale.ok and "old" in stale.reason
    # Fresh heartbeat, but a job that has run for longer than the limit: stuck.
    daemon.jobs.current = ("train", clock() - cfg.job_stuck_minutes * 60 - 1)
    daemon.heartbeat()
    stuck = check_health(engine, cfg, now=clock())
    assert not stuck.ok and "stuck" in stuck.reason
    daemon.jobs.current = ("train", clock() - 60)
    daemon.heartbeat()
    assert check_health(engine, cfg, now=clock()).ok
    daemon.stop.set()
    daemon.heartbeat()  # a late regular beat after the stop request is not written
    assert check_health(engine, cfg, now=clock()).ok
    daemon.heartbeat(stopped=True)
    assert not check_health(engine, cfg, now=clock()).ok
    daemon.heartbeat()
    assert not check_health(engine, cfg, now=clock()).ok


def test_start_and_shutdown_leave_a_stopped_heartbeat_and_status(
    cfg: Settings, engine: Engine
) -> None:
    daemon = Daemon(cfg, engine)
    daemon.start()
    try:
        deadline = time.monotonic() + 10
        while kv.get_json(engine, kv.HEARTBEAT) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert check_health(engine, cfg, now=time.time()).ok
        report = collect_status(engine, cfg, now=time.time())
        assert report["daemon"]["running"]
        assert JOB_WEEKLY in report["jobs"] and report["jobs"][JOB_WEEKLY].startswith(
            report["schedule"]["next_weekly_run"][:10]
        )
    finally:
        started = time.monotonic()
        assert daemon.shutdown()
        assert time.monotonic() - started < 5
    eng = open_database(cfg.data_dir)
    try:
        assert not check_health(eng, cfg, now=time.time()).ok
        assert not collect_status(eng, cfg, now=time.time())["daemon"]["running"]
    finally:
        eng.dispose()


def test_status_and_health_commands(cfg: Settings, engine: Engine) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    runner = CliRunner()
    args = ["--data-dir", str(cfg.data_dir)]
    env = {"SONGNET_TIMEZONE": "Europe/Berlin", "SONGNET_SCHEDULE": "0 6 * * 1"}
    unhealthy = runner.invoke(app, [*args, "health"], env=env)
    assert unhealthy.exit_code == 1 and "no heartbeat" in unhealthy.output
    daemon = Daemon(cfg, engine)
    daemon.heartbeat()
    assert runner.invoke(app, [*args, "health"], env=env).exit_code == 0
    result = runner.invoke(app, [*args, "status", "--json"], env=env)
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert set(report) >= {
        "daemon",
        "schedule",
        "jobs",
        "plays",
        "imports",
        "model",
        "runs",
        "playlists",
        "spotify",
    }
    assert report["daemon"]["running"] and report["model"] is None
    assert report["schedule"]["timezone"] == "Europe/Berlin"
    human = runner.invoke(app, [*args, "status"], env=env)
    assert (
        human.exit_code == 0
        and "daemon: running" in human.output
        and "model: none yet" in human.output
    )


def test_status_and_health_never_create_a_database(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    missing = tmp_path / "typo"
    for command, prefix in (("health", "unhealthy"), ("status", "error")):
        result = CliRunner().invoke(app, ["--data-dir", str(missing), command])
        assert result.exit_code == 1
        assert f"{prefix}: no songnet database in {missing}" in result.output
    assert not missing.exists()


def test_a_shutdown_that_hangs_is_cut_off_and_says_where(
    cfg: Settings, engine: Engine, logs: io.StringIO
) -> None:
    daemon = Daemon(cfg, engine)
    daemon.start()
    stuck = threading.Event()

    def scheduler_that_never_stops(wait: bool = True) -> None:
        stuck.wait(30)  # what BackgroundScheduler.shutdown's join of its thread can do

    daemon.scheduler.shutdown = scheduler_that_never_stops  # type: ignore[method-assign]
    try:
        daemon.stop.set()
        assert daemon.shutdown(grace_seconds=0.2, total_seconds=0.5) is False
    finally:
        stuck.set()
    (line,) = logged(logs, "shutdown cut short; exiting anyway")
    assert line["after_s"] == 0.5
    assert "in scheduler_that_never_stops" in line["stuck_at"]
    assert logged(logs, "daemon stopped")[-1]["clean"] is False


def test_the_final_heartbeat_waits_briefly_for_another_writer(
    cfg: Settings, engine: Engine, logs: io.StringIO
) -> None:
    daemon = Daemon(cfg, engine)
    daemon.heartbeat()
    other = sqlite3.connect(cfg.data_dir / "songnet.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing (a `songnet import`, say)
    try:
        daemon.stop.set()
        assert daemon.heartbeat(stopped=True) is False
    finally:
        other.execute("ROLLBACK")
        other.close()
    (line,) = logged(logs, "heartbeat not written")
    assert "database is locked" in line["error"]
    assert kv.get_json(engine, kv.HEARTBEAT)["stopped"] is False
    # The connection waits its usual time again for the next writer.
    with engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    assert daemon.heartbeat(stopped=True) is True
    assert kv.get_json(engine, kv.HEARTBEAT)["stopped"] is True


def test_stop_event_waits_keep_their_timeouts_and_end_when_set() -> None:
    # Waits run in steps (a signal on another thread must reach the main thread's handler);
    # stepping must not change what a wait returns or how long it lasts.
    stop = StopEvent()
    started = time.monotonic()
    assert stop.wait(0.6) is False
    assert 0.6 <= time.monotonic() - started < 5
    assert stop.wait(0) is False
    threading.Timer(0.4, stop.set).start()
    started = time.monotonic()
    assert stop.wait() is True  # untimed: ends when set
    assert time.monotonic() - started < 5
    assert stop.wait(10) is True and stop.requested_at is not None
