"""The evaluation protocol on hand-made histories, where every answer can be worked out by hand."""

from __future__ import annotations

import numpy as np

from songnet_core.baselines import Markov, MostPopular, Repeat, SessionKNN
from songnet_core.dataset import EncodedSequence, build_sequence, target_positions, time_split
from songnet_core.evaluate import protocol_split
from songnet_core.history import Listen
from songnet_core.metrics import step_metrics, summarise, target_ranks

A, B, C, D, E = 1, 2, 3, 4, 5
HOUR = 3600


def history(sessions: list[list[int]], *, start: int = 1_700_000_000, ms: int = 200_000) -> list[Listen]:
    """Sessions of tracks (artist = track id), plays 4 min apart, sessions 3 h apart."""
    out: list[Listen] = []
    t = start
    for tracks in sessions:
        for track in tracks:
            out.append(Listen(play_id=len(out) + 1, track_id=track, artist_id=track, end_ts=t, ms_played=ms))
            t += 240
        t += 3 * HOUR
    return out


def ranking(scores: np.ndarray, vocab_ids: np.ndarray, exclude: int | None) -> list[int]:
    """Track ids by descending score, ties by class index, `exclude` left out."""
    order = sorted(range(len(scores)), key=lambda c: (-scores[c], c))
    return [int(vocab_ids[c]) for c in order if vocab_ids[c] != exclude]


TRAIN = [[A, B, C], [A, B], [A, C], [D, A]]


def split_of(sessions: list[list[int]], test: int):
    seq = build_sequence(history(sessions))
    first = len(sessions) - test
    split = protocol_split(seq, test_share=test / len(sessions))
    assert split.first_test_session == first
    return split, EncodedSequence.build(split.seq, split.vocab)


def test_time_split_holds_out_the_last_share_of_sessions() -> None:
    assert time_split(10, 0.2) == 8
    assert time_split(5, 0.2) == 4  # at least one held out
    assert time_split(1, 0.2) == 1  # nothing to hold out from a single session


def test_sessions_are_ordered_by_start_whatever_the_input_order() -> None:
    listens = history([[A, B], [C, D], [E, A], [B, C], [D, E]])
    shuffled = list(reversed(listens))
    split = protocol_split(build_sequence(shuffled))
    # The last session in time (D, E) is the test part: its one target is E.
    assert split.first_test_session == 4
    assert split.seq.track_ids[split.positions].tolist() == [E]
    assert set(split.vocab.track_ids.tolist()) == {A, B, C, D, E}


def test_targets_are_every_track_after_the_first_of_each_test_session() -> None:
    seq = build_sequence(history([[A, B, C], [D], [E, A, B]]))
    assert target_positions(seq, 1).tolist() == [5, 6]  # D alone has no target
    assert seq.track_ids[[5, 6]].tolist() == [A, B]


def test_short_plays_are_left_out_and_repeats_collapse() -> None:
    listens = history([[A, A, B, C]])
    listens[2] = Listen(play_id=3, track_id=B, artist_id=B, end_ts=listens[2].end_ts, ms_played=29_999)
    seq = build_sequence(listens)
    assert seq.track_ids.tolist() == [A, C]


def test_current_track_is_excluded_and_ties_fall_back_on_class_order() -> None:
    scores = np.array([[5.0, 9.0, 5.0, 1.0]])
    candidates = np.ones(4, dtype=bool)
    # Class 1 (the current track) scores highest but does not count; class 0 wins the tie with 2.
    assert target_ranks(scores, np.array([2]), np.array([1]), candidates).tolist() == [2]
    assert target_ranks(scores, np.array([0]), np.array([1]), candidates).tolist() == [1]
    # Without the exclusion class 0 would be second.
    assert target_ranks(scores, np.array([0]), np.array([-1]), candidates).tolist() == [2]


def test_targets_never_seen_in_training_are_misses() -> None:
    scores = np.array([[1.0, 2.0, 3.0]] * 3)
    candidates = np.array([True, True, False])
    ranks = target_ranks(scores, np.array([-1, 2, 0]), np.array([-1, -1, -1]), candidates)
    assert ranks.tolist() == [0, 0, 2]
    assert step_metrics(ranks)["hr@10"].tolist() == [0.0, 0.0, 1.0]


def test_an_unseen_test_track_is_a_miss_through_the_whole_protocol() -> None:
    split, enc = split_of([*TRAIN, [A, E]], test=1)
    assert E not in split.vocab.track_ids.tolist()
    cands = np.ones(split.vocab.n_classes, dtype=bool)
    p = split.positions
    for scorer in (MostPopular(enc, 4), Markov(enc, 4), Repeat(enc, 4), SessionKNN(enc, 4)):
        assert target_ranks(scorer.scores(p), enc.tracks.cls[p], enc.tracks.cls[p - 1], cands).tolist() == [0]


def test_metrics_by_hand() -> None:
    m = step_metrics(np.array([1, 2, 10, 11, 0]))
    assert m["hr@10"].tolist() == [1, 1, 1, 0, 0]
    assert np.allclose(m["mrr@10"], [1, 0.5, 0.1, 0, 0])
    assert np.allclose(m["ndcg@10"], [1, 1 / np.log2(3), 1 / np.log2(11), 0, 0])


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_sessions() -> None:
    rng = np.random.default_rng(1)
    ranks = rng.integers(0, 30, size=400)
    sessions = np.repeat(np.arange(100), 4)
    est = summarise(ranks, sessions, n_boot=500)
    for e in est.values():
        assert e.lo <= e.value <= e.hi
        assert e.hi - e.lo > 0
    small = summarise(ranks[:40], sessions[:40], n_boot=500)["hr@10"]
    assert small.hi - small.lo > est["hr@10"].hi - est["hr@10"].lo
    assert est["hr@10"].value == np.mean((ranks >= 1) & (ranks <= 10))


def test_popularity_by_hand() -> None:
    split, enc = split_of([*TRAIN, [B, D]], test=1)
    # Plays in training: A 4, B 2, C 2, D 1; B is current, so D (the target) ranks 3rd.
    s = MostPopular(enc, 4).scores(split.positions)
    assert ranking(s[0], split.vocab.track_ids, exclude=B)[:3] == [A, C, D]
    cands = np.ones(split.vocab.n_classes, dtype=bool)
    p = split.positions
    assert target_ranks(s, enc.tracks.cls[p], enc.tracks.cls[p - 1], cands).tolist() == [3]


def test_markov_by_hand_and_backs_off_to_popularity() -> None:
    split, enc = split_of([*TRAIN, [A, C], [C, B]], test=2)
    s = Markov(enc, 4).scores(split.positions)
    # From A: B twice, C once; then popularity (D). Test transitions are never learned from:
    # A -> C in the first test session does not lift C above B for later predictions.
    assert ranking(s[0], split.vocab.track_ids, exclude=A) == [B, C, D]
    # From C nothing follows in training: pure popularity.
    assert ranking(s[1], split.vocab.track_ids, exclude=C) == [A, B, D]


def test_repeat_by_hand_uses_earlier_test_sessions_as_history() -> None:
    split, enc = split_of([*TRAIN, [B, E], [A, C]], test=2)
    s = Repeat(enc, 4).scores(split.positions)
    ids = split.vocab.track_ids
    # Target E (pos after B): most recent first: A, D, C (then B is current).
    assert ranking(s[0], ids, exclude=B)[:3] == [A, D, C]
    # Target C (after A in the last session): B from the earlier test session comes first.
    assert ranking(s[1], ids, exclude=A)[:3] == [B, D, C]


def test_session_knn_by_hand() -> None:
    split, enc = split_of([*TRAIN, [A, B, C]], test=1)
    knn = SessionKNN(enc, 4, k=100)
    s = knn.scores(split.positions)
    ids = split.vocab.track_ids.tolist()
    # Query {A, B} against {A,B,C}: 2/sqrt(6); {A,B}: 1; {A,C}: 1/2; {D,A}: 1/2.
    expected_c = 2 / np.sqrt(6) + 0.5
    expected_d = 0.5
    assert np.isclose(s[1][ids.index(C)], expected_c, atol=1e-3)
    assert np.isclose(s[1][ids.index(D)], expected_d, atol=1e-3)
    assert ranking(s[1], split.vocab.track_ids, exclude=B) == [A, C, D]
    # Only the k nearest count: with k=1 the best neighbour {A,B} alone votes.
    one = SessionKNN(enc, 4, k=1).scores(split.positions[1:])
    assert one[0][ids.index(C)] < 1e-3 and one[0][ids.index(A)] > 0.99


def test_validation_figures_never_see_the_test_part() -> None:
    sessions = [[A, B], [B, C], [C, D], [D, E], [A, C], [B, D], [C, E], [A, E], [B, E], [E, A]]
    seq = build_sequence(history(sessions))
    test = protocol_split(seq)
    val = protocol_split(seq, validation_share=0.25)
    assert test.first_test_session == 8
    assert val.seq.n_sessions == 8  # the test sessions are gone
    assert val.first_test_session == 6
