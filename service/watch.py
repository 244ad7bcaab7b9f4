"""Watching the export folder by polling: which files are complete and not yet handled.

Polling, not inotify: Docker volumes, NAS shares and network mounts often deliver no change
events. A file is taken only once two looks at least `stable_seconds` apart saw the same size
and modification time, so an export still being copied in is not read half-way. Each file is
handled once per content signature (size, mtime): an unchanged file is never hashed again,
and a file replaced by a new version is taken again (the import ledger then decides, by
content hash, whether anything is new).

Candidates are `.json` and `.zip` files anywhere below the folder, so an unpacked export
(`Spotify Extended Streaming History/…`) works as well as the zip Spotify sends. Hidden files
and the partial files of downloads and copies (`.part`, `.crdownload`, …) are left alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

EXPORT_SUFFIXES = (".json", ".zip")
PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", "~")

Signature = tuple[int, int]  # (size in bytes, mtime in ns)


@dataclass
class _Sighting:
    signature: Signature
    since: float  # when this signature was first seen


def candidate_files(folder: Path) -> list[Path]:
    """Export-like files below `folder`, sorted; hidden and partial files left out."""
    found: list[Path] = []
    if not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            lower = name.lower()
            if name.startswith(".") or lower.endswith(PARTIAL_SUFFIXES):
                continue
            if lower.endswith(EXPORT_SUFFIXES):
                found.append(Path(root) / name)
    return sorted(found)


def signature_of(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class ExportWatcher:
    """Finds export files in `folder` that are complete and not yet handled.

    `handled` maps a path to the signature it had when it was last handled (restored from
    the database at start-up, so that a restart hashes nothing twice).
    """

    def __init__(
        self,
        folder: Path,
        stable_seconds: float,
        *,
        handled: dict[str, Signature] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.stable_seconds = stable_seconds
        self.handled: dict[str, Signature] = dict(handled or {})
        self._clock = clock
        self._seen: dict[str, _Sighting] = {}

    def poll(self) -> list[Path]:
        """Files ready to import now: unhandled, and unchanged for `stable_seconds`."""
        now = self._clock()
        ready: list[Path] = []
        present: set[str] = set()
        for path in candidate_files(self.folder):
            key = str(path)
            signature = signature_of(path)
            if signature is None:
                continue
            present.add(key)
            if self.handled.get(key) == signature:
                continue
            sighting = self._seen.get(key)
            if sighting is None or sighting.signature != signature:
                self._seen[key] = _Sighting(signature, now)
                # A first look cannot tell a finished file from one being written.
                continue
            if now - sighting.since >= self.stable_seconds:
                ready.append(path)
        # Forget files that went away, so a file put back later is looked at afresh.
        for known in (self._seen, self.handled):
            for key in [k for k in known if k not in present]:
                del known[key]
        return ready

    def pending(self) -> list[Path]:
        """Files seen but not yet stable (for status and for `run --once`)."""
        return [Path(k) for k, s in self._seen.items() if self.handled.get(k) != s.signature]

    def mark_handled(self, paths: Iterable[Path]) -> None:
        for path in paths:
            key = str(path)
            sighting = self._seen.pop(key, None)
            if sighting is not None:
                self.handled[key] = sighting.signature
