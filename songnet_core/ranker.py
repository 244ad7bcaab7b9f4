"""What songnet ranks the next track with: one scorer for the weekly generation and for
`songnet eval`, built from the same inputs by the same function (`songnet_scorer`).

Its inputs are the promoted model, the listener's history as the library holds it at that
moment (`ListeningHistory`: every play before now, by session) and the fusion weights fitted
on validation. The LSTM reads the listener's last plays before the playlist (`PREFIX_ROOM`
positions of its window are left for the playlist itself); with weights that give the
baselines a share, its scores are fused with theirs (`blend.BlendedNextTrack`), the baselines
counting that same history. Where the model was stored with a learned reranker
(`rerank.Reranker`, fitted on the validation steps the fusion weights are fitted on), the
union of the lists is ordered by it instead of by the fusion. The playlist so far (or, in
evaluation, the current session's prefix) is the `history` each `scores` call is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from songnet_core.blend import BlendedNextTrack
from songnet_core.dataset import ListeningSequence
from songnet_core.generate import FloatArray, GenerationContext, NextTrackScorer
from songnet_core.rerank import PlayIndex, RerankedNextTrack, Reranker
from songnet_core.transitions import TransitionCounts

if TYPE_CHECKING:  # torch loads with the model, never with the ranker: the daemon imports this
    from songnet_core.model import LoadedModel

PREFIX_ROOM = 23  # positions of the LSTM's window kept for the playlist (3 seeds + 20)


@dataclass(frozen=True)
class ListeningHistory:
    """The listener's plays before the moment of ranking, oldest first."""

    track_ids: Sequence[int]
    artist_ids: Sequence[int]
    end_ts: Sequence[int]
    sessions: Sequence[Sequence[int]]  # the same plays' track ids, by session
    # `TransitionCounts(sessions)` where the caller has built it already (the library has);
    # else the blend counts them.
    transitions: TransitionCounts | None = field(default=None, compare=False, repr=False)
    # A `PlayIndex` of these plays or of a longer history they begin (evaluation shares one
    # across sessions); else the reranker indexes them.
    play_index: PlayIndex | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, seq: ListeningSequence, sessions: int | None = None) -> ListeningHistory:
        """The plays of `seq`'s first `sessions` sessions (all by default), as the protocol
        reads a library (`dataset.build_sequence`: kept plays, repeats collapsed)."""
        n = seq.n_sessions if sessions is None else sessions
        end = seq.session_bounds(n - 1)[1] if n > 0 else 0
        by_session = [seq.track_ids[slice(*seq.session_bounds(s))].tolist() for s in range(n)]
        return cls(seq.track_ids[:end].tolist(), seq.artist_ids[:end].tolist(), seq.end_ts[:end].tolist(), by_session)


class ModelNextTrack:
    """The LSTM as a `NextTrackScorer`: its scores spread over library track ids.

    Scores come from a `ModelStepper`, which carries the LSTM state from one track to the next
    instead of reading the whole playlist again at each step. With `prefix` (the listener's
    recent plays: track ids, artist ids, end times), the model reads the playlist as the
    continuation of that history, as it read every sequence in training; the playlist's
    tracks are taken as played back to back from the context's moment.
    """

    def __init__(
        self,
        model: LoadedModel,
        artist_of: npt.NDArray[np.int64],
        zone_name: str,
        prefix: tuple[Sequence[int], Sequence[int], Sequence[int]] | None = None,
    ) -> None:
        from songnet_core.stepper import ModelStepper

        self.model = model
        self.stepper = ModelStepper(model)
        self.artist_of = artist_of
        self.zone_name = zone_name
        ids = np.asarray(model.track_ids, dtype=np.int64)
        self.size = max(int(artist_of.size), int(ids.max(initial=-1)) + 1)
        self.ids = ids
        self.prefix = prefix
        # The last answer: the blend and evaluation ask for the same step more than once, and
        # past the LSTM's window the stepper recomputes it in full (callers never modify it).
        self._last: tuple[list[int], GenerationContext, FloatArray] | None = None
        # Answers computed ahead by `prepare`, by (context, history).
        self._ready: dict[tuple[GenerationContext, tuple[int, ...]], FloatArray] = {}

    def scores(self, history: Sequence[int], context: GenerationContext) -> FloatArray:
        ready = self._ready.get((context, tuple(history)))
        if ready is not None:
            return ready
        if self._last is not None and self._last[1] == context and self._last[0] == list(history):
            return self._last[2]
        out = self._scores(history, context)
        self._last = (list(history), context, out)
        return out

    def prepare(self, histories: Sequence[Sequence[int]], context: GenerationContext) -> None:
        """Compute the answers for `histories` (each a prefix of the longest: a session's
        prefixes, as evaluation asks for them) together, in one pass of the LSTM over the
        longest and one batch past its window (`ModelStepper.prefix_scores`); `scores` then
        answers them from memory. Replaces what an earlier call prepared. Without a prefix of
        the listener's plays (their end times) it prepares nothing: `scores` computes."""
        from songnet_core.model import TYPICAL_PLAY_MS, PlayContext

        self._ready = {}
        if not self.prefix or not histories:
            return
        longest = list(histories[int(np.argmax([len(h) for h in histories]))])
        if any(list(h) != longest[: len(h)] for h in histories):
            raise ValueError("prepare takes prefixes of one history")
        p_ids, p_artists, p_ends = self.prefix
        artists = [int(self.artist_of[t]) if 0 <= t < self.artist_of.size else -1 for t in longest]
        step = TYPICAL_PLAY_MS // 1000
        rows = self.stepper.prefix_scores(
            [*p_ids, *longest], PlayContext(ts=context.ts, tz=self.zone_name),
            history_artist_ids=[*p_artists, *artists],
            history_end_ts=[*p_ends, *(context.ts + i * step for i in range(len(longest)))],
            lengths=[len(p_ids) + len(h) for h in histories],
        )  # fmt: skip
        for h, logp in zip(histories, rows, strict=True):
            out = np.full(self.size, -np.inf, dtype=np.float64)
            out[self.ids] = logp
            self._ready[(context, tuple(h))] = out

    def _scores(self, history: Sequence[int], context: GenerationContext) -> FloatArray:
        from songnet_core.model import TYPICAL_PLAY_MS, PlayContext

        out = np.full(self.size, -np.inf, dtype=np.float64)
        if not history and not self.prefix:  # nothing to continue from: the most played tracks
            out[self.ids] = np.log(np.maximum(self.model.vocab.counts, 1))
            return out
        artists = [int(self.artist_of[t]) if 0 <= t < self.artist_of.size else -1 for t in history]
        ctx = PlayContext(ts=context.ts, tz=self.zone_name)
        if self.prefix:
            p_ids, p_artists, p_ends = self.prefix
            step = TYPICAL_PLAY_MS // 1000
            ends = [*p_ends, *(context.ts + i * step for i in range(len(history)))]
            logp = self.stepper.next_scores(
                [*p_ids, *history], ctx, history_artist_ids=[*p_artists, *artists], history_end_ts=ends
            )
        else:
            logp = self.stepper.next_scores(list(history), ctx, history_artist_ids=artists)
        out[self.ids] = logp
        return out


def fuses_baselines(weights: Mapping[str, float]) -> bool:
    """Whether `weights` give any baseline a share (else the model ranks alone)."""
    return any(v > 0 for k, v in weights.items() if k != "model")


def model_scorer(
    model: LoadedModel, history: ListeningHistory, *, artist_of: npt.NDArray[np.int64], zone_name: str
) -> ModelNextTrack:
    """The model reading the listener's last plays (as many as leave `PREFIX_ROOM` in its window)."""
    n = max(model.window - PREFIX_ROOM, 0)
    lo = max(len(history.track_ids) - n, 0)
    prefix = None
    if n and lo < len(history.track_ids):
        prefix = (list(history.track_ids[lo:]), list(history.artist_ids[lo:]), list(history.end_ts[lo:]))
    return ModelNextTrack(model, artist_of, zone_name, prefix=prefix)


def blended_scorer(model: ModelNextTrack, history: ListeningHistory, weights: Mapping[str, float]) -> BlendedNextTrack:
    """`model` fused with the baselines of `history` under `weights`."""
    transitions = history.transitions
    if transitions is None:
        transitions = TransitionCounts(history.sessions)
    return BlendedNextTrack(model, transitions, history.sessions, history.track_ids, weights, size=model.size)


def reranked_scorer(
    blend: BlendedNextTrack, history: ListeningHistory, reranker: Reranker, *, artist_of: npt.NDArray[np.int64]
) -> RerankedNextTrack:
    """`blend`'s top lists (those `reranker` reads) reranked by `reranker`, its candidates'
    plays counted from `history`."""
    plays = history.play_index or PlayIndex(history.track_ids, history.end_ts)
    return RerankedNextTrack(blend, reranker, plays, len(history.track_ids), artist_of)


def lstm_of(scorer: NextTrackScorer) -> ModelNextTrack:
    """The LSTM inside a `songnet_scorer` ranker (itself, blended or reranked)."""
    inner = scorer.model if isinstance(scorer, BlendedNextTrack | RerankedNextTrack) else scorer
    if not isinstance(inner, ModelNextTrack):
        raise TypeError(f"no LSTM in {type(scorer).__name__}")
    return inner


def songnet_scorer(
    model: LoadedModel,
    history: ListeningHistory,
    weights: Mapping[str, float],
    *,
    artist_of: npt.NDArray[np.int64],
    zone_name: str,
    reranker: Reranker | None = None,
) -> NextTrackScorer:
    """The ranker for continuing from `history`: the model reading the listener's last plays,
    its top list and the history's baselines' reranked by `reranker`; without one, fused
    under `weights` where they give the baselines a share."""
    scorer = model_scorer(model, history, artist_of=artist_of, zone_name=zone_name)
    if reranker is not None:
        blend = blended_scorer(scorer, history, dict.fromkeys(reranker.lists, 1.0))
        return reranked_scorer(blend, history, reranker, artist_of=artist_of)
    return blended_scorer(scorer, history, weights) if fuses_baselines(weights) else scorer


# -- before there is a model ---------------------------------------------------------------

# The simple rules' weights where none were fitted: the even blend of the four. `songnet eval`
# reports no `fusion` when it has no validation steps to fit on, and `blend.fit_weights` picks
# the even blend when its steps tell the weights apart not at all; with no model yet there is
# no validation split, so this is the blend a fit with nothing to go on gives.
RULES_WEIGHTS: Mapping[str, float] = {"pop": 0.25, "markov": 0.25, "sknn": 0.25, "repeat": 0.25}


class PopularNextTrack:
    """Where there is no LSTM: the listener's play counts (log) as the order the rules' fusion
    falls back on for tracks in no top list; tracks never played (as kept plays) get -inf."""

    def __init__(self, plays: npt.NDArray[np.int64], size: int) -> None:
        out = np.full(size, -np.inf, dtype=np.float64)
        n = min(size, plays.size)
        played = np.flatnonzero(plays[:n] > 0)
        out[played] = np.log(plays[played].astype(np.float64))
        self._scores = out

    def scores(self, history: Sequence[int], context: GenerationContext) -> FloatArray:
        return self._scores


def rules_scorer(
    history: ListeningHistory, *, size: int, weights: Mapping[str, float] = RULES_WEIGHTS
) -> BlendedNextTrack:
    """The ranker before there is a model: the baselines of `history` (popularity, Markov,
    session-kNN, repeat) fused as `songnet eval`'s `fusion` fuses them, without the LSTM."""
    if weights.get("model", 0.0) > 0 or not fuses_baselines(weights):
        raise ValueError("the rules' ranker takes weights for the baselines alone")
    transitions = TransitionCounts(history.sessions)
    return BlendedNextTrack(
        PopularNextTrack(transitions.plays, size), transitions, history.sessions, history.track_ids, weights, size=size
    )


__all__ = [
    "PREFIX_ROOM", "RULES_WEIGHTS", "ListeningHistory", "ModelNextTrack", "PopularNextTrack", "blended_scorer",
    "fuses_baselines", "lstm_of", "model_scorer", "reranked_scorer", "rules_scorer", "songnet_scorer",
]  # fmt: skip
