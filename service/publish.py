"""Publishing playlists: the use case the daemon's jobs and `songnet sync` share.

`publish(engine, settings, configs, sinks, now)` = `generate` (the library and the promoted
model loaded once for the whole run, not once per playlist) then `deliver` (each playlist
kept in the playlist store, then the run's playlists handed to each sink in order: the file
sink first and always, then Spotify where it is set up; see `service.playlist_sink`; each
sink's outcomes kept in the store too, where the daemon's sink retry finds deferrals). The
daemon generates in a child process (`service.child_tasks`, `from_child`) and delivers the
same way. A playlist that cannot be generated is reported and noted in the store; the others
go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import Engine

from service import playlist_store
from service.playlist_shape import Playlist
from service.playlist_sink import PlaylistSink, SinkOutcome
from service.settings import PlaylistConfig, Settings
from service.sinks import FileSink

if TYPE_CHECKING:
    from service.child_tasks import GenerationResults

log = structlog.get_logger(__name__)


@dataclass
class Generated:
    playlists: list[Playlist] = field(default_factory=list)
    failed: list[tuple[PlaylistConfig, str]] = field(default_factory=list)  # (config, error)
    stopped: bool = False
    outcomes: dict[str, Sequence[SinkOutcome]] = field(default_factory=dict)  # by sink name


def sinks_from_settings(
    engine: Engine, settings: Settings, *, stop: threading.Event | None = None
) -> list[PlaylistSink]:
    """The file sink, and Spotify once its client id and secret are set."""
    sinks: list[PlaylistSink] = [FileSink(settings.data_dir)]
    if settings.spotify_configured:
        from service.spotify.sink import SpotifySink

        sinks.append(SpotifySink(engine, settings, stop=stop))
    return sinks


def publish(
    engine: Engine,
    settings: Settings,
    configs: Sequence[PlaylistConfig],
    sinks: Sequence[PlaylistSink],
    *,
    now: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> Generated:
    """Generate here (one library load), store, and write to every sink in order."""
    done = generate(engine, settings, configs, now=now, should_stop=should_stop)
    return deliver(engine, done, sinks, now=now, should_stop=should_stop)


def deliver(
    engine: Engine,
    done: Generated,
    sinks: Sequence[PlaylistSink],
    *,
    now: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> Generated:
    """Keep a run's playlists (and why the others failed) in the store, then hand them to
    each sink in order. The daemon generates in a child process and delivers here."""
    for config, error in done.failed:
        playlist_store.note_error(engine, config.id, config.name, error)
    for playlist in done.playlists:
        playlist_store.record_generated(engine, playlist.config_id, playlist.name, playlist, now)
    for sink in sinks:
        if not done.playlists or should_stop():
            break
        done.outcomes[sink.name] = sink.write(done.playlists, now=now)
        playlist_store.record_outcomes(engine, sink.name, done.outcomes[sink.name], now)
    return done


def generate(
    engine: Engine,
    settings: Settings,
    configs: Sequence[PlaylistConfig],
    *,
    now: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> Generated:
    """Each config's playlist, from one library load in this process; nothing written."""
    # Imported here: the model side is heavy (torch); the CLI's light commands skip it.
    from service.playlists import PlaylistGenerator

    done = Generated()
    try:
        generator = PlaylistGenerator.from_promoted(engine, settings)
    except Exception as exc:  # no model, an empty library: every playlist says so
        for config in configs:
            _failed(done, config, exc)
        return done
    for config in configs:
        if should_stop():
            done.stopped = True
            break
        try:
            playlist = generator.generate(config, now=now)
        except Exception as exc:  # the generator's own errors (seeds, …): report and go on
            _failed(done, config, exc)
            continue
        done.playlists.append(playlist)
    return done


def _failed(done: Generated, config: PlaylistConfig, exc: Exception | str) -> None:
    error = f"generation failed: {exc}"
    log.error(
        "playlist not generated",
        playlist=config.name,
        error=str(exc),
        hint="check the playlist's seeds (`songnet generate --seed ...` shows close matches)",
    )
    done.failed.append((config, error))


def from_child(results: GenerationResults) -> Generated:
    """A child process's `GenerationResults` as a run to deliver."""
    done = Generated(stopped=bool(results.stopped))
    for config, playlist in results.playlists:
        if isinstance(playlist, str):
            _failed(done, config, playlist)
        else:
            done.playlists.append(playlist)
    return done
