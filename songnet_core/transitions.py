"""Who follows whom in the listener's sessions: transition and co-occurrence counts.

Built once from sessions given as lists of track ids (consecutive repeats already collapsed).
The Markov-walk scorer (`generate.MarkovScorer`) and the human reasons (`reasons.py`) both
read it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence


class TransitionCounts:
    """First-order transition counts, play counts and the sessions each track appears in."""

    def __init__(self, sessions: Iterable[Sequence[int]]) -> None:
        self.followers: dict[int, Counter[int]] = defaultdict(Counter)
        self.plays: Counter[int] = Counter()
        self._sessions_of: dict[int, set[int]] = defaultdict(set)
        self.session_count = 0
        for index, session in enumerate(sessions):
            self.session_count += 1
            for pos, track in enumerate(session):
                self.plays[track] += 1
                self._sessions_of[track].add(index)
                if pos > 0 and session[pos - 1] != track:
                    self.followers[session[pos - 1]][track] += 1

    def count(self, prev: int, nxt: int) -> int:
        """How often `nxt` came right after `prev` within a session."""
        found = self.followers.get(prev)
        return 0 if found is None else found[nxt]

    def out_degree(self, prev: int) -> int:
        found = self.followers.get(prev)
        return 0 if found is None else sum(found.values())

    def shared_sessions(self, a: int, b: int) -> int:
        """In how many sessions both `a` and `b` were played."""
        sa, sb = self._sessions_of.get(a), self._sessions_of.get(b)
        if not sa or not sb:
            return 0
        return len(sa & sb) if len(sa) < len(sb) else len(sb & sa)
