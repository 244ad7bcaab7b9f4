"""Would a learned scorer over candidates beat the fusion of the simple rules? (issue 11)

    .venv/bin/python scripts/rerank_experiment.py [EXPORT ...] [--out docs/experiments/rerank.json]

A first look that costs minutes, not hours: baselines only, no LSTM. For each corpus export,
under the evaluation protocol of docs/EVALUATION.md (plays >= 30 s, 30-min sessions, last 20 %
of sessions are test, candidates: every track seen in training, the current track excluded),
the four history-updated baselines (pop, markov, sknn, repeat) give their top-50 lists at every
step of the fitting half of validation (the sessions `blend.fit_weights` fits on) and at every
test step. Three rankers over those lists are then compared on test:

- `best`: the best single baseline of that export on test (as the report picks it);
- `fusion`: weighted reciprocal-rank fusion, weights from the simplex grid on the fitting half
  (`blend.fit_weights`, as `songnet eval`'s `fusion`);
- `learned`: a linear scorer over per-candidate features, fitted on the same steps by
  L2-regularised softmax cross-entropy over each step's candidates (listwise), then applied
  unchanged to test. Features: for each baseline, its reciprocal-rank contribution, whether the
  candidate is in its list, and log-rank; of the candidate at the step: log plays before the
  step, log plays in the last 7 and 30 days, log hours since its last play, played earlier in
  this session, same artist as the current track, log transitions from the current track.

One design, fixed before looking at test (no per-export choice). The LSTM is left out here: if
a learned scorer does not beat the grid fusion on the simple rules alone, adding the LSTM's
ranks as features is the next question, not this one's. Writes the figures as JSON and prints a
table (HR@10, MRR@10, and paired 95 % intervals of learned - fusion and learned - best).
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"
EXPORTS = ("account-a", "account-b", "account-c", "account-d", "extended-a", "extended-b", "extended-c", "extended-d")

L2 = 1e-3
EPOCHS = 200  # full-batch L-BFGS iterations
DAY = 86_400


class CandidateFeatures:
    """Per-candidate features at a step, from the plays before it (never the target)."""

    def __init__(self, cls: np.ndarray, artist: np.ndarray, end_ts: np.ndarray, session: np.ndarray) -> None:
        self.cls, self.artist, self.end_ts, self.session = cls, artist, end_ts, session
        self.positions: dict[int, list[int]] = {}
        self.follow: dict[int, dict[int, int]] = {}
        self.done = 0

    def advance(self, p: int) -> None:
        for q in range(self.done, p):
            c = int(self.cls[q])
            if c < 0:
                continue
            self.positions.setdefault(c, []).append(q)
            if q > 0 and self.session[q - 1] == self.session[q] and self.cls[q - 1] >= 0:
                row = self.follow.setdefault(int(self.cls[q - 1]), {})
                row[c] = row.get(c, 0) + 1
        self.done = max(self.done, p)

    def rows(self, p: int, cands: np.ndarray, session_start: int) -> np.ndarray:
        self.advance(p)
        now = int(self.end_ts[p - 1])
        current = int(self.cls[p - 1])
        in_session = set(self.cls[session_start:p].tolist())
        follow = self.follow.get(current, {})
        out = np.zeros((len(cands), 7), dtype=np.float64)
        for i, c in enumerate(cands.tolist()):
            pos = self.positions.get(c, [])
            if pos:
                ts = self.end_ts[pos]
                out[i, 0] = np.log1p(len(pos))
                out[i, 1] = np.log1p(len(pos) - bisect.bisect_left(ts, now - 7 * DAY))
                out[i, 2] = np.log1p(len(pos) - bisect.bisect_left(ts, now - 30 * DAY))
                out[i, 3] = np.log1p(max(now - int(ts[-1]), 0) / 3600.0)
            else:
                out[i, 3] = np.log1p(20 * 365 * 24)  # never played: as if twenty years ago
            out[i, 4] = float(c in in_session)
            out[i, 5] = float(current >= 0 and self.artist[c] == self.artist[current])
            out[i, 6] = np.log1p(follow.get(c, 0))
        return out


def step_table(lists: Any, feats: CandidateFeatures, seq: Any, positions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """For each step: the union of the lists' candidates, their features, the target's row (-1: none)."""
    from songnet_core.blend import FUSION_K

    n_scorers, top = lists.ids.shape[1], lists.ids.shape[2]
    out = []
    for i, p in enumerate(positions.tolist()):
        ids = lists.ids[i]
        cands = np.unique(ids[ids >= 0])
        x_lists = np.zeros((len(cands), 3 * n_scorers))
        for s in range(n_scorers):
            row = ids[s]
            ok = row >= 0
            where = np.searchsorted(cands, row[ok])
            r = np.arange(top)[ok]
            x_lists[where, 3 * s] = 1.0 / (FUSION_K + 1.0 + r)
            x_lists[where, 3 * s + 1] = 1.0
            x_lists[where, 3 * s + 2] = 1.0 - np.log1p(r) / np.log1p(top)
        start = int(seq.session_starts[seq.session[p]])
        x = np.hstack([x_lists, feats.rows(p, cands, start)])
        t = int(lists.targets[i])
        hit = np.searchsorted(cands, t) if t >= 0 else -1
        target_row = int(hit) if t >= 0 and hit < len(cands) and cands[hit] == t else -1
        out.append((cands, x, target_row))
    return out


def fit_linear(
    table: list[tuple[np.ndarray, np.ndarray, int]], *, l2: float = L2, prior: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights (and the feature scaling) of the listwise softmax over each step's candidates.

    `prior`: raw-feature weights the fit is pulled towards (the fusion's, scaled by a fitted
    temperature) instead of towards zero."""
    import torch

    usable = [(x, t) for _, x, t in table if t >= 0]
    if not usable:
        raise ValueError("no fitting step has its target among the candidates")
    allx = np.vstack([x for x, _ in usable])
    mean, std = allx.mean(axis=0), allx.std(axis=0) + 1e-6
    xs = torch.tensor(np.vstack([(x - mean) / std for x, _ in usable]), dtype=torch.float64)
    sizes = [len(x) for x, _ in usable]
    seg = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    tgt = torch.tensor([o + t for o, (_, t) in zip(offsets, usable, strict=True)])

    def nll(w: torch.Tensor) -> torch.Tensor:
        s = xs @ w
        mx = torch.zeros(len(sizes), dtype=torch.float64).scatter_reduce(0, seg, s, "amax", include_self=False)
        lse = torch.log(torch.zeros(len(sizes), dtype=torch.float64).index_add(0, seg, torch.exp(s - mx[seg]))) + mx
        return (lse.sum() - s[tgt].sum()) / len(sizes)

    def minimise(params: torch.Tensor, loss_of: Any) -> None:
        opt = torch.optim.LBFGS([params], max_iter=EPOCHS, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_of()
            loss.backward()
            return loss

        opt.step(closure)

    w0 = torch.zeros(xs.shape[1], dtype=torch.float64)
    if prior is not None:
        direction = torch.tensor(prior * std, dtype=torch.float64)
        alpha = torch.ones(1, dtype=torch.float64, requires_grad=True)
        minimise(alpha, lambda: nll(alpha * direction))
        w0 = (alpha.detach() * direction).clone()
    w = w0.clone().requires_grad_(True)
    minimise(w, lambda: nll(w) + l2 * ((w - w0) ** 2).sum())
    return w.detach().numpy(), mean, std


def learned_ranks(table: list[tuple[np.ndarray, np.ndarray, int]], w: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """1-based rank of each step's target under the learned scores (0: not a candidate); ties
    go to the lower class index, as the protocol breaks them."""
    ranks = np.zeros(len(table), dtype=np.int64)
    for i, (cands, x, t) in enumerate(table):
        if t < 0:
            continue
        s = ((x - mean) / std) @ w
        ranks[i] = 1 + int((s > s[t]).sum() + ((s == s[t]) & (cands < cands[t])).sum())
    return ranks


class MappedScorer:
    """A model's protocol scores (`train.ModelScorer`, over its own vocabulary) spread over the
    split's classes; classes the model does not know score -inf."""

    def __init__(self, model: Any, seq: Any, vocab: Any) -> None:
        from songnet_core.dataset import EncodedSequence
        from songnet_core.train import ModelScorer

        self.inner = ModelScorer(model.module, EncodedSequence.build(seq, model.vocab), model.window)
        where = {int(t): i for i, t in enumerate(vocab.track_ids.tolist())}
        cols = np.asarray([where.get(int(t), -1) for t in model.vocab.track_ids.tolist()])
        self.src, self.dst, self.n = np.flatnonzero(cols >= 0), cols[cols >= 0], vocab.n_classes

    def scores(self, positions: np.ndarray) -> np.ndarray:
        inner = self.inner.scores(positions)
        out = np.full((len(positions), self.n), -np.inf, dtype=np.float32)
        out[:, self.dst] = inner[:, self.src]
        return out


VARIANTS = {f"{prior}/l2={l2:g}": (prior, l2) for prior in ("zero", "fusion") for l2 in (1e-3, 1e-2, 1e-1, 1.0)}


def run_export(name: str, seed: int, *, on_validation: bool, with_model: bool, variants: list[str]) -> dict[str, Any]:
    from service.export_reading import export_folder_files, read_exports
    from songnet_core.blend import fit_weights, fused_ranks, top_lists
    from songnet_core.dataset import EncodedSequence, build_sequence, target_positions
    from songnet_core.evaluate import (
        baseline_scorers,
        evaluation_train_config,
        protocol_split,
        protocol_training_data,
    )
    from songnet_core.metrics import paired_difference, summarise
    from songnet_core.train import train, validation_halves

    t0 = time.monotonic()
    listens = read_exports(export_folder_files(CORPUS / name)).listens
    cfg = evaluation_train_config(seed=seed)
    split = protocol_split(
        build_sequence(listens, tz="UTC"), min_count=cfg.min_count, validation_share=cfg.val_share if on_validation else None
    )  # fmt: skip
    seq, vocab = split.seq, split.vocab
    enc = EncodedSequence.build(seq, vocab)
    n_train = split.first_test_session
    _, fit_first = validation_halves(n_train, cfg.val_share)
    fit_pos = target_positions(seq, fit_first, n_train)
    candidates = np.ones(vocab.n_classes, dtype=bool)
    scorers: dict[str, Any] = dict(baseline_scorers(enc))
    fit_scorers, test_scorers = dict(scorers), dict(scorers)
    if with_model:
        # As `evaluate_listens` trains: the validation model for the fitting steps, the final
        # model (refit on every training session) for test.
        result = train(cfg, protocol_training_data(listens, split, cfg, "UTC"))
        assert result.model is not None and result.validation_model is not None
        fit_scorers = {"model": MappedScorer(result.validation_model, seq, vocab), **scorers}
        test_scorers = {"model": MappedScorer(result.model, seq, vocab), **scorers}
    fit_lists = top_lists(fit_scorers, enc, fit_pos, candidates)  # positions ascend: fit, then test
    test_lists = top_lists(test_scorers, enc, split.positions, candidates)
    feats = CandidateFeatures(enc.tracks.cls, vocab.artist, seq.end_ts, seq.session)
    fit_table = step_table(fit_lists, feats, seq, fit_pos)
    test_table = step_table(test_lists, feats, seq, split.positions)
    weights = fit_weights(fit_lists)
    ranks = {b: test_lists.ranks[b] for b in test_lists.names}
    ranks["fusion"] = fused_ranks(test_lists, weights)
    prior = np.zeros(fit_table[0][1].shape[1])
    for s, b in enumerate(fit_lists.names):
        prior[3 * s] = weights.get(b, 0.0)
    learned_weights = {}
    for v in variants:
        kind, l2 = VARIANTS[v]
        w, mean, std = fit_linear(fit_table, l2=l2, prior=prior if kind == "fusion" else None)
        ranks[v] = learned_ranks(test_table, w, mean, std)
        learned_weights[v] = np.round(w / std, 4).tolist()
    sessions = seq.session[split.positions]
    res = {k: {m: e.value for m, e in summarise(r, sessions, n_boot=200, seed=seed).items()} for k, r in ranks.items()}
    baselines = [b for b in test_lists.names if b != "model"]
    best = max(baselines, key=lambda b: (res[b]["hr@10"], res[b]["mrr@10"]))
    diff = {
        f"{v}-{other}": {
            m: (lambda e: [round(e.value, 4), round(e.lo, 4), round(e.hi, 4)])(
                paired_difference(ranks[v], ranks[other], sessions, m, seed=seed)
            )
            for m in ("hr@10", "mrr@10")
        }
        for v in variants
        for other in ("fusion", best)
    }
    names = [f"{b}.{k}" for b in test_lists.names for k in ("rr", "in", "logrank")]
    names += ["log_plays", "log_plays_7d", "log_plays_30d", "log_hours_since", "in_session", "same_artist", "log_follow"]
    return {
        "plays": len(listens), "fit_steps": len(fit_pos), "test_steps": len(split.positions),
        "results": res, "best_baseline": best, "differences": diff, "fusion_weights": weights,
        "feature_names": names, "learned_weights_raw": learned_weights, "seconds": round(time.monotonic() - t0, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exports", nargs="*", default=list(EXPORTS))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--on-validation", action="store_true", help="the validation protocol: test unseen")
    ap.add_argument("--model", action="store_true", help="train the LSTM as eval does; its list is a 5th input")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    from service.logging import configure_logging

    configure_logging("console", "warning")
    out: dict[str, Any] = {"_run": {"on_validation": args.on_validation, "model": args.model, "commit": _commit()}}
    for name in args.exports:
        out[name] = r = run_export(
            name, args.seed, on_validation=args.on_validation, with_model=args.model, variants=args.variants
        )
        res, best = r["results"], r["best_baseline"]
        row = "  ".join(f"{k} {res[k]['hr@10']:.3f}/{res[k]['mrr@10']:.3f}" for k in ["fusion", *args.variants])
        print(f"{name:<11} steps {r['test_steps']:>5} fit {r['fit_steps']:>5}  best {best} "
              f"{res[best]['hr@10']:.3f}/{res[best]['mrr@10']:.3f}  {row}  ({r['seconds']} s)", flush=True)  # fmt: skip
    exports = [e for e in out if not e.startswith("_")]
    if len(exports) > 1:
        summary = {}
        for k in ["fusion", *args.variants, *(["model"] if args.model else [])]:
            summary[k] = {
                m: float(np.mean([out[e]["results"][k][m] / max(out[e]["results"][out[e]["best_baseline"]][m], 1e-9) for e in exports]))
                for m in ("hr@10", "mrr@10")
            }  # fmt: skip
            print(f"macro ratio to the best baseline of each export: {k:<16} HR@10 {summary[k]['hr@10']:.3f}  MRR@10 {summary[k]['mrr@10']:.3f}")
        out["_macro_ratio_to_best"] = summary
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


def _commit() -> str:
    import subprocess

    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
