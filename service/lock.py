"""Locks on the data directory: one daemon per directory, one writer at a time.

Two lock files in the data directory, both `flock(2)` locks (released by the kernel when the
holder dies, even by kill -9, so there is never a stale lock to clean up):

- `daemon.lock`: held by `songnet run` for its whole life. A second daemon on the same
  directory fails to take it and exits with a message naming the first one's pid.
- `write.lock`: held for the duration of anything that writes the database or Spotify —
  each daemon job (import, train, sync) and the CLI commands `import`, `train`, `sync`. So a
  manual `songnet sync` never runs beside the daemon's own: it waits up to
  `SONGNET_LOCK_WAIT_SECONDS` for the daemon's step to finish, then refuses.

The holder writes its pid and purpose into the file so that the refusal can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

DAEMON_LOCK = "daemon.lock"
WRITE_LOCK = "write.lock"


class LockBusyError(Exception):
    """Another process holds the lock; the message says which and what to do."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


def read_holder(path: Path) -> str:
    """What the lock file says about its holder ("pid 123, songnet run"), or ""."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


class FileLock:
    """An exclusive `flock` on `path`; `acquire` polls until `wait_seconds` have passed."""

    def __init__(
        self,
        path: Path,
        purpose: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.path = path
        self.purpose = purpose
        self._clock = clock
        self._sleep = sleep
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this process")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, {self.purpose}\n".encode())
        self._fd = fd
        return True

    def acquire(self, wait_seconds: float = 0.0, *, poll_seconds: float = 0.25) -> None:
        """Take the lock, waiting up to `wait_seconds`; `LockBusyError` if still held elsewhere."""
        deadline = self._clock() + wait_seconds
        while not self.try_acquire():
            remaining = deadline - self._clock()
            if remaining <= 0:
                holder = read_holder(self.path) or "another process"
                raise LockBusyError(f"{self.path} is held by {holder}", holder)
            self._sleep(min(poll_seconds, remaining))

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Emptied first so that nobody reads a stale holder after the release.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def daemon_lock(data_dir: Path, purpose: str = "songnet run") -> FileLock:
    return FileLock(data_dir / DAEMON_LOCK, purpose)


def write_lock_file(data_dir: Path) -> Path:
    return data_dir / WRITE_LOCK


def daemon_holder(data_dir: Path) -> str | None:
    """The running daemon's holder line, or None when no daemon holds `data_dir`."""
    probe = FileLock(data_dir / DAEMON_LOCK, "probe")
    if not (data_dir / DAEMON_LOCK).exists():
        return None
    if probe.try_acquire():
        probe.release()
        return None
    return read_holder(data_dir / DAEMON_LOCK) or "another process"


def acquire_write_lock(
    data_dir: Path,
    purpose: str,
    *,
    wait_seconds: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> FileLock:
    """The data directory's write lock, held; `LockBusyError` with a message for the user."""
    lock = FileLock(write_lock_file(data_dir), purpose, clock=clock, sleep=sleep)
    try:
        lock.acquire(wait_seconds)
    except LockBusyError as exc:
        daemon = daemon_holder(data_dir)
        who = f"the songnet daemon ({daemon})" if daemon else exc.holder
        message = (
            f"cannot {purpose}: {data_dir} is busy, {who} is writing to it "
            f"(waited {wait_seconds:g} s). Try again when it has finished"
            + (", or stop the daemon first." if daemon else ".")
        )
        raise LockBusyError(message, exc.holder) from None
    return lock


@contextlib.contextmanager
def write_lock(
    data_dir: Path,
    purpose: str,
    *,
    wait_seconds: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> Iterator[FileLock]:
    """Hold the data directory's write lock for the block (`LockBusyError` when it stays busy)."""
    lock = acquire_write_lock(
        data_dir, purpose, wait_seconds=wait_seconds, clock=clock, sleep=sleep
    )
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def cli_write_lock(data_dir: Path, purpose: str, wait_seconds: float) -> Iterator[None]:
    """`write_lock` for a CLI command: a busy directory prints why and exits 1.

    Commands that write wrap their body: `with cli_write_lock(s.data_dir, "import",
    s.lock_wait_seconds): ...`.
    """
    import typer

    try:
        lock = acquire_write_lock(data_dir, purpose, wait_seconds=wait_seconds)
    except LockBusyError as exc:
        log.error("data directory busy", command=purpose, holder=exc.holder)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        yield
    finally:
        lock.release()
