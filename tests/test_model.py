"""The model module and its checkpoints, on tiny random instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from songnet_core.dataset import N_CONTEXT, Vocabulary, build_sequence
from songnet_core.model import (
    Batch,
    Candidates,
    CheckpointError,
    ModelConfig,
    PlayContext,
    SongNet,
    bucket_bias,
    load_checkpoint,
    log_bucket,
    log_bucket_bounds,
    sample_candidates,
    save_checkpoint,
)
from tests.test_evaluate import history

C, OWN, ARTISTS = 12, 6, 4


def tiny(copy: bool = True, features: int = 0, memory: int = 0) -> SongNet:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_classes=C, n_own=OWN, n_artists=ARTISTS, n_context=N_CONTEXT, n_track_features=features,
        dim=8, hidden=16, dropout=0.0, copy=copy, memory=memory,
    )  # fmt: skip
    own = torch.tensor([1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0])
    artist = torch.tensor([1, 1, 2, 2, 3, 3, 1, 2, 3, 0, 1, 2])
    feats = torch.rand(C, features) if features else None
    return SongNet(cfg, own, artist, feats).eval()


def batch(b: int = 2, t: int = 7, seed: int = 0, memory: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    n = memory + t
    cls = torch.randint(-1, C, (b, n), generator=g)
    own = torch.where(cls >= 0, torch.randint(0, OWN, (b, n), generator=g), 0)
    artist = torch.randint(0, ARTISTS, (b, n), generator=g)
    hours = torch.rand(b, n, generator=g).mul(30).cumsum(1)
    return Batch(cls, own, artist, torch.randn(b, n, N_CONTEXT, generator=g), hours, memory)


@pytest.mark.parametrize(("copy", "memory"), [(True, 0), (True, 5), (False, 0)])
@pytest.mark.parametrize("features", [0, 3])
def test_log_probabilities_are_normalised_and_match_the_loss(copy: bool, memory: int, features: int) -> None:
    model = tiny(copy, features, memory)
    x = batch(memory=memory)
    logp, loss = model(x)
    assert loss is None and logp is not None
    assert logp.shape == (2, 7, C)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 7), atol=1e-4)
    targets = torch.randint(0, C, (2, 7), generator=torch.Generator().manual_seed(3))
    targets[0, 0] = -1  # ignored
    _, loss = model(x, targets)
    assert loss is not None
    keep = targets >= 0
    expected = -logp.gather(2, targets.clamp(min=0)[..., None]).squeeze(-1)[keep].mean()
    assert torch.allclose(loss, expected, atol=1e-4)


def test_predictions_depend_only_on_the_past() -> None:
    model = tiny(memory=3)
    x = batch(b=1, t=6, memory=3)
    changed = Batch(x.cls.clone(), x.own.clone(), x.artist.clone(), x.context.clone(), x.hours.clone(), 3)
    changed.cls[0, 7:] = torch.tensor([3, 4])
    changed.own[0, 7:] = torch.tensor([1, 2])
    changed.context[0, 7:] += 1.0
    changed.hours[0, 7:] += 100.0
    a, _ = model(x)
    b, _ = model(changed)
    assert a is not None and b is not None
    assert a.shape == (1, 6, C)  # predictions for the window only
    assert torch.allclose(a[0, :4], b[0, :4], atol=1e-6)
    assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_memory_is_read_by_the_copy_expert_only() -> None:
    model = tiny(memory=4)
    x = batch(b=1, t=3, memory=4)
    with torch.no_grad():
        model.gate.bias.fill_(-20.0)  # all weight on copying
    x.cls[0, :4] = torch.tensor([5, 5, 6, -1])
    logp, _ = model(x)
    assert logp is not None
    p = logp[0, 0].exp()
    # The first window step can copy the memory's tracks and its own, nothing else.
    allowed = {5, 6, int(x.cls[0, 4])} - {-1}
    assert torch.isclose(p[sorted(allowed)].sum(), torch.tensor(1.0), atol=1e-4)


def test_copy_expert_puts_mass_on_tracks_in_the_window() -> None:
    model = tiny(copy=True)
    with torch.no_grad():
        model.gate.bias.fill_(-20.0)  # all weight on copying
    x = batch(b=1, t=5)
    x.cls[0] = torch.tensor([2, 7, -1, 9, 7])
    x.own[0] = torch.tensor([1, 2, 0, 3, 2])
    logp, _ = model(x)
    assert logp is not None
    p = logp[0, -1].exp()
    assert torch.isclose(p[[2, 7, 9]].sum(), torch.tensor(1.0), atol=1e-4)
    # The first step can copy only its own track.
    assert torch.isclose(logp[0, 0].exp()[2], torch.tensor(1.0), atol=1e-4)


def test_gradients_reach_every_parameter() -> None:
    model = tiny(copy=True, features=3, memory=2).train()
    _, loss = model(batch(memory=2), torch.randint(0, C, (2, 7)))
    assert loss is not None
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_checkpoint_round_trip_scores_the_same() -> None:
    seq = build_sequence(history([[1, 2, 3], [2, 3, 4], [1, 3, 5]]))
    vocab = Vocabulary.build(seq, min_count=2)
    cfg = ModelConfig(n_classes=vocab.n_classes, n_own=vocab.n_own, n_artists=vocab.n_artists, n_context=N_CONTEXT, dim=8, hidden=8)
    model = SongNet(cfg, torch.from_numpy(vocab.own), torch.from_numpy(vocab.artist)).eval()
    data = save_checkpoint(model, vocab, {"val_hr@10": 0.5}, window=32, info={"note": "test"})
    loaded = load_checkpoint(data)
    assert loaded.metrics == {"val_hr@10": 0.5} and loaded.window == 32 and loaded.info == {"note": "test"}
    assert loaded.track_ids.tolist() == vocab.track_ids.tolist()
    ctx = PlayContext(ts=1_700_000_000, tz="Europe/Berlin")
    s = loaded.next_scores([1, 2], ctx)
    assert s.shape == (vocab.n_classes,)
    assert np.isclose(np.exp(s).sum(), 1.0, atol=1e-4)
    from songnet_core.model import LoadedModel

    again = LoadedModel(model, vocab, 32, {}, {}).next_scores([1, 2], ctx)
    assert np.allclose(s, again, atol=1e-6)
    # A track that is not a class still reads as context through its artist.
    unknown = loaded.next_scores([1, 99], ctx, history_artist_ids=[1, 2])
    assert unknown.shape == s.shape and not np.allclose(unknown, loaded.next_scores([1, 99], ctx))
    # Real play times may be given; they change the context the model reads.
    timed = loaded.next_scores([1, 2], ctx, history_end_ts=[ctx.ts - 86_400, ctx.ts])
    assert timed.shape == s.shape and not np.allclose(timed, s)


def test_next_scores_uses_the_hour_of_the_context() -> None:
    seq = build_sequence(history([[1, 2, 3], [2, 3, 4]]))
    vocab = Vocabulary.build(seq, min_count=1)
    cfg = ModelConfig(n_classes=vocab.n_classes, n_own=vocab.n_own, n_artists=vocab.n_artists, n_context=N_CONTEXT, dim=8, hidden=8, dropout=0.0)
    torch.manual_seed(0)
    model = SongNet(cfg, torch.from_numpy(vocab.own), torch.from_numpy(vocab.artist))
    loaded = load_checkpoint(save_checkpoint(model, vocab, {}, window=16))
    morning = loaded.next_scores([1, 2], PlayContext(ts=1_700_000_000 - 6 * 3600))
    evening = loaded.next_scores([1, 2], PlayContext(ts=1_700_000_000))
    assert not np.allclose(morning, evening)


@pytest.mark.parametrize("data", [b"", b"not a checkpoint", b"PK\x03\x04garbage"])
def test_foreign_bytes_are_a_clear_error(data: bytes) -> None:
    with pytest.raises(CheckpointError):
        load_checkpoint(data)


def test_next_scores_needs_history() -> None:
    seq = build_sequence(history([[1, 2], [2, 1]]))
    vocab = Vocabulary.build(seq, min_count=1)
    cfg = ModelConfig(n_classes=vocab.n_classes, n_own=vocab.n_own, n_artists=vocab.n_artists, n_context=N_CONTEXT, dim=4, hidden=4)
    loaded = load_checkpoint(save_checkpoint(SongNet(cfg, torch.from_numpy(vocab.own), torch.from_numpy(vocab.artist)), vocab, {}, window=8))
    with pytest.raises(ValueError, match="history"):
        loaded.next_scores([])


@pytest.mark.parametrize(("copy", "memory"), [(True, 0), (True, 5), (False, 0)])
def test_a_softmax_over_candidates_that_are_every_class_is_the_full_loss(copy: bool, memory: int) -> None:
    model = tiny(copy, 3, memory)
    x = batch(memory=memory)
    targets = torch.randint(0, C, (2, 7), generator=torch.Generator().manual_seed(3))
    targets[1, 2] = -1
    _, full = model(x, targets)
    # Candidates in another order than the classes, each standing for itself.
    order = torch.randperm(C, generator=torch.Generator().manual_seed(1))
    where = torch.empty(C, dtype=torch.long)
    where[order] = torch.arange(C)
    every = Candidates(order, torch.zeros(C), where[targets.clamp(min=0)])
    _, sampled = model(x, targets, candidates=every)
    assert full is not None and sampled is not None
    assert torch.allclose(full, sampled, atol=1e-5)


def test_sampled_candidates_hold_every_target_and_stand_for_the_other_classes() -> None:
    torch.manual_seed(0)
    targets = torch.tensor([[3, 7, 7, -1], [40, 3, 99, 12]])
    c = sample_candidates(targets, 100, negatives=10)
    valid = targets >= 0
    assert torch.equal(c.classes[c.target_index][valid], targets[valid])
    n_targets = int(c.log_weight.eq(0).sum())
    drawn = c.classes[n_targets:]
    assert len(drawn) == 10 and not set(drawn.tolist()) & set(targets[valid].tolist())
    # Each negative stands for (classes that are not targets) / draws: 94 / 10 (class 0 comes
    # in with the padding's -1 and counts as a target).
    assert n_targets == 6 and torch.allclose(c.log_weight[n_targets:], torch.full((10,), np.log(94 / 10)))
    # Few classes left: as many draws as there are classes beside the targets.
    few = sample_candidates(torch.tensor([[0, 1, 2]]), 5, negatives=10)
    assert len(few.classes) == 5 and set(few.classes.tolist()) == set(range(5))


def test_scoring_from_a_later_step_gives_the_same_rows() -> None:
    model = tiny(True, 3, memory=5)
    x = batch(memory=5)
    with torch.no_grad():
        whole, _ = model(x)
        later, _ = model(x, first=4)
    assert whole is not None and later is not None
    assert later.shape == (2, 3, C) and torch.allclose(whole[:, 4:], later, atol=1e-5)


def test_bucket_bias_gives_an_embeddings_values_and_gradients() -> None:
    torch.manual_seed(0)
    table = nn.Embedding(24, 1)
    index = torch.randint(0, 24, (3, 7, 50))
    index[0, 0, :5] = 23  # repeats and a bucket no other entry uses
    index[1] = 4
    upstream = torch.randn(index.shape)
    mine = bucket_bias(table, index)
    (mine * upstream).sum().backward()
    assert table.weight.grad is not None
    got = table.weight.grad.clone()
    table.weight.grad = None
    plain = table(index).squeeze(-1)
    (plain * upstream).sum().backward()
    assert torch.equal(mine, plain)
    torch.testing.assert_close(got, table.weight.grad)


HOURS_BOUNDS = log_bucket_bounds(4.0, 1.0, 24)


def _floats_beside(bound: float, n: int) -> list[float]:
    """`bound` and the `n` float32 values on either side of it."""
    out, below, above = [bound], torch.tensor(bound), torch.tensor(bound)
    for _ in range(n):
        below, above = torch.nextafter(below, torch.tensor(-1.0e30)), torch.nextafter(above, torch.tensor(1.0e30))
        out += [below.item(), above.item()]
    return out


def test_bucketize_over_the_bounds_is_log_bucket_at_every_float_beside_a_bound() -> None:
    for bound in HOURS_BOUNDS.tolist():
        hours = torch.tensor(_floats_beside(bound, 40), dtype=torch.float32)
        assert torch.equal(torch.bucketize(hours, HOURS_BOUNDS, right=True), log_bucket(hours * 4.0, 1.0, 24))
    steps = log_bucket_bounds(1.0, 2.0, 26)
    assert len(steps) == 25 and bool((steps[1:] > steps[:-1]).all())


@given(st.lists(st.floats(min_value=-1e3, max_value=1e7, width=32), min_size=1, max_size=50))
def test_bucketize_over_the_bounds_is_log_bucket(hours: list[float]) -> None:
    h = torch.tensor(hours, dtype=torch.float32)
    assert torch.equal(torch.bucketize(h, HOURS_BOUNDS, right=True), log_bucket(h * 4.0, 1.0, 24))
