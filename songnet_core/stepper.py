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
from songnet_core.model import TYPICAL_PLAY_MS, LoadedModel, PlayContext


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
        self._reset(None)

    def _reset(self, context: PlayContext | None) -> None:
        self._history: list[int] = []
        self._context = context
        self._zone = ZoneInfo(context.tz) if context is not None else None
        self._state: tuple[Tensor, Tensor] | None = None
        self._h: Tensor | None = None
        self._prev_e: Tensor | None = None
        self._keys: list[Tensor] = []
        self._cls: list[int] = []

    def next_scores(
        self,
        history_track_ids: Sequence[int],
        context: PlayContext | None = None,
        *,
        history_artist_ids: Sequence[int] | None = None,
    ) -> FloatArray:
        """Log-probabilities of the next track for every class, aligned with `model.track_ids`."""
        ctx = context or PlayContext(ts=12 * 3600)
        hist = list(history_track_ids)
        if not hist:
            raise ValueError("next_scores needs at least one track of history")
        if len(hist) > self.model.window:  # past the window the model reads back: its own way
            return self.model.next_scores(hist, ctx, history_artist_ids=history_artist_ids)
        artists = list(history_artist_ids) if history_artist_ids is not None else [-1] * len(hist)
        if ctx != self._context or len(hist) < len(self._history) or hist[: len(self._history)] != self._history:
            self._reset(ctx)
        with torch.no_grad():
            for i in range(len(self._history), len(hist)):
                self._feed(hist[i], artists[i], first=(i == 0))
                self._history.append(hist[i])
            return self._scores()

    def _feed(self, track: int, artist: int, *, first: bool) -> None:
        net = self.net
        c = self._class_index.get(track, -1)
        if c >= 0:  # a class's input vector is its (tied) class vector
            e = self._vectors[c]
        else:  # known only through its artist, if at all
            e = net.own_emb.weight[0] + net.artist_emb.weight[self._artist_index.get(artist, 0)]
        assert self._context is not None and self._zone is not None
        ts = self._context.ts
        row = context_features(ts, None if first else ts, TYPICAL_PLAY_MS, None, self._zone)
        row[4] = row[5] = 1.0 if first else 0.0
        x = torch.tanh(net.inp(torch.cat([e, torch.tensor(row, dtype=torch.float32)])))
        out, self._state = net.lstm(x.view(1, 1, -1), self._state)
        self._h = out[0, 0]
        if net.cfg.copy:
            prev = self._prev_e if self._prev_e is not None else torch.zeros_like(e)
            self._keys.append(net.key(torch.cat([e, prev, torch.tensor(row, dtype=torch.float32)])))
            self._cls.append(c)
        self._prev_e = e

    def _scores(self) -> FloatArray:
        net, h = self.net, self._h
        assert h is not None
        logits = net.out(h) @ self._vectors.T + net.bias
        if not net.cfg.copy:
            return np.asarray(F.log_softmax(logits, dim=-1).numpy(), dtype=np.float32)
        t = len(self._keys)
        keys = torch.stack(self._keys)  # [t, dim]
        att = keys @ net.query(h) / math.sqrt(net.cfg.dim)
        dist = torch.arange(t - 1, -1, -1)
        att = att + net.recency_bias(dist, dist.float() * (TYPICAL_PLAY_MS / 3_600_000))
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
