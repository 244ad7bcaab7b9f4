"""Playlist generation: the rules hold for any scorer, sampling is reproducible, reasons read right."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from songnet_core.features import TrackFeatures
from songnet_core.generate import (
    FloatArray,
    GenerationContext,
    MarkovScorer,
    PlaylistRules,
    Sampling,
    allowed_mask,
    continue_playlist,
    pick,
)
from songnet_core.history import TrackInfo
from songnet_core.reasons import SEED_REASON, Explainer
from songnet_core.transitions import TransitionCounts

CTX = GenerationContext(ts=1_700_000_000, hour=20, weekday=1)


class RandomScorer:
    """Fixed random logits per step: any scorer must get the same rules."""

    def __init__(self, size: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.size = size
        self.calls: list[list[int]] = []

    def scores(self, history: Sequence[int], context: GenerationContext) -> FloatArray:
        self.calls.append(list(history))
        return self.rng.normal(size=self.size) * 3


class FavouriteScorer:
    """Always wants the same tracks, to show the rules override a scorer's wishes."""

    def __init__(self, size: int, favourites: Sequence[int]) -> None:
        self.logits = np.full(size, -5.0)
        for rank, t in enumerate(favourites):
            self.logits[t] = 10.0 - rank

    def scores(self, history: Sequence[int], context: GenerationContext) -> FloatArray:
        return self.logits


def artists_array(artist_of: dict[int, int], size: int) -> np.ndarray:
    arr = np.full(size, -1, dtype=np.int64)
    for t, a in artist_of.items():
        arr[t] = a
    return arr


def check_rules(playlist: list[int], n_seeds: int, artist_of: np.ndarray, rules: PlaylistRules) -> None:
    assert len(set(playlist)) == len(playlist), "a track twice"
    for i in range(n_seeds, len(playlist)):
        t = playlist[i]
        assert artist_of[t] >= 0
        assert t not in rules.exclude
        if rules.no_back_to_back and i > 0:
            assert artist_of[t] != artist_of[playlist[i - 1]], "same artist back to back"
        window = playlist[max(0, i - rules.artist_window + 1) : i + 1]
        assert Counter(int(artist_of[x]) for x in window)[int(artist_of[t])] <= rules.max_per_artist


library = st.integers(min_value=5, max_value=80).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.integers(0, max(1, n // 3)), min_size=n, max_size=n))
)


@settings(max_examples=80, deadline=None)
@given(
    lib=library,
    length=st.integers(1, 40),
    n_seeds=st.integers(0, 3),
    max_per_artist=st.integers(1, 3),
    window=st.integers(1, 25),
    back_to_back=st.booleans(),
    n_excluded=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
    sampling=st.sampled_from([Sampling(), Sampling(0.5, top_k=3), Sampling(2.0, top_p=0.8), Sampling(0.0)]),
)
def test_rules_hold_for_any_scorer(
    lib: tuple[int, list[int]],
    length: int,
    n_seeds: int,
    max_per_artist: int,
    window: int,
    back_to_back: bool,
    n_excluded: int,
    seed: int,
    sampling: Sampling,
) -> None:
    n, artists = lib
    size = n + 3  # ids 0..2 are gaps in the id space: no track
    artist_of = artists_array({t + 3: a for t, a in enumerate(artists)}, size)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(3, size)).tolist()
    seeds = ids[:n_seeds]
    excluded = frozenset(ids[n_seeds : n_seeds + n_excluded] + seeds[:1])  # a seed in exclude stays a seed
    rules = PlaylistRules(max_per_artist, window, back_to_back, excluded)
    playlist = continue_playlist(
        RandomScorer(size, seed), seeds, length, artist_of=artist_of, context=CTX, sampling=sampling, rules=rules, rng=seed
    )
    assert playlist[: min(n_seeds, length)] == seeds[:length]
    assert len(playlist) <= length
    check_rules(playlist, n_seeds, artist_of, rules)
    if len(playlist) < length:
        # It stopped early only because no track was left that the rules allow.
        base = artist_of >= 0
        base[[t for t in excluded if t not in seeds]] = False
        assert not allowed_mask(playlist, artist_of, rules, base).any()


def test_at_most_two_per_artist_in_any_twenty_even_when_the_scorer_insists() -> None:
    # 20 artists x 5 tracks; the scorer ranks artist 0's tracks first, then artist 1's, ...
    artist_of = artists_array({t: t // 5 for t in range(100)}, 100)
    scorer = FavouriteScorer(100, list(range(100)))
    playlist = continue_playlist(scorer, [0], 50, artist_of=artist_of, context=CTX, rng=1)
    assert len(playlist) == 50
    check_rules(playlist, 1, artist_of, PlaylistRules())
    for start in range(0, len(playlist) - 19):
        counts = Counter(int(artist_of[t]) for t in playlist[start : start + 20])
        assert max(counts.values()) <= 2
    # Six artists allow only 12 tracks under the rule: the playlist ends there, rules intact.
    few = artists_array({t: t // 10 for t in range(60)}, 60)
    short = continue_playlist(FavouriteScorer(60, range(60)), [0], 50, artist_of=few, context=CTX, rng=1)
    assert len(short) == 12
    check_rules(short, 1, few, PlaylistRules())


def test_same_seed_same_playlist_and_different_seed_differs() -> None:
    artist_of = artists_array({t: t for t in range(500)}, 500)
    logits = np.random.default_rng(0).normal(size=500)

    class Fixed:
        def scores(self, history: Sequence[int], context: GenerationContext) -> FloatArray:
            return logits

    runs = [continue_playlist(Fixed(), [1, 2], 30, artist_of=artist_of, context=CTX, rng=s) for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert runs[0][:2] == [1, 2] and len(runs[0]) == 30


def test_scorer_sees_the_playlist_so_far() -> None:
    artist_of = artists_array({t: t for t in range(20)}, 20)
    scorer = RandomScorer(20, 0)
    playlist = continue_playlist(scorer, [4, 5], 6, artist_of=artist_of, context=CTX, rng=0)
    assert scorer.calls == [playlist[:k] for k in range(2, 6)]


def test_greedy_top_k_and_top_p() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    assert pick(logits, Sampling(temperature=0.0), rng) == 0
    top2 = {pick(logits, Sampling(top_k=2), rng) for _ in range(300)}
    assert top2 == {0, 1}
    nucleus = {pick(logits, Sampling(top_p=0.75), rng) for _ in range(300)}
    assert nucleus == {0, 1}  # 0.5 + 0.3 reaches 0.75
    assert pick(np.full(4, -np.inf), Sampling(), rng) is None
    # A low temperature sharpens, a high one flattens.
    cold = Counter(pick(logits, Sampling(temperature=0.3), rng) for _ in range(2000))
    hot = Counter(pick(logits, Sampling(temperature=3.0), rng) for _ in range(2000))
    assert cold[0] > 1550 and hot[3] > 250  # expected shares: .83 and .17
    with pytest.raises(ValueError, match="not both"):
        Sampling(top_k=3, top_p=0.5)


def test_markov_walk_follows_transitions_and_backs_off_to_popularity() -> None:
    sessions = [[1, 2, 3], [1, 2, 4], [1, 2, 3], [5, 6]]
    tc = TransitionCounts(sessions)
    scorer = MarkovScorer(tc, 10)
    s = scorer.scores([1], CTX)
    assert int(np.argmax(s)) == 2
    assert np.isneginf(s[0]) and np.isneginf(s[9])  # never played
    # 3 has no followers: back off to the last track that has some (2 -> 3 twice, 2 -> 4 once).
    s = scorer.scores([2, 3], CTX)
    assert s[3] > s[4] > s[6]
    artist_of = artists_array({t: t for t in range(1, 7)}, 10)
    walk = continue_playlist(scorer, [1], 3, artist_of=artist_of, context=CTX, sampling=Sampling(0.0), rng=0)
    assert walk == [1, 2, 3]


def test_reasons() -> None:
    tracks = {
        1: TrackInfo(1, 100, "A", "Seed Song"),
        2: TrackInfo(2, 200, "B", "Follower"),
        3: TrackInfo(3, 100, "A", "Other A"),
        4: TrackInfo(4, 300, "C", "Session Mate"),
        5: TrackInfo(5, 400, "D", "Night Song"),
        6: TrackInfo(6, 500, "E", "Rare"),
    }
    sessions = [[1, 2, 9, 4], [1, 2, 8, 4], [5], [6]]
    night = tuple(1.0 if h == 21 else 0.0 for h in range(24))
    features = {5: TrackFeatures(5, 12, 0.0, 1.0, 0, 0, night), 6: TrackFeatures(6, 1, 0.0, 1.0, 0, 0, night)}
    ex = Explainer(TransitionCounts(sessions), tracks, features)
    ctx = GenerationContext.at(1_700_000_000, ZoneInfo("UTC"))  # 22:13 UTC
    reasons = ex.explain([1, 2, 3, 4, 5, 6], 1, ctx)
    assert reasons[0] == SEED_REASON
    assert reasons[1] == 'often follows "Seed Song" in your sessions (2×)'
    assert reasons[2] == 'same artist as seed "Seed Song"'
    assert reasons[3] == 'in 2 of your sessions with seed "Seed Song"'
    assert reasons[4] == "you played it 12 times around this hour"
    assert reasons[5] == "you played it once; the model thinks it fits here"


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3000),
    top_p=st.floats(0.05, 0.999),
    spread=st.floats(0.1, 8.0),
    seed=st.integers(0, 2**16),
)
def test_nucleus_is_the_smallest_top_set_reaching_p(n: int, top_p: float, spread: float, seed: int) -> None:
    from songnet_core.generate import _nucleus

    logits = np.random.default_rng(seed).normal(size=n) * spread
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    keep = _nucleus(probs, top_p)
    ordered = np.sort(probs)[::-1]
    expected = min(int(np.searchsorted(np.cumsum(ordered), top_p)) + 1, n)
    assert keep.size == expected
    assert np.allclose(np.sort(probs[keep])[::-1], ordered[:expected])


@settings(max_examples=60, deadline=None)
@given(sessions=st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=8), max_size=12))
def test_transition_counts_match_a_plain_count(sessions: list[list[int]]) -> None:
    tc = TransitionCounts(sessions)
    pairs: Counter[tuple[int, int]] = Counter()
    for s in sessions:
        pairs.update((a, b) for a, b in itertools.pairwise(s) if a != b)
    plays = Counter(t for s in sessions for t in s)
    for a in range(14):
        assert tc.play_count(a) == plays[a]
        ids, counts = tc.followers(a)
        assert dict(zip(ids.tolist(), counts.tolist(), strict=True)) == {b: n for (x, b), n in pairs.items() if x == a}
        for b in range(14):
            assert tc.count(a, b) == pairs[(a, b)]
            both = sum(1 for s in sessions if a in s and b in s)
            assert tc.shared_sessions(a, b) == both
    assert tc.count(-1, 3) == 0 and tc.followers(99)[0].size == 0


def test_playlist_quality_measures() -> None:
    from songnet_core.playlist_quality import bootstrap_mean, ndcg, r_precision, score_session

    truth = {1, 2, 3}
    assert r_precision([1, 9, 2, 3], truth, cap=20) == pytest.approx(2 / 3)  # R = 3: first 3 count
    assert r_precision([9] * 5, {1}, cap=20) == 0.0
    assert r_precision([1, 2], set(range(100)), cap=2) == 1.0  # R capped at the playlist's length
    assert ndcg([1, 2, 3, 9], truth, k=20) == pytest.approx(1.0)
    assert ndcg([9, 1], {1}, k=20) == pytest.approx(1 / np.log2(3))
    assert np.isnan(ndcg([1], set(), k=20))
    iv = bootstrap_mean([0.0, 1.0] * 50)
    assert iv.value == 0.5 and iv.lo < 0.5 < iv.hi
    # A Markov walk reproduces a session it has seen: seeds 1, 2, 3 are followed by 4, 5.
    artist_of = artists_array({t: t for t in range(1, 8)}, 8)
    walk = MarkovScorer(TransitionCounts([[1, 2, 3, 4, 5]] * 3), 8)
    score = score_session(walk, [1, 2, 3, 4, 5], artist_of=artist_of, context=CTX, n_generated=2, sampling=Sampling(0.0))
    assert score is not None and score.r_precision == 1.0 and score.ndcg == pytest.approx(1.0)
    assert score.distinct_artists == 2 and score.hits == 2
    assert score_session(walk, [1, 2, 3], artist_of=artist_of, context=CTX) is None  # nothing after the seeds
