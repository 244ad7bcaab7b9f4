"""Where plays come from, and the one rule that says two records are the same listening.

A `PlaySource` is data: its name (stored with each play), how rich its records are, whether
its timestamps mark the start or the end of a play, and their resolution. Every source turns
its timestamps into a stored play the same way (`stored_end_ts`): the end of the play in
seconds, and `ms_played`. So a stored play's start is always `end_ts - ms_played / 1000`,
uncertain by its source's resolution, and two records are the same listening when they are
the same track and their start windows lie within `MATCH_TOLERANCE_S` of each other. Of two
such records the richer one is kept (`rank`).

Sources register themselves (`register`); the two export formats are registered here because
the core parses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# Clock skew between a scrobbler and Spotify, and a track skipped by a few seconds, fit in
# this; two real plays of one track do not (a play counts from 30 s on).
MATCH_TOLERANCE_S = 30

# A scrobble certifies at least 30 s of listening (Last.fm's and ListenBrainz's rule); a
# listen that says no more is stored as that, so it counts as a listened play.
SCROBBLE_MIN_MS = 30_000

# Longer plays are not matched across sources (no song is that long; an hour-long mix's
# second record is a duplicate that stays).
MAX_PLAY_S = 3600


@dataclass(frozen=True, slots=True)
class PlaySource:
    """A kind of history record. Higher `rank`: the richer record, kept on a match."""

    name: str
    rank: int
    stamps: Literal["start", "end"]  # what the source's timestamp marks
    resolution_s: int = 1  # timestamps are truncated to this many seconds

    def stored_end_ts(self, stamp: int, ms_played: int) -> int:
        """The stored `end_ts` of a play this source stamped at `stamp`."""
        return stamp if self.stamps == "end" else stamp + ms_played // 1000

    def start_window(self, end_ts: int, ms_played: int) -> tuple[int, int]:
        """The earliest and latest start of a stored play of this source."""
        start = end_ts - ms_played // 1000
        return start, start + self.resolution_s


# The extended streaming history: exact end times, every field.
EXTENDED = PlaySource("extended", rank=40, stamps="end")
# The account-data export: end times truncated to the minute, no URIs.
ACCOUNT = PlaySource("account", rank=10, stamps="end", resolution_s=60)

_REGISTRY: dict[str, PlaySource] = {EXTENDED.name: EXTENDED, ACCOUNT.name: ACCOUNT}


def register(source: PlaySource) -> PlaySource:
    """Make `source` known by name (idempotent for the same definition)."""
    known = _REGISTRY.get(source.name)
    if known is not None and known != source:
        raise ValueError(f"play source {source.name!r} is already registered as {known}")
    _REGISTRY[source.name] = source
    return source


def play_source(name: str) -> PlaySource:
    """The registered source `name`; an unknown name (a newer songnet's) ranks lowest."""
    found = _REGISTRY.get(name)
    return found if found is not None else PlaySource(name, rank=0, stamps="end", resolution_s=60)


def same_listening(
    a: PlaySource, a_end_ts: int, a_ms: int, b: PlaySource, b_end_ts: int, b_ms: int
) -> bool:
    """Whether two stored records of one track are the same listening (the dedup rule)."""
    a_lo, a_hi = a.start_window(a_end_ts, a_ms)
    b_lo, b_hi = b.start_window(b_end_ts, b_ms)
    gap = max(a_lo - b_hi, b_lo - a_hi, 0)
    return gap <= MATCH_TOLERANCE_S


def closest_match(
    source: PlaySource,
    end_ts: int,
    ms_played: int,
    stored: Sequence[tuple[PlaySource, int, int]],
) -> int | None:
    """The index of the stored record (source, end_ts, ms_played) of the same track that is
    the same listening as this one, nearest start first; None when there is none."""
    start = end_ts - ms_played // 1000
    best: tuple[int, int] | None = None
    for i, (other, other_end, other_ms) in enumerate(stored):
        if same_listening(source, end_ts, ms_played, other, other_end, other_ms):
            distance = abs(other_end - other_ms // 1000 - start)
            if best is None or distance < best[0]:
                best = (distance, i)
    return None if best is None else best[1]


def search_span(source: PlaySource, end_ts: int, ms_played: int) -> tuple[int, int]:
    """The `end_ts` range that holds every stored play that may match this one.

    A stored match starts within the tolerance of this play's start window and played at
    most `MAX_PLAY_S` after its start.
    """
    lo, hi = source.start_window(end_ts, ms_played)
    return lo - MATCH_TOLERANCE_S - 60, hi + MATCH_TOLERANCE_S + MAX_PLAY_S

