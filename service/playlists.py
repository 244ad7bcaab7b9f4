"""Generating the configured playlists from the promoted model and the local library.

`generate_for_config` is what the daemon and `songnet sync` call; `songnet generate` goes
through `PlaylistGenerator` directly for its sampling options. A generator loads the library
once (tracks, artists, sessions for the reasons, the feature cache) and the promoted model
once, then generates any number of playlists: seeds resolved against the library, continued
by the model under the playlist rules, each track with a reason. Without a promoted model (a
library too small to train, `service.training.MIN_TRAIN_SESSIONS`, or no training succeeded
yet) the simple rules rank instead (`ranker.rules_scorer`), and each playlist says so
(`GeneratedPlaylist.ranker`).

With no playlists configured, `default_playlist_config` gives one seeded with the listener's
most played tracks of recent weeks.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import tzinfo
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog
from sqlalchemy import Engine

from service import model_store
from service.settings import PlaylistConfig, Settings
from service.training import one_torch_thread
from songnet_core.features import TrackFeatures
from songnet_core.generate import (
    GenerationContext,
    NextTrackScorer,
    PlaylistRules,
    Sampling,
    continue_playlist,
)
from songnet_core.history import Listen, ListenColumns, TrackInfo
from songnet_core.ranker import ListeningHistory, fuses_baselines, rules_scorer, songnet_scorer
from songnet_core.reasons import Explainer
from songnet_core.rerank import Reranker
from songnet_core.seeds import SeedIndex
from songnet_core.sessions import session_arrays
from songnet_core.transitions import TransitionCounts

if TYPE_CHECKING:
    from songnet_core.model import LoadedModel

log = structlog.get_logger(__name__)

DEFAULT_PLAYLIST_NAME = "songnet weekly"
DEFAULT_PLAYLIST_LENGTH = 30
DEFAULT_SEEDS = 3
RECENT_WEEKS = 4
# Nucleus sampling keeps the long tail of unlikely tracks out of every playlist.
DEFAULT_TOP_P = 0.9


class NoModelError(Exception):
    """No promoted model to generate with."""

    def __init__(self) -> None:
        super().__init__("no trained model yet: run `songnet train` (after `songnet import`) first")


class EmptyLibraryError(Exception):
    def __init__(self, what: str = "the library holds no plays yet") -> None:
        super().__init__(f"{what}: import your Spotify export first (`songnet import PATH`)")


# What ranked a playlist (`GeneratedPlaylist.ranker`, the `.json` file's "ranker").
MODEL_RANKER = "model"  # the promoted model's full ranker (`ranker.songnet_scorer`)
RULES_RANKER = "rules"  # no model yet: the simple rules alone (`ranker.rules_scorer`)


@dataclass(frozen=True)
class GeneratedTrack:
    track_id: int
    artist: str
    title: str
    uri: str | None
    reason: str
    is_seed: bool


@dataclass
class GeneratedPlaylist:
    config_id: str
    name: str
    tracks: list[GeneratedTrack]
    model_version: int | None
    public: bool = False
    requested_length: int = 0
    note: str | None = None  # e.g. why the playlist is shorter than asked
    ranker: str = MODEL_RANKER  # RULES_RANKER: made by the simple rules, no model yet


@dataclass
class Library:
    """What generation reads of the library, loaded once."""

    tracks: dict[int, TrackInfo]
    uri_aliases: dict[str, int]
    listens: Sequence[Listen]  # every stored play, by end time (`ListenColumns` from `load`)
    artist_of: npt.NDArray[np.int64]  # artist id by track id, -1 where no track
    transitions: TransitionCounts
    features: dict[int, TrackFeatures]
    sessions: list[list[int]] = field(default_factory=list)  # track ids, oldest session first
    plays: list[int] = field(default_factory=list)  # track ids of plays of min_play_ms, oldest first
    seed_index: SeedIndex = field(init=False)
    # How `load` cut the sessions: (min_ms, gap_s) and, for `history`, the position in
    # `listens` of each play of `sessions` and where each session starts among them.
    split: tuple[tuple[int, int], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = field(
        default=None, repr=False
    )

    def __post_init__(self) -> None:
        self.seed_index = SeedIndex(list(self.tracks.values()), self.uri_aliases)

    @classmethod
    def load(cls, engine: Engine, settings: Settings) -> Library:
        # A library is 100k+ new objects that hold no cycles: the collector's passes over
        # them (every 700 allocations, the oldest generation too) are a third of the time.
        with _collector_paused():
            return cls._load(engine, settings)

    @classmethod
    def _load(cls, engine: Engine, settings: Settings) -> Library:
        from service.features import load_track_features
        from service.library import load_listen_columns, load_tracks

        tracks = load_tracks(engine)
        size = max(tracks, default=-1) + 1
        artist_of = np.full(size, -1, dtype=np.int64)
        ids = np.fromiter(tracks, dtype=np.int64, count=len(tracks))
        artists = (t.artist_id for t in tracks.values())
        artist_of[ids] = np.fromiter(artists, dtype=np.int64, count=len(tracks))
        listens = load_listen_columns(engine, artist_of)
        bounds = (settings.min_play_ms, int(settings.session_gap_minutes * 60))
        positions, starts = session_arrays(
            listens.end_ts, listens.ms_played, listens.track_id, min_ms=bounds[0], gap_s=bounds[1]
        )
        in_order = listens.track_id[positions]
        lengths = np.diff(np.append(starts, positions.size))
        transitions = TransitionCounts.from_arrays(in_order, lengths)
        plays = in_order.tolist()
        edges = [*starts.tolist(), len(plays)]
        by_session = [plays[a:b] for a, b in pairwise(edges)]
        return cls(
            tracks, load_uri_aliases(engine), listens, artist_of, transitions, load_track_features(engine),
            sessions=by_session, plays=plays, split=(bounds, positions, starts),
        )  # fmt: skip

    def history(self, settings: Settings) -> ListeningHistory:
        """Every kept play, read as `songnet eval` reads a history (`build_sequence`)."""
        from service.training import listener_zone_name
        from songnet_core.dataset import build_sequence

        bounds = (settings.min_play_ms, int(settings.session_gap_minutes * 60))
        x = self.listens
        if self.split is not None and self.split[0] == bounds and isinstance(x, ListenColumns):
            # The sessions `load` cut, as `build_sequence` cuts them (its context features
            # aside, which a history does not hold), with the library's counts of them.
            at = self.split[1]
            artists, ends = x.artist_id[at].tolist(), x.end_ts[at].tolist()
            return ListeningHistory(self.plays, artists, ends, self.sessions, self.transitions)
        seq = build_sequence(
            self.listens, tz=listener_zone_name(settings), min_ms=settings.min_play_ms,
            gap_s=int(settings.session_gap_minutes * 60),
        )  # fmt: skip
        return ListeningHistory.of(seq)

    def recent_tracks(self, since_ts: int) -> set[int]:
        x = self.listens
        if isinstance(x, ListenColumns):
            return set(x.track_id[x.end_ts >= since_ts].tolist())
        return {p.track_id for p in x if p.end_ts >= since_ts}


_URI_ALIASES = "SELECT uri, track_id FROM track_uri"


@contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_uri_aliases(engine: Engine) -> dict[str, int]:
    """Every URI seen for a track (`track_uri`), and each track's preferred URI."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        aliases: dict[str, int] = dict(cursor.execute(_URI_ALIASES).fetchall())
        for tid, uri in cursor.execute("SELECT id, uri FROM track").fetchall():
            if uri and tid is not None:
                aliases.setdefault(uri, tid)
    finally:
        raw.close()
    return aliases


class PlaylistGenerator:
    """Generates playlists from one library snapshot and one scorer."""

    def __init__(
        self,
        library: Library,
        scorer: NextTrackScorer,
        *,
        zone: tzinfo,
        model_version: int | None,
        min_play_ms: int = 30_000,
        ranker: str = MODEL_RANKER,
    ) -> None:
        self.library = library
        self.min_play_ms = min_play_ms
        self.scorer = scorer
        self.zone = zone
        self.model_version = model_version
        self.ranker = ranker
        self.explainer = Explainer(library.transitions, library.tracks, library.features)

    @classmethod
    def from_promoted(cls, engine: Engine, settings: Settings) -> PlaylistGenerator:
        """The generator of the daemon, `songnet sync` and `songnet generate`: the promoted
        model's ranker over the current library, or, while there is no promoted model (a
        library too small to train, a training not run or failed yet), the simple rules'
        (`EmptyLibraryError` when the library has no plays to rank with)."""
        from service.training import listener_zone_name

        stored = model_store.promoted_model(engine)
        model = _cached_model(engine, stored.id) if stored is not None else None
        library = Library.load(engine, settings)
        if not library.listens:
            raise EmptyLibraryError()
        history = library.history(settings)
        if stored is None or model is None:
            if not history.track_ids:
                raise EmptyLibraryError(f"the library holds no plays of at least {settings.min_play_ms // 1000} s")
            if stored is not None:
                log.warning("promoted model not loadable; playlists use the simple rules", model_version=stored.id)
            # The rules' fusion `songnet eval` reports as `fusion`, under the unfitted weights.
            rules = rules_scorer(history, size=int(library.artist_of.size))
            return cls(
                library, rules, zone=settings.zone, model_version=None, min_play_ms=settings.min_play_ms,
                ranker=RULES_RANKER,
            )  # fmt: skip
        # The ranker `songnet eval` measures, reading the listener's whole history.
        scorer = songnet_scorer(
            model, history, blend_weights(stored.metrics), artist_of=library.artist_of,
            zone_name=listener_zone_name(settings), reranker=Reranker.from_metrics(stored.metrics),
        )  # fmt: skip
        return cls(library, scorer, zone=settings.zone, model_version=stored.id, min_play_ms=settings.min_play_ms)

    def default_seeds(self) -> list[str]:
        """The listener's most played tracks of recent weeks, for a playlist without seeds."""
        lib = self.library
        x = lib.listens
        kept: Sequence[Listen]
        if isinstance(x, ListenColumns):
            kept = x.where(x.ms_played >= self.min_play_ms)
        else:
            kept = [p for p in x if p.ms_played >= self.min_play_ms]
        return most_played_seeds(kept, lib.tracks, lib.uri_aliases)

    def resolve_seeds(self, seeds: Sequence[str]) -> list[TrackInfo]:
        """Each seed's track (`songnet_core.seeds.SeedError` for the first that fails)."""
        return [self.library.seed_index.resolve(s) for s in seeds]

    def generate(
        self,
        config: PlaylistConfig,
        *,
        rng_seed: int | None = None,
        now: int | None = None,
        sampling: Sampling | None = None,
        rules: PlaylistRules | None = None,
        extra_exclude: Iterable[int] = (),
    ) -> GeneratedPlaylist:
        """`config`'s playlist: its seeds first, `config.length` tracks in all."""
        moment = int(now if now is not None else time.time())
        texts = list(config.seeds) or self.default_seeds()
        seeds = self.resolve_seeds(texts)
        seed_ids = list(dict.fromkeys(t.track_id for t in seeds))
        if len(seed_ids) > config.length:
            raise ValueError(f"{len(seed_ids)} seeds do not fit a playlist of {config.length} tracks")
        exclude = set(extra_exclude)
        if config.exclude_recent_days > 0:
            exclude |= self.library.recent_tracks(moment - config.exclude_recent_days * 86_400)
        base_rules = rules or PlaylistRules()
        rules = PlaylistRules(
            base_rules.max_per_artist, base_rules.artist_window, base_rules.no_back_to_back,
            frozenset(exclude - set(seed_ids)) | base_rules.exclude,
        )  # fmt: skip
        sampling = sampling or Sampling(temperature=config.temperature, top_p=DEFAULT_TOP_P)
        context = GenerationContext.at(moment, self.zone)
        started = time.perf_counter()
        with one_torch_thread():
            ids = continue_playlist(
                self.scorer, seed_ids, config.length, artist_of=self.library.artist_of, context=context,
                sampling=sampling, rules=rules, rng=rng_seed,
            )  # fmt: skip
        reasons = self.explainer.explain(ids, len(seed_ids), context)
        tracks = [self._track(t, reason, i < len(seed_ids)) for i, (t, reason) in enumerate(zip(ids, reasons, strict=True))]
        note = None
        if len(ids) < config.length:
            note = (
                f"{len(ids)} of {config.length} tracks: no other track of your library fits the rules "
                "(no repeats, artists spread out, recent plays excluded)"
            )
            log.warning("playlist shorter than asked", playlist=config.name, tracks=len(ids), length=config.length, why=note)
        log.info(
            "playlist generated", playlist=config.name, tracks=len(ids), seeds=len(seed_ids),
            model_version=self.model_version, ranker=self.ranker, ms=round((time.perf_counter() - started) * 1000, 1),
        )  # fmt: skip
        return GeneratedPlaylist(
            config_id=config.id, name=config.name, tracks=tracks, model_version=self.model_version,
            public=config.public, requested_length=config.length, note=note, ranker=self.ranker,
        )  # fmt: skip

    def _track(self, track_id: int, reason: str, is_seed: bool) -> GeneratedTrack:
        info = self.library.tracks.get(track_id)
        if info is None:  # a model class no longer in the library: cannot happen short of a bug
            return GeneratedTrack(track_id, "unknown artist", f"track {track_id}", None, reason, is_seed)
        return GeneratedTrack(track_id, info.artist, info.title, info.uri, reason, is_seed)


def blend_weights(metrics: dict[str, Any]) -> dict[str, float]:
    """The blend a model was trained with (`blend_<scorer>` metrics); empty for the model
    alone (older models, or validation too small to fit on)."""
    weights = {k.removeprefix("blend_"): float(v) for k, v in metrics.items() if k.startswith("blend_")}
    return weights if fuses_baselines(weights) else {}


# One loaded model per database and version: the daemon generates several playlists a week
# from the same model, and loading it is the slow part.
_MODEL_CACHE: dict[tuple[str, int], LoadedModel] = {}


def _cached_model(engine: Engine, model_id: int) -> LoadedModel | None:
    key = (str(engine.url), model_id)
    found = _MODEL_CACHE.get(key)
    if found is None:
        found = model_store.load_model(engine, model_id)
        if found is None:
            return None
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = found
    return found


def generate_for_config(
    engine: Engine,
    settings: Settings,
    config: PlaylistConfig,
    *,
    rng_seed: int | None = None,
    now: int | None = None,
) -> GeneratedPlaylist:
    """One configured playlist from the promoted model, or the simple rules while there is
    none (`EmptyLibraryError`, `SeedError`)."""
    return PlaylistGenerator.from_promoted(engine, settings).generate(config, rng_seed=rng_seed, now=now)


def default_playlist_config(engine: Engine, settings: Settings) -> PlaylistConfig:
    """The playlist songnet makes when none is configured: seeded with the listener's most
    played tracks of their last `RECENT_WEEKS` weeks of listening (of the whole history where
    those weeks are thin), one per artist."""
    from service.library import load_listens, load_tracks

    listens = [x for x in load_listens(engine) if x.ms_played >= settings.min_play_ms]
    tracks = load_tracks(engine)
    seeds = most_played_seeds(listens, tracks, load_uri_aliases(engine))
    return PlaylistConfig(name=DEFAULT_PLAYLIST_NAME, seeds=seeds, length=DEFAULT_PLAYLIST_LENGTH)


def most_played_seeds(
    listens: Sequence[Listen], tracks: dict[int, TrackInfo], uri_aliases: dict[str, int], n: int = DEFAULT_SEEDS
) -> list[str]:
    """Seed strings (URI where known, else "Artist - Title") for the top tracks of recent weeks,
    one per artist, each checked to resolve back to its own track."""
    if not listens:
        return []
    if isinstance(listens, ListenColumns):
        track_ids, end_ts = listens.track_id, listens.end_ts
    else:
        track_ids = np.fromiter((x.track_id for x in listens), dtype=np.int64, count=len(listens))
        end_ts = np.fromiter((x.end_ts for x in listens), dtype=np.int64, count=len(listens))
    latest = int(end_ts.max())
    index = SeedIndex(list(tracks.values()), uri_aliases)
    for since in (latest - RECENT_WEEKS * 7 * 86_400, None):
        window = slice(None) if since is None else end_ts >= since
        seeds: list[str] = []
        artists: set[int] = set()
        for tid in _most_played(track_ids[window], end_ts[window]):
            info = tracks.get(tid)
            if info is None or info.artist_id in artists:
                continue
            text = info.uri or f"{info.artist} - {info.title}"
            try:
                if index.resolve(text).track_id != tid:
                    continue
            except ValueError:
                continue
            seeds.append(text)
            artists.add(info.artist_id)
            if len(seeds) == n:
                return seeds
    return seeds


def _most_played(track_ids: npt.NDArray[np.int64], end_ts: npt.NDArray[np.int64]) -> list[int]:
    """The distinct tracks of a window of plays, most played first, then most recently heard
    (the end time of a track's last play in the window), then by id."""
    ids, inverse, counts = np.unique(track_ids, return_inverse=True, return_counts=True)
    last = np.full(ids.size, -1, dtype=np.int64)
    np.maximum.at(last, inverse, np.arange(track_ids.size))
    order = np.lexsort((ids, -end_ts[last], -counts))
    ranked: list[int] = ids[order].tolist()
    return ranked
