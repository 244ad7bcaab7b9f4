"""The evaluation protocol, so figures compare across tools.

Plays ≥ 30 s, music only; sessions split at 30-min gaps, consecutive repeats collapsed
(`dataset.build_sequence`). Sessions ordered by start; the last 20 % are test. In each test
session every track after the first is a target, predicted from everything before it, by
ranking every track seen in training (no sampled negatives), the current track excluded;
a target never seen in training is a miss. Earlier test sessions serve as history (the
model reads them, the repeat rule and session-kNN's current session use them), never as
training data. HR@10, MRR@10 and NDCG@10 come with 95 % bootstrap intervals over test
sessions. The model's hyper-parameters are chosen on a validation split carved from the
training sessions (`train.train`), never on test.

Beside the model alone, "blend" is the model fused with the baselines (`blend`), its weights
fitted on that same validation split (the model trained without those sessions, baselines
counting only what came before them), then applied unchanged on test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from songnet_core.baselines import Markov, MostPopular, Repeat, SessionKNN
from songnet_core.blend import fit_weights, fused_ranks, top_lists
from songnet_core.dataset import (
    EncodedSequence,
    ListeningSequence,
    Vocabulary,
    build_sequence,
    target_positions,
    time_split,
)
from songnet_core.features import compute_track_features, feature_matrix
from songnet_core.history import Listen
from songnet_core.metrics import METRICS, Estimate, Scorer, evaluate_positions, summarise
from songnet_core.model import LoadedModel
from songnet_core.train import (
    ModelScorer,
    TrackFeatureTable,
    TrainConfig,
    TrainingData,
    TrainProgress,
    train,
)

TEST_SHARE = 0.2


@dataclass(frozen=True)
class ProtocolSplit:
    seq: ListeningSequence
    first_test_session: int
    positions: np.ndarray  # target positions in the test sessions
    vocab: Vocabulary  # the tracks seen in training, most played first

    @property
    def train_end(self) -> int:
        return self.seq.session_bounds(self.first_test_session - 1)[1]


def evaluation_train_config(**overrides: Any) -> TrainConfig:
    """`TrainConfig`'s defaults without the wall-clock budget: figures that reproduce on any
    machine, however fast."""
    return TrainConfig(**{"time_budget_s": None, **overrides})


def protocol_split(
    seq: ListeningSequence, *, test_share: float = TEST_SHARE, min_count: int = 2, validation_share: float | None = None
) -> ProtocolSplit:
    """The protocol's split of `seq`. With `validation_share`, the test part is dropped and the
    last `validation_share` of the training sessions play its role: figures to tune on."""
    if seq.n_sessions < 2:
        raise ValueError(f"evaluation needs at least two listening sessions, got {seq.n_sessions}")
    first = time_split(seq.n_sessions, test_share)
    if validation_share is not None:
        seq = seq.prefix(first)
        if seq.n_sessions < 2:
            raise ValueError("too few training sessions to carve a validation split")
        first = time_split(seq.n_sessions, validation_share)
    vocab = Vocabulary.build(seq.prefix(first), min_count=min_count)
    return ProtocolSplit(seq, first, target_positions(seq, first), vocab)


@dataclass
class EvaluationReport:
    test_steps: int
    test_sessions: int
    train_sessions: int
    results: dict[str, dict[str, Estimate]]  # scorer name -> metric -> estimate
    model_metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "test_steps": self.test_steps, "test_sessions": self.test_sessions,
            "train_sessions": self.train_sessions,
        }  # fmt: skip
        for name, metrics in self.results.items():
            row: dict[str, Any] = {}
            for m, est in metrics.items():
                row[m] = round(est.value, 4)
                row[f"{m}_ci"] = [round(est.lo, 4), round(est.hi, 4)]
            out[name] = row
        out["model_training"] = {k: round(v, 4) for k, v in self.model_metrics.items()}
        return out


def baseline_scorers(split: ProtocolSplit, *, sknn_k: int = 100, sknn_sample: int = 1000) -> dict[str, Any]:
    enc = EncodedSequence.build(split.seq, split.vocab)
    n = split.first_test_session
    return {
        "pop": MostPopular(enc, n), "markov": Markov(enc, n),
        "sknn": SessionKNN(enc, n, k=sknn_k, sample=sknn_sample), "repeat": Repeat(enc, n),
    }  # fmt: skip


def training_features(listens: Sequence[Listen], split: ProtocolSplit, tz: str) -> TrackFeatureTable:
    """The feature cache as it would have been at the end of training: test plays unseen."""
    from zoneinfo import ZoneInfo

    last_train_ts = int(split.seq.end_ts[split.train_end - 1])
    feats = compute_track_features([x for x in listens if x.end_ts <= last_train_ts], tz=ZoneInfo(tz))
    ids = np.asarray(sorted(feats), dtype=np.int64)
    return TrackFeatureTable(ids, feature_matrix(ids.tolist(), feats, reference_ts=last_train_ts))


def fit_blend_on_validation(
    split: ProtocolSplit,
    enc: EncodedSequence,
    validation_model: LoadedModel,
    val_first: int,
    *,
    max_steps: int | None = None,
    seed: int = 0,
) -> dict[str, float] | None:
    """Blend weights from the validation sessions [val_first, first test session): the model
    that never trained on them and baselines that count only the sessions before them. None
    when there are no validation steps. `max_steps`: fit on a random sample of that many."""
    end = split.first_test_session
    positions = target_positions(split.seq, val_first, end)
    if max_steps is not None and len(positions) > max_steps:
        positions = np.sort(np.random.default_rng(seed).choice(positions, size=max_steps, replace=False))
    if len(positions) == 0:
        return None
    fit_end = split.seq.session_bounds(val_first - 1)[1]
    seen = enc.tracks.cls[:fit_end]
    candidates = np.zeros(split.vocab.n_classes, dtype=bool)
    candidates[seen[seen >= 0]] = True
    val_split = ProtocolSplit(split.seq, val_first, positions, split.vocab)
    scorers = {"model": ModelScorer(validation_model.module, enc, validation_model.window), **baseline_scorers(val_split)}
    return fit_weights(top_lists(scorers, enc, positions, candidates))


def evaluate_listens(
    listens: Sequence[Listen],
    *,
    train_config: TrainConfig | None = None,
    tz: str = "UTC",
    n_boot: int = 1000,
    seed: int = 0,
    with_model: bool = True,
    with_blend: bool = True,
    on_validation: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
) -> EvaluationReport:
    """Run the whole protocol on a history: split, train on the training part, rank test.

    `on_validation`: the same on the validation split inside the training part (test unseen),
    for choosing hyper-parameters."""
    cfg = train_config or evaluation_train_config()
    split = protocol_split(
        build_sequence(listens, tz=tz), min_count=cfg.min_count,
        validation_share=cfg.val_share if on_validation else None,
    )  # fmt: skip
    seq = split.seq
    enc = EncodedSequence.build(seq, split.vocab)
    candidates = np.ones(split.vocab.n_classes, dtype=bool)
    sessions = seq.session[split.positions]
    scorers: dict[str, Scorer] = {}
    model_metrics: dict[str, float] = {}
    if with_model:
        data = TrainingData(seq, split.first_test_session, training_features(listens, split, tz))
        result = train(cfg, data, progress=progress)
        assert result.model is not None
        if not np.array_equal(result.model.vocab.track_ids, split.vocab.track_ids):
            raise AssertionError("the model's classes differ from the tracks seen in training")
        scorers["model"] = ModelScorer(result.model.module, enc, result.model.window)
        model_metrics = dict(result.metrics)
    scorers.update(baseline_scorers(split))
    weights = None
    if with_model and with_blend and result.validation_model is not None and "val_first_session" in result.metrics:
        weights = fit_blend_on_validation(split, enc, result.validation_model, int(result.metrics["val_first_session"]))
    if weights is not None:
        # One scoring pass gives every scorer's ranks and the lists the blend fuses.
        lists = top_lists(scorers, enc, split.positions, candidates)
        ranks = {**lists.ranks, "blend": fused_ranks(lists, weights)}
        model_metrics.update({f"blend_{k}": v for k, v in weights.items()})
    else:
        ranks = {name: evaluate_positions(sc, enc, split.positions, candidates) for name, sc in scorers.items()}
    results = {name: summarise(r, sessions, n_boot=n_boot, seed=seed) for name, r in ranks.items()}
    return EvaluationReport(
        test_steps=len(split.positions), test_sessions=seq.n_sessions - split.first_test_session,
        train_sessions=split.first_test_session, results=results, model_metrics=model_metrics,
    )  # fmt: skip


__all__ = [
    "METRICS", "EvaluationReport", "ProtocolSplit", "evaluate_listens", "evaluation_train_config", "fit_blend_on_validation",
    "protocol_split",
]  # fmt: skip
