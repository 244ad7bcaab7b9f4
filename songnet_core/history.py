"""What a play is, independent of the export format it came from.

The parsers of both export formats (`exports.py`) produce `Play` values; the service layer
stores them and the model layer reads them back. A track's identity is its normalised
artist + title (`track_key`): URIs are aliases, because one song often has several and
account-data exports carry none.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A track of the library, for display, reasons and resolution."""

    track_id: int
    artist_id: int
    artist: str
    title: str
    uri: str | None = None
    album: str | None = None
