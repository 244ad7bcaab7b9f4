"""Data-directory locks: one daemon per directory, one writer at a time, no stale locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from service.lock import (
    FileLock,
    LockBusyError,
    cli_write_lock,
    daemon_holder,
    daemon_lock,
    write_lock,
    write_lock_file,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_second_holder_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    first = daemon_lock(tmp_path)
    first.acquire()
    try:
        second = daemon_lock(tmp_path, "another songnet run")
        with pytest.raises(LockBusyError, match=rf"held by pid {os.getpid()}, songnet run"):
            second.acquire()
        assert daemon_holder(tmp_path) == f"pid {os.getpid()}, songnet run"
    finally:
        first.release()
    assert daemon_holder(tmp_path) is None
    again = daemon_lock(tmp_path)
    assert again.try_acquire()
    again.release()


def test_acquire_waits_then_gives_up_without_sleeping_for_real(tmp_path: Path) -> None:
    holder = FileLock(write_lock_file(tmp_path), "import")
    holder.acquire()
    clock = FakeClock()
    waiter = FileLock(write_lock_file(tmp_path), "sync", clock=clock, sleep=clock.sleep)
    with pytest.raises(LockBusyError):
        waiter.acquire(wait_seconds=5.0, poll_seconds=0.5)
    assert sum(clock.sleeps) == pytest.approx(5.0)
    assert len(clock.sleeps) == 10
    holder.release()
    waiter.acquire(wait_seconds=5.0)
    assert waiter.held
    waiter.release()


def test_write_lock_names_the_daemon_when_it_is_the_writer(tmp_path: Path) -> None:
    daemon = daemon_lock(tmp_path)
    daemon.acquire()
    job = FileLock(write_lock_file(tmp_path), "songnet run: train")
    job.acquire()
    clock = FakeClock()
    try:
        with (
            pytest.raises(
                LockBusyError, match=r"cannot sync: .* the songnet daemon \(pid \d+, songnet run\)"
            ) as exc,
            write_lock(tmp_path, "sync", wait_seconds=2, clock=clock, sleep=clock.sleep),
        ):
            pass
        assert "stop the daemon" in str(exc.value)
    finally:
        job.release()
        daemon.release()
    # Free again: the block runs and the lock is released after it.
    with write_lock(tmp_path, "sync", wait_seconds=0) as lock:
        assert lock.held
        assert FileLock(write_lock_file(tmp_path), "probe").try_acquire() is False
    assert not lock.held


def test_cli_write_lock_exits_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = FileLock(write_lock_file(tmp_path), "songnet import")
    holder.acquire()
    try:
        with pytest.raises(typer.Exit) as exc, cli_write_lock(tmp_path, "import", wait_seconds=0):
            pytest.fail("the body must not run while another writer holds the lock")
        assert exc.value.exit_code == 1
        assert "cannot import" in capsys.readouterr().err
    finally:
        holder.release()
    with cli_write_lock(tmp_path, "import", wait_seconds=0):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from service.lock import daemon_lock\n"
        "lock = daemon_lock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        assert daemon_holder(tmp_path) == f"pid {proc.pid}, songnet run"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert daemon_holder(tmp_path) is None
    lock = daemon_lock(tmp_path)
    assert lock.try_acquire()
    lock.release()
