"""Opening the SQLite database: pragmas, schema creation, versioned upgrades.

The database is `DATA_DIR/songnet.db`, in WAL mode with foreign keys on. `open_database`
creates a fresh schema, or upgrades an older one step by step after copying the file aside
(`songnet.db.v<N>.bak`), or refuses a database written by a newer songnet.

Upgrades are plain ordered functions (`_UPGRADES[n]` takes version n to n+1) rather than an
Alembic environment: the schema belongs to one embedded application and ships inside the
wheel, so one file with the steps is the whole migration story.

Crash safety. Creation, and an upgrade with all its steps, are each ONE SQLite transaction
together with the version stamp (SQLite's DDL is transactional): a kill at any moment leaves
either the old state or the new one, never tables without a version. A database that holds
songnet's tables, all empty, and no version (what an interrupted creation of older songnets
left behind) is recognised as such and created again; one that holds any row is never touched.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, event, insert, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel, create_engine

from service import tables

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 3
DB_FILENAME = "songnet.db"
# How long a statement waits for another writer before "database is locked".
BUSY_TIMEOUT_MS = 10_000


def _add_source_state(conn: Connection) -> None:
    # 1 -> 2: table `source_state` (pull sources' watermarks), created by create_all below.
    pass


def _move_sink_state(conn: Connection) -> None:
    # 2 -> 3: Spotify's columns of `playlist_state` become rows of `playlist_sink_state`
    # (sink "spotify"), so that each sink keeps its own id, deferral and outcome.
    tables.PlaylistSinkState.__table__.create(conn)  # type: ignore[attr-defined]
    conn.execute(
        text(
            "INSERT INTO playlist_sink_state (config_id, sink, remote_id, deferred_until,"
            " last_status, last_error, last_written_at)"
            " SELECT config_id, 'spotify', spotify_id, deferred_until,"
            " CASE WHEN deferred_until IS NOT NULL THEN 'deferred'"
            "  WHEN last_synced_at IS NOT NULL THEN 'written' END,"
            # The old `last_error` was shared with generation: it belongs to Spotify only
            # when the row was waiting for Spotify.
            " CASE WHEN deferred_until IS NOT NULL THEN last_error END,"
            " last_synced_at"
            " FROM playlist_state"
            " WHERE spotify_id IS NOT NULL OR deferred_until IS NOT NULL"
            "  OR last_synced_at IS NOT NULL"
        )
    )
    conn.execute(
        text("UPDATE playlist_state SET last_error = NULL WHERE deferred_until IS NOT NULL")
    )
    for column in ("spotify_id", "deferred_until", "last_synced_at"):
        conn.execute(text(f"ALTER TABLE playlist_state DROP COLUMN {column}"))


_UPGRADES: dict[int, Callable[[Connection], None]] = {
    1: _add_source_state,
    2: _move_sink_state,
}


# The crash tests name a step of creation or upgrade here (e.g. "create:tables"); a process that
# reaches that step kills itself with SIGKILL, as `kill -9` at that moment would.
CRASH_AT_ENV = "SONGNET_TEST_DB_CRASH_AT"


def _checkpoint(step: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class DatabaseError(Exception):
    """The database cannot be used as it is (newer schema, corrupt file, …)."""


def database_path(data_dir: Path) -> Path:
    return data_dir / DB_FILENAME


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # NORMAL is durable across application crashes in WAL mode; only a power cut can lose
    # the last transactions, never corrupt the file.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


def make_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _on_connect)
    return engine


def _current_version(conn: Connection) -> int | None:
    has_table = conn.execute(
        text("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_info'")
    ).first()
    if has_table is None:
        return None
    row = conn.execute(text("SELECT version FROM schema_info WHERE id = 1")).first()
    return None if row is None else int(row[0])


def backup_database(source: Path, target: Path) -> None:
    """An online, consistent copy of the database (safe while the daemon writes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def open_database(data_dir: Path) -> Engine:
    """The engine for `data_dir`'s database, created or upgraded to `SCHEMA_VERSION`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # Two processes opening a fresh directory at once (the daemon and `songnet health`) must
    # not both create the schema: creation and upgrades happen under an exclusive file lock.
    with (data_dir / f"{DB_FILENAME}.init-lock").open("a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        return _open_locked(data_dir)


def _open_locked(data_dir: Path) -> Engine:
    path = database_path(data_dir)
    engine = make_engine(path)
    try:
        with engine.begin() as conn:
            version = _current_version(conn)
    except Exception as exc:
        engine.dispose()
        raise DatabaseError(
            f"{path} is not a usable songnet database ({exc}); move it aside or restore a backup"
        ) from exc
    try:
        if version is None:
            _create(path)
        elif version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {version}, newer than this songnet ({SCHEMA_VERSION}); "
                "upgrade songnet or restore a backup"
            )
        elif version < SCHEMA_VERSION:
            _upgrade(path, version)
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def _schema_transaction(path: Path) -> Iterator[Connection]:
    """One transaction that DDL takes part in. Python's sqlite3 begins a transaction only
    before INSERT/UPDATE/DELETE, so each CREATE TABLE would commit on its own: this connection
    runs the driver in autocommit mode and begins explicitly (SQLAlchemy's documented
    workaround for pysqlite), so that the schema and its version stamp commit together."""
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)

    def connect(dbapi_conn: sqlite3.Connection, record: Any) -> None:
        _on_connect(dbapi_conn, record)
        dbapi_conn.isolation_level = None

    def begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", connect)
    event.listen(engine, "begin", begin)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _create(path: Path) -> None:
    with _schema_transaction(path) as conn:
        _checkpoint("create:begun")
        leftovers = _interrupted_creation(conn, path)
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name in leftovers:
                table.drop(conn)
        SQLModel.metadata.create_all(conn)
        _checkpoint("create:tables")
        conn.execute(insert(tables.SchemaInfo).values(id=1, version=SCHEMA_VERSION))
        _checkpoint("create:stamped")
    _checkpoint("create:committed")
    if leftovers:
        log.warning(
            "database creation was interrupted before; created again",
            path=str(path),
            empty_tables_dropped=len(leftovers),
        )
    log.info("database created", path=str(path), schema_version=SCHEMA_VERSION)


def _interrupted_creation(conn: Connection, path: Path) -> set[str]:
    """The tables an interrupted creation left (songnet's own, every one empty), to be made
    again; `DatabaseError` if the file holds anything else or any row."""
    names = {
        str(name)
        for (name,) in conn.execute(
            text("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        )
    }
    foreign = names - set(SQLModel.metadata.tables)
    if foreign:
        raise DatabaseError(
            f"{path} holds tables but no songnet schema version ({', '.join(sorted(foreign))} "
            "are not songnet's); refusing to touch it: is the data directory right?"
        )
    with_rows = sorted(
        name
        for name in names
        if conn.execute(text(f'SELECT 1 FROM "{name}" LIMIT 1')).first() is not None
    )
    if with_rows:
        raise DatabaseError(
            f"{path} holds tables but no songnet schema version, and rows in "
            f"{', '.join(with_rows)}; refusing to touch it: restore a backup (songnet backup) "
            "or move the file aside to start afresh"
        )
    return names


def _upgrade(path: Path, version: int) -> None:
    backup = path.with_name(f"{path.name}.v{version}.bak")
    # Written aside and renamed: a kill during the copy leaves no half backup under its name.
    partial = backup.with_name(f".{backup.name}.partial")
    partial.unlink(missing_ok=True)
    backup_database(path, partial)
    partial.replace(backup)
    _checkpoint("upgrade:backup")
    log.info(
        "database upgrade",
        path=str(path),
        from_version=version,
        to_version=SCHEMA_VERSION,
        backup=str(backup),
    )
    with _schema_transaction(path) as conn:
        for v in range(version, SCHEMA_VERSION):
            _UPGRADES[v](conn)
            _checkpoint(f"upgrade:step-{v}")
        # Tables added since `version` are created empty.
        SQLModel.metadata.create_all(conn)
        _checkpoint("upgrade:tables")
        conn.execute(
            text("UPDATE schema_info SET version = :v WHERE id = 1"), {"v": SCHEMA_VERSION}
        )
        _checkpoint("upgrade:stamped")
    _checkpoint("upgrade:committed")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def now_ts() -> int:
    return int(time.time())
