"""Weighted rank fusion of several scorers, the weights fitted on a validation split.

The LSTM and the baselines are good at different listeners: one replays its last tracks
(the repeat rule), another follows album order (Markov), another comes back to the same set
of tracks session after session (session-kNN). A blend lets the data choose per listener.
Each scorer contributes only through its top `TOP` list (scores on different scales are
never added): a track at 0-based rank r in scorer s adds `w_s / (FUSION_K + r + 1)`
(reciprocal rank fusion, with weights). The weights are the point of a simplex grid that
gives the highest HR@10 (then MRR@10) on validation steps, steps the scorers did not learn
from; the test split is never looked at.

A target outside every top list is outside the blend's top `TOP` too, so HR, MRR and NDCG
at 10 computed from `fused_ranks` are exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from songnet_core.dataset import BoolArray, EncodedSequence, FloatArray, IntArray
from songnet_core.metrics import K, Scorer, step_metrics
from songnet_core.transitions import TransitionCounts

TOP = 50  # each scorer's list that takes part
FUSION_K = 10.0  # reciprocal rank fusion's constant: smaller favours each list's very top
GRID = 8  # weights are multiples of 1/GRID that sum to 1


@dataclass(frozen=True)
class TopLists:
    """For each step and scorer, the classes of its top `TOP` (best first); the current
    track and non-candidates are left out."""

    names: tuple[str, ...]
    ids: IntArray  # [steps, scorers, TOP]
    targets: IntArray  # [steps], -1 where the target is not a candidate


def top_lists(
    scorers: Mapping[str, Scorer],
    enc: EncodedSequence,
    positions: IntArray,
    candidates: BoolArray,
    *,
    top: int = TOP,
    chunk: int = 512,
) -> TopLists:
    names = tuple(scorers)
    n = len(positions)
    top = min(top, max(1, int(candidates.sum()) - 1))
    ids = np.empty((n, len(names), top), dtype=np.int64)
    rows = np.arange(min(chunk, n))
    for a in range(0, n, chunk):
        p = positions[a : a + chunk]
        r = rows[: len(p)]
        current = enc.tracks.cls[p - 1]
        for s, name in enumerate(names):
            key = scorers[name].scores(p).astype(np.float64)
            key[:, ~candidates] = -np.inf
            key[r[current >= 0], current[current >= 0]] = -np.inf
            # Exactly `top` per row: everything above the top-th value, then the tied ones by
            # class index (most played first), as `metrics.target_ranks` breaks ties.
            kth = np.partition(key, -top, axis=1)[:, -top][:, None]
            tied = key == kth
            room = top - (key > kth).sum(axis=1, keepdims=True)
            chosen = (key > kth) | (tied & (np.cumsum(tied, axis=1) <= room))
            part = np.nonzero(chosen)[1].reshape(len(p), top)
            order = np.lexsort((part, -np.take_along_axis(key, part, axis=1)), axis=-1)
            ids[a : a + chunk, s] = np.take_along_axis(part, order, axis=1)
    cls = enc.tracks.cls[positions]
    current = enc.tracks.cls[positions - 1]
    ok = (cls >= 0) & candidates[np.maximum(cls, 0)] & (cls != current)
    return TopLists(names, ids, np.where(ok, cls, -1))


@dataclass(frozen=True)
class _Union:
    ids: IntArray  # [steps, U] classes in any top list, padded with a class past every real one
    contrib: FloatArray  # [steps, U, scorers] each scorer's reciprocal-rank contribution
    target_col: IntArray  # [steps] the target's column in `ids`, -1 if in no list


def _union(lists: TopLists) -> _Union:
    n, s, t = lists.ids.shape
    width = s * t
    pad = int(lists.ids.max(initial=0)) + 1
    ids = np.full((n, width), pad, dtype=np.int64)
    contrib = np.zeros((n, width, s), dtype=np.float64)
    target_col = np.full(n, -1, dtype=np.int64)
    rr = 1.0 / (FUSION_K + 1.0 + np.arange(t))
    for i in range(n):
        flat = lists.ids[i].reshape(-1)
        uniq, inv = np.unique(flat, return_inverse=True)
        ids[i, : len(uniq)] = uniq
        np.add.at(contrib[i], (inv, np.repeat(np.arange(s), t)), np.tile(rr, s))
        if lists.targets[i] >= 0:
            hit = np.searchsorted(uniq, lists.targets[i])
            if hit < len(uniq) and uniq[hit] == lists.targets[i]:
                target_col[i] = hit
    return _Union(ids, contrib, target_col)


def _ranks(u: _Union, weights: npt.NDArray[np.float64]) -> IntArray:
    fused = u.contrib @ weights  # [steps, U]
    rows = np.arange(len(fused))
    col = np.maximum(u.target_col, 0)
    tf = fused[rows, col][:, None]
    tid = u.ids[rows, col][:, None]
    ahead = (fused > tf) | ((fused == tf) & (u.ids < tid))
    ranks = 1 + ahead.sum(axis=1)
    return np.where((u.target_col >= 0) & (tf[:, 0] > 0), ranks, 0).astype(np.int64)


def fused_ranks(lists: TopLists, weights: Mapping[str, float]) -> IntArray:
    """1-based rank of each step's target in the blend (0: outside every top list, a miss)."""
    w = np.asarray([weights.get(name, 0.0) for name in lists.names], dtype=np.float64)
    return _ranks(_union(lists), w)


def simplex_grid(n: int, steps: int = GRID) -> list[tuple[float, ...]]:
    """Every weight vector of `n` non-negative multiples of 1/steps summing to 1."""
    out = []
    for cuts in itertools.combinations(range(steps + n - 1), n - 1):
        parts = np.diff([-1, *cuts, steps + n - 1]) - 1
        out.append(tuple(float(x) / steps for x in parts))
    return out


def fit_weights(lists: TopLists, *, steps: int = GRID) -> dict[str, float]:
    """The grid point with the best HR@10 on these steps; ties go to MRR@10, then to the
    most even weights (validation steps that tell nothing apart give an even blend, the
    safest guess), then to the first scorer, which callers make the model."""
    u = _union(lists)
    best: tuple[float, float, float, float] | None = None
    chosen: Sequence[float] = (1.0,) + (0.0,) * (len(lists.names) - 1)
    for w in simplex_grid(len(lists.names), steps):
        m = step_metrics(_ranks(u, np.asarray(w)), K)
        key = (float(m[f"hr@{K}"].mean()), float(m[f"mrr@{K}"].mean()), -max(w), w[0])
        if best is None or key > best:
            best, chosen = key, w
    return dict(zip(lists.names, chosen, strict=True))




# -- generation ---------------------------------------------------------------------------

SHARPNESS = 4.0  # logits = SHARPNESS * log(fused): sampling keeps to the blend's head
FALLBACK = -1e4  # tracks in no top list: the model's order, far below every listed track
F64 = npt.NDArray[np.float64]


class BlendedNextTrack:
    """A `generate.NextTrackScorer`: the model's next-track scores fused with the baselines'
    as the evaluation fuses them (each scorer's top `TOP` over track ids, weights from the
    validation split), for continuing a playlist.

    The baselines read the listener's library: popularity and transitions from
    `transitions`, session-kNN over the last `sknn_sessions` of `sessions` (the playlist so far
    is the current session), and the repeat rule over `recent` (the listener's plays, oldest
    first) continued by the playlist. Tracks outside every top list keep the model's order
    far below, so the rules can still fill a playlist when they ban the whole head.
    """

    def __init__(
        self,
        model: Any,
        transitions: TransitionCounts,
        sessions: Sequence[Sequence[int]],
        recent: Sequence[int],
        weights: Mapping[str, float],
        size: int,
        *,
        sknn_sessions: int = 1000,
        sknn_k: int = 100,
    ) -> None:
        self.model, self.transitions, self.size = model, transitions, size
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        pop = np.zeros(size, dtype=np.float64)
        n = min(size, transitions.plays.size)
        pop[:n] = transitions.plays[:n]
        # Ties fall back on popularity, then on the lower id, as in evaluation.
        self.pop = pop + (size - np.arange(size)) / (size + 1.0) * 1e-3
        self.recent = [t for t in recent if 0 <= t < size]
        last = np.full(size, -1.0)
        last[np.asarray(self.recent, dtype=np.int64)] = np.arange(len(self.recent), dtype=np.float64)
        self.last_played = last
        kept = [np.unique(np.asarray([t for t in s if 0 <= t < size], dtype=np.int64)) for s in sessions[-sknn_sessions:]]
        self.session_tracks = [s for s in kept if s.size]
        self.session_norm = np.sqrt(np.asarray([s.size for s in self.session_tracks], dtype=np.float64))
        owners = np.repeat(np.arange(len(self.session_tracks)), [s.size for s in self.session_tracks])
        flat = np.concatenate(self.session_tracks) if self.session_tracks else np.zeros(0, dtype=np.int64)
        order = np.argsort(flat, kind="stable")
        self._member_track, self._member_session = flat[order], owners[order]
        self.sknn_k = sknn_k

    def scores(self, history: Sequence[int], context: Any) -> F64:
        model = np.full(self.size, -np.inf)
        raw = np.asarray(self.model.scores(history, context), dtype=np.float64)
        model[: min(self.size, raw.size)] = raw[: self.size]
        if set(self.weights) <= {"model"}:
            return model
        fused = np.zeros(self.size)
        current = history[-1] if history else -1
        for name, w in self.weights.items():
            scores = model if name == "model" else self._baseline(name, history)
            ids = _top_ids(scores, current, TOP)
            fused[ids] += w / (FUSION_K + 1.0 + np.arange(ids.size))
        with np.errstate(divide="ignore"):
            out = np.where(fused > 0, SHARPNESS * np.log(fused), FALLBACK + model)
        return out

    def _baseline(self, name: str, history: Sequence[int]) -> F64:
        if name == "pop":
            return self.pop
        if name == "markov":
            out = self.pop * 1e-6
            for prev in reversed(history):
                ids, counts = self.transitions.followers(prev)
                if ids.size:
                    ok = ids < self.size
                    out = out.copy()
                    out[ids[ok]] += counts[ok]
                    break
            return out
        if name == "repeat":
            when = self.last_played.copy()
            base = len(self.recent)
            for i, t in enumerate(history):
                if 0 <= t < self.size:
                    when[t] = base + i
            return np.where(when >= 0, when + 2.0, 0.0) + self.pop * 1e-9
        if name == "sknn":
            return self._sknn(history)
        raise ValueError(f"unknown scorer {name!r}")

    def _sknn(self, history: Sequence[int]) -> F64:
        out = self.pop * 1e-9
        q = np.unique(np.asarray([t for t in history if 0 <= t < self.size], dtype=np.int64))
        if q.size == 0 or not self.session_tracks:
            return out
        lo = np.searchsorted(self._member_track, q)
        hi = np.searchsorted(self._member_track, q, side="right")
        hits = np.concatenate([self._member_session[a:b] for a, b in zip(lo, hi, strict=True)])
        if hits.size == 0:
            return out
        overlap = np.bincount(hits, minlength=len(self.session_tracks)).astype(np.float64)
        sim = overlap / (np.sqrt(q.size) * self.session_norm)
        near = np.flatnonzero(sim > 0)
        if near.size > self.sknn_k:
            near = near[np.argsort(-sim[near], kind="stable")[: self.sknn_k]]
        out = out.copy()
        for s in near:
            out[self.session_tracks[s]] += sim[s]
        return out


def _top_ids(scores: F64, current: int, top: int) -> IntArray:
    """The `top` best ids of `scores` (finite ones only), best first, `current` left out."""
    key = np.asarray(scores, dtype=np.float64).copy()
    if 0 <= current < key.size:
        key[current] = -np.inf
    finite = int(np.isfinite(key).sum())
    top = min(top, finite)
    if top <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-key, top - 1)[:top]
    return part[np.lexsort((part, -key[part]))]


__all__ = [
    "FUSION_K", "GRID", "TOP", "BlendedNextTrack", "TopLists", "fit_weights", "fused_ranks", "simplex_grid", "top_lists",
]  # fmt: skip
