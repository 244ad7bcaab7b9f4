"""The import pipeline: ledger, parsing, track identity, cross-source dedup and accounting.

`import_paths` takes folders, files and zips (see `songnet_core.exports.find_sources`) and
imports each file in its own transaction, so that a crash or an error leaves the database as
it was before that file. The ledger (`imported_file`) holds every file content ever offered,
by SHA-256: content imported or ignored before is not parsed again; a file that failed may be
offered again (after the user fixed it, or once it is completely written).

Dedup. Within one source only identical records are duplicates (the `uq_play_identical`
constraint on `play`). Across sources, the export formats and the pull sources alike, one rule
says which records are the same listening: `songnet_core.play_sources` (the same track, start
windows within `MATCH_TOLERANCE_S`, each source's clock known: the account export's `endTime`
is an end time truncated to the minute, the extended export's `ts` an exact end time,
ListenBrainz's and Last.fm's stamps start times). Such a listening is stored once, as the
richer record (extended > ListenBrainz > Last.fm > account): a richer record that matches a
stored play replaces it in place, a poorer one is absorbed by it; both count as duplicates.
Matching is one to one (a stored play matches at most one record of a file). A play that
absorbed or replaced an account record remembers it (`account_end_ts`, `account_ms_played`),
so a later account-data export of the same listening is recognised by that record alone. A
file with no play of another source in its time span skips the matching altogether (only
identical records can repeat there). Pulled pages go through the same rule
(`store_pulled`), not one to one: the same listen pulled twice is one play.

Speed. 500k plays go through `sqlite3` executemany on the engine's raw connection (the ORM
is far too slow for that), with tracks and artists resolved through in-memory maps that are
reloaded only when another connection changed the database. `import_session` keeps that
connection and those maps for several `import_paths` calls (the daemon's import job takes
the files one at a time), so they are loaded once per job, not once per file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine

from songnet_core.exports import (
    ExportError,
    ExportFile,
    NotHistory,
    ParsedExport,
    SkippedSource,
    UnreadableSource,
    ZipLimits,
    find_sources,
    parse_export,
)
from songnet_core.history import normalise, track_key
from songnet_core.play_sources import (
    PlaySource,
    closest_match,
    play_source,
    search_span,
    start_span,
)

log = structlog.get_logger(__name__)

_IMPORT_CACHE_KIB = 128 * 1024
_IMPORT_CHECKPOINT_PAGES = 16_384  # 64 MiB of WAL

# A row of `play` as inserted: track_id, end_ts, ms_played, source, skipped, reason_start,
# reason_end, shuffle, file_id.
PlayValues = tuple[
    int, int, int, str, bool | None, str | None, str | None, bool | None, int | None
]

# (bytes done, bytes in all, label of the file being read)
ProgressCallback = Callable[[int, int, str], None]


@dataclass
class FileResult:
    """What happened to one file; exactly the fields of `songnet import --json`."""

    path: str  # a file, or "ZIP!member"
    format: str | None  # "account" | "extended" | None
    records: int
    imported: int  # 0 unless status is "imported"
    duplicates: int
    skipped: dict[str, int]  # {"<reason>": n}, see songnet_core.exports.SKIP_REASONS
    status: str  # "imported" | "already-imported" | "ignored" | "failed"
    error: str | None  # why it failed, or why it was ignored

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def balanced(self) -> bool:
        return self.records == self.imported + self.duplicates + sum(self.skipped.values())


def import_paths(
    engine: Engine,
    paths: Sequence[Path | str],
    *,
    on_progress: ProgressCallback | None = None,
    limits: ZipLimits = ZipLimits(),
    clock: Callable[[], float] = time.time,
) -> list[FileResult]:
    """Import every export file under `paths`; one result per file found, in order."""
    with import_session(engine, clock=clock) as session:
        return session.import_paths(paths, on_progress=on_progress, limits=limits)


@contextmanager
def import_session(
    engine: Engine, *, clock: Callable[[], float] = time.time
) -> Iterator[ImportSession]:
    """One connection and the library's in-memory maps for several `import_paths` calls."""
    with ImportSession.open(engine, clock) as session:
        yield session


def import_pulled(
    engine: Engine,
    source: PlaySource,
    label: str,
    parsed: ParsedExport,
    in_transaction: Callable[[sqlite3.Cursor, int, int], None],
    *,
    clock: Callable[[], float] = time.time,
) -> FileResult:
    """Store one page of plays from a pull source in one transaction with `in_transaction`
    (which records the source's new watermark): a kill loses or doubles nothing."""
    with ImportSession.open(engine, clock) as importer:
        result = importer.store_pulled(source, label, parsed, in_transaction)
    _log_result(result)
    return result


def _log_result(result: FileResult) -> None:
    fields = {
        "path": result.path,
        "status": result.status,
        "format": result.format,
        "records": result.records,
        "imported": result.imported,
        "duplicates": result.duplicates,
        "skipped": result.skipped,
    }
    if result.status == "failed":
        log.error(
            "import failed",
            **fields,
            error=result.error,
            hint="fix or replace the file and import it again",
        )
    elif result.status == "ignored":
        log.info("import ignored file", path=result.path, reason=result.error)
    else:
        log.info("import file", **fields)


@dataclass
class _Library:
    """In-memory maps of the library for fast track resolution (valid while nobody else writes)."""

    artist_ids: dict[str, int]
    track_ids: dict[str, int]
    tracks_with_uri: set[int]
    tracks_with_album: set[int]
    known_uris: set[str]
    next_artist_id: int
    next_track_id: int
    by_name: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def load(cls, cur: sqlite3.Cursor) -> _Library:
        artist_ids = {key: aid for aid, key in cur.execute("SELECT id, key FROM artist")}
        track_ids: dict[str, int] = {}
        with_uri: set[int] = set()
        with_album: set[int] = set()
        for tid, key, has_uri, has_album in cur.execute(
            "SELECT id, key, uri IS NOT NULL, album IS NOT NULL FROM track"
        ):
            track_ids[key] = tid
            if has_uri:
                with_uri.add(tid)
            if has_album:
                with_album.add(tid)
        known_uris = {uri for (uri,) in cur.execute("SELECT uri FROM track_uri")}
        max_artist = cur.execute("SELECT coalesce(max(id), 0) FROM artist").fetchone()[0]
        max_track = cur.execute("SELECT coalesce(max(id), 0) FROM track").fetchone()[0]
        return cls(
            artist_ids, track_ids, with_uri, with_album, known_uris, max_artist + 1, max_track + 1
        )


def _unread_key(label: str) -> str:
    return "unread:" + hashlib.sha256(label.encode()).hexdigest()


class ImportSession:
    """Imports on one raw SQLite connection; each file is one transaction."""

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        self.clock = clock
        self.library: _Library | None = None
        self.data_version: int | None = None
        self.library_rows: tuple[int, ...] | None = None  # `_library_rows()` the maps match

    @classmethod
    @contextmanager
    def open(cls, engine: Engine, clock: Callable[[], float]) -> Iterator[ImportSession]:
        fairy = engine.raw_connection()
        conn = fairy.driver_connection
        assert isinstance(conn, sqlite3.Connection)
        saved = conn.isolation_level
        saved_cache = conn.execute("PRAGMA cache_size").fetchone()[0]
        # Autocommit mode: transactions are begun and ended explicitly below.
        conn.isolation_level = None
        # The play indexes are filled in track order, not time order: a page cache that holds
        # them saves most of the insert time (SQLite's default is 2 MiB).
        conn.execute(f"PRAGMA cache_size = -{_IMPORT_CACHE_KIB}")
        # Checkpoint (copy the WAL into the database, with fsyncs) every few files instead of
        # after every file's commit.
        saved_checkpoint = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        conn.execute(f"PRAGMA wal_autocheckpoint = {_IMPORT_CHECKPOINT_PAGES}")
        # Every row the importer writes refers to a track, artist or ledger row it read or
        # wrote in the same transaction; checking each of 500k references again costs a tenth
        # of the import (tests/test_importer.py runs `foreign_key_check` after its imports).
        saved_foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            yield cls(conn, clock)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute(f"PRAGMA foreign_keys = {int(saved_foreign_keys)}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(saved_checkpoint)}")
            conn.execute(f"PRAGMA cache_size = {int(saved_cache)}")
            conn.isolation_level = saved
            fairy.close()

    def import_paths(
        self,
        paths: Sequence[Path | str],
        *,
        on_progress: ProgressCallback | None = None,
        limits: ZipLimits = ZipLimits(),
    ) -> list[FileResult]:
        """Import every export file under `paths`; one result per file found, in order."""
        sources = find_sources([Path(p) for p in paths], limits)
        total = sum(s.size for s in sources if isinstance(s, ExportFile))
        done = 0
        results: list[FileResult] = []
        for source in sources:
            if isinstance(source, SkippedSource):
                result = FileResult(source.label, None, 0, 0, 0, {}, "ignored", source.reason)
            elif isinstance(source, UnreadableSource):
                result = self.fail_unread(source.label, 0, source.error)
            else:
                base = done

                def chunk(n: int, base: int = base, label: str = source.label) -> None:
                    if on_progress is not None:
                        on_progress(base + n, total, label)

                result = self.import_file(source, limits, chunk)
                done += source.size
                if on_progress is not None:
                    on_progress(done, total, source.label)
            _log_result(result)
            results.append(result)
        return results

    # --- one file ------------------------------------------------------------------------------

    def import_file(
        self, source: ExportFile, limits: ZipLimits, on_chunk: Callable[[int], None]
    ) -> FileResult:
        label = source.label
        try:
            data = source.read(limits, on_chunk)
        except ExportError as exc:
            return self.fail_unread(label, source.size, str(exc))
        sha = hashlib.sha256(data).hexdigest()
        seen = self._ledger_row(sha)
        if seen is not None and seen["status"] in ("imported", "ignored"):
            skipped = json.loads(seen["skipped_json"])
            records = int(seen["records"])
            return FileResult(
                label,
                seen["format"],
                records,
                0,
                records - sum(skipped.values()),
                skipped,
                "already-imported",
                None,
            )
        try:
            parsed = parse_export(data, source.name, now=self.clock())
        except ExportError as exc:
            return self._fail(sha, label, len(data), str(exc))
        del data
        if isinstance(parsed, NotHistory):
            try:
                with self._transaction():
                    self._upsert_ledger(
                        sha, label, None, "ignored", source.size, error=parsed.reason
                    )
            except (
                sqlite3.Error
            ) as exc:  # only the ledger entry is lost: offered again, ignored again
                log.warning("import could not record an ignored file", path=label, error=str(exc))
            return FileResult(label, None, 0, 0, 0, {}, "ignored", parsed.reason)
        try:
            return self._store(sha, label, source.size, parsed)
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            log.exception("import database error", path=label)
            return self._fail(
                sha, label, source.size, f"database error while storing: {exc}", parsed.format
            )

    def fail_unread(self, label: str, size: int, error: str) -> FileResult:
        # No content to hash: the ledger keys the failure by the path instead.
        return self._fail(_unread_key(label), label, size, error)

    def _fail(
        self, key: str, label: str, size: int, error: str, fmt: str | None = None
    ) -> FileResult:
        try:
            with self._transaction():
                self._upsert_ledger(key, label, fmt, "failed", size, error=error)
        except sqlite3.Error as exc:
            log.error("import could not record a failure in the ledger", path=label, error=str(exc))
        return FileResult(label, fmt, 0, 0, 0, {}, "failed", error)

    def _store(self, sha: str, label: str, size: int, parsed: ParsedExport) -> FileResult:
        with self._transaction():
            library = self._library()
            file_id = self._upsert_ledger(sha, label, parsed.format, "imported", size)
            # An earlier failure to read this path is resolved now.
            self.cur.execute(
                "DELETE FROM imported_file WHERE sha256 = ? AND status = 'failed'",
                (_unread_key(label),),
            )
            try:
                values = self._play_values(library, parsed, file_id)
                imported, duplicates = self._insert_plays(values, parsed.format)
            except BaseException:
                self.library = None  # the maps hold rows that are being rolled back
                raise
            result = FileResult(
                label,
                parsed.format,
                parsed.records,
                imported,
                duplicates,
                dict(parsed.skipped),
                "imported",
                None,
            )
            if not result.balanced:
                self.library = None
                raise ValueError(f"accounting does not balance: {result}")
            self.cur.execute(
                "UPDATE imported_file SET records = ?, imported = ?, duplicates = ?, skipped_json = ? WHERE id = ?",
                (result.records, imported, duplicates, json.dumps(result.skipped), file_id),
            )
        return result

    def store_pulled(
        self,
        source: PlaySource,
        label: str,
        parsed: ParsedExport,
        in_transaction: Callable[[sqlite3.Cursor, int, int], None],
    ) -> FileResult:
        """Store one page of a pull source; `in_transaction(cur, imported, duplicates)` (the
        watermark and counts) commits with it."""
        with self._transaction():
            library = self._library()
            try:
                values = self._play_values(library, parsed, None)
                imported, duplicates = self._merge_pulled(values, source)
                in_transaction(self.cur, imported, duplicates)
            except BaseException:
                self.library = None
                raise
        result = FileResult(
            label, source.name, parsed.records, imported, duplicates, dict(parsed.skipped),
            "imported", None,
        )
        if not result.balanced:
            raise ValueError(f"accounting does not balance: {result}")
        return result

    def _merge_pulled(self, values: list[PlayValues], source: PlaySource) -> tuple[int, int]:
        """(imported, duplicates): each pulled play against every stored play, by the rule.

        Not one to one: the same listen pulled twice (an overlapping page) is one play.
        """
        if not values:
            return 0, 0
        spans = [search_span(source, v[1], v[2]) for v in values]
        lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
        tracks = {v[0] for v in values}
        stored: dict[int, list[_StoredPlay]] = {}
        for pid, tid, ts, ms, src in self.cur.execute(
            "SELECT id, track_id, end_ts, ms_played, source FROM play WHERE end_ts BETWEEN ? AND ?",
            (lo, hi),
        ):
            if tid in tracks:
                stored.setdefault(tid, []).append(_StoredPlay(pid, ts, ms, src))
        inserts: list[PlayValues] = []
        replaces: list[tuple[Any, ...]] = []
        duplicates = 0
        for value in values:
            found = stored.setdefault(value[0], [])
            i = closest_match(
                source,
                value[1],
                value[2],
                [(play_source(p.source), p.end_ts, p.ms_played) for p in found],
            )
            if i is None:
                inserts.append(value)
                found.append(_StoredPlay(0, value[1], value[2], source.name))
                continue
            duplicates += 1
            match = found[i]
            if match.play_id and source.rank > play_source(match.source).rank:
                # A poorer stored record (the account export's) gives way; it is remembered
                # as absorbed so that its export is recognised when imported again.
                acc = (match.end_ts, match.ms_played) if match.source == "account" else (None, None)
                replaces.append((*value[1:8], *acc, match.play_id))
                found[i] = _StoredPlay(match.play_id, value[1], value[2], source.name)
        if replaces:
            self.cur.executemany(
                "UPDATE OR IGNORE play SET end_ts = ?, ms_played = ?, source = ?, skipped = ?,"
                " reason_start = ?, reason_end = ?, shuffle = ?,"
                " account_end_ts = coalesce(?, account_end_ts),"
                " account_ms_played = coalesce(?, account_ms_played) WHERE id = ?",
                replaces,
            )
        if inserts:
            self.cur.executemany(_INSERT_PLAY, inserts)
        return len(inserts), duplicates

    # --- ledger ------------------------------------------------------------------------------

    def _ledger_row(self, sha: str) -> dict[str, Any] | None:
        self.cur.execute(
            "SELECT status, format, records, skipped_json FROM imported_file WHERE sha256 = ?",
            (sha,),
        )
        row = self.cur.fetchone()
        if row is None:
            return None
        return {"status": row[0], "format": row[1], "records": row[2], "skipped_json": row[3]}

    def _upsert_ledger(
        self,
        key: str,
        label: str,
        fmt: str | None,
        status: str,
        size: int,
        *,
        error: str | None = None,
    ) -> int:
        row = self.cur.execute(
            "INSERT INTO imported_file (sha256, path, format, status, records, imported, duplicates,"
            " skipped_json, error, size_bytes, imported_at) VALUES (?, ?, ?, ?, 0, 0, 0, '{}', ?, ?, ?)"
            " ON CONFLICT(sha256) DO UPDATE SET path = excluded.path, format = excluded.format,"
            " status = excluded.status, records = 0, imported = 0, duplicates = 0, skipped_json = '{}',"
            " error = excluded.error, size_bytes = excluded.size_bytes, imported_at = excluded.imported_at"
            " RETURNING id",
            (key, label, fmt, status, error, size, int(self.clock())),
        ).fetchone()
        return int(row[0])

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.cur.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.cur.execute("ROLLBACK")
            raise
        self.cur.execute("COMMIT")
        self.data_version = self._data_version()
        if self.library is not None:
            self.library_rows = self._library_rows()

    def _data_version(self) -> int:
        return int(self.cur.execute("PRAGMA data_version").fetchone()[0])

    def _library(self) -> _Library:
        # Another connection's commit changes data_version. The maps are read again if it
        # added or removed artists, tracks or URIs; a commit elsewhere (the daemon records
        # each imported file in `key_value`) leaves them as they are.
        version = self._data_version()
        if self.library is not None and version != self.data_version:
            if self._library_rows() != self.library_rows:
                self.library = None
            self.data_version = version
        if self.library is None:
            self.library = _Library.load(self.cur)
            self.data_version = version
            self.library_rows = self._library_rows()
        return self.library

    def _library_rows(self) -> tuple[int, ...]:
        """Counts and highest ids of the tables the maps hold (a few ms; a reload takes tens).

        A URI or album another writer set on a known track is not counted: the maps may miss
        it, and the importer's writes of both are conditional (`uri IS NULL`, `OR IGNORE`)."""
        row = self.cur.execute(
            "SELECT (SELECT count(*) FROM artist), (SELECT coalesce(max(id), 0) FROM artist),"
            " (SELECT count(*) FROM track), (SELECT coalesce(max(id), 0) FROM track),"
            " (SELECT count(*) FROM track_uri)"
        ).fetchone()
        return tuple(int(v) for v in row)

    # --- tracks ------------------------------------------------------------------------------

    def _play_values(
        self, library: _Library, parsed: ParsedExport, file_id: int | None
    ) -> list[PlayValues]:
        """Each play as `play` columns, creating its artist and track, aliases and first URIs."""
        by_name = library.by_name
        new_tracks: dict[int, list[Any]] = {}  # id -> [key, artist id, title, album, uri]
        new_artists: list[tuple[int, str, str]] = []
        new_aliases: list[tuple[str, int]] = []
        set_uri: list[tuple[str, int]] = []
        set_album: list[tuple[str, int]] = []
        known_uris = library.known_uris
        with_uri = library.tracks_with_uri
        with_album = library.tracks_with_album
        source = parsed.format
        values: list[PlayValues] = []
        append = values.append
        for end_ts, ms, artist, title, _, album, uri, skipped, start, stop, shuffle in parsed.rows:
            tid = by_name.get((artist, title))
            if tid is None:
                tid = self._track_for(library, artist, title, new_artists, new_tracks)
                by_name[artist, title] = tid
            append((tid, end_ts, ms, source, skipped, start, stop, shuffle, file_id))
            if uri is not None:
                if uri not in known_uris:
                    known_uris.add(uri)
                    new_aliases.append((uri, tid))
                # Even a URI that is another track's alias (same song, names spelt otherwise)
                # plays this one.
                if tid not in with_uri:
                    with_uri.add(tid)
                    if tid in new_tracks:
                        new_tracks[tid][4] = uri
                    else:
                        set_uri.append((uri, tid))
            if album is not None and tid not in with_album:
                with_album.add(tid)
                if tid in new_tracks:
                    new_tracks[tid][3] = album
                else:
                    set_album.append((album, tid))
        cur = self.cur
        if new_artists:
            cur.executemany("INSERT INTO artist (id, key, name) VALUES (?, ?, ?)", new_artists)
        if new_tracks:
            cur.executemany(
                "INSERT INTO track (id, key, artist_id, title, album, uri) VALUES (?, ?, ?, ?, ?, ?)",
                [(tid, *fields) for tid, fields in new_tracks.items()],
            )
        if set_uri:
            cur.executemany("UPDATE track SET uri = ? WHERE id = ? AND uri IS NULL", set_uri)
        if set_album:
            cur.executemany("UPDATE track SET album = ? WHERE id = ? AND album IS NULL", set_album)
        if new_aliases:
            # A URI already known for another track keeps its first mapping.
            cur.executemany(
                "INSERT OR IGNORE INTO track_uri (uri, track_id) VALUES (?, ?)", new_aliases
            )
        return values

    @staticmethod
    def _track_for(
        library: _Library,
        artist: str,
        title: str,
        new_artists: list[tuple[int, str, str]],
        new_tracks: dict[int, list[Any]],
    ) -> int:
        key = track_key(artist, title)
        tid = library.track_ids.get(key)
        if tid is not None:
            return tid
        artist_key = normalise(artist)
        aid = library.artist_ids.get(artist_key)
        if aid is None:
            aid = library.next_artist_id
            library.next_artist_id += 1
            library.artist_ids[artist_key] = aid
            new_artists.append((aid, artist_key, artist))
        tid = library.next_track_id
        library.next_track_id += 1
        library.track_ids[key] = tid
        # Album and URI: filled in by the caller where a play of this file knows them.
        new_tracks[tid] = [key, aid, title, None, None]
        return tid

    # --- plays -------------------------------------------------------------------------------

    def _insert_plays(self, values: list[PlayValues], source: str) -> tuple[int, int]:
        """(imported, duplicates) for the file's music plays."""
        if not values:
            return 0, 0
        lo, hi = _search_span(play_source(source), values)
        cur = self.cur
        overlap = cur.execute(
            "SELECT 1 FROM play WHERE source != ? AND end_ts BETWEEN ? AND ? LIMIT 1",
            (source, lo, hi),
        ).fetchone()
        if overlap is None:
            # Nothing of another source in this time span: only identical records can repeat.
            cur.executemany(_INSERT_PLAY_OR_IGNORE, values)
            imported = cur.rowcount
            return imported, len(values) - imported
        return self._merge_plays(values, source, lo, hi)

    def _merge_plays(
        self, values: list[PlayValues], source: str, lo: int, hi: int
    ) -> tuple[int, int]:
        """Insert, replace or absorb each play against the stored plays of every other source,
        by the one rule (`songnet_core.play_sources`), one to one."""
        cur = self.cur
        this = play_source(source)
        file_tracks = {v[0] for v in values}
        identical: set[tuple[int, int, int]] = set()
        candidates: dict[int, list[_StoredPlay]] = {}  # track -> plays of other sources
        for pid, tid, ts, ms, src, acc_ts, acc_ms in cur.execute(
            "SELECT id, track_id, end_ts, ms_played, source, account_end_ts, account_ms_played"
            " FROM play WHERE end_ts BETWEEN ? AND ?",
            (lo, hi),
        ):
            if tid not in file_tracks:
                continue
            if src == source:
                # Within one source only identical records are duplicates.
                identical.add((tid, ts, ms))
            elif source == "account" and acc_ts is not None:
                # A richer play that absorbed an account record: that record, and no other.
                identical.add((tid, acc_ts, acc_ms))
            else:
                candidates.setdefault(tid, []).append(_StoredPlay(pid, ts, ms, src))
        for found in candidates.values():
            found.sort(key=_start)
        inserts: list[PlayValues] = []
        replaces: list[tuple[Any, ...]] = []
        absorbs: list[tuple[int, int, int]] = []
        duplicates = 0
        for value in values:
            tid, ts, ms = value[0], value[1], value[2]
            key = (tid, ts, ms)
            if key in identical:
                duplicates += 1
                continue
            identical.add(key)
            stored = _take_match(candidates.get(tid), this, ts, ms)
            if stored is None:
                inserts.append(value)
                continue
            duplicates += 1
            if this.rank > play_source(stored.source).rank:
                # This record is richer: it takes the stored play's place. An account record
                # it replaces is remembered as absorbed; what the stored play absorbed stays.
                acc = (
                    (stored.end_ts, stored.ms_played)
                    if stored.source == "account"
                    else (None, None)
                )
                replaces.append((*value[1:], *acc, stored.play_id))
            else:
                absorbs.append((ts, ms, stored.play_id))
        if replaces:
            cur.executemany(
                "UPDATE OR IGNORE play SET end_ts = ?, ms_played = ?, source = ?, skipped = ?,"
                " reason_start = ?, reason_end = ?, shuffle = ?, file_id = ?,"
                " account_end_ts = coalesce(?, account_end_ts),"
                " account_ms_played = coalesce(?, account_ms_played) WHERE id = ?",
                replaces,
            )
        if absorbs:
            # Only the account export ranks below every other source: the richer stored play
            # remembers the account record, so that export is recognised when imported again.
            cur.executemany(
                "UPDATE play SET account_end_ts = ?, account_ms_played = ? WHERE id = ?", absorbs
            )
        if inserts:
            cur.executemany(_INSERT_PLAY, inserts)
        return len(inserts), duplicates


_PLAY_COLUMNS = (
    "(track_id, end_ts, ms_played, source, skipped, reason_start, reason_end, shuffle, file_id)"
)
_INSERT_PLAY = f"INSERT INTO play {_PLAY_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_PLAY_OR_IGNORE = (
    f"INSERT OR IGNORE INTO play {_PLAY_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class _StoredPlay:
    play_id: int
    end_ts: int
    ms_played: int
    source: str


def _start(play: _StoredPlay) -> int:
    return play.end_ts - play.ms_played // 1000


def _search_span(source: PlaySource, values: list[PlayValues]) -> tuple[int, int]:
    """The `end_ts` range of the stored plays that may match any of `values`."""
    starts = [v[1] - v[2] // 1000 for v in values]
    # A play that ends at its start (ms_played 0) has the start window of its start.
    return search_span(source, min(starts), 0)[0], search_span(source, max(starts), 0)[1]


def _take_match(
    found: list[_StoredPlay] | None, source: PlaySource, ts: int, ms: int
) -> _StoredPlay | None:
    """Remove and return the stored play (sorted by start) that is the same listening as
    `(ts, ms)` by the rule, or None: each stored play matches at most one record."""
    if not found:
        return None
    lo, hi = start_span(source, ts, ms)
    begin = bisect_left(found, lo, key=_start)
    end = bisect_right(found, hi, key=_start)
    if begin >= end:
        return None
    near = found[begin:end]
    i = closest_match(
        source, ts, ms, [(play_source(p.source), p.end_ts, p.ms_played) for p in near]
    )
    return None if i is None else found.pop(begin + i)


def summarise(results: Iterable[FileResult]) -> dict[str, int]:
    """Totals over results: files by status, and records, imported, duplicates, skipped."""
    totals: dict[str, int] = {
        "files": 0,
        "records": 0,
        "imported": 0,
        "duplicates": 0,
        "skipped": 0,
        "failed": 0,
    }
    for r in results:
        totals["files"] += 1
        totals["records"] += r.records
        totals["imported"] += r.imported
        totals["duplicates"] += r.duplicates
        totals["skipped"] += sum(r.skipped.values())
        totals["failed"] += r.status == "failed"
    return totals
