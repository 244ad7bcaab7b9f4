"""Training: a plain function from config and data to a model and its metrics.

The last `val_share` of the training sessions (by start time) is held out for validation;
after each epoch the model ranks those sessions' tracks exactly as the evaluation protocol
does, and training stops once validation HR@10 has not improved (by more than `min_gain` of
it) for `patience` epochs, keeping the best epoch's weights (`early_stopping.py`). With `refit`, a fresh model is then trained on every
session for that many epochs, so the newest listening is learned too. Same data and seed
give the same model (single-process CPU kernels are deterministic), as long as the wall-clock
budget (`time_budget_s`) does not cut training short: when it does, the metrics say so
(`budget_stopped`), and the refit is left out if it would not fit (`refit` = 0).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from songnet_core.dataset import (
    N_CONTEXT,
    EncodedSequence,
    FloatArray,
    IntArray,
    ListeningSequence,
    Vocabulary,
    target_positions,
    time_split,
)
from songnet_core.early_stopping import EarlyStopping
from songnet_core.metrics import evaluate_positions, summarise
from songnet_core.model import Batch, LoadedModel, ModelConfig, SongNet, sample_candidates


@dataclass
class TrainConfig:
    dim: int = 64
    hidden: int = 128
    dropout: float = 0.2
    copy: bool = True
    min_count: int = 2  # plays a track needs for an embedding of its own
    window: int = 128  # positions the LSTM reads per training sequence, and back when scoring
    memory: int = 1024  # positions before the window that the copy expert reads
    batch_size: int = 8  # windows per step
    # Above 4x this many classes, a training step's softmax runs over the batch's targets and
    # this many classes drawn uniformly from the rest (shared by the batch, reweighted), not
    # over every class: the output layer is most of a step's cost for a large library.
    # Validation and scoring always use the full softmax. 0: always the full softmax.
    sampled_negatives: int = 2048
    coverage: float = 1.0  # an epoch draws windows covering each position this many times
    min_steps: int = 32  # ... and at least this many batches (small histories)
    lr: float = 3e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_epochs: int = 30
    patience: int = 3  # epochs without an improvement before the fit stops (early_stopping.py)
    min_gain: float = 0.0  # an improvement beats the best validation HR@10 by more than this share of it
    val_share: float = 0.15
    refit: bool = True
    seed: int = 0
    threads: int | None = None  # default: every core of the machine
    # Wall-clock budget for fit + refit (None: none). The fit stops at the first epoch end past
    # half of it (the best epoch so far is kept); the refit runs only if its epochs, timed by
    # the fit's, fit in what is left. A big history on a slow machine trains fewer epochs
    # instead of for hours.
    time_budget_s: float | None = 540.0
    use_track_features: bool = True


@dataclass(frozen=True)
class TrackFeatureTable:
    """Per-track feature rows (e.g. `features.feature_matrix`) keyed by library track id."""

    track_ids: IntArray
    matrix: FloatArray

    def rows(self, track_ids: IntArray) -> FloatArray:
        """Rows for `track_ids` in that order; zeros for tracks the table lacks."""
        index = {int(t): i for i, t in enumerate(self.track_ids)}
        out = np.zeros((len(track_ids), self.matrix.shape[1]), dtype=np.float32)
        for r, t in enumerate(track_ids):
            i = index.get(int(t))
            if i is not None:
                out[r] = self.matrix[i]
        return out


@dataclass(frozen=True)
class TrainingData:
    """The listening sequence; sessions from `train_sessions` on (if set) are context only:
    the model reads them as history but never learns from them (evaluation's test part)."""

    seq: ListeningSequence
    train_sessions: int | None = None
    track_features: TrackFeatureTable | None = None
    # The features as they stood when the validation sessions began, for the model fitted
    # before them (None: `track_features`).
    validation_features: TrackFeatureTable | None = None


@dataclass(frozen=True)
class TrainProgress:
    epoch: int  # 1-based
    max_epochs: int
    step: int  # 1-based, within the epoch
    steps: int
    loss: float
    val_hr10: float | None  # after the epoch's last step
    best_val_hr10: float | None
    phase: str = "fit"  # "fit" (with validation) or "refit" (on every session)


@dataclass
class TrainResult:
    model: LoadedModel | None  # None when stopped before completion
    metrics: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    # The early-stopped model that never saw the validation sessions (with `refit`, `model`
    # has): compare models on validation sessions with this one.
    validation_model: LoadedModel | None = None


class ModelScorer:
    """Scores positions of a sequence with a model: the LSTM reads up to `window` positions
    back (at least half of it: windows overlap by half), the copy expert `memory` more."""

    def __init__(self, module: SongNet, enc: EncodedSequence, window: int, batch_windows: int = 8) -> None:
        self.module, self.enc, self.window, self.batch_windows = module, enc, window, batch_windows
        self.memory = module.cfg.memory

    def scores(self, positions: IntArray) -> FloatArray:
        half = max(1, self.window // 2)
        inputs = positions - 1  # the prediction for p is the output at p - 1
        if (inputs < 0).any():
            raise ValueError("position 0 has no history to predict from")
        win = np.maximum(0, (inputs - half) // half)
        out = np.empty((len(positions), self.enc.vocab.n_classes), dtype=np.float32)
        uniq = np.unique(win)
        self.module.eval()
        with torch.no_grad():
            for b in range(0, len(uniq), self.batch_windows):
                ks = uniq[b : b + self.batch_windows]
                x, _ = make_batch(self.enc, ks * half, self.window, len(self.enc.seq), self.memory)
                # Past the first window only a window's second half is read: the output
                # layer, most of the cost, runs for those steps alone.
                first = 0 if ks[0] == 0 else half
                logp, _ = self.module(x, first=first)
                assert logp is not None
                for j, k in enumerate(ks):
                    rows = np.flatnonzero(win == k)
                    out[rows] = logp[j, inputs[rows] - k * half - first].numpy()
        return out


def make_batch(
    enc: EncodedSequence, starts: IntArray, window: int, end: int, memory: int = 0
) -> tuple[Batch, torch.Tensor]:
    """Windows [s, s + window) clipped at `end` and right-padded, each after the `memory`
    positions before s (left-padded); targets are the next class of each window position
    (-1 past `end` or in padding)."""
    n, span = len(starts), memory + window
    cls = np.full((n, span), -1, dtype=np.int64)
    own = np.zeros((n, span), dtype=np.int64)
    art = np.zeros((n, span), dtype=np.int64)
    ctx = np.zeros((n, span, N_CONTEXT), dtype=np.float32)
    hours = np.zeros((n, span), dtype=np.float32)
    tgt = np.full((n, window), -1, dtype=np.int64)
    t, ts = enc.tracks, enc.seq.end_ts
    for i, s in enumerate(int(v) for v in starts):
        a, e = max(0, s - memory), min(s + window, end)
        lo, hi = memory - (s - a), memory + (e - s)  # where [a, e) lands in the row
        cls[i, lo:hi], own[i, lo:hi], art[i, lo:hi] = t.cls[a:e], t.own[a:e], t.artist[a:e]
        ctx[i, lo:hi] = enc.seq.context[a:e]
        hours[i, lo:hi] = (ts[a:e] - ts[s]) / 3600.0
        m = max(0, min(e, end - 1) - s)
        tgt[i, :m] = t.cls[s + 1 : s + 1 + m]
    x = Batch(
        torch.from_numpy(cls), torch.from_numpy(own), torch.from_numpy(art), torch.from_numpy(ctx),
        torch.from_numpy(hours), memory,
    )  # fmt: skip
    return x, torch.from_numpy(tgt)


def validation_halves(n_train: int, val_share: float) -> tuple[int, int]:
    """The first validation session, and the first of its second half: early stopping reads
    [first, second), fitting fusion weights [second, n_train), so neither is chosen on the
    steps that tuned the other (one validation session: both read it)."""
    first = time_split(n_train, val_share)
    return first, first + (n_train - first) // 2 if n_train - first >= 2 else first


def _build_model(cfg: TrainConfig, vocab: Vocabulary, features: TrackFeatureTable | None) -> SongNet:
    feats = features.rows(vocab.track_ids) if (features is not None and cfg.use_track_features) else None
    mc = ModelConfig(
        n_classes=vocab.n_classes, n_own=vocab.n_own, n_artists=vocab.n_artists, n_context=N_CONTEXT,
        n_track_features=0 if feats is None else feats.shape[1], dim=cfg.dim, hidden=cfg.hidden,
        dropout=cfg.dropout, copy=cfg.copy, memory=cfg.memory if cfg.copy else 0,
    )  # fmt: skip
    return SongNet(
        mc, torch.from_numpy(vocab.own), torch.from_numpy(vocab.artist),
        None if feats is None else torch.from_numpy(feats),
    )  # fmt: skip


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def train(
    config: TrainConfig,
    data: TrainingData,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrainResult:
    """Train on `data`; see the module docstring. `should_stop` is checked between batches:
    when it answers True the result has no model and `stopped` is set. `clock` (seconds)
    times the budget."""
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    seq = data.seq
    n_train = seq.n_sessions if data.train_sessions is None else data.train_sessions
    if n_train < 2:
        raise ValueError("training needs at least two listening sessions")
    val_first, weights_first = validation_halves(n_train, config.val_share)
    vocab = Vocabulary.build(seq.prefix(n_train), min_count=config.min_count)
    enc = EncodedSequence.build(seq, vocab)
    fit_end = seq.session_bounds(val_first - 1)[1]
    val_pos = target_positions(seq, val_first, weights_first if weights_first > val_first else n_train)
    # The model fitted before validation knows only what came before it: its classes are the
    # tracks played before the validation sessions, its features as they stood then.
    fit_vocab = Vocabulary.build(seq.prefix(val_first), min_count=config.min_count)
    fit_enc = EncodedSequence.build(seq, fit_vocab)
    seen_in_fit = np.ones(fit_vocab.n_classes, dtype=bool)

    def validate(module: SongNet) -> float:
        if len(val_pos) == 0:
            return math.nan
        ranks = evaluate_positions(ModelScorer(module, fit_enc, config.window), fit_enc, val_pos, seen_in_fit)
        return summarise(ranks, seq.session[val_pos], n_boot=1)["hr@10"].value

    started = clock()
    budget = config.time_budget_s
    fit_deadline = None if budget is None else started + budget / 2
    _seed_everything(config.seed)
    model = _build_model(config, fit_vocab, data.validation_features or data.track_features)
    fit = _fit(
        model, fit_enc, fit_end, config, config.max_epochs, validate, progress, should_stop, "fit",
        deadline=fit_deadline, clock=clock,
    )  # fmt: skip
    if fit is None:
        return TrainResult(None, stopped=True)
    best_state, best_epoch, best_val, history, tokens, softmax_classes = fit
    fit_seconds = clock() - started
    model.load_state_dict(best_state)
    model.eval()
    validation_model = LoadedModel(model, fit_vocab, config.window, {}, {"phase": "fit"})
    metrics: dict[str, float] = {
        "val_hr@10": best_val if best_val >= 0 else math.nan, "best_epoch": float(best_epoch), "val_steps": float(len(val_pos)),
        "val_first_session": float(val_first), "weights_first_session": float(weights_first),
        "train_sessions": float(n_train),
        "classes": float(vocab.n_classes), "own_embeddings": float(vocab.n_own - 1),
        "fit_epochs": float(len(history)), "softmax_classes": softmax_classes,
    }  # fmt: skip
    refit_fits = True
    if budget is not None and fit_deadline is not None and history:
        refit_fits = best_epoch * fit_seconds / len(history) <= started + budget - clock()
        metrics["budget_stopped"] = float(started + fit_seconds >= fit_deadline and len(history) < config.max_epochs)
    metrics["refit"] = float(config.refit and best_epoch > 0 and refit_fits)
    if config.refit and best_epoch > 0 and refit_fits:
        _seed_everything(config.seed)
        model = _build_model(config, vocab, data.track_features)
        end = seq.session_bounds(n_train - 1)[1]
        refit = _fit(model, enc, end, config, best_epoch, None, progress, should_stop, "refit")
        if refit is None:
            return TrainResult(None, stopped=True)
        model.load_state_dict(refit[0])
        tokens += refit[4]
    elapsed = clock() - started
    metrics.update({"train_seconds": elapsed, "tokens_per_second": tokens / max(elapsed, 1e-9)})
    model.eval()
    refitted = metrics["refit"] > 0
    # Without a refit the model is the one fitted before validation, with that one's classes.
    loaded = LoadedModel(model, vocab if refitted else fit_vocab, config.window, metrics, {"config": str(asdict(config))})
    validation_model.metrics = metrics
    return TrainResult(loaded, metrics, False, history, validation_model if refitted else loaded)


# best state, best epoch, best validation HR@10, per-epoch history, tokens trained on, and the
# mean number of classes a step's softmax ran over (all of them unless sampled)
FitOutcome = tuple[dict[str, torch.Tensor], int, float, list[dict[str, float]], int, float]


def _fit(
    model: SongNet,
    enc: EncodedSequence,
    end: int,
    cfg: TrainConfig,
    epochs: int,
    validate: Callable[[SongNet], float] | None,
    progress: Callable[[TrainProgress], None] | None,
    should_stop: Callable[[], bool] | None,
    phase: str,
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FitOutcome | None:
    """Epochs over positions [0, end); with `validate`, early stopping on it, and no new
    epoch once `clock()` is past `deadline`. None if stopped."""
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best_state = copy.deepcopy(model.state_dict())
    stopping, tokens = EarlyStopping(cfg.patience, cfg.min_gain), 0
    history: list[dict[str, float]] = []
    n_classes = model.cfg.n_classes
    sampled = cfg.sampled_negatives > 0 and 4 * cfg.sampled_negatives < n_classes
    scored, n_steps = 0, 0
    began = clock()
    for epoch in range(1, epochs + 1):
        model.train()
        n_windows = max(cfg.batch_size * cfg.min_steps, math.ceil(cfg.coverage * end / cfg.window))
        starts = rng.integers(0, max(1, end - cfg.window // 2), size=n_windows)
        steps = math.ceil(len(starts) / cfg.batch_size)
        total, count = 0.0, 0
        for step in range(steps):
            if should_stop is not None and should_stop():
                return None
            x, y = make_batch(enc, starts[step * cfg.batch_size : (step + 1) * cfg.batch_size], cfg.window, end, cfg.memory)
            candidates = sample_candidates(y, n_classes, cfg.sampled_negatives) if sampled else None
            _, loss = model(x, y, candidates=candidates)
            scored, n_steps = scored + (n_classes if candidates is None else len(candidates.classes)), n_steps + 1
            assert loss is not None
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            n = int((y >= 0).sum())
            tokens += n
            total, count = total + float(loss.detach()) * n, count + n
            last = step == steps - 1
            val = validate(model) if (last and validate is not None) else None
            if val is not None and stopping.observe(epoch, val):
                best_state = copy.deepcopy(model.state_dict())
            if progress is not None:
                progress(TrainProgress(
                    epoch, epochs, step + 1, steps, total / max(count, 1), val,
                    stopping.best if stopping.best >= 0 else None, phase,
                ))  # fmt: skip
        history.append({
            "epoch": float(epoch), "loss": total / max(count, 1), "val_hr@10": val if val is not None else math.nan,
            "seconds": clock() - began,  # since the phase began, validation included
        })  # fmt: skip
        if validate is None:  # no figure: the rule counts the epoch as the best so far
            stopping.observe(epoch, math.nan)
            best_state = copy.deepcopy(model.state_dict())
        elif stopping.done:
            break
        if deadline is not None and clock() >= deadline:
            break
    return best_state, stopping.best_epoch, stopping.best, history, tokens, scored / max(n_steps, 1)
