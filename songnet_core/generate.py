"""Continuing a few seed tracks into a playlist, one sampled track at a time, under rules.

Any next-track scorer can drive it (`NextTrackScorer`): the LSTM and the first-order Markov
walk (`MarkovScorer`, the baseline for playlist quality) go through the same sampling and the
same rules, so their playlists compare fairly. Scores are logits over track ids: a dense array
indexed by track id, -inf (or absent past its end) where a track cannot be proposed.

Rules (`PlaylistRules`): no track twice (seeds included), at most `max_per_artist` tracks of one
artist in any `artist_window` consecutive tracks, never the same artist back to back, and never
a track from `exclude` (e.g. heard in the last N days). Seeds are the listener's choice and are
kept as given; the rules bind every generated track, counting the seeds before it. When no
track is left that the rules allow, the playlist ends early rather than break them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from songnet_core.transitions import TransitionCounts

FloatArray = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True, slots=True)
class GenerationContext:
    """When the playlist is meant to be heard, in the listener's zone."""

    ts: int
    hour: int  # 0-23, local
    weekday: int  # 0 = Monday, local

    @classmethod
    def at(cls, ts: int, tz: tzinfo) -> GenerationContext:
        local = datetime.fromtimestamp(ts, tz)
        return cls(ts=ts, hour=local.hour, weekday=local.weekday())


class NextTrackScorer(Protocol):
    """Proposes the next track: logits over track ids given the playlist so far."""

    def scores(self, history: Sequence[int], context: GenerationContext) -> FloatArray: ...


@dataclass(frozen=True, slots=True)
class Sampling:
    """temperature <= 0 means greedy; top_k and top_p (nucleus) are alternatives."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_p is not None:
            raise ValueError("choose top-k or top-p sampling, not both")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top-k must be at least 1")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError("top-p must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class PlaylistRules:
    max_per_artist: int = 2
    artist_window: int = 20
    no_back_to_back: bool = True
    exclude: frozenset[int] = frozenset()


def allowed_mask(
    playlist: Sequence[int], artist_of: npt.NDArray[np.int64], rules: PlaylistRules, base: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Which track ids may come next after `playlist` (`base`: valid and not excluded)."""
    if rules.max_per_artist < 1:
        return np.zeros_like(base)
    allowed = base.copy()
    if playlist:
        allowed[np.asarray(playlist, dtype=np.int64)] = False
    # The track placed now closes a window with the `artist_window - 1` tracks before it.
    before = max(rules.artist_window - 1, 0)
    recent = [int(artist_of[t]) for t in playlist[-before:]] if before else []
    banned = {a for a, n in Counter(recent).items() if n >= rules.max_per_artist}
    if rules.no_back_to_back and playlist:
        banned.add(int(artist_of[playlist[-1]]))
    if banned:
        # A lookup table over artist ids (-1, no track, maps to the last slot): one gather.
        table = np.zeros(int(max(artist_of.max(initial=0), max(banned))) + 2, dtype=bool)
        table[[a for a in banned if a >= 0]] = True
        allowed &= ~table[artist_of]
    return allowed


NEGLIGIBLE_NATS = 60.0


def pick(logits: FloatArray, sampling: Sampling, rng: np.random.Generator) -> int | None:
    """One index drawn from the finite entries of `logits`, or None when there is none."""
    idx = np.flatnonzero(np.isfinite(logits))
    if idx.size == 0:
        return None
    vals = np.asarray(logits[idx], dtype=np.float64)
    if sampling.temperature <= 0.0:
        return int(idx[int(np.argmax(vals))])
    vals = vals / sampling.temperature
    # Entries this far below the best carry < 1e-22 of the mass even 20k together: leaving
    # them out changes no draw's odds, and a scorer with a far tail (the blend) samples from
    # its head alone.
    near = vals >= vals.max() - NEGLIGIBLE_NATS
    if not near.all():
        idx, vals = idx[near], vals[near]
    if sampling.top_k is not None and sampling.top_k < idx.size:
        keep = np.argpartition(-vals, sampling.top_k - 1)[: sampling.top_k]
        idx, vals = idx[keep], vals[keep]
    probs = np.exp(vals - vals.max())
    probs /= probs.sum()
    if sampling.top_p is not None and sampling.top_p < 1.0:
        keep = _nucleus(probs, sampling.top_p)
        idx, probs = idx[keep], probs[keep] / probs[keep].sum()
    return int(idx[int(rng.choice(idx.size, p=probs))])


def _nucleus(probs: FloatArray, top_p: float) -> npt.NDArray[np.int64]:
    """Indices (ascending) of the most probable entries whose mass first reaches `top_p`.

    Only the cut-off probability is needed, so no index is sorted: the top 512 values are
    partitioned out and sorted alone (a trained model's nucleus is usually that small), and
    all values are sorted only when those do not hold the mass. Ties at the cut-off are kept.
    """
    k = 512
    if probs.size > k:
        top = np.sort(np.partition(probs, probs.size - k)[-k:])[::-1]
        cum = np.cumsum(top)
        if cum[-1] >= top_p:
            return np.flatnonzero(probs >= top[int(np.searchsorted(cum, top_p))])
    ordered = np.sort(probs)[::-1]
    cut = min(int(np.searchsorted(np.cumsum(ordered), top_p)) + 1, ordered.size)
    return np.flatnonzero(probs >= ordered[cut - 1])


def continue_playlist(
    scorer: NextTrackScorer,
    seeds: Sequence[int],
    length: int,
    *,
    artist_of: npt.NDArray[np.int64],
    context: GenerationContext,
    sampling: Sampling = Sampling(),
    rules: PlaylistRules = PlaylistRules(),
    rng: np.random.Generator | int | None = None,
) -> list[int]:
    """`seeds` followed by generated tracks, `length` tracks in all (fewer if the rules run out).

    `artist_of[t]` is the artist id of track id `t` (-1 where `t` is no track). The same
    scorer, seeds, context and `rng` seed give the same playlist.
    """
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    playlist = list(dict.fromkeys(seeds))  # a seed given twice is played once
    base = artist_of >= 0
    if rules.exclude:
        ex = np.fromiter((t for t in rules.exclude if 0 <= t < artist_of.size), dtype=np.int64)
        base[ex] = False
    n = artist_of.size
    while len(playlist) < length:
        mask = allowed_mask(playlist, artist_of, rules, base)
        raw = np.asarray(scorer.scores(playlist, context), dtype=np.float64)
        logits = np.full(n, -np.inf)
        m = min(n, raw.size)
        logits[:m] = raw[:m]
        logits[~mask] = -np.inf
        choice = pick(logits, sampling, gen)
        if choice is None:
            break
        playlist.append(choice)
    return playlist[: max(length, 0)]


class MarkovScorer:
    """A first-order Markov walk over the listener's session transitions.

    P(next | last) = (count(last -> next) + beta * popularity(next)) / (count(last) + beta),
    from the most recent playlist track that has any followers; pure popularity when none has.
    The popularity share keeps every played track reachable once the rules exhaust the
    followers.
    """

    def __init__(self, transitions: TransitionCounts, size: int, *, beta: float = 1.0) -> None:
        self.transitions = transitions
        self.beta = beta
        pop = np.zeros(size, dtype=np.float64)
        n = min(size, transitions.plays.size)
        pop[:n] = transitions.plays[:n]
        total = pop.sum()
        self.popularity = pop / total if total > 0 else pop

    def scores(self, history: Sequence[int], context: GenerationContext) -> FloatArray:
        weights = self.beta * self.popularity
        for last in reversed(history):
            ids, counts = self.transitions.followers(last)
            if ids.size:
                weights = weights.copy()
                ok = ids < weights.size
                weights[ids[ok]] += counts[ok]
                weights /= counts.sum() + self.beta
                break
        with np.errstate(divide="ignore"):
            return np.log(weights)
