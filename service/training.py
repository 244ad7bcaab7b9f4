"""Training a model on the stored history, storing it, and promoting it if it is not worse.

`train_and_maybe_promote` is the one entry point (`songnet train`, the daemon's train job):
plays from the library → listening sequence and feature matrix → `songnet_core.train.train`
→ compared with the promoted model on the new model's own validation split
(`songnet_core.promotion`) → stored as a new `model_version`, promoted or not, old versions
pruned. A stop request (SIGTERM) ends training at a batch boundary and stores nothing.

Both sides of the comparison are the models as they were before their refit on every
session: the new one never saw its validation sessions, and the promoted one was trained on
sessions before them (validation sessions it did see are left out of the comparison).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from service import model_store, tables
from service.settings import Settings

log = structlog.get_logger(__name__)

if TYPE_CHECKING:  # torch loads lazily: `songnet --help` must stay fast
    from songnet_core.dataset import ListeningSequence
    from songnet_core.model import LoadedModel
    from songnet_core.train import TrainConfig, TrainProgress


# Training needs this many listening sessions (runs of plays of at least `min_play_ms`, a
# `session_gap_minutes` gap apart): the last one or more for validation (early stopping and the
# blend weights), the others to fit on (`songnet_core.train.train` needs two or more). Below
# it the library is "too small to train": its playlists come from the simple rules alone
# (`ranker.rules_scorer`) until it grows.
MIN_TRAIN_SESSIONS = 3


class TrainingError(Exception):
    """Training cannot start (no plays, too few sessions); the message says what to do."""


def listening_sessions(engine: Engine, settings: Settings) -> int:
    """How many listening sessions training would see in the library now."""
    from service.library import load_listens
    from songnet_core.sessions import split_sessions

    gap_s = int(settings.session_gap_minutes * 60)
    return len(split_sessions(load_listens(engine), min_ms=settings.min_play_ms, gap_s=gap_s))


def too_small_note(sessions: int, settings: Settings) -> str:
    """Why a library with `sessions` sessions has no model, and what makes one."""
    return (
        f"{sessions} listening session(s) of plays ≥ {settings.min_play_ms // 1000} s; training needs "
        f"{MIN_TRAIN_SESSIONS}. Playlists use your simple rules (popularity, what follows what, similar "
        "sessions, repeats) until then; import more of your history to train a model"
    )


@dataclass
class TrainOutcome:
    stopped: bool
    promoted: bool = False
    model_version: int | None = None
    plays: int = 0  # plays the model was trained on (all stored plays up to the watermark)
    epochs: int = 0
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    current_hr10: float | None = None  # the promoted model's HR@10 on the same validation steps
    new_hr10_same_steps: float | None = None
    compared_steps: int = 0
    compared: str = ""  # what the promotion compared ("ranker": both full rankers); "" when nothing
    pruned: list[int] = field(default_factory=list)


def listener_zone_name(settings: Settings) -> str:
    """The IANA name of the listener's zone (`SONGNET_TIMEZONE`, else the system's)."""
    zone = settings.zone
    name = getattr(zone, "key", None) or str(zone)
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return "UTC"
    return name


def default_train_config(settings: Settings, **overrides: Any) -> TrainConfig:
    from songnet_core.train import TrainConfig

    cfg = TrainConfig()
    from_settings = {
        "max_epochs": settings.train_max_epochs,
        "coverage": settings.train_epoch_coverage,
        "min_steps": settings.train_min_steps,
        "time_budget_s": settings.train_time_budget_seconds,
    }
    known = {k: v for k, v in {**from_settings, **overrides}.items() if v is not None}
    return replace(cfg, **known) if known else cfg


def train_and_maybe_promote(
    engine: Engine,
    settings: Settings,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    config: TrainConfig | None = None,
    keep: int = model_store.DEFAULT_KEEP,
    tolerance: float = model_store.DEFAULT_TOLERANCE,
) -> TrainOutcome:
    from service.features import load_feature_matrix, recompute_features
    from service.library import load_listens
    from service.playlists import blend_weights
    from songnet_core.dataset import build_sequence
    from songnet_core.evaluate import features_before
    from songnet_core.model import save_checkpoint
    from songnet_core.promotion import MIN_COMPARE_STEPS, Ranker, compare_on_split
    from songnet_core.rerank import Reranker
    from songnet_core.train import TrackFeatureTable, TrainingData, train, validation_halves

    cfg = config or default_train_config(settings)
    zone = listener_zone_name(settings)
    listens = load_listens(engine)
    if not listens:
        raise TrainingError("no plays stored yet; import your Spotify export first (`songnet import PATH`)")
    watermark = max(x.play_id for x in listens)
    seq = build_sequence(
        listens, tz=zone, min_ms=settings.min_play_ms, gap_s=int(settings.session_gap_minutes * 60)
    )
    if seq.n_sessions < MIN_TRAIN_SESSIONS:
        raise TrainingError(f"too small to train: {too_small_note(seq.n_sessions, settings)}")
    track_ids = np.unique(seq.track_ids)
    if _features_stale(engine, watermark):
        recompute_features(engine, tz=settings.zone)
    features = TrackFeatureTable(track_ids, load_feature_matrix(engine, track_ids.tolist()))
    log.info("training started", plays=len(listens), positions=len(seq), sessions=seq.n_sessions, tracks=len(track_ids))

    # The model fitted before the validation sessions sees the features as they stood then.
    val_first, _ = validation_halves(seq.n_sessions, cfg.val_share)
    val_start = seq.session_bounds(val_first)[0] if val_first < seq.n_sessions else len(seq)
    validation_features = features_before(listens, int(seq.end_ts[max(val_start - 1, 0)]), zone)
    result = train(
        cfg, TrainingData(seq, None, features, validation_features), progress=progress, should_stop=should_stop
    )
    if result.stopped or result.model is None or (should_stop is not None and should_stop()):
        log.warning("training stopped before it finished; nothing stored, the promoted model stays")
        return TrainOutcome(stopped=True, plays=len(listens), reason="stopped")
    new = result.model
    if result.metrics.get("budget_stopped"):
        log.warning(
            "training cut short by its time budget",
            epochs=len(result.history),
            budget_seconds=cfg.time_budget_s,
            refit=bool(result.metrics.get("refit")),
            hint="the model is still used; raise SONGNET_TRAIN_TIME_BUDGET_SECONDS to train longer",
        )
    # The model before its refit on the validation sessions: what is compared.
    new_val = result.validation_model or new
    refitted = new_val is not new
    metrics = dict(result.metrics)
    n_train = int(metrics.get("train_sessions", seq.n_sessions))
    val_first = int(metrics.get("val_first_session", n_train))
    fit_end = seq.session_bounds(val_first - 1)[1]
    end = seq.session_bounds(n_train - 1)[1] if refitted else fit_end
    metrics["validation_trained_until_ts"] = float(seq.end_ts[max(fit_end - 1, 0)])
    metrics["trained_until_ts"] = float(seq.end_ts[max(end - 1, 0)])
    metrics["watermark_play_id"] = float(watermark)
    epochs = len(result.history)
    metrics.update(_blend_weights(seq, new_val, int(metrics.get("weights_first_session", val_first)), n_train, zone))

    outcome = TrainOutcome(stopped=False, plays=len(listens), epochs=epochs, metrics=metrics)
    current_info = model_store.promoted_model(engine)
    current = model_store.load_validation_model(engine, current_info.id) if current_info is not None else None
    if current is None or current_info is None:
        decision = model_store.decide_promotion(metrics.get("val_hr@10", 0.0), None, tolerance=tolerance)
    else:
        # The promoted model as it was before its own refit: it never saw these sessions.
        until = current_info.metrics.get("validation_trained_until_ts", current_info.metrics.get("trained_until_ts"))
        # What ships is compared: each LSTM fused with the baselines under its own weights.
        with one_torch_thread():
            cmp = compare_on_split(
                Ranker(new_val, blend_weights(metrics), Reranker.from_metrics(metrics)),
                Ranker(current, blend_weights(current_info.metrics), Reranker.from_metrics(current_info.metrics)),
                seq, val_first, n_train, zone=zone, current_trained_until_ts=int(until) if until is not None else None,
            )  # fmt: skip
        outcome.current_hr10, outcome.new_hr10_same_steps, outcome.compared_steps = (
            cmp.current_hr10, cmp.new_hr10, cmp.steps,
        )  # fmt: skip
        outcome.compared = cmp.compared
        metrics["compared_steps"] = float(cmp.steps)
        metrics["promoted_model_hr@10_same_split"] = cmp.current_hr10
        if cmp.steps < MIN_COMPARE_STEPS or math.isnan(cmp.new_hr10) or math.isnan(cmp.current_hr10):
            decision = model_store.PromotionDecision(
                True,
                f"only {cmp.steps} validation steps the promoted model has not trained on "
                f"({cmp.left_out_steps} left out); too few to compare, so the model trained on newer data wins",
            )
        else:
            decision = model_store.decide_promotion(cmp.new_hr10, cmp.current_hr10, tolerance=tolerance)
    if should_stop is not None and should_stop():
        log.warning("stop requested after training; nothing stored, the promoted model stays")
        return TrainOutcome(stopped=True, plays=len(listens), reason="stopped")

    info: dict[str, str | int | float] = {"tz": zone, "watermark_play_id": watermark}
    checkpoint = save_checkpoint(
        new.module, new.vocab, {k: float(v) for k, v in metrics.items()}, window=new.window, info=info
    )
    validation_checkpoint = (
        save_checkpoint(new_val.module, new_val.vocab, {}, window=new_val.window, info={**info, "phase": "fit"})
        if refitted
        else None
    )
    # The row's metrics also say which comparison decided the promotion ("none": no model to compare with).
    row_metrics: dict[str, Any] = {**metrics, "promotion_compared": outcome.compared or "none"}
    stored = model_store.save_model(
        engine, checkpoint, row_metrics, watermark_play_id=watermark, plays_trained=len(listens),
        note=decision.reason, promote=decision.promote, validation_checkpoint=validation_checkpoint,
    )  # fmt: skip
    outcome.model_version = stored.id
    outcome.promoted = decision.promote
    outcome.reason = decision.reason
    outcome.pruned = model_store.prune(engine, keep)
    if decision.promote:
        log.info("model promoted", model_version=stored.id, val_hr10=metrics.get("val_hr@10"), why=decision.reason)
    else:
        log.warning(
            "new model not promoted",
            model_version=stored.id,
            why=decision.reason,
            hint="the promoted model stays in use; training again after more plays may do better",
        )
    return outcome


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """The ranker's LSTM steps one track (or one session) at a time, in training's fitting and
    comparison and in generation: each op is too small to share out, and on a busy machine a
    second thread mostly waits (measured on account-d under a load of ~8
    on 2 cores: the promotion comparison took 75-100 s with 2 threads, 1.0-1.1 s with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _features_stale(engine: Engine, watermark: int) -> bool:
    """Whether the feature cache misses plays (it is rebuilt on import; this is the safety net)."""
    with Session(engine) as session:
        cached = session.exec(select(func.sum(tables.TrackFeatures.play_count))).one()
        plays = session.exec(select(func.count()).select_from(tables.PlayRow)).one()
    return int(cached or 0) != int(plays)


BLEND_FIT_STEPS = 2000  # validation steps the blend weights are fitted on (a random sample)


def _blend_weights(
    seq: ListeningSequence, validation_model: LoadedModel, weights_first: int, n_train: int, zone: str
) -> dict[str, float]:
    """The ranking metrics for generation (`FittedRanking.metrics`: `blend_<scorer>` weights
    and the `rerank_<feature>` reranker), fitted on the second half of the validation sessions
    as `songnet eval` fits them; none (the model alone) when there is nothing to fit on."""
    from songnet_core.dataset import target_positions
    from songnet_core.evaluate import RankingLibrary, fit_songnet_weights

    if weights_first <= 0 or weights_first >= n_train:
        return {}
    positions = target_positions(seq, weights_first, n_train)
    if len(positions) > BLEND_FIT_STEPS:
        positions = np.sort(np.random.default_rng(0).choice(positions, size=BLEND_FIT_STEPS, replace=False))
    with one_torch_thread():
        fitted = fit_songnet_weights(RankingLibrary(seq, zone), validation_model, positions)
    if fitted is None:
        return {}
    log.info(
        "blend weights fitted on the validation sessions", reranked=fitted.reranker is not None,
        **{k: round(v, 3) for k, v in fitted.weights.items()},
    )  # fmt: skip
    return fitted.metrics()
