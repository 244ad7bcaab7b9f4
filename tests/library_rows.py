"""Writing parsed plays straight into a songnet database, for tests of what reads the library.

The importer (`service.importer`) is the real way in and has its own tests; this writes the
same rows (artist, track, URI aliases, play) without its ledger and de-duplication, so tests
of features, training and generation can build a library of any shape in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, insert

from service import tables
from songnet_core.history import Play, normalise


def store_plays(engine: Engine, plays: Sequence[Play], aliases: dict[str, str] | None = None) -> None:
    """Insert `plays` (ids follow end time); `aliases` maps a URI to a second URI of its track."""
    artists: dict[str, int] = {}
    tracks: dict[str, int] = {}
    artist_rows, track_rows, uri_rows, play_rows = [], [], [], []
    for p in sorted(plays, key=lambda x: x.end_ts):
        akey = normalise(p.artist)
        if akey not in artists:
            artists[akey] = len(artists) + 1
            artist_rows.append({"id": artists[akey], "key": akey, "name": p.artist})
        if p.key not in tracks:
            tracks[p.key] = len(tracks) + 1
            track_rows.append(
                {"id": tracks[p.key], "key": p.key, "artist_id": artists[akey], "title": p.title,
                 "album": p.album, "uri": p.uri}
            )  # fmt: skip
            if p.uri:
                uri_rows.append({"uri": p.uri, "track_id": tracks[p.key]})
                alias = (aliases or {}).get(p.uri)
                if alias:
                    uri_rows.append({"uri": alias, "track_id": tracks[p.key]})
        play_rows.append(
            {"track_id": tracks[p.key], "end_ts": p.end_ts, "ms_played": p.ms_played, "source": p.source,
             "skipped": p.skipped, "reason_start": p.reason_start, "reason_end": p.reason_end,
             "shuffle": p.shuffle}
        )  # fmt: skip
    with engine.begin() as conn:
        if artist_rows:
            conn.execute(insert(tables.Artist), artist_rows)
            conn.execute(insert(tables.Track), track_rows)
        if uri_rows:
            conn.execute(insert(tables.TrackUri).prefix_with("OR IGNORE"), uri_rows)
        if play_rows:
            conn.execute(insert(tables.PlayRow).prefix_with("OR IGNORE"), play_rows)
