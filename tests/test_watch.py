"""Polling the export folder: only complete files, each once, nothing half-copied."""

from __future__ import annotations

import os
from pathlib import Path

from service.watch import ExportWatcher, candidate_files


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_candidates_skip_hidden_partial_and_other_files(tmp_path: Path) -> None:
    for rel in [
        "a.json", "b.ZIP", "notes.txt", ".hidden.json", "c.json.part", "d.zip.crdownload",
        "Spotify Extended Streaming History/Streaming_History_Audio_2024.json",
        ".staging/x.json",
    ]:  # fmt: skip
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[]")
    names = [p.relative_to(tmp_path).as_posix() for p in candidate_files(tmp_path)]
    assert names == [
        "Spotify Extended Streaming History/Streaming_History_Audio_2024.json",
        "a.json",
        "b.ZIP",
    ]
    assert candidate_files(tmp_path / "missing") == []


def test_a_file_is_taken_once_it_stops_changing(tmp_path: Path) -> None:
    clock = Clock()
    watcher = ExportWatcher(tmp_path, stable_seconds=10, clock=clock)
    export = tmp_path / "endsong_0.json"
    export.write_text('[{"ts": ')  # being copied
    assert watcher.poll() == []  # a first look never takes a file
    assert watcher.pending() == [export]
    clock.now += 5
    with export.open("a") as f:
        f.write('"2024-01-01T00:00:00Z"}]')
    assert watcher.poll() == []  # it grew: the wait starts again
    clock.now += 9
    assert watcher.poll() == []
    clock.now += 1
    assert watcher.poll() == [export]
    watcher.mark_handled([export])
    clock.now += 60
    assert watcher.poll() == []  # handled: not taken again
    assert watcher.pending() == []


def test_same_size_rewrite_is_seen_by_mtime_and_handled_state_survives(tmp_path: Path) -> None:
    clock = Clock()
    export = tmp_path / "StreamingHistory0.json"
    export.write_text("[1]")
    watcher = ExportWatcher(tmp_path, stable_seconds=0, clock=clock)
    watcher.poll()
    assert watcher.poll() == [export]
    watcher.mark_handled([export])
    # A restart: the handled signatures come back from the database; nothing is taken.
    again = ExportWatcher(tmp_path, stable_seconds=0, handled=dict(watcher.handled), clock=clock)
    again.poll()
    assert again.poll() == []
    # Same size, new content and mtime: taken again (the ledger decides if it is new).
    export.write_text("[2]")
    st = export.stat()
    os.utime(export, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again.poll()
    assert again.poll() == [export]


def test_a_removed_file_is_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    export = tmp_path / "a.json"
    export.write_text("[]")
    watcher = ExportWatcher(tmp_path, stable_seconds=0, clock=clock)
    watcher.poll()
    watcher.mark_handled(watcher.poll())
    export.unlink()
    watcher.poll()
    assert watcher.handled == {}
