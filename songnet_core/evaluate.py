"""The evaluation protocol, so figures compare across tools.

Plays ≥ 30 s, music only; sessions split at 30-min gaps, consecutive repeats collapsed
(`dataset.build_sequence`). Sessions ordered by start; the last 20 % are test. In each test
session every track after the first is a target, predicted from everything before it, by
ranking every track seen in training (no sampled negatives), the current track excluded;
a target never seen in training is a miss. HR@10, MRR@10 and NDCG@10 come with 95 % bootstrap
intervals over test sessions.

Every scorer may use every play before the scored step (training sessions, earlier test
sessions, the current session's prefix), and none learns from the target before scoring it.
The baselines (`baselines.py`) update their counts play by play. `songnet` is exactly what the
weekly generation ranks with (`ranker.songnet_scorer`): the library as it stood when the
session began (every play before it) and the session's prefix as the playlist so far; `model`
is the LSTM of that same path alone; `fusion` the four baselines fused without the LSTM.

The validation model (`train.train`'s early-stopped one) knows only the vocabulary, features
and counts of plays before the validation sessions. Early stopping reads the first half of
the validation sessions, the fusion weights are fitted on the second half, so neither choice
is made on the steps that tuned the other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from songnet_core.baselines import Markov, MostPopular, Repeat, SessionKNN
from songnet_core.blend import SCORERS, TOP, BlendedNextTrack, TopLists, fit_weights
from songnet_core.dataset import (
    EncodedSequence,
    FloatArray,
    ListeningSequence,
    Vocabulary,
    build_sequence,
    target_positions,
    time_split,
)
from songnet_core.features import compute_track_features, feature_matrix
from songnet_core.generate import GenerationContext
from songnet_core.history import Listen
from songnet_core.metrics import (
    METRICS,
    Estimate,
    Scorer,
    evaluate_positions,
    paired_difference,
    summarise,
    target_ranks,
)
from songnet_core.model import LoadedModel
from songnet_core.ranker import (
    ListeningHistory,
    ModelNextTrack,
    blended_scorer,
    lstm_of,
    model_scorer,
    reranked_scorer,
    songnet_scorer,
)
from songnet_core.rerank import (
    FitStep,
    PlayIndex,
    RerankedNextTrack,
    Reranker,
    StepFeatures,
    fit_reranker,
    step_features,
)
from songnet_core.train import (
    TrackFeatureTable,
    TrainConfig,
    TrainingData,
    TrainProgress,
    train,
    validation_halves,
)

TEST_SHARE = 0.2
BASELINE_NAMES = ("pop", "markov", "sknn", "repeat")
# Called as (phase, steps done, steps in all) while the test or validation steps are ranked.
StepProgress = Callable[[str, int, int], None]


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
    # The fit's epochs (`TrainResult.history`): loss, validation HR@10, seconds since it began;
    # what an early-stopping rule can be judged on without training again.
    training_curve: list[dict[str, float]] = field(default_factory=list)
    best_baseline: str | None = None
    # songnet − best baseline per metric, paired bootstrap over test sessions
    differences: dict[str, Estimate] = field(default_factory=dict)

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
            row["steps"] = self.test_steps
            out[name] = row
        if self.best_baseline is not None:
            best = self.results[self.best_baseline]
            out["best_baseline"] = {"name": self.best_baseline, "hr@10": round(best["hr@10"].value, 4), "mrr@10": round(best["mrr@10"].value, 4)}
            if "songnet" in self.results:
                ratio: dict[str, Any] = {}
                for m in ("hr@10", "mrr@10"):
                    ratio[m] = round(self.results["songnet"][m].value / max(best[m].value, 1e-9), 4)
                    d = self.differences[m]
                    ratio[f"{m}_difference"] = round(d.value, 4)
                    ratio[f"{m}_difference_ci"] = [round(d.lo, 4), round(d.hi, 4)]
                out["ratio"] = ratio
        out["model_training"] = {k: round(v, 4) for k, v in self.model_metrics.items()}
        if self.training_curve:
            out["training_curve"] = [{k: round(v, 4) for k, v in epoch.items()} for epoch in self.training_curve]
        return out


def baseline_scorers(enc: EncodedSequence, *, sknn_k: int = 100, sknn_sample: int = 1000) -> dict[str, Scorer]:
    """The history-updated baselines over `enc`."""
    return {
        "pop": MostPopular(enc), "markov": Markov(enc), "sknn": SessionKNN(enc, k=sknn_k, sample=sknn_sample),
        "repeat": Repeat(enc),
    }  # fmt: skip


def features_before(listens: Sequence[Listen], ts: int, tz: str) -> TrackFeatureTable:
    """The feature cache as it would have been at `ts`: later plays unseen."""
    from zoneinfo import ZoneInfo

    feats = compute_track_features([x for x in listens if x.end_ts <= ts], tz=ZoneInfo(tz))
    ids = np.asarray(sorted(feats), dtype=np.int64)
    return TrackFeatureTable(ids, feature_matrix(ids.tolist(), feats, reference_ts=ts))


@dataclass(frozen=True)
class RankingLibrary:
    """A listening sequence read as the library at each session's start: what the ranker of
    generation reads there."""

    seq: ListeningSequence
    zone: str
    artist_of: npt.NDArray[np.int64] = field(init=False)
    # The whole sequence as `ListeningHistory.of` reads it, once: each session's history is
    # a prefix of it (slicing lists, not rebuilding them session after session).
    _whole: ListeningHistory = field(init=False, repr=False)
    _plays: PlayIndex = field(init=False, repr=False)  # the whole sequence's, each history a prefix

    def __post_init__(self) -> None:
        seq = self.seq
        artist_of = np.full(int(seq.track_ids.max(initial=-1)) + 1, -1, dtype=np.int64)
        artist_of[seq.track_ids] = seq.artist_ids
        object.__setattr__(self, "artist_of", artist_of)
        whole = ListeningHistory.of(seq)
        object.__setattr__(self, "_whole", whole)
        object.__setattr__(self, "_plays", PlayIndex(whole.track_ids, whole.end_ts))

    def history_before(self, session: int) -> ListeningHistory:
        """`ListeningHistory.of(seq, session)`: the plays of the sessions before `session`."""
        end = self.seq.session_bounds(session - 1)[1] if session > 0 else 0
        w = self._whole
        return ListeningHistory(
            w.track_ids[:end], w.artist_ids[:end], w.end_ts[:end], w.sessions[:session], play_index=self._plays
        )

    def context(self, session: int) -> GenerationContext:
        from zoneinfo import ZoneInfo

        start = self.seq.session_bounds(session)[0]
        return GenerationContext.at(int(self.seq.end_ts[start]), ZoneInfo(self.zone))


def _by_session(seq: ListeningSequence, positions: npt.NDArray[np.int64]) -> list[tuple[int, npt.NDArray[np.int64]]]:
    sess = seq.session[positions]
    return [(int(s), positions[sess == s]) for s in np.unique(sess)]


def protocol_training_data(listens: Sequence[Listen], split: ProtocolSplit, cfg: TrainConfig, tz: str) -> TrainingData:
    """What the model trains on under the protocol: the training sessions, the track features
    as of the end of training, and for the validation model those as of the start of the
    validation sessions."""
    seq, n_train = split.seq, split.first_test_session
    val_first, _ = validation_halves(n_train, cfg.val_share)
    val_start = seq.session_bounds(val_first)[0] if val_first < n_train else split.train_end
    return TrainingData(
        seq, n_train, features_before(listens, int(seq.end_ts[split.train_end - 1]), tz),
        validation_features=features_before(listens, int(seq.end_ts[max(val_start - 1, 0)]), tz),
    )  # fmt: skip


@dataclass(frozen=True)
class FittedRanking:
    """What is fitted on validation steps for ranking: songnet's fusion weights (model and
    baselines) and the baselines' alone, and the learned rerankers over each one's lists
    (None where too few steps had their target among the candidates)."""

    weights: dict[str, float]
    fusion_weights: dict[str, float]
    reranker: Reranker | None
    fusion_reranker: Reranker | None

    def metrics(self) -> dict[str, float]:
        """As a model's metrics keep them: `blend_<scorer>`, `fusion_<scorer>`, `rerank_<feature>`."""
        out = {f"blend_{k}": v for k, v in self.weights.items()}
        out.update({f"fusion_{k}": v for k, v in self.fusion_weights.items()})
        if self.reranker is not None:
            out.update(self.reranker.to_metrics())
        return out


@dataclass(frozen=True)
class FittingStep:
    """One validation step as the generation ranker sees it: its session, its position (the
    target is the track there), the playlist so far, every scorer's top list and the
    candidates' features over them (`rerank.step_features` over `SCORERS`)."""

    session: int
    position: int
    prefix: list[int]
    lists: Mapping[str, npt.NDArray[np.int64]]
    features: StepFeatures


def fitting_steps(
    library: RankingLibrary,
    validation_model: LoadedModel,
    positions: npt.NDArray[np.int64],
    *,
    progress: StepProgress | None = None,
) -> Iterator[FittingStep]:
    """The steps at `positions` (validation steps), session by session, from the lists and
    features the generation ranker reads: the listener's history before each session."""
    seq = library.seq
    done = 0
    for s, pos in _by_session(seq, positions):
        history = library.history_before(s)
        blended = blended_scorer(
            model_scorer(validation_model, history, artist_of=library.artist_of, zone_name=library.zone), history,
            dict.fromkeys(SCORERS, 1.0),
        )  # fmt: skip
        ctx = library.context(s)
        start = seq.session_bounds(s)[0]
        prefixes = [seq.track_ids[start:p].tolist() for p in pos.tolist()]
        assert isinstance(blended.model, ModelNextTrack)
        blended.model.prepare(prefixes, ctx)  # the session's LSTM steps in one pass
        plays = history.play_index
        assert plays is not None
        for prefix, p in zip(prefixes, pos.tolist(), strict=True):
            computed = blended.lists_and_model(prefix, ctx)
            full = step_features(blended, SCORERS, plays, len(history.track_ids), library.artist_of, prefix, ctx, computed)
            yield FittingStep(s, p, prefix, computed[0], full)
        done += len(pos)
        if progress is not None:
            progress("fitting weights", done, len(positions))


def candidate_row(features: StepFeatures, track: int) -> int:
    """The row of `track` among a step's candidates, -1 if it is none of them."""
    at = int(np.searchsorted(features.cands, track))
    return at if at < features.cands.size and int(features.cands[at]) == track else -1


def fit_songnet_weights(
    library: RankingLibrary,
    validation_model: LoadedModel,
    positions: npt.NDArray[np.int64],
    *,
    progress: StepProgress | None = None,
) -> FittedRanking | None:
    """The fusion weights and rerankers of songnet (model and baselines) and of the baselines
    alone, fitted on `positions` (validation steps) from the lists and features the
    generation ranker reads. None when there are no steps."""
    if len(positions) == 0:
        return None
    seq = library.seq
    vocab = set(validation_model.track_ids.tolist())
    ids = np.full((len(positions), len(SCORERS), TOP), -1, dtype=np.int64)
    targets = np.full(len(positions), -1, dtype=np.int64)
    full_steps: list[FitStep] = []
    base_steps: list[FitStep] = []
    for row, step in enumerate(fitting_steps(library, validation_model, positions, progress=progress)):
        for j, name in enumerate(SCORERS):
            got = step.lists[name][:TOP]
            ids[row, j, : got.size] = got
            # Short lists (tiny libraries) padded with ids no target has.
            ids[row, j, got.size :] = -2 - np.arange(TOP - got.size)
        t = int(seq.track_ids[step.position])
        targets[row] = t if t in vocab and t != int(seq.track_ids[step.position - 1]) else -1
        full = step.features
        for f, steps in ((full, full_steps), (full.restricted(SCORERS, SCORERS[1:]), base_steps)):
            steps.append(FitStep(f.x, candidate_row(f, t) if targets[row] >= 0 else -1))
    weights = fit_weights(TopLists(SCORERS, ids, targets, {}))
    fusion = {"model": 0.0, **fit_weights(TopLists(SCORERS[1:], ids[:, 1:], targets, {}))}
    return FittedRanking(
        weights, fusion, fit_reranker(full_steps, SCORERS, weights), fit_reranker(base_steps, SCORERS[1:], fusion)
    )


def songnet_ranks(
    library: RankingLibrary,
    model: LoadedModel,
    weights: Mapping[str, float],
    fusion_weights: Mapping[str, float] | None,
    split: ProtocolSplit,
    *,
    reranker: Reranker | None = None,
    fusion_reranker: Reranker | None = None,
    progress: StepProgress | None = None,
) -> dict[str, npt.NDArray[np.int64]]:
    """Protocol ranks of `songnet` (the generation ranker: `reranker` over its lists, else
    its fusion under `weights`), `model` (its LSTM alone) and, with `fusion_weights`,
    `fusion` (the baselines alone: `fusion_reranker` over their lists, else their fusion) at
    every test step."""
    seq, vocab = library.seq, split.vocab
    cls = EncodedSequence.build(seq, vocab).tracks.cls
    candidates = np.ones(vocab.n_classes, dtype=bool)
    names = ["songnet", "model"] + (["fusion"] if fusion_weights is not None else [])
    out = {n: np.zeros(len(split.positions), dtype=np.int64) for n in names}
    done = 0
    for s, pos in _by_session(seq, split.positions):
        history = library.history_before(s)
        songnet = songnet_scorer(
            model, history, weights, artist_of=library.artist_of, zone_name=library.zone, reranker=reranker
        )
        alone = lstm_of(songnet)
        scorers: dict[str, Any] = {"songnet": songnet, "model": alone}
        if fusion_weights is not None:
            # The baselines alone: a blend of the same model and history under the fusion
            # weights (the model's list weighs nothing), reranked where a reranker was fitted.
            blend = songnet.blend if isinstance(songnet, RerankedNextTrack) else songnet
            fusion = (
                blend.with_weights(fusion_weights) if isinstance(blend, BlendedNextTrack)
                else blended_scorer(alone, history, fusion_weights)
            )  # fmt: skip
            scorers["fusion"] = (
                fusion if fusion_reranker is None
                else reranked_scorer(fusion, history, fusion_reranker, artist_of=library.artist_of)
            )  # fmt: skip
        ctx = library.context(s)
        start = seq.session_bounds(s)[0]
        alone.prepare([seq.track_ids[start:p].tolist() for p in pos.tolist()], ctx)  # one pass per session
        # float64 as generation ranks: no ties that its scores do not have
        rows = {n: np.empty((len(pos), vocab.n_classes), dtype=np.float64) for n in names}
        for i, p in enumerate(pos.tolist()):
            prefix = seq.track_ids[start:p].tolist()
            for n in names:
                dense = np.asarray(scorers[n].scores(prefix, ctx), dtype=np.float64)
                rows[n][i] = np.where(vocab.track_ids < dense.size, dense[np.minimum(vocab.track_ids, dense.size - 1)], -np.inf)
        for n in names:
            out[n][done : done + len(pos)] = target_ranks(cast(FloatArray, rows[n]), cls[pos], cls[pos - 1], candidates)
        done += len(pos)
        if progress is not None:
            progress("ranking test steps", done, len(split.positions))
    return out


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
    step_progress: StepProgress | None = None,
) -> EvaluationReport:
    """Run the whole protocol on a history: split, train on the training part, rank test.

    `on_validation`: the same on the validation split inside the training part (test unseen),
    for choosing hyper-parameters. Without `with_blend`, songnet is the model alone."""
    cfg = train_config or evaluation_train_config()
    split = protocol_split(
        build_sequence(listens, tz=tz), min_count=cfg.min_count,
        validation_share=cfg.val_share if on_validation else None,
    )  # fmt: skip
    seq = split.seq
    enc = EncodedSequence.build(seq, split.vocab)
    candidates = np.ones(split.vocab.n_classes, dtype=bool)
    sessions = seq.session[split.positions]
    model_metrics: dict[str, float] = {}
    training_curve: list[dict[str, float]] = []
    ranks: dict[str, npt.NDArray[np.int64]] = {}
    if with_model:
        n_train = split.first_test_session
        _, weights_first = validation_halves(n_train, cfg.val_share)
        result = train(cfg, protocol_training_data(listens, split, cfg, tz), progress=progress)
        assert result.model is not None
        model_metrics = dict(result.metrics)
        training_curve = list(result.history)
        library = RankingLibrary(seq, tz)
        fitted = None
        if with_blend and result.validation_model is not None:
            fitted = fit_songnet_weights(
                library, result.validation_model, target_positions(seq, weights_first, n_train), progress=step_progress
            )  # fmt: skip
        if fitted is None:
            model_metrics["blend_model"] = 1.0
            ranks.update(songnet_ranks(library, result.model, {"model": 1.0}, None, split, progress=step_progress))
        else:
            model_metrics.update(fitted.metrics())
            model_metrics["reranked"] = float(fitted.reranker is not None)
            ranks.update(songnet_ranks(
                library, result.model, fitted.weights, fitted.fusion_weights, split, reranker=fitted.reranker,
                fusion_reranker=fitted.fusion_reranker, progress=step_progress,
            ))  # fmt: skip
    for name, sc in baseline_scorers(enc).items():
        shown = None if step_progress is None else functools.partial(step_progress, f"baseline {name}")
        ranks[name] = evaluate_positions(sc, enc, split.positions, candidates, progress=shown)
    results = {name: summarise(r, sessions, n_boot=n_boot, seed=seed) for name, r in ranks.items()}
    best = max(BASELINE_NAMES, key=lambda b: (results[b]["hr@10"].value, results[b]["mrr@10"].value))
    differences = {}
    if "songnet" in ranks:
        differences = {
            m: paired_difference(ranks["songnet"], ranks[best], sessions, m, n_boot=n_boot, seed=seed) for m in ("hr@10", "mrr@10")
        }
    return EvaluationReport(
        test_steps=len(split.positions), test_sessions=seq.n_sessions - split.first_test_session,
        train_sessions=split.first_test_session, results=results, model_metrics=model_metrics,
        training_curve=training_curve, best_baseline=best, differences=differences,
    )  # fmt: skip


__all__ = [
    "METRICS", "EvaluationReport", "FittedRanking", "FittingStep", "ProtocolSplit", "RankingLibrary", "baseline_scorers",
    "candidate_row", "evaluate_listens", "evaluation_train_config", "features_before", "fit_songnet_weights", "fitting_steps",
    "protocol_split", "protocol_training_data", "songnet_ranks",
]  # fmt: skip
