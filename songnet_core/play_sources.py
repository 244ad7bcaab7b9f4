"""Where plays come from, and the one rule that says two records are the same listening.

A `PlaySource` is data: its name (stored with each play), how rich its records are, whether
its timestamps mark the start or the end of a play, and their resolution. Every source turns
its timestamps into a stored play the same way (`stored_end_ts`): the end of the play in
seconds, and `ms_played`. So a stored play's start is always `end_ts - ms_played / 1000`,
uncertain by its source's resolution, and two records are the same listening when they are
the same track and their start windows lie within `MATCH_TOLERANCE_S` of each other; where
both sources stamp the end (the two export formats), their end windows too, since that is
what both measured. Of two such records the richer one is kept (`rank`). This is the one rule
for every pair of sources, the two export formats included (`service.importer`).

Where several stored records are the same listening as a new one (two short plays of one
track within a minute), `closest_match` takes the nearest: the smallest gaps between the
windows the rule compares, then the nearest `ms_played` (both export formats write a play's
`ms_played`, the same or nearly), then the nearest start.

Sources register themselves (`register`); the two export formats are registered here because
the core parses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from songnet_core.exports import MAX_PLAY_MS

# Clock skew between a scrobbler and Spotify, and a track skipped by a few seconds, fit in
# this; two real plays of one track do not (a play counts from 30 s on).
MATCH_TOLERANCE_S = 30

# A scrobble certifies at least 30 s of listening (Last.fm's and ListenBrainz's rule); a
# listen that says no more is stored as that, so it counts as a listened play.
SCROBBLE_MIN_MS = 30_000

# The longest play stored (longer ones are skipped as implausible): how far before a play's
# end its start may lie, so how wide a search for stored matches must reach.
MAX_PLAY_S = MAX_PLAY_MS // 1000

# The coarsest timestamp a source may have (the account export's minute).
MAX_RESOLUTION_S = 60


@dataclass(frozen=True, slots=True)
class PlaySource:
    """A kind of history record. Higher `rank`: the richer record, kept on a match."""

    name: str
    rank: int
    stamps: Literal["start", "end"]  # what the source's timestamp marks
    resolution_s: int = 1  # timestamps are truncated to this many seconds

    def __post_init__(self) -> None:
        if not 1 <= self.resolution_s <= MAX_RESOLUTION_S:
            raise ValueError(
                f"resolution_s must be 1..{MAX_RESOLUTION_S} s, not {self.resolution_s}"
            )

    def stored_end_ts(self, stamp: int, ms_played: int) -> int:
        """The stored `end_ts` of a play this source stamped at `stamp`."""
        return stamp if self.stamps == "end" else stamp + ms_played // 1000

    def start_window(self, end_ts: int, ms_played: int) -> tuple[int, int]:
        """The earliest and latest start of a stored play of this source."""
        start = end_ts - ms_played // 1000
        return start, start + self.resolution_s

    def end_window(self, end_ts: int) -> tuple[int, int]:
        """The earliest and latest end of a stored play of this source."""
        return end_ts, end_ts + self.resolution_s


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
    if found is not None:
        return found
    return PlaySource(name, rank=0, stamps="end", resolution_s=MAX_RESOLUTION_S)


def same_listening(
    a: PlaySource, a_end_ts: int, a_ms: int, b: PlaySource, b_end_ts: int, b_ms: int
) -> bool:
    """Whether two stored records of one track are the same listening (the dedup rule): their
    start windows lie within `MATCH_TOLERANCE_S`, and so do their end windows where both
    sources stamp the end."""
    return _gaps(a, a_end_ts, a_ms, b, b_end_ts, b_ms) is not None


def _gaps(
    a: PlaySource, a_end_ts: int, a_ms: int, b: PlaySource, b_end_ts: int, b_ms: int
) -> int | None:
    """The seconds between the windows the rule compares, summed; None past the tolerance."""
    gap = _window_gap(a.start_window(a_end_ts, a_ms), b.start_window(b_end_ts, b_ms))
    if gap > MATCH_TOLERANCE_S:
        return None
    if a.stamps == b.stamps == "end":
        end_gap = _window_gap(a.end_window(a_end_ts), b.end_window(b_end_ts))
        if end_gap > MATCH_TOLERANCE_S:
            return None
        gap += end_gap
    return gap


def _window_gap(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Seconds between two windows (0 where they overlap)."""
    return max(a[0] - b[1], b[0] - a[1], 0)


def closest_match(
    source: PlaySource,
    end_ts: int,
    ms_played: int,
    stored: Sequence[tuple[PlaySource, int, int]],
) -> int | None:
    """The index of the stored record (source, end_ts, ms_played) of the same track that is
    the same listening as this one; None when there is none. Of several: the smallest gaps
    between the windows the rule compares, then the nearest `ms_played`, then the nearest
    start window's middle."""
    lo, hi = source.start_window(end_ts, ms_played)
    best: tuple[int, int, int] | None = None
    best_i: int | None = None
    for i, (other, other_end, other_ms) in enumerate(stored):
        gaps = _gaps(source, end_ts, ms_played, other, other_end, other_ms)
        if gaps is None:
            continue
        other_lo, other_hi = other.start_window(other_end, other_ms)
        key = (gaps, abs(other_ms - ms_played), abs(other_lo + other_hi - lo - hi))
        if best is None or key < best:
            best, best_i = key, i
    return best_i


def start_span(source: PlaySource, end_ts: int, ms_played: int) -> tuple[int, int]:
    """The range of stored starts (`end_ts - ms_played // 1000`) that may match this play."""
    lo, hi = source.start_window(end_ts, ms_played)
    return lo - MATCH_TOLERANCE_S - MAX_RESOLUTION_S, hi + MATCH_TOLERANCE_S


def search_span(source: PlaySource, end_ts: int, ms_played: int) -> tuple[int, int]:
    """The `end_ts` range that holds every stored play that may match this one.

    A stored match starts within `start_span` and played at most `MAX_PLAY_S` after its start.
    """
    lo, hi = start_span(source, end_ts, ms_played)
    return lo, hi + MAX_PLAY_S
