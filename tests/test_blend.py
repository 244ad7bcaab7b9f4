"""Rank fusion of the model and the baselines: exact ranks, weights chosen on validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from songnet_core.blend import (
    TOP,
    BlendedNextTrack,
    fit_weights,
    fused_ranks,
    simplex_grid,
    top_lists,
)
from songnet_core.dataset import EncodedSequence, Vocabulary, build_sequence, target_positions
from songnet_core.evaluate import evaluate_listens
from songnet_core.history import Listen
from songnet_core.metrics import target_ranks
from songnet_core.train import TrainConfig
from songnet_core.transitions import TransitionCounts
from tests.test_evaluate import history
from tests.test_train import album_sessions


def random_history(rng: np.random.Generator, n_tracks: int, n_sessions: int) -> list[Listen]:
    out: list[Listen] = []
    t = 1_700_000_000
    for _ in range(n_sessions):
        for track in rng.integers(1, n_tracks + 1, size=int(rng.integers(2, 8))):
            out.append(Listen(play_id=len(out) + 1, track_id=int(track), artist_id=int(track), end_ts=t, ms_played=200_000))
            t += 240
        t += 3 * 3600
    return out


class FixedScores:
    """A scorer whose scores for each position are drawn once, up front."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def scores(self, positions: np.ndarray) -> np.ndarray:
        return self.table[positions]


def encoded(seed: int, n_tracks: int = 40, n_sessions: int = 30) -> EncodedSequence:
    seq = build_sequence(random_history(np.random.default_rng(seed), n_tracks, n_sessions))
    return EncodedSequence.build(seq, Vocabulary.build(seq, min_count=1))


def test_the_grid_covers_the_simplex() -> None:
    grid = simplex_grid(3, 4)
    assert len(grid) == math.comb(4 + 2, 2)
    assert len(set(grid)) == len(grid)
    assert all(abs(sum(w) - 1.0) < 1e-12 and min(w) >= 0 for w in grid)
    assert (1.0, 0.0, 0.0) in grid and (0.25, 0.5, 0.25) in grid


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ties=st.booleans())
def test_one_scorer_alone_ranks_exactly_as_the_protocol_does(seed: int, ties: bool) -> None:
    enc = encoded(seed)
    rng = np.random.default_rng(seed)
    c = enc.vocab.n_classes
    table = rng.integers(0, 4, size=(len(enc.seq), c)).astype(np.float32) if ties else rng.random((len(enc.seq), c), dtype=np.float32)
    positions = target_positions(enc.seq, 1)
    candidates = rng.random(c) < 0.8
    lists = top_lists({"only": FixedScores(table), "other": FixedScores(rng.random((len(enc.seq), c)))}, enc, positions, candidates)
    expected = target_ranks(table[positions], enc.tracks.cls[positions], enc.tracks.cls[positions - 1], candidates)
    top = lists.ids.shape[2]
    assert top == min(TOP, int(candidates.sum()) - 1)
    assert lists.ranks["only"].tolist() == expected.tolist()  # the scorer's own ranks, uncut
    expected = np.where(expected <= top, expected, 0)
    assert fused_ranks(lists, {"only": 1.0}).tolist() == expected.tolist()


def test_the_weights_go_to_the_scorer_that_knows() -> None:
    enc = encoded(7)
    rng = np.random.default_rng(7)
    c, n = enc.vocab.n_classes, len(enc.seq)
    positions = target_positions(enc.seq, 1)
    oracle = rng.random((n, c))
    targets = enc.tracks.cls[positions]
    oracle[positions, targets] = 2.0  # the next track, always first
    noise = rng.random((n, c))
    lists = top_lists({"model": FixedScores(noise), "oracle": FixedScores(oracle)}, enc, positions, np.ones(c, bool))
    weights = fit_weights(lists)
    assert weights == {"model": 0.0, "oracle": 1.0}
    ranks = fused_ranks(lists, weights)
    current = enc.tracks.cls[positions - 1]
    assert (ranks[targets != current] == 1).all()


def test_two_half_right_scorers_blend_better_than_either() -> None:
    enc = encoded(11, n_tracks=60, n_sessions=60)
    rng = np.random.default_rng(11)
    c, n = enc.vocab.n_classes, len(enc.seq)
    positions = target_positions(enc.seq, 1)
    targets = enc.tracks.cls[positions]
    first, second = rng.random((n, c)), rng.random((n, c))
    half = rng.random(len(positions)) < 0.5
    # Each puts the target 12th where it is wrong and 1st where it is right: alone each
    # hits only its half at 10; together the target is near the top of both lists.
    for table, right in ((first, half), (second, ~half)):
        rows = positions
        order = np.argsort(-table[rows], axis=1)
        for i, p in enumerate(rows):
            table[p, targets[i]] = 2.0 if right[i] else table[p, order[i, 11]] + 1e-6
    lists = top_lists({"a": FixedScores(first), "b": FixedScores(second)}, enc, positions, np.ones(c, bool))

    def hr10(weights: dict[str, float]) -> float:
        ranks = fused_ranks(lists, weights)
        return float(((ranks >= 1) & (ranks <= 10)).mean())

    assert fit_weights(lists) == {"a": 0.5, "b": 0.5}
    assert hr10({"a": 0.5, "b": 0.5}) > max(hr10({"a": 1.0}), hr10({"b": 1.0})) + 0.3


@pytest.mark.parametrize("with_blend", [True, False])
def test_evaluation_reports_songnet_the_fusion_and_their_validation_weights(with_blend: bool) -> None:
    listens = history(album_sessions(60))
    cfg = TrainConfig(dim=16, hidden=32, window=32, memory=32, batch_size=8, min_steps=4, max_epochs=2, patience=1, threads=1)
    report = evaluate_listens(listens, train_config=cfg, n_boot=20, with_blend=with_blend).to_json()
    if not with_blend:
        # songnet is then the model alone, through the same path.
        assert "fusion" not in report and report["songnet"]["hr@10"] == report["model"]["hr@10"]
        return
    weights = {k: v for k, v in report["model_training"].items() if k.startswith("blend_")}
    assert set(weights) == {"blend_model", "blend_pop", "blend_markov", "blend_sknn", "blend_repeat"}
    assert abs(sum(weights.values()) - 1.0) < 1e-3
    fusion = {k: v for k, v in report["model_training"].items() if k.startswith("fusion_")}
    assert fusion["fusion_model"] == 0.0 and abs(sum(fusion.values()) - 1.0) < 1e-3
    for name in ("songnet", "fusion"):
        assert 0.0 <= report[name]["hr@10"] <= 1.0
        lo, hi = report[name]["hr@10_ci"]
        assert lo <= report[name]["hr@10"] <= hi


def test_validation_that_tells_nothing_apart_gives_an_even_blend() -> None:
    enc = encoded(5, n_tracks=120)
    rng = np.random.default_rng(5)
    c, n = enc.vocab.n_classes, len(enc.seq)
    positions = target_positions(enc.seq, 1)
    tables = [rng.random((n, c)), rng.random((n, c))]
    for table in tables:
        table[positions, enc.tracks.cls[positions]] = -1.0  # every target last: all misses
    lists = top_lists({"model": FixedScores(tables[0]), "markov": FixedScores(tables[1])}, enc, positions, np.ones(c, bool))
    assert fit_weights(lists) == {"model": 0.5, "markov": 0.5}


class Uniform:
    """A model that knows nothing: every track of the library equally likely."""

    def __init__(self, size: int) -> None:
        self.size = size

    def scores(self, history: list[int], context: object) -> np.ndarray:
        return np.full(self.size, -np.log(self.size))


def library_blend(weights: dict[str, float]) -> BlendedNextTrack:
    # Track 1 is always followed by 2; 7 and 8 were the listener's last plays; 3, 4 and 5
    # often share sessions with 1.
    sessions = [[1, 2, 3], [1, 2, 4], [1, 2, 5, 3], [6, 4], [9, 10], [7, 8]]
    transitions = TransitionCounts(sessions)
    plays = [t for s in sessions for t in s]
    return BlendedNextTrack(Uniform(12), transitions, sessions, plays, weights, size=12)


def top_of(scores: np.ndarray, n: int) -> list[int]:
    return [int(t) for t in np.argsort(-scores, kind="stable")[:n]]


def test_generation_blend_follows_each_baseline_as_evaluation_does() -> None:
    assert top_of(library_blend({"markov": 1.0}).scores([1], None), 1) == [2]
    # The repeat rule: the most recent plays first (the playlist so far counts as played).
    assert top_of(library_blend({"repeat": 1.0}).scores([1], None), 2) == [8, 7]
    # Session-kNN: the tracks of the sessions that hold 1 (2 in all three, 3 in two).
    assert top_of(library_blend({"sknn": 1.0}).scores([1], None), 2) == [2, 3]
    assert top_of(library_blend({"pop": 1.0}).scores([9], None), 3) == [1, 2, 3]


def test_generation_blend_of_the_model_alone_is_the_model() -> None:
    blend = library_blend({"model": 1.0, "markov": 0.0})
    assert np.array_equal(blend.scores([1, 2], None), Uniform(12).scores([], None))


def test_a_playlist_from_the_blend_fills_up_even_when_the_rules_ban_its_whole_head() -> None:
    from songnet_core.generate import GenerationContext, PlaylistRules, continue_playlist

    blend = library_blend({"model": 0.25, "markov": 0.25, "sknn": 0.25, "repeat": 0.25})
    artist_of = np.arange(12, dtype=np.int64)
    artist_of[0] = -1  # no track 0
    context = GenerationContext(ts=1_700_000_000, hour=12, weekday=0)
    playlist = continue_playlist(blend, [1], 11, artist_of=artist_of, context=context, rules=PlaylistRules(), rng=3)
    assert playlist[0] == 1 and len(playlist) == 11 and len(set(playlist)) == 11
    assert playlist[1] == 2 or 2 in playlist[:4]  # the transition the listener always makes comes early
