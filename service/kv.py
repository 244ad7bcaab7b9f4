"""Small JSON values in table `kv` (heartbeat, daemon state, watched files)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from service import tables
from service.db import BUSY_TIMEOUT_MS

HEARTBEAT = "daemon.heartbeat"
DAEMON = "daemon.state"
WATCHED_FILES = "daemon.watched_files"


def get_json(engine: Engine, key: str) -> Any:
    """The value stored under `key`, or None (also for a value that is not valid JSON)."""
    with Session(engine) as session:
        row = session.get(tables.KeyValue, key)
        if row is None:
            return None
        try:
            return json.loads(row.value)
        except ValueError:
            return None


def set_json(
    engine: Engine, key: str, value: Any, *, busy_timeout_ms: int | None = None
) -> None:
    """Store `value` under `key`. `busy_timeout_ms`: wait at most this long for another
    writer (sqlite3's "database is locked" after it), not the connection's usual wait."""
    text = json.dumps(value, sort_keys=True)
    with Session(engine) as session:
        if busy_timeout_ms is not None:
            # This session's connection only; set back before it returns to the pool.
            session.connection().exec_driver_sql(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        try:
            row = session.get(tables.KeyValue, key)
            if row is None:
                session.add(tables.KeyValue(key=key, value=text))
            else:
                row.value = text
                session.add(row)
            session.commit()
        finally:
            if busy_timeout_ms is not None:
                session.rollback()
                session.connection().exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
