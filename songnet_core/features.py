"""Per-track features computed from the listener's own history, and the model's feature matrix.

Spotify no longer serves audio features to new apps, so what songnet knows of a track comes
from how this person plays it: how often, how often they skip it, how much of it they hear,
at which hours, since when. A user who has a Kaggle-style CSV of audio features may add those
(`AUDIO_COLUMNS`); they are optional and every missing value has a neutral fill plus an
indicator column, so a track with no features at all still gets a valid row.

All transforms into the matrix are fixed (no statistics of the batch), so the same track gets
the same row at training and at generation time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import numpy as np
import numpy.typing as npt

from songnet_core.history import Listen

# A play shorter than this counts as a skip where the export does not say (account data).
SKIP_MS = 30_000
# No song is assumed shorter than this when estimating its full length from plays: a track
# only ever skipped after 10 s must not look "fully played".
MIN_FULL_LENGTH_MS = 90_000
RECENCY_HALF_LIFE_DAYS = 90.0

# Kaggle-style audio feature columns and the fixed range each is scaled from.
AUDIO_COLUMNS: tuple[str, ...] = (
    "danceability",
    "energy",
    "valence",
    "tempo",
    "acousticness",
    "instrumentalness",
    "liveness",
    "speechiness",
    "loudness",
)
_AUDIO_RANGE: dict[str, tuple[float, float]] = {
    "tempo": (0.0, 250.0),
    "loudness": (-60.0, 0.0),
}
# Neutral fill for a missing audio value: the middle of a typical song.
_AUDIO_FILL: dict[str, float] = {
    "danceability": 0.55,
    "energy": 0.6,
    "valence": 0.45,
    "tempo": 120.0,
    "acousticness": 0.3,
    "instrumentalness": 0.1,
    "liveness": 0.2,
    "speechiness": 0.08,
    "loudness": -8.0,
}

FEATURE_NAMES: tuple[str, ...] = (
    "has_history",
    "log_play_count",
    "skip_rate",
    "mean_completion",
    "recency",
    "log_age",
    *(f"hour_{h:02d}" for h in range(24)),
    "audio_coverage",
    *AUDIO_COLUMNS,
)
FEATURE_DIM = len(FEATURE_NAMES)


@dataclass(frozen=True, slots=True)
class TrackFeatures:
    """What the history says about one track."""

    track_id: int
    play_count: int
    skip_rate: float  # share of plays skipped (the export's flag, else shorter than SKIP_MS)
    mean_completion: float  # mean of ms_played / estimated full length, in [0, 1]
    first_ts: int
    last_ts: int
    hour_profile: tuple[float, ...]  # 24 shares of plays by local hour of the play's start


def local_hours(timestamps: npt.NDArray[np.int64], tz: tzinfo) -> npt.NDArray[np.int64]:
    """Hour of day (0-23) in `tz` of each UTC epoch second.

    Zone offsets change only on quarter hours, and at most once a (UTC) day: a day whose
    first and last quarter hour have the same offset has it throughout, so most days cost two
    conversions and only the days of a change one per quarter hour (500k plays convert in
    milliseconds).
    """
    if timestamps.size == 0:
        return np.zeros(0, dtype=np.int64)
    quarters = timestamps // 900
    uniq, inverse = np.unique(quarters, return_inverse=True)
    days, day_of = np.unique(uniq // 96, return_inverse=True)
    first = _offsets(days * 86400, tz)
    last = _offsets(days * 86400 + 86400 - 900, tz)
    offsets = first[day_of]
    for i in np.flatnonzero((first != last)[day_of]).tolist():
        offsets[i] = _utc_offset_seconds(int(uniq[i]) * 900, tz)
    local = timestamps + offsets[inverse]
    return np.asarray((local // 3600) % 24, dtype=np.int64)


def _offsets(timestamps: npt.NDArray[np.int64], tz: tzinfo) -> npt.NDArray[np.int64]:
    return np.fromiter(
        (_utc_offset_seconds(t, tz) for t in timestamps.tolist()),
        dtype=np.int64,
        count=timestamps.size,
    )


def _utc_offset_seconds(ts: int, tz: tzinfo) -> int:
    offset = datetime.fromtimestamp(ts, tz).utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def compute_track_features(listens: Iterable[Listen], *, tz: tzinfo = UTC) -> dict[int, TrackFeatures]:
    """Features of every track that appears in `listens` (all plays, short ones included)."""
    rows = list(listens)
    n = len(rows)
    return track_features_from_arrays(
        np.fromiter((r.track_id for r in rows), dtype=np.int64, count=n),
        np.fromiter((r.end_ts for r in rows), dtype=np.int64, count=n),
        np.fromiter((r.ms_played for r in rows), dtype=np.int64, count=n),
        np.fromiter((-1 if r.skipped is None else r.skipped for r in rows), dtype=np.int8, count=n),
        tz=tz,
    )


def track_features_from_arrays(
    track: npt.NDArray[np.int64],
    end: npt.NDArray[np.int64],
    ms: npt.NDArray[np.int64],
    skipped: npt.NDArray[np.int8],
    *,
    tz: tzinfo = UTC,
) -> dict[int, TrackFeatures]:
    """`compute_track_features` over plays given as columns (`skipped`: 1, 0, or -1 where the
    export does not say), whole-array operations per track group: 500k plays in a fraction of
    a second, without a `Listen` per play."""
    if track.size == 0:
        return {}
    ms = np.maximum(ms, 0)
    flagged = np.where(skipped < 0, ms < SKIP_MS, skipped > 0)
    hours = local_hours(end - ms // 1000, tz)

    order = np.lexsort((ms, track))  # by track, then ms_played ascending
    track, end, ms, flagged, hours = track[order], end[order], ms[order], flagged[order], hours[order]
    starts = np.flatnonzero(np.r_[True, track[1:] != track[:-1]])
    counts = np.diff(np.r_[starts, track.size])
    group = np.repeat(np.arange(starts.size), counts)

    # Nearest-rank 95th percentile of each track's (sorted) plays: the max for fewer than 20
    # plays, robust above.
    p95 = ms[starts + np.ceil(0.95 * counts).astype(np.int64) - 1]
    full = np.maximum(p95, MIN_FULL_LENGTH_MS)
    completion = np.add.reduceat(np.minimum(ms / full[group], 1.0), starts) / counts
    skip_rate = np.add.reduceat(flagged.astype(np.int64), starts) / counts
    first = np.minimum.reduceat(end, starts)
    last = np.maximum.reduceat(end, starts)
    profile = np.bincount(group * 24 + hours, minlength=starts.size * 24).reshape(-1, 24)
    shares = profile / counts[:, None]

    out: dict[int, TrackFeatures] = {}
    for tid, n, skip, done, lo, hi, hour_shares in zip(
        track[starts].tolist(),
        counts.tolist(),
        skip_rate.tolist(),
        completion.tolist(),
        first.tolist(),
        last.tolist(),
        shares.tolist(),
        strict=True,
    ):
        out[tid] = TrackFeatures(tid, n, skip, done, lo, hi, tuple(hour_shares))
    return out


def feature_matrix(
    track_ids: Sequence[int],
    features: Mapping[int, TrackFeatures],
    audio: Mapping[int, Mapping[str, float]] | None = None,
    *,
    reference_ts: int | None = None,
) -> npt.NDArray[np.float32]:
    """A `[len(track_ids), FEATURE_DIM]` float32 matrix, every value in [0, 1], no NaN.

    `audio` maps a track id to whatever audio columns are known for it (missing or non-finite
    values are filled neutrally and lower `audio_coverage`). Recency and age are measured from
    `reference_ts` (default: the latest play among `features`), so the matrix depends on the
    data, not on the wall clock.
    """
    if reference_ts is None:
        reference_ts = max((f.last_ts for f in features.values()), default=0)
    out = np.zeros((len(track_ids), FEATURE_DIM), dtype=np.float32)
    audio_start = FEATURE_NAMES.index("audio_coverage")
    for row, tid in enumerate(track_ids):
        f = features.get(tid)
        if f is not None:
            age_days = max(reference_ts - f.first_ts, 0) / 86_400
            idle_days = max(reference_ts - f.last_ts, 0) / 86_400
            out[row, 0] = 1.0
            out[row, 1] = min(math.log1p(f.play_count) / math.log1p(1000), 1.0)
            out[row, 2] = _unit(f.skip_rate)
            out[row, 3] = _unit(f.mean_completion)
            out[row, 4] = 0.5 ** (idle_days / RECENCY_HALF_LIFE_DAYS)
            out[row, 5] = min(math.log1p(age_days) / math.log1p(3650), 1.0)
            if len(f.hour_profile) == 24:
                out[row, 6:30] = [_unit(x) for x in f.hour_profile]
        values = audio.get(tid) if audio is not None else None
        known = 0
        for j, name in enumerate(AUDIO_COLUMNS):
            raw = values.get(name) if values is not None else None
            if raw is not None and math.isfinite(raw):
                known += 1
                out[row, audio_start + 1 + j] = _scale_audio(name, raw)
            else:
                out[row, audio_start + 1 + j] = _scale_audio(name, _AUDIO_FILL[name])
        out[row, audio_start] = known / len(AUDIO_COLUMNS)
    return out


def _scale_audio(name: str, value: float) -> float:
    lo, hi = _AUDIO_RANGE.get(name, (0.0, 1.0))
    return _unit((value - lo) / (hi - lo))


def _unit(x: float) -> float:
    if not math.isfinite(x):
        return 0.0
    return min(max(x, 0.0), 1.0)
