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

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from songnet_core.dataset import BoolArray, EncodedSequence, FloatArray, IntArray
from songnet_core.metrics import K, Scorer, step_metrics, target_ranks
from songnet_core.transitions import TransitionCounts, sorted_unique

TOP = 50  # each scorer's list that takes part
FUSION_K = 10.0  # reciprocal rank fusion's constant: smaller favours each list's very top
GRID = 8  # weights are multiples of 1/GRID that sum to 1
SCORERS = ("model", "pop", "markov", "sknn", "repeat")  # what the blend fuses, the model first


@dataclass(frozen=True)
class TopLists:
    """For each step and scorer, the classes of its top `TOP` (best first); the current
    track and non-candidates are left out."""

    names: tuple[str, ...]
    ids: IntArray  # [steps, scorers, TOP]
    targets: IntArray  # [steps], -1 where the target is not a candidate
    # Each scorer's own protocol rank of the target (`metrics.target_ranks`), from the same
    # scores: evaluation reads a scorer's figures from here instead of scoring twice.
    ranks: dict[str, IntArray]


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
    ranks = {name: np.zeros(n, dtype=np.int64) for name in names}
    rows = np.arange(min(chunk, n))
    for a in range(0, n, chunk):
        p = positions[a : a + chunk]
        r = rows[: len(p)]
        current = enc.tracks.cls[p - 1]
        for s, name in enumerate(names):
            scores = scorers[name].scores(p)
            ranks[name][a : a + chunk] = target_ranks(scores, enc.tracks.cls[p], current, candidates)
            key = scores.astype(np.float64)
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
    return TopLists(names, ids, np.where(ok, cls, -1), ranks)


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
    first) continued by the playlist. Each baseline's list is built from its few non-zero
    entries, then popularity, in the evaluation's order, without a dense pass over the
    library. Tracks outside every top list keep the model's order far below, so the rules can
    still fill a playlist when they ban the whole head.
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
        unknown = set(self.weights) - set(SCORERS)
        if unknown:
            raise ValueError(f"unknown scorer(s) in the blend: {sorted(unknown)}")
        pop = np.zeros(size, dtype=np.float64)
        n = min(size, transitions.plays.size)
        pop[:n] = transitions.plays[:n]
        self.pop = pop
        # Most played first, ties to the lower id: the order every list falls back on.
        by_pop = np.lexsort((np.arange(size), -pop))
        self.pop_rank = np.empty(size, dtype=np.int64)
        self.pop_rank[by_pop] = np.arange(size)
        self.pop_order = by_pop[: 4 * TOP]
        # The listener's distinct tracks, most recently played first.
        seen: dict[int, None] = {}
        for t in reversed(recent):
            if 0 <= t < size and t not in seen:
                seen[t] = None
                if len(seen) >= 4 * TOP:
                    break
        self.recent_order = list(seen)
        # Session-kNN's sessions as flat arrays: tracks by session (offsets) and sessions by track.
        # Each of the last `sknn_sessions` sessions as its distinct tracks in [0, size),
        # ascending; sessions left with none are dropped.
        last = sessions[-sknn_sessions:]
        counts = np.fromiter((len(s) for s in last), dtype=np.int64, count=len(last))
        flat = np.fromiter(itertools.chain.from_iterable(last), dtype=np.int64, count=counts.sum())
        owner = np.repeat(np.arange(len(last), dtype=np.int64), counts)
        ok = (flat >= 0) & (flat < size)
        base = max(size, 1)
        member = sorted_unique(owner[ok] * base + flat[ok])  # (session, track)
        owner_ids, owners = np.unique(member // base, return_inverse=True)
        self._lengths = np.bincount(owners, minlength=owner_ids.size).astype(np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._lengths)]).astype(np.int64)
        self._session_flat = (member % base).astype(np.int64)
        self._session_norm = np.sqrt(self._lengths.astype(np.float64))
        order = np.argsort(self._session_flat, kind="stable")
        self._member_track, self._member_session = self._session_flat[order], owners[order]
        self.sknn_k = sknn_k

    def with_weights(self, weights: Mapping[str, float]) -> BlendedNextTrack:
        """The same model and library state under other weights (nothing is rebuilt)."""
        other = copy.copy(self)
        other.weights = {k: float(v) for k, v in weights.items() if v > 0}
        return other

    def _model_scores(self, history: Sequence[int], context: Any) -> F64:
        raw = np.asarray(self.model.scores(history, context), dtype=np.float64)
        if raw.size == self.size:
            return raw
        model = np.full(self.size, -np.inf)
        model[: min(self.size, raw.size)] = raw[: self.size]
        return model

    def lists(self, history: Sequence[int], context: Any, names: Sequence[str] = SCORERS) -> dict[str, IntArray]:
        """Each named scorer's top `TOP` track ids, best first, the current track left out:
        what `scores` fuses (fitting the weights reads them for every scorer)."""
        return self.lists_and_model(history, context, names)[0]

    def lists_and_model(
        self, history: Sequence[int], context: Any, names: Sequence[str] = SCORERS
    ) -> tuple[dict[str, IntArray], F64]:
        """`lists`, and the model's dense scores they were read from (the reranker orders
        the tracks outside every list by them)."""
        model = self._model_scores(history, context)
        current = history[-1] if history else -1
        lists = {
            name: _top_ids(model, current, TOP) if name == "model" else self._top(name, history, current)
            for name in names
        }
        return lists, model

    def scores(self, history: Sequence[int], context: Any) -> F64:
        model = self._model_scores(history, context)
        if set(self.weights) <= {"model"}:
            return model
        current = history[-1] if history else -1
        lists, contributions = [], []
        for name, w in self.weights.items():
            ids = _top_ids(model, current, TOP) if name == "model" else self._top(name, history, current)
            lists.append(ids)
            contributions.append(w / (FUSION_K + 1.0 + np.arange(ids.size)))
        listed = np.concatenate(lists)
        fused = np.bincount(listed, weights=np.concatenate(contributions), minlength=self.size)
        head = np.flatnonzero(fused)
        out: F64 = FALLBACK + model
        out[head] = SHARPNESS * np.log(fused[head])
        return out

    def _top(self, name: str, history: Sequence[int], current: int) -> IntArray:
        """A baseline's top `TOP` ids, best first, `current` left out."""
        if name == "pop":
            return self._then_popular([], current)
        if name == "markov":
            for prev in reversed(history):
                ids, counts = self.transitions.followers(prev)
                ok = ids < self.size
                if ok.any():
                    ids, counts = ids[ok], counts[ok]
                    ranked = ids[np.lexsort((self.pop_rank[ids], -counts))]
                    return self._then_popular(ranked.tolist(), current)
            return self._then_popular([], current)
        if name == "repeat":
            # The playlist so far is the most recent listening, then the listener's plays.
            order = [t for t in reversed(history) if 0 <= t < self.size]
            return self._then_popular(list(dict.fromkeys([*order, *self.recent_order])), current)
        if name == "sknn":
            return self._then_popular(self._sknn(history), current)
        raise ValueError(f"unknown scorer {name!r}")

    def _then_popular(self, ranked: list[int], current: int) -> IntArray:
        out = [t for t in ranked[: TOP + 1] if t != current][:TOP]
        if len(out) < TOP:
            taken = {*out, current}
            out += [t for t in self.pop_order.tolist() if t not in taken][: TOP - len(out)]
        return np.asarray(out, dtype=np.int64)

    def _sknn(self, history: Sequence[int]) -> list[int]:
        q = np.unique(np.asarray([t for t in history if 0 <= t < self.size], dtype=np.int64))
        if q.size == 0 or self._lengths.size == 0:
            return []
        lo = np.searchsorted(self._member_track, q)
        hi = np.searchsorted(self._member_track, q, side="right")
        hits = self._member_session[_ranges(lo, hi)]
        if hits.size == 0:
            return []
        overlap = np.bincount(hits, minlength=self._lengths.size).astype(np.float64)
        sim = overlap / (np.sqrt(q.size) * self._session_norm)
        near = np.flatnonzero(sim > 0)
        if near.size > self.sknn_k:
            near = near[np.argsort(-sim[near], kind="stable")[: self.sknn_k]]
        tracks = self._session_flat[_ranges(self._offsets[near], self._offsets[near + 1])]
        dense = np.bincount(tracks, weights=np.repeat(sim[near], self._lengths[near]), minlength=self.size)
        ids = np.flatnonzero(dense)
        total = dense[ids]
        need = TOP + 1  # one more: the current track is left out afterwards
        if ids.size > need:  # only the head is ordered; ties at its edge are all kept
            keep = total >= np.partition(total, ids.size - need)[ids.size - need]
            ids, total = ids[keep], total[keep]
        ranked: list[int] = ids[np.lexsort((self.pop_rank[ids], -total))].tolist()
        return ranked


def _ranges(lo: IntArray, hi: IntArray) -> IntArray:
    """The concatenation of range(lo[i], hi[i]) for every i, without a Python loop."""
    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return starts + np.arange(total, dtype=np.int64)


def _top_ids(scores: F64, current: int, top: int) -> IntArray:
    """The `top` best ids of `scores` (finite ones only), best first, `current` left out."""
    k = min(top + 1, scores.size)  # one more: `current` may be among them
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    part = part[np.isfinite(scores[part]) & (part != current)]
    ordered: IntArray = part[np.lexsort((part, -scores[part]))][:top]
    return ordered


__all__ = [
    "FUSION_K", "GRID", "SCORERS", "TOP", "BlendedNextTrack", "TopLists", "fit_weights", "fused_ranks", "simplex_grid", "top_lists",
]  # fmt: skip
