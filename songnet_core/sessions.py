"""Splitting a listening history into sessions, the sequences the model learns from.

Works on any play-like item with `end_ts` (seconds, UTC) and `ms_played`: the parsed
`history.Play` and the stored `history.Listen` alike. The steps, in order:

1. plays shorter than `min_ms` are left out (a skip is a signal for other uses, but not a
   step in a listening sequence);
2. the rest are ordered by end time (stably, so equal times keep their input order);
3. a new session starts where a play ends more than `gap_s` after the previous kept play
   ended, or, with `max_len_s`, more than `max_len_s` after the session's first play ended
   (the original songnet cut history into fixed one-hour windows);
4. within a session, a run of consecutive plays of the same track becomes its first play.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from itertools import pairwise
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

DEFAULT_MIN_MS = 30_000
DEFAULT_GAP_S = 1800


class Timed(Protocol):
    """Anything with an end time and a duration played: `Play`, `Listen`, test doubles."""

    @property
    def end_ts(self) -> int: ...

    @property
    def ms_played(self) -> int: ...


T = TypeVar("T", bound=Timed)


def track_identity(item: object) -> Hashable:
    """A play's track identity: `track_id` for stored listens, `key` (artist + title) otherwise."""
    track_id = getattr(item, "track_id", None)
    if track_id is not None:
        return track_id  # type: ignore[no-any-return]
    key = getattr(item, "key", None)
    if key is not None:
        return key  # type: ignore[no-any-return]
    raise TypeError(f"{type(item).__name__} has neither track_id nor key; pass key= to split_sessions")


def split_sessions(
    plays: Iterable[T],
    *,
    min_ms: int = DEFAULT_MIN_MS,
    gap_s: int = DEFAULT_GAP_S,
    max_len_s: int | None = None,
    collapse_repeats: bool = True,
    key: Callable[[T], Hashable] = track_identity,
) -> list[list[T]]:
    """The listening sessions in `plays`, each a non-empty list in end-time order.

    Sessions are cut on the kept plays (those of at least `min_ms`): within a session each
    kept play ends at most `gap_s` after the one before it, and with `max_len_s` at most
    `max_len_s` after the session's first. Repeats are collapsed afterwards, so a long run
    of one track keeps the session together even though only its first play is returned.
    """
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0, got {gap_s}")
    if max_len_s is not None and max_len_s < 0:
        raise ValueError(f"max_len_s must be >= 0, got {max_len_s}")
    kept = sorted((p for p in plays if p.ms_played >= min_ms), key=_end_ts)
    sessions: list[list[T]] = []
    current: list[T] = []
    current_key: Hashable = None
    first_end = prev_end = 0
    for play in kept:
        end = play.end_ts
        if current and (end - prev_end > gap_s or (max_len_s is not None and end - first_end > max_len_s)):
            sessions.append(current)
            current = []
        play_key = key(play) if collapse_repeats else None
        if not current:
            first_end = end
            current.append(play)
        elif collapse_repeats and play_key == current_key:
            pass  # a repeat of the play before: the run is represented by its first play
        else:
            current.append(play)
        current_key = play_key
        prev_end = end
    if current:
        sessions.append(current)
    return sessions


def _end_ts(play: Timed) -> int:
    return play.end_ts


def count_sessions(end_times: Iterable[int], *, gap_s: int = DEFAULT_GAP_S) -> int:
    """How many sessions `split_sessions` finds in plays (already of at least `min_ms`) ending
    at `end_times`, without building them: for stats over a whole library."""
    ends = sorted(end_times)
    return (1 if ends else 0) + sum(1 for a, b in pairwise(ends) if b - a > gap_s)


def session_arrays(
    end_ts: npt.NDArray[np.int64],
    ms_played: npt.NDArray[np.int64],
    track_ids: npt.NDArray[np.int64],
    *,
    min_ms: int = DEFAULT_MIN_MS,
    gap_s: int = DEFAULT_GAP_S,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """`split_sessions(plays, min_ms=..., gap_s=...)` (repeats collapsed by track id, no
    `max_len_s`) over plays given as columns, without an object per play: the positions in
    the columns of the plays it returns, session after session, and the index among them
    where each session starts."""
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0, got {gap_s}")
    kept = np.flatnonzero(ms_played >= min_ms)
    # Stably, as `sorted`: equal times keep their order.
    kept = kept[np.argsort(end_ts[kept], kind="stable")]
    ends, tracks = end_ts[kept], track_ids[kept]
    new = np.ones(kept.size, dtype=bool)
    new[1:] = ends[1:] - ends[:-1] > gap_s
    # A play of the track of the kept play before it, in the same session, is a repeat.
    repeat = np.zeros(kept.size, dtype=bool)
    repeat[1:] = (tracks[1:] == tracks[:-1]) & ~new[1:]
    positions: npt.NDArray[np.int64] = kept[~repeat].astype(np.int64)
    starts: npt.NDArray[np.int64] = np.flatnonzero(new[~repeat]).astype(np.int64)
    return positions, starts
