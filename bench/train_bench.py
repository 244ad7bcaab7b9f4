"""Training on a synthetic 300k-play history with ~20k tracks: time to a promoted model.

The history is the generation benchmark's synthetic library (imported once into a database
in the work folder, cached; `bench/generate_bench.py`). Then `train_and_maybe_promote`, what
`songnet train` and the daemon run: feature cache, training with early stopping and refit,
blend weights, storing and promoting the model, in a copy of that database with no model.

Prints the fit's epochs, whether the time budget cut it short (goal: early stopping ends it),
whether the refit ran; the time to a promoted model (goal ≤ 10 min on 2 cores), wall and CPU;
tokens/s; the machine's fp32 matmul rate measured in the same run and the share of it the
training reached (model FLOPs counted analytically as computed, the copy expert over its whole
memory, forward + backward ≈ 3× forward; goal ≥ 40 %); the checkpoint's size and load time.

    .venv/bin/python bench/train_bench.py [--plays 300000] [--artists 1700] [--threads 2] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_bench import build_library
from sqlmodel import Session, select

from service import model_store, tables
from service.db import open_database
from service.settings import load_settings
from service.training import default_train_config, train_and_maybe_promote
from songnet_core.dataset import N_CONTEXT
from songnet_core.train import TrainConfig, TrainProgress


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 7) -> float:
    """Median fp32 GEMM rate of this machine with `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        rates.append(4 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def flops_per_token(cfg: TrainConfig, softmax_classes: float, n_context: int) -> float:
    """Forward FLOPs per trained position, as computed: the output layer over the classes a
    step's softmax ran over (all of them, or the sampled ones), the copy expert over the whole
    memory + window each query reads (keys for every one of those positions, scores against all
    of them; the causal mask does not save the work). Training costs about three times that."""
    h, d, w, m = cfg.hidden, cfg.dim, cfg.window, cfg.memory
    lstm = 2 * 4 * h * (h + h)
    proj = 2 * (d + n_context) * h + 2 * h * d
    out = 2 * softmax_classes * d
    keys = 2 * (2 * d + n_context) * d * (m + w) / w  # every window computes keys for m + w positions
    copy = (2 * h * d + keys + 2 * (m + w) * d) if cfg.copy else 0.0
    return lstm + proj + out + copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plays", type=int, default=300_000)
    ap.add_argument("--artists", type=int, default=1700)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--epochs", type=int, default=None, help="override TrainConfig.max_epochs")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "songnet-generate-bench")
    args = ap.parse_args()
    from service.logging import configure_logging

    configure_logging("console", "warning")
    library = build_library(args.workdir / f"{args.plays}-{args.artists}", args.plays, args.artists)
    with tempfile.TemporaryDirectory(prefix="songnet-train-bench-") as tmp:
        data = Path(tmp)
        shutil.copy(library / "songnet.db", data / "songnet.db")
        settings = load_settings(data_dir=data, log_level="warning")
        engine = open_database(data)
        with Session(engine) as session:  # a first training: no model to compare with
            for row in session.exec(select(tables.ModelVersion)).all():
                session.delete(row)
            session.commit()
        cfg = default_train_config(settings, threads=args.threads, **({"max_epochs": args.epochs} if args.epochs else {}))
        wall, cpu = time.perf_counter(), time.process_time()

        def progress(p: TrainProgress) -> None:
            if p.step == p.steps:
                val = f", val HR@10 {p.val_hr10:.3f}" if p.val_hr10 is not None else ""
                print(f"  {p.phase} epoch {p.epoch}: loss {p.loss:.3f}{val}, {time.perf_counter() - wall:.0f} s", flush=True)

        outcome = train_and_maybe_promote(engine, settings, config=cfg, progress=progress)
        total_wall, total_cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert outcome.promoted, outcome.reason
        t = time.perf_counter()
        loaded = model_store.load_promoted(engine)
        load_s = time.perf_counter() - t
        assert loaded is not None
        stored = model_store.promoted_model(engine)
        assert stored is not None
        engine.dispose()

    m = outcome.metrics
    tok_s = m["tokens_per_second"]
    fpt = flops_per_token(cfg, m.get("softmax_classes", m["classes"]), N_CONTEXT)
    achieved = 3 * fpt * tok_s / 1e9
    peak = matmul_gflops(args.threads)
    blend = ", ".join(f"{k[6:]} {v:.2f}" for k, v in m.items() if k.startswith("blend_"))
    print(f"plays: {outcome.plays}, classes: {int(m['classes'])}, own embeddings: {int(m['own_embeddings'])}, "
          f"epochs {outcome.epochs} (best {int(m['best_epoch'])}), val HR@10 {m['val_hr@10']:.3f}; blend: {blend}")  # fmt: skip
    budget = "yes: the time budget ended the fit" if m.get("budget_stopped") else "no: early stopping ended it"
    print(f"fit epochs run: {int(m.get('fit_epochs', outcome.epochs))} of at most {cfg.max_epochs}; budget cut in: {budget} "
          f"(budget {cfg.time_budget_s} s); refit ran: {'yes' if m.get('refit') else 'no'}; "
          f"softmax over {m.get('softmax_classes', m['classes']):.0f} of {int(m['classes'])} classes per step")  # fmt: skip
    print(f"time to a promoted model: {total_wall:.0f} s wall, {total_cpu:.0f} s CPU (goal ≤ 600 s wall on 2 cores)")
    print(f"of which training: {m['train_seconds']:.0f} s, {tok_s:.0f} tokens/s (validation time included)")
    print(f"model: {fpt / 1e6:.2f} MFLOP/token forward, ~{achieved:.1f} GFLOP/s achieved in training")
    print(f"fp32 matmul on this machine ({args.threads} threads): {peak:.1f} GFLOP/s -> share {achieved / peak:.1%}")
    print(f"checkpoint: {stored.size_bytes / 1e6:.1f} MB, load from SQLite {load_s * 1000:.0f} ms; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
