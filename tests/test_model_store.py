"""Model storage: versions, one promoted at a time, pruning, the promotion rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service import model_store
from service.db import open_database
from service.model_store import decide_promotion


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = open_database(tmp_path)
    yield e
    e.dispose()


def test_promotion_rule_compares_on_the_same_split_with_tolerance() -> None:
    assert decide_promotion(0.10, None).promote
    assert decide_promotion(0.30, 0.25).promote
    assert decide_promotion(0.248, 0.25, tolerance=0.005).promote
    worse = decide_promotion(0.20, 0.25, tolerance=0.005)
    assert not worse.promote
    assert "0.2000" in worse.reason and "0.2500" in worse.reason and "keeping" in worse.reason


def test_versions_promotion_and_bytes_round_trip(engine: Engine) -> None:
    assert model_store.promoted_model(engine) is None
    assert model_store.load_promoted(engine) is None
    a = model_store.save_model(engine, b"first", {"val_hr@10": 0.2}, watermark_play_id=100, plays_trained=90, promote=True)
    b = model_store.save_model(engine, b"second", {"val_hr@10": 0.1}, watermark_play_id=150, plays_trained=140)
    promoted = model_store.promoted_model(engine)
    assert promoted is not None and promoted.id == a.id and promoted.metrics == {"val_hr@10": 0.2}
    found = model_store.promoted_checkpoint(engine)
    assert found is not None and found[1] == b"first"
    model_store.promote(engine, b.id)
    models = model_store.list_models(engine)
    assert [(m.id, m.promoted) for m in models] == [(b.id, True), (a.id, False)]
    assert models[0].watermark_play_id == 150 and models[0].plays_trained == 140 and models[0].size_bytes == 6
    with pytest.raises(KeyError):
        model_store.promote(engine, 999)
    # Saving a new promoted version demotes the old one in the same transaction.
    c = model_store.save_model(engine, b"third", {}, watermark_play_id=200, plays_trained=190, promote=True)
    assert [m.id for m in model_store.list_models(engine) if m.promoted] == [c.id]


def test_prune_keeps_the_newest_and_never_the_promoted(engine: Engine) -> None:
    ids = []
    for i in range(6):
        stored = model_store.save_model(engine, bytes([i]), {}, watermark_play_id=i, plays_trained=i, promote=(i == 1))
        ids.append(stored.id)
    pruned = model_store.prune(engine, keep=3)
    assert sorted(pruned) == [ids[0], ids[2]]
    remaining = {m.id for m in model_store.list_models(engine)}
    assert remaining == {ids[1], ids[3], ids[4], ids[5]}
    promoted = model_store.promoted_checkpoint(engine)
    assert promoted is not None and promoted[1] == bytes([1])
    assert model_store.prune(engine, keep=3) == []


def test_unloadable_promoted_checkpoint_is_reported_not_raised(engine: Engine) -> None:
    model_store.save_model(engine, b"not a checkpoint", {}, watermark_play_id=1, plays_trained=1, promote=True)
    assert model_store.load_promoted(engine) is None
