"""Spotify as a `PlaylistSink`: `sync_playlists` behind the sink seam.

Its outcomes are `SyncOutcome`s (a `SinkOutcome` with Spotify's details: the playlist id,
unresolved tracks, whether the listener must sign in again). A shutdown during a wait
(`Interrupted`) propagates: the run is interrupted, not failed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sqlalchemy import Engine

from service.playlist_shape import Playlist
from service.settings import Settings
from service.spotify.sync import SINK_NAME, SyncOutcome, sync_playlists


class SpotifySink:
    name = SINK_NAME
    remote = True

    def __init__(
        self, engine: Engine, settings: Settings, *, stop: threading.Event | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.stop = stop

    def write(self, playlists: Sequence[Playlist], *, now: int) -> Sequence[SyncOutcome]:
        return sync_playlists(self.engine, self.settings, playlists, stop=self.stop).outcomes
