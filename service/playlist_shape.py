"""The shape of a generated playlist as its readers see it: the file sink, Spotify
resolution and sync. `service.playlists` builds it (`GeneratedPlaylist`); these protocols
let the readers take it, or a stored copy, without importing the generator (numpy, torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class TrackRef(Protocol):
    """A library track as resolution needs it: its id, names, and URI where known."""

    @property
    def track_id(self) -> int | None: ...
    @property
    def artist(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def uri(self) -> str | None: ...


class PlaylistTrack(TrackRef, Protocol):
    """One track of a generated playlist, with why it is there."""

    @property
    def reason(self) -> str: ...
    @property
    def is_seed(self) -> bool: ...


class Playlist(Protocol):
    """A generated playlist (`service.playlists.GeneratedPlaylist`)."""

    @property
    def config_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tracks(self) -> Sequence[PlaylistTrack]: ...
    @property
    def model_version(self) -> int | None: ...
    @property
    def ranker(self) -> str:
        """"model" (the promoted model's ranker) or "rules" (no model yet: the simple rules)."""
        ...
