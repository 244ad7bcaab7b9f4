"""The evaluation protocol on hand-made histories, where every answer can be worked out by hand."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from songnet_core.baselines import BASELINES, Markov, MostPopular, Repeat, SessionKNN
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


def dense_target_ranks(scores: np.ndarray, targets: np.ndarray, current: np.ndarray, candidates: np.ndarray) -> list[int]:
    """The rank's definition, one row and one column at a time."""
    out = []
    for row, t, cur in zip(scores, targets, current, strict=True):
        if t < 0 or not candidates[t] or t == cur:
            out.append(0)
            continue
        ahead = sum(
            1 for j, v in enumerate(row)
            if candidates[j] and j != cur and (v > row[t] or (v == row[t] and j < t))
        )  # fmt: skip
        out.append(1 + ahead)
    return out


@given(
    st.integers(1, 6).flatmap(
        lambda c: st.tuples(
            st.lists(st.lists(st.sampled_from([-np.inf, 0.0, 1.0, 2.0, 2.5]), min_size=c, max_size=c), min_size=1, max_size=5),
            st.lists(st.booleans(), min_size=c, max_size=c),
            st.lists(st.tuples(st.integers(-1, c - 1), st.integers(-1, c - 1)), min_size=5, max_size=5),
        )
    )
)
def test_target_ranks_follow_the_definition_with_ties_and_exclusions(case: tuple) -> None:
    rows, cands, pairs = case
    scores = np.asarray(rows, dtype=np.float64)
    candidates = np.asarray(cands, dtype=bool)
    targets = np.asarray([p[0] for p in pairs[: len(rows)]], dtype=np.int64)
    current = np.asarray([p[1] for p in pairs[: len(rows)]], dtype=np.int64)
    assert target_ranks(scores, targets, current, candidates).tolist() == dense_target_ranks(scores, targets, current, candidates)


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
    for scorer in (MostPopular(enc), Markov(enc), Repeat(enc), SessionKNN(enc)):
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


def test_popularity_by_hand_counts_every_play_before_the_step() -> None:
    split, enc = split_of([*TRAIN, [B, D, C, D]], test=1)
    s = MostPopular(enc).scores(split.positions)
    ids = split.vocab.track_ids.tolist()
    # Before the first target (D): A 4, B 3 (the current B included), C 2, D 1; B is current.
    assert ranking(s[0], split.vocab.track_ids, exclude=B)[:3] == [A, C, D]
    cands = np.ones(split.vocab.n_classes, dtype=bool)
    p = split.positions
    assert target_ranks(s[:1], enc.tracks.cls[p[:1]], enc.tracks.cls[p[:1] - 1], cands).tolist() == [3]
    # The target D is counted only after it is scored: 1 at its own step, 2 at the next D.
    assert s[0][ids.index(D)] == 1.0 and s[1][ids.index(D)] == 2.0 and s[2][ids.index(D)] == 2.0
    assert s[2][ids.index(C)] == 3.0  # the C just before the last step is counted


def test_markov_by_hand_learns_test_transitions_after_scoring_them() -> None:
    split, enc = split_of([*TRAIN, [A, D], [A, D], [A, D]], test=3)
    s = Markov(enc).scores(split.positions)
    ids = split.vocab.track_ids
    # From A in training: B twice, C once, D never: D ranks by popularity, third.
    assert ranking(s[0], ids, exclude=A) == [B, C, D]
    # After one test session A -> D counts once: a tie with C, which is more played in training.
    assert ranking(s[1], ids, exclude=A) == [B, C, D]
    # After two, A -> D ties B at 2 and D (3 plays) beats B (2) on popularity.
    assert ranking(s[2], ids, exclude=A)[0] == D


def test_markov_backs_off_to_popularity_before_the_step() -> None:
    split, enc = split_of([*TRAIN, [C, B, B]], test=1)
    s = Markov(enc).scores(split.positions)
    # Nothing ever followed C within a session: popularity up to the step (A 4, B 2, D 1).
    assert ranking(s[0], split.vocab.track_ids, exclude=C) == [A, B, D]


def test_repeat_by_hand_uses_earlier_test_sessions_as_history() -> None:
    split, enc = split_of([*TRAIN, [B, E], [A, C]], test=2)
    s = Repeat(enc).scores(split.positions)
    ids = split.vocab.track_ids
    # Target E (pos after B): most recent first: A, D, C (then B is current).
    assert ranking(s[0], ids, exclude=B)[:3] == [A, D, C]
    # Target C (after A in the last session): B from the earlier test session comes first.
    assert ranking(s[1], ids, exclude=A)[:3] == [B, D, C]


def test_session_knn_by_hand() -> None:
    split, enc = split_of([*TRAIN, [A, B, C]], test=1)
    knn = SessionKNN(enc, k=100)
    s = knn.scores(split.positions)
    ids = split.vocab.track_ids.tolist()
    # Query {A, B} against {A,B,C}: 2/sqrt(6); {A,B}: 1; {A,C}: 1/2; {D,A}: 1/2. The current
    # session is not in the pool until it is over.
    expected_c = 2 / np.sqrt(6) + 0.5
    expected_d = 0.5
    assert np.isclose(s[1][ids.index(C)], expected_c, atol=1e-3)
    assert np.isclose(s[1][ids.index(D)], expected_d, atol=1e-3)
    assert ranking(s[1], split.vocab.track_ids, exclude=B) == [A, C, D]
    # Only the k nearest count: with k=1 the best neighbour {A,B} alone votes.
    one = SessionKNN(enc, k=1).scores(split.positions[1:])
    assert one[0][ids.index(C)] < 1e-3 and one[0][ids.index(A)] > 0.99


def test_session_knn_pool_takes_earlier_test_sessions_and_keeps_the_most_recent() -> None:
    split, enc = split_of([*TRAIN, [C, D], [C, D]], test=2)
    ids = split.vocab.track_ids.tolist()
    s = SessionKNN(enc).scores(split.positions)
    # First test session, query {C}: no training session holding C holds D.
    assert s[0][ids.index(D)] < 1e-3
    # Second: the first test session {C, D} is now a neighbour (cosine 1/sqrt(2)).
    assert np.isclose(s[1][ids.index(D)], 1 / np.sqrt(2), atol=1e-3)
    # With a pool of one session, only that most recent one votes.
    last = SessionKNN(enc, sample=1).scores(split.positions)
    assert np.isclose(last[1][ids.index(D)], 1 / np.sqrt(2), atol=1e-3) and last[1][ids.index(A)] < 1e-3


def test_no_baseline_sees_the_target_before_scoring_it() -> None:
    # Two histories equal up to the last test step, different from it on: every baseline's
    # scores at that step (and before) are the same.
    a_split, a_enc = split_of([*TRAIN, [A, B], [C, A, D]], test=2)
    b_split, b_enc = split_of([*TRAIN, [A, B], [C, A, B]], test=2)
    assert a_split.positions.tolist() == b_split.positions.tolist()
    for name, cls in BASELINES.items():
        sa = cls(a_enc).scores(a_split.positions)
        sb = cls(b_enc).scores(b_split.positions)
        assert np.array_equal(sa, sb), name


def test_positions_scored_out_of_order_give_the_same_scores() -> None:
    split, enc = split_of([*TRAIN, [A, B, C], [D, A]], test=2)
    for cls in BASELINES.values():
        forward = cls(enc).scores(split.positions)
        scorer = cls(enc)
        backward = np.stack([scorer.scores(split.positions[i : i + 1])[0] for i in reversed(range(len(split.positions)))])
        assert np.array_equal(forward, backward[::-1])


def test_validation_figures_never_see_the_test_part() -> None:
    sessions = [[A, B], [B, C], [C, D], [D, E], [A, C], [B, D], [C, E], [A, E], [B, E], [E, A]]
    seq = build_sequence(history(sessions))
    test = protocol_split(seq)
    val = protocol_split(seq, validation_share=0.25)
    assert test.first_test_session == 8
    assert val.seq.n_sessions == 8  # the test sessions are gone
    assert val.first_test_session == 6


def test_the_validation_model_knows_only_what_came_before_validation() -> None:
    from songnet_core.train import TrainConfig, TrainingData, train, validation_halves
    from tests.test_train import album_sessions

    sessions = album_sessions(40)
    sessions[36] = [*sessions[36], 99]  # a track first played in the validation sessions
    seq = build_sequence(history(sessions))
    cfg = TrainConfig(dim=16, hidden=32, window=32, memory=32, batch_size=8, min_steps=2, max_epochs=1, threads=1)
    result = train(cfg, TrainingData(seq))
    assert result.model is not None and result.validation_model is not None
    val_first, weights_first = validation_halves(40, cfg.val_share)
    assert (val_first, weights_first) == (34, 37)
    assert result.metrics["val_first_session"] == 34 and result.metrics["weights_first_session"] == 37
    # Early stopping read the first half only: its steps are those of sessions 34-36.
    assert result.metrics["val_steps"] == len(target_positions(seq, 34, 37))
    assert 99 not in result.validation_model.vocab.track_ids.tolist()
    assert 99 in result.model.vocab.track_ids.tolist()  # the refit on every session learns it
