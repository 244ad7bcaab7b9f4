"""Opening the SQLite database: pragmas, schema creation, versioned upgrades.

The database is `DATA_DIR/songnet.db`, in WAL mode with foreign keys on. `open_database`
creates a fresh schema, or upgrades an older one step by step after copying the file aside
(`songnet.db.v<N>.bak`), or refuses a database written by a newer songnet.

Upgrades are plain ordered functions (`_UPGRADES[n]` takes version n to n+1) rather than an
Alembic environment: the schema belongs to one embedded application and ships inside the
wheel, so one file with the steps is the whole migration story.
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, event, text
from sqlmodel import Session, SQLModel, create_engine

from service import tables

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
DB_FILENAME = "songnet.db"

_UPGRADES: dict[int, Callable[[Connection], None]] = {
    # 1: lambda conn: conn.execute(text("ALTER TABLE ... ADD COLUMN ...")),
}


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
    cur.execute("PRAGMA busy_timeout=10000")
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
    existed = path.exists()
    engine = make_engine(path)
    try:
        with engine.begin() as conn:
            version = _current_version(conn)
    except Exception as exc:
        engine.dispose()
        raise DatabaseError(
            f"{path} is not a usable songnet database ({exc}); move it aside or restore a backup"
        ) from exc
    if version is None:
        if existed and _has_user_tables(engine):
            engine.dispose()
            raise DatabaseError(f"{path} holds tables but no songnet schema version; refusing to touch it")
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(tables.SchemaInfo(id=1, version=SCHEMA_VERSION))
            session.commit()
        log.info("database created", path=str(path), schema_version=SCHEMA_VERSION)
        return engine
    if version > SCHEMA_VERSION:
        engine.dispose()
        raise DatabaseError(
            f"{path} has schema version {version}, newer than this songnet ({SCHEMA_VERSION}); "
            "upgrade songnet or restore a backup"
        )
    if version < SCHEMA_VERSION:
        backup = path.with_name(f"{path.name}.v{version}.bak")
        backup_database(path, backup)
        log.info("database upgrade", path=str(path), from_version=version, to_version=SCHEMA_VERSION, backup=str(backup))
        with engine.begin() as conn:
            for v in range(version, SCHEMA_VERSION):
                _UPGRADES[v](conn)
            conn.execute(text("UPDATE schema_info SET version = :v WHERE id = 1"), {"v": SCHEMA_VERSION})
        # Tables added since `version` are created empty.
        SQLModel.metadata.create_all(engine)
    return engine


def _has_user_tables(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM sqlite_master WHERE type='table'")).first() is not None


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
