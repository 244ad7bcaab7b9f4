"""What is ranked is pinned: generation and evaluation give the same answers as the code that
produced the published evaluation reports. The fusion's pins were computed at 2c7347a, before
the speed-ups of issue 11 to loading and ranking; the daemon's playlist and `eval_reranked`
with the learned reranker (songnet_core/rerank.py), which the daemon ranks with since.

A change that moves any rank, breaks a tie another way or draws another track fails here.
A deliberate change of the ranking must regenerate docs/EVALUATION.md and
docs/PLAYLIST_QUALITY.md and then these pins (`snapshot` prints them:
`.venv/bin/python -m tests.test_ranking_pinned`).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import model_store
from service.db import open_database
from service.playlists import Library, PlaylistGenerator
from service.settings import PlaylistConfig, load_settings
from service.training import listener_zone_name
from songnet_core.blend import SCORERS, BlendedNextTrack
from songnet_core.dataset import Vocabulary, build_sequence
from songnet_core.evaluate import ProtocolSplit, RankingLibrary, songnet_ranks
from songnet_core.generate import GenerationContext, Sampling
from songnet_core.ranker import songnet_scorer
from songnet_core.rerank import Reranker
from tests.trained_library import partly_nameless_plays, train_library

EVERY = {"model": 0.2, "pop": 0.2, "markov": 0.2, "sknn": 0.2, "repeat": 0.2}
FUSION = {"model": 0.0, "pop": 0.25, "markov": 0.25, "sknn": 0.25, "repeat": 0.25}
# Ties everywhere: the model's list and session-kNN's count the same, popularity decides.
UNEVEN = {"model": 0.125, "pop": 0.125, "markov": 0.25, "sknn": 0.375, "repeat": 0.125}


def snapshot(data: Path) -> dict[str, Any]:
    """The daemon's playlist, the full ranker's playlists (sampled and greedy), its top lists
    at a few steps, and eval's ranks on the last sessions, for the library in `data`."""
    engine = open_database(data)
    settings = load_settings(data_dir=data)
    stored = model_store.promoted_model(engine)
    model = model_store.load_promoted(engine)
    assert stored is not None and model is not None
    now = 1_750_000_000
    out: dict[str, Any] = {}
    daemon = PlaylistGenerator.from_promoted(engine, settings)
    seeds = daemon.default_seeds()
    config = PlaylistConfig(name="pinned", seeds=seeds, length=50)
    playlist = daemon.generate(config, now=now, rng_seed=7)
    out["daemon"] = [t.track_id for t in playlist.tracks]
    # What a listener reads: names, URIs and reasons (from the library's transitions and features).
    shown = repr([(t.artist, t.title, t.uri, t.reason, t.is_seed) for t in playlist.tracks])
    out["daemon_shown"] = hashlib.sha256(shown.encode()).hexdigest()

    library = Library.load(engine, settings)
    zone = listener_zone_name(settings)
    for label, weights in (("every", EVERY), ("uneven", UNEVEN)):
        scorer = songnet_scorer(
            model, library.history(settings), weights, artist_of=library.artist_of, zone_name=zone
        )
        generator = PlaylistGenerator(library, scorer, zone=settings.zone, model_version=stored.id)
        sampled = generator.generate(config, now=now, rng_seed=11)
        greedy = generator.generate(
            config, now=now, rng_seed=11, sampling=Sampling(temperature=0.0)
        )
        out[f"{label}_sampled"] = [t.track_id for t in sampled.tracks]
        out[f"{label}_greedy"] = [t.track_id for t in greedy.tracks]
        context = GenerationContext.at(now, settings.zone)
        ids = out[f"{label}_sampled"]
        tops = []
        for n in (1, 3, 4, 20, 49):
            scores = np.asarray(scorer.scores(ids[:n], context), dtype=np.float64)
            tops.append([int(t) for t in np.argsort(-scores, kind="stable")[:25]])
        out[f"{label}_tops"] = tops
        # Each scorer's own top list (ties broken by popularity, then id) at a few steps.
        assert isinstance(scorer, BlendedNextTrack)
        lists = [
            {k: v.tolist() for k, v in scorer.lists(ids[:n], context).items()}
            for n in (1, 4, 30, 49)
        ]
        out[f"{label}_lists"] = hashlib.sha256(repr(lists).encode()).hexdigest()

    listens = library.listens
    seq = build_sequence(
        listens, tz=zone, min_ms=settings.min_play_ms, gap_s=int(settings.session_gap_minutes * 60)
    )
    first = seq.n_sessions - 4
    start = seq.session_bounds(first)[0]
    positions = np.asarray(
        [p for p in range(start + 1, len(seq)) if seq.session[p] == seq.session[p - 1]],
        dtype=np.int64,
    )
    split = ProtocolSplit(seq, first, positions, Vocabulary.build(seq.prefix(first)))
    ranks = songnet_ranks(RankingLibrary(seq, zone), model, EVERY, FUSION, split)
    out["eval"] = {name: r.tolist() for name, r in sorted(ranks.items())}
    # The learned reranker the daemon ranks with (fitted in training), and one over the
    # baselines' lists alone, on the same steps.
    reranker = Reranker.from_metrics(stored.metrics)
    assert reranker is not None
    baselines_only = Reranker(SCORERS[1:], {"markov_rr": 10.0, "sknn_listed": 1.0, "log_follows": 1.0, "in_prefix": -1.0})
    reranked = songnet_ranks(
        RankingLibrary(seq, zone), model, EVERY, FUSION, split, reranker=reranker, fusion_reranker=baselines_only
    )
    out["eval_reranked"] = {name: r.tolist() for name, r in sorted(reranked.items())}
    engine.dispose()
    return out


PINNED: dict[str, Any] = {'daemon': [6, 28, 104, 109, 179, 103, 26, 43, 221, 3, 216, 173, 68, 46, 19, 36, 78, 79, 97, 434, 133, 111, 299, 29, 33,
            64, 8, 25, 106, 85, 254, 62, 100, 130, 53, 21, 32, 107, 37, 80, 12, 269, 63, 131, 336, 139, 189, 110, 213,
            51],
 'daemon_shown': '841904b585f31e1766807d663121c09a8a296392593618f1454836ed7aa6ac61',
 'eval': {'fusion': [109, 129, 252, 36, 1, 25, 6, 43, 135, 168, 114, 102, 51, 16, 88, 46, 9, 2, 3, 9, 182, 100, 4, 17,
                     113, 66, 98, 277, 1, 170, 251, 47, 11, 30, 3, 81, 204, 18, 20, 63, 323, 15],
          'model': [58, 107, 243, 30, 1, 32, 16, 43, 116, 154, 93, 67, 9, 15, 166, 54, 15, 3, 3, 14, 166, 61, 1, 5, 91,
                    54, 62, 277, 1, 156, 250, 32, 10, 32, 7, 85, 201, 92, 111, 24, 315, 42],
          'songnet': [109, 129, 252, 35, 1, 25, 6, 45, 135, 168, 114, 102, 30, 12, 91, 51, 10, 2, 3, 12, 182, 100, 3, 9,
                      113, 67, 98, 277, 1, 170, 251, 42, 12, 29, 4, 83, 204, 23, 30, 46, 323, 16]},
 'eval_reranked': {'fusion': [109, 129, 252, 22, 6, 7, 6, 46, 135, 168, 114, 102, 42, 13, 52, 23, 2, 5, 2, 4, 182, 100,
                              3, 19, 113, 65, 98, 277, 45, 170, 251, 32, 2, 26, 7, 47, 204, 2, 1, 83, 323, 19],
                   'model': [58, 107, 243, 30, 1, 32, 16, 43, 116, 154, 93, 67, 9, 15, 166, 54, 15, 3, 3, 14, 166, 61,
                             1, 5, 91, 54, 62, 277, 1, 156, 250, 32, 10, 32, 7, 85, 201, 92, 111, 24, 315, 42],
                   'songnet': [109, 129, 252, 32, 8, 3, 9, 74, 135, 168, 114, 102, 43, 13, 89, 47, 9, 2, 1, 10, 182,
                               100, 5, 20, 113, 5, 98, 277, 1, 170, 251, 39, 1, 6, 1, 59, 204, 12, 1, 49, 323, 24]},
 'every_greedy': [6, 28, 104, 109, 64, 12, 43, 3, 216, 106, 62, 97, 21, 139, 33, 29, 26, 103, 51, 19, 78, 25, 100, 207,
                  233, 63, 48, 46, 37, 8, 32, 36, 117, 157, 375, 381, 122, 198, 213, 86, 305, 107, 23, 173, 77, 314,
                  130, 131, 49, 70],
 'every_lists': '3d44f8208365e65b6e060873ea0820fcee1a61e80b38ca91b17571d91a6d3c8e',
 'every_sampled': [6, 28, 104, 12, 77, 109, 3, 33, 216, 21, 43, 146, 106, 62, 97, 139, 29, 26, 103, 96, 78, 107, 64,
                   182, 25, 100, 51, 19, 48, 46, 131, 49, 36, 32, 63, 8, 402, 173, 14, 213, 86, 305, 23, 7, 88, 65, 108,
                   314, 130, 70],
 'every_tops': [[109, 12, 104, 28, 64, 43, 78, 100, 3, 216, 33, 213, 117, 25, 111, 68, 62, 73, 21, 77, 106, 48, 292,
                 133, 233],
                [6, 28, 64, 109, 100, 12, 43, 3, 21, 33, 77, 216, 78, 103, 25, 54, 106, 62, 68, 111, 23, 37, 207, 48,
                 97],
                [6, 28, 104, 109, 64, 100, 43, 3, 77, 21, 25, 33, 216, 111, 78, 106, 62, 23, 130, 103, 37, 73, 29, 48,
                 213],
                [6, 28, 109, 106, 12, 64, 43, 104, 62, 3, 29, 216, 97, 103, 33, 100, 139, 77, 21, 26, 32, 78, 25, 48,
                 146],
                [6, 28, 109, 64, 12, 104, 43, 3, 48, 78, 100, 23, 106, 65, 62, 49, 25, 216, 33, 97, 8, 29, 77, 173,
                 131]],
 'uneven_greedy': [6, 28, 104, 109, 64, 12, 62, 97, 43, 3, 216, 106, 33, 96, 21, 139, 207, 29, 103, 51, 78, 25, 100, 26,
                   68, 218, 32, 213, 130, 131, 48, 46, 35, 349, 36, 107, 146, 164, 8, 242, 380, 70, 65, 108, 233, 63,
                   262, 47, 37, 226],
 'uneven_lists': 'b880ec307caa99a0050a361458381042ec43ecb8fe3cf5cd53846d5e92bbfa0a',
 'uneven_sampled': [6, 28, 104, 12, 77, 109, 3, 33, 130, 21, 43, 146, 106, 62, 97, 164, 29, 26, 103, 96, 78, 107, 64,
                    182, 25, 100, 51, 19, 189, 48, 139, 216, 16, 117, 36, 32, 267, 299, 8, 242, 46, 213, 23, 7, 88, 65,
                    113, 133, 207, 37],
 'uneven_tops': [[109, 12, 28, 78, 104, 64, 43, 213, 73, 33, 111, 3, 25, 62, 216, 133, 100, 72, 32, 48, 233, 117, 29,
                  292, 68],
                 [6, 28, 64, 109, 100, 12, 43, 78, 33, 54, 25, 111, 103, 62, 3, 106, 207, 77, 216, 68, 21, 97, 23, 29,
                  37],
                 [6, 28, 104, 109, 64, 100, 25, 43, 78, 33, 111, 62, 77, 106, 73, 3, 29, 130, 213, 21, 97, 216, 103, 23,
                  48],
                 [6, 28, 109, 106, 12, 64, 104, 43, 62, 3, 164, 130, 29, 33, 97, 103, 100, 77, 32, 21, 78, 216, 26, 48,
                  23],
                 [6, 28, 109, 64, 12, 104, 43, 106, 62, 100, 78, 3, 25, 48, 23, 97, 233, 216, 107, 65, 33, 130, 77, 29,
                  103]]}  # fmt: skip


@pytest.fixture(scope="module")
def pinned_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_library(
        tmp_path_factory.mktemp("pinned"),
        partly_nameless_plays(n_artists=48, n_clusters=4, seed=11, every=4),
    )


@pytest.fixture(scope="module")
def got(pinned_library: Path) -> dict[str, Any]:
    return snapshot(pinned_library)


@pytest.mark.parametrize("key", sorted(PINNED))
def test_rankings_are_those_the_reports_were_made_with(got: dict[str, Any], key: str) -> None:
    assert got[key] == PINNED[key]


def test_the_pins_are_a_real_check(got: dict[str, Any]) -> None:
    # Full playlists, ties at stake in the greedy ones, and eval ranks that vary.
    assert set(got) == set(PINNED)
    assert all(
        len(got[k]) == 50
        for k in ("daemon", "every_sampled", "every_greedy", "uneven_sampled", "uneven_greedy")
    )
    assert got["every_sampled"] != got["every_greedy"]
    assert len(set(got["eval"]["songnet"])) > 3


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        data = train_library(
            Path(tmp), partly_nameless_plays(n_artists=48, n_clusters=4, seed=11, every=4)
        )
        sys.stdout.write(repr(snapshot(data)) + "\n")
