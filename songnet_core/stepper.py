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
from songnet_core.model import SESSION_GAP_S, TYPICAL_PLAY_MS, LoadedModel, PlayContext, mix_copy

# Past the window, the rows of the window's last steps that the products with every class run
# over (`ModelStepper._past_window`): enough that the BLAS takes the kernel it takes for a
# whole window.
LAST_ROWS = 8


class ModelStepper:
    """`LoadedModel.next_scores` for a history that grows at its end between calls (or goes
    back to a prefix of what it read, and grows from there)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.net = model.module
        self.net.eval()
        with torch.no_grad():
            self._vectors = self.net.class_vectors()  # [C, dim]
            self._vectors_t = self._vectors.T.contiguous()  # [dim, C]: a 3x faster product
        self._recency: dict[int, Tensor] = {}  # back to back, the bias depends on length only
        self._class_index, self._artist_index = model.indices()
        # Context rows past the window, by (zone, end times given, end, end before).
        self._rows: dict[tuple[str, bool, int, int | None], list[float]] = {}
        self._reset(None)

    def _reset(self, context: PlayContext | None) -> None:
        self._history: list[int] = []
        self._artists: list[int] = []
        self._ends: list[int] | None = None
        self._context = context
        self._zone = ZoneInfo(context.tz) if context is not None else None
        self._state: tuple[Tensor, Tensor] | None = None
        self._h: Tensor | None = None
        self._prev_e: Tensor | None = None
        self._keys: list[Tensor] = []
        self._cls: list[int] = []
        self._same_row: Tensor | None = None  # back to back, every row after the first is one
        # (LSTM state, output, input vector) after each track fed: a history that shares only
        # a prefix with the last one (the next playlist after the same plays and seeds) goes
        # on from there.
        self._after: list[tuple[tuple[Tensor, Tensor] | None, Tensor | None, Tensor | None]] = []

    def _back_to(self, n: int) -> None:
        """The state after the first `n` tracks fed (0 < n < those fed)."""
        self._state, self._h, self._prev_e = self._after[n - 1]
        del self._after[n:], self._history[n:], self._artists[n:], self._keys[n:], self._cls[n:]
        if self._ends is not None:
            del self._ends[n:]

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
            return self._past_window(hist, ctx, history_artist_ids, history_end_ts)
        artists = list(history_artist_ids) if history_artist_ids is not None else [-1] * len(hist)
        ends = list(history_end_ts) if history_end_ts is not None else None
        n = 0  # tracks of `hist` already fed
        if ctx == self._context and (ends is None) == (self._ends is None):
            n = min(_shared(hist, self._history), _shared(artists, self._artists))
            if ends is not None and self._ends is not None:
                n = min(n, _shared(ends, self._ends))
        if n == 0:
            self._reset(ctx)
            self._ends = [] if ends is not None else None
        elif n < len(self._history):
            self._back_to(n)
        with torch.no_grad():
            for i in range(n, len(hist)):
                if ends is not None and self._ends is not None:
                    self._feed(hist[i], artists[i], ends[i], ends[i - 1] if i > 0 else None)
                    self._ends.append(ends[i])
                else:
                    self._feed(hist[i], artists[i], None, None, first=(i == 0))
                self._history.append(hist[i])
                self._artists.append(artists[i])
            return self._scores()

    def _past_window(
        self,
        hist: list[int],
        ctx: PlayContext,
        artists: Sequence[int] | None,
        ends: Sequence[int] | None,
    ) -> FloatArray:
        """`LoadedModel.next_scores(hist, ...)`, the same numbers to the bit (a test holds it
        to that), without its dense work for every window step but the last.

        `SongNet.forward` scores every step of the window; only the last is asked for. Here
        everything up to the LSTM's states and each linear layer run as there, over the whole
        window, and the products with every class (the class vectors, the copy expert's keys)
        over the last `LAST_ROWS` steps: a product over a handful of rows can take another
        kernel of the BLAS, whose sums round differently, and the last row of a product over
        `LAST_ROWS` rows is the last row of the product over all of them. What follows works
        row by row, on the last row alone."""
        model, net = self.model, self.net
        n = min(len(hist), model.window + model.memory)
        if len(self._rows) > 100_000:  # a long-lived stepper over many histories
            self._rows.clear()
        x = model._batch(
            hist[-n:], list(artists)[-n:] if artists is not None else None, list(ends)[-n:] if ends is not None else None,
            ctx, memory=max(0, n - model.window), row_cache=self._rows,
        )  # fmt: skip
        with torch.no_grad():
            m = x.memory
            e_all = net.embed(x)
            h, _ = net.lstm(
                torch.tanh(net.inp(torch.cat([e_all[:, m:], x.context[:, m:]], dim=-1)))
            )
            t = h.shape[1]
            first = max(t - LAST_ROWS, 0)
            logits = (net.out(h)[:, first:] @ self._vectors.T + net.bias)[:, -1:]  # [1, 1, C]
            if not net.cfg.copy:
                return np.asarray(F.log_softmax(logits, dim=-1)[0, -1].numpy(), dtype=np.float32)
            prev = torch.cat([torch.zeros_like(e_all[:, :1]), e_all[:, :-1]], dim=1)
            keys = net.key(torch.cat([e_all, prev, x.context], dim=-1))  # [1, M+T, dim]
            att = net.query(h)[:, first:] @ keys.transpose(1, 2) / math.sqrt(net.cfg.dim)
            att = att[:, -1:]  # [1, 1, M+T]
            n_keys = keys.shape[1]
            q = m + t - 1  # the last step among the keys
            steps = (torch.arange(1) + q)[:, None] - torch.arange(n_keys)[None, :]
            hours = x.hours[:, q:, None] - x.hours[:, None, :]
            att = att + net.recency_bias(steps, hours)
            allowed = (steps >= 0)[None] & (x.cls >= 0)[:, None, :]
            attn = torch.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
            g = net.gate(h)[:, -1:]
            log_explore, log_copy = F.logsigmoid(g), F.logsigmoid(-g)
            index = x.cls.clamp(min=0)[:, None, :]
            logp = mix_copy(F.log_softmax(logits, dim=-1).add_(log_explore), index, attn, log_copy)
            return np.asarray(logp[0, -1].numpy().astype(np.float32), dtype=np.float32)

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
        self._after.append((self._state, self._h, self._prev_e))

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
        logp = F.log_softmax(logits, dim=-1).add_(log_explore)
        known = cls >= 0  # the copy expert's mass sits on the few classes of the history
        if bool(known.any()):
            logp = mix_copy(logp, cls[known], attn[known], log_copy_w)
        return np.asarray(logp.numpy(), dtype=np.float32)

    def prefix_scores(
        self,
        history_track_ids: Sequence[int],
        context: PlayContext,
        *,
        history_artist_ids: Sequence[int],
        history_end_ts: Sequence[int],
        lengths: Sequence[int],
    ) -> list[FloatArray]:
        """`next_scores(history[:m])` for every m in `lengths`, computed together: evaluation
        asks for every prefix of a session, and the LSTM's inputs do not depend on the answers.

        One LSTM pass over the first `window` positions gives every prefix inside the window;
        the prefixes past it (the LSTM reads their last `window` positions, `next_scores`'
        own way) run as one batch of windows. The copy expert's keys are computed once for the
        whole history. Inside the window the scores are the incremental ones (copy mass on the
        history's classes only), past it `SongNet.forward`'s (a 1e-12 floor everywhere);
        either agrees with `next_scores` as `next_scores` above does. A prefix longer than
        `window + memory` (its memory would not start at the history's first play) is scored
        by `next_scores` alone."""
        hist, artists, ends = list(history_track_ids), list(history_artist_ids), list(history_end_ts)
        net, window = self.net, self.model.window
        if not net.cfg.copy or any(m < 1 or m > len(hist) or m > window + self.model.memory for m in lengths):
            return [
                self.next_scores(hist[:m], context, history_artist_ids=artists[:m], history_end_ts=ends[:m]) for m in lengths
            ]
        if not lengths:
            return []
        n = max(lengths)
        zone = ZoneInfo(context.tz)
        with torch.no_grad():
            cls = [self._class_index.get(t, -1) for t in hist[:n]]
            vectors = []
            rows = []
            for i in range(n):
                c = cls[i]
                if c >= 0:
                    vectors.append(self._vectors[c])
                else:
                    vectors.append(net.own_emb.weight[0] + net.artist_emb.weight[self._artist_index.get(artists[i], 0)])
                prev_end = ends[i - 1] if i > 0 else None
                row = context_features(ends[i], prev_end, TYPICAL_PLAY_MS, None, zone)
                row[5] = 1.0 if prev_end is None or ends[i] - prev_end > SESSION_GAP_S else 0.0
                rows.append(row)
            e = torch.stack(vectors)  # [n, dim]
            context_rows = torch.tensor(np.asarray(rows), dtype=torch.float32)  # [n, N_CONTEXT]
            x = torch.tanh(net.inp(torch.cat([e, context_rows], dim=1)))  # [n, hidden]
            prev = torch.cat([torch.zeros_like(e[:1]), e[:-1]])
            keys = net.key(torch.cat([e, prev, context_rows], dim=1))  # [n, dim]
            inside = [m for m in lengths if m <= window]
            past = [m for m in lengths if m > window]
            h_of: dict[int, Tensor] = {}
            if inside:
                out, _ = net.lstm(x[: max(inside)][None])
                for m in inside:
                    h_of[m] = out[0, m - 1]
            if past:
                out, _ = net.lstm(torch.stack([x[m - window : m] for m in past]))
                for j, m in enumerate(past):
                    h_of[m] = out[j, -1]
            h = torch.stack([h_of[m] for m in lengths])  # [R, hidden]
            logits = net.out(h) @ self._vectors_t + net.bias  # [R, C]
            att = net.query(h) @ keys.T / math.sqrt(net.cfg.dim)  # [R, n]
            length = torch.tensor(list(lengths), dtype=torch.long)[:, None]
            pos = torch.arange(n)[None, :]
            steps = (length - 1 - pos).clamp(min=0)
            end_ts = torch.tensor(ends[:n], dtype=torch.float64)
            last = end_ts[length[:, 0] - 1][:, None]
            hours = ((last - end_ts[None, :]) / 3600.0).float()
            att = att + net.recency_bias(steps, hours)
            cls_t = torch.tensor(cls, dtype=torch.long)
            allowed = (pos < length) & (cls_t >= 0)[None, :]
            attn = torch.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
            g = net.gate(h)
            log_explore, log_copy = F.logsigmoid(g), F.logsigmoid(-g)
            index = cls_t.clamp(min=0)[None, :].expand(len(lengths), n)
            logp = mix_copy(F.log_softmax(logits, dim=-1).add_(log_explore), index, attn * allowed, log_copy, scratch=logits)
            out_np = np.asarray(logp.numpy(), dtype=np.float32)
        return [out_np[r] for r in range(len(lengths))]


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of `a` and `b`."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
