"""The export folder as a `HistorySource`: Spotify's export files, each imported once.

`ExportFiles` imports given files one by one through the import ledger
(`importer.import_session`: one connection and the library's maps for all the files; a
file already imported, by content hash, is not read again), a
stop request honoured between files. `ExportFolder` is the watched folder: its watcher
(`service.watch.ExportWatcher`) takes a file only once it has stopped changing, and each file
imported is marked handled (and kept, through `on_handled`, across restarts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from sqlalchemy import Engine

from service.importer import import_session
from service.sources import Brought
from service.watch import ExportWatcher

log = structlog.get_logger(__name__)


class ExportFiles:
    """Given export files (or zips) as a `HistorySource`."""

    def __init__(
        self, files: Sequence[Path], *, on_file_done: Callable[[Path], None] | None = None
    ) -> None:
        self.files = list(files)
        self.on_file_done = on_file_done
        self.label = ", ".join(str(f) for f in self.files[:3]) + ("…" if len(self.files) > 3 else "")

    def bring_in(
        self, engine: Engine, *, clock: Callable[[], float], should_stop: Callable[[], bool]
    ) -> Brought:
        brought = Brought()
        # One import session for all the files: the library's maps are loaded once.
        with import_session(engine, clock=clock) as session:
            for path in self.files:
                if should_stop():
                    brought.stopped = True
                    break
                for result in session.import_paths([path]):
                    brought.results.append(result)
                    if result.status == "failed":
                        brought.errors.append(f"{result.path}: {result.error}")
                if self.on_file_done is not None:
                    self.on_file_done(path)
        return brought


class ExportFolder:
    """The export folder: the files its watcher found stable, imported when brought in."""

    def __init__(
        self, watcher: ExportWatcher, *, on_handled: Callable[[Path], None] | None = None
    ) -> None:
        self.watcher = watcher
        self.on_handled = on_handled
        self.label = str(watcher.folder)
        self._ready: dict[str, Path] = {}

    def poll(self) -> list[Path]:
        """The files ready to bring in: stable now, or found stable before and not yet in."""
        for path in self.watcher.poll():
            self._ready[str(path)] = path
        return sorted(self._ready.values())

    def settle(
        self,
        sleep: Callable[[float], object],
        max_rounds: int,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[Path]:
        """Look until no file is still changing (one look, a wait, another look), for a
        single run (`songnet run --once`); the files then ready."""
        stable = self.watcher.stable_seconds
        for round_no in range(max_rounds + 1):
            ready = {str(p) for p in self.poll()}
            waiting = [p for p in self.watcher.pending() if str(p) not in ready]
            if not waiting or should_stop():
                break
            if round_no == max_rounds:
                log.warning(
                    "files still changing; left for the next run", files=[str(p) for p in waiting]
                )
                break
            if round_no == 0 and stable >= 1:
                log.info("waiting for export files to settle", files=len(waiting), seconds=stable)
            sleep(stable)
        return sorted(self._ready.values())

    def bring_in(
        self, engine: Engine, *, clock: Callable[[], float], should_stop: Callable[[], bool]
    ) -> Brought:
        files = ExportFiles(self.poll(), on_file_done=self._handled)
        return files.bring_in(engine, clock=clock, should_stop=should_stop)

    def _handled(self, path: Path) -> None:
        self._ready.pop(str(path), None)
        self.watcher.mark_handled([path])
        if self.on_handled is not None:
            self.on_handled(path)
