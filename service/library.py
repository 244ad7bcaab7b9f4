"""Reading the stored library back: plays for the core (`Listen`), tracks, and stats.

Plain SQL on the `play`, `track` and `artist` tables (see `tables.py`), not the ORM: 500k
plays come back as plain `Listen` values without 500k ORM objects and their bookkeeping.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, text

from songnet_core.history import Listen, ListenColumns, TrackInfo
from songnet_core.sessions import DEFAULT_GAP_S, DEFAULT_MIN_MS, count_sessions

_LISTENS = """
SELECT p.id, p.track_id, t.artist_id, p.end_ts, p.ms_played, p.skipped
FROM play AS p JOIN track AS t ON t.id = p.track_id
ORDER BY p.end_ts, p.id
"""
_TRACKS = """
SELECT t.id, t.artist_id, a.name, t.title, t.uri, t.album
FROM track AS t JOIN artist AS a ON a.id = t.artist_id
"""


def load_listens(engine: Engine) -> list[Listen]:
    """Every stored play, short ones included, ordered by end time then play id."""
    # The driver's own cursor: SQLAlchemy's result rows would double the time at 500k plays.
    raw = engine.raw_connection()
    try:
        rows = raw.cursor().execute(_LISTENS).fetchall()
    finally:
        raw.close()
    return [
        Listen(play_id, track_id, artist_id, end_ts, ms, None if skipped is None else bool(skipped))
        for play_id, track_id, artist_id, end_ts, ms, skipped in rows
    ]


# Every play in one row: each column as its values joined by commas, parsed by numpy in one
# call (a Python tuple per play is most of the time of reading a library). The aggregates
# visit the rows in one order, so the columns line up; `load_listen_columns` sorts.
_PLAY_TEXT = """
SELECT COUNT(*), group_concat(id), group_concat(track_id), group_concat(end_ts), group_concat(ms_played),
       group_concat(COALESCE(skipped, -1))
FROM play NOT INDEXED
"""


def load_listen_columns(engine: Engine, artist_of: npt.NDArray[np.int64]) -> ListenColumns:
    """`load_listens` as columns: every stored play of a track in `artist_of` (artist id by
    track id, -1 where there is no track, as `load_listens`' join with `track`), ordered by
    end time then play id."""
    raw = engine.raw_connection()
    try:
        count, *texts = raw.cursor().execute(_PLAY_TEXT).fetchone()
    finally:
        raw.close()
    cols = [_int_column(text, count) for text in texts]
    play_id, track_id, end_ts, ms_played, skipped = cols
    order = np.lexsort((play_id, end_ts))
    track_id = track_id[order]
    known = (track_id >= 0) & (track_id < artist_of.size)
    known[known] = artist_of[track_id[known]] >= 0
    order, track_id = order[known], track_id[known]
    flags = skipped[order].astype(np.int8)
    return ListenColumns(
        play_id[order], track_id, artist_of[track_id], end_ts[order], ms_played[order], flags
    )


def _int_column(text: str | None, count: int) -> npt.NDArray[np.int64]:
    values = np.fromstring(text, dtype=np.int64, sep=",") if text else np.zeros(0, dtype=np.int64)
    if values.size != count:
        raise RuntimeError(f"read {values.size} values of a column of {count} plays")
    return values


# In table order: the features computed from these columns do not depend on the order.
_PLAY_COLUMNS = "SELECT track_id, end_ts, ms_played, COALESCE(skipped, -1) FROM play"

PlayColumns = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int8]
]


def load_play_columns(engine: Engine) -> PlayColumns:
    """Every stored play as columns: track id, end time, ms played, and the skipped flag (1, 0,
    or -1 where the export does not say); for whole-array work without a `Listen` per play."""
    raw = engine.raw_connection()
    try:
        rows = raw.cursor().execute(_PLAY_COLUMNS).fetchall()
    finally:
        raw.close()
    table = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy(), table[:, 3].astype(np.int8)


def load_tracks(engine: Engine) -> dict[int, TrackInfo]:
    """Every track of the library by id, with its artist's display name."""
    raw = engine.raw_connection()
    try:
        rows = raw.cursor().execute(_TRACKS).fetchall()
    finally:
        raw.close()
    return {
        track_id: TrackInfo(track_id, artist_id, artist, title, uri, album)
        for track_id, artist_id, artist, title, uri, album in rows
    }


def iso_utc(ts: int | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC ("2023-09-25T12:26:38Z")."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Aggregates over every play scan the table (NOT INDEXED): through the indexes SQLite would
# visit the rows in index order, a random read per play, about three times slower at 500k.
_TOTALS = """
SELECT COUNT(*), MIN(end_ts), MAX(end_ts), COALESCE(SUM(ms_played), 0),
       COALESCE(SUM(skipped IS 1), 0), COALESCE(SUM(ms_played < :min_ms), 0),
       COUNT(DISTINCT track_id)
FROM play NOT INDEXED
"""
_ARTISTS = "SELECT COUNT(DISTINCT artist_id) FROM track WHERE id IN (SELECT track_id FROM play)"
_SOURCES = "SELECT source, COUNT(*) FROM play NOT INDEXED GROUP BY source"
_LISTENED_ENDS = "SELECT end_ts FROM play NOT INDEXED WHERE ms_played >= :min_ms"
_TOP_ARTISTS = """
SELECT a.name, COUNT(*) AS n
FROM play AS p NOT INDEXED JOIN track AS t ON t.id = p.track_id JOIN artist AS a ON a.id = t.artist_id
WHERE p.ms_played >= :min_ms
GROUP BY a.id ORDER BY n DESC, a.name LIMIT :top
"""
_TOP_TRACKS = """
SELECT a.name, t.title, c.n
FROM (SELECT track_id, COUNT(*) AS n FROM play NOT INDEXED WHERE ms_played >= :min_ms
      GROUP BY track_id) AS c
JOIN track AS t ON t.id = c.track_id JOIN artist AS a ON a.id = t.artist_id
ORDER BY c.n DESC, a.name, t.title LIMIT :top
"""


def library_stats(
    engine: Engine, *, top: int = 10, min_ms: int = DEFAULT_MIN_MS, gap_s: int = DEFAULT_GAP_S
) -> dict[str, Any]:
    """What the library holds, as one JSON-ready dict.

    `plays` counts every stored play; `tracks` and `artists` those played at least once.
    `sessions` splits plays of at least `min_ms` on pauses longer than `gap_s`, as training
    does (`songnet_core.sessions`). `skipped` counts plays Spotify flagged as skipped,
    `short_plays` those under `min_ms`. Top artists and tracks rank by plays of at least
    `min_ms` (a skip is not a listen), ties by name.
    """
    params = {"min_ms": min_ms, "top": top}
    with engine.connect() as conn:
        plays, first, last, ms_total, skipped, short, tracks = conn.execute(text(_TOTALS), params).one()
        artists = conn.execute(text(_ARTISTS)).scalar_one()
        by_source: dict[str, int] = dict(conn.execute(text(_SOURCES)).all())
        ends = conn.execute(text(_LISTENED_ENDS), params).scalars().all()
        top_artists = conn.execute(text(_TOP_ARTISTS), params).all()
        top_tracks = conn.execute(text(_TOP_TRACKS), params).all()
    return {
        "plays": plays,
        "tracks": tracks,
        "artists": artists,
        "sessions": count_sessions(ends, gap_s=gap_s),
        "first_play": iso_utc(first),
        "last_play": iso_utc(last),
        "listening_hours": round(ms_total / 3_600_000, 1),
        "skipped": skipped,
        "short_plays": short,
        "sources": {source: by_source.get(source, 0) for source in ("account", "extended")},
        "min_ms": min_ms,
        "gap_s": gap_s,
        "top_artists": [{"artist": name, "plays": count} for name, count in top_artists],
        "top_tracks": [{"artist": name, "title": title, "plays": count} for name, title, count in top_tracks],
    }
