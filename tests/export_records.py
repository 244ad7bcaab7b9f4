"""Hand-made Spotify export records and files for the import tests.

Records carry every field the real formats have, with recognisable values in the identifying
ones (IP address, user agent, username, location) so that tests can check none is kept.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

IDENTIFYING = {
    "ip_addr": "203.0.113.77",
    "ip_addr_decrypted": "203.0.113.78",
    "user_agent_decrypted": "unknown-agent-XYZZY",
    "username": "listener-handle-XYZZY",
    "city": "Secretville",
    "region": "Hidden Region",
    "metro_code": "XYZZY-METRO",
    "latitude": 12.3456,
    "longitude": 65.4321,
}


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def minute(ts: int) -> str:
    """An account-data `endTime`: the end time truncated to the minute."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def extended(
    ts: int,
    artist: str | None,
    title: str | None,
    ms: int = 200_000,
    *,
    uri: str | None = "auto",
    album: str | None = "An Album",
    skipped: bool | None = False,
    shuffle: bool | None = False,
    reason_start: str | None = "trackdone",
    reason_end: str | None = "trackdone",
    with_uri_field: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """One extended-history record (the Streaming_History_Audio schema)."""
    if uri == "auto":
        uri = (
            None
            if title is None
            else f"spotify:track:{zlib.crc32(f'{artist}|{title}'.encode()):012d}"
        )
    rec: dict[str, Any] = {
        "ts": iso(ts),
        "platform": "linux",
        "ms_played": ms,
        "conn_country": "SE",
        "ip_addr": IDENTIFYING["ip_addr"],
        "ip_addr_decrypted": IDENTIFYING["ip_addr_decrypted"],
        "user_agent_decrypted": IDENTIFYING["user_agent_decrypted"],
        "username": IDENTIFYING["username"],
        "city": IDENTIFYING["city"],
        "region": IDENTIFYING["region"],
        "metro_code": IDENTIFYING["metro_code"],
        "latitude": IDENTIFYING["latitude"],
        "longitude": IDENTIFYING["longitude"],
        "master_metadata_track_name": title,
        "master_metadata_album_artist_name": artist,
        "master_metadata_album_album_name": album if title is not None else None,
        "spotify_track_uri": uri,
        "episode_name": None,
        "episode_show_name": None,
        "spotify_episode_uri": None,
        "audiobook_title": None,
        "audiobook_uri": None,
        "audiobook_chapter_uri": None,
        "audiobook_chapter_title": None,
        "reason_start": reason_start,
        "reason_end": reason_end,
        "shuffle": shuffle,
        "skipped": skipped,
        "offline": False,
        "offline_timestamp": None,
        "incognito_mode": False,
    }
    if not with_uri_field:  # the oldest endsong schema has no spotify_track_uri at all
        del rec["spotify_track_uri"]
    rec.update(overrides)
    return rec


def episode(ts: int, ms: int = 1_200_000) -> dict[str, Any]:
    return extended(
        ts, None, None, ms, episode_name="Ep. 1", episode_show_name="A Show",
        spotify_episode_uri="spotify:episode:0000000001",
    )  # fmt: skip


def audiobook(ts: int, ms: int = 900_000) -> dict[str, Any]:
    return extended(
        ts, None, None, ms, audiobook_title="A Book", audiobook_uri="spotify:show:b1",
        audiobook_chapter_uri="spotify:episode:c1", audiobook_chapter_title="Chapter 1",
    )  # fmt: skip


def account(ts: int, artist: str, title: str, ms: int = 200_000) -> dict[str, Any]:
    return {"endTime": minute(ts), "artistName": artist, "trackName": title, "msPlayed": ms}


def account_from_extended(rec: dict[str, Any]) -> dict[str, Any]:
    """The account-data record Spotify writes for the same play as an extended record."""
    ts = int(datetime.fromisoformat(rec["ts"]).timestamp())
    return account(
        ts,
        rec["master_metadata_album_artist_name"],
        rec["master_metadata_track_name"],
        rec["ms_played"],
    )


def dumps(records: Any) -> bytes:
    """JSON as Spotify writes it: UTF-8, 2-space indented."""
    return json.dumps(records, indent=2, ensure_ascii=False).encode("utf-8")


def write(path: Path, records: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dumps(records))
    return path


def spotify_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip like Spotify's download: deflated members under the export's folder."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def session(
    start: int, tracks: list[tuple[str, str]], *, ms: int = 180_000, gap: int = 185
) -> list[dict[str, Any]]:
    """Extended records of consecutive plays of `tracks`, ending `gap` seconds apart."""
    return [
        extended(start + i * gap, artist, title, ms + i) for i, (artist, title) in enumerate(tracks)
    ]
