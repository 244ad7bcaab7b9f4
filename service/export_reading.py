"""Reading Spotify exports without a daemon: `songnet eval`, the report scripts and the benches
import the files into a throwaway database, exactly as the daemon would, and read the plays
back as the library reads them; the database is gone afterwards."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.db import open_database
from service.importer import FileResult, import_paths
from service.library import load_listens, load_tracks
from songnet_core.history import Listen, TrackInfo

# Beside each export of the corpus; it describes the folder and is not part of the export.
CORPUS_DESCRIPTION = "SOURCE.json"


@dataclass(frozen=True)
class ExportReading:
    listens: list[Listen]  # every play, oldest first, as `load_listens` returns them
    tracks: dict[int, TrackInfo]
    files: list[FileResult]  # what the import made of each file (a failed one says why)


def read_exports(paths: Sequence[Path]) -> ExportReading:
    """Import `paths` (files, folders, zips) into a temporary database and read them back."""
    with tempfile.TemporaryDirectory(prefix="songnet-read-") as tmp:
        engine = open_database(Path(tmp))
        try:
            files = import_paths(engine, list(paths))
            return ExportReading(load_listens(engine), load_tracks(engine), files)
        finally:
            engine.dispose()


def export_folder_files(folder: Path) -> list[Path]:
    """The files of one export folder of the corpus, its description left out."""
    return sorted(p for p in folder.iterdir() if p.name != CORPUS_DESCRIPTION)
