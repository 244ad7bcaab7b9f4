"""Scoring a growing playlist one track at a time, with the LSTM's state carried along.

`LoadedModel.next_scores` reads the whole history again for every next track, and builds the
vectors of every class each time: right for one call, quadratic for a 50-track playlist over
a 20k-track library. `ModelStepper` gives the same probabilities (a test holds it to
`next_scores`) by feeding only the tracks added since its last call to the LSTM, and by
computing the class vectors, class index and copy-attention keys once.
It follows `SongNet.forward` in eval mode step for step; a change there needs one here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from songnet_core.dataset import FloatArray, context_features
from songnet_core.model import SESSION_GAP_S, TYPICAL_PLAY_MS, LoadedModel, PlayContext


class ModelStepper:
    """`LoadedModel.next_scores` for a history that grows at its end between calls."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.net = model.module
        self.net.eval()
        self._class_index = model.vocab.class_index()
        self._artist_index = model.vocab.artist_index()
        with torch.no_grad():
            self._vectors = self.net.class_vectors()  # [C, dim]
            self._vectors_t = self._vectors.T.contiguous()  # [dim, C]: a 3x faster product
        self._recency: dict[int, Tensor] = {}  # back to back, the bias depends on length only
        self._reset(None)

    def _reset(self, context: PlayContext | None) -> None:
        self._history: list[int] = []
        self._ends: list[int] | None = None
        self._context = context
        self._zone = ZoneInfo(context.tz) if context is not None else None
        self._state: tuple[Tensor, Tensor] | None = None
        self._h: Tensor | None = None
        self._prev_e: Tensor | None = None
        self._keys: list[Tensor] = []
        self._cls: list[int] = []
        self._same_row: Tensor | None = None  # back to back, every row after the first is one

    def next_scores(
        self,
        history_track_ids: Sequence[int],
        context: PlayContext | None = None,
        *,
        history_artist_ids: Sequence[int] | None = None,
        history_end_ts: Sequence[int] | None = None,
    ) -> FloatArray:
        """Log-probabilities of the next track for every class, aligned with `model.track_ids`
        (the arguments as `LoadedModel.next_scores` takes them)."""
        ctx = context or PlayContext(ts=12 * 3600)
        hist = list(history_track_ids)
        if not hist:
            raise ValueError("next_scores needs at least one track of history")
        if len(hist) > self.model.window:  # past the window the LSTM reads: the model's own way
            return self.model.next_scores(hist, ctx, history_artist_ids=history_artist_ids, history_end_ts=history_end_ts)
        artists = list(history_artist_ids) if history_artist_ids is not None else [-1] * len(hist)
        ends = list(history_end_ts) if history_end_ts is not None else None
        n = len(self._history)
        if (
            ctx != self._context
            or len(hist) < n
            or hist[:n] != self._history
            or (ends is None) != (self._ends is None)
            or (ends is not None and self._ends is not None and ends[:n] != self._ends)
        ):
            self._reset(ctx)
            self._ends = [] if ends is not None else None
            n = 0
        with torch.no_grad():
            for i in range(n, len(hist)):
                if ends is not None and self._ends is not None:
                    self._feed(hist[i], artists[i], ends[i], ends[i - 1] if i > 0 else None)
                    self._ends.append(ends[i])
                else:
                    self._feed(hist[i], artists[i], None, None, first=(i == 0))
                self._history.append(hist[i])
            return self._scores()

    def _feed(self, track: int, artist: int, end: int | None, prev_end: int | None, *, first: bool = False) -> None:
        net = self.net
        c = self._class_index.get(track, -1)
        if c >= 0:  # a class's input vector is its (tied) class vector
            e = self._vectors[c]
        else:  # known only through its artist, if at all
            e = net.own_emb.weight[0] + net.artist_emb.weight[self._artist_index.get(artist, 0)]
        assert self._context is not None and self._zone is not None
        if end is None and not first and self._same_row is not None:
            context = self._same_row
        else:
            if end is None:  # back to back at the context's moment
                ts = self._context.ts
                row = context_features(ts, None if first else ts, TYPICAL_PLAY_MS, None, self._zone)
                row[4] = row[5] = 1.0 if first else 0.0
            else:
                row = context_features(end, prev_end, TYPICAL_PLAY_MS, None, self._zone)
                row[5] = 1.0 if prev_end is None or end - prev_end > SESSION_GAP_S else 0.0
            context = torch.tensor(row, dtype=torch.float32)
            if end is None and not first:
                self._same_row = context
        x = torch.tanh(net.inp(torch.cat([e, context])))
        out, self._state = net.lstm(x.view(1, 1, -1), self._state)
        self._h = out[0, 0]
        if net.cfg.copy:
            prev = self._prev_e if self._prev_e is not None else torch.zeros_like(e)
            self._keys.append(net.key(torch.cat([e, prev, context])))
            self._cls.append(c)
        self._prev_e = e

    def _scores(self) -> FloatArray:
        net, h = self.net, self._h
        assert h is not None
        logits = net.out(h) @ self._vectors_t + net.bias
        if not net.cfg.copy:
            return np.asarray(F.log_softmax(logits, dim=-1).numpy(), dtype=np.float32)
        t = len(self._keys)
        keys = torch.stack(self._keys)  # [t, dim]
        att = keys @ net.query(h) / math.sqrt(net.cfg.dim)
        dist = torch.arange(t - 1, -1, -1)
        if self._ends is not None:
            hours = (self._ends[-1] - torch.tensor(self._ends, dtype=torch.float64)) / 3600.0
            att = att + net.recency_bias(dist, hours.float())
        else:
            bias = self._recency.get(t)
            if bias is None:
                bias = self._recency[t] = net.recency_bias(dist, dist.float() * (TYPICAL_PLAY_MS / 3_600_000))
            att = att + bias
        cls = torch.tensor(self._cls, dtype=torch.long)
        attn = torch.softmax(att.masked_fill(cls < 0, float("-inf")), dim=-1).nan_to_num(0.0)
        g = net.gate(h)
        log_explore, log_copy_w = F.logsigmoid(g), F.logsigmoid(-g)
        logp = log_explore + F.log_softmax(logits, dim=-1)
        # The copy expert's mass sits on the few classes of the history. (The forward pass
        # also gives every other class a floor of 1e-12 copy mass; leaving it out changes no
        # probability by more than 1e-12.)
        known = cls >= 0
        if bool(known.any()):
            where, inverse = torch.unique(cls[known], return_inverse=True)
            mass = torch.zeros(where.numel()).scatter_add_(0, inverse, attn[known])
            logp[where] = torch.logaddexp(logp[where], log_copy_w + mass.clamp(min=1e-12).log())
        return np.asarray(logp.numpy(), dtype=np.float32)
