"""Promotion compares what ships: each model's full ranker (its LSTM fused with the
baselines under its own blend weights, or reranked by its own reranker), not the LSTMs alone."""

from __future__ import annotations

import numpy as np
import pytest

from songnet_core.dataset import ListeningSequence, build_sequence
from songnet_core.history import Listen
from songnet_core.model import LoadedModel
from songnet_core.promotion import MIN_COMPARE_STEPS, Ranker, compare_on_split
from songnet_core.rerank import Reranker
from songnet_core.train import TrainConfig, TrainingData, train

CYCLE = 40  # tracks, always heard in the same order: the Markov rule predicts every step
SESSIONS = 60
FIRST_VAL = 40


@pytest.fixture(scope="module")
def cyclic() -> tuple[ListeningSequence, LoadedModel]:
    """Sessions that each walk 8 steps along one fixed cycle of tracks from a random start,
    and an LSTM that learned nothing (a learning rate of 1e-9): near chance on them."""
    rng = np.random.default_rng(3)
    listens: list[Listen] = []
    ts = 1_700_000_000
    for _ in range(SESSIONS):
        start = int(rng.integers(CYCLE))
        for i in range(8):
            track = (start + i) % CYCLE
            ts += 200
            listens.append(Listen(len(listens) + 1, track, track // 4, ts, 200_000))
        ts += 6 * 3600
    seq = build_sequence(listens, tz="UTC")
    assert seq.n_sessions == SESSIONS
    config = TrainConfig(
        dim=8, hidden=16, window=32, batch_size=16, max_epochs=1, patience=1, lr=1e-9, threads=1, seed=0,
        time_budget_s=None,
    )  # fmt: skip
    result = train(config, TrainingData(seq))
    assert result.validation_model is not None
    return seq, result.validation_model


def test_equal_lstms_with_better_blend_weights_win(cyclic: tuple[ListeningSequence, LoadedModel]) -> None:
    seq, model = cyclic
    lstm_alone = Ranker(model, {})
    with_markov = Ranker(model, {"model": 0.125, "markov": 0.875})
    cmp = compare_on_split(with_markov, lstm_alone, seq, FIRST_VAL, SESSIONS, zone="UTC")
    assert cmp.compared == "ranker"
    assert cmp.steps == (SESSIONS - FIRST_VAL) * 7 and cmp.left_out_steps == 0
    # The same LSTM on both sides: compared alone they would tie; the full rankers do not.
    assert cmp.new_hr10 > 0.95
    assert cmp.current_hr10 < 0.5
    # The order of the arguments is not what decides.
    swapped = compare_on_split(lstm_alone, with_markov, seq, FIRST_VAL, SESSIONS, zone="UTC")
    assert (swapped.new_hr10, swapped.current_hr10) == (cmp.current_hr10, cmp.new_hr10)


def test_steps_the_promoted_model_trained_on_are_left_out(cyclic: tuple[ListeningSequence, LoadedModel]) -> None:
    seq, model = cyclic
    trained_until = int(seq.end_ts[seq.session_bounds(FIRST_VAL + 9)[1] - 1])  # the first 10 validation sessions
    cmp = compare_on_split(
        Ranker(model, {"markov": 1.0}), Ranker(model, {}), seq, FIRST_VAL, SESSIONS, zone="UTC",
        current_trained_until_ts=trained_until,
    )  # fmt: skip
    assert cmp.left_out_steps == 10 * 7 and cmp.steps == 10 * 7 >= MIN_COMPARE_STEPS
    assert cmp.new_hr10 > 0.95 > cmp.current_hr10


def test_a_rankers_own_reranker_is_what_is_compared(cyclic: tuple[ListeningSequence, LoadedModel]) -> None:
    seq, model = cyclic
    # Transitions from the current track decide: on these sessions, the Markov rule itself.
    follows = Reranker(("model", "pop"), {"log_follows": 5.0})
    cmp = compare_on_split(Ranker(model, {}, follows), Ranker(model, {}), seq, FIRST_VAL, SESSIONS, zone="UTC")
    assert cmp.new_hr10 > 0.95
    assert cmp.current_hr10 < 0.5
