"""The incremental scorer gives what `LoadedModel.next_scores` gives, step after step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from songnet_core.dataset import N_CONTEXT, Vocabulary
from songnet_core.model import LoadedModel, ModelConfig, PlayContext, SongNet
from songnet_core.stepper import ModelStepper


def same_distribution(got: np.ndarray, want: np.ndarray) -> None:
    """Equal probabilities, and equal log-probabilities wherever a track is at all likely."""
    np.testing.assert_allclose(np.exp(got), np.exp(want), rtol=1e-4, atol=1e-9)
    likely = want > -20
    np.testing.assert_allclose(got[likely], want[likely], rtol=1e-4, atol=1e-4)


def random_model(*, copy: bool, features: int, window: int = 64, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    n_classes = 40
    # Classes are library tracks 100..139; tracks 0..29 get an embedding of their own.
    vocab = Vocabulary(
        track_ids=np.arange(100, 100 + n_classes, dtype=np.int64),
        counts=np.arange(n_classes, 0, -1, dtype=np.int64),
        own=np.asarray([i + 1 if i < 30 else 0 for i in range(n_classes)], dtype=np.int64),
        artist=np.asarray([1 + i % 7 for i in range(n_classes)], dtype=np.int64),
        artist_ids=np.asarray([-1, *range(500, 507)], dtype=np.int64),
        min_count=2,
    )
    cfg = ModelConfig(
        n_classes=n_classes, n_own=vocab.n_own, n_artists=vocab.n_artists, n_context=N_CONTEXT,
        n_track_features=features, dim=8, hidden=12, dropout=0.3, copy=copy,
    )  # fmt: skip
    feats = torch.rand(n_classes, features) if features else None
    net = SongNet(cfg, torch.from_numpy(vocab.own), torch.from_numpy(vocab.artist), feats)
    with torch.no_grad():  # random weights everywhere, so every term of the score matters
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    net.eval()
    return LoadedModel(net, vocab, window, {}, {})


@pytest.mark.parametrize(("copy", "features"), [(True, 5), (True, 0), (False, 3)])
def test_stepper_matches_next_scores_as_the_history_grows(copy: bool, features: int) -> None:
    model = random_model(copy=copy, features=features)
    stepper = ModelStepper(model)
    # Classes, a track outside the vocabulary with a known artist (503), one with an unknown artist.
    history = [100, 131, 7, 100, 125, 8, 139, 102]
    artists = [501, 502, 503, 501, 505, 999, 506, 503]
    ctx = PlayContext(ts=1_700_000_000, tz="Europe/Berlin")
    for n in range(1, len(history) + 1):
        want = model.next_scores(history[:n], ctx, history_artist_ids=artists[:n])
        got = stepper.next_scores(history[:n], ctx, history_artist_ids=artists[:n])
        same_distribution(got, want)
    # A different history, or another moment, starts again from scratch.
    other = [120, 121]
    same_distribution(
        stepper.next_scores(other, ctx, history_artist_ids=[501, 502]),
        model.next_scores(other, ctx, history_artist_ids=[501, 502]),
    )
    later = PlayContext(ts=1_700_050_000, tz="Europe/Berlin")
    same_distribution(
        stepper.next_scores(other, later, history_artist_ids=[501, 502]),
        model.next_scores(other, later, history_artist_ids=[501, 502]),
    )
    # Asking twice for the same history gives the same answer.
    again = stepper.next_scores(other, later, history_artist_ids=[501, 502])
    same_distribution(again, model.next_scores(other, later, history_artist_ids=[501, 502]))


def test_past_the_window_it_reads_like_next_scores() -> None:
    model = random_model(copy=True, features=2, window=4)
    stepper = ModelStepper(model)
    history = [100, 101, 102, 103, 104, 105]
    ctx = PlayContext(ts=1_700_000_000)
    np.testing.assert_allclose(stepper.next_scores(history, ctx), model.next_scores(history, ctx), rtol=1e-5)
    with pytest.raises(ValueError):
        stepper.next_scores([], ctx)


def test_stepper_matches_next_scores_with_real_end_times() -> None:
    model = random_model(copy=True, features=4, window=64)
    stepper = ModelStepper(model)
    # Recent plays with their own times (a 3-hour gap: a new session), then a playlist
    # played back to back from the context's moment.
    history = [100, 101, 7, 110, 120, 121, 139]
    artists = [501, 502, 503, 504, 505, 506, 501]
    ends = [1_700_000_000, 1_700_000_210, 1_700_000_400, 1_700_011_000, 1_700_011_200, 1_700_011_400, 1_700_011_600]
    ctx = PlayContext(ts=1_700_011_000, tz="America/New_York")
    for n in range(1, len(history) + 1):
        want = model.next_scores(history[:n], ctx, history_artist_ids=artists[:n], history_end_ts=ends[:n])
        got = stepper.next_scores(history[:n], ctx, history_artist_ids=artists[:n], history_end_ts=ends[:n])
        same_distribution(got, want)
    # Without end times, the same tracks read as played back to back: another answer, also matched.
    same_distribution(
        stepper.next_scores(history, ctx, history_artist_ids=artists),
        model.next_scores(history, ctx, history_artist_ids=artists),
    )


@pytest.mark.parametrize("features", [4, 0])
def test_every_prefix_at_once_reads_like_next_scores_inside_and_past_the_window(features: int) -> None:
    # Evaluation scores every prefix of a session in one call: prefixes inside the LSTM's
    # window (6) and past it, tracks outside the vocabulary, a session gap in the end times.
    model = random_model(copy=True, features=features, window=6)
    history = [100, 101, 7, 110, 120, 8, 121, 139, 100, 125, 102]
    artists = [501, 502, 503, 504, 505, 999, 506, 501, 501, 505, 502]
    ends = [1_700_000_000 + 200 * i + (11_000 if i >= 3 else 0) for i in range(len(history))]
    ctx = PlayContext(ts=1_700_011_000, tz="America/New_York")
    lengths = [11, 2, 3, 6, 7, 9, 1]
    got = ModelStepper(model).prefix_scores(history, ctx, history_artist_ids=artists, history_end_ts=ends, lengths=lengths)
    assert len(got) == len(lengths)
    for m, row in zip(lengths, got, strict=True):
        want = model.next_scores(history[:m], ctx, history_artist_ids=artists[:m], history_end_ts=ends[:m])
        same_distribution(row, want)
    # The same answers as the stepper's, one prefix at a time.
    stepper = ModelStepper(model)
    for m, row in sorted(zip(lengths, got, strict=True), key=lambda x: x[0]):
        same_distribution(row, stepper.next_scores(history[:m], ctx, history_artist_ids=artists[:m], history_end_ts=ends[:m]))


def full_size_model(
    *, copy: bool, features: int, n_classes: int = 3000, seed: int = 0
) -> LoadedModel:
    """A model of the default shape (64-d vectors, a 128-d LSTM, a 128-step window and a
    memory): the products take the kernels the daemon's model takes."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = Vocabulary(
        track_ids=np.arange(100, 100 + n_classes, dtype=np.int64),
        counts=np.arange(n_classes, 0, -1, dtype=np.int64),
        own=np.asarray([i + 1 if i < n_classes // 2 else 0 for i in range(n_classes)]),
        artist=rng.integers(1, 301, n_classes).astype(np.int64),
        artist_ids=np.asarray([-1, *range(500, 800)], dtype=np.int64),
        min_count=2,
    )
    cfg = ModelConfig(
        n_classes=n_classes, n_own=vocab.n_own, n_artists=vocab.n_artists, n_context=N_CONTEXT,
        n_track_features=features, dim=64, hidden=128, dropout=0.2, copy=copy, memory=300,
    )  # fmt: skip
    feats = torch.rand(n_classes, features) if features else None
    net = SongNet(cfg, torch.from_numpy(vocab.own), torch.from_numpy(vocab.artist), feats)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    net.eval()
    return LoadedModel(net, vocab, 128, {}, {})


@pytest.mark.parametrize(
    ("copy", "features", "threads"), [(True, 14, 1), (True, 0, 2), (False, 14, 1)]
)
def test_past_the_window_the_stepper_gives_next_scores_to_the_bit(
    copy: bool, features: int, threads: int
) -> None:
    # What is ranked must not move: past the window the stepper skips the dense work of every
    # window step but the last, and must still give exactly the model's numbers.
    model = full_size_model(copy=copy, features=features)
    stepper = ModelStepper(model)
    rng = np.random.default_rng(5)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for trial in range(8):
            # Past the window, and every fourth past window and memory together.
            n = int(rng.integers(129, 200) if trial % 4 else rng.integers(429, 460))
            history = rng.integers(100, 100 + 3000, n).tolist()
            history[-2] = 7  # not a class
            artists = rng.integers(499, 805, n).tolist() if trial % 3 else None
            ends = None
            if trial % 2:
                ends = np.sort(rng.integers(1_690_000_000, 1_700_000_000, n)).tolist()
            ctx = PlayContext(ts=1_700_000_000 + trial, tz="Europe/Berlin")
            # The history, then one track shorter: the second reads context rows it has seen.
            for m in (n, n - 1):
                kw = {
                    "history_artist_ids": artists[:m] if artists else None,
                    "history_end_ts": ends[:m] if ends else None,
                }
                want = model.next_scores(history[:m], ctx, **kw)
                got = stepper.next_scores(history[:m], ctx, **kw)
                assert got.dtype == want.dtype and np.array_equal(got, want), (trial, m)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("with_ends", [True, False])
def test_a_history_that_shares_a_prefix_goes_on_from_it_to_the_same_numbers(with_ends: bool) -> None:
    # The next playlist after the same plays and seeds: the stepper goes back to the shared
    # prefix instead of reading everything again, and gives what a fresh stepper gives.
    model = random_model(copy=True, features=3, window=64)
    stepper = ModelStepper(model)
    rng = np.random.default_rng(2)
    ctx = PlayContext(ts=1_700_011_000, tz="Europe/Berlin")
    base = rng.integers(100, 140, 12).tolist()
    histories = [
        base,
        [*base[:7], 7, 120, 121],  # goes back to 7 tracks, then a track outside the vocabulary
        [*base[:7], 7, 120, 122, 123],
        base[:3],  # shorter than what was fed
        [*base[:3], 130],
        [101, *base[1:6]],  # nothing shared
        [101, *base[1:6], 139],
    ]
    for h in histories:
        artists = [500 + t % 7 for t in h]
        ends = [1_700_000_000 + 300 * i for i in range(len(h))] if with_ends else None
        kw = {"history_artist_ids": artists, "history_end_ts": ends}
        got = stepper.next_scores(h, ctx, **kw)
        want = ModelStepper(model).next_scores(h, ctx, **kw)
        assert np.array_equal(got, want), h
        same_distribution(got, model.next_scores(h, ctx, **kw))
    # Other end times for the same tracks: read again from where they differ.
    h = histories[-1]
    ends = [1_700_000_000 + 300 * i + (5000 if i >= 4 else 0) for i in range(len(h))]
    kw = {"history_artist_ids": [500] * len(h), "history_end_ts": ends}
    want = ModelStepper(model).next_scores(h, ctx, **kw)
    assert np.array_equal(stepper.next_scores(h, ctx, **kw), want)
