"""The daemon's life as a real process: one per data directory, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_corpus
from tests.daemon_process import DaemonProcess, run_songnet, songnet_env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_daemon_per_directory_and_a_clean_exit_on_a_signal(tmp_path: Path, signum: int) -> None:
    env = songnet_env(tmp_path / "data", tmp_path / "exports", heartbeat_interval_seconds="1")
    daemon = DaemonProcess(["run"], env)
    try:
        daemon.wait_event("daemon started", timeout=60)
        daemon.wait_for(lambda e: True, timeout=5)
        deadline = time.monotonic() + 30
        while run_songnet(["health"], env).returncode != 0:
            assert time.monotonic() < deadline, "health never passed"
            time.sleep(0.2)
        second = run_songnet(["run"], env)
        assert second.returncode == 1
        assert (
            f"songnet is already running on {tmp_path / 'data'} (pid {daemon.pid}, songnet run)"
            in second.stderr
        )
        code, took = daemon.stop_by_signal(signum, timeout=10)
        assert code == 0
        assert took < 10
        assert daemon.named("daemon stopped", clean=True)
    finally:
        daemon.stop()
    health = run_songnet(["health"], env)
    assert health.returncode == 1 and "stopped" in health.stderr
    status = run_songnet(["status", "--json"], env)
    assert status.returncode == 0
    assert '"running": false' in status.stdout


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"),
    reason="sends the signal to one thread with tgkill(2)",
)
def test_sigterm_the_kernel_hands_to_a_worker_thread_still_stops_the_daemon(
    tmp_path: Path,
) -> None:
    # `kill PID` may be delivered to any thread; the main thread must still see the request
    # (it once waited untimed and stayed deaf to it: CI's 30 s hang).
    env = songnet_env(tmp_path / "data", tmp_path / "exports", heartbeat_interval_seconds="1")
    daemon = DaemonProcess(["run"], env)
    try:
        daemon.wait_event("daemon started", timeout=60)
        started = time.monotonic()
        daemon.signal_worker_thread(signal.SIGTERM)
        code = daemon.wait(30)
        took = time.monotonic() - started
    finally:
        daemon.stop()
    assert code == 0, daemon.tail()
    assert took < 10, daemon.tail()
    assert daemon.named("stop requested", signal="SIGTERM")
    (stopped,) = daemon.named("daemon stopped")
    assert stopped["clean"] is True


@pytest.mark.corpus
def test_sigterm_mid_training_stops_at_a_batch_boundary_and_promotes_nothing(
    tmp_path: Path,
) -> None:
    corpus = require_corpus()
    exports = tmp_path / "exports"
    exports.mkdir()
    shutil.copy(corpus / "account-d" / "StreamingHistory_music_0.json", exports)
    env = songnet_env(
        tmp_path / "data",
        exports,
        watch_interval_seconds="0.5",
        watch_stable_seconds="0",
        retrain_debounce_seconds="0",
        train_max_epochs="200",  # far longer than the test: the stop must cut it short
    )
    daemon = DaemonProcess(["run"], env)
    try:
        daemon.wait_event("training started", timeout=120)
        # A manual writer waits for the daemon's step, then refuses and says why.
        manual = {**env, "SONGNET_LOCK_WAIT_SECONDS": "1"}
        for command in (["import", str(exports)], ["train"], ["sync"]):
            refused = run_songnet(command, manual)
            assert refused.returncode == 1, (command, refused.stderr)
            assert f"the songnet daemon (pid {daemon.pid}, songnet run)" in refused.stderr, (
                refused.stderr
            )
        code, took = daemon.stop_by_signal(signal.SIGTERM)
        assert code == 0
        assert took < 10
    finally:
        daemon.stop()
    assert daemon.named("job finished", job="train", outcome="interrupted")
    assert daemon.named("daemon stopped", clean=True)
    con = sqlite3.connect(tmp_path / "data" / "songnet.db")
    try:
        assert con.execute("SELECT count(*) FROM model_version").fetchone()[0] == 0
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (outcome,) = con.execute("SELECT outcome FROM run_record WHERE job = 'train'").fetchone()
    finally:
        con.close()
    assert outcome == "interrupted"


def test_a_shutdown_that_hangs_is_cut_off_by_the_watchdog_with_every_threads_stack() -> None:
    # Whatever hangs after a stop request (a step that ignores it, a thread that holds up the
    # interpreter's exit), the process ends, and stderr says where it hung.
    code = (
        "import threading\n"
        "from service.cli.daemon import _arm_stop_watchdog\n"
        "stop = threading.Event()\n"
        "_arm_stop_watchdog(stop, seconds=0.5)\n"
        "stop.set()\n"
        "def stuck_in_a_step():\n"
        "    threading.Event().wait()\n"
        "stuck_in_a_step()\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    assert "stuck_in_a_step" in done.stderr
    assert "most recent call first" in done.stderr


def test_sigterm_while_another_process_holds_the_database_still_exits_0_within_10_s(
    tmp_path: Path,
) -> None:
    # The final heartbeat and the stop time wait briefly for the other writer, then are left
    # out; without that bound each write waited SQLite's 10 s busy timeout.
    env = songnet_env(tmp_path / "data", tmp_path / "exports", heartbeat_interval_seconds="1")
    daemon = DaemonProcess(["run"], env)
    other: sqlite3.Connection | None = None
    try:
        daemon.wait_event("daemon started", timeout=60)
        other = sqlite3.connect(tmp_path / "data" / "songnet.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a writer that does not let go (held for the stop)
        code, took = daemon.stop_by_signal(signal.SIGTERM, timeout=30)
        assert code == 0, daemon.tail()
        assert took < 10, daemon.tail()
    finally:
        if other is not None:
            other.execute("ROLLBACK")
            other.close()
        daemon.stop()
    assert daemon.named("stop requested", signal="SIGTERM")
    assert daemon.named("final heartbeat not written")
    (stopped,) = daemon.named("daemon stopped")
    assert stopped["clean"] is True
