"""Publishing playlists: the use case the daemon's jobs and `songnet sync` share.

`generate_and_write` loads the library and the promoted model once for the whole run (not
once per playlist), generates each configured playlist, and always writes its files
(`.m3u8` / `.json`, the file sink) and its stored list (the playlist store), before anything
is sent to Spotify. A playlist that cannot be generated is reported and noted in the store;
the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Engine

from service import playlist_store
from service.playlist_shape import Playlist
from service.settings import PlaylistConfig, Settings
from service.sinks import write_playlist_files

log = structlog.get_logger(__name__)


@dataclass
class Generated:
    playlists: list[Playlist] = field(default_factory=list)
    failed: list[tuple[PlaylistConfig, str]] = field(default_factory=list)  # (config, error)
    stopped: bool = False


def generate_and_write(
    engine: Engine,
    settings: Settings,
    configs: Sequence[PlaylistConfig],
    *,
    now: int,
    write: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
) -> Generated:
    """Each config's playlist, from one library load; files and store written unless
    `write` is False (`sync --dry-run`)."""
    # Imported here: the model side is heavy (torch); the CLI's light commands skip it.
    from service.playlists import PlaylistGenerator

    done = Generated()
    try:
        generator = PlaylistGenerator.from_promoted(engine, settings)
    except Exception as exc:  # no model, an empty library: every playlist says so
        for config in configs:
            _failed(engine, done, config, exc, write=write)
        return done
    for config in configs:
        if should_stop():
            done.stopped = True
            break
        try:
            playlist = generator.generate(config, now=now)
        except Exception as exc:  # the generator's own errors (seeds, …): report and go on
            _failed(engine, done, config, exc, write=write)
            continue
        if write:
            paths = write_playlist_files(settings.data_dir, playlist, generated_at=now)
            playlist_store.record_generated(engine, config.id, config.name, playlist, now)
            log.info(
                "playlist written",
                playlist=config.name,
                tracks=len(playlist.tracks),
                m3u8=str(paths.m3u8),
            )
        done.playlists.append(playlist)
    return done


def _failed(
    engine: Engine, done: Generated, config: PlaylistConfig, exc: Exception, *, write: bool
) -> None:
    error = f"generation failed: {exc}"
    log.error(
        "playlist not generated",
        playlist=config.name,
        error=str(exc),
        error_type=type(exc).__name__,
        hint="check the playlist's seeds (`songnet generate --seed ...` shows close matches)",
    )
    if write:
        playlist_store.note_error(engine, config.id, config.name, error)
    done.failed.append((config, error))
