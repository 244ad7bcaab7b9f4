"""Writing generated playlists to the listener's Spotify account, so that it converges.

For each configured playlist there is one Spotify playlist, found again through the id kept in
the playlist store (`playlist_sink_state`, sink "spotify") or, failing that, through a marker in its description (`[songnet:<id>]`).

Each run, per playlist:
1. resolve URIs for tracks known only by name (`resolve.py`);
2. make sure the playlist exists and the listener still follows it (deleting a playlist in
   Spotify only unfollows it: `/followers/contains` tells), else find it by marker, else
   create it (`POST /me/playlists`) and keep its id at once;
3. replace its items: PUT the first 100, POST the rest in chunks of 100;
4. set name, description (date, seeds, model version, marker) and visibility.

Every step is safe to repeat, and the two that are not idempotent look before they retry: a
create whose answer was lost is followed by a search for the marker, an add whose answer was
lost by a read of the items, resuming where they stand. A crash anywhere is mended by the next
run, and there is never more than one playlist per configuration.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

import structlog
from sqlalchemy import Engine

from service import playlist_store
from service.playlist_shape import Playlist
from service.settings import PlaylistConfig, Settings
from service.spotify.client import MAX_ITEMS_PER_REQUEST, SpotifyClient, client_from_settings
from service.spotify.errors import AuthError, Deferred, Interrupted, NotFound, SpotifyError
from service.spotify.resolve import Resolver
from service.spotify.retry import retrying

log = structlog.get_logger(__name__)

NAME_MAX = 100
DESCRIPTION_MAX = 300

Status = Literal["written", "failed", "deferred", "dry-run"]

SINK_NAME = "spotify"  # this sink's rows in the playlist store


@dataclass
class SyncOutcome:
    config_id: str
    name: str
    status: Status
    spotify_id: str | None = None
    tracks: int = 0  # written to Spotify (or generated, for a dry run)
    unresolved: int = 0  # left out: no Spotify match
    created: bool = False
    error: str | None = None
    hint: str | None = None
    deferred_until: int | None = None  # when to try again (epoch seconds), if deferred
    needs_sign_in: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for a person."""
        if self.status == "written":
            extra = (
                f", {self.unresolved} without a Spotify match left out" if self.unresolved else ""
            )
            made = " (created)" if self.created else ""
            return f"{self.config_id}: wrote {self.tracks} tracks to spotify:playlist:{self.spotify_id}{made}{extra}"
        if self.status == "dry-run":
            return f"{self.config_id}: would write {self.tracks} tracks to {self.name!r} ({self.unresolved} to resolve by search)"
        if self.status == "deferred":
            when = datetime.fromtimestamp(self.deferred_until or 0, UTC).strftime(
                "%Y-%m-%d %H:%M UTC"
            )
            return f"{self.config_id}: deferred until {when}: {self.error}"
        return f"{self.config_id}: failed: {self.error}" + (f" ({self.hint})" if self.hint else "")


def marker_for(config_id: str) -> str:
    """The tag in the description that says "songnet's playlist for this configuration"."""
    if re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", config_id):
        return f"[songnet:{config_id}]"
    # Ids with other characters might be escaped by Spotify; a digest survives any escaping.
    return f"[songnet:{hashlib.sha1(config_id.encode()).hexdigest()[:12]}]"


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def describe(playlist: Playlist, *, now: float, zone: tzinfo = UTC) -> str:
    """Date (in the listener's zone), seeds, model version and marker, within 300 characters."""
    date = datetime.fromtimestamp(now, zone).strftime("%Y-%m-%d")
    marker = marker_for(playlist.config_id)
    model = f" Model {playlist.model_version}." if playlist.model_version is not None else ""
    head = f"Made by songnet on {date}."
    tail = f"{model} {marker}"
    seeds = [f"{t.artist} – {t.title}" for t in playlist.tracks if t.is_seed]
    if not seeds:
        return _trim(head, DESCRIPTION_MAX - len(tail)) + tail
    room = DESCRIPTION_MAX - len(head) - len(tail) - len(" Seeds: .")
    seed_text = _trim("; ".join(seeds), max(room, 1))
    return f"{head} Seeds: {seed_text}.{tail}"[:DESCRIPTION_MAX]


class PlaylistSyncer:
    """Writes generated playlists for one signed-in listener."""

    def __init__(
        self,
        client: SpotifyClient,
        engine: Engine,
        resolver: Resolver,
        *,
        wall_clock: Callable[[], float] = time.time,
        zone: tzinfo = UTC,
    ) -> None:
        self.client = client
        self.engine = engine
        self.resolver = resolver
        self.wall_clock = wall_clock
        self.zone = zone
        self._user_id: str | None = None

    @property
    def user_id(self) -> str:
        if self._user_id is None:
            self._user_id = str(self.client.me()["id"])
        return self._user_id

    def _retrying(self, what: str) -> Any:
        c = self.client
        return retrying(c.policy, sleep=c.sleep, clock=c.clock, rng=c.rng, stats=c.stats, what=what)

    # -- state ---------------------------------------------------------------------------

    def _remote_id(self, config: PlaylistConfig) -> str | None:
        row = playlist_store.sink_state(self.engine, config.id, SINK_NAME)
        return None if row is None else row.remote_id

    def _save_remote_id(self, config_id: str, spotify_id: str | None) -> None:
        # Kept at once, before the items are written: a crash after a create finds it again.
        with playlist_store.update_sink(self.engine, config_id, SINK_NAME) as row:
            row.remote_id = spotify_id

    # -- one playlist --------------------------------------------------------------------

    def sync(self, config: PlaylistConfig, playlist: Playlist) -> SyncOutcome:
        """Write `playlist` for `config`; errors other than `SpotifyError` propagate."""
        now = int(self.wall_clock())
        with playlist_store.update(self.engine, config.id, config.name) as row:
            row.name, row.removed_from_config = config.name, False
        outcome = SyncOutcome(config_id=config.id, name=config.name, status="failed")
        try:
            uris, unresolved = self._resolve(playlist)
            outcome.unresolved = unresolved
            spotify_id, outcome.created = self._ensure_playlist(
                config, describe(playlist, now=now, zone=self.zone)
            )
            outcome.spotify_id = spotify_id
            self._write_items(spotify_id, uris)
            self.client.change_playlist_details(
                spotify_id,
                name=_trim(config.name, NAME_MAX),
                description=describe(playlist, now=now, zone=self.zone),
                public=config.public,
            )
        except Deferred as exc:
            outcome.status, outcome.error, outcome.hint = "deferred", str(exc), exc.hint
            outcome.deferred_until = int(exc.retry_at)
            log.warning(
                "playlist sync deferred",
                playlist=config.id,
                retry_at=outcome.deferred_until,
                error=str(exc),
            )
            return outcome
        except Interrupted:  # no outcome reaches the store: note it here
            with playlist_store.update_sink(self.engine, config.id, SINK_NAME) as sink_row:
                sink_row.last_status, sink_row.last_error = "failed", "interrupted by shutdown"
            raise
        except SpotifyError as exc:
            outcome.error, outcome.hint = str(exc), exc.hint
            outcome.needs_sign_in = isinstance(exc, AuthError)
            log.error(
                "playlist sync failed",
                playlist=config.id,
                error=str(exc),
                error_type=type(exc).__name__,
                action=exc.hint,
            )
            return outcome
        outcome.status, outcome.tracks = "written", len(uris)
        log.info(
            "playlist written",
            playlist=config.id,
            spotify_id=spotify_id,
            tracks=len(uris),
            unresolved=unresolved,
            created=outcome.created,
        )
        return outcome

    def _resolve(self, playlist: Playlist) -> tuple[list[str], int]:
        uris: list[str] = []
        seen: set[str] = set()
        unresolved = 0
        for track in playlist.tracks:
            uri = self.resolver.uri_for(track)
            if uri is None:
                unresolved += 1
            elif uri not in seen:  # two library tracks can be one Spotify track
                seen.add(uri)
                uris.append(uri)
        return uris, unresolved

    # -- the playlist itself -------------------------------------------------------------

    def _ensure_playlist(self, config: PlaylistConfig, description: str) -> tuple[str, bool]:
        """The Spotify id of this configuration's playlist, and whether it was created now."""
        known = self._remote_id(config)
        if known:
            if self._still_followed(known):
                return known, False
            log.info(
                "the listener deleted the playlist in Spotify; songnet makes a new one",
                playlist=config.id,
                old_spotify_id=known,
            )
            self._save_remote_id(config.id, None)
        found = self._find(config)
        if found is not None:
            self._save_remote_id(config.id, found)
            return found, False
        created = self._create(config, description)
        self._save_remote_id(config.id, created)
        return created, True

    def _still_followed(self, spotify_id: str) -> bool:
        try:
            return self.client.follows_playlist(spotify_id, self.user_id)
        except NotFound:
            return False

    def _find(self, config: PlaylistConfig) -> str | None:
        """The listener's playlist carrying this configuration's marker, if there is one."""
        marker = marker_for(config.id)
        matches = [
            p
            for p in self.client.my_playlists()
            if marker in (p.get("description") or "")
            and (p.get("owner") or {}).get("id") == self.user_id
        ]
        if not matches:
            return None
        matches.sort(key=lambda p: p.get("name") != _trim(config.name, NAME_MAX))
        if len(matches) > 1:
            log.warning(
                "several spotify playlists carry one configuration's marker; using the first",
                playlist=config.id,
                spotify_ids=[p.get("id") for p in matches],
            )
        return str(matches[0]["id"])

    def _create(self, config: PlaylistConfig, description: str) -> str:
        tried = False

        def attempt() -> str:
            nonlocal tried
            if tried:
                # The last create may have worked with its answer lost: look before making another.
                found = self._find(config)
                if found is not None:
                    log.info(
                        "found the playlist a lost create call made",
                        playlist=config.id,
                        spotify_id=found,
                    )
                    return found
            tried = True
            answer = self.client.create_playlist(
                _trim(config.name, NAME_MAX), description, config.public
            )
            return str(answer["id"])

        result: str = self._retrying("create playlist")(attempt)
        return result

    def _write_items(self, spotify_id: str, uris: list[str]) -> None:
        """Make the playlist's items exactly `uris`, resuming after a lost answer."""
        first = uris[:MAX_ITEMS_PER_REQUEST]
        look_first = False

        def attempt() -> None:
            nonlocal look_first
            done: int | None = None
            if look_first:
                current = self.client.playlist_item_uris(spotify_id)
                if current == uris:
                    return
                if len(current) >= len(first) and current == uris[: len(current)]:
                    done = len(current)  # the replace and some adds went through
            if done is None:
                self.client.replace_items(spotify_id, first)  # idempotent
                done = len(first)
            while done < len(uris):
                chunk = uris[done : done + MAX_ITEMS_PER_REQUEST]
                look_first = True  # if this add fails, it may still have been applied
                self.client.add_items(spotify_id, chunk)
                look_first = False
                done += len(chunk)

        self._retrying("write playlist items")(attempt)


@dataclass
class SyncRun:
    """The outcomes of one `sync_playlists` call, one per playlist, in order."""

    outcomes: list[SyncOutcome] = field(default_factory=list)

    def __iter__(self) -> Iterator[SyncOutcome]:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def exit_code(self) -> int:
        """`songnet sync`'s status: 0 all written, 1 any failed, 2 Spotify not configured or
        not signed in, 3 none failed but one deferred."""
        if any(o.needs_sign_in for o in self.outcomes):
            return 2
        if any(o.status == "failed" for o in self.outcomes):
            return 1
        if any(o.status == "deferred" for o in self.outcomes):
            return 3
        return 0


def config_for(settings: Settings, playlist: Playlist) -> PlaylistConfig:
    """The configuration a generated playlist came from (the daemon's default playlist is in no
    setting: it gets a private one under its own id and name)."""
    for config in settings.playlists:
        if config.id == playlist.config_id:
            return config
    return PlaylistConfig(
        name=playlist.name[:NAME_MAX] or playlist.config_id, id=playlist.config_id
    )


def sync_playlists(
    engine: Engine,
    settings: Settings,
    playlists: Sequence[Playlist],
    *,
    stop: threading.Event | None = None,
    client: SpotifyClient | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> SyncRun:
    """Write each generated playlist to Spotify, in order, and mark unconfigured ones removed.

    `stop` ends any wait at shutdown (`Interrupted` propagates). A deferral or a sign-in
    failure ends the run: the playlists after it get the same outcome without another call.
    Without Spotify credentials or a sign-in every outcome says so (`needs_sign_in`).
    """
    run = SyncRun()
    playlist_store.mark_removed(
        engine, {c.id for c in settings.playlists} | {p.config_id for p in playlists}
    )
    syncer: PlaylistSyncer | None = None
    stopped: SyncOutcome | None = None
    try:
        client = client or client_from_settings(
            settings, engine, stop_event=stop, wall_clock=wall_clock
        )
        client.tokens.access_token()  # fails fast when not signed in
    except AuthError as exc:
        log.error("spotify sync not possible", error=str(exc), action=exc.hint)
        stopped = SyncOutcome(
            config_id="",
            name="",
            status="failed",
            error=str(exc),
            hint=exc.hint,
            needs_sign_in=True,
        )
    except SpotifyError:
        pass  # a transient failure of the token refresh: each playlist's calls retry it
    if client is not None and stopped is None:
        resolver = Resolver(
            client,
            engine,
            miss_retry_days=settings.spotify_resolve_miss_retry_days,
            wall_clock=wall_clock,
        )
        syncer = PlaylistSyncer(client, engine, resolver, wall_clock=wall_clock, zone=settings.zone)
    for playlist in playlists:
        config = config_for(settings, playlist)
        if stopped is not None or syncer is None:
            assert stopped is not None
            outcome = SyncOutcome(
                config_id=config.id,
                name=config.name,
                status=stopped.status,
                error=stopped.error,
                hint=stopped.hint,
                deferred_until=stopped.deferred_until,
                needs_sign_in=stopped.needs_sign_in,
            )
            run.outcomes.append(outcome)
            continue
        outcome = syncer.sync(config, playlist)
        run.outcomes.append(outcome)
        if outcome.status == "deferred" or outcome.needs_sign_in:
            stopped = outcome
    return run
