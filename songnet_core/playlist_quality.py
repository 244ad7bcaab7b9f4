"""Playlist quality: do seeded playlists continue the way the listener's own sessions did?

The protocol: for each test session (the last 20 % of sessions, as in `evaluate.py`) with
more than `n_seeds` distinct tracks, its first `n_seeds` distinct tracks seed a playlist of
`n_seeds + n_generated` tracks; the generated tracks are compared with the rest of that
session (its distinct tracks after the seeds, the ground truth G):

- R-precision: hits among the first R generated tracks / R, where R = min(|G|, n_generated)
  (the RecSys Challenge 2018 measure, capped at the playlist's length);
- NDCG@n_generated: binary relevance, ideal ranking = min(|G|, n) hits first;
- distinct artists among the generated tracks.

Any `NextTrackScorer` is measured under the same rules and sampling, so the LSTM and the
Markov walk compare like for like. Figures come with 95 % bootstrap intervals over sessions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from songnet_core.generate import (
    GenerationContext,
    NextTrackScorer,
    PlaylistRules,
    Sampling,
    continue_playlist,
)


@dataclass(frozen=True)
class SessionScore:
    r_precision: float
    ndcg: float
    distinct_artists: int
    generated: int  # tracks generated (fewer than asked when the rules ran out)
    hits: int


def r_precision(generated: Sequence[int], truth: set[int], cap: int) -> float:
    r = min(len(truth), cap)
    if r == 0:
        return math.nan
    return sum(1 for t in generated[:r] if t in truth) / r


def ndcg(generated: Sequence[int], truth: set[int], k: int) -> float:
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(truth), k)))
    if ideal == 0:
        return math.nan
    return sum(1.0 / math.log2(i + 2) for i, t in enumerate(generated[:k]) if t in truth) / ideal


def score_session(
    scorer: NextTrackScorer,
    session: Sequence[int],
    *,
    artist_of: npt.NDArray[np.int64],
    context: GenerationContext,
    n_seeds: int = 3,
    n_generated: int = 20,
    sampling: Sampling = Sampling(),
    rules: PlaylistRules = PlaylistRules(),
    rng: int | None = 0,
) -> SessionScore | None:
    """The scores of one test session, or None when it has no track after its seeds."""
    distinct = list(dict.fromkeys(session))
    seeds, rest = distinct[:n_seeds], set(distinct[n_seeds:])
    if len(seeds) < n_seeds or not rest:
        return None
    playlist = continue_playlist(
        scorer, seeds, n_seeds + n_generated, artist_of=artist_of, context=context, sampling=sampling,
        rules=rules, rng=rng,
    )  # fmt: skip
    generated = playlist[len(seeds) :]
    return SessionScore(
        r_precision=r_precision(generated, rest, n_generated),
        ndcg=ndcg(generated, rest, n_generated),
        distinct_artists=len({int(artist_of[t]) for t in generated}),
        generated=len(generated),
        hits=sum(1 for t in generated if t in rest),
    )


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float


def bootstrap_mean(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> Interval:
    """Mean with a 95 % percentile bootstrap interval (values are per session)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boots = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return Interval(float(arr.mean()), float(lo), float(hi))


def summarise_scores(scores: Sequence[SessionScore], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Interval]:
    get: dict[str, Callable[[SessionScore], float]] = {
        "r_precision": lambda s: s.r_precision,
        "ndcg": lambda s: s.ndcg,
        "distinct_artists": lambda s: float(s.distinct_artists),
        "generated": lambda s: float(s.generated),
    }
    return {name: bootstrap_mean([f(s) for s in scores], n_boot=n_boot, seed=seed) for name, f in get.items()}
