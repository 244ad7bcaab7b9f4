"""Where generated playlists go: the `PlaylistSink` seam.

A sink writes a run's playlists and says, per playlist, how it went: written; deferred until
a time (the sink asked to be called again then: the daemon retries it); or failed with a
reason. A sink whose wait a shutdown cuts short raises `Interrupted`: the run is interrupted,
not failed. The file sink (`service.sinks.FileSink`, always on) and the Spotify sink
(`service.spotify.sink.SpotifySink`, once Spotify is set up) implement it; the publish use
case (`service.publish.publish`) hands each sink the playlists of one run.

A new sink: a class with `name`, `remote` and `write`, and a line in
`service.publish.sinks_from_settings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.playlist_shape import Playlist


class SinkOutcome(Protocol):
    """How writing one playlist went. `status`: "written", "deferred" (with `deferred_until`,
    epoch seconds) or "failed" (with `error`, the reason, and `hint`, what to do if known).
    The publish use case keeps it in the playlist store (`playlist_store.record_outcomes`)."""

    @property
    def config_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def deferred_until(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def hint(self) -> str | None: ...


@dataclass(frozen=True)
class Outcome:
    """A plain `SinkOutcome` (the file sink's)."""

    config_id: str
    status: str
    deferred_until: int | None = None
    error: str | None = None
    hint: str | None = None


class Interrupted(Exception):  # noqa: N818 (names say what happened, as in service.spotify.errors)
    """A wait was cut short because songnet is shutting down."""


class PlaylistSink(Protocol):
    name: str  # "files", "spotify", …
    remote: bool  # a service outside this machine (its outcomes are the run's "synced")

    def write(self, playlists: Sequence[Playlist], *, now: int) -> Sequence[SinkOutcome]:
        """Write each playlist; one outcome per playlist, in order."""
        ...
