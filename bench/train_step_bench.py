"""One training step of the default model at the train bench's size, timed in isolation.

A step is what `songnet_core.train._fit` does per batch: 8 windows of 128 plays, each after a
memory of 1024 for the copy expert, ~18k classes (the sampled softmax's 2048 negatives plus the
batch's targets), forward, backward, gradient clipping, AdamW. Random data: the cost does not
depend on the values.

Also times the same step with the copy expert's recency biases looked up through
`nn.Embedding` (the code before `model.bucket_bias`), interleaved with the product's steps so
that a noisy machine slows both alike, and prints the ratio of the medians.

    .venv/bin/python bench/train_step_bench.py [--steps 20] [--batch 8] [--memory 1024] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from songnet_core import model as model_module
from songnet_core.dataset import N_CONTEXT
from songnet_core.model import Batch, ModelConfig, SongNet, sample_candidates
from songnet_core.train import TrainConfig

CLASSES, ARTISTS, FEATURES = 18_000, 1_700, 8


def embedding_bias(table: torch.nn.Embedding, index: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = table(index).squeeze(-1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--memory", type=int, default=TrainConfig.memory)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = TrainConfig()
    b, m, t = args.batch, args.memory, cfg.window
    mc = ModelConfig(
        n_classes=CLASSES, n_own=CLASSES + 1, n_artists=ARTISTS + 1, n_context=N_CONTEXT, n_track_features=FEATURES,
        dim=cfg.dim, hidden=cfg.hidden, dropout=cfg.dropout, memory=m,
    )  # fmt: skip
    artist = torch.randint(1, ARTISTS + 1, (CLASSES,))
    net = SongNet(mc, torch.arange(1, CLASSES + 1), artist, torch.randn(CLASSES, FEATURES))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    product_bias = model_module.bucket_bias

    def step() -> float:
        cls = torch.randint(0, CLASSES, (b, m + t))
        hours = torch.cumsum(torch.rand(b, m + t), 1)
        x = Batch(cls, cls + 1, artist[cls], torch.randn(b, m + t, N_CONTEXT), hours - hours[:, m : m + 1], m)
        y = torch.randint(0, CLASSES, (b, t))
        started = time.perf_counter()
        _, loss = net(x, y, candidates=sample_candidates(y, CLASSES, cfg.sampled_negatives))
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"product (bincount)": [], "embedding backward": []}
    for i in range(args.steps + 3):
        for name, bias in (("product (bincount)", product_bias), ("embedding backward", embedding_bias)):
            model_module.bucket_bias = bias  # type: ignore[assignment]
            took = step()
            if i >= 3:  # warm-up
                times[name].append(took)
    model_module.bucket_bias = product_bias
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, med in medians.items():
        print(f"{name}: median step {med * 1000:.0f} ms, {b * t / med:.0f} tokens/s over {args.steps} steps")
    ratio = medians["embedding backward"] / medians["product (bincount)"]
    print(f"speed-up of the product's step: {ratio:.2f}x (batch {b}, memory {m}, {args.threads} threads)")


if __name__ == "__main__":
    main()
