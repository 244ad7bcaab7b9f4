"""`songnet` as a real subprocess, with its JSON log lines collected as they come.

Used by the lifecycle, end-to-end and crash tests (and `bench/crash_soak.py`): start the
daemon, wait for a log event, send it a signal or kill -9 it, and read what it logged.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.conftest import REPO

_SCRIPT = Path(sys.executable).parent / "songnet"
# The installed console script where there is one (as users run it), else the same entry point.
SONGNET = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from service.cli import main; main()"]
)


def songnet_env(data_dir: Path, export_dir: Path, **settings: Any) -> dict[str, str]:
    """The environment for a songnet subprocess: JSON logs, the given SONGNET_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGNET_")}
    env.update(
        SONGNET_DATA_DIR=str(data_dir),
        SONGNET_EXPORT_DIR=str(export_dir),
        SONGNET_LOG_FORMAT="json",
        SONGNET_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    for key, value in settings.items():
        env[f"SONGNET_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def run_songnet(
    args: list[str], env: Mapping[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SONGNET, *args], env=dict(env), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


_TGKILL = {"x86_64": 234, "aarch64": 131}  # the tgkill(2) syscall's number


class DaemonProcess:
    """A running `songnet run …`; its stderr JSON lines are parsed into `events`."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*SONGNET, *args],
            env=dict(env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.raw.append(line)
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):  # a line that only looks like JSON
                        self.events.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120, *, start: int = 0
    ) -> dict[str, Any]:
        """The first event (from index `start`) matching `predicate`; fails on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[start:]:
                    if predicate(event):
                        return event
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"songnet exited ({self.proc.returncode}) before the event:\n{self.tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for an event:\n{self.tail()}")
                self._changed.wait(min(remaining, 0.5))

    def wait_event(
        self, event: str, timeout: float = 120, *, start: int = 0, **fields: Any
    ) -> dict[str, Any]:
        return self.wait_for(
            lambda e: e.get("event") == event and all(e.get(k) == v for k, v in fields.items()),
            timeout,
            start=start,
        )

    def named(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        with self._changed:
            return [
                e
                for e in self.events
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def signal_worker_thread(self, signum: int = signal.SIGTERM) -> None:
        """Send `signum` to one of the process's threads other than the main one, as the
        kernel may choose to deliver a signal sent to the process (Linux only)."""
        number = _TGKILL.get(platform.machine())
        if sys.platform != "linux" or number is None:
            raise NotImplementedError("tgkill is wired for Linux on x86_64 and aarch64 only")
        tasks = Path(f"/proc/{self.pid}/task").iterdir()
        tids = [int(t.name) for t in tasks if int(t.name) != self.pid]
        if not tids:
            raise RuntimeError("the process has no thread besides the main one")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, self.pid, min(tids), int(signum)) != 0:
            raise OSError(ctypes.get_errno(), "tgkill failed")

    def stop_by_signal(
        self, signum: int = signal.SIGTERM, timeout: float = 15
    ) -> tuple[int, float]:
        """Send `signum` and wait for the exit: the exit code and the seconds it took."""
        started = time.monotonic()
        self.signal(signum)
        try:
            code = self.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {timeout} s after {signal.Signals(signum).name}; its log:\n"
                + self.tail()
            ) from None
        return code, time.monotonic() - started

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def children(self) -> list[int]:
        """The pids of this process's children (its training or generation child)."""
        return child_pids(self.pid)

    def tail(self, lines: int = 40) -> str:
        return "".join(self.raw[-lines:])

    def stop(self) -> None:
        """Make sure the process is gone (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def child_pids(pid: int) -> list[int]:
    """The live children of process `pid` (from /proc; any of its threads may be the parent)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return sorted(set(found))


def is_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether process `pid` is gone within `timeout` s."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def maps_torch(pid: int) -> bool:
    """Whether process `pid` has torch's library mapped (imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
