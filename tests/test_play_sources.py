"""The cross-source dedup rule (`songnet_core.play_sources`): worked examples, then the
invariants as hypothesis properties over every kind of clock (start or end stamps, 1 s to a
minute of resolution)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from songnet_core.play_sources import (
    ACCOUNT,
    EXTENDED,
    MATCH_TOLERANCE_S,
    MAX_RESOLUTION_S,
    PlaySource,
    closest_match,
    same_listening,
    search_span,
    start_span,
)

T0 = 1_700_000_000


@dataclass(frozen=True)
class Listening:
    """What happened: a play that started at `start` (epoch s) and lasted `ms` ms."""

    start: int
    ms: int

    def recorded_by(self, source: PlaySource, skew_s: int = 0) -> tuple[int, int]:
        """The stored (end_ts, ms_played) of this play as `source`'s clock (off by `skew_s`)
        stamps it: its start or its end, truncated to the source's resolution."""
        start_ms = (self.start + skew_s) * 1000
        res_ms = source.resolution_s * 1000
        if source.stamps == "end":
            stamp = (start_ms + self.ms) // res_ms * source.resolution_s
        else:
            stamp = start_ms // res_ms * source.resolution_s
        return source.stored_end_ts(stamp, self.ms), self.ms


sources = st.builds(
    PlaySource,
    name=st.sampled_from(["a", "b", "c"]),
    rank=st.integers(0, 50),
    stamps=st.sampled_from(["start", "end"]),
    resolution_s=st.integers(1, MAX_RESOLUTION_S),
)
starts = st.integers(T0, T0 + 10 * 86_400)
durations = st.integers(0, 2 * 3600 * 1000)


# -- worked examples -----------------------------------------------------------------------


def test_account_and_extended_records_of_one_play_are_the_same_listening() -> None:
    # 200 s from T0 + 7: the extended export says it ended at T0 + 207, the account export
    # in that minute (truncated); with ms_played equal or a few seconds off.
    play = Listening(T0 + 7, 200_000)
    ext_end, _ = play.recorded_by(EXTENDED)
    acc_end, _ = play.recorded_by(ACCOUNT)
    assert acc_end == ext_end // 60 * 60 != ext_end
    for acc_ms in (200_000, 197_500, 203_000):
        assert same_listening(EXTENDED, ext_end, 200_000, ACCOUNT, acc_end, acc_ms)


def test_the_same_track_played_again_right_after_is_another_listening() -> None:
    # Two plays back to back, the first 67 s, the second 214 s: the account record of the
    # first starts near the second's start, but ends a good two minutes before it.
    first, second = Listening(T0, 67_000), Listening(T0 + 67, 214_000)
    acc_end, acc_ms = first.recorded_by(ACCOUNT)
    stored = [(EXTENDED, *first.recorded_by(EXTENDED)), (EXTENDED, *second.recorded_by(EXTENDED))]
    assert not same_listening(ACCOUNT, acc_end, acc_ms - 5_000, *stored[1])
    assert closest_match(ACCOUNT, acc_end, acc_ms - 5_000, stored) == 0


def test_a_play_longer_than_an_hour_is_matched_too() -> None:
    play = Listening(T0, 76 * 60_000 + 413)
    assert same_listening(
        EXTENDED, *play.recorded_by(EXTENDED), ACCOUNT, *play.recorded_by(ACCOUNT)
    )
    lo, hi = search_span(ACCOUNT, *play.recorded_by(ACCOUNT))
    assert lo <= play.recorded_by(EXTENDED)[0] <= hi


def test_a_source_coarser_than_a_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="resolution_s"):
        PlaySource("daily", rank=1, stamps="end", resolution_s=86_400)


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(sources, sources, starts, durations, st.integers(-7200, 7200), durations)
def test_the_rule_is_symmetric(
    a: PlaySource, b: PlaySource, start: int, a_ms: int, offset: int, b_ms: int
) -> None:
    a_end, _ = Listening(start, a_ms).recorded_by(a)
    b_end, _ = Listening(start + offset, b_ms).recorded_by(b)
    assert same_listening(a, a_end, a_ms, b, b_end, b_ms) == same_listening(
        b, b_end, b_ms, a, a_end, a_ms
    )


@settings(max_examples=300, deadline=None)
@given(sources, sources, starts, durations, st.integers(-7200, 7200), durations)
def test_a_record_never_matches_a_play_further_away_than_the_tolerance(
    a: PlaySource, b: PlaySource, start: int, a_ms: int, offset: int, b_ms: int
) -> None:
    """Past the tolerance (and what each clock's resolution and whole seconds blur): never."""
    a_end, _ = Listening(start, a_ms).recorded_by(a)
    b_end, _ = Listening(start + offset, b_ms).recorded_by(b)
    blur = a.resolution_s + b.resolution_s + 2
    if abs(offset) > MATCH_TOLERANCE_S + blur:
        assert not same_listening(a, a_end, a_ms, b, b_end, b_ms)
    if a.stamps == b.stamps == "end":
        ends_apart = abs(offset * 1000 + b_ms - a_ms) / 1000
        if ends_apart > MATCH_TOLERANCE_S + blur:
            assert not same_listening(a, a_end, a_ms, b, b_end, b_ms)


@settings(max_examples=300, deadline=None)
@given(
    sources,
    sources,
    starts,
    durations,
    st.integers(-(MATCH_TOLERANCE_S - 2), MATCH_TOLERANCE_S - 2),
    st.data(),
)
def test_one_play_seen_by_two_clocks_is_the_same_listening(
    a: PlaySource, b: PlaySource, start: int, ms: int, skew: int, data: st.DataObject
) -> None:
    """Clock skew and an ms_played that differs, together within the tolerance: a match."""
    room_ms = (MATCH_TOLERANCE_S - 2 - abs(skew)) * 1000
    b_ms = max(0, ms + data.draw(st.integers(-room_ms, room_ms)))
    play = Listening(start, ms)
    a_end, _ = play.recorded_by(a)
    # b's clock is off by `skew`; where it stamps the end, the end it saw is b_ms after the start.
    b_end, _ = Listening(start, b_ms).recorded_by(b, skew_s=skew)
    assert same_listening(a, a_end, ms, b, b_end, b_ms)
    # and every stored match lies in the span the importer searches
    lo, hi = search_span(a, a_end, ms)
    assert lo <= b_end <= hi
    s_lo, s_hi = start_span(a, a_end, ms)
    assert s_lo <= b_end - b_ms // 1000 <= s_hi


@settings(max_examples=300, deadline=None)
@given(
    sources,
    starts,
    durations,
    st.lists(st.tuples(sources, st.integers(-600, 600), durations), max_size=8),
)
def test_closest_match_is_a_match_and_none_only_when_there_is_none(
    a: PlaySource, start: int, ms: int, others: list[tuple[PlaySource, int, int]]
) -> None:
    a_end, _ = Listening(start, ms).recorded_by(a)
    stored = [(b, Listening(start + off, b_ms).recorded_by(b)[0], b_ms) for b, off, b_ms in others]
    matches = [i for i, rec in enumerate(stored) if same_listening(a, a_end, ms, *rec)]
    found = closest_match(a, a_end, ms, stored)
    if not matches:
        assert found is None
        return
    assert found in matches
    if any(stored[i][2] == ms for i in matches):
        assert stored[found][2] == ms


def take(
    found: list[tuple[PlaySource, int, int, int]], source: PlaySource, end_ts: int, ms: int
) -> int | None:
    """What the importer does with each record: the closest match, removed (one to one)."""
    i = closest_match(source, end_ts, ms, [rec[:3] for rec in found])
    return None if i is None else found.pop(i)[3]


@settings(max_examples=200, deadline=None)
@given(
    sources,
    sources,
    starts,
    st.lists(st.tuples(st.integers(0, 600), durations), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_plays_apart_by_more_than_the_tolerance_pair_one_to_one_in_any_order(
    a: PlaySource, b: PlaySource, start: int, steps: list[tuple[int, int]], rng: random.Random
) -> None:
    """Each listening's two records pair with each other, whatever order they come in."""
    plays: list[Listening] = []
    at = start
    for pause, ms in steps:
        plays.append(Listening(at, ms))
        # The next play of the track starts after this one and past the ambiguity.
        at += max(ms // 1000 + 1, 2 * (MATCH_TOLERANCE_S + MAX_RESOLUTION_S) + 2) + pause
    stored = [(b, *play.recorded_by(b), i) for i, play in enumerate(plays)]
    order = list(range(len(plays)))
    rng.shuffle(order)
    for i in order:
        assert take(stored, a, *plays[i].recorded_by(a)) == i
    assert stored == []


@settings(max_examples=200, deadline=None)
@given(
    starts,
    st.lists(st.integers(0, 240_000), min_size=1, max_size=8, unique=True),
    st.lists(st.integers(0, 20), min_size=8, max_size=8),
    st.randoms(use_true_random=False),
)
def test_both_exports_of_quick_repeats_pair_by_ms_played_in_any_order(
    start: int, durations: list[int], pauses: list[int], rng: random.Random
) -> None:
    """Plays of one track close together (a skip, then again): the two export formats write
    the same ms_played for a play, and the rule pairs by it."""
    plays: list[Listening] = []
    at = start
    for ms, pause in zip(durations, pauses, strict=False):
        plays.append(Listening(at, ms))
        at += ms // 1000 + 1 + pause
    for first, second in ((ACCOUNT, EXTENDED), (EXTENDED, ACCOUNT)):
        stored = [(first, *play.recorded_by(first), i) for i, play in enumerate(plays)]
        order = list(range(len(plays)))
        rng.shuffle(order)
        for i in order:
            assert take(stored, second, *plays[i].recorded_by(second)) == i
