from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from service import db


def test_fresh_database_is_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = db.open_database(tmp_path)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == db.SCHEMA_VERSION
    engine.dispose()
    # Opening again is a no-op.
    db.open_database(tmp_path).dispose()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db.open_database(tmp_path).dispose()
    con = sqlite3.connect(db.database_path(tmp_path))
    con.execute("UPDATE schema_info SET version = ?", (db.SCHEMA_VERSION + 5,))
    con.commit()
    con.close()
    with pytest.raises(db.DatabaseError, match="newer than this songnet"):
        db.open_database(tmp_path)


def test_older_schema_is_backed_up_and_upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db.open_database(tmp_path).dispose()
    calls: list[int] = []

    def step(conn: object) -> None:
        calls.append(1)

    monkeypatch.setattr(db, "SCHEMA_VERSION", db.SCHEMA_VERSION + 1)
    monkeypatch.setitem(db._UPGRADES, db.SCHEMA_VERSION - 1, step)
    engine = db.open_database(tmp_path)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == db.SCHEMA_VERSION
    assert calls == [1]
    backup = tmp_path / f"songnet.db.v{db.SCHEMA_VERSION - 1}.bak"
    assert backup.exists()
    con = sqlite3.connect(backup)
    assert con.execute("SELECT version FROM schema_info").fetchone()[0] == db.SCHEMA_VERSION - 1
    con.close()


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "songnet.db")
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    with pytest.raises(db.DatabaseError, match="no songnet schema version"):
        db.open_database(tmp_path)


def test_concurrent_first_opens_create_the_schema_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import sys; from pathlib import Path; from service import db; db.open_database(Path(sys.argv[1])).dispose()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    con = sqlite3.connect(db.database_path(tmp_path))
    assert con.execute("SELECT COUNT(*) FROM schema_info").fetchone()[0] == 1
    con.close()
