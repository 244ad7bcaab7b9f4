"""The simple rules the model must beat, as scorers over an encoded listening sequence.

Every scorer answers `scores(positions)`: for each position p, a score per class for the track
at p, from the plays before p alone. Their statistics are history-updated: popularity, Markov
transitions and session-kNN's neighbour pool count every play before the scored step
(training sessions, earlier test sessions and the current session's prefix), updated one play
at a time as the positions advance, so the target at p is counted only once p has been scored.
Positions are expected in ascending order across calls (evaluation scores them so); a call that
goes back starts the counts again from the beginning of the sequence.
"""

from __future__ import annotations

import numpy as np

from songnet_core.dataset import EncodedSequence, FloatArray, IntArray


def _tie_break(pop: FloatArray) -> FloatArray:
    """Popularity squeezed into [0, 0.5): added to integer-valued scores it only breaks ties."""
    out: FloatArray = (0.5 * pop / (pop.max(initial=0.0) + 1.0)).astype(np.float32)
    return out


class _History:
    """The plays before a cursor, fed to `_add` one position at a time."""

    def __init__(self, enc: EncodedSequence) -> None:
        self.enc = enc
        self.cls = enc.tracks.cls
        self.n_classes = enc.vocab.n_classes
        self._reset()

    def _reset(self) -> None:
        self.done = 0
        self.pop = np.zeros(self.n_classes, dtype=np.float32)

    def _advance(self, p: int) -> None:
        if p < self.done:
            self._reset()
        for q in range(self.done, p):
            c = int(self.cls[q])
            if c >= 0:
                self.pop[c] += 1.0
            self._add(q, c)
        self.done = p

    def _add(self, q: int, c: int) -> None:
        """Count the play at position `q` (class `c`, -1 for none) beyond popularity."""

    def scores(self, positions: IntArray) -> FloatArray:
        out = np.empty((len(positions), self.n_classes), dtype=np.float32)
        for i in np.argsort(positions, kind="stable"):
            self._advance(int(positions[i]))
            out[i] = self._row(int(positions[i]))
        return out

    def _row(self, p: int) -> FloatArray:
        raise NotImplementedError


class MostPopular(_History):
    """Plays per class before the step."""

    def _row(self, p: int) -> FloatArray:
        return self.pop.copy()


class Markov(_History):
    """First-order transitions between consecutive plays of one session, before the step;
    where the current track has none, popularity decides."""

    def _reset(self) -> None:
        super()._reset()
        self.follow: dict[int, dict[int, float]] = {}

    def _add(self, q: int, c: int) -> None:
        if q == 0 or c < 0:
            return
        prev = int(self.cls[q - 1])
        if prev >= 0 and self.enc.seq.session[q - 1] == self.enc.seq.session[q]:
            row = self.follow.setdefault(prev, {})
            row[c] = row.get(c, 0.0) + 1.0

    def _row(self, p: int) -> FloatArray:
        out = _tie_break(self.pop)
        row = self.follow.get(int(self.cls[p - 1]) if p > 0 else -1)
        if row:
            out[np.fromiter(row, dtype=np.int64, count=len(row))] += np.fromiter(row.values(), dtype=np.float32, count=len(row))
        return out


class Repeat(_History):
    """The listener's most recent tracks, most recent first; never played: by popularity."""

    def _reset(self) -> None:
        super()._reset()
        self.last = np.full(self.n_classes, -1.0, dtype=np.float32)  # position of each class's latest play

    def _add(self, q: int, c: int) -> None:
        if c >= 0:
            self.last[c] = float(q)

    def _row(self, p: int) -> FloatArray:
        # Recency rank dominates (+2 keeps never-played at the bottom), popularity breaks ties.
        out: FloatArray = np.where(self.last >= 0, self.last + 2.0, 0.0).astype(np.float32) + _tie_break(self.pop)
        return out


class SessionKNN(_History):
    """Session-based kNN: the current session's tracks so far against the `sample` most recent
    sessions that ended before it (earlier test sessions included), cosine similarity on track
    sets; each of the `k` nearest adds its similarity to every track it holds."""

    def __init__(self, enc: EncodedSequence, *, k: int = 100, sample: int = 1000) -> None:
        self.k, self.sample = k, sample
        super().__init__(enc)

    def _reset(self) -> None:
        super()._reset()
        # A ring of the last `sample` complete sessions' track sets, overwritten oldest first.
        self.pool = np.zeros((max(self.sample, 1), self.n_classes), dtype=np.float32)
        self.norms = np.zeros(len(self.pool), dtype=np.float32)
        self.completed = 0

    def _add(self, q: int, c: int) -> None:
        seq = self.enc.seq
        s = int(seq.session[q])
        if self.sample > 0 and (q + 1 == len(seq) or int(seq.session[q + 1]) != s):  # the session is complete
            a, b = seq.session_bounds(s)
            ids = self.cls[a:b]
            slot = self.completed % len(self.pool)
            self.pool[slot] = 0.0
            self.pool[slot, ids[ids >= 0]] = 1.0
            self.norms[slot] = np.sqrt(self.pool[slot].sum())
            self.completed += 1

    def _row(self, p: int) -> FloatArray:
        seq = self.enc.seq
        tie = _tie_break(self.pop) * 1e-3
        start = int(seq.session_starts[seq.session[p]])
        ids = self.cls[start:p]
        q = np.unique(ids[ids >= 0])
        if q.size == 0 or self.completed == 0:
            return tie
        m = self.pool
        sim = m[:, q].sum(axis=1) / np.maximum(np.sqrt(q.size) * self.norms, 1e-9)
        if sim.size > self.k:
            sim = np.where(sim >= np.partition(sim, -self.k)[-self.k], sim, 0.0)
        near = np.flatnonzero(sim > 0)
        out: FloatArray = (sim[near] @ m[near] + tie).astype(np.float32)
        return out


BASELINES = {"pop": MostPopular, "markov": Markov, "sknn": SessionKNN, "repeat": Repeat}
