"""Child tasks for the tests only: each misbehaves in one way, run through the real
`run_in_child` path (the tests add them to `service.child_process.TASKS`)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.settings import Settings

Task = Callable[[Settings, dict[str, Any], Callable[[], bool]], Any]


def echo(settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
    return {"payload": payload, "pid": os.getpid()}


def allocate(settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
    """Memory up to 768 MB, 16 MB at a time: a MemoryError under a lower cap (bounded, so
    that a cap that failed to apply fails the test, not the machine)."""
    held = [bytearray(16 * 1024 * 1024) for _ in range(48)]
    return {"allocated_mb": 16 * len(held)}


def torch_out_of_memory(
    settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]
) -> Any:
    """How torch's CPU allocator says it (a RuntimeError)."""
    raise RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
        "can't allocate memory: you tried to allocate 268435456 bytes. Error code 12"
    )


def abort(settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
    """What glibc or torch do on a failed allocation in native code."""
    os.abort()


def segfault(settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
    os.kill(os.getpid(), signal.SIGSEGV)
    threading.Event().wait()


def sigkill(settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)
    threading.Event().wait()


def stall(settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
    """Hung: waits for ever, using no CPU (a deadlock)."""
    if payload.get("ready"):
        Path(payload["ready"]).touch()
    threading.Event().wait()


def spin(settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
    """Busy for ever: progress by CPU time, but never done."""
    n = 0
    while True:
        n += 1


def fail(settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]) -> Any:
    raise ValueError("not enough plays to train on")
