"""The sequence model: an LSTM over the listener's history with a copy expert and a memory.

Each position is a kept play: its track (own embedding if frequent enough, plus its artist's,
plus an optional projection of the feature cache's row) and its context features. An LSTM
reads the last `window` positions; the next track's distribution mixes two experts
(RepeatNet-style, a gate from the LSTM state weighs them):
- explore: a full softmax over every class, scored against the same track vectors as the
  input (tied), so rare tracks are reached through their artist's vector;
- copy: attention over the earlier positions, the window and a longer memory before it
  (plays the LSTM does not run over: listeners come back to tracks of weeks ago). Keys hold
  the track, the track before it and the play's context, so "what followed this track last
  time", "what I play at this hour" and plain repeats are all one lookup; learned biases per
  bucket of steps back and of hours back weigh the recent past.
`forward` returns log-probabilities of the mixture for every class of the window's
positions, or, with targets, only the loss (training never needs the copy expert's full
matrix). With `Candidates` the loss's softmax runs over a sample of the classes instead of
all of them (sampled softmax, for a large vocabulary: see `Candidates`).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from songnet_core.dataset import FloatArray, IntArray, Vocabulary, context_features


@dataclass
class ModelConfig:
    n_classes: int  # output classes: every track of the training data
    n_own: int  # rows of the own-embedding table (row 0: "none", for rare tracks)
    n_artists: int  # artist rows (row 0: unknown artist)
    n_context: int  # context features per position
    n_track_features: int = 0  # feature-cache columns per track (0: none)
    dim: int = 64  # track / artist vector size
    hidden: int = 128  # LSTM state size
    dropout: float = 0.2
    copy: bool = True  # the copy expert (off: a plain softmax LSTM)
    memory: int = 0  # positions before the LSTM's window that the copy expert reads
    step_buckets: int = 26  # log-spaced buckets of steps back (2 per doubling)
    hour_buckets: int = 24  # log-spaced buckets of hours back (quarter hours to years)


class Batch(NamedTuple):
    """`memory` leading positions are history for the copy expert only; the LSTM runs over
    the rest (the window) and predicts the track after each of them."""

    cls: Tensor  # [B, M+T] class of each track, -1 where it is not a class (or padding)
    own: Tensor  # [B, M+T] own-embedding row, 0 = none
    artist: Tensor  # [B, M+T] artist row, 0 = unknown
    context: Tensor  # [B, M+T, n_context]
    hours: Tensor  # [B, M+T] when each play ended, in hours (any fixed origin)
    memory: int = 0


class Candidates(NamedTuple):
    """The classes one training step scores instead of all of them (sampled softmax, shared by
    the batch): every target of the batch, then negatives drawn uniformly from the other
    classes. `log_weight` is the log of how many classes each one stands for in the softmax's
    normaliser (0 for the targets, log(rest / negatives) for a negative), so the sum over the
    candidates is an unbiased estimate of the sum over every class."""

    classes: Tensor  # [K] class indices
    log_weight: Tensor  # [K]
    target_index: Tensor  # like the targets: where each target sits in `classes` (0 for -1)


def sample_candidates(targets: Tensor, n_classes: int, negatives: int) -> Candidates:
    """The batch's targets and `negatives` uniform draws (torch's global generator) from the
    classes that are not targets."""
    classes, target_index = torch.unique(targets.clamp(min=0), return_inverse=True)
    rest = torch.ones(n_classes, dtype=torch.bool)
    rest[classes] = False
    others = rest.nonzero().squeeze(1)
    n = min(negatives, len(others))
    drawn = others[torch.randint(len(others), (n,))] if n else others[:0]
    log_weight = torch.cat([torch.zeros(len(classes)), torch.full((n,), math.log(max(len(others), 1) / max(n, 1)))])
    return Candidates(torch.cat([classes, drawn]), log_weight, target_index.reshape(targets.shape))


def log_bucket(distance: Tensor, per_doubling: float, n_buckets: int) -> Tensor:
    return (torch.log2(distance.float().clamp(min=0.0) + 1.0) * per_doubling).long().clamp(max=n_buckets - 1)


@functools.cache
def log_bucket_bounds(scale: float, per_doubling: float, n_buckets: int) -> Tensor:
    """The least float32 `d` of each bucket 1 .. n-1 of `log_bucket(d * scale, ...)`, so that
    `torch.bucketize(d, bounds, right=True)` gives exactly its buckets in one pass, not seven
    (each over the [B, T, M+T] hours back). Found by stepping float by float from the real
    bound, as rounding in log2 moves it."""
    found = []
    down, up = torch.tensor(-math.inf), torch.tensor(math.inf)
    for k in range(1, n_buckets):
        bound = torch.tensor((2.0 ** (k / per_doubling) - 1.0) / scale, dtype=torch.float32)
        while int(log_bucket(bound * scale, per_doubling, n_buckets)) >= k:
            bound = torch.nextafter(bound, down)
        while int(log_bucket(bound * scale, per_doubling, n_buckets)) < k:
            bound = torch.nextafter(bound, up)
        found.append(bound)
    return torch.stack(found)


class _BucketBias(torch.autograd.Function):
    """`weight[index]` for a short 1-d `weight` and a large `index`, its gradient summed by
    `bincount`: an embedding's backward sorts all of `index` (a million entries per batch for
    the copy expert's hours back), a third of a training step on 2 cores."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.n_buckets = weight.shape[0]
        return weight.index_select(0, index.reshape(-1)).view_as(index)  # half of `weight[index]`'s time

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        summed = torch.bincount(index.reshape(-1), grad.reshape(-1), minlength=ctx.n_buckets)
        return summed.to(grad.dtype), None


def bucket_bias(table: nn.Embedding, index: Tensor) -> Tensor:
    """The one-column `table`'s value at every entry of `index` (shaped like it)."""
    out: Tensor = _BucketBias.apply(table.weight.squeeze(-1), index)  # type: ignore[no-untyped-call]  # torch leaves apply untyped
    return out


def mix_copy(explore: Tensor, index: Tensor, attn: Tensor, log_copy: Tensor, *, scratch: Tensor | None = None) -> Tensor:
    """The mixture's log-probabilities [..., C], in place over `explore` (exploring's, its
    log-weight included): the copy expert's `attn` over keys of classes `index` ([..., K]),
    weighted by `log_copy`. Only the keys' classes have copy mass; every other class keeps
    exploring's value, so the mixture is computed at K entries per row, not in passes over
    all C (most of scoring's time when C is large). Scoring and the stepper both mix here,
    so they give the same numbers to the bit. `scratch`: a tensor like `explore` to reuse."""
    buf = scratch.zero_() if scratch is not None else torch.zeros_like(explore)
    mass = buf.scatter_add_(-1, index, attn).gather(-1, index)  # a class's mass, at each of its keys
    explored = explore.gather(-1, index)
    # In float64, rounded once: the vector kernels' last bits depend on where a row falls
    # among the lanes, which differs between scoring's many rows and the stepper's one.
    mixed = torch.logaddexp(explored.double(), log_copy.double() + mass.double().clamp(min=1e-300).log()).float()
    return explore.scatter_(-1, index, torch.where(mass > 0, mixed, explored))


class SongNet(nn.Module):
    def __init__(self, cfg: ModelConfig, class_own: Tensor, class_artist: Tensor, track_features: Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("class_own", class_own.long())
        self.register_buffer("class_artist", class_artist.long())
        feats = track_features if track_features is not None else torch.zeros(cfg.n_classes, 0)
        self.register_buffer("track_features", feats.float())
        self.own_emb = nn.Embedding(cfg.n_own, cfg.dim, padding_idx=0)
        self.artist_emb = nn.Embedding(cfg.n_artists, cfg.dim)
        self.feat_proj = nn.Linear(cfg.n_track_features, cfg.dim) if cfg.n_track_features else None
        self.inp = nn.Linear(cfg.dim + cfg.n_context, cfg.hidden)
        self.lstm = nn.LSTM(cfg.hidden, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, cfg.dim)
        self.bias = nn.Parameter(torch.zeros(cfg.n_classes))
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.copy:
            self.query = nn.Linear(cfg.hidden, cfg.dim)
            self.key = nn.Linear(2 * cfg.dim + cfg.n_context, cfg.dim)
            self.steps_back = nn.Embedding(cfg.step_buckets, 1)
            self.hours_back = nn.Embedding(cfg.hour_buckets, 1)
            self.gate = nn.Linear(cfg.hidden, 1)
        for emb in (self.own_emb, self.artist_emb):
            nn.init.normal_(emb.weight, std=0.1)
        with torch.no_grad():
            self.own_emb.weight[0].zero_()

    def class_vectors(self, classes: Tensor | None = None) -> Tensor:
        """[C, dim]: the vector of every class (or of `classes`), used for input and output
        alike (tied)."""
        own, artist, feats = self.get_buffer("class_own"), self.get_buffer("class_artist"), self.get_buffer("track_features")
        if classes is not None:
            own, artist, feats = own[classes], artist[classes], feats[classes]
        v: Tensor = self.own_emb(own) + self.artist_emb(artist)
        return v + self.feat_proj(feats) if self.feat_proj is not None else v

    def embed(self, x: Batch) -> Tensor:
        v: Tensor = self.own_emb(x.own) + self.artist_emb(x.artist)
        if self.feat_proj is not None:
            known = (x.cls >= 0).unsqueeze(-1).float()
            feats = self.get_buffer("track_features")
            v = v + known * self.feat_proj(feats[x.cls.clamp(min=0)])
        return v

    def recency_bias(self, steps: Tensor, hours: Tensor) -> Tensor:
        """The copy expert's learned preference for plays `steps` positions and `hours` back."""
        by_steps = bucket_bias(self.steps_back, log_bucket(steps, 2.0, self.cfg.step_buckets))
        bounds = log_bucket_bounds(4.0, 1.0, self.cfg.hour_buckets)  # 4 buckets per hour at first
        by_hours = bucket_bias(self.hours_back, torch.bucketize(hours.float(), bounds, right=True))
        return by_steps + by_hours

    def forward(
        self, x: Batch, targets: Tensor | None = None, *, candidates: Candidates | None = None, first: int = 0
    ) -> tuple[Tensor | None, Tensor | None]:
        """Without targets: log-probabilities [B, T - first, C] for window steps `first`
        onwards (the LSTM still reads the whole window), for scoring: they are built in place,
        so no gradient flows back through them. With targets: the mean loss, over
        `candidates` only where given."""
        m = x.memory
        e_all = self.drop(self.embed(x))
        h, _ = self.lstm(torch.tanh(self.inp(torch.cat([e_all[:, m:], x.context[:, m:]], dim=-1))))
        h = self.drop(h[:, first:])
        if candidates is not None and targets is not None:
            # Bias and log weight ride along the matmul as one more column, and one fused
            # log-softmax follows: the [B, T, K] logits are the step's largest tensor, and
            # separate adds, a gather and a logsumexp each made passes over them. A target's
            # log weight is 0, so its weighted logit is its logit.
            out = self.out(h)
            weighted = torch.cat([self.class_vectors(candidates.classes), (self.bias[candidates.classes] + candidates.log_weight)[:, None]], dim=1)
            logits = torch.cat([out, out.new_ones(*out.shape[:-1], 1)], dim=-1) @ weighted.T  # [B, T, K]
            explore = -F.cross_entropy(logits.flatten(0, 1), candidates.target_index.flatten(), reduction="none").view_as(targets)
        else:
            # Not F.linear (a third faster here): its GEMM with the bias gives other last bits
            # for a window's last rows alone, and the stepper must match scoring to the bit.
            logits = self.out(h) @ self.class_vectors().T + self.bias  # [B, T, C]
            explore = None
        if not self.cfg.copy:
            if targets is None:
                return F.log_softmax(logits, dim=-1), None
            if explore is not None:
                valid = targets >= 0
                return None, -(explore * valid).sum() / valid.sum().clamp(min=1)
            return None, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        # Copy expert: each window step attends over memory and window up to itself.
        b, t = h.shape[:2]
        q0 = m + first  # where the first query step sits among the keys
        prev = torch.cat([torch.zeros_like(e_all[:, :1]), e_all[:, :-1]], dim=1)
        keys = self.key(torch.cat([e_all, prev, x.context], dim=-1))  # [B, M+T, dim]
        att = self.query(h) @ keys.transpose(1, 2) / math.sqrt(self.cfg.dim)  # [B, T, M+T]
        n_keys = keys.shape[1]
        steps = (torch.arange(t, device=h.device) + q0)[:, None] - torch.arange(n_keys, device=h.device)[None, :]
        hours = x.hours[:, q0:, None] - x.hours[:, None, :]  # [B, T, M+T]
        att = att + self.recency_bias(steps, hours)
        allowed = (steps >= 0)[None] & (x.cls >= 0)[:, None, :]
        attn = torch.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
        g = self.gate(h)  # log-odds of exploring over copying
        log_explore, log_copy = F.logsigmoid(g), F.logsigmoid(-g)
        if targets is None:
            index = x.cls.clamp(min=0)[:, None, :].expand(b, t, n_keys)
            return mix_copy(F.log_softmax(logits, dim=-1).add_(log_explore), index, attn, log_copy, scratch=logits), None
        tgt = targets.clamp(min=0)
        if explore is None:
            explore = -F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt)
        copy_t = torch.where(x.cls[:, None, :] == tgt[..., None], attn, 0.0).sum(-1)
        logp_t = torch.logaddexp(log_explore.squeeze(-1) + explore, log_copy.squeeze(-1) + copy_t.clamp(min=1e-12).log())
        mask = targets >= 0
        return None, -(logp_t * mask).sum() / mask.sum().clamp(min=1)


# --- A trained model as stored and loaded: checkpoint bytes, scoring over a history ----------

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class PlayContext:
    """When the listening happens: hour of day and weekday come from `ts` in zone `tz`."""

    ts: int
    tz: str = "UTC"


@dataclass
class LoadedModel:
    """A model ready to score: the module (eval mode), its vocabulary and what it was trained with."""

    module: SongNet
    vocab: Vocabulary
    window: int  # positions the LSTM reads back (the training window)
    metrics: dict[str, float]
    info: dict[str, str | int | float]
    _indices: tuple[Vocabulary, dict[int, int], dict[int, int]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def memory(self) -> int:
        """Positions before the window that the copy expert reads."""
        return self.module.cfg.memory

    @property
    def track_ids(self) -> IntArray:
        """Library track id of each score `next_scores` returns (its class order)."""
        return self.vocab.track_ids

    def next_scores(
        self,
        history_track_ids: Sequence[int],
        context: PlayContext | None = None,
        *,
        history_artist_ids: Sequence[int] | None = None,
        history_end_ts: Sequence[int] | None = None,
    ) -> FloatArray:
        """Log-probabilities of the next track for every class, aligned with `track_ids`.

        `history_track_ids` are library track ids, oldest first (seeds, then what was chosen;
        the listener's recent plays may come before them: the last `window + memory` count).
        Without `history_end_ts` they are taken as played back to back up to `context.ts`
        (default: midday UTC of day 0). Tracks that are not classes still count as context
        through their artist, where `history_artist_ids` gives it. The current (last) track is
        not excluded: callers apply their own rules.
        """
        ctx = context or PlayContext(ts=12 * 3600)
        n = min(len(history_track_ids), self.window + self.memory)
        if n == 0:
            raise ValueError("next_scores needs at least one track of history")
        hist = list(history_track_ids)[-n:]
        artists = list(history_artist_ids)[-n:] if history_artist_ids is not None else None
        ends = list(history_end_ts)[-n:] if history_end_ts is not None else None
        x = self._batch(hist, artists, ends, ctx, memory=max(0, n - self.window))
        with torch.no_grad():
            logp, _ = self.module(x)
        assert logp is not None
        out: FloatArray = logp[0, -1].numpy().astype(np.float32)
        return out

    def indices(self) -> tuple[dict[int, int], dict[int, int]]:
        """`vocab.class_index()` and `vocab.artist_index()`, built once per vocabulary (callers
        must not modify them): every scoring call reads them, and building them is most of a
        short history's cost."""
        cached = self._indices
        if cached is None or cached[0] is not self.vocab:
            vocab = self.vocab
            cached = self._indices = (vocab, vocab.class_index(), vocab.artist_index())
        return cached[1], cached[2]

    def _batch(
        self,
        tracks: list[int],
        artists: list[int] | None,
        ends: list[int] | None,
        ctx: PlayContext,
        memory: int,
        row_cache: dict[tuple[str, bool, int, int | None], list[float]] | None = None,
    ) -> Batch:
        ci, ai = self.indices()
        cls = np.asarray([ci.get(t, -1) for t in tracks], dtype=np.int64)
        if artists is not None:
            # As `vocab.encode` gives them: the artist index, 0 where unknown.
            known_artist = np.asarray([ai.get(int(a), 0) for a in artists], dtype=np.int64)
            art = np.where(cls >= 0, self.vocab.artist[np.maximum(cls, 0)], known_artist)
        else:
            art = np.where(cls >= 0, self.vocab.artist[np.maximum(cls, 0)], 0)
        own = np.where(cls >= 0, self.vocab.own[np.maximum(cls, 0)], 0)
        zone = ZoneInfo(ctx.tz)
        rows = []
        # A row depends on the end time and the one before alone: a caller that builds many
        # batches over one history (the stepper past its window) keeps them in `row_cache`.
        cache: dict[tuple[str, bool, int, int | None], list[float]] = {} if row_cache is None else row_cache
        if ends is None:
            # Back to back at ctx.ts: one context for all, a typical play's length apart.
            for i in range(len(tracks)):
                row = cache.get((ctx.tz, False, ctx.ts, None if i == 0 else ctx.ts))
                if row is None:
                    row = context_features(ctx.ts, None if i == 0 else ctx.ts, TYPICAL_PLAY_MS, None, zone)
                    row[4] = row[5] = 1.0 if i == 0 else 0.0  # a long gap before the first: a new session
                    cache[(ctx.tz, False, ctx.ts, None if i == 0 else ctx.ts)] = row
                rows.append(row)
            hours = (np.arange(len(tracks)) - (len(tracks) - 1)) * (TYPICAL_PLAY_MS / 3_600_000)
        else:
            for i, end in enumerate(ends):
                prev = None if i == 0 else ends[i - 1]
                row = cache.get((ctx.tz, True, end, prev))
                if row is None:
                    row = context_features(end, prev, TYPICAL_PLAY_MS, None, zone)
                    row[5] = 1.0 if prev is None or end - prev > SESSION_GAP_S else 0.0
                    cache[(ctx.tz, True, end, prev)] = row
                rows.append(row)
            hours = (np.asarray(ends, dtype=np.float64) - ends[-1]) / 3600.0
        return Batch(
            cls=torch.from_numpy(cls)[None], own=torch.from_numpy(own.astype(np.int64))[None],
            artist=torch.from_numpy(art.astype(np.int64))[None],
            context=torch.tensor(rows, dtype=torch.float32)[None],
            hours=torch.from_numpy(hours.astype(np.float32))[None], memory=memory,
        )  # fmt: skip


TYPICAL_PLAY_MS = 200_000
SESSION_GAP_S = 1800


def save_checkpoint(
    model: SongNet,
    vocab: Vocabulary,
    metrics: dict[str, float],
    *,
    window: int,
    info: dict[str, str | int | float] | None = None,
) -> bytes:
    """Everything needed to load and use the model again, as bytes (for a database row)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(model.cfg),
        "vocab": vocab.to_dict(),
        "state": model.state_dict(),
        "metrics": dict(metrics),
        "window": window,
        "info": dict(info or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


class CheckpointError(ValueError):
    """The bytes are not a songnet checkpoint this version can load."""


def load_checkpoint(data: bytes) -> LoadedModel:
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many kinds for truncated or foreign bytes
        raise CheckpointError(f"not a readable model checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("not a songnet model checkpoint of a known format")
    cfg = ModelConfig(**payload["config"])
    vocab = Vocabulary.from_dict(payload["vocab"])
    state = payload["state"]
    module = SongNet(cfg, state["class_own"], state["class_artist"], state["track_features"])
    module.load_state_dict(state)
    module.eval()
    return LoadedModel(module, vocab, int(payload["window"]), dict(payload["metrics"]), dict(payload["info"]))
