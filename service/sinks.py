"""The file sink: each generated playlist as `DATA_DIR/playlists/<slug of name>.m3u8` and `.json`.

Written on every generation, with or without Spotify: without credentials these files are
the playlists (a music player opens the `.m3u8`; the `.json` says why each track is there).
Each file is written beside its target and renamed over it, so a reader or a crash never
sees half a playlist.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import structlog

from service.playlist_shape import Playlist
from service.playlist_sink import Outcome, SinkOutcome
from service.settings import slugify

log = structlog.get_logger(__name__)

PLAYLISTS_DIR = "playlists"
RANKED_BY = {
    "model": "the trained model fused with your simple rules",
    "rules": "your simple rules alone (popularity, what follows what, similar sessions, repeats): no trained model yet",
}


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; the playlists get the mode any new file would get here.
_FILE_MODE = 0o666 & ~_current_umask()


@dataclass(frozen=True)
class WrittenPlaylist:
    m3u8: Path
    json: Path


def playlists_dir(data_dir: Path) -> Path:
    return data_dir / PLAYLISTS_DIR


def playlist_paths(data_dir: Path, name: str) -> WrittenPlaylist:
    base = playlists_dir(data_dir) / slugify(name)
    return WrittenPlaylist(m3u8=base.with_suffix(".m3u8"), json=base.with_suffix(".json"))


def search_uri(artist: str, title: str) -> str:
    """A `spotify:search:` URI for a track songnet knows only by name."""
    return "spotify:search:" + quote(f"{artist} {title}", safe="")


def render_m3u8(playlist: Playlist) -> str:
    lines = ["#EXTM3U", f"#PLAYLIST:{_one_line(playlist.name)}"]
    for track in playlist.tracks:
        lines.append(f"#EXTINF:-1,{_one_line(track.artist)} - {_one_line(track.title)}")
        lines.append(track.uri or search_uri(track.artist, track.title))
    return "\n".join(lines) + "\n"


def render_json(playlist: Playlist, generated_at: int) -> str:
    document = {
        "id": playlist.config_id,
        "name": playlist.name,
        "generated_at": datetime.fromtimestamp(generated_at, UTC).isoformat(),
        "model_version": playlist.model_version,
        # "rules": no model yet (a library too small to train, or not trained yet); the
        # listener's simple rules ranked it (`songnet status` says why).
        "ranker": playlist.ranker,
        "ranked_by": RANKED_BY.get(playlist.ranker, playlist.ranker),
        "tracks": [
            {
                "position": i + 1,
                "artist": t.artist,
                "title": t.title,
                "uri": t.uri,
                "seed": t.is_seed,
                "reason": t.reason,
            }
            for i, t in enumerate(playlist.tracks)
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def write_playlist_files(
    data_dir: Path, playlist: Playlist, *, generated_at: int
) -> WrittenPlaylist:
    """Write (or replace) the playlist's `.m3u8` and `.json`; returns their paths."""
    paths = playlist_paths(data_dir, playlist.name)
    paths.m3u8.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(paths.m3u8, render_m3u8(playlist))
    _write_atomically(paths.json, render_json(playlist, generated_at))
    return paths


class FileSink:
    """The file sink as a `PlaylistSink`: always on, never deferred."""

    name = "files"
    remote = False

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def write(self, playlists: Sequence[Playlist], *, now: int) -> Sequence[SinkOutcome]:
        outcomes: list[SinkOutcome] = []
        for playlist in playlists:
            try:
                paths = write_playlist_files(self.data_dir, playlist, generated_at=now)
            except OSError as exc:  # a full disk or a read-only folder: the others go on
                log.error(
                    "playlist files not written",
                    playlist=playlist.name,
                    error=str(exc),
                    hint=f"check that {playlists_dir(self.data_dir)} is writable and has room",
                )
                outcomes.append(Outcome(playlist.config_id, "failed", error=str(exc)))
                continue
            log.info(
                "playlist written",
                playlist=playlist.name,
                tracks=len(playlist.tracks),
                m3u8=str(paths.m3u8),
            )
            outcomes.append(Outcome(playlist.config_id, "written"))
        return outcomes


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(_FILE_MODE)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
