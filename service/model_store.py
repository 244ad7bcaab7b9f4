"""Trained models in SQLite: versioned rows, one promoted, the last few kept.

A row of `model_version` holds a checkpoint (the bytes `songnet_core.model.save_checkpoint`
writes: weights, config, vocabulary), the metrics, and the data watermark (the highest play
id it was trained on). Exactly one row is promoted at a time; promoting is one transaction,
so a crash at any moment leaves the previous promoted model in place and loadable. Pruning
keeps the newest `keep` rows and never deletes the promoted one.

The promotion rule (`decide_promotion`): a new model replaces the promoted one only if its
validation HR@10 is not worse than the promoted model's on the *same* validation split,
minus a small tolerance. Comparing figures measured on different splits would reward
whichever model happened to get the easier one. A model refit on every session after early
stopping has seen any later validation split, so each row also keeps the model as it was
before its refit (`validation_checkpoint`), and that one is what later models are compared
with (`service.training`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine, delete, update
from sqlmodel import Session, col, select

from service import tables
from service.db import now_ts, session_scope

if TYPE_CHECKING:
    from songnet_core.model import LoadedModel

log = structlog.get_logger(__name__)

DEFAULT_KEEP = 3
DEFAULT_TOLERANCE = 0.005


@dataclass(frozen=True)
class StoredModel:
    """A `model_version` row without its checkpoint bytes."""

    id: int
    created_at: int
    promoted: bool
    metrics: dict[str, Any]
    watermark_play_id: int
    plays_trained: int
    note: str | None
    size_bytes: int


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    new_hr: float, current_hr: float | None, *, tolerance: float = DEFAULT_TOLERANCE
) -> PromotionDecision:
    """Promote when there is no current model, or the new one's validation HR@10 is at least
    the current one's on the same split minus `tolerance`."""
    if current_hr is None:
        return PromotionDecision(True, "no promoted model yet")
    if new_hr >= current_hr - tolerance:
        return PromotionDecision(
            True,
            f"validation HR@10 {new_hr:.4f} vs the promoted model's {current_hr:.4f} on the same split "
            f"(tolerance {tolerance})",
        )
    return PromotionDecision(
        False,
        f"validation HR@10 {new_hr:.4f} is below the promoted model's {current_hr:.4f} on the same split "
        f"by more than {tolerance}; keeping the promoted model",
    )


def _stored(row: tables.ModelVersion) -> StoredModel:
    assert row.id is not None
    try:
        metrics = json.loads(row.metrics_json)
    except ValueError:
        metrics = {}
    return StoredModel(
        id=row.id,
        created_at=row.created_at,
        promoted=row.promoted,
        metrics=metrics if isinstance(metrics, dict) else {},
        watermark_play_id=row.watermark_play_id,
        plays_trained=row.plays_trained,
        note=row.note,
        size_bytes=len(row.checkpoint),
    )


def save_model(
    engine: Engine,
    checkpoint: bytes,
    metrics: dict[str, Any],
    *,
    watermark_play_id: int,
    plays_trained: int,
    note: str | None = None,
    promote: bool = False,
    now: int | None = None,
    validation_checkpoint: bytes | None = None,
) -> StoredModel:
    """Store a trained model as a new version (promoted in the same transaction if asked).

    `validation_checkpoint` is the model as it was before a refit on the validation
    sessions, kept to compare later models with (`load_validation_model`)."""
    with session_scope(engine) as session:
        if promote:
            session.exec(update(tables.ModelVersion).values(promoted=False))
        row = tables.ModelVersion(
            created_at=now if now is not None else now_ts(),
            promoted=promote,
            checkpoint=checkpoint,
            validation_checkpoint=validation_checkpoint,
            metrics_json=json.dumps(metrics, sort_keys=True),
            watermark_play_id=watermark_play_id,
            plays_trained=plays_trained,
            note=note,
        )
        session.add(row)
        session.flush()
        stored = _stored(row)
    log.info("model stored", model_version=stored.id, promoted=promote, size_bytes=stored.size_bytes)
    return stored


def promote(engine: Engine, model_id: int) -> None:
    """Make `model_id` the promoted model (one transaction: never zero or two promoted)."""
    with session_scope(engine) as session:
        if session.get(tables.ModelVersion, model_id) is None:
            raise KeyError(f"no model version {model_id}")
        session.exec(update(tables.ModelVersion).values(promoted=False))
        session.exec(
            update(tables.ModelVersion).where(col(tables.ModelVersion.id) == model_id).values(promoted=True)
        )
    log.info("model promoted", model_version=model_id)


def set_note(engine: Engine, model_id: int, note: str) -> None:
    with session_scope(engine) as session:
        row = session.get(tables.ModelVersion, model_id)
        if row is not None:
            row.note = note
            session.add(row)


def prune(engine: Engine, keep: int = DEFAULT_KEEP) -> list[int]:
    """Delete all but the newest `keep` versions; the promoted one is always kept."""
    keep = max(keep, 1)
    with session_scope(engine) as session:
        ids = session.exec(select(tables.ModelVersion.id).order_by(col(tables.ModelVersion.id).desc())).all()
        promoted = set(
            session.exec(select(tables.ModelVersion.id).where(col(tables.ModelVersion.promoted))).all()
        )
        doomed = [i for i in ids[keep:] if i is not None and i not in promoted]
        if doomed:
            session.exec(delete(tables.ModelVersion).where(col(tables.ModelVersion.id).in_(doomed)))
    if doomed:
        log.info("old model versions pruned", pruned=doomed, kept=keep)
    return doomed


def list_models(engine: Engine) -> list[StoredModel]:
    """Every stored version, newest first (checkpoints not loaded)."""
    with Session(engine) as session:
        rows = session.exec(select(tables.ModelVersion).order_by(col(tables.ModelVersion.id).desc())).all()
        return [_stored(r) for r in rows]


def promoted_model(engine: Engine) -> StoredModel | None:
    with Session(engine) as session:
        row = session.exec(select(tables.ModelVersion).where(col(tables.ModelVersion.promoted))).first()
        return None if row is None else _stored(row)


def promoted_checkpoint(engine: Engine) -> tuple[StoredModel, bytes] | None:
    with Session(engine) as session:
        row = session.exec(select(tables.ModelVersion).where(col(tables.ModelVersion.promoted))).first()
        return None if row is None else (_stored(row), bytes(row.checkpoint))


def load_promoted(engine: Engine) -> LoadedModel | None:
    """The promoted model, ready to score; None when no model was ever promoted.

    A checkpoint that cannot be loaded (written by an incompatible songnet) is logged and
    treated as absent, so `songnet train` can replace it.
    """
    found = promoted_checkpoint(engine)
    if found is None:
        return None
    return _load(*found)


def load_model(engine: Engine, model_id: int) -> LoadedModel | None:
    """Version `model_id`, ready to score; None when it is gone or cannot be loaded."""
    with Session(engine) as session:
        row = session.get(tables.ModelVersion, model_id)
        if row is None:
            return None
        found = (_stored(row), bytes(row.checkpoint))
    return _load(*found)


def load_validation_model(engine: Engine, model_id: int) -> LoadedModel | None:
    """Version `model_id` as it was before its refit (itself when it had none)."""
    with Session(engine) as session:
        row = session.get(tables.ModelVersion, model_id)
        if row is None:
            return None
        data = row.validation_checkpoint if row.validation_checkpoint is not None else row.checkpoint
        found = (_stored(row), bytes(data))
    return _load(*found)


def _load(stored: StoredModel, data: bytes) -> LoadedModel | None:
    from songnet_core.model import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(data)
    except (CheckpointError, TypeError, KeyError, ValueError, RuntimeError) as exc:
        # A checkpoint of another songnet version (other config fields, other weights) too.
        log.error(
            "stored model cannot be loaded; run `songnet train` to train a new one",
            model_version=stored.id,
            error=f"{type(exc).__name__}: {exc}",
        )
        return None
