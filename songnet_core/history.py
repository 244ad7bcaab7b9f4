"""What a play is, independent of the export format it came from.

The parsers of both export formats (`exports.py`) produce `Play` values; the service layer
stores them and the model layer reads them back. A track's identity is its normalised
artist + title (`track_key`): URIs are aliases, because one song often has several and
account-data exports carry none.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

# The two Spotify export formats. A play's source is wider: any name registered in
# `songnet_core.play_sources` (an export format, or a service such as ListenBrainz).
ExportFormat = Literal["account", "extended"]

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-, accent- and whitespace-insensitive form of a name."""
    if text.isascii():
        # Nothing to decompose or strip (the common case): about 3x faster.
        return _SPACE.sub(" ", text.casefold()).strip()
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACE.sub(" ", stripped.casefold()).strip()


def track_key(artist: str, title: str) -> str:
    """The identity of a track: normalised artist and title joined by a unit separator."""
    return f"{normalise(artist)}\x1f{normalise(title)}"


@dataclass(frozen=True, slots=True)
class Play:
    """One music play as an export records it.

    `end_ts` is the end of the play in whole seconds since the Unix epoch, UTC (account-data
    exports have minute precision). Optional fields are None where the format lacks them.
    """

    end_ts: int
    ms_played: int
    artist: str
    title: str
    source: str  # a `songnet_core.play_sources.PlaySource` name
    album: str | None = None
    uri: str | None = None
    skipped: bool | None = None
    reason_start: str | None = None
    reason_end: str | None = None
    shuffle: bool | None = None

    @property
    def key(self) -> str:
        return track_key(self.artist, self.title)


@dataclass(frozen=True, slots=True)
class Listen:
    """A stored play as the model sees it: ids into the library instead of names."""

    play_id: int
    track_id: int
    artist_id: int
    end_ts: int
    ms_played: int
    skipped: bool | None = None


class ListenColumns(Sequence[Listen]):
    """Stored plays as columns, read as a sequence of `Listen` (each made when asked for):
    whole-array work reads the columns, and a library of 500k plays costs no 500k objects
    until something iterates it. `skipped` holds 1, 0, or -1 where the export does not say."""

    def __init__(
        self,
        play_id: npt.NDArray[np.int64],
        track_id: npt.NDArray[np.int64],
        artist_id: npt.NDArray[np.int64],
        end_ts: npt.NDArray[np.int64],
        ms_played: npt.NDArray[np.int64],
        skipped: npt.NDArray[np.int8],
    ) -> None:
        self.play_id, self.track_id, self.artist_id = play_id, track_id, artist_id
        self.end_ts, self.ms_played, self.skipped = end_ts, ms_played, skipped

    def __len__(self) -> int:
        return len(self.play_id)

    def where(self, mask: npt.NDArray[np.bool_]) -> ListenColumns:
        """The plays where `mask` holds, in order."""
        return ListenColumns(
            self.play_id[mask], self.track_id[mask], self.artist_id[mask], self.end_ts[mask],
            self.ms_played[mask], self.skipped[mask],
        )  # fmt: skip

    @overload
    def __getitem__(self, i: int) -> Listen: ...

    @overload
    def __getitem__(self, i: slice) -> list[Listen]: ...

    def __getitem__(self, i: int | slice) -> Listen | list[Listen]:
        n = len(self)
        if isinstance(i, slice):
            return list(self._listens(np.arange(*i.indices(n))))
        if not -n <= i < n:
            raise IndexError(i)
        return next(self._listens(np.asarray([i % n])))

    def __iter__(self) -> Iterator[Listen]:
        return self._listens(slice(None))

    def _listens(self, part: slice | npt.NDArray[np.int64]) -> Iterator[Listen]:
        for play_id, track_id, artist_id, end_ts, ms, skip in zip(
            self.play_id[part].tolist(), self.track_id[part].tolist(), self.artist_id[part].tolist(),
            self.end_ts[part].tolist(), self.ms_played[part].tolist(), self.skipped[part].tolist(), strict=True,
        ):  # fmt: skip
            yield Listen(play_id, track_id, artist_id, end_ts, ms, None if skip < 0 else bool(skip))


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A track of the library, for display, reasons and resolution."""

    track_id: int
    artist_id: int
    artist: str
    title: str
    uri: str | None = None
    album: str | None = None
