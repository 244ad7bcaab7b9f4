"""Session splitting: worked examples, then the invariants as hypothesis properties."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from songnet_core.history import Listen, Play
from songnet_core.sessions import count_sessions, session_arrays, split_sessions, track_identity


def listen(play_id: int, track_id: int, end_ts: int, ms_played: int = 200_000) -> Listen:
    return Listen(play_id=play_id, track_id=track_id, artist_id=1, end_ts=end_ts, ms_played=ms_played)


def ids(sessions: list[list[Listen]]) -> list[list[int]]:
    return [[p.play_id for p in s] for s in sessions]


def test_gap_splits_and_short_plays_are_left_out_first() -> None:
    plays = [
        listen(1, 10, 1000),
        listen(2, 11, 1200, ms_played=5_000),  # a skip: left out
        listen(3, 12, 1000 + 1800),  # exactly the gap after play 1: same session
        listen(4, 13, 1000 + 1800 + 1801),  # more than the gap after play 3: new session
    ]
    assert ids(split_sessions(plays)) == [[1, 3], [4]]


def test_gap_is_measured_from_the_previous_kept_play() -> None:
    # The skip at 2000 does not bridge the 2000 s between the two kept plays.
    plays = [listen(1, 10, 0), listen(2, 11, 1000, ms_played=1_000), listen(3, 12, 2000)]
    assert ids(split_sessions(plays)) == [[1], [3]]


def test_unsorted_input_is_ordered_stably() -> None:
    plays = [listen(3, 12, 300), listen(1, 10, 100), listen(2, 11, 300)]
    assert ids(split_sessions(plays)) == [[1, 3, 2]]


def test_repeats_collapse_to_the_first_play_of_the_run() -> None:
    plays = [listen(1, 10, 0), listen(2, 10, 200), listen(3, 11, 400), listen(4, 10, 600)]
    assert ids(split_sessions(plays)) == [[1, 3, 4]]
    assert ids(split_sessions(plays, collapse_repeats=False)) == [[1, 2, 3, 4]]


def test_a_long_run_of_repeats_keeps_the_session_together() -> None:
    plays = [listen(i, 10, i * 1000) for i in range(1, 5)] + [listen(9, 11, 5000)]
    assert ids(split_sessions(plays)) == [[1, 9]]


def test_repeats_do_not_collapse_across_sessions() -> None:
    plays = [listen(1, 10, 0), listen(2, 10, 5000)]
    assert ids(split_sessions(plays)) == [[1], [2]]


def test_max_length_cuts_long_sessions() -> None:
    plays = [listen(i, i, i * 600) for i in range(1, 14)]  # one play every 10 minutes
    sessions = split_sessions(plays, max_len_s=3600)
    assert ids(sessions) == [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13]]


def test_plays_are_keyed_by_artist_and_title() -> None:
    def play(end_ts: int, title: str) -> Play:
        return Play(end_ts=end_ts, ms_played=60_000, artist="Björk", title=title, source="extended")

    sessions = split_sessions([play(0, "Joga"), play(100, "JOGA "), play(200, "Hunter")])
    assert [[p.title for p in s] for s in sessions] == [["Joga", "Hunter"]]


def test_custom_key_and_unkeyed_items() -> None:
    @dataclass(frozen=True)
    class Bare:
        end_ts: int
        ms_played: int
        artist: str

    plays = [Bare(0, 60_000, "a"), Bare(10, 60_000, "a"), Bare(20, 60_000, "b")]
    assert len(split_sessions(plays, key=lambda p: p.artist)[0]) == 2
    with pytest.raises(TypeError, match="neither track_id nor key"):
        split_sessions(plays)
    assert split_sessions(plays, collapse_repeats=False) == [plays]
    assert track_identity(listen(1, 42, 0)) == 42


def test_nothing_in_nothing_out() -> None:
    assert split_sessions([]) == []
    assert split_sessions([listen(1, 1, 0, ms_played=10)]) == []


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="gap_s"):
        split_sessions([], gap_s=-1)
    with pytest.raises(ValueError, match="max_len_s"):
        split_sessions([], max_len_s=-1)


# --- properties -------------------------------------------------------------------------

@st.composite
def histories(draw: st.DrawFn) -> list[Listen]:
    n = draw(st.integers(min_value=0, max_value=60))
    # Few tracks so repeats happen; small time steps so gaps fall on both sides of the bound.
    tracks = st.integers(min_value=1, max_value=4)
    times = st.integers(min_value=0, max_value=20_000)
    ms = st.sampled_from([0, 1_000, 29_999, 30_000, 30_001, 200_000])
    return [listen(i, draw(tracks), draw(times), draw(ms)) for i in range(n)]


params = st.fixed_dictionaries(
    {
        "min_ms": st.sampled_from([0, 30_000, 100_000]),
        "gap_s": st.sampled_from([0, 60, 1800]),
        "max_len_s": st.sampled_from([None, 0, 600, 3600]),
        "collapse_repeats": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(plays=histories(), kw=params)
def test_session_invariants(plays: list[Listen], kw: dict[str, object]) -> None:
    min_ms, gap_s, max_len_s = kw["min_ms"], kw["gap_s"], kw["max_len_s"]
    assert isinstance(min_ms, int) and isinstance(gap_s, int)
    assert max_len_s is None or isinstance(max_len_s, int)
    sessions = split_sessions(plays, **kw)  # type: ignore[arg-type]
    flat = [p for s in sessions for p in s]
    by_id = {p.play_id: p for p in plays}
    kept = sorted((p for p in plays if p.ms_played >= min_ms), key=lambda p: p.end_ts)
    position = {p.play_id: i for i, p in enumerate(kept)}

    # Sessions are non-empty; their plays come from the input, are long enough, and no play
    # is in two sessions (or twice in one).
    assert all(sessions)
    assert all(by_id[p.play_id] is p and p.ms_played >= min_ms for p in flat)
    assert len({p.play_id for p in flat}) == len(flat)
    # Order is kept: within and across sessions, the output follows the stable end-time order.
    assert [position[p.play_id] for p in flat] == sorted(position[p.play_id] for p in flat)
    # Each session covers the kept plays from its first play up to the next session's first.
    if not sessions:
        assert kept == []
        return
    starts = [position[s[0].play_id] for s in sessions]
    assert starts[0] == 0
    covered = [kept[a:b] for a, b in zip(starts, [*starts[1:], len(kept)], strict=True)]
    for session, span in zip(sessions, covered, strict=True):
        # Every gap inside a session is within the threshold; no session is too long.
        assert all(b.end_ts - a.end_ts <= gap_s for a, b in pairwise(span))
        if max_len_s is not None:
            assert span[-1].end_ts - span[0].end_ts <= max_len_s
        # Nothing but repeats is left out, and no consecutive repeats are left in.
        if kw["collapse_repeats"]:
            assert all(a.track_id != b.track_id for a, b in pairwise(session))
            left_out = [p for p in span if p not in session]
            assert all(span[span.index(p) - 1].track_id == p.track_id for p in left_out)
        else:
            assert session == span
    # A session ends only where the next kept play is beyond the gap or the maximum length.
    for prev, nxt in pairwise(covered):
        too_late = max_len_s is not None and nxt[0].end_ts - prev[0].end_ts > max_len_s
        assert nxt[0].end_ts - prev[-1].end_ts > gap_s or too_late


@settings(max_examples=200, deadline=None)
@given(plays=histories())
def test_without_collapsing_every_kept_play_is_in_exactly_one_session(plays: list[Listen]) -> None:
    sessions = split_sessions(plays, collapse_repeats=False)
    flat = [p.play_id for s in sessions for p in s]
    assert sorted(flat) == sorted(p.play_id for p in plays if p.ms_played >= 30_000)


@settings(max_examples=200, deadline=None)
@given(plays=histories(), gap_s=st.sampled_from([0, 60, 1800]))
def test_count_sessions_agrees_with_split_sessions(plays: list[Listen], gap_s: int) -> None:
    long_enough = [p.end_ts for p in plays if p.ms_played >= 30_000]
    assert count_sessions(long_enough, gap_s=gap_s) == len(split_sessions(plays, gap_s=gap_s))


@settings(max_examples=300, deadline=None)
@given(
    plays=histories(),
    min_ms=st.sampled_from([0, 30_000, 100_000]),
    gap_s=st.sampled_from([0, 60, 1800]),
)
def test_session_arrays_cut_what_split_sessions_cuts(
    plays: list[Listen], min_ms: int, gap_s: int
) -> None:
    sessions = split_sessions(plays, min_ms=min_ms, gap_s=gap_s)
    names = ("end_ts", "ms_played", "track_id")
    columns = [np.asarray([getattr(p, c) for p in plays], dtype=np.int64) for c in names]
    positions, starts = session_arrays(*columns, min_ms=min_ms, gap_s=gap_s)
    got = [plays[i].play_id for i in positions.tolist()]
    assert got == [p.play_id for s in sessions for p in s]
    assert starts.tolist() == np.cumsum([0, *(len(s) for s in sessions)])[:-1].tolist()
    with pytest.raises(ValueError):
        session_arrays(*columns, gap_s=-1)
