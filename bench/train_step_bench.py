"""Training steps and validation batches on the 300k-play synthetic library, side by side.

What one training step costs with the full softmax over every class and with the sampled
softmax (`TrainConfig.sampled_negatives`), the sampled step again with the copy expert's
recency biases looked up through `nn.Embedding` (whose backward sorts every index; the
product's `model.bucket_bias` sums the gradient by bincount), and what a validation batch
costs scoring whole windows against only the second halves that are read
(`SongNet.forward(first=...)`): the variants alternate round by round in one process, so a busy machine slows them alike; medians
and their ratios are printed, with tokens/s and the share of this machine's fp32 matmul rate
(measured in the same run) that the steps reach. `bench/train_bench.py` times the whole path to
a promoted model; this one isolates the parts, in a few minutes.

    .venv/bin/python bench/train_step_bench.py [--plays 300000] [--threads 2] [--rounds 5] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_bench import build_library
from train_bench import flops_per_token, matmul_gflops

from service.db import open_database
from service.features import load_feature_matrix
from service.library import load_listens
from songnet_core import model as model_module
from songnet_core.dataset import N_CONTEXT, EncodedSequence, Vocabulary, build_sequence, time_split
from songnet_core.model import SongNet, sample_candidates
from songnet_core.train import TrackFeatureTable, TrainConfig, _build_model, make_batch


def timed_steps(model: SongNet, opt: torch.optim.Optimizer, batches: list, cfg: TrainConfig) -> tuple[float, float]:
    """Seconds per step and mean classes per softmax over `batches`."""
    model.train()
    n_classes, scored = model.cfg.n_classes, 0
    sampled = cfg.sampled_negatives > 0 and 4 * cfg.sampled_negatives < n_classes
    t = time.perf_counter()
    for x, y in batches:
        candidates = sample_candidates(y, n_classes, cfg.sampled_negatives) if sampled else None
        scored += n_classes if candidates is None else len(candidates.classes)
        _, loss = model(x, y, candidates=candidates)
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return (time.perf_counter() - t) / len(batches), scored / len(batches)


def embedding_bias(table: torch.nn.Embedding, index: torch.Tensor) -> torch.Tensor:
    """The recency-bias lookup as it was before `model.bucket_bias`."""
    out: torch.Tensor = table(index).squeeze(-1)
    return out


EMBEDDING_BIAS = "sampled softmax, embedding-backward biases"


def timed_scoring(model: SongNet, x: object, first: int) -> float:
    model.eval()
    t = time.perf_counter()
    with torch.no_grad():
        model(x, first=first)  # type: ignore[arg-type]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plays", type=int, default=300_000)
    ap.add_argument("--artists", type=int, default=1700)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="training steps per variant and round")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "songnet-generate-bench")
    args = ap.parse_args()
    from service.logging import configure_logging

    configure_logging("console", "warning")
    library = build_library(args.workdir / f"{args.plays}-{args.artists}", args.plays, args.artists)
    engine = open_database(library)
    seq = build_sequence(load_listens(engine))
    ids = np.unique(seq.track_ids)
    features = TrackFeatureTable(ids, load_feature_matrix(engine, ids.tolist()))
    engine.dispose()
    torch.set_num_threads(args.threads)
    base = TrainConfig(threads=args.threads)
    vocab = Vocabulary.build(seq, min_count=base.min_count)
    enc = EncodedSequence.build(seq, vocab)
    fit_end = seq.session_bounds(time_split(seq.n_sessions, base.val_share) - 1)[1]
    variants = {"full softmax": replace(base, sampled_negatives=0), "sampled softmax": base, EMBEDDING_BIAS: base}
    models, opts = {}, {}
    for name, cfg in variants.items():
        torch.manual_seed(0)
        models[name] = _build_model(cfg, vocab, features)
        opts[name] = torch.optim.AdamW(models[name].parameters(), lr=cfg.lr)
    rng = np.random.default_rng(0)
    half = base.window // 2
    step_s: dict[str, list[float]] = {n: [] for n in variants}
    classes: dict[str, float] = {}
    score_s: dict[str, list[float]] = {"whole windows": [], "second halves": []}
    for r in range(args.rounds + 1):  # round 0 warms up
        starts = [rng.integers(0, fit_end - half, size=base.batch_size) for _ in range(args.steps)]
        batches = [make_batch(enc, s, base.window, fit_end, base.memory) for s in starts]
        product_bias = model_module.bucket_bias
        for name, cfg in variants.items():
            if name == EMBEDDING_BIAS:
                model_module.bucket_bias = embedding_bias
            try:
                secs, classes[name] = timed_steps(models[name], opts[name], batches, cfg)
            finally:
                model_module.bucket_bias = product_bias
            if r:
                step_s[name].append(secs)
        x, _ = make_batch(enc, (rng.integers(1, fit_end // half, size=8) * half), base.window, len(seq), base.memory)
        for name, first in (("whole windows", 0), ("second halves", half)):
            secs = timed_scoring(models["full softmax"], x, first)
            if r:
                score_s[name].append(secs)
    peak = matmul_gflops(args.threads)
    tokens = base.batch_size * base.window
    print(f"{len(seq):,} positions, {vocab.n_classes:,} classes; batch {base.batch_size} x window {base.window}, "
          f"memory {base.memory}; {args.threads} threads; {args.rounds} rounds x {args.steps} steps")  # fmt: skip
    med = {n: statistics.median(v) for n, v in step_s.items()}
    for name, cfg in variants.items():
        achieved = 3 * flops_per_token(cfg, classes[name], N_CONTEXT) * tokens / med[name] / 1e9
        print(f"{name}: {med[name] * 1000:.0f} ms/step (median), {tokens / med[name]:.0f} tokens/s, "
              f"softmax over {classes[name]:.0f} classes, {achieved:.1f} GFLOP/s = {achieved / peak:.1%} of matmul")  # fmt: skip
    print(f"training step speed-up, sampled over full: {med['full softmax'] / med['sampled softmax']:.2f}x")
    print(f"training step speed-up, bincount over embedding-backward biases: {med[EMBEDDING_BIAS] / med['sampled softmax']:.2f}x")
    sm = {n: statistics.median(v) for n, v in score_s.items()}
    print(f"validation batch of 8 windows: whole windows {sm['whole windows'] * 1000:.0f} ms, second halves "
          f"{sm['second halves'] * 1000:.0f} ms: {sm['whole windows'] / sm['second halves']:.2f}x")  # fmt: skip
    print(f"fp32 matmul on this machine ({args.threads} threads): {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
