"""The simple rules the model must beat, as scorers over an encoded listening sequence.

Every scorer answers `scores(positions)`: for each position p, a score per class for the track
at p, using only positions before p. Statistics (popularity, transitions, neighbour sessions)
come from the training sessions `[0, train_sessions)` alone; later positions serve only as the
listener's history (repeat, and the current session for session-kNN).
"""

from __future__ import annotations

import numpy as np

from songnet_core.dataset import EncodedSequence, FloatArray, IntArray


def _train_end(enc: EncodedSequence, train_sessions: int) -> int:
    if train_sessions <= 0:
        return 0
    return enc.seq.session_bounds(train_sessions - 1)[1]


def popularity(enc: EncodedSequence, train_sessions: int) -> FloatArray:
    """Plays per class in the training sessions."""
    cls = enc.tracks.cls[: _train_end(enc, train_sessions)]
    return np.bincount(cls[cls >= 0], minlength=enc.vocab.n_classes).astype(np.float32)


def _tie_break(pop: FloatArray) -> FloatArray:
    """Popularity squeezed into [0, 0.5): added to integer-valued scores it only breaks ties."""
    out: FloatArray = (0.5 * pop / (pop.max(initial=0.0) + 1.0)).astype(np.float32)
    return out


class MostPopular:
    def __init__(self, enc: EncodedSequence, train_sessions: int) -> None:
        self.pop = popularity(enc, train_sessions)

    def scores(self, positions: IntArray) -> FloatArray:
        return np.tile(self.pop, (len(positions), 1))


class Markov:
    """First-order transitions between consecutive tracks of training sessions; where the
    current track has none (or too few), popularity decides."""

    def __init__(self, enc: EncodedSequence, train_sessions: int) -> None:
        end = _train_end(enc, train_sessions)
        cls, sess = enc.tracks.cls[:end], enc.seq.session[:end]
        c = enc.vocab.n_classes
        ok = (cls[:-1] >= 0) & (cls[1:] >= 0) & (sess[:-1] == sess[1:])
        pairs = cls[:-1][ok] * c + cls[1:][ok]
        keys, counts = np.unique(pairs, return_counts=True)
        self.n_classes = c
        self.src, self.dst, self.counts = keys // c, keys % c, counts.astype(np.float32)
        self.row_start = np.searchsorted(self.src, np.arange(c + 1))
        self.cls = enc.tracks.cls
        self.tie = _tie_break(popularity(enc, train_sessions))

    def scores(self, positions: IntArray) -> FloatArray:
        out = np.tile(self.tie, (len(positions), 1))
        for i, p in enumerate(positions):
            cur = self.cls[p - 1] if p > 0 else -1
            if cur >= 0:
                a, b = self.row_start[cur], self.row_start[cur + 1]
                out[i, self.dst[a:b]] += self.counts[a:b]
        return out


class Repeat:
    """The listener's most recent tracks, most recent first; never played: by popularity."""

    def __init__(self, enc: EncodedSequence, train_sessions: int) -> None:
        self.cls = enc.tracks.cls
        self.tie = _tie_break(popularity(enc, train_sessions))

    def scores(self, positions: IntArray) -> FloatArray:
        c = len(self.tie)
        out = np.empty((len(positions), c), dtype=np.float32)
        order = np.argsort(positions, kind="stable")
        last = np.full(c, -1.0, dtype=np.float32)  # position of each class's latest play
        done = 0
        for i in order:
            p = int(positions[i])
            seen = self.cls[done:p]
            idx = np.flatnonzero(seen >= 0)
            last[seen[idx]] = (done + idx).astype(np.float32)
            done = max(done, p)
            # Recency rank dominates (+1 keeps never-played at the bottom), popularity breaks ties.
            out[i] = np.where(last >= 0, last + 2.0, 0.0) + self.tie
        return out


class SessionKNN:
    """Session-based kNN: the current session's tracks so far against the most recent
    `sample` training sessions, cosine similarity on track sets; each of the `k` nearest
    adds its similarity to every track it holds."""

    def __init__(self, enc: EncodedSequence, train_sessions: int, *, k: int = 100, sample: int = 1000) -> None:
        seq, cls = enc.seq, enc.tracks.cls
        c = enc.vocab.n_classes
        first = max(0, train_sessions - sample)
        rows = []
        for s in range(first, train_sessions):
            a, b = seq.session_bounds(s)
            row = np.zeros(c, dtype=np.float32)
            ids = cls[a:b]
            row[ids[ids >= 0]] = 1.0
            rows.append(row)
        self.sessions = np.stack(rows) if rows else np.zeros((0, c), dtype=np.float32)
        self.norms = np.sqrt(self.sessions.sum(axis=1))
        self.k = k
        self.enc = enc
        self.tie = _tie_break(popularity(enc, train_sessions)) * 1e-3

    def scores(self, positions: IntArray) -> FloatArray:
        c = len(self.tie)
        q = np.zeros((len(positions), c), dtype=np.float32)
        seq, cls = self.enc.seq, self.enc.tracks.cls
        for i, p in enumerate(positions):
            start = int(seq.session_starts[seq.session[p]])
            ids = cls[start:p]
            q[i, ids[ids >= 0]] = 1.0
        overlap = q @ self.sessions.T  # [n, S]
        qn = np.sqrt(q.sum(axis=1))
        sim = overlap / np.maximum(qn[:, None] * self.norms[None, :], 1e-9)
        if sim.shape[1] > self.k:
            cut = np.partition(sim, -self.k, axis=1)[:, -self.k][:, None]
            sim = np.where(sim >= cut, sim, 0.0)
        out: FloatArray = (sim @ self.sessions + self.tie).astype(np.float32)
        return out


BASELINES = {"pop": MostPopular, "markov": Markov, "sknn": SessionKNN, "repeat": Repeat}
