"""Training on a tiny, learnable history: determinism, early stopping, stop requests, progress."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from songnet_core.dataset import EncodedSequence, build_sequence
from songnet_core.model import load_checkpoint, save_checkpoint
from songnet_core.train import (
    ModelScorer,
    TrackFeatureTable,
    TrainConfig,
    TrainingData,
    TrainProgress,
    make_batch,
    train,
)
from tests.test_evaluate import history

TINY = TrainConfig(
    dim=16, hidden=32, window=32, memory=32, batch_size=8, coverage=2.0, min_steps=4, max_epochs=3, patience=2,
    lr=1e-2, threads=1, refit=False,
)  # fmt: skip


def album_sessions(n: int = 120, seed: int = 0) -> list[list[int]]:
    """Three albums of ten tracks; each session plays 4-7 tracks of one album in order."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        album = rng.randrange(3)
        start = rng.randrange(4)
        out.append([album * 10 + 1 + i for i in range(start, start + rng.randrange(4, 8))])
    return out


def data() -> TrainingData:
    return TrainingData(build_sequence(history(album_sessions())))


def test_same_data_and_seed_give_the_same_model() -> None:
    a = train(TINY, data())
    b = train(TINY, data())
    assert a.model is not None and b.model is not None
    sa, sb = a.model.module.state_dict(), b.model.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = train(TrainConfig(**{**TINY.__dict__, "seed": 1}), data())
    assert c.model is not None
    assert not torch.equal(c.model.module.bias, a.model.module.bias)


def test_learns_album_order_and_reports_validation_hit_rate() -> None:
    result = train(TrainConfig(**{**TINY.__dict__, "max_epochs": 6, "patience": 6}), data())
    assert result.model is not None and not result.stopped
    m = result.metrics
    # Album order is fully predictable: the next track is in the top 10 almost always.
    assert m["val_hr@10"] > 0.8
    assert 1 <= m["best_epoch"] <= 6
    assert len(result.history) >= m["best_epoch"]
    assert m["tokens_per_second"] > 0
    # The loaded copy of the trained model predicts the album's next track.
    loaded = load_checkpoint(save_checkpoint(result.model.module, result.model.vocab, m, window=result.model.window))
    scores = loaded.next_scores([11, 12, 13])
    top = loaded.track_ids[np.argsort(-scores)[:10]].tolist()
    assert 14 in top


def test_a_sampled_softmax_learns_album_order_too() -> None:
    # 30 classes, over 4x the 3 negatives: each step's softmax runs over the batch's targets
    # and 3 other classes; validation still ranks every class.
    cfg = dataclasses.replace(TINY, max_epochs=6, patience=6, sampled_negatives=3)
    result = train(cfg, data())
    m = result.metrics
    assert m["val_hr@10"] > 0.8
    assert m["softmax_classes"] < m["classes"]
    full = train(dataclasses.replace(cfg, sampled_negatives=0), data())
    assert full.metrics["softmax_classes"] == full.metrics["classes"]


def test_early_stopping_keeps_the_best_epoch() -> None:
    # A learning rate this large ruins the model after its first epochs.
    cfg = TrainConfig(**{**TINY.__dict__, "lr": 0.5, "max_epochs": 8, "patience": 1})
    result = train(cfg, data())
    hist = [h["val_hr@10"] for h in result.history]
    assert len(hist) < 8 or max(hist) == hist[int(result.metrics["best_epoch"]) - 1]
    assert result.metrics["val_hr@10"] == max(hist)
    assert result.metrics["best_epoch"] == 1 + hist.index(max(hist))


def test_a_stop_request_returns_no_model() -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    result = train(TINY, data(), should_stop=stop)
    assert result.stopped and result.model is None
    assert len(calls) == 4


def test_progress_reports_loss_and_validation() -> None:
    seen: list[TrainProgress] = []
    train(TINY, data(), progress=seen.append)
    assert seen and all(p.loss > 0 for p in seen)
    ends = [p for p in seen if p.step == p.steps]
    assert [p.epoch for p in ends] == list(range(1, len(ends) + 1))
    assert all(p.val_hr10 is not None for p in ends)
    assert all(p.val_hr10 is None for p in seen if p.step < p.steps)


def test_refit_trains_on_every_session_for_the_best_epochs() -> None:
    phases: list[str] = []
    cfg = TrainConfig(**{**TINY.__dict__, "refit": True, "max_epochs": 2, "patience": 2})
    assert TrainConfig().refit  # the default
    result = train(cfg, data(), progress=lambda p: phases.append(p.phase))
    assert result.model is not None
    assert "fit" in phases and "refit" in phases
    assert phases.index("refit") > len(phases) - phases[::-1].index("fit") - 1
    # The model that never saw the validation sessions is kept for fair comparisons.
    val_model = result.validation_model
    assert val_model is not None and val_model.module is not result.model.module
    assert not torch.equal(val_model.module.bias, result.model.module.bias)
    plain = train(TINY, data())
    assert plain.validation_model is plain.model


def test_context_only_sessions_are_never_learned_from() -> None:
    # The last 30 sessions are context (evaluation's test part): their tracks are no classes.
    sessions = album_sessions(60) + [[41, 42, 43]] * 30
    seq = build_sequence(history(sessions))
    result = train(TINY, TrainingData(seq, train_sessions=60))
    assert result.model is not None
    assert not set(result.model.vocab.track_ids.tolist()) & {41, 42, 43}


def test_track_features_enter_the_model() -> None:
    seq = build_sequence(history(album_sessions(40)))
    ids = np.unique(seq.track_ids)
    table = TrackFeatureTable(ids, np.random.default_rng(0).random((len(ids), 5)).astype(np.float32))
    result = train(TINY, TrainingData(seq, track_features=table))
    assert result.model is not None
    assert result.model.module.cfg.n_track_features == 5
    rows = table.rows(np.array([ids[0], 999]))
    assert np.allclose(rows[0], table.matrix[0]) and not rows[1].any()


def test_windowed_scoring_matches_a_direct_forward_pass() -> None:
    seq = build_sequence(history(album_sessions(30)))
    result = train(TINY, TrainingData(seq))
    assert result.model is not None
    enc = EncodedSequence.build(seq, result.model.vocab)
    module, window, memory = result.model.module, 16, TINY.memory
    positions = np.arange(1, len(seq))
    scored = ModelScorer(module, enc, window).scores(positions)
    x, _ = make_batch(enc, np.array([0]), window, len(seq), memory)
    with torch.no_grad():
        direct, _ = module(x)
    assert direct is not None
    # Positions in the first window come from the first window's outputs.
    assert np.allclose(scored[: window - 1], direct[0, : window - 1].numpy(), atol=1e-5)
    # A later position reads at least half a window back, plus the memory before it: the
    # same as one window starting there.
    p = 60
    start = (p - 1 - window // 2) // (window // 2) * (window // 2)
    x, _ = make_batch(enc, np.array([start]), window, len(seq), memory)
    assert int((x.cls[0, :memory] >= 0).sum()) == memory  # the memory is full here
    with torch.no_grad():
        out, _ = module(x)
    assert out is not None
    assert np.allclose(scored[p - 1], out[0, p - 1 - start].numpy(), atol=1e-5)
    # The memory travels in the checkpoint.
    assert load_checkpoint(save_checkpoint(module, result.model.vocab, {}, window=window)).memory == memory


def test_make_batch_lays_out_memory_window_and_targets() -> None:
    seq = build_sequence(history(album_sessions(10)))
    result = train(TINY, TrainingData(seq))
    assert result.model is not None
    enc = EncodedSequence.build(seq, result.model.vocab)
    x, y = make_batch(enc, np.array([3, 20]), window=8, end=25, memory=5)
    assert x.memory == 5 and x.cls.shape == (2, 13)
    # Row 0: memory holds positions 0-2 after two pads; the window 3-10; targets 4-11.
    assert x.cls[0, :2].tolist() == [-1, -1]
    assert x.cls[0, 2:].tolist() == enc.tracks.cls[0:11].tolist()
    assert y[0].tolist() == enc.tracks.cls[4:12].tolist()
    # Row 1: the window is cut at `end` = 25; its last position has no target.
    assert x.cls[1, 5:10].tolist() == enc.tracks.cls[20:25].tolist()
    assert x.cls[1, 10:].tolist() == [-1, -1, -1]
    assert y[1].tolist() == [*enc.tracks.cls[21:25].tolist(), -1, -1, -1, -1]
    # Hours run forward through the row, from the memory to the window.
    assert (np.diff(x.hours[0, 2:].numpy()) >= 0).all()


def test_a_time_budget_ends_the_fit_at_an_epoch_end_and_leaves_out_a_refit_that_would_not_fit() -> None:
    # A clock that moves 100 s per epoch: with a 250 s budget the fit may start epochs until
    # 125 s, so it runs two (ending at 100 s and 200 s); a refit of at least one 100-s epoch
    # does not fit in the 50 s left.
    now = [0.0]

    def progress(p: TrainProgress) -> None:
        if p.step == p.steps:
            now[0] += 100.0

    cfg = dataclasses.replace(TINY, max_epochs=10, patience=10, refit=True, time_budget_s=250.0)
    result = train(cfg, data(), progress=progress, clock=lambda: now[0])
    assert result.model is not None
    assert len(result.history) == 2
    assert result.metrics["budget_stopped"] == 1.0
    assert result.metrics["refit"] == 0.0
    assert result.validation_model is result.model  # the fit model is the model

    now[0] = 0.0
    unbounded = train(dataclasses.replace(cfg, time_budget_s=None), data(), progress=progress, clock=lambda: now[0])
    assert len(unbounded.history) == 10 and unbounded.metrics["refit"] == 1.0
    assert "budget_stopped" not in unbounded.metrics
