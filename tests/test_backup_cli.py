"""`songnet backup`: an online, checked copy of the database that restores as it was."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from service.cli import app
from service.cli.maintenance import BackupError, make_backup
from service.db import database_path, open_database


def _library(data_dir: Path, artists: int) -> None:
    engine = open_database(data_dir)
    engine.dispose()
    with sqlite3.connect(database_path(data_dir)) as db:
        db.executemany(
            "INSERT INTO artist (key, name) VALUES (?, ?)",
            [(f"artist {i}", f"Artist {i}") for i in range(artists)],
        )


def _artists(db_file: Path) -> int:
    with sqlite3.connect(db_file) as db:
        return int(db.execute("SELECT count(*) FROM artist").fetchone()[0])


def _backup(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["--data-dir", str(data_dir), "--log-level", "error", "backup", *args]
    )
    return result.exit_code, result.stdout, result.stderr


def test_backup_while_a_writer_holds_a_transaction_copies_the_committed_state(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    _library(data, 500)
    writer = sqlite3.connect(database_path(data), isolation_level=None)
    try:
        # The daemon in the middle of an import: a transaction open, rows not yet committed.
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany(
            "INSERT INTO artist (key, name) VALUES (?, ?)", [(f"new {i}", "x") for i in range(50)]
        )
        code, out, err = _backup(data, str(tmp_path / "copy.db"), "--json")
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert code == 0, err
    report = json.loads(out)
    copy = Path(report["backup"])
    assert copy == tmp_path / "copy.db"
    assert report["bytes"] == copy.stat().st_size > 0
    assert _artists(copy) == 500  # the open transaction is not in the copy
    assert _artists(database_path(data)) == 550
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file, no -wal
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_restored_copy_opens_as_the_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _library(data, 20)
    copy = make_backup(data, tmp_path / "b.db")
    restored = tmp_path / "restored"
    restored.mkdir()
    copy.rename(database_path(restored))
    engine = open_database(restored)  # same schema version: opened, not upgraded
    engine.dispose()
    assert _artists(database_path(restored)) == 20


def test_a_folder_gets_a_time_stamped_file_and_nothing_is_overwritten(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _library(data, 3)
    folder = tmp_path / "backups"
    folder.mkdir()
    first = make_backup(data, folder, now=1_700_000_000)
    assert first == folder / "songnet-20231114-221320.db"
    code, _, err = _backup(data, str(first))
    assert code == 1
    assert "exists" in err
    assert _artists(first) == 3
    try:
        make_backup(data, folder, now=1_700_000_000)
    except BackupError as exc:
        assert "never overwrites" in str(exc)
    else:
        raise AssertionError("a second backup into the same name was written")


def test_no_database_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    code, _, err = _backup(tmp_path / "empty", str(tmp_path / "copy.db"))
    assert code == 1
    assert "no database at" in err
    assert not (tmp_path / "copy.db").exists()
    assert not (tmp_path / "empty" / "songnet.db").exists()


def test_an_unwritable_target_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _library(data, 1)
    # Missing folders are made; a file in the way of one is reported.
    code, _, err = _backup(data, str(tmp_path / "missing" / "deeper" / "x.db"))
    assert code == 0, err
    assert _artists(tmp_path / "missing" / "deeper" / "x.db") == 1
    (tmp_path / "blocker").write_text("")
    code, _, err = _backup(data, str(tmp_path / "blocker" / "x.db"))
    assert code == 1
    assert "cannot write" in err
