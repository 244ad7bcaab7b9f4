"""Comparing a newly trained model with the promoted one on the same validation sessions.

Each model ranks with its own vocabulary (the promoted model may not know the newest
tracks); the candidates are the same for both: every track heard before the validation
sessions, as the evaluation protocol ranks "every track seen in training". A target outside a
model's vocabulary is a miss for that model. Validation sessions the promoted model was
trained on are left out of the comparison, so it is not rewarded for having memorised them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from songnet_core.dataset import EncodedSequence, ListeningSequence, target_positions
from songnet_core.metrics import evaluate_positions, step_metrics
from songnet_core.model import LoadedModel
from songnet_core.train import ModelScorer

# Fewer comparable validation steps than this cannot tell two models apart.
MIN_COMPARE_STEPS = 30


@dataclass(frozen=True)
class SplitComparison:
    new_hr10: float
    current_hr10: float
    steps: int  # validation steps both were scored on
    left_out_steps: int  # validation steps the promoted model had trained on


def hr10_on_positions(model: LoadedModel, seq: ListeningSequence, positions: np.ndarray, fit_end: int) -> float:
    """HR@10 of `model` at `positions` of `seq`, candidates: tracks of `seq[:fit_end]`."""
    if len(positions) == 0:
        return float("nan")
    enc = EncodedSequence.build(seq, model.vocab)
    seen = np.isin(model.vocab.track_ids, np.unique(seq.track_ids[:fit_end]))
    ranks = evaluate_positions(ModelScorer(model.module, enc, model.window), enc, positions, seen)
    return float(step_metrics(ranks)["hr@10"].mean())


def compare_on_split(
    new: LoadedModel,
    current: LoadedModel,
    seq: ListeningSequence,
    first_val_session: int,
    end_session: int,
    *,
    current_trained_until_ts: int | None = None,
) -> SplitComparison:
    """Both models' validation HR@10 on the validation sessions [first, end) of `seq` that
    start after `current_trained_until_ts` (the last play the promoted model learned from)."""
    positions = target_positions(seq, first_val_session, end_session)
    fit_end = seq.session_bounds(first_val_session - 1)[1] if first_val_session > 0 else 0
    left_out = 0
    if current_trained_until_ts is not None and len(positions):
        starts = seq.session_starts[seq.session[positions]]
        unseen = seq.end_ts[starts] > current_trained_until_ts
        left_out = int((~unseen).sum())
        positions = positions[unseen]
    return SplitComparison(
        new_hr10=hr10_on_positions(new, seq, positions, fit_end),
        current_hr10=hr10_on_positions(current, seq, positions, fit_end),
        steps=len(positions),
        left_out_steps=left_out,
    )
