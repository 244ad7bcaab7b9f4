"""`songnet eval`'s phases on one corpus export, timed one by one, with every scorer's ranks.

Imports the export (as `songnet eval` does), trains with the evaluation's config (`--epochs`
caps the epochs, so the ranking phases can be timed without a full training), then times the
phases that follow training: fitting the fusion weights on validation, ranking the test steps
with songnet / model / fusion, and each history-updated baseline. Prints seconds (wall and
CPU) per phase and each scorer's HR@10 / MRR@10; `--ranks FILE.npz` keeps every scorer's
ranks, so two versions of the code can be compared step by step (`--compare A.npz B.npz`);
`--check-prepare` ranks songnet / model / fusion a second time with the model scored one step
at a time (`ModelNextTrack` without `prepare`, generation's way) and says whether every rank
is the same.

    .venv/bin/python bench/eval_bench.py account-d --epochs 1 --ranks /tmp/after.npz
    .venv/bin/python bench/eval_bench.py --compare /tmp/before.npz /tmp/after.npz
    .venv/bin/python bench/eval_bench.py extended-c --epochs 1 --check-prepare

With PYTHONPATH pointing at another checkout's root, the same script times that checkout
(the phases' functions are called through their public names only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

if not os.environ.get("PYTHONPATH"):  # else: the checkout PYTHONPATH names
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


class Phase:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Phase:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        print(f"{self.name:<28} {wall:8.1f} s wall {cpu:8.1f} s CPU", flush=True)


def compare(a_path: Path, b_path: Path) -> int:
    a, b = np.load(a_path), np.load(b_path)
    differ = 0
    for name in sorted(set(a.files) | set(b.files)):
        if name not in a.files or name not in b.files:
            print(f"{name}: only in one file")
            differ += 1
            continue
        same = np.array_equal(a[name], b[name])
        n = int((a[name] != b[name]).sum()) if a[name].shape == b[name].shape else -1
        print(f"{name:<10} {'identical' if same else f'{n} steps differ'}")
        differ += not same
    return 1 if differ else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", nargs="?", help="a corpus export's folder name (or a path)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranks", type=Path, default=None, help="write every scorer's ranks here (.npz)")
    ap.add_argument("--check-prepare", action="store_true", help="rank songnet/model/fusion again step by step and compare")
    ap.add_argument("--compare", type=Path, nargs=2, default=None, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.export:
        ap.error("an export is needed")

    from service.export_reading import export_folder_files, read_exports
    from songnet_core.dataset import EncodedSequence, build_sequence, target_positions
    from songnet_core.evaluate import (
        RankingLibrary,
        baseline_scorers,
        evaluation_train_config,
        fit_songnet_weights,
        protocol_split,
        protocol_training_data,
        songnet_ranks,
    )
    from songnet_core.metrics import evaluate_positions, step_metrics
    from songnet_core.train import train, validation_halves

    path = Path(args.export) if Path(args.export).exists() else CORPUS / args.export
    listens = read_exports(export_folder_files(path)).listens
    cfg = evaluation_train_config(seed=args.seed, **({} if args.epochs is None else {"max_epochs": args.epochs}))
    ranks: dict[str, np.ndarray] = {}
    with Phase("split"):
        split = protocol_split(build_sequence(listens, tz="UTC"), min_count=cfg.min_count)
        seq = split.seq
        enc = EncodedSequence.build(seq, split.vocab)
    print(f"{path.name}: {len(listens)} plays, {len(split.positions)} test steps, {split.vocab.n_classes} classes")
    n_train = split.first_test_session
    _, weights_first = validation_halves(n_train, cfg.val_share)
    with Phase("training"):
        result = train(cfg, protocol_training_data(listens, split, cfg, "UTC"))
    assert result.model is not None and result.validation_model is not None
    library = RankingLibrary(seq, "UTC")
    with Phase("fitting weights"):
        fitted = fit_songnet_weights(library, result.validation_model, target_positions(seq, weights_first, n_train))
    assert fitted is not None
    weights, fusion = fitted.weights, fitted.fusion_weights
    rerankers = {"reranker": fitted.reranker, "fusion_reranker": fitted.fusion_reranker}
    print("weights", {k: round(v, 3) for k, v in weights.items()}, "fusion", {k: round(v, 3) for k, v in fusion.items()},
          "reranked", {k: r is not None for k, r in rerankers.items()})  # fmt: skip
    with Phase("songnet/model/fusion"):
        ranks.update(songnet_ranks(library, result.model, weights, fusion, split, **rerankers))
    if args.check_prepare:  # the same ranks with the model scored step by step, as generation does
        from songnet_core.ranker import ModelNextTrack

        prepare = ModelNextTrack.prepare
        ModelNextTrack.prepare = lambda self, histories, context: None  # type: ignore[method-assign]
        try:
            with Phase("songnet/model/fusion, stepwise"):
                stepwise = songnet_ranks(library, result.model, weights, fusion, split, **rerankers)
        finally:
            ModelNextTrack.prepare = prepare  # type: ignore[method-assign]
        for name, r in stepwise.items():
            ranks[f"{name}_stepwise"] = r
            print(f"{name}: {'identical' if np.array_equal(r, ranks[name]) else f'{int((r != ranks[name]).sum())} steps differ'} stepwise")
    candidates = np.ones(split.vocab.n_classes, dtype=bool)
    for name, sc in baseline_scorers(enc).items():
        with Phase(f"baseline {name}"):
            ranks[name] = evaluate_positions(sc, enc, split.positions, candidates)
    for name, r in ranks.items():
        m = step_metrics(r)
        print(f"{name:<10} HR@10 {m['hr@10'].mean():.4f}  MRR@10 {m['mrr@10'].mean():.4f}")
    if args.ranks is not None:
        np.savez(args.ranks, **ranks)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
