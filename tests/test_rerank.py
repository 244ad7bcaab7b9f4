"""The learned reranker (songnet_core/rerank.py): its counts, its fit, and the daemon ranking with
the reranker its model was stored with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import model_store
from service.db import open_database
from service.playlists import PlaylistGenerator
from service.settings import PlaylistConfig, load_settings
from songnet_core.blend import SCORERS
from songnet_core.generate import GenerationContext
from songnet_core.rerank import (
    CANDIDATE_FEATURES,
    DAY,
    MIN_FIT_STEPS,
    NEVER_HOURS,
    FitStep,
    PlayIndex,
    RerankedNextTrack,
    Reranker,
    fit_reranker,
    step_features,
)
from tests.trained_library import partly_nameless_plays, train_library


@settings(max_examples=60, deadline=None)
@given(
    tracks=st.lists(st.integers(0, 6), min_size=1, max_size=60),
    gaps=st.lists(st.integers(0, 5 * DAY), min_size=60, max_size=60),
    cut=st.floats(0, 1),
    later=st.integers(0, 40 * DAY),
)
def test_play_index_counts_what_a_plain_loop_counts(tracks: list[int], gaps: list[int], cut: float, later: int) -> None:
    ends = np.cumsum(gaps[: len(tracks)]) + 1_600_000_000
    end = round(cut * len(tracks))
    now = int(ends[end - 1]) + later if end else int(ends[0])
    cands = np.arange(8, dtype=np.int64)  # 7 was never played
    got = PlayIndex(tracks, ends).features(cands, end, now)
    for c in cands.tolist():
        mine = [int(ends[i]) for i in range(end) if tracks[i] == c]
        assert got[c, 0] == pytest.approx(np.log1p(len(mine)))
        assert got[c, 1] == pytest.approx(np.log1p(sum(t >= now - 7 * DAY for t in mine)))
        assert got[c, 2] == pytest.approx(np.log1p(sum(t >= now - 30 * DAY for t in mine)))
        hours = max(now - mine[-1], 0) / 3600 if mine else NEVER_HOURS
        assert got[c, 3] == pytest.approx(np.log1p(hours))


def test_a_reranker_is_stored_in_a_models_metrics_and_read_back() -> None:
    r = Reranker(("model", "markov"), {"model_rr": 3.0, "markov_listed": -0.5, "log_follows": 2.0})
    metrics = {"val_hr@10": 0.3, "blend_model": 1.0, **r.to_metrics()}
    back = Reranker.from_metrics(metrics)
    assert back is not None and back.lists == ("model", "markov")
    assert back.vector().tolist() == r.vector().tolist()
    assert back.vector()[list(back.columns()).index("log_follows")] == 2.0
    assert Reranker.from_metrics({"val_hr@10": 0.3, "blend_model": 1.0}) is None  # an older model


def _steps(rng: np.random.Generator, n: int, signal: int, *, noise: float) -> list[FitStep]:
    """Steps of 30 candidates over the baselines' features where the target is the candidate
    highest on feature `signal` (plus noise); the lists' features are random."""
    cols = 3 * 4 + len(CANDIDATE_FEATURES)
    out = []
    for _ in range(n):
        x = rng.random((30, cols))
        out.append(FitStep(x, int(np.argmax(x[:, signal] + noise * rng.standard_normal(30)))))
    return out


def _top1(r: Reranker, steps: list[FitStep]) -> float:
    w = r.vector()
    return float(np.mean([int(np.argmax(s.x @ w)) == s.target for s in steps]))


def test_the_fit_finds_the_feature_that_picks_the_next_track() -> None:
    rng = np.random.default_rng(0)
    follows = 3 * 4 + CANDIDATE_FEATURES.index("log_follows")
    even = dict.fromkeys(SCORERS[1:], 0.25)
    fitted = fit_reranker(_steps(rng, 2000, follows, noise=0.05), SCORERS[1:], even)
    assert fitted is not None
    held_out = _steps(rng, 300, follows, noise=0.05)
    oracle = Reranker(SCORERS[1:], {"log_follows": 1.0})  # the noise-free feature alone
    assert _top1(oracle, held_out) > 0.3  # chance: 1/30
    assert _top1(fitted, held_out) >= 0.85 * _top1(oracle, held_out)
    # What it learned is that feature: the fusion's own order is no better than chance here.
    prior = Reranker(SCORERS[1:], {f"{b}_rr": w for b, w in even.items()})
    assert _top1(prior, held_out) < 0.15
    w = fitted.weights
    assert w["log_follows"] == max(w.values())


def test_with_little_evidence_the_fit_stays_near_the_fusion() -> None:
    # The target follows the fusion's order (markov's reciprocal rank), with much noise.
    rng = np.random.default_rng(1)
    markov_rr = 3 * SCORERS[1:].index("markov")
    steps = _steps(rng, MIN_FIT_STEPS, markov_rr, noise=0.3)
    fitted = fit_reranker(steps, SCORERS[1:], {"pop": 0.0, "markov": 1.0, "sknn": 0.0, "repeat": 0.0})
    assert fitted is not None
    others = [abs(v) for k, v in fitted.weights.items() if k != "markov_rr"]
    assert fitted.weights["markov_rr"] > 3 * max(others)
    # Pulled towards zero instead (a fusion that weighs nothing), it keeps less of that order.
    unpulled = fit_reranker(steps, SCORERS[1:], dict.fromkeys(SCORERS[1:], 0.0))
    assert unpulled is not None and unpulled.weights["markov_rr"] < fitted.weights["markov_rr"]


def test_a_step_with_several_targets_shares_its_likelihood_among_them() -> None:
    rng = np.random.default_rng(3)
    follows = 3 * 4 + CANDIDATE_FEATURES.index("log_follows")
    plays = 3 * 4 + CANDIDATE_FEATURES.index("log_plays")
    even = dict.fromkeys(SCORERS[1:], 0.25)
    steps = _steps(rng, 300, follows, noise=0.05)
    alone = fit_reranker(steps, SCORERS[1:], even)
    # The target named again among the others changes nothing: the mean of equal losses.
    again = fit_reranker([FitStep(s.x, s.target, (s.target,)) for s in steps], SCORERS[1:], even)
    assert alone is not None and again is not None
    assert np.allclose(alone.vector(), again.vector())
    # A second target, the candidate highest on another feature, makes that feature count.
    both = fit_reranker([FitStep(s.x, s.target, (int(np.argmax(s.x[:, plays])),)) for s in steps], SCORERS[1:], even)
    assert both is not None
    assert both.weights["log_plays"] > 0.5 * both.weights["log_follows"] > 0
    assert abs(alone.weights["log_plays"]) < 0.2 * alone.weights["log_follows"]


def test_too_few_steps_with_their_target_among_the_candidates_fit_no_reranker() -> None:
    rng = np.random.default_rng(2)
    steps = _steps(rng, MIN_FIT_STEPS - 1, 0, noise=0.0)
    steps += [FitStep(s.x, -1) for s in _steps(rng, 50, 0, noise=0.0)]  # targets outside every list
    assert fit_reranker(steps, SCORERS[1:], {"pop": 1.0}) is None
    assert fit_reranker(steps + _steps(rng, 1, 0, noise=0.0), SCORERS[1:], {"pop": 1.0}) is not None


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_library(tmp_path_factory.mktemp("reranked"), partly_nameless_plays(n_artists=48, n_clusters=4, seed=5, every=4))


def test_training_stores_a_reranker_and_the_daemon_ranks_with_it(trained: Path) -> None:
    engine = open_database(trained)
    settings_ = load_settings(data_dir=trained)
    stored = model_store.promoted_model(engine)
    assert stored is not None
    reranker = Reranker.from_metrics(stored.metrics)
    assert reranker is not None and reranker.lists == SCORERS
    assert np.isfinite(reranker.vector()).all() and np.abs(reranker.vector()).max() > 0
    generator = PlaylistGenerator.from_promoted(engine, settings_)
    assert isinstance(generator.scorer, RerankedNextTrack)
    assert generator.scorer.w.tolist() == reranker.vector().tolist()
    config = PlaylistConfig(name="reranked", seeds=generator.default_seeds(), length=30)
    playlist = generator.generate(config, now=1_750_000_000, rng_seed=3)
    ids = [t.track_id for t in playlist.tracks]
    assert len(ids) == 30 and len(set(ids)) == 30
    # The baselines' features, taken from the full step's, are those counted over their lists alone.
    scorer = generator.scorer
    context = GenerationContext.at(1_750_000_000, settings_.zone)
    for n in (1, 4, 20):
        args = (scorer.plays, scorer.end, scorer.artist_of, ids[:n], context)
        full = step_features(scorer.blend, SCORERS, *args)
        direct = step_features(scorer.blend, SCORERS[1:], *args)
        derived = full.restricted(SCORERS, SCORERS[1:])
        assert derived.cands.tolist() == direct.cands.tolist() and derived.cands.size < full.cands.size
        assert np.array_equal(derived.x, direct.x)
    engine.dispose()
