"""Recognising and parsing Spotify streaming-history exports; finding them in folders and zips.

Two formats exist, told apart by what the records hold, not by file name:

- Account data (`StreamingHistory<N>.json`, `StreamingHistory_music_<N>.json`): records with
  `endTime` ("YYYY-MM-DD HH:MM", UTC), `artistName`, `trackName`, `msPlayed`. Podcast and
  audiobook histories of that export have the same shape with other name fields.
- Extended streaming history (`Streaming_History_Audio_*.json`, older `endsong_<N>.json`):
  records with `ts`, `ms_played`, `master_metadata_*`, `spotify_track_uri` (absent in the
  oldest schema), skip and reason fields, and fields for podcast episodes and audiobooks.
  `Streaming_History_Video_*` files hold records shaped like audio ones, so video is the one
  thing decided by file name.

Parsing keeps only what songnet stores. Identifying fields (IP address, user agent, username,
location) are never copied out of a record. Non-music records are counted by reason
(`SKIP_REASONS`) so every record of a file is accounted for.

A play that cannot be real is skipped too, so that it never distorts recent seeds, the time
split or the features: one that ended before 2006 (Spotify did not exist) or more than a day
after the import (`now`, given by the caller), or that lasted less than nothing or over 24 h.

For speed (500k plays) a parsed file holds its plays as plain tuples in `Play`'s field order
(`ParsedExport.rows`); `ParsedExport.plays()` builds `Play` values from them when wanted.
msgspec reads the JSON straight from the bytes (no decoded copy); an extended history is
decoded into `_ExtendedRecord` values that hold only the fields songnet reads, so the other
dozen fields of each record (the identifying ones among them) never become Python objects.
That parses a file in about half the time of the standard library's `json`. Bytes msgspec
refuses go through `json` again, which accepts what it accepts and explains the rest.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec

from songnet_core.history import ExportFormat, Play

SkipReason = Literal[
    "episode",
    "video",
    "audiobook",
    "no_track",
    "invalid_record",
    "implausible_time",
    "implausible_duration",
]
SKIP_REASONS: tuple[SkipReason, ...] = get_args(SkipReason)

# The plausible plays: ended from 2006-01-01 UTC (Spotify's founding) until a day after the
# import (clocks and time zones differ; nothing is played further ahead), lasting 0 to 24 h.
EARLIEST_PLAY_TS = 1_136_073_600
FUTURE_TOLERANCE_S = 24 * 3600
MAX_PLAY_MS = 24 * 3600 * 1000

# One play in `Play`'s field order: end_ts, ms_played, artist, title, source, album, uri,
# skipped, reason_start, reason_end, shuffle.
PlayFields = tuple[
    int,
    int,
    str,
    str,
    str,  # the source's name
    str | None,
    str | None,
    bool | None,
    str | None,
    str | None,
    bool | None,
]

# Bytes read so far of the file being read; called after each chunk.
ChunkCallback = Callable[[int], None]

_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
# What Spotify writes for a play of a local file or a track it no longer knows.
_UNKNOWN_ARTIST = "Unknown Artist"
_UNKNOWN_TRACK = "Unknown Track"

_VIDEO_NAME = re.compile(r"^streaming_history_video_", re.IGNORECASE)
_ACCOUNT_NAME = re.compile(r"^streaminghistory(_music)?_?\d+\.json$", re.IGNORECASE)
_EXTENDED_NAME = re.compile(
    r"^(streaming_history_(audio|video)_|endsong_?\d*\.json$)", re.IGNORECASE
)
# The other files Spotify's data exports hold; they are not listening history.
_COMPANION_NAME = re.compile(
    r"^(userdata|identity|identifiers|inferences|follow|marquee|payments|playlist\d*|"
    r"searchqueries|yourlibrary|yoursoundcapsule|wrapped\d*|duonewfamily|familyplan\w*|"
    r"podcastinteractivity\w*|read_?me\w*|readmefirst\w*|streaminghistory_podcast_?\d*|"
    r"streaminghistory_audiobook_?\d*|streaminghistory_video_?\d*|connections|"
    r"customerservicehistory|messagedata|shoppinghistory|yourvideos|\w*ads\w*)\.json$",
    re.IGNORECASE,
)
# The folders Spotify's zips put their files in (and that users unpack).
EXPORT_FOLDERS = ("Spotify Account Data", "Spotify Extended Streaming History")


class ExportError(Exception):
    """A file cannot be imported; the message says why and what to do, for a person."""


@dataclass(frozen=True, slots=True)
class ParsedExport:
    """A streaming-history file, parsed: its music plays and every other record by reason."""

    format: str  # an ExportFormat, or a pulled source's name
    records: int
    rows: list[PlayFields]
    skipped: dict[str, int] = field(default_factory=dict)

    def plays(self) -> list[Play]:
        return [Play(*row) for row in self.rows]


@dataclass(frozen=True, slots=True)
class NotHistory:
    """A file that belongs to an export but holds no listening history (e.g. `Userdata.json`)."""

    reason: str


# --- parsing ---------------------------------------------------------------------------------


def parse_export(data: bytes | bytearray, name: str, *, now: float) -> ParsedExport | NotHistory:
    """Parse one file's bytes; `name` is its base name (it decides only video and empty files),
    `now` the import's time (Unix seconds): plays that end over a day later are implausible.

    Raises `ExportError` for bytes that are not a streaming history nor a known companion file.
    """
    if not data:
        raise ExportError(
            "empty file (0 bytes): an interrupted download or copy? Take the file from the export again"
        )
    # msgspec refuses a byte order mark; a view skips it without copying the file.
    body = memoryview(data)[3:] if data[:3] == _BOM else data
    if _EXTENDED_HINT in bytes(body[:_HINT_BYTES]):
        try:
            records = _EXTENDED_DECODER.decode(body)
        except msgspec.MsgspecError:
            records = None  # not a list, or not JSON msgspec reads: the general way below
        if records is not None and _recognise(records) == "extended":
            latest = int(now) + FUTURE_TOLERANCE_S
            return _parse_extended(records, latest, video=_VIDEO_NAME.match(name) is not None)
    try:
        doc = msgspec.json.decode(body)
    except msgspec.MsgspecError:
        # Bad UTF-8 or JSON, NaN, a number beyond 64 bits: the standard library parses what it
        # can and explains the rest.
        doc = _load_json(data)
    return parse_document(doc, name, now=now)


def _load_json(data: bytes | bytearray) -> Any:
    """The document through the standard library; `ExportError` that says what is wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "Spotify exports are UTF-8 JSON, was the file re-saved in another encoding?"
        ) from None
    if not text.strip():
        raise ExportError("the file holds only whitespace, no JSON")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        tail = text.rstrip()
        if exc.pos >= len(tail) or not tail.endswith(("]", "}")):
            lines = tail.count("\n") + 1
            raise ExportError(
                f"truncated JSON (it stops at line {lines} without closing its list): "
                "the file is incomplete, still being written or cut off in a download"
            ) from None
        raise ExportError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ExportError("invalid JSON: nested too deeply to be an export") from None
    return doc


def parse_document(doc: Any, name: str, *, now: float) -> ParsedExport | NotHistory:
    """Recognise and parse an already decoded JSON document (see `parse_export`)."""
    companion = _COMPANION_NAME.match(name) is not None
    if not isinstance(doc, list):
        what = _describe(doc)
        if companion:
            return NotHistory(f"not listening history ({what})")
        raise ExportError(
            f"not a Spotify streaming history: the JSON is {what}, not a list of plays"
        )
    fmt = _recognise(doc)
    if fmt is None:
        if not doc:
            fmt = _format_from_name(name)
            if fmt is None:
                if companion:
                    return NotHistory("not listening history (an empty list)")
                raise ExportError("an empty JSON list whose name is not a streaming history's")
        elif companion:
            return NotHistory(f"not listening history ({_describe(doc)})")
        else:
            raise ExportError(f"not a Spotify streaming history: the JSON is {_describe(doc)}")
    latest = int(now) + FUTURE_TOLERANCE_S
    if fmt == "account":
        return _parse_account(doc, latest)
    records = msgspec.convert(doc, _RECORDS)
    return _parse_extended(records, latest, video=_VIDEO_NAME.match(name) is not None)


def _format_from_name(name: str) -> ExportFormat | None:
    if _ACCOUNT_NAME.match(name):
        return "account"
    if _EXTENDED_NAME.match(name):
        return "extended"
    return None


def _recognise(records: list[Any]) -> ExportFormat | None:
    """The format the first records vote for; None if they look like neither."""
    account = extended = 0
    seen = 0
    for rec in records:
        if isinstance(rec, _ExtendedRecord):
            has_extended = rec.ts is not msgspec.UNSET and rec.ms_played is not msgspec.UNSET
            has_account = rec.endTime is not msgspec.UNSET and rec.msPlayed is not msgspec.UNSET
        elif isinstance(rec, dict):
            has_extended = "ts" in rec and "ms_played" in rec
            has_account = "endTime" in rec and "msPlayed" in rec
        else:
            continue
        if has_extended:
            extended += 1
        elif has_account:
            account += 1
        seen += 1
        if seen >= 50:
            break
    if extended == account == 0:
        return None
    return "extended" if extended >= account else "account"


def _describe(doc: Any) -> str:
    if isinstance(doc, dict):
        keys = ", ".join(sorted(str(k) for k in doc)[:5])
        return f"an object with keys {keys}" if keys else "an empty object"
    if isinstance(doc, list):
        if not doc:
            return "an empty list"
        first = doc[0]
        if isinstance(first, dict):
            keys = ", ".join(sorted(str(k) for k in first)[:5])
            return f"a list of records with keys {keys}"
        return f"a list of {type(first).__name__} values"
    return f"a single {type(doc).__name__} value"


def _utc_ts(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value is msgspec.UNSET:
        return None
    if isinstance(value, int):
        return bool(value)
    return None


def _implausible(end_ts: int, latest: int) -> SkipReason:
    """Why a play outside the plausible ones (see `EARLIEST_PLAY_TS`) cannot be real."""
    return (
        "implausible_time" if not EARLIEST_PLAY_TS <= end_ts <= latest else "implausible_duration"
    )


class _ExtendedRecord(msgspec.Struct):
    """The fields of an extended-history record that songnet reads (`UNSET`: not in the record;
    any JSON value is taken, its type is checked while parsing). `endTime` and `msPlayed` only
    let `_recognise` tell an account-data file from an extended one."""

    ts: Any = msgspec.UNSET
    ms_played: Any = msgspec.UNSET
    master_metadata_track_name: Any = msgspec.UNSET
    master_metadata_album_artist_name: Any = msgspec.UNSET
    master_metadata_album_album_name: Any = msgspec.UNSET
    spotify_track_uri: Any = msgspec.UNSET
    reason_start: Any = msgspec.UNSET
    reason_end: Any = msgspec.UNSET
    skipped: Any = msgspec.UNSET
    shuffle: Any = msgspec.UNSET
    episode_name: Any = msgspec.UNSET
    spotify_episode_uri: Any = msgspec.UNSET
    audiobook_title: Any = msgspec.UNSET
    audiobook_uri: Any = msgspec.UNSET
    audiobook_chapter_uri: Any = msgspec.UNSET
    endTime: Any = msgspec.UNSET  # noqa: N815 (Spotify's name)
    msPlayed: Any = msgspec.UNSET  # noqa: N815


# A file's records: objects, and whatever else a damaged file holds instead (counted invalid).
_Record = _ExtendedRecord | list[Any] | str | int | float | bool | None
_RECORDS = list[_Record]
_EXTENDED_DECODER = msgspec.json.Decoder(_RECORDS)
# An extended history names this field in its first record; other files skip the typed decode.
_EXTENDED_HINT = b'"ms_played"'
_HINT_BYTES = 1 << 16


def _parse_extended(records: list[_Record], latest: int, *, video: bool) -> ParsedExport:
    rows: list[PlayFields] = []
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    if video:
        # Music videos and video podcasts: records look like audio ones; the file says video.
        skipped["video"] = len(records)
        return ParsedExport("extended", len(records), rows, _nonzero(skipped))
    append = rows.append
    fromiso = datetime.fromisoformat
    for rec in records:
        if not isinstance(rec, _ExtendedRecord):
            skipped["invalid_record"] += 1
            continue
        try:
            ms = rec.ms_played
            moment = fromiso(rec.ts)
            if type(ms) is not int:
                raise ValueError(ms)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            end_ts = int(moment.timestamp())
        except (TypeError, ValueError, OverflowError):
            skipped["invalid_record"] += 1
            continue
        if not (EARLIEST_PLAY_TS <= end_ts <= latest and 0 <= ms <= MAX_PLAY_MS):
            skipped[_implausible(end_ts, latest)] += 1
            continue
        title = rec.master_metadata_track_name
        if not title:
            if rec.episode_name or rec.spotify_episode_uri:
                skipped["episode"] += 1
            elif rec.audiobook_title or rec.audiobook_uri or rec.audiobook_chapter_uri:
                skipped["audiobook"] += 1
            else:
                skipped["no_track"] += 1
            continue
        artist = rec.master_metadata_album_artist_name
        if not artist or type(title) is not str or type(artist) is not str:
            skipped["no_track" if not artist else "invalid_record"] += 1
            continue
        album = rec.master_metadata_album_album_name
        uri = rec.spotify_track_uri
        start = rec.reason_start
        end = rec.reason_end
        skip = rec.skipped
        shuffle = rec.shuffle
        append((
            end_ts,
            ms,
            artist,
            title,
            "extended",
            album if type(album) is str and album else None,
            uri if type(uri) is str and uri.startswith("spotify:track:") else None,
            skip if skip is None or type(skip) is bool else _flag(skip),
            start if type(start) is str else None,
            end if type(end) is str else None,
            shuffle if shuffle is None or type(shuffle) is bool else _flag(shuffle),
        ))  # fmt: skip
    return ParsedExport("extended", len(records), rows, _nonzero(skipped))


def _parse_account(records: list[Any], latest: int) -> ParsedExport:
    rows: list[PlayFields] = []
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    append = rows.append
    for rec in records:
        try:
            ms = rec["msPlayed"]
            end_ts = _utc_ts(rec["endTime"])
            if type(ms) is not int:
                raise ValueError(ms)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            skipped["invalid_record"] += 1
            continue
        if not (EARLIEST_PLAY_TS <= end_ts <= latest and 0 <= ms <= MAX_PLAY_MS):
            skipped[_implausible(end_ts, latest)] += 1
            continue
        artist = rec.get("artistName")
        title = rec.get("trackName")
        if artist is None and title is None:
            if "podcastName" in rec or "episodeName" in rec:
                skipped["episode"] += 1
            elif any(k.startswith(("audiobook", "chapter")) for k in rec):
                skipped["audiobook"] += 1
            else:
                skipped["no_track"] += 1
            continue
        if not title or not artist or title == _UNKNOWN_TRACK:
            skipped["no_track"] += 1
            continue
        if type(title) is not str or type(artist) is not str:
            skipped["invalid_record"] += 1
            continue
        append((end_ts, ms, artist, title, "account", None, None, None, None, None, None))
    return ParsedExport("account", len(records), rows, _nonzero(skipped))


def _nonzero(counts: dict[SkipReason, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


# --- finding and reading sources ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ZipLimits:
    """Caps on what a zip may decompress to, so that a zip bomb fails instead of filling memory.

    A real export's JSON compresses about 8-20 : 1; the defaults leave a wide margin.
    """

    max_member_bytes: int = 2 << 30
    max_total_bytes: int = 8 << 30
    max_ratio: float = 200.0
    # The ratio is judged only past this size: tiny files compress oddly without harm.
    ratio_floor_bytes: int = 8 << 20


@dataclass(frozen=True, slots=True)
class ExportFile:
    """A file to read: on disk, or a member of a zip (`member` set, `path` the zip)."""

    label: str  # the path as reported: "DIR/file.json" or "ZIP!member"
    path: Path
    size: int  # bytes on disk, or the member's declared uncompressed size
    member: str | None = None
    compressed_size: int = 0

    @property
    def name(self) -> str:
        return Path(self.member).name if self.member is not None else self.path.name

    def read(
        self, limits: ZipLimits = ZipLimits(), on_chunk: ChunkCallback | None = None
    ) -> bytes | bytearray:
        """The file's bytes; `ExportError` if it cannot be read whole and unchanged."""
        if self.member is None:
            return _read_stable(self.path, on_chunk)
        return _read_member(self, limits, on_chunk)


@dataclass(frozen=True, slots=True)
class UnreadableSource:
    """Something named for import that cannot be read at all (missing path, corrupt zip, …)."""

    label: str
    error: str


@dataclass(frozen=True, slots=True)
class SkippedSource:
    """A file found in a folder or zip that is not worth reading (not JSON)."""

    label: str
    reason: str


FoundSource = ExportFile | UnreadableSource | SkippedSource


def find_sources(paths: Sequence[Path], limits: ZipLimits = ZipLimits()) -> list[FoundSource]:
    """Every file to consider under `paths`: folders recursively, single files, zips' members.

    A file named explicitly is always read (its content decides); inside folders and zips only
    `.json` files are, and `.zip` files found in folders are opened.
    """
    found: list[FoundSource] = []
    for path in paths:
        label = str(path)
        if path.is_dir():
            for child in sorted(_walk(path), key=lambda p: _natural_key(str(p))):
                found.extend(_classify_file(child, explicit=False, limits=limits))
        elif path.is_file():
            found.extend(_classify_file(path, explicit=True, limits=limits))
        elif path.exists():
            found.append(UnreadableSource(label, "not a regular file or folder"))
        else:
            found.append(UnreadableSource(label, "no such file or folder"))
    return found


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
        for name in files:
            yield Path(root) / name


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", text)]


def _classify_file(path: Path, *, explicit: bool, limits: ZipLimits) -> Iterable[FoundSource]:
    label = str(path)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return _zip_members(path, limits)
    if not explicit:
        if path.name.startswith("."):
            return [SkippedSource(label, "hidden file")]
        if suffix != ".json":
            return [SkippedSource(label, "not a JSON file")]
    try:
        size = path.stat().st_size
    except OSError as exc:
        return [UnreadableSource(label, f"cannot read: {exc.strerror}")]
    return [ExportFile(label, path, size)]


def _zip_members(path: Path, limits: ZipLimits) -> list[FoundSource]:
    label = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile as exc:
        return [
            UnreadableSource(
                label,
                f"corrupt zip ({exc}): an incomplete download or copy? Download the export again",
            )
        ]
    except OSError as exc:
        return [UnreadableSource(label, f"cannot read zip: {exc.strerror or exc}")]
    files = [i for i in infos if not i.is_dir()]
    total = sum(i.file_size for i in files)
    if total > limits.max_total_bytes:
        return [
            UnreadableSource(
                label,
                f"zip would unpack to {total / 2**20:.0f} MiB, over the limit of "
                f"{limits.max_total_bytes / 2**20:.0f} MiB (a zip bomb?); not unpacked",
            )
        ]
    found: list[FoundSource] = []
    for info in sorted(files, key=lambda i: _natural_key(i.filename)):
        member_label = f"{label}!{info.filename}"
        name = Path(info.filename).name
        if info.filename.startswith("__MACOSX/") or name.startswith("."):
            found.append(SkippedSource(member_label, "macOS metadata or hidden file"))
        elif not name.lower().endswith(".json"):
            found.append(SkippedSource(member_label, "not a JSON file"))
        elif info.flag_bits & 0x1:
            found.append(
                UnreadableSource(
                    member_label, "encrypted zip member; unpack it yourself and import the files"
                )
            )
        else:
            found.append(
                ExportFile(member_label, path, info.file_size, info.filename, info.compress_size)
            )
    return found


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


_CHANGED = (
    "the file changed while it was read (still being written?); import it again once it is complete"
)


def _read_stable(path: Path, on_chunk: ChunkCallback | None) -> bytearray:
    """The whole file, checked unchanged (size and mtime) from before to after the read."""
    try:
        before = _stamp(path)
        buf = bytearray(before[0])
        view = memoryview(buf)
        done = 0
        with path.open("rb") as handle:
            while done < len(buf):
                n = handle.readinto(view[done : done + _CHUNK])
                if not n:
                    break
                done += n
                if on_chunk is not None:
                    on_chunk(done)
            grew = handle.read(1) != b""
        view.release()
        after = _stamp(path)
    except OSError as exc:
        raise ExportError(f"cannot read: {exc.strerror or exc}") from None
    if grew or done != len(buf) or before != after:
        raise ExportError(_CHANGED)
    return buf


def _read_member(
    source: ExportFile, limits: ZipLimits, on_chunk: ChunkCallback | None
) -> bytearray:
    assert source.member is not None
    cap = limits.max_member_bytes
    ratio_cap = limits.max_ratio * max(source.compressed_size, 1)
    if source.size > cap or (source.size > limits.ratio_floor_bytes and source.size > ratio_cap):
        raise ExportError(_bomb_message(source, source.size, limits))
    try:
        before = _stamp(source.path)
        buf = bytearray()
        with zipfile.ZipFile(source.path) as archive, archive.open(source.member) as handle:
            while chunk := handle.read(_CHUNK):
                buf += chunk
                # The declared size can lie; count what really comes out.
                if len(buf) > cap or (len(buf) > limits.ratio_floor_bytes and len(buf) > ratio_cap):
                    raise ExportError(_bomb_message(source, len(buf), limits))
                if on_chunk is not None:
                    on_chunk(len(buf))
        after = _stamp(source.path)
    except (zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ExportError(f"corrupt zip member ({exc}): download the export again") from None
    except OSError as exc:
        raise ExportError(f"cannot read zip: {exc.strerror or exc}") from None
    except Exception as exc:  # zlib.error and friends from a damaged stream
        if isinstance(exc, ExportError):
            raise
        raise ExportError(
            f"corrupt zip member ({type(exc).__name__}: {exc}): download the export again"
        ) from None
    if before != after:
        raise ExportError(_CHANGED)
    return buf


def _bomb_message(source: ExportFile, size: int, limits: ZipLimits) -> str:
    ratio = size / max(source.compressed_size, 1)
    return (
        f"zip member unpacks to over {size / 2**20:.0f} MiB at {ratio:.0f}:1 compression, beyond "
        f"the limits ({limits.max_member_bytes / 2**20:.0f} MiB, {limits.max_ratio:.0f}:1): "
        "a zip bomb? Not unpacked"
    )
