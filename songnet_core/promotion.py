"""Comparing a newly trained model with the promoted one on the same validation sessions.

What is compared is what ships: each model's full ranker (`ranker.songnet_scorer`, the LSTM
reading the listener's history fused with that history's baselines under the model's own
blend weights, or reranked by its own learned reranker), as the weekly generation and `songnet eval` rank with it. At each validation
step both rankers read the same history (every play of the sessions before the step's
session, then that session's prefix) and rank the same candidates: every track heard before
the validation sessions, as the evaluation protocol ranks "every track seen in training", the
current track left out. Each LSTM scores with its own vocabulary (the promoted model may not
know the newest tracks; the baselines may still rank them). A target that is not a candidate
is a miss for both. Validation sessions the promoted model was trained on are left out of the
comparison, so it is not rewarded for having memorised them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from songnet_core.dataset import (
    EncodedSequence,
    FloatArray,
    ListeningSequence,
    Vocabulary,
    target_positions,
)
from songnet_core.evaluate import RankingLibrary
from songnet_core.metrics import step_metrics, target_ranks
from songnet_core.model import LoadedModel
from songnet_core.ranker import lstm_of, songnet_scorer
from songnet_core.rerank import Reranker

# Fewer comparable validation steps than this cannot tell two models apart.
MIN_COMPARE_STEPS = 30
# What `compare_on_split` compares (kept in the new model's metrics as `promotion_compared`).
COMPARED = "ranker"


@dataclass(frozen=True)
class SplitComparison:
    new_hr10: float
    current_hr10: float
    steps: int  # validation steps both were scored on
    left_out_steps: int  # validation steps the promoted model had trained on
    compared: str = COMPARED


@dataclass(frozen=True)
class Ranker:
    """A model as it ships: its LSTM, the blend weights it was stored with (empty: the LSTM
    alone) and its learned reranker, where it was stored with one."""

    model: LoadedModel
    weights: Mapping[str, float]
    reranker: Reranker | None = None


def ranker_ranks(
    ranker: Ranker, library: RankingLibrary, positions: npt.NDArray[np.int64], candidates: Vocabulary
) -> npt.NDArray[np.int64]:
    """The protocol rank (0: a miss) of each target at `positions` under `ranker`, among the
    tracks of `candidates` (ties broken by its order, most played first)."""
    seq = library.seq
    cls = EncodedSequence.build(seq, candidates).tracks.cls
    mask = np.ones(candidates.n_classes, dtype=bool)
    out = np.zeros(len(positions), dtype=np.int64)
    sess = seq.session[positions]
    done = 0
    for s in np.unique(sess).tolist():
        pos = positions[sess == s]
        scorer = songnet_scorer(
            ranker.model, library.history_before(s), ranker.weights, artist_of=library.artist_of,
            zone_name=library.zone, reranker=ranker.reranker,
        )  # fmt: skip
        alone = lstm_of(scorer)
        ctx = library.context(s)
        start = seq.session_bounds(s)[0]
        alone.prepare([seq.track_ids[start:p].tolist() for p in pos.tolist()], ctx)  # one LSTM pass per session
        rows = np.empty((len(pos), candidates.n_classes), dtype=np.float64)
        for i, p in enumerate(pos.tolist()):
            dense = np.asarray(scorer.scores(seq.track_ids[start:p].tolist(), ctx), dtype=np.float64)
            ids = candidates.track_ids
            rows[i] = np.where(ids < dense.size, dense[np.minimum(ids, dense.size - 1)], -np.inf)
        # float64 as generation ranks: no ties that its scores do not have
        out[done : done + len(pos)] = target_ranks(cast(FloatArray, rows), cls[pos], cls[pos - 1], mask)
        done += len(pos)
    # `positions` grouped by session above; back to the caller's order.
    order = np.argsort(sess, kind="stable")
    ranks = np.empty_like(out)
    ranks[order] = out
    return ranks


def hr10_on_positions(
    ranker: Ranker, library: RankingLibrary, positions: npt.NDArray[np.int64], candidates: Vocabulary
) -> float:
    """HR@10 of `ranker` at `positions` (NaN where there are none)."""
    if len(positions) == 0:
        return float("nan")
    return float(step_metrics(ranker_ranks(ranker, library, positions, candidates))["hr@10"].mean())


def compare_on_split(
    new: Ranker,
    current: Ranker,
    seq: ListeningSequence,
    first_val_session: int,
    end_session: int,
    *,
    zone: str,
    current_trained_until_ts: int | None = None,
) -> SplitComparison:
    """Both rankers' validation HR@10 on the validation sessions [first, end) of `seq` that
    start after `current_trained_until_ts` (the last play the promoted model learned from)."""
    positions = target_positions(seq, first_val_session, end_session)
    left_out = 0
    if current_trained_until_ts is not None and len(positions):
        starts = seq.session_starts[seq.session[positions]]
        unseen = seq.end_ts[starts] > current_trained_until_ts
        left_out = int((~unseen).sum())
        positions = positions[unseen]
    # Every track heard before the validation sessions, most played first.
    candidates = Vocabulary.build(seq.prefix(first_val_session), min_count=1)
    library = RankingLibrary(seq, zone)
    return SplitComparison(
        new_hr10=hr10_on_positions(new, library, positions, candidates),
        current_hr10=hr10_on_positions(current, library, positions, candidates),
        steps=len(positions),
        left_out_steps=left_out,
    )
