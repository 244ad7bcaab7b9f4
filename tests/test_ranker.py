"""One path from ranking to playlist: the daemon's generator and `songnet eval` rank with the
same scorer on the same history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service import model_store
from service.db import open_database
from service.library import load_listens, load_tracks
from service.playlists import PlaylistGenerator, blend_weights
from service.settings import PlaylistConfig, load_settings
from service.training import listener_zone_name
from songnet_core.dataset import Vocabulary, build_sequence
from songnet_core.evaluate import ProtocolSplit, RankingLibrary, songnet_ranks
from songnet_core.generate import PlaylistRules, Sampling
from songnet_core.history import Listen
from songnet_core.rerank import RerankedNextTrack, Reranker
from tests.trained_library import partly_nameless_plays, train_library


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_library(tmp_path_factory.mktemp("trained"), partly_nameless_plays(n_artists=48, n_clusters=4, seed=11, every=4))


@pytest.mark.parametrize("seed_rank", [0, 5, 40])
def test_generators_first_greedy_pick_is_evals_top_1_for_the_same_prefix(trained: Path, seed_rank: int) -> None:
    engine = open_database(trained)
    settings = load_settings(data_dir=trained)
    stored = model_store.promoted_model(engine)
    assert stored is not None
    generator = PlaylistGenerator.from_promoted(engine, settings)
    weights = blend_weights(stored.metrics)
    reranker = Reranker.from_metrics(stored.metrics)
    # The daemon's scorer is the reranker the model was stored with (training fits one).
    assert reranker is not None and isinstance(generator.scorer, RerankedNextTrack)
    listens = load_listens(engine)
    tracks = load_tracks(engine)
    kept = [x for x in listens if x.ms_played >= settings.min_play_ms]
    by_plays = sorted({x.track_id for x in kept}, key=lambda t: (-sum(1 for x in kept if x.track_id == t), t))
    seed = tracks[by_plays[seed_rank]]
    now = max(x.end_ts for x in listens) + 6 * 3600  # a new session, after everything in the library
    # Rules that bind nothing but "not the seed again" (eval's "current track excluded").
    open_rules = PlaylistRules(max_per_artist=10, artist_window=2, no_back_to_back=False)
    config = PlaylistConfig(name="same path", seeds=[seed.uri or f"{seed.artist} - {seed.title}"], length=2)
    playlist = generator.generate(config, now=now, sampling=Sampling(temperature=0.0), rules=open_rules)
    first_pick = playlist.tracks[1].track_id
    assert playlist.tracks[0].track_id == seed.track_id and first_pick != seed.track_id

    # Eval: the library's plays, then a session of the seed and that pick; the pick is the target.
    last_id = max(x.play_id for x in listens)
    session = [
        Listen(play_id=last_id + 1, track_id=seed.track_id, artist_id=seed.artist_id, end_ts=now, ms_played=200_000),
        Listen(play_id=last_id + 2, track_id=first_pick, artist_id=tracks[first_pick].artist_id, end_ts=now + 200, ms_played=200_000),
    ]
    zone = listener_zone_name(settings)
    seq = build_sequence([*listens, *session], tz=zone, min_ms=settings.min_play_ms, gap_s=int(settings.session_gap_minutes * 60))
    last = seq.n_sessions - 1
    start = seq.session_bounds(last)[0]
    assert seq.track_ids[start:].tolist() == [seed.track_id, first_pick]
    split = ProtocolSplit(seq, last, np.asarray([start + 1]), Vocabulary.build(seq.prefix(last)))
    model = model_store.load_promoted(engine)
    assert model is not None
    ranks = songnet_ranks(RankingLibrary(seq, zone), model, weights or {"model": 1.0}, None, split, reranker=reranker)
    assert ranks["songnet"].tolist() == [1]
