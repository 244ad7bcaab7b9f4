"""Generating playlists from a loaded model, on a synthetic library of realistic size.

    .venv/bin/python bench/generate_bench.py [--plays 300000] [--artists 1700] [--length 50]
                                            [--repeat 20] [--train-epochs 0] [--workdir DIR]

1. A synthetic listener of `--plays` plays over `--artists` artists × 12 tracks (≈ 20k tracks
   at the defaults) is imported once into a database in the work folder (cached), and the
   feature cache computed.
2. A model of the default size (`TrainConfig()`: 64-d vectors, 128-d LSTM, copy expert, track
   features) over every track, trained for `--train-epochs` epochs (cached: trained once per
   work folder), becomes the promoted model. With `--train-epochs 0` its weights stay
   untrained: the LSTM costs the same, but an untrained model spreads its probability over
   every track, the worst case for nucleus sampling.
3. Times, `--repeat` times each: loading the promoted model from SQLite (`load_promoted`),
   loading the library for generation (`Library.load`), everything the weekly job does
   between "model loaded" and "ready to generate" (`Library.load`, the listener's history,
   `songnet_scorer`'s structures with every baseline weighted, the generator: what
   `PlaylistGenerator.from_promoted` builds once it has the model), and generating a
   `--length`-track playlist from 3 seeds with the default sampling (rules and reasons
   included), each with another rng seed: once with the model alone, once with the blend the
   daemon uses when the model carries blend weights (`songnet_core/blend.py`), every baseline
   weighted. The first playlist of a freshly built generator (what the weekly job's first
   playlist costs) is timed apart from the repeated ones.

   Then once more with the daemon's full ranker (`songnet_core/rerank.py`: the union of
   those lists reranked by a learned scorer over per-candidate features; every feature
   weighted), the ranker `ready` builds.

Prints each figure and one JSON line of medians. Goals (issue 11): generation with the full
ranker ≤ 200 ms median, ready to generate ≤ 1 s median; model loading ≤ 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from service import model_store  # noqa: E402
from service.db import open_database  # noqa: E402
from service.features import load_feature_matrix, recompute_features  # noqa: E402
from service.importer import import_paths  # noqa: E402
from service.library import load_listens  # noqa: E402
from service.playlists import Library, PlaylistGenerator  # noqa: E402
from service.settings import PlaylistConfig, load_settings  # noqa: E402
from service.training import listener_zone_name  # noqa: E402
from songnet_core.blend import SCORERS  # noqa: E402
from songnet_core.dataset import N_CONTEXT, Vocabulary, build_sequence  # noqa: E402
from songnet_core.model import ModelConfig, SongNet, save_checkpoint  # noqa: E402
from songnet_core.ranker import model_scorer as history_model_scorer  # noqa: E402
from songnet_core.ranker import songnet_scorer  # noqa: E402
from songnet_core.rerank import Reranker  # noqa: E402
from songnet_core.synthetic import SyntheticConfig, generate_plays, write_extended_export  # noqa: E402
from songnet_core.train import TrackFeatureTable, TrainConfig, TrainingData, train  # noqa: E402

CPU_TIMES: dict[str, list[float]] = {}


def timed(label: str, fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Wall-clock times of `repeat` calls; the process's CPU times go to CPU_TIMES[label].

    On a machine shared with other work, wall time includes waiting for a core; CPU time is
    what the work itself costs (generation runs on one thread)."""
    times, cpu, result = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    CPU_TIMES[label] = cpu
    print(f"{label}: median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms over {repeat} (CPU median {statistics.median(cpu) * 1000:.1f} ms)",
          flush=True)  # fmt: skip
    return times, result


def build_library(work: Path, plays: int, artists: int) -> Path:
    data = work / "data"
    if (data / "songnet.db").exists():
        return data
    print(f"building a synthetic library of {plays:,} plays (once, cached in {work})…", flush=True)
    # From 2014: 500k plays at 150 a day end before today (later plays would be implausible).
    config = SyntheticConfig(
        n_plays=plays, n_artists=artists, n_clusters=24, plays_per_day=150.0, seed=7, start=date(2014, 1, 1)
    )
    paths = write_extended_export(generate_plays(config), work / "export", seed=7)
    engine = open_database(data)
    results = import_paths(engine, paths)
    assert all(r.status == "imported" for r in results)
    engine.dispose()
    return data


def store_model(engine: Any, settings: Any, epochs: int) -> dict[str, Any]:
    listens = load_listens(engine)
    seq = build_sequence(listens, tz=listener_zone_name(settings))
    cfg = TrainConfig()
    ids = np.unique(seq.track_ids)
    features = TrackFeatureTable(ids, load_feature_matrix(engine, ids.tolist()))
    if epochs > 0:
        result = train(TrainConfig(max_epochs=epochs, patience=epochs), TrainingData(seq, None, features))
        assert result.model is not None
        module, vocab, metrics = result.model.module, result.model.vocab, result.metrics
    else:
        vocab = Vocabulary.build(seq, min_count=cfg.min_count)
        feats = features.rows(vocab.track_ids)
        mc = ModelConfig(
            n_classes=vocab.n_classes, n_own=vocab.n_own, n_artists=vocab.n_artists, n_context=N_CONTEXT,
            n_track_features=feats.shape[1], dim=cfg.dim, hidden=cfg.hidden, dropout=cfg.dropout, copy=cfg.copy,
        )  # fmt: skip
        torch.manual_seed(0)
        module = SongNet(mc, torch.from_numpy(vocab.own), torch.from_numpy(vocab.artist), torch.from_numpy(feats))
        module.eval()
        metrics = {"val_hr@10": 0.0}
    metrics = {**metrics, "bench_epochs": float(epochs)}
    blob = save_checkpoint(module, vocab, metrics, window=cfg.window)
    model_store.save_model(engine, blob, metrics, watermark_play_id=max(x.play_id for x in listens),
                           plays_trained=len(listens), promote=True)  # fmt: skip
    return {"classes": vocab.n_classes, "checkpoint_mb": round(len(blob) / 1e6, 1), "trained_epochs": epochs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plays", type=int, default=300_000)
    parser.add_argument("--artists", type=int, default=1700)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "songnet-generate-bench")
    args = parser.parse_args()
    work = args.workdir / f"{args.plays}-{args.artists}"
    data = build_library(work, args.plays, args.artists)
    settings = load_settings(data_dir=data, log_level="warning")
    from service.logging import configure_logging

    configure_logging("console", "warning")
    engine = open_database(data)
    figures: dict[str, Any] = {"plays": args.plays, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    recompute_features(engine, tz=settings.zone)
    current = model_store.promoted_model(engine)
    stale = current is None or current.metrics.get("bench_epochs") != args.train_epochs
    if stale or model_store.load_promoted(engine) is None:  # none yet, or of an older songnet
        figures |= store_model(engine, settings, args.train_epochs)
    stored = model_store.promoted_model(engine)
    assert stored is not None
    figures["model_version"] = stored.id

    load_label = "load_promoted (model from SQLite)"
    load_times, model = timed(load_label, lambda: model_store.load_promoted(engine), 5)
    lib_times, library = timed("Library.load (plays, tracks, sessions, features)", lambda: Library.load(engine, settings), 3)
    assert model is not None
    every = dict.fromkeys(("model", "pop", "markov", "sknn", "repeat"), 0.2)
    # The daemon's ranker once a model carries a reranker: every list and every feature
    # weighted (what a step costs does not depend on the weights' values).
    reranker = Reranker(SCORERS, dict.fromkeys(Reranker(SCORERS, {}).columns(), 0.1))

    def ready() -> PlaylistGenerator:
        """What the weekly job builds once it has the model (`PlaylistGenerator.from_promoted`)."""
        lib = Library.load(engine, settings)
        scorer = songnet_scorer(
            model, lib.history(settings), every, artist_of=lib.artist_of, zone_name=listener_zone_name(settings),
            reranker=reranker,
        )  # fmt: skip
        return PlaylistGenerator(lib, scorer, zone=settings.zone, model_version=stored.id, min_play_ms=settings.min_play_ms)

    ready_label = "ready to generate (library, history, full ranker's structures and play index)"
    ready_times, fresh = timed(ready_label, ready, 5)
    figures["classes"] = model.vocab.n_classes
    figures["tracks"] = len(library.tracks)
    generator = PlaylistGenerator(
        library, history_model_scorer(model, library.history(settings), artist_of=library.artist_of, zone_name=listener_zone_name(settings)),
        zone=settings.zone, model_version=stored.id,
    )  # fmt: skip
    seeds = generator.default_seeds()
    config = PlaylistConfig(name="bench", seeds=seeds, length=args.length)
    first_label = f"first playlist of a fresh generator ({args.length} tracks, reranked)"
    first_times, _ = timed(first_label, lambda: fresh.generate(config, rng_seed=12345), 1)
    counter = iter(range(10**9))
    generator.generate(config, rng_seed=-1 % 2**32)  # warm-up
    gen_label = f"generate {args.length} tracks (3 seeds), model alone"
    gen_times, playlist = timed(gen_label, lambda: generator.generate(config, rng_seed=next(counter)), args.repeat)
    assert len(playlist.tracks) == args.length
    # What the daemon uses once a model carries blend weights; every baseline weighted is
    # the most work per step.
    blend = songnet_scorer(
        model, library.history(settings), dict.fromkeys(("model", "pop", "markov", "sknn", "repeat"), 0.2),
        artist_of=library.artist_of, zone_name=listener_zone_name(settings),
    )  # fmt: skip
    blended = PlaylistGenerator(library, blend, zone=settings.zone, model_version=stored.id)
    blended.generate(config, rng_seed=-2 % 2**32)  # warm-up
    blend_label = f"generate {args.length} tracks (3 seeds), blend of the model and 4 baselines"
    blend_times, playlist = timed(blend_label, lambda: blended.generate(config, rng_seed=next(counter)), args.repeat)
    assert len(playlist.tracks) == args.length
    reranked = PlaylistGenerator(library, fresh.scorer, zone=settings.zone, model_version=stored.id)
    reranked.generate(config, rng_seed=-3 % 2**32)  # warm-up
    rerank_label = f"generate {args.length} tracks (3 seeds), the daemon's ranker: the blend's lists reranked"
    rerank_times, playlist = timed(rerank_label, lambda: reranked.generate(config, rng_seed=next(counter)), args.repeat)
    assert len(playlist.tracks) == args.length
    figures |= {
        "load_model_median_s": round(statistics.median(load_times), 3),
        "load_library_median_s": round(statistics.median(lib_times), 3),
        "ready_median_s": round(statistics.median(ready_times), 3),
        "ready_cpu_median_s": round(statistics.median(CPU_TIMES[ready_label]), 3),
        "first_playlist_ms": round(first_times[0] * 1000, 1),
        "generate_median_ms": round(statistics.median(gen_times) * 1000, 1),
        "generate_cpu_median_ms": round(statistics.median(CPU_TIMES[gen_label]) * 1000, 1),
        "generate_blend_median_ms": round(statistics.median(blend_times) * 1000, 1),
        "generate_blend_cpu_median_ms": round(statistics.median(CPU_TIMES[blend_label]) * 1000, 1),
        "generate_reranked_median_ms": round(statistics.median(rerank_times) * 1000, 1),
        "generate_reranked_cpu_median_ms": round(statistics.median(CPU_TIMES[rerank_label]) * 1000, 1),
        "load_model_cpu_median_s": round(statistics.median(CPU_TIMES[load_label]), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "generate_p90_ms": round(float(np.quantile(gen_times, 0.9)) * 1000, 1),
        "length": args.length,
    }
    print(json.dumps(figures))
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
