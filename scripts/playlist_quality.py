"""Playlist quality on real exports: the LSTM's seeded playlists against a Markov walk's.

For each export: import into a temporary database, split sessions as the evaluation protocol
does (last 20 % test), train the model on the training sessions only (the default
`TrainConfig`, validation carved from training), and build the Markov walk from the same
training sessions. Then every test session with more than 3 distinct tracks seeds a playlist
with its first 3 and both scorers generate 20 more under the same rules (no repeats, at most
2 per artist in any 20, no artist back to back) and the same sampling; the 20 are compared
with the rest of that session (`songnet_core.playlist_quality`). The context (hour, weekday)
is the test session's own start. The model is measured twice: on the seeds alone, and
reading the listener's plays before the session first ("model+history"); and "blend", what
the daemon generates with: the LSTM (with that history) fused with the baselines, its weights
fitted on the validation split (`songnet_core/blend.py`).

    .venv/bin/python scripts/playlist_quality.py [account-d extended-b ...] [--markdown PATH]
        [--json PATH] [--sampling default|greedy|both] [--epochs N]

Prints a table (R-precision, NDCG@20, distinct artists, with 95 % bootstrap intervals over
sessions) and, with --markdown / --json, writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"

SAMPLINGS = {
    "default": {"temperature": 1.0, "top_p": 0.9},  # what `songnet generate` and the daemon use
    "greedy": {"temperature": 0.0},
}


def load_export(path: Path) -> tuple[list[Any], dict[int, Any]]:
    from service.db import open_database
    from service.importer import import_paths
    from service.library import load_listens, load_tracks

    with tempfile.TemporaryDirectory(prefix="songnet-quality-") as tmp:
        engine = open_database(Path(tmp))
        try:
            # SOURCE.json describes the corpus folder; it is not part of the export.
            import_paths(engine, sorted(p for p in path.iterdir() if p.name != "SOURCE.json"))
            return load_listens(engine), load_tracks(engine)
        finally:
            engine.dispose()


def measure_export(name: str, samplings: list[str], epochs: int | None, seed: int) -> dict[str, Any]:
    from zoneinfo import ZoneInfo

    import numpy as np

    from service.playlists import ModelScorer
    from songnet_core.blend import BlendedNextTrack
    from songnet_core.dataset import EncodedSequence, build_sequence
    from songnet_core.evaluate import (
        evaluation_train_config,
        fit_blend_on_validation,
        protocol_split,
        training_features,
    )
    from songnet_core.generate import GenerationContext, MarkovScorer, PlaylistRules, Sampling
    from songnet_core.playlist_quality import score_session, summarise_scores
    from songnet_core.train import TrainingData, train
    from songnet_core.transitions import TransitionCounts

    started = time.monotonic()
    listens, tracks = load_export(CORPUS / name)
    seq = build_sequence(listens, tz="UTC")
    split = protocol_split(seq)
    cfg = evaluation_train_config(seed=seed, **({} if epochs is None else {"max_epochs": epochs}))
    result = train(cfg, TrainingData(seq, split.first_test_session, training_features(listens, split, "UTC")))
    assert result.model is not None
    train_s = time.monotonic() - started

    artist_of = np.full(max(tracks) + 1, -1, dtype=np.int64)
    for t in tracks.values():
        artist_of[t.track_id] = t.artist_id
    sessions = [seq.track_ids[slice(*seq.session_bounds(s))].tolist() for s in range(seq.n_sessions)]
    markov = MarkovScorer(TransitionCounts(sessions[: split.first_test_session]), artist_of.size)
    model = ModelScorer(result.model, artist_of, "UTC")
    # The listener's plays before the session, as many as leave room in the LSTM's window.
    n_prefix = max(result.model.window - 23, 0)

    def with_history(session: int) -> ModelScorer:
        start = seq.session_bounds(session)[0]
        lo = max(start - n_prefix, 0)
        prefix = (seq.track_ids[lo:start].tolist(), seq.artist_ids[lo:start].tolist(), seq.end_ts[lo:start].tolist())
        return ModelScorer(result.model, artist_of, "UTC", prefix=prefix)

    assert result.validation_model is not None
    weights = fit_blend_on_validation(
        split, EncodedSequence.build(seq, split.vocab), result.validation_model, int(result.metrics["val_first_session"])
    ) or {"model": 1.0}
    train_sessions = sessions[: split.first_test_session]
    train_transitions = TransitionCounts(train_sessions)

    def blended(session: int) -> BlendedNextTrack:
        start = seq.session_bounds(session)[0]
        return BlendedNextTrack(
            with_history(session), train_transitions, train_sessions, seq.track_ids[:start].tolist(), weights,
            size=model.size,
        )  # fmt: skip

    rules = PlaylistRules()
    out: dict[str, Any] = {
        "plays": len(listens), "test_sessions": seq.n_sessions - split.first_test_session,
        "val_hr@10": round(result.metrics.get("val_hr@10", float("nan")), 4), "train_seconds": round(train_s, 1),
        "blend_weights": weights, "results": {},
    }  # fmt: skip
    for sampling_name in samplings:
        sampling = Sampling(**SAMPLINGS[sampling_name])
        per_scorer: dict[str, list[Any]] = {"model": [], "model+history": [], "blend": [], "markov": []}
        for s in range(split.first_test_session, seq.n_sessions):
            start = int(seq.end_ts[seq.session_bounds(s)[0]])
            context = GenerationContext.at(start, ZoneInfo("UTC"))
            scorers = (("model", model), ("model+history", with_history(s)), ("blend", blended(s)), ("markov", markov))
            for scorer_name, scorer in scorers:
                score = score_session(
                    scorer, sessions[s], artist_of=artist_of, context=context, sampling=sampling, rules=rules, rng=seed + s
                )
                if score is not None:
                    per_scorer[scorer_name].append(score)
        out["results"][sampling_name] = {
            scorer_name: {
                "sessions": len(scores),
                **{k: asdict(v) for k, v in summarise_scores(scores, seed=seed).items()},
            }
            for scorer_name, scores in per_scorer.items()
        }
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def fmt(iv: dict[str, float], digits: int = 3) -> str:
    return f"{iv['value']:.{digits}f} [{iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]"


def markdown(figures: dict[str, Any]) -> str:
    lines = [
        "# Playlist quality",
        "",
        "Generated by `scripts/playlist_quality.py`. Each test session (last 20 % of sessions) with",
        "more than 3 distinct tracks seeds a playlist with its first 3; 20 generated tracks are",
        "compared with the rest of the session. Same rules (no repeats, ≤ 2 per artist in any 20,",
        "no artist back to back) and sampling for every scorer. `model` continues the seeds alone;",
        "`model+history` reads the listener's plays before the session first (as in training);",
        "`blend` is what the daemon generates with: model+history fused with the baselines, weights",
        "fitted on the validation split; `markov` is a first-order Markov walk over the training",
        "sessions. 95 % bootstrap intervals over sessions.",
        "",
    ]
    for sampling in next(iter(figures.values()))["results"]:
        s = SAMPLINGS[sampling]
        lines += [f"## Sampling: {sampling} ({', '.join(f'{k} {v}' for k, v in s.items())})", ""]
        lines += [
            "| export | sessions | scorer | R-precision | NDCG@20 | distinct artists (of 20) |",
            "| --- | ---: | --- | --- | --- | ---: |",
        ]
        for name, f in figures.items():
            for scorer, r in f["results"][sampling].items():
                lines.append(
                    f"| {name} | {r['sessions']} | {scorer} | {fmt(r['r_precision'])} | {fmt(r['ndcg'])} | "
                    f"{r['distinct_artists']['value']:.1f} |"
                )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="*", default=["account-d", "extended-d", "extended-b", "account-c"])
    parser.add_argument("--sampling", choices=["default", "greedy", "both"], default="both")
    parser.add_argument("--epochs", type=int, default=None, help="cap on training epochs (default: TrainConfig's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from service.logging import configure_logging

    configure_logging("console", "warning")
    samplings = ["default", "greedy"] if args.sampling == "both" else [args.sampling]
    figures: dict[str, Any] = {}
    for name in args.exports:
        print(f"{name}: importing, training, generating…", file=sys.stderr, flush=True)
        figures[name] = measure_export(name, samplings, args.epochs, args.seed)
        print(json.dumps({name: figures[name]}), flush=True)
    text = markdown(figures)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
