"""From stored plays to what the model and the evaluation read: one listening sequence.

The listener's sessions (`sessions.split_sessions`: plays ≥ 30 s, a new session after a
30-min gap, consecutive repeats collapsed) are laid end to end in time order, so a model can
look back across sessions; each position carries context features and where its session
starts. `Vocabulary` numbers the tracks seen in a training prefix (the output classes); only
tracks played at least `min_count` times get an embedding of their own, rarer ones are
represented through their artist. `time_split` cuts sessions by start time: the evaluation
protocol holds out the last 20 % as test, training holds out the last share of its part for
validation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from songnet_core.history import Listen
from songnet_core.sessions import DEFAULT_GAP_S, DEFAULT_MIN_MS, split_sessions

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

CONTEXT_FEATURES = (
    "hour_sin", "hour_cos", "weekday_sin", "weekday_cos",
    "log_gap", "new_session", "log_played", "skipped", "skip_known",
)  # fmt: skip
N_CONTEXT = len(CONTEXT_FEATURES)


@dataclass(frozen=True)
class ListeningSequence:
    """Every session of a history end to end; arrays indexed by position (one kept play each)."""

    track_ids: IntArray  # library track id
    artist_ids: IntArray  # library artist id
    end_ts: IntArray  # seconds since the epoch, UTC
    context: FloatArray  # [n, N_CONTEXT], see `context_features`
    session: IntArray  # session index of each position
    session_starts: IntArray  # position where each session starts, ascending

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def n_sessions(self) -> int:
        return len(self.session_starts)

    def session_bounds(self, s: int) -> tuple[int, int]:
        """Positions [start, end) of session `s`."""
        end = int(self.session_starts[s + 1]) if s + 1 < self.n_sessions else len(self)
        return int(self.session_starts[s]), end

    def prefix(self, n_sessions: int) -> ListeningSequence:
        """The first `n_sessions` sessions."""
        end = self.session_bounds(n_sessions - 1)[1] if n_sessions > 0 else 0
        return ListeningSequence(
            self.track_ids[:end], self.artist_ids[:end], self.end_ts[:end],
            self.context[:end], self.session[:end], self.session_starts[:n_sessions],
        )  # fmt: skip


def context_features(
    end_ts: int, prev_end_ts: int | None, ms_played: int, skipped: bool | None, zone: ZoneInfo
) -> list[float]:
    """What is known when the next track is chosen: local time, the gap since the play
    before, and how fully this play was heard."""
    local = datetime.fromtimestamp(end_ts, zone)
    hour = local.hour + local.minute / 60.0
    wd = local.weekday() + hour / 24.0
    gap = 0.0 if prev_end_ts is None else max(0.0, float(end_ts - prev_end_ts))
    return [
        math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
        math.sin(2 * math.pi * wd / 7), math.cos(2 * math.pi * wd / 7),
        math.log1p(gap / 60.0) / 5.0,
        0.0,  # new_session: set by the caller, which knows the session boundaries
        math.log1p(ms_played / 1000.0) / 6.0,
        1.0 if skipped else 0.0,
        0.0 if skipped is None else 1.0,
    ]  # fmt: skip


def build_sequence(
    listens: Sequence[Listen],
    *,
    tz: str = "UTC",
    min_ms: int = DEFAULT_MIN_MS,
    gap_s: int = DEFAULT_GAP_S,
) -> ListeningSequence:
    """The sessions of `listens` (any order) as one sequence with context features."""
    zone = ZoneInfo(tz)
    sessions = split_sessions(listens, min_ms=min_ms, gap_s=gap_s, collapse_repeats=True)
    tracks: list[int] = []
    artists: list[int] = []
    ends: list[int] = []
    ctx: list[list[float]] = []
    session: list[int] = []
    starts: list[int] = []
    prev_end: int | None = None
    for s, plays in enumerate(sessions):
        starts.append(len(tracks))
        for i, p in enumerate(plays):
            row = context_features(p.end_ts, prev_end, p.ms_played, p.skipped, zone)
            row[5] = 1.0 if i == 0 else 0.0
            tracks.append(p.track_id)
            artists.append(p.artist_id)
            ends.append(p.end_ts)
            ctx.append(row)
            session.append(s)
            prev_end = p.end_ts
    return ListeningSequence(
        track_ids=np.asarray(tracks, dtype=np.int64),
        artist_ids=np.asarray(artists, dtype=np.int64),
        end_ts=np.asarray(ends, dtype=np.int64),
        context=np.asarray(ctx, dtype=np.float32).reshape(len(tracks), N_CONTEXT),
        session=np.asarray(session, dtype=np.int64),
        session_starts=np.asarray(starts, dtype=np.int64),
    )


def time_split(n_sessions: int, held_out_share: float) -> int:
    """Index of the first held-out session: sessions are in start order, the last
    `held_out_share` of them (at least one, where there are two or more) are held out."""
    if not 0.0 < held_out_share < 1.0:
        raise ValueError(f"held_out_share must be in (0, 1), got {held_out_share}")
    if n_sessions < 2:
        return n_sessions
    held_out = max(1, round(n_sessions * held_out_share))
    return n_sessions - held_out


@dataclass(frozen=True)
class Vocabulary:
    """The output classes: every track of a training prefix, most played first.

    `own[c]` is the index of class c's own embedding (0: none, the track is rarer than
    `min_count` and represented by its artist alone). `artist[c]` indexes `artist_ids`;
    artist index 0 is "unknown artist".
    """

    track_ids: IntArray  # [C] library track id of each class
    counts: IntArray  # [C] plays in the training prefix
    own: IntArray  # [C] own-embedding index, 0 = none
    artist: IntArray  # [C] artist index
    artist_ids: IntArray  # [A] library artist id of each artist index; [0] = -1 (unknown)
    min_count: int

    @property
    def n_classes(self) -> int:
        return len(self.track_ids)

    @property
    def n_own(self) -> int:
        """Rows of the own-embedding table, the shared "none" row included."""
        return int(self.own.max(initial=0)) + 1

    @property
    def n_artists(self) -> int:
        return len(self.artist_ids)

    @staticmethod
    def build(seq: ListeningSequence, *, min_count: int = 2) -> Vocabulary:
        counts = Counter(seq.track_ids.tolist())
        artist_of = dict(zip(seq.track_ids.tolist(), seq.artist_ids.tolist(), strict=True))
        # Most played first, ties by id: a stable order that doubles as the popularity tie-break.
        order = sorted(counts, key=lambda t: (-counts[t], t))
        artist_list = [-1, *sorted(set(artist_of.values()))]
        artist_index = {a: i for i, a in enumerate(artist_list)}
        own: list[int] = []
        next_own = 1
        for t in order:
            if counts[t] >= min_count:
                own.append(next_own)
                next_own += 1
            else:
                own.append(0)
        return Vocabulary(
            track_ids=np.asarray(order, dtype=np.int64),
            counts=np.asarray([counts[t] for t in order], dtype=np.int64),
            own=np.asarray(own, dtype=np.int64),
            artist=np.asarray([artist_index[artist_of[t]] for t in order], dtype=np.int64),
            artist_ids=np.asarray(artist_list, dtype=np.int64),
            min_count=min_count,
        )

    def class_index(self) -> dict[int, int]:
        return {int(t): c for c, t in enumerate(self.track_ids)}

    def artist_index(self) -> dict[int, int]:
        return {int(a): i for i, a in enumerate(self.artist_ids) if i > 0}

    def encode(self, track_ids: IntArray, artist_ids: IntArray) -> EncodedTracks:
        """Class, own-embedding and artist indices of library tracks (-1 / 0 / 0 where unknown)."""
        ci = self.class_index()
        ai = self.artist_index()
        cls = np.asarray([ci.get(int(t), -1) for t in track_ids], dtype=np.int64)
        own = np.where(cls >= 0, self.own[np.maximum(cls, 0)], 0).astype(np.int64)
        art = np.asarray([ai.get(int(a), 0) for a in artist_ids], dtype=np.int64)
        return EncodedTracks(cls=cls, own=own, artist=art)

    def to_dict(self) -> dict[str, list[int] | int]:
        return {
            "track_ids": self.track_ids.tolist(), "counts": self.counts.tolist(),
            "own": self.own.tolist(), "artist": self.artist.tolist(),
            "artist_ids": self.artist_ids.tolist(), "min_count": self.min_count,
        }  # fmt: skip

    @staticmethod
    def from_dict(d: dict[str, list[int] | int]) -> Vocabulary:
        def arr(key: str) -> IntArray:
            value = d[key]
            assert isinstance(value, list)
            return np.asarray(value, dtype=np.int64)

        min_count = d["min_count"]
        assert isinstance(min_count, int)
        return Vocabulary(
            arr("track_ids"), arr("counts"), arr("own"), arr("artist"), arr("artist_ids"), min_count
        )


@dataclass(frozen=True)
class EncodedTracks:
    cls: IntArray  # output class, -1 where the track is not a class
    own: IntArray  # own-embedding row, 0 = none
    artist: IntArray  # artist index, 0 = unknown


@dataclass(frozen=True)
class EncodedSequence:
    """A `ListeningSequence` in a vocabulary's indices: what the model consumes."""

    seq: ListeningSequence
    vocab: Vocabulary
    tracks: EncodedTracks

    @staticmethod
    def build(seq: ListeningSequence, vocab: Vocabulary) -> EncodedSequence:
        return EncodedSequence(seq, vocab, vocab.encode(seq.track_ids, seq.artist_ids))


def target_positions(seq: ListeningSequence, first_session: int, end_session: int | None = None) -> IntArray:
    """The protocol's targets: every position after the first of sessions [first, end)."""
    end = seq.n_sessions if end_session is None else end_session
    out: list[int] = []
    for s in range(first_session, end):
        a, b = seq.session_bounds(s)
        out.extend(range(a + 1, b))
    return np.asarray(out, dtype=np.int64)
