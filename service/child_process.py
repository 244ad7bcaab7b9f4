"""Work that needs torch, run in a child process, so that the daemon itself never loads it.

Training and the weekly generation load torch and a model (hundreds of MB that Python never
gives back); the daemon only waits for days between them. `run_in_child` starts
`python -m service.child_process TASK`, writes the task's input to the child's stdin as JSON
and reads its result, one JSON document, from the child's stdout. The child logs to the
daemon's stderr like any part of it.

- A stop request (SIGTERM to the daemon) is passed on as SIGTERM: the child's task sees it
  at its next check (a training batch, the next playlist) and returns what it has; a child
  that has not ended `STOP_GRACE_SECONDS` later is killed.
- A child dies with its parent: PR_SET_PDEATHSIG where Linux offers it, and a watch on the
  parent's pid otherwise, so a `kill -9` of the daemon leaves no training running alone.
- `memory_mb` caps the child's data segment (RLIMIT_DATA, torch's tensors included): a
  training that needs more fails with a `ChildJobError` that names the setting. Whatever a
  capped child dies of (MemoryError, torch's "can't allocate memory", SIGABRT or SIGSEGV
  from native code, SIGKILL, a hang) is that same error.
- A watchdog kills a child that stops making progress (no CPU time used for
  `STALL_SECONDS`) or outlives its deadline (`deadline_seconds`, the training's derived from
  its time budget), and reports it: a hung child never hangs the daemon.
- A child killed (OOM killer, `kill -9`), crashed or failed is a `ChildJobError` whose
  message says what happened; the daemon logs it and carries on.

The tasks are the functions named in `TASKS` (`service/child_tasks.py`): each takes the
settings, the task's input and a stop check, and returns plain JSON data.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from service.settings import Settings

log = structlog.get_logger(__name__)

# Task name -> "module:function", imported in the child only.
TASKS = {
    "train": "service.child_tasks:train_task",
    "generate": "service.child_tasks:generate_task",
}
STOP_GRACE_SECONDS = 5.0  # within the daemon's shutdown grace (7 s), itself within 10 s
POLL_SECONDS = 0.2
# The watchdog: a child that used less than STALL_CPU_SECONDS of CPU in STALL_SECONDS is hung
# (a training or generation computes all the time; its idle threads use microseconds).
STALL_SECONDS = 300.0
STALL_CPU_SECONDS = 0.05
# How long the result may still take to arrive once the child has exited.
EXIT_DRAIN_SECONDS = 2.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PARENT_WATCH_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1
# How torch and numpy say that an allocation failed.
_OUT_OF_MEMORY = (
    "can't allocate memory",
    "can't start new thread",  # a thread's stack counts against RLIMIT_DATA
    "bad_alloc",
    "cannot allocate memory",
    "out of memory",
    "failed to allocate",
)


class ChildJobError(Exception):
    """The child process failed or died; the message says what happened."""

    def __init__(self, message: str, *, over_memory: bool = False, killed: bool = False) -> None:
        super().__init__(message)
        self.over_memory = over_memory
        self.killed = killed


class ChildJobStoppedError(Exception):
    """A stop request ended the child before it returned a result."""


def settings_payload(settings: Settings) -> dict[str, Any]:
    """The settings as the child rebuilds them: exactly the daemon's (CLI options and
    `--demo` included), never re-read from the environment. The playlists file is already
    read into `playlists`; the Spotify secret stays in the daemon."""
    dumped = settings.model_dump(mode="json")
    # Given as None, not left out: the child must not read them from the environment either.
    dumped.update(playlists_file=None, spotify_client_secret=None)
    return dumped


def run_in_child(
    task: str,
    settings: Settings,
    payload: dict[str, Any],
    *,
    stop: threading.Event,
    memory_mb: int | None = None,
    what: str | None = None,
    stop_grace_seconds: float = STOP_GRACE_SECONDS,
    poll_seconds: float = POLL_SECONDS,
    stall_seconds: float | None = None,
    deadline_seconds: float | None = None,
) -> Any:
    """Run `task` in a child process; its result (`ChildJobError`, `ChildJobStoppedError`).

    The watchdog: a child that uses no CPU for `stall_seconds` (`STALL_SECONDS` when None),
    or still runs `deadline_seconds` after its start (no deadline when None), is killed and
    reported; the caller never waits on a hung child."""
    if task not in TASKS:
        raise ValueError(f"unknown child task {task!r}")
    what = what or task
    if stop.is_set():
        raise ChildJobStoppedError(f"the {what} was not started: stop requested")
    message = json.dumps(
        {
            "settings": settings_payload(settings),
            "payload": payload,
            "memory_mb": memory_mb,
            "parent": os.getpid(),
            "target": TASKS[task],
        }
    ).encode()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.child_process", task],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # the child logs where the daemon logs
    )
    chunks: list[bytes] = []
    # Threads, not `communicate`: a grandchild that kept the child's stdout open must not
    # make the daemon wait for an end of file that never comes.
    reader = threading.Thread(target=_read_all, args=(proc, chunks), daemon=True)
    reader.start()
    threading.Thread(target=_write_all, args=(proc, message), daemon=True).start()
    watch = _Watchdog(
        proc.pid, STALL_SECONDS if stall_seconds is None else stall_seconds, deadline_seconds
    )
    stop_sent: float | None = None
    killed_for: str | None = None
    try:
        while True:
            if _exited(proc, poll_seconds):
                break
            if stop.is_set() and stop_sent is None:
                proc.send_signal(signal.SIGTERM)
                stop_sent = time.monotonic()
            elif stop_sent is not None and time.monotonic() - stop_sent > stop_grace_seconds:
                proc.kill()
            elif stop_sent is None and killed_for is None:
                killed_for = watch.check()
                if killed_for is not None:
                    proc.kill()
    finally:
        if proc.poll() is None:  # an exception here (KeyboardInterrupt): never leave it behind
            proc.kill()
            proc.wait()
    reader.join(EXIT_DRAIN_SECONDS)
    for pipe in (proc.stdin, proc.stdout if not reader.is_alive() else None):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    return _result(
        proc.returncode,
        b"".join(chunks),
        what=what,
        memory_mb=memory_mb,
        stopping=stop_sent is not None,
        killed_for=killed_for,
    )


def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether the child has exited, waiting up to `timeout` seconds. Reaps it with
    `os.waitpid` itself: `Popen.wait(timeout=)` spins for as long as its internal wait lock is
    held elsewhere, and a fresh-clone CI run saw it spin 600 s past a dead (-9) child."""
    end = time.monotonic() + timeout
    while proc.returncode is None:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by Popen itself (which then set returncode)
            return proc.poll() is not None
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() >= end:
            return False
        time.sleep(min(0.02, timeout))
    return True


def _read_all(proc: subprocess.Popen[bytes], chunks: list[bytes]) -> None:
    assert proc.stdout is not None
    with contextlib.suppress(OSError, ValueError):
        while chunk := os.read(proc.stdout.fileno(), 65536):
            chunks.append(chunk)


def _write_all(proc: subprocess.Popen[bytes], message: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(OSError, ValueError):  # a child that died before reading it
        proc.stdin.write(message)
        proc.stdin.close()


class _Watchdog:
    """Whether a child has stopped making progress (no CPU time used for `stall_seconds`:
    hung on a lock, a deadlock after a failed allocation) or outlived its deadline."""

    def __init__(self, pid: int, stall_seconds: float, deadline_seconds: float | None) -> None:
        self.pid = pid
        self.stall_seconds = stall_seconds
        self.deadline_seconds = deadline_seconds
        self.started = self.progress_at = time.monotonic()
        self.cpu_mark = _cpu_seconds(pid) or 0.0

    def check(self) -> str | None:
        now = time.monotonic()
        if self.deadline_seconds is not None and now - self.started > self.deadline_seconds:
            return f"was still running after its deadline of {self.deadline_seconds:g} s"
        cpu = _cpu_seconds(self.pid)
        if cpu is None or cpu - self.cpu_mark >= STALL_CPU_SECONDS:
            # Progress (or no way to tell where /proc is missing: the deadline still holds).
            self.cpu_mark = self.cpu_mark if cpu is None else cpu
            self.progress_at = now
        elif now - self.progress_at > self.stall_seconds:
            return f"stopped making progress (no CPU time used for {self.stall_seconds:g} s)"
        return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` so far (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


def _memory_error(what: str, memory_mb: int, happened: str) -> ChildJobError:
    return ChildJobError(
        f"the {what} needed more memory than SONGNET_TRAIN_MEMORY_MB={memory_mb} allows "
        f"({happened}); raise SONGNET_TRAIN_MEMORY_MB or leave it empty",
        over_memory=True,
    )


def _result(
    code: int,
    out: bytes,
    *,
    what: str,
    memory_mb: int | None,
    stopping: bool,
    killed_for: str | None = None,
) -> Any:
    """The child's result, or what happened to it as an exception.

    Under a memory cap every death is the same over-memory error: when an allocation fails,
    Python raises MemoryError, torch a RuntimeError, native code aborts (SIGABRT), crashes
    (SIGSEGV) or hangs; which one depends on where it failed, not on anything the user can
    act on differently."""
    document: Any = None
    for line in reversed(out.splitlines()):
        if line.strip():
            with contextlib.suppress(ValueError):
                document = json.loads(line)
            break
    if isinstance(document, dict) and "result" in document and code == 0:
        return document["result"]
    if isinstance(document, dict) and "error" in document:
        error = document["error"]
        said = f"{error.get('type')}: {error.get('message')}"
        if memory_mb is not None and error.get("over_memory"):
            raise _memory_error(what, memory_mb, said)
        raise ChildJobError(f"the {what} failed: {said}")
    if stopping:
        raise ChildJobStoppedError(f"the {what} was stopped")
    if killed_for is not None:
        happened = f"the {what} process {killed_for} and was killed"
        if memory_mb is not None:
            raise _memory_error(what, memory_mb, happened)
        raise ChildJobError(happened, killed=True)
    if code < 0:
        signum = -code
        known = signum in signal.Signals._value2member_map_
        name = signal.Signals(signum).name if known else str(signum)
        if signum == signal.SIGKILL:
            happened = (
                "was killed by SIGKILL (the kernel's OOM killer when memory runs out, or kill -9)"
            )
        else:
            happened = f"crashed (signal {name})"
        if memory_mb is not None:
            raise _memory_error(what, memory_mb, f"its process {happened}")
        raise ChildJobError(f"the {what} process {happened}", killed=True)
    if memory_mb is not None:
        raise _memory_error(
            what, memory_mb, f"its process exited with status {code} without a result"
        )
    raise ChildJobError(
        f"the {what} process exited with status {code} without a result; see the lines above"
    )


# -- the child side ----------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watch below does it, a little later
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="songnet-parent-watch", daemon=True).start()


def _limit_memory(megabytes: int) -> None:
    limit = megabytes * 1024 * 1024
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (OSError, ValueError) as exc:  # a sandbox that denies it, a hard limit below
        log.warning(
            "memory limit not applied; training without it",
            setting=f"SONGNET_TRAIN_MEMORY_MB={megabytes}",
            error=str(exc),
            hint="lower the limit below the process's hard limit, or cap memory where songnet runs (systemd MemoryMax=, docker --memory)",
        )


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _OUT_OF_MEMORY)


def child_main(task: str) -> int:
    from service.logging import configure_logging

    # The result goes to the real stdout; anything else printed goes to stderr.
    result_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C reaches the whole group
    request = json.loads(sys.stdin.buffer.read())
    _die_with_parent(int(request["parent"]))
    settings = Settings(**request["settings"])
    configure_logging(settings.log_format, settings.log_level)
    if request.get("memory_mb"):
        _limit_memory(int(request["memory_mb"]))
    document: dict[str, Any]
    try:
        # The daemon names the function (its TASKS; a test's own tasks come the same way).
        module, name = str(request.get("target") or TASKS[task]).split(":")
        function: Callable[[Settings, dict[str, Any], Callable[[], bool]], Any] = getattr(
            importlib.import_module(module), name
        )
        document = {"result": function(settings, request["payload"], stop.is_set)}
    except Exception as exc:  # every failure goes back to the daemon, which logs it
        log.debug("child task failed", task=task, exc_info=True)
        document = {
            "error": {
                "type": type(exc).__name__,
                "message": str(exc) or type(exc).__name__,
                "over_memory": _is_out_of_memory(exc),
            }
        }
    result_out.write(json.dumps(document))
    result_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
