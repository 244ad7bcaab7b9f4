"""The SQLite schema, as SQLModel tables.

Times are stored as integer seconds since the Unix epoch (UTC): 500k plays are compared and
sorted as ints, never parsed back from strings. Bump `db.SCHEMA_VERSION` and add an upgrade
step in `db.py` for any change to a table that has shipped.
"""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


class SchemaInfo(SQLModel, table=True):
    __tablename__ = "schema_info"
    id: int = Field(default=1, primary_key=True)
    version: int


class ImportedFile(SQLModel, table=True):
    """The import ledger: one row per file content (by SHA-256) ever offered to `import`."""

    __tablename__ = "imported_file"
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(index=True, unique=True)
    path: str
    format: str | None = None  # "account" | "extended" | None
    status: str  # "imported" | "ignored" | "failed"
    records: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped_json: str = "{}"  # {"<reason>": n}
    error: str | None = None
    size_bytes: int = 0
    imported_at: int = 0


class Artist(SQLModel, table=True):
    __tablename__ = "artist"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # normalise(name)
    name: str


class Track(SQLModel, table=True):
    """A song, identified by normalised artist + title (`songnet_core.history.track_key`)."""

    __tablename__ = "track"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    artist_id: int = Field(foreign_key="artist.id", index=True)
    title: str
    album: str | None = None
    uri: str | None = None  # preferred URI: first seen in an export, or resolved by search


class TrackUri(SQLModel, table=True):
    """Every URI seen for a track (aliases)."""

    __tablename__ = "track_uri"
    uri: str = Field(primary_key=True)
    track_id: int = Field(foreign_key="track.id", index=True)


class PlayRow(SQLModel, table=True):
    """A stored play (see `songnet_core.history.Play` for the parsed form)."""

    __tablename__ = "play"
    __table_args__ = (
        # Within one format only identical records are duplicates. Led by (track_id, end_ts),
        # it is also the index for a track's plays by time: one index less to fill on import.
        UniqueConstraint("track_id", "end_ts", "ms_played", "source", name="uq_play_identical"),
    )
    id: int | None = Field(default=None, primary_key=True)
    track_id: int = Field(foreign_key="track.id")
    end_ts: int = Field(index=True)
    ms_played: int
    source: str  # a `songnet_core.play_sources` name: "account", "extended", "listenbrainz", …
    skipped: bool | None = None
    reason_start: str | None = None
    reason_end: str | None = None
    shuffle: bool | None = None
    file_id: int | None = Field(default=None, foreign_key="imported_file.id")
    # The account-data record this (extended) play absorbed, if any: an account export of the
    # same listening imported before or after is then recognised as already stored.
    account_end_ts: int | None = None
    account_ms_played: int | None = None


class SourceState(SQLModel, table=True):
    """Each pull source's account: its watermark and what its pulls did (`service.pull`)."""

    __tablename__ = "source_state"
    source: str = Field(primary_key=True)  # e.g. "listenbrainz"
    account: str = Field(primary_key=True)  # the user on that service
    watermark: int | None = None  # epoch s: the next pull asks for what came after
    last_pull_at: int | None = None  # the last pull's start, whatever its end
    last_ok_at: int | None = None  # the last pull that reached the end of the history
    last_error: str | None = None  # why the last pull failed; None after a good one
    refused: bool = False  # the error needs the listener (user, token, key): see `last_error`
    records: int = 0  # listens fetched, in all pulls
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0


class TrackFeatures(SQLModel, table=True):
    """The feature cache: per-track figures computed from the history (recomputed on import)."""

    __tablename__ = "track_features"
    track_id: int = Field(primary_key=True, foreign_key="track.id")
    play_count: int = 0
    skip_rate: float = 0.0
    mean_completion: float = 0.0
    first_ts: int = 0
    last_ts: int = 0
    hour_profile_json: str = "[]"  # 24 shares of plays by hour of day
    computed_at: int = 0


class AudioFeatures(SQLModel, table=True):
    """User-supplied audio features (Kaggle-style CSV), keyed by track URI."""

    __tablename__ = "audio_features"
    uri: str = Field(primary_key=True)
    features_json: str  # {"danceability": 0.5, ...}


class ModelVersion(SQLModel, table=True):
    """A trained model: checkpoint bytes (weights, config, vocabulary) and its metrics."""

    __tablename__ = "model_version"
    id: int | None = Field(default=None, primary_key=True)
    created_at: int
    promoted: bool = False
    checkpoint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # The early-stopped model before its refit on every session (None: no refit, the same as
    # `checkpoint`). It never saw its validation sessions, so a later model is compared with
    # this one on the later model's validation split.
    validation_checkpoint: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    metrics_json: str = "{}"
    watermark_play_id: int = 0  # highest play id the model was trained on
    plays_trained: int = 0
    note: str | None = None


class PlaylistState(SQLModel, table=True):
    """What songnet knows of each configured playlist (each sink's side: `PlaylistSinkState`)."""

    __tablename__ = "playlist_state"
    config_id: str = Field(primary_key=True)  # the playlist's `id` (slug of name by default)
    name: str
    last_generated_at: int | None = None
    last_error: str | None = None  # why the last generation failed; None after a good one
    tracks_json: str = "[]"  # the last generated list
    removed_from_config: bool = False


class PlaylistSinkState(SQLModel, table=True):
    """One playlist in one sink (`service.playlist_sink`): its id there, the last write's
    outcome, and the time the sink asked to be called again (the daemon's sink retry)."""

    __tablename__ = "playlist_sink_state"
    config_id: str = Field(primary_key=True, foreign_key="playlist_state.config_id")
    sink: str = Field(primary_key=True)  # the sink's `name`: "files", "spotify", …
    remote_id: str | None = None  # the playlist's id in that service (Spotify's playlist id)
    deferred_until: int | None = None  # epoch s
    last_status: str | None = None  # "written" | "deferred" | "failed"
    last_error: str | None = None  # why the last write did not happen; None after a good one
    last_written_at: int | None = None


class ResolvedTrack(SQLModel, table=True):
    """The search-resolution cache, misses included (retried after some days)."""

    __tablename__ = "resolved_track"
    track_id: int = Field(primary_key=True, foreign_key="track.id")
    uri: str | None = None
    score: float | None = None
    checked_at: int


class RunRecord(SQLModel, table=True):
    """Each job run of the daemon (import, train, weekly sync, …) with its outcome."""

    __tablename__ = "run_record"
    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(index=True)
    scheduled_for: int | None = None
    started_at: int
    finished_at: int | None = None
    outcome: str | None = None  # "ok" | "failed" | "deferred" | "interrupted"
    detail_json: str = "{}"


class KeyValue(SQLModel, table=True):
    """Small daemon state (heartbeat, flags) that needs no table of its own."""

    __tablename__ = "kv"
    key: str = Field(primary_key=True)
    value: str
