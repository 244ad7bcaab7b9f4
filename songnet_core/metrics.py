"""Ranking metrics for next-track prediction, with bootstrap intervals over sessions.

A scorer gives every class a score; the target's rank is counted among the candidates
(the tracks seen in training) with the current track left out, ties broken by class index
(classes are numbered most played first, so a tie falls back on popularity). A target that is
not a candidate is a miss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from songnet_core.dataset import BoolArray, EncodedSequence, FloatArray, IntArray

K = 10
METRICS = ("hr@10", "mrr@10", "ndcg@10")


class Scorer(Protocol):
    """Anything that ranks: `scores(positions)` gives, for each position p of a sequence, a
    score per class for the track at p, from what came before p."""

    def scores(self, positions: IntArray) -> FloatArray: ...


def target_ranks(scores: FloatArray, targets: IntArray, current: IntArray, candidates: BoolArray) -> IntArray:
    """1-based rank of each row's target among the candidates minus that row's current track;
    0 where the target is not a candidate (a miss at any cut-off). Ties go to the lower class.

    `scores` is [n, C]; `targets` and `current` are class indices, -1 for "not a class".
    """
    n = scores.shape[0]
    rows = np.arange(n)
    tgt = np.maximum(targets, 0)
    ts = scores[rows, tgt][:, None]
    # Two passes over [n, C] (counting what beats the target, and its ties), then corrections
    # over the few columns that are not candidates, the current track and the rare tied rows:
    # the rank's definition costs six passes, and this is most of validation's time.
    ahead = (scores > ts).sum(axis=1)
    tied = (scores == ts).sum(axis=1) > 1  # the target ties with itself
    for i in np.flatnonzero(tied):
        ahead[i] += int((scores[i, : tgt[i]] == ts[i, 0]).sum())
    outside = np.flatnonzero(~candidates)
    if outside.size:
        sub = scores[:, outside]
        ahead -= ((sub > ts) | ((sub == ts) & (outside[None, :] < tgt[:, None]))).sum(axis=1)
    cur = np.maximum(current, 0)
    cs = scores[rows, cur]
    beats = (cs > ts[:, 0]) | ((cs == ts[:, 0]) & (cur < tgt))
    ahead -= (current >= 0) & candidates[cur] & (current != targets) & beats
    ok = (targets >= 0) & candidates[tgt] & (targets != current)
    return np.where(ok, 1 + ahead, 0).astype(np.int64)


def step_metrics(ranks: IntArray, k: int = K) -> dict[str, npt.NDArray[np.float64]]:
    """Per-step hit, reciprocal rank and NDCG at cut-off k (one relevant item per step)."""
    hit = (ranks >= 1) & (ranks <= k)
    safe = np.maximum(ranks, 1).astype(np.float64)
    return {
        f"hr@{k}": hit.astype(np.float64),
        f"mrr@{k}": np.where(hit, 1.0 / safe, 0.0),
        f"ndcg@{k}": np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0),
    }


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float


def summarise(
    ranks: IntArray, sessions: IntArray, *, k: int = K, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Estimate]:
    """Each metric's mean over steps, with a percentile bootstrap interval that resamples
    whole sessions (steps of one session are not independent)."""
    per_step = step_metrics(ranks, k)
    if len(ranks) == 0:
        return {name: Estimate(math.nan, math.nan, math.nan) for name in per_step}
    _, sess = np.unique(sessions, return_inverse=True)
    n_sess = int(sess.max()) + 1
    steps = np.bincount(sess, minlength=n_sess).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_sess, size=(n_boot, n_sess))
    denom = steps[draws].sum(axis=1)
    out = {}
    alpha = (1.0 - level) / 2.0
    for name, values in per_step.items():
        totals = np.bincount(sess, weights=values, minlength=n_sess)
        boot = totals[draws].sum(axis=1) / np.maximum(denom, 1.0)
        lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
        out[name] = Estimate(float(values.mean()), float(lo), float(hi))
    return out


def paired_difference(
    a: IntArray, b: IntArray, sessions: IntArray, metric: str, *, k: int = K, n_boot: int = 1000, seed: int = 0
) -> Estimate:
    """`metric` of ranks `a` minus that of ranks `b` (the same steps), with a paired percentile
    bootstrap interval: each resample draws whole sessions and scores both on them."""
    diff = step_metrics(a, k)[metric] - step_metrics(b, k)[metric]
    if len(diff) == 0:
        return Estimate(math.nan, math.nan, math.nan)
    _, sess = np.unique(sessions, return_inverse=True)
    n_sess = int(sess.max()) + 1
    steps = np.bincount(sess, minlength=n_sess).astype(np.float64)
    totals = np.bincount(sess, weights=diff, minlength=n_sess)
    draws = np.random.default_rng(seed).integers(0, n_sess, size=(n_boot, n_sess))
    boot = totals[draws].sum(axis=1) / np.maximum(steps[draws].sum(axis=1), 1.0)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return Estimate(float(diff.mean()), float(lo), float(hi))


def evaluate_positions(
    scorer: Scorer,
    enc: EncodedSequence,
    positions: IntArray,
    candidates: BoolArray,
    chunk: int = 512,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> IntArray:
    """Rank of the target at each position (0 = miss), the current track excluded;
    `progress(done, total)` after each chunk."""
    ranks = np.zeros(len(positions), dtype=np.int64)
    for a in range(0, len(positions), chunk):
        p = positions[a : a + chunk]
        ranks[a : a + chunk] = target_ranks(scorer.scores(p), enc.tracks.cls[p], enc.tracks.cls[p - 1], candidates)
        if progress is not None:
            progress(a + len(p), len(positions))
    return ranks
