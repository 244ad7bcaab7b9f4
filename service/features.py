"""The feature cache in SQLite: `track_features` from the history, `audio_features` from a CSV.

`recompute_features` rebuilds `track_features` from every stored play (the importer calls it
after an import that added plays). `import_audio_features_csv` reads a user-supplied
Kaggle-style CSV of audio features keyed by track (a `uri`, `track_uri`, `id` or `track_id`
column); rows it cannot use are counted by reason and never stop the import.
`load_feature_matrix` gives the model its normalised matrix for any list of track ids.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import structlog
from sqlalchemy import Engine, delete, func, text
from sqlmodel import Session, col, select

from service import tables
from service.db import now_ts, session_scope
from songnet_core.features import (
    AUDIO_COLUMNS,
    TrackFeatures,
    feature_matrix,
    track_features_from_arrays,
)

log = structlog.get_logger(__name__)

# CSV columns that name the track, best first.
URI_COLUMNS = ("uri", "track_uri", "spotify_track_uri", "spotify_uri", "id", "track_id", "spotify_id")
# Numeric columns kept besides AUDIO_COLUMNS (useful later, e.g. a track's true length).
EXTRA_COLUMNS = ("key", "mode", "time_signature", "duration_ms", "popularity")
_BARE_ID = re.compile(r"^[A-Za-z0-9]{22}$")
_URI = re.compile(r"^spotify:track:([A-Za-z0-9]{22})$")
_URL = re.compile(r"open\.spotify\.com/(?:intl-[a-z-]+/)?track/([A-Za-z0-9]{22})")
_BATCH = 5000
_INSERT_FEATURES = (
    "INSERT INTO track_features (track_id, play_count, skip_rate, mean_completion, first_ts,"
    " last_ts, hour_profile_json, computed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class AudioCsvError(Exception):
    """The file as a whole cannot be read as an audio-features CSV (nothing was stored)."""


@dataclass
class AudioCsvReport:
    path: str
    rows: int = 0
    stored: int = 0  # distinct tracks stored (new or updated)
    bad_rows: dict[str, int] = field(default_factory=dict)  # reason -> rows left out
    duplicates: int = 0  # later rows for a URI already in the file (the last one wins)
    matched_tracks: int = 0  # library tracks that now have audio features
    columns: list[str] = field(default_factory=list)  # audio columns the file had

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "rows": self.rows, "stored": self.stored, "bad_rows": dict(self.bad_rows),
            "duplicates": self.duplicates, "matched_tracks": self.matched_tracks, "columns": self.columns,
        }  # fmt: skip


def _default_zone() -> tzinfo:
    try:
        import tzlocal

        zone: tzinfo = tzlocal.get_localzone()
        return zone
    except Exception:  # no zone configured on the system: UTC, as in containers
        return UTC


def recompute_features(engine: Engine, *, tz: tzinfo | None = None, now: int | None = None) -> int:
    """Rebuild `track_features` from every stored play; returns the number of tracks.

    `tz` is the listener's zone for the hour profile (default: the system's). One transaction:
    readers see the old cache or the new one, never a mix.
    """
    from service.library import load_play_columns

    track, end, ms, skipped = load_play_columns(engine)
    feats = track_features_from_arrays(track, end, ms, skipped, tz=tz or _default_zone())
    stamp = now if now is not None else now_ts()
    # Rounded and encoded as whole arrays: per value in Python this took longer than the rest.
    profiles = np.round(np.array([f.hour_profile for f in feats.values()]), 5).reshape(-1, 24)
    encode = msgspec.json.encode
    rows = [
        (
            f.track_id, f.play_count, f.skip_rate, f.mean_completion, f.first_ts, f.last_ts,
            encode(profile).decode(), stamp,
        )
        for f, profile in zip(feats.values(), profiles.tolist(), strict=True)
    ]  # fmt: skip
    # The driver's executemany: the ORM's bulk insert takes several times as long.
    with engine.begin() as conn:
        conn.execute(delete(tables.TrackFeatures))
        conn.exec_driver_sql(_INSERT_FEATURES, rows)
    log.info("track features recomputed", tracks=len(rows), plays=int(track.size))
    return len(rows)


def load_track_features(engine: Engine, track_ids: Sequence[int] | None = None) -> dict[int, TrackFeatures]:
    """The cached features (all tracks, or those of `track_ids`)."""
    # The driver's cursor: SQLAlchemy's rows cost more than the rest at 20k tracks.
    raw = engine.raw_connection()
    try:
        rows = raw.cursor().execute(_LOAD_FEATURES).fetchall()
    finally:
        raw.close()
    wanted = None if track_ids is None else set(track_ids)
    if wanted is not None:
        rows = [r for r in rows if r[0] in wanted]
    profiles = _hour_profiles([r[6] for r in rows])
    out: dict[int, TrackFeatures] = {}
    for row, profile in zip(rows, profiles, strict=True):
        track_id, plays, skip_rate, completion, first_ts, last_ts, _ = row
        out[track_id] = TrackFeatures(
            track_id, plays, skip_rate, completion, first_ts, last_ts, profile
        )
    return out


_LOAD_FEATURES = (
    "SELECT track_id, play_count, skip_rate, mean_completion, first_ts, last_ts,"
    " hour_profile_json FROM track_features"
)
_NO_PROFILE = tuple([0.0] * 24)


def _hour_profiles(texts: list[str]) -> list[tuple[float, ...]]:
    """Each stored hour profile as 24 floats (24 zeros where it is not a list of 24 numbers).

    What the cache writes (a JSON list of 24 numbers per track) is parsed in one call, as one
    JSON document: where the texts hold nothing but numbers, commas and brackets, and each is
    a bracketed list, each is one element of it. Anything else falls back to a parse per
    track."""
    joined = ",".join(texts)
    if _NUMBER_LISTS.fullmatch(joined) and all(t[:1] == "[" and t[-1:] == "]" for t in texts):
        try:
            table = np.asarray(json.loads("[" + joined + "]"), dtype=np.float64)
        except ValueError:  # not JSON, or lists of other lengths
            table = None
        if table is not None and table.shape == (len(texts), 24):
            return [tuple(row) for row in table.tolist()]
    return [_hour_profile(t) for t in texts]


_NUMBER_LISTS = re.compile(r"[0-9eE.+\-,\[\] ]*")


def _hour_profile(text: str) -> tuple[float, ...]:
    try:
        profile = tuple(float(x) for x in json.loads(text))
    except (ValueError, TypeError):
        profile = ()
    return profile if len(profile) == 24 else _NO_PROFILE


def load_audio_features(engine: Engine) -> dict[int, dict[str, float]]:
    """Audio features by library track id, through each track's URI and its aliases."""
    with Session(engine) as session:
        found = session.exec(
            select(tables.TrackUri.track_id, tables.AudioFeatures.features_json).join(
                tables.AudioFeatures, col(tables.AudioFeatures.uri) == col(tables.TrackUri.uri)
            )
        ).all()
        preferred = session.exec(
            select(tables.Track.id, tables.AudioFeatures.features_json).join(
                tables.AudioFeatures, col(tables.AudioFeatures.uri) == col(tables.Track.uri)
            )
        ).all()
    out: dict[int, dict[str, float]] = {}
    # The track's preferred URI wins over an alias.
    for track_id, raw in [*found, *preferred]:
        if track_id is None:
            continue
        try:
            values = json.loads(raw)
        except ValueError:
            continue
        if isinstance(values, dict):
            out[track_id] = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
    return out


def load_feature_matrix(engine: Engine, track_ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """`features.feature_matrix` rows for `track_ids` from both caches; missing values filled."""
    feats = load_track_features(engine)
    audio = load_audio_features(engine)
    with Session(engine) as session:
        latest = session.exec(select(func.max(tables.TrackFeatures.last_ts))).one()
    return feature_matrix(list(track_ids), feats, audio, reference_ts=int(latest or 0))


def normalise_track_uri(value: str) -> str | None:
    """A `spotify:track:<id>` URI from a URI, an open.spotify.com link or a bare 22-char id."""
    v = value.strip()
    if m := _URI.match(v):
        return f"spotify:track:{m.group(1)}"
    if _BARE_ID.match(v):
        return f"spotify:track:{v}"
    if m := _URL.search(v):
        return f"spotify:track:{m.group(1)}"
    return None


def _open_csv(path: Path) -> tuple[io.TextIOWrapper, csv.DictReader[str]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise AudioCsvError(f"cannot read {path}: {exc.strerror}") from None
    head = handle.read(65536)
    handle.seek(0)
    try:
        head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is fine; anything else is not.
        if len(head) < 65536 or exc.start < len(head) - 4:
            handle.close()
            raise AudioCsvError(f"{path} is not UTF-8 text; save it as UTF-8 CSV") from None
    text_stream = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    sample = head.decode("utf-8-sig", errors="ignore").splitlines()[0] if head else ""
    delimiter = max((",", ";", "\t"), key=sample.count) if sample else ","
    reader = csv.DictReader(text_stream, delimiter=delimiter)
    return text_stream, reader


def import_audio_features_csv(
    engine: Engine, path: Path, *, progress: Callable[[int], None] | None = None
) -> AudioCsvReport:
    """Store the audio features of a Kaggle-style CSV, keyed by track URI.

    The file must have a track column (`URI_COLUMNS`) and at least one of `AUDIO_COLUMNS`;
    otherwise `AudioCsvError` and nothing is stored. A row without a usable track id, or with
    no usable audio value, is counted in `bad_rows` and left out; a single unusable value is
    left out of its row. All rows are stored in one transaction.
    """
    report = AudioCsvReport(path=str(path))
    stream, reader = _open_csv(path)
    bad: Counter[str] = Counter()
    values_by_uri: dict[str, dict[str, float]] = {}
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not header:
            raise AudioCsvError(f"{path} is empty or has no header row")
        lower = {h.lower(): h for h in header}
        reader.fieldnames = header
        key_col = next((lower[c] for c in URI_COLUMNS if c in lower), None)
        audio_cols = [c for c in AUDIO_COLUMNS if c in lower]
        extra_cols = [c for c in EXTRA_COLUMNS if c in lower]
        if key_col is None:
            raise AudioCsvError(
                f"{path} has no track column (one of {', '.join(URI_COLUMNS)}); header: {', '.join(header[:12])}"
            )
        if not audio_cols:
            raise AudioCsvError(f"{path} has none of the audio feature columns {', '.join(AUDIO_COLUMNS)}")
        report.columns = audio_cols
        try:
            for row in reader:
                report.rows += 1
                if progress is not None and report.rows % 10_000 == 0:
                    progress(report.rows)
                if None in row:  # more fields than the header: a broken line
                    bad["extra fields"] += 1
                    continue
                uri = normalise_track_uri(row.get(key_col) or "")
                if uri is None:
                    bad["no track id"] += 1
                    continue
                values: dict[str, float] = {}
                for c in (*audio_cols, *extra_cols):
                    number = _number(row.get(lower[c]))
                    if number is not None:
                        values[c] = number
                if not any(c in values for c in audio_cols):
                    bad["no audio values"] += 1
                    continue
                if uri in values_by_uri:
                    report.duplicates += 1
                values_by_uri[uri] = values
        except csv.Error as exc:
            raise AudioCsvError(f"{path} is not a readable CSV (line {reader.line_num}): {exc}") from None
        except UnicodeDecodeError:
            raise AudioCsvError(f"{path} is not UTF-8 text (after row {report.rows}); save it as UTF-8 CSV") from None
    finally:
        stream.close()
    report.bad_rows = dict(bad)
    items = [{"uri": u, "features_json": json.dumps(v, sort_keys=True)} for u, v in values_by_uri.items()]
    with session_scope(engine) as session:
        for start in range(0, len(items), _BATCH):
            session.execute(
                text("INSERT OR REPLACE INTO audio_features (uri, features_json) VALUES (:uri, :features_json)"),
                items[start : start + _BATCH],
            )
    report.stored = len(items)
    report.matched_tracks = len(load_audio_features(engine))
    log.info(
        "audio features imported", path=str(path), rows=report.rows, stored=report.stored,
        bad_rows=report.bad_rows, matched_tracks=report.matched_tracks,
    )  # fmt: skip
    if bad:
        log.warning("audio feature rows left out", path=str(path), by_reason=report.bad_rows)
    return report


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None
