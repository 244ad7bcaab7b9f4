"""Model storage: versions, one promoted at a time, pruning, the promotion rule."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
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


# --- Training end to end: store, compare on the same split, promote or keep, prune ----------

from service.settings import load_settings  # noqa: E402
from service.training import TrainingError, train_and_maybe_promote  # noqa: E402
from songnet_core.synthetic import SyntheticConfig, generate_plays  # noqa: E402
from songnet_core.train import TrainConfig  # noqa: E402
from tests.conftest import logged  # noqa: E402
from tests.library_rows import store_plays  # noqa: E402

TINY = TrainConfig(dim=16, hidden=32, window=64, batch_size=16, max_epochs=2, patience=1, threads=1, seed=0, refit=False)


@pytest.fixture(scope="module")
def trained_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic library of 2,500 plays and its first promoted model (shared, copied per test)."""
    data = tmp_path_factory.mktemp("library")
    e = open_database(data)
    store_plays(e, generate_plays(SyntheticConfig(n_plays=2500, n_artists=40, n_clusters=4, seed=5)))
    first = train_and_maybe_promote(e, load_settings(data_dir=data, timezone="Europe/Berlin"), config=TINY)
    assert first.promoted and first.reason == "no promoted model yet"
    e.dispose()
    return data


def copy_library(src: Path, dst: Path) -> Engine:
    from service.db import backup_database, database_path

    backup_database(database_path(src), database_path(dst))
    return open_database(dst)


def test_equal_model_is_promoted_and_worse_model_is_kept_out(
    trained_library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import training

    engine = copy_library(trained_library, tmp_path)
    s = load_settings(data_dir=tmp_path, timezone="Europe/Berlin")
    first = model_store.promoted_model(engine)
    assert first is not None and "trained_until_ts" in first.metrics
    assert first.metrics["promotion_compared"] == "none"  # nothing to compare with
    # Same data and seed: the same model, equal on the same steps, so promoted.
    same = train_and_maybe_promote(engine, s, config=TINY)
    assert same.promoted and same.compared == "ranker"
    assert same.compared_steps > 30
    assert same.current_hr10 == pytest.approx(same.new_hr10_same_steps)
    # Untrained weights ranking alone (the blend giving the baselines no share): its full
    # ranker is far worse than the promoted one's on the same steps, so the promoted model stays.
    monkeypatch.setattr(training, "_blend_weights", lambda *args, **kwargs: {"blend_model": 1.0})
    broken = train_and_maybe_promote(engine, s, config=TrainConfig(**{**TINY.__dict__, "lr": 1e-9, "max_epochs": 1}))
    assert not broken.promoted
    assert broken.current_hr10 is not None and broken.new_hr10_same_steps is not None
    assert broken.new_hr10_same_steps < broken.current_hr10 - 0.005
    assert "keeping the promoted model" in broken.reason
    versions = model_store.list_models(engine)
    assert [m.id for m in versions if m.promoted] == [same.model_version]
    assert versions[0].id == broken.model_version and versions[0].note == broken.reason
    assert versions[0].metrics["promotion_compared"] == "ranker"
    assert model_store.load_promoted(engine) is not None
    engine.dispose()


def test_training_prunes_old_versions_and_a_stop_stores_nothing(trained_library: Path, tmp_path: Path) -> None:
    engine = copy_library(trained_library, tmp_path)
    s = load_settings(data_dir=tmp_path, timezone="Europe/Berlin")  # as the first model: the same model again
    before = model_store.list_models(engine)
    stopped = train_and_maybe_promote(engine, s, config=TINY, should_stop=lambda: True)
    assert stopped.stopped and stopped.model_version is None
    assert model_store.list_models(engine) == before
    one = train_and_maybe_promote(engine, s, config=TINY, keep=2)
    two = train_and_maybe_promote(engine, s, config=TINY, keep=2)
    assert one.promoted and two.promoted and one.pruned == []
    assert two.pruned == [before[0].id]
    ids = [m.id for m in model_store.list_models(engine)]
    assert ids == [two.model_version, one.model_version]
    engine.dispose()


def test_training_without_plays_says_what_to_do(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="songnet import"):
        train_and_maybe_promote(engine, load_settings(data_dir=tmp_path), config=TINY)


def test_refitted_models_are_compared_as_they_were_before_their_refit(trained_library: Path, tmp_path: Path) -> None:
    engine = copy_library(trained_library, tmp_path)
    s = load_settings(data_dir=tmp_path, timezone="Europe/Berlin")
    refit = dataclasses.replace(TINY, refit=True)
    second = train_and_maybe_promote(engine, s, config=refit)
    assert second.promoted and second.model_version is not None
    # The refit model learned the validation sessions too; the row keeps the model before it.
    served = model_store.load_model(engine, second.model_version)
    before_refit = model_store.load_validation_model(engine, second.model_version)
    assert served is not None and before_refit is not None
    assert not torch.equal(served.module.bias, before_refit.module.bias)
    assert second.metrics["trained_until_ts"] > second.metrics["validation_trained_until_ts"]
    # Same data and seed: the models before refit are the same, so they tie on the same steps.
    third = train_and_maybe_promote(engine, s, config=refit)
    assert third.promoted and third.compared_steps > 30
    assert third.current_hr10 == pytest.approx(third.new_hr10_same_steps)
    engine.dispose()


def test_a_training_cut_short_by_its_budget_says_so_and_how_to_train_longer(
    trained_library: Path, tmp_path: Path, logs: io.StringIO
) -> None:
    engine = copy_library(trained_library, tmp_path)
    s = load_settings(data_dir=tmp_path, timezone="Europe/Berlin")
    # A budget spent at once: the fit ends after its first epoch of two.
    outcome = train_and_maybe_promote(engine, s, config=dataclasses.replace(TINY, time_budget_s=1e-9))
    assert not outcome.stopped and outcome.epochs == 1
    assert outcome.metrics["budget_stopped"] == 1.0
    (warning,) = logged(logs, "training cut short by its time budget")
    assert warning["epochs"] == 1 and warning["refit"] is False
    assert "SONGNET_TRAIN_TIME_BUDGET_SECONDS" in warning["hint"]
    assert outcome.metrics["fit_epochs"] == 1.0
    engine.dispose()
    # `songnet status` says so for that model, promoted or not, and what to change.
    from typer.testing import CliRunner

    from service.cli import app

    args = ["--data-dir", str(tmp_path)]
    report = json.loads(CliRunner().invoke(app, [*args, "status", "--json"]).stdout)
    shown = [m for m in (report["model"], report["latest_candidate"]) if m and m["version"] == outcome.model_version]
    (model,) = shown
    assert "cut short by its time budget after 1 epoch," in model["budget_stopped"]
    assert "SONGNET_TRAIN_TIME_BUDGET_SECONDS" in model["budget_stopped"]
    human = CliRunner().invoke(app, [*args, "status"])
    assert human.exit_code == 0 and "training was cut short by its time budget after 1 epoch" in human.output
    # A training that ran to its end says nothing of the kind.
    (tmp_path / "full").mkdir()
    engine = copy_library(trained_library, tmp_path / "full")
    full = train_and_maybe_promote(engine, load_settings(data_dir=tmp_path / "full"), config=TINY)
    engine.dispose()
    assert "budget_stopped" not in full.metrics or not full.metrics["budget_stopped"]
    report = json.loads(CliRunner().invoke(app, ["--data-dir", str(tmp_path / "full"), "status", "--json"]).stdout)
    assert all(m is None or m["budget_stopped"] is None for m in (report["model"], report["latest_candidate"]))
