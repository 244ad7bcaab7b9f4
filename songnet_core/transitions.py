"""Who follows whom in the listener's sessions: transition and co-occurrence counts.

Built once from sessions given as lists of track ids (consecutive repeats already collapsed).
The Markov-walk scorer (`generate.MarkovScorer`) and the human reasons (`reasons.py`) both
read it. Everything is held in sorted numpy arrays, so 500k plays index in a fraction of a
second and each lookup is a binary search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


class TransitionCounts:
    """First-order transition counts, play counts and the sessions each track appears in."""

    def __init__(self, sessions: Iterable[Sequence[int]]) -> None:
        lists = [list(s) for s in sessions]
        lengths = np.fromiter((len(s) for s in lists), dtype=np.int64, count=len(lists))
        tracks = np.fromiter((t for s in lists for t in s), dtype=np.int64, count=int(lengths.sum()))
        self._build(tracks, lengths)

    @classmethod
    def from_arrays(cls, tracks: IntArray, lengths: IntArray) -> TransitionCounts:
        """The counts of the sessions laid end to end in `tracks`, `lengths[i]` tracks in
        session i: `TransitionCounts(sessions)` without a list per session."""
        out = cls.__new__(cls)
        out._build(np.asarray(tracks, dtype=np.int64), np.asarray(lengths, dtype=np.int64))
        return out

    def _build(self, tracks: IntArray, lengths: IntArray) -> None:
        if int(lengths.sum()) != tracks.size:
            raise ValueError("session lengths do not add up to the tracks given")
        n_sessions = len(lengths)
        session = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
        self.session_count = n_sessions
        self._base = int(tracks.max(initial=0)) + 1
        self.plays: IntArray = np.bincount(tracks, minlength=self._base).astype(np.int64) if tracks.size else np.zeros(1, dtype=np.int64)

        same = (session[1:] == session[:-1]) & (tracks[1:] != tracks[:-1])
        pair_keys = tracks[:-1][same] * self._base + tracks[1:][same]
        self._pair_keys, self._pair_counts = np.unique(pair_keys, return_counts=True)

        member = sorted_unique(tracks * max(n_sessions, 1) + session)  # (track, session)
        self._member_track = member // max(n_sessions, 1)
        self._member_session = member % max(n_sessions, 1)

    def play_count(self, track: int) -> int:
        return int(self.plays[track]) if 0 <= track < self.plays.size else 0

    def count(self, prev: int, nxt: int) -> int:
        """How often `nxt` came right after `prev` within a session."""
        if not (0 <= prev < self._base and 0 <= nxt < self._base):
            return 0
        key = prev * self._base + nxt
        i = int(np.searchsorted(self._pair_keys, key))
        return int(self._pair_counts[i]) if i < self._pair_keys.size and self._pair_keys[i] == key else 0

    def followers(self, prev: int) -> tuple[IntArray, IntArray]:
        """The tracks that followed `prev` within a session, and how often each did."""
        if not 0 <= prev < self._base:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        lo, hi = np.searchsorted(self._pair_keys, [prev * self._base, (prev + 1) * self._base])
        return self._pair_keys[lo:hi] - prev * self._base, self._pair_counts[lo:hi].astype(np.int64)

    def out_degree(self, prev: int) -> int:
        return int(self.followers(prev)[1].sum())

    def sessions_of(self, track: int) -> IntArray:
        lo, hi = np.searchsorted(self._member_track, [track, track + 1])
        return self._member_session[lo:hi]

    def shared_sessions(self, a: int, b: int) -> int:
        """In how many sessions both `a` and `b` were played."""
        sa, sb = self.sessions_of(a), self.sessions_of(b)
        if sa.size == 0 or sb.size == 0:
            return 0
        return int(np.intersect1d(sa, sb, assume_unique=True).size)


def sorted_unique(values: IntArray) -> IntArray:
    """`np.unique(values)` by a sort: numpy's unique without counts takes a hash table, several
    times slower on a library's 500k keys."""
    ordered = np.sort(values)
    keep = np.ones(ordered.size, dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    out: IntArray = ordered[keep]
    return out
