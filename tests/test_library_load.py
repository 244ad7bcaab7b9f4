"""Loading the library for generation reads exactly what the slower per-play code read: the
plays, their sessions and counts, the history the ranker reads, features, URIs, and the
blend's structures (each against a plain re-implementation of what was there before)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from service import tables
from service.db import open_database
from service.features import load_track_features, recompute_features
from service.library import load_listens, load_tracks
from service.playlists import Library, PlaylistGenerator, most_played_seeds
from service.settings import load_settings
from songnet_core.blend import BlendedNextTrack
from songnet_core.dataset import build_sequence
from songnet_core.features import TrackFeatures
from songnet_core.history import Listen, ListenColumns, Play, TrackInfo
from songnet_core.ranker import ListeningHistory
from songnet_core.seeds import SeedIndex
from songnet_core.sessions import split_sessions
from songnet_core.synthetic import SyntheticConfig, generate_plays
from songnet_core.transitions import TransitionCounts
from tests.library_rows import store_plays


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("library")
    engine = open_database(data)
    plays = generate_plays(SyntheticConfig(n_plays=1500, n_artists=30, n_clusters=4, seed=5))
    last = max(p.end_ts for p in plays)
    # Plays ending at the same second (ordered by play id), a repeat, short plays, every
    # skipped flag, a track without a URI.
    extra = [
        Play(
            last + 7200,
            200_000,
            "Zed",
            "Same Second A",
            "extended",
            uri="spotify:track:" + "a" * 22,
            skipped=True,
        ),
        Play(last + 7200, 200_000, "Zed", "Same Second B", "extended", uri=None, skipped=False),
        Play(last + 7300, 200_000, "Zed", "Same Second B", "extended", uri=None),
        Play(
            last + 7400,
            5_000,
            "Zed",
            "Same Second A",
            "extended",
            uri="spotify:track:" + "a" * 22,
            skipped=True,
        ),
    ]
    store_plays(engine, [*plays, *extra], aliases={plays[0].uri or "": "spotify:track:" + "b" * 22})
    recompute_features(engine, now=1)
    engine.dispose()
    return data


def old_load_track_features(engine: Engine) -> dict[int, TrackFeatures]:
    """`load_track_features` as it was: SQLAlchemy rows, one JSON parse per track."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT track_id, play_count, skip_rate, mean_completion, first_ts, last_ts, hour_profile_json FROM track_features")).all()  # fmt: skip
    out = {}
    for track_id, plays, skip_rate, completion, first_ts, last_ts, profile_json in rows:
        try:
            profile = tuple(float(x) for x in json.loads(profile_json))
        except (ValueError, TypeError):
            profile = ()
        out[track_id] = TrackFeatures(
            track_id, plays, skip_rate, completion, first_ts, last_ts, profile if len(profile) == 24 else tuple([0.0] * 24)
        )  # fmt: skip
    return out


def old_uri_aliases(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        aliases = dict(session.exec(select(tables.TrackUri.uri, tables.TrackUri.track_id)).all())
        for tid, uri in session.exec(select(tables.Track.id, tables.Track.uri)).all():
            if uri and tid is not None:
                aliases.setdefault(uri, tid)
    return aliases


def test_the_library_loads_what_the_per_play_code_loaded(library_dir: Path) -> None:
    engine = open_database(library_dir)
    settings = load_settings(data_dir=library_dir)
    lib = Library.load(engine, settings)
    listens = load_listens(engine)
    assert isinstance(lib.listens, ListenColumns)
    assert list(lib.listens) == listens and len(lib.listens) == len(listens) > 1500
    assert any(a.end_ts == b.end_ts for a, b in pairwise(listens))
    assert {x.skipped for x in lib.listens} == {None, True, False}
    gap = int(settings.session_gap_minutes * 60)
    sessions = [
        [p.track_id for p in s]
        for s in split_sessions(listens, min_ms=settings.min_play_ms, gap_s=gap)
    ]
    assert lib.sessions == sessions and lib.plays == [t for s in sessions for t in s]
    assert vars(lib.transitions).keys() == vars(TransitionCounts(sessions)).keys()
    for name, value in vars(TransitionCounts(sessions)).items():
        assert np.array_equal(getattr(lib.transitions, name), value), name
    seq = build_sequence(listens, tz="Europe/Berlin", min_ms=settings.min_play_ms, gap_s=gap)
    history = lib.history(settings)
    assert history == ListeningHistory.of(seq) and history.transitions is lib.transitions
    assert all(
        type(v) is int
        for v in (*history.track_ids, *history.artist_ids, *history.end_ts, *history.sessions[0])
    )
    # Other session bounds than the library was loaded with: cut again.
    other = settings.model_copy(update={"session_gap_minutes": 5.0})
    seq5 = build_sequence(listens, tz="UTC", min_ms=settings.min_play_ms, gap_s=300)
    assert lib.history(other) == ListeningHistory.of(seq5) != history
    assert lib.tracks == load_tracks(engine)
    assert lib.features == old_load_track_features(engine)
    assert lib.uri_aliases == old_uri_aliases(engine)
    since = listens[len(listens) // 2].end_ts
    assert lib.recent_tracks(since) == {x.track_id for x in listens if x.end_ts >= since}
    engine.dispose()


def test_hour_profiles_that_are_not_the_caches_own_read_as_they_did(
    library_dir: Path, tmp_path: Path
) -> None:
    from service.db import backup_database, database_path

    backup_database(database_path(library_dir), database_path(tmp_path))
    engine = open_database(tmp_path)
    odd = ["[]", "null", "not json", json.dumps(list(range(24))), json.dumps([str(i / 10) for i in range(24)]),
           json.dumps([[1.0]] * 24), "[1.0]]", json.dumps([0.5] * 23)]  # fmt: skip
    with engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                text("SELECT track_id FROM track_features ORDER BY track_id LIMIT 8")
            )
        ]
        for tid, profile in zip(ids, odd, strict=True):
            conn.execute(
                text("UPDATE track_features SET hour_profile_json = :p WHERE track_id = :t"),
                {"p": profile, "t": tid},
            )
    assert load_track_features(engine) == old_load_track_features(engine)
    assert load_track_features(engine, ids[:3]) == {
        t: f for t, f in old_load_track_features(engine).items() if t in ids[:3]
    }
    engine.dispose()


def test_listen_columns_read_as_a_list_of_listens() -> None:
    listens = [
        Listen(i, 10 + i, 20 + i, 1000 * i, 500 * i, [None, True, False][i % 3]) for i in range(7)
    ]
    cols = [np.asarray([getattr(x, f.name) for x in listens]) for f in dataclasses.fields(Listen)]
    skipped = np.asarray(
        [-1 if x.skipped is None else int(x.skipped) for x in listens], dtype=np.int8
    )
    got = ListenColumns(*cols[:5], skipped)
    assert len(got) == 7 and bool(got) and list(got) == listens
    assert (
        got[0] == listens[0]
        and got[-1] == listens[-1]
        and got[2:5] == listens[2:5]
        and got[::-2] == listens[::-2]
    )
    assert all(type(v) is int for v in dataclasses.astuple(got[3])[:5])
    with pytest.raises(IndexError):
        got[7]
    empty = ListenColumns(
        *(np.zeros(0, dtype=np.int64) for _ in range(5)), np.zeros(0, dtype=np.int8)
    )
    assert len(empty) == 0 and not empty and list(empty) == []


def old_sknn_arrays(sessions: list[list[int]], size: int, last: int) -> dict[str, np.ndarray]:
    kept = [
        np.unique(np.asarray([t for t in s if 0 <= t < size], dtype=np.int64))
        for s in sessions[-last:]
    ]
    kept = [s for s in kept if s.size]
    lengths = np.asarray([s.size for s in kept], dtype=np.int64)
    flat = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    owners = np.repeat(np.arange(len(kept)), lengths)
    order = np.argsort(flat, kind="stable")
    return {
        "_lengths": lengths, "_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "_session_flat": flat, "_session_norm": np.sqrt(lengths.astype(np.float64)),
        "_member_track": flat[order], "_member_session": owners[order],
    }  # fmt: skip


class Flat:
    def scores(self, history: list[int], context: object) -> np.ndarray:
        return np.zeros(12)


@settings(max_examples=150, deadline=None)
@given(
    sessions=st.lists(st.lists(st.integers(min_value=-2, max_value=14), max_size=6), max_size=12),
    size=st.integers(min_value=1, max_value=12),
    last=st.sampled_from([0, 1, 3, 1000]),
)
def test_the_blends_session_knn_arrays_and_counts_are_those_of_the_per_session_code(
    sessions: list[list[int]], size: int, last: int
) -> None:
    plays = [t for s in sessions for t in s]
    blend = BlendedNextTrack(
        Flat(),
        TransitionCounts([[0]]),
        sessions,
        plays,
        {"sknn": 1.0},
        size=size,
        sknn_sessions=last,
    )
    for name, want in old_sknn_arrays(sessions, size, last).items():
        got = getattr(blend, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    kept = [[t for t in s if t >= 0] for s in sessions]
    lengths = np.asarray([len(s) for s in kept], dtype=np.int64)
    fast = TransitionCounts.from_arrays(
        np.asarray([t for s in kept for t in s], dtype=np.int64), lengths
    )
    for name, want in vars(TransitionCounts(kept)).items():
        assert np.array_equal(getattr(fast, name), want), name


def old_most_played_seeds(
    listens: list[Listen], tracks: dict[int, TrackInfo], aliases: dict[str, int], n: int = 3
) -> list[str]:
    """`most_played_seeds` as it was: a Counter and a dict per window."""
    if not listens:
        return []
    latest = max(x.end_ts for x in listens)
    index = SeedIndex(list(tracks.values()), aliases)
    seeds: list[str] = []
    for since in (latest - 4 * 7 * 86_400, None):
        window = [x for x in listens if since is None or x.end_ts >= since]
        counts = Counter(x.track_id for x in window)
        last_heard = {x.track_id: x.end_ts for x in window}
        seeds, artists = [], set()
        for tid, _ in sorted(counts.items(), key=lambda kv: (-kv[1], -last_heard[kv[0]], kv[0])):
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


@settings(max_examples=150, deadline=None)
@given(
    plays=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=60 * 86_400)
        ),
        max_size=40,
    ),
    n=st.integers(min_value=1, max_value=4),
)
def test_most_played_seeds_are_those_of_the_per_play_code(
    plays: list[tuple[int, int]], n: int
) -> None:
    # Tracks 1..8 (9 is no track), four artists; every third without a URI; plays in any order.
    tracks = {
        t: TrackInfo(
            t,
            t % 4,
            f"Artist {t % 4}",
            f"Title {t}",
            None if t % 3 == 0 else f"spotify:track:{t:022d}",
        )
        for t in range(1, 9)
    }
    listens = [Listen(i, t, t % 4, end, 200_000) for i, (t, end) in enumerate(plays)]
    want = old_most_played_seeds(listens, tracks, {}, n)
    assert most_played_seeds(listens, tracks, {}, n) == want
    ordered = sorted(listens, key=lambda x: (x.end_ts, x.play_id))
    cols = [
        np.asarray([getattr(x, f.name) for x in ordered], dtype=np.int64)
        for f in dataclasses.fields(Listen)[:5]
    ]
    columns = ListenColumns(*cols, np.full(len(ordered), -1, dtype=np.int8))
    assert most_played_seeds(columns, tracks, {}, n) == old_most_played_seeds(
        ordered, tracks, {}, n
    )


def test_default_seeds_read_the_columns_as_the_plays(library_dir: Path) -> None:
    engine = open_database(library_dir)
    settings = load_settings(data_dir=library_dir)
    lib = Library.load(engine, settings)
    generator = PlaylistGenerator(lib, Flat(), zone=settings.zone, model_version=None)
    kept = [x for x in load_listens(engine) if x.ms_played >= settings.min_play_ms]
    seeds = generator.default_seeds()
    assert len(seeds) == 3 and seeds == old_most_played_seeds(kept, lib.tracks, lib.uri_aliases)
    engine.dispose()
