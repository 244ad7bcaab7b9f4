"""A small synthetic library with a tiny trained, promoted model: for CLI tests of what reads
the model (generate, sync). Trained once per test module, copied for each test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from service import training
from service.db import backup_database, database_path, open_database
from service.settings import load_settings
from songnet_core.history import Play
from songnet_core.synthetic import SyntheticConfig, generate_plays
from songnet_core.train import TrainConfig
from tests.library_rows import store_plays

TINY = TrainConfig(dim=16, hidden=32, window=64, batch_size=16, max_epochs=2, patience=1, threads=1, seed=0)


def partly_nameless_plays(*, n_artists: int, n_clusters: int, seed: int, every: int) -> list[Play]:
    """2,500 synthetic plays; one artist in `every` is known only by name (account-data style)."""
    plays = generate_plays(SyntheticConfig(n_plays=2500, n_artists=n_artists, n_clusters=n_clusters, seed=seed))
    nameless = set(sorted({p.artist for p in plays})[::every])
    return [dataclasses.replace(p, uri=None) if p.artist in nameless else p for p in plays]


def train_library(data: Path, plays: list[Play]) -> Path:
    """`plays` stored in a new database in `data` and a TINY model trained and promoted."""
    engine = open_database(data)
    store_plays(engine, plays)
    outcome = training.train_and_maybe_promote(engine, load_settings(data_dir=data), config=TINY)
    assert outcome.promoted, outcome.reason
    engine.dispose()
    return data


def copy_library(trained: Path, target: Path) -> Path:
    backup_database(database_path(trained), database_path(target))
    return target
