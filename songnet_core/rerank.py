"""The second stage of songnet's ranker: a learned linear scorer over each step's candidates.

The first stage is the blend's top lists (`blend.BlendedNextTrack`): the LSTM's, popularity's,
Markov's, session-kNN's and the repeat rule's top `TOP`. Their union is the candidate set of
the step. Each candidate is described by `FEATURES`:

- per list: its reciprocal-rank contribution `1 / (FUSION_K + 1 + r)` (what the fusion adds
  up), whether it is listed at all, and its log-rank score `1 - log(1 + r) / log(1 + TOP)`;
- of the candidate, from the listener's history before the moment of ranking: log plays, log
  plays in the last 7 and 30 days, log hours since its last play (never played: twenty years),
  already in the playlist so far (the session's prefix), same artist as the current track, and
  log transitions from the current track to it.

The score is `features @ weights`: logits over the candidates. The weights are fitted on
validation steps (the steps the fusion weights are fitted on, time-ordered, before test) by
L2-regularised listwise softmax cross-entropy (each step's target against its candidates),
Newton's method in numpy, the features standardised. The L2 pull is towards the fusion's own
weighting (its weights on the reciprocal-rank features, at the scale that fits best), not
towards zero: with few steps the learned scorer stays close to the fusion it refines
(`scripts/rerank_experiment.py`'s choice on validation; docs/experiments/README.md).

Tracks in no list keep the model's order far below every candidate, as in the blend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from songnet_core.blend import FALLBACK, FUSION_K, SCORERS, TOP, BlendedNextTrack
from songnet_core.dataset import IntArray
from songnet_core.generate import GenerationContext

LIST_FEATURES = ("rr", "listed", "rank")
CANDIDATE_FEATURES = (
    "log_plays", "log_plays_7d", "log_plays_30d", "log_hours_since", "in_prefix", "same_artist", "log_follows",
)  # fmt: skip
FEATURES: tuple[str, ...] = (*(f"{s}_{k}" for s in SCORERS for k in LIST_FEATURES), *CANDIDATE_FEATURES)
METRIC_PREFIX = "rerank_"  # a model's metrics keep its reranker as `rerank_<feature>` weights

L2 = 0.1  # the pull towards the fusion's weighting (validation choice, docs/experiments)
MIN_FIT_STEPS = 20  # fewer steps with the target among the candidates: no reranker, the fusion ranks
NEWTON_STEPS = 30
# Generation samples from `SHARPNESS * score`: the fitted scores are next-track log-odds, and
# a playlist that follows them a little more closely than one draw in proportion holds more of
# what the listener plays next (2 beat 1, 4 and 8 on validation: docs/experiments/README.md).
# A positive factor, so ranks (evaluation, promotion) are those of the scores themselves.
SHARPNESS = 2.0
DAY = 86_400
NEVER_HOURS = 20 * 365 * 24  # a track never played reads as last heard twenty years ago
F64 = npt.NDArray[np.float64]


class PlayIndex:
    """Every play of a history by track, for per-candidate counts at any prefix of it.

    Plays are `(track, position)` keys in one sorted array, so the plays of a set of tracks
    before position `end`, or since a moment, are two binary searches per track."""

    def __init__(self, track_ids: Sequence[int] | IntArray, end_ts: Sequence[int] | IntArray) -> None:
        tracks = np.asarray(track_ids, dtype=np.int64)
        self.end_ts = np.asarray(end_ts, dtype=np.int64)
        self.n = int(tracks.size) + 1
        order = np.argsort(tracks, kind="stable")
        self.keys = tracks[order] * self.n + order

    def features(self, cands: IntArray, end: int, now: int) -> F64:
        """[len(cands), 4]: log plays, log plays in the last 7 and 30 days before `now`, log
        hours since the last play, counting the plays before position `end`."""
        base = cands * self.n
        hi = np.searchsorted(self.keys, base + end)
        lo = np.searchsorted(self.keys, base)
        out = np.empty((cands.size, 4), dtype=np.float64)
        out[:, 0] = np.log1p(hi - lo)
        ends = self.end_ts[:end]
        for col, days in ((1, 7), (2, 30)):
            cut = int(np.searchsorted(ends, now - days * DAY))
            out[:, col] = np.log1p(hi - np.searchsorted(self.keys, base + cut))
        played = hi > lo
        hours = np.full(cands.size, float(NEVER_HOURS))
        last = self.keys[np.maximum(hi - 1, 0)] - base
        hours[played] = np.maximum(now - self.end_ts[last[played]], 0) / 3600.0
        out[:, 3] = np.log1p(hours)
        return out


@dataclass(frozen=True)
class Reranker:
    """Weights over `FEATURES` (raw, unstandardised) and the lists whose union is the
    candidate set (`lists`; features of other lists are absent)."""

    lists: tuple[str, ...]
    weights: Mapping[str, float]

    def columns(self) -> tuple[str, ...]:
        return (*(f"{s}_{k}" for s in self.lists for k in LIST_FEATURES), *CANDIDATE_FEATURES)

    def vector(self) -> F64:
        return np.asarray([self.weights.get(c, 0.0) for c in self.columns()], dtype=np.float64)

    def to_metrics(self) -> dict[str, float]:
        return {f"{METRIC_PREFIX}{c}": float(self.weights.get(c, 0.0)) for c in self.columns()}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> Reranker | None:
        """The reranker a model was stored with; None for a model stored without one."""
        weights = {k.removeprefix(METRIC_PREFIX): float(v) for k, v in metrics.items() if k.startswith(METRIC_PREFIX)}
        lists = tuple(s for s in SCORERS if f"{s}_rr" in weights)
        if not lists:
            return None
        return cls(lists, weights)


@dataclass(frozen=True)
class StepFeatures:
    """One ranking step: its candidates (ascending track ids), their feature rows in
    `Reranker.columns()` order, and the model's scores for the tracks outside them."""

    cands: IntArray
    x: F64
    model: F64

    def restricted(self, lists_used: Sequence[str], keep: Sequence[str]) -> StepFeatures:
        """The same step over `keep`'s lists alone (a subset of `lists_used`, the lists these
        features were computed over): their candidates, their columns and the candidates' own
        features, as `step_features` over `keep` gives them, without counting again."""
        at = [list(lists_used).index(s) for s in keep]
        rows = (self.x[:, [3 * j + 1 for j in at]] > 0).any(axis=1)
        cols = [3 * j + k for j in at for k in range(len(LIST_FEATURES))]
        cols += list(range(3 * len(lists_used), self.x.shape[1]))
        return StepFeatures(self.cands[rows], self.x[np.ix_(rows, np.array(cols, dtype=np.intp))], self.model)


def step_features(
    blend: BlendedNextTrack,
    lists_used: Sequence[str],
    plays: PlayIndex,
    end: int,
    artist_of: IntArray,
    history: Sequence[int],
    context: GenerationContext,
    computed: tuple[Mapping[str, IntArray], F64] | None = None,
) -> StepFeatures:
    """The candidates of one step and their features: the union of `lists_used`'s top lists
    for the playlist so far (`history`), counted from the listener's plays before `end`.
    `computed`: `blend.lists_and_model(history, context)` where the caller has it already."""
    lists, model = computed if computed is not None else blend.lists_and_model(history, context, lists_used)
    cands = np.unique(np.concatenate([lists[s] for s in lists_used]))
    x = np.zeros((cands.size, 3 * len(lists_used) + len(CANDIDATE_FEATURES)), dtype=np.float64)
    for j, s in enumerate(lists_used):
        ids = lists[s]
        r = np.arange(ids.size, dtype=np.float64)
        at = np.searchsorted(cands, ids)
        x[at, 3 * j] = 1.0 / (FUSION_K + 1.0 + r)
        x[at, 3 * j + 1] = 1.0
        x[at, 3 * j + 2] = 1.0 - np.log1p(r) / np.log1p(TOP)
    c0 = 3 * len(lists_used)
    x[:, c0 : c0 + 4] = plays.features(cands, end, context.ts)
    current = history[-1] if history else -1
    if history:
        x[:, c0 + 4] = np.isin(cands, np.asarray(history, dtype=np.int64))
    if 0 <= current < artist_of.size:
        known = cands < artist_of.size
        a = artist_of[current]
        x[known, c0 + 5] = (artist_of[cands[known]] == a) & (a >= 0)
        ids, counts = blend.transitions.followers(current)
        if ids.size:
            at = np.searchsorted(ids, cands)
            hit = (at < ids.size) & (ids[np.minimum(at, ids.size - 1)] == cands)
            x[hit, c0 + 6] = np.log1p(counts[at[hit]])
    return StepFeatures(cands, x, model)


class RerankedNextTrack:
    """A `generate.NextTrackScorer`: the blend's candidates scored by a `Reranker`; tracks in no
    list keep the model's order far below (`blend.FALLBACK`)."""

    def __init__(
        self,
        blend: BlendedNextTrack,
        reranker: Reranker,
        plays: PlayIndex,
        end: int,
        artist_of: IntArray,
        *,
        sharpness: float = SHARPNESS,
    ) -> None:
        self.blend, self.reranker, self.plays, self.end, self.artist_of = blend, reranker, plays, end, artist_of
        self.sharpness = sharpness
        self.w = reranker.vector()
        self.size = blend.size

    def with_sharpness(self, sharpness: float) -> RerankedNextTrack:
        """The same ranker sampled more (or less) sharply: the same order, other odds."""
        return RerankedNextTrack(self.blend, self.reranker, self.plays, self.end, self.artist_of, sharpness=sharpness)

    @property
    def model(self) -> Any:
        return self.blend.model

    def features(self, history: Sequence[int], context: GenerationContext) -> StepFeatures:
        return step_features(self.blend, self.reranker.lists, self.plays, self.end, self.artist_of, history, context)

    def scores(self, history: Sequence[int], context: GenerationContext) -> F64:
        step = self.features(history, context)
        out: F64 = FALLBACK + step.model
        out[step.cands] = self.sharpness * (step.x @ self.w)
        return out


# -- fitting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitStep:
    """A fitting step: the candidates' feature rows and the target's row (-1: the target is
    no candidate). `also`: further rows that count as targets with it, each with the same
    share of the step's likelihood (the step's loss is the mean of their cross-entropies)."""

    x: F64
    target: int
    also: tuple[int, ...] = ()


def _segment_softmax(s: F64, starts: IntArray) -> F64:
    mx = np.maximum.reduceat(s, starts)
    sizes = np.diff(np.append(starts, s.size))
    e = np.exp(s - np.repeat(mx, sizes))
    out: F64 = e / np.repeat(np.add.reduceat(e, starts), sizes)
    return out


def _loss(x: F64, starts: IntArray, xt: F64, w: F64, w0: F64, l2: float) -> float:
    s = x @ w
    mx = np.maximum.reduceat(s, starts)
    sizes = np.diff(np.append(starts, s.size))
    lse = np.log(np.add.reduceat(np.exp(s - np.repeat(mx, sizes)), starts)) + mx
    return float((lse - xt @ w).mean() + l2 * ((w - w0) ** 2).sum())


def _newton(x: F64, starts: IntArray, xt: F64, w0: F64, l2: float) -> F64:
    """Minimise the mean listwise softmax cross-entropy + l2 * |w - w0|^2 (convex); `xt` is
    each step's target row (the mean of its targets' rows: the loss is linear in it)."""
    n = starts.size
    w = w0.copy()
    loss = _loss(x, starts, xt, w, w0, l2)
    for _ in range(NEWTON_STEPS):
        p = _segment_softmax(x @ w, starts)
        xp = x * p[:, None]
        m = np.add.reduceat(xp, starts, axis=0)  # [steps, F]: each step's expected features
        grad = (m.sum(axis=0) - xt.sum(axis=0)) / n + 2 * l2 * (w - w0)
        hess = (xp.T @ x - m.T @ m) / n + (2 * l2 + 1e-9) * np.eye(w.size)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4:
            cand = w - t * step
            new = _loss(x, starts, xt, cand, w0, l2)
            if new <= loss:
                break
            t /= 2
        else:
            break
        improved = loss - new
        w, loss = cand, new
        if improved < 1e-10:
            break
    return w


def fit_reranker(steps: Sequence[FitStep], lists: Sequence[str], fusion_weights: Mapping[str, float], *, l2: float = L2) -> Reranker | None:
    """The reranker over `lists`' candidates fitted on `steps` (features in
    `Reranker(lists, {}).columns()` order), pulled towards `fusion_weights`' weighting; None
    with fewer than `MIN_FIT_STEPS` steps whose target is a candidate."""
    usable = [s for s in steps if s.target >= 0]
    if len(usable) < MIN_FIT_STEPS:
        return None
    columns = Reranker(tuple(lists), {}).columns()
    x = np.vstack([s.x for s in usable])
    sizes = np.asarray([len(s.x) for s in usable], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    live = std > 1e-9  # a constant feature says nothing (and its weight would be unbounded)
    xs = np.zeros_like(x)
    xs[:, live] = (x[:, live] - mean[live]) / std[live]
    if any(s.also for s in usable):
        xt = np.vstack([xs[a + np.asarray((s.target, *s.also))].mean(axis=0) for a, s in zip(starts, usable, strict=True)])
    else:
        xt = xs[starts + np.asarray([s.target for s in usable], dtype=np.int64)]
    # The fusion's weighting in standardised units, scaled by the factor that fits best.
    prior = np.zeros(len(columns))
    for j, s in enumerate(lists):
        prior[3 * j] = fusion_weights.get(s, 0.0)
    direction = prior * std * live
    w0 = np.zeros(len(columns))
    if direction.any():
        alpha = _newton(xs @ direction[:, None], starts, xt @ direction[:, None], np.zeros(1), 0.0)
        w0 = float(alpha[0]) * direction
    w = _newton(xs, starts, xt, w0, l2)
    raw = np.where(live, w / np.where(live, std, 1.0), 0.0)
    return Reranker(tuple(lists), dict(zip(columns, raw.tolist(), strict=True)))


__all__ = [
    "FEATURES", "L2", "METRIC_PREFIX", "MIN_FIT_STEPS", "SHARPNESS", "FitStep", "PlayIndex", "RerankedNextTrack", "Reranker",
    "StepFeatures", "fit_reranker", "step_features",
]  # fmt: skip
