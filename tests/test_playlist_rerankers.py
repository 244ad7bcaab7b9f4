"""The playlist rerankers tried on validation (scripts/playlist_quality.py --rerankers): their
fitting steps are what each variant says they are, on a small made-up history."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from playlist_quality import variant_rerankers, variant_steps

from songnet_core.dataset import build_sequence, target_positions
from songnet_core.evaluate import RankingLibrary, protocol_split, protocol_training_data
from songnet_core.history import Listen
from songnet_core.rerank import Reranker
from songnet_core.train import TrainConfig, train, validation_halves

CFG = TrainConfig(dim=8, hidden=16, window=32, batch_size=8, max_epochs=1, min_steps=4, threads=1, seed=0)


def album_listening(n_sessions: int = 400, seed: int = 0) -> list[Listen]:
    """Sessions that walk through 10 albums of 4 tracks (artist = album), 3 h apart."""
    rng = np.random.default_rng(seed)
    out: list[Listen] = []
    t = 1_700_000_000
    for _ in range(n_sessions):
        album = int(rng.integers(0, 10))
        for _ in range(int(rng.integers(5, 9))):
            track = album * 4 + int(rng.integers(0, 4))
            out.append(Listen(play_id=len(out) + 1, track_id=track + 1, artist_id=album + 1, end_ts=t, ms_played=200_000))
            t += 240
            if rng.random() < 0.3:
                album = (album + 1) % 10
        t += 3 * 3600
    return out


@pytest.fixture(scope="module")
def fitted() -> tuple[RankingLibrary, object, np.ndarray]:
    listens = album_listening()
    split = protocol_split(build_sequence(listens, tz="UTC"), validation_share=CFG.val_share)
    n_train = split.first_test_session
    result = train(CFG, protocol_training_data(listens, split, CFG, "UTC"))
    assert result.validation_model is not None
    _, weights_first = validation_halves(n_train, CFG.val_share)
    return RankingLibrary(split.seq, "UTC"), result.validation_model, target_positions(split.seq, weights_first, n_train)


def test_rules_steps_hold_only_candidates_the_playlist_rules_allow(fitted: tuple) -> None:
    library, model, positions = fitted
    steps = variant_steps(library, model, positions, ("rules", "session@3"))
    cols = Reranker(("model", "pop", "markov", "sknn", "repeat"), {}).columns()
    in_prefix, same_artist = cols.index("in_prefix"), cols.index("same_artist")
    rules = steps["rules"]
    assert len(rules) == len(positions)
    for s in rules:
        assert not s.x[:, in_prefix].any() and not s.x[:, same_artist].any()
    # Album listening: most next tracks are by the current artist, which a playlist never plays next.
    assert sum(s.target >= 0 for s in rules) < 0.5 * len(rules)
    session = steps["session@3"]
    multi = [s for s in session if s.target >= 0]
    assert multi and all(len(s.also) <= 2 for s in multi) and any(s.also for s in multi)
    for s in multi:  # targets are distinct rows, none of them already in the playlist
        rows = (s.target, *s.also)
        assert len(set(rows)) == len(rows) and not s.x[list(rows), in_prefix].any()


def test_each_variant_fits_a_reranker_over_every_list(fitted: tuple) -> None:
    library, model, positions = fitted
    weights = {"model": 0.2, "pop": 0.2, "markov": 0.2, "sknn": 0.2, "repeat": 0.2}
    out = variant_rerankers(library, model, positions, weights, ("rules", "session@3", "session@20"))
    assert set(out) == {"rules", "session@3", "session@20"}
    for r in out.values():
        assert r is not None and r.lists == ("model", "pop", "markov", "sknn", "repeat")
        assert np.isfinite(r.vector()).all()
    # The rules variant never sees a candidate by the current artist: that feature has no weight.
    assert out["rules"].weights["same_artist"] == 0.0
