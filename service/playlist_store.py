"""The playlist store: what songnet keeps of each configured playlist (`playlist_state`).

One stored-playlist type (`StoredPlaylist`, the last generated list with its tracks) and one
place that gets or creates a playlist's row (`update`): the publish use case, the Spotify
sync and the retry of a deferred sync all read and write through here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service import tables
from service.playlist_shape import Playlist

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
        row.removed_from_config = False


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
        )
        for row in rows
        if not row.removed_from_config and row.last_generated_at is not None
    ]


def deferred(engine: Engine) -> dict[str, int]:
    """Playlists whose sync waits for a time the sink named (id -> epoch s)."""
    with Session(engine) as session:
        rows = session.exec(
            select(tables.PlaylistState).where(
                col(tables.PlaylistState.deferred_until).is_not(None)
            )
        ).all()
    return {r.config_id: int(r.deferred_until or 0) for r in rows if not r.removed_from_config}


def ever_generated(engine: Engine) -> bool:
    with Session(engine) as session:
        found = session.exec(
            select(tables.PlaylistState.config_id).where(
                col(tables.PlaylistState.last_generated_at).is_not(None)
            )
        ).first()
    return found is not None


def mark_removed(engine: Engine, config_ids: set[str]) -> list[str]:
    """Flag rows whose configuration is gone (left as they are in Spotify, no longer
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
            "playlist no longer configured; left as it is in Spotify and not updated",
            playlist=config_id,
        )
    return newly
