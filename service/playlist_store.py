"""The playlist store: what songnet keeps of each configured playlist (`playlist_state`)
and of its copy in each sink (`playlist_sink_state`: the id there, the last outcome, a
deferral).

One stored-playlist type (`StoredPlaylist`, the last generated list with its tracks) and one
place that gets or creates each kind of row (`update`, `update_sink`): the publish use case,
the Spotify sync and the daemon's sink retry all read and write through here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service import tables
from service.playlist_shape import Playlist
from service.playlist_sink import SinkOutcome

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StoredTrack:
    track_id: int | None
    artist: str
    title: str
    uri: str | None
    reason: str
    is_seed: bool


@dataclass(frozen=True)
class StoredPlaylist:
    """A generated list as the store keeps it (what a retried sync writes again)."""

    config_id: str
    name: str
    tracks: list[StoredTrack]
    model_version: int | None
    ranker: str = "model"  # "rules" where no model was promoted (`GeneratedPlaylist.ranker`)


@contextmanager
def update(engine: Engine, config_id: str, name: str) -> Iterator[tables.PlaylistState]:
    """The playlist's row, created if new, committed when the block ends without error."""
    with Session(engine) as session:
        row = session.get(tables.PlaylistState, config_id) or tables.PlaylistState(
            config_id=config_id, name=name
        )
        yield row
        session.add(row)
        session.commit()


def get(engine: Engine, config_id: str) -> tables.PlaylistState | None:
    with Session(engine) as session:
        return session.get(tables.PlaylistState, config_id)


def record_generated(
    engine: Engine, config_id: str, name: str, playlist: Playlist, now: int
) -> None:
    """Keep the generated list (what `status` and a retried sync see)."""
    tracks = [
        {
            "track_id": t.track_id,
            "artist": t.artist,
            "title": t.title,
            "uri": t.uri,
            "reason": t.reason,
            "seed": t.is_seed,
        }
        for t in playlist.tracks
    ]
    with update(engine, config_id, name) as row:
        row.name, row.last_generated_at, row.tracks_json = name, now, json.dumps(tracks)
        row.removed_from_config, row.last_error = False, None


def note_error(engine: Engine, config_id: str, name: str, error: str) -> None:
    with update(engine, config_id, name) as row:
        row.last_error = error


def stored_playlists(engine: Engine, model_version: int | None) -> list[StoredPlaylist]:
    """The last generated list of each playlist still configured."""
    with Session(engine) as session:
        rows = session.exec(select(tables.PlaylistState)).all()
    return [
        StoredPlaylist(
            config_id=row.config_id,
            name=row.name,
            tracks=[
                StoredTrack(
                    track_id=t.get("track_id"),
                    artist=t["artist"],
                    title=t["title"],
                    uri=t.get("uri"),
                    reason=t.get("reason", ""),
                    is_seed=bool(t.get("seed")),
                )
                for t in json.loads(row.tracks_json or "[]")
            ],
            model_version=model_version,
            ranker="model" if model_version is not None else "rules",
        )
        for row in rows
        if not row.removed_from_config and row.last_generated_at is not None
    ]


@contextmanager
def update_sink(engine: Engine, config_id: str, sink: str) -> Iterator[tables.PlaylistSinkState]:
    """The playlist's row for `sink`, created if new (the playlist's own row must exist),
    committed when the block ends without error."""
    with Session(engine) as session:
        row = session.get(tables.PlaylistSinkState, (config_id, sink)) or tables.PlaylistSinkState(
            config_id=config_id, sink=sink
        )
        yield row
        session.add(row)
        session.commit()


def sink_state(engine: Engine, config_id: str, sink: str) -> tables.PlaylistSinkState | None:
    with Session(engine) as session:
        return session.get(tables.PlaylistSinkState, (config_id, sink))


def sink_states(engine: Engine) -> list[tables.PlaylistSinkState]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(tables.PlaylistSinkState).order_by(
                    col(tables.PlaylistSinkState.config_id), col(tables.PlaylistSinkState.sink)
                )
            ).all()
        )


def record_outcomes(
    engine: Engine, sink: str, outcomes: Sequence[SinkOutcome], now: int
) -> None:
    """Keep how a sink's write of each playlist went: a write clears a deferral and an error,
    a deferral keeps its time, a failure its reason (with what to do, where the sink says)."""
    for outcome in outcomes:
        with update_sink(engine, outcome.config_id, sink) as row:
            row.last_status = outcome.status
            row.deferred_until = outcome.deferred_until if outcome.status == "deferred" else None
            if outcome.status == "written":
                row.last_written_at, row.last_error = now, None
            else:
                hint = outcome.hint
                row.last_error = f"{outcome.error} ({hint})" if hint else outcome.error


def deferred(engine: Engine) -> dict[str, dict[str, int]]:
    """Writes that wait for a time their sink named: sink -> playlist id -> epoch s."""
    with Session(engine) as session:
        rows = session.exec(
            select(tables.PlaylistSinkState, tables.PlaylistState)
            .join(
                tables.PlaylistState,
                col(tables.PlaylistState.config_id) == col(tables.PlaylistSinkState.config_id),
            )
            .where(col(tables.PlaylistSinkState.deferred_until).is_not(None))
        ).all()
    waiting: dict[str, dict[str, int]] = {}
    for sink_row, playlist_row in rows:
        if not playlist_row.removed_from_config:
            waiting.setdefault(sink_row.sink, {})[sink_row.config_id] = int(
                sink_row.deferred_until or 0
            )
    return waiting


def ever_generated(engine: Engine) -> bool:
    with Session(engine) as session:
        found = session.exec(
            select(tables.PlaylistState.config_id).where(
                col(tables.PlaylistState.last_generated_at).is_not(None)
            )
        ).first()
    return found is not None


def mark_removed(engine: Engine, config_ids: set[str]) -> list[str]:
    """Flag rows whose configuration is gone (left as they are in every sink, no longer
    updated); returns the newly flagged ids. A configuration that comes back is unflagged."""
    newly: list[str] = []
    with Session(engine) as session:
        for row in session.exec(select(tables.PlaylistState)).all():
            removed = row.config_id not in config_ids
            if removed and not row.removed_from_config:
                newly.append(row.config_id)
            if removed != row.removed_from_config:
                row.removed_from_config = removed
                session.add(row)
        session.commit()
    for config_id in newly:
        log.info(
            "playlist no longer configured; left as it is in every sink and not updated",
            playlist=config_id,
        )
    return newly
